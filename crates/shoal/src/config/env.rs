//! `SHOAL_<A>__<B>…` environment overrides applied on top of the files; the rules are in the
//! module doc of `config`.

use super::keys;
use super::{describe, ConfigError, Document, Source};

/// Variables that start with this and hold `__` are overrides.
const PREFIX: &str = "SHOAL_";
/// Separates key segments in a variable's name.
const SEPARATOR: &str = "__";

/// Applies every override in `env` to `doc`, recording each as the source of its key.
pub(super) fn apply(
    doc: &mut Document,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut overrides = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        if !rest.contains(SEPARATOR) {
            continue;
        }
        let segments: Vec<String> = rest.split(SEPARATOR).map(str::to_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            let message = "empty key segment: write SHOAL_<TABLE>__<KEY>, with `__` between \
                           segments"
                .to_owned();
            return Err(ConfigError::env(doc.file(), &var, None, message));
        }
        overrides.push(Override { var, segments, raw });
    }
    // Tables before the keys inside them, and the same result whatever the order of `env`.
    overrides.sort_by(|a, b| a.segments.cmp(&b.segments).then(a.var.cmp(&b.var)));
    for pair in overrides.windows(2) {
        if pair[0].segments == pair[1].segments {
            let message = format!("also set by {}; set it once", pair[0].var);
            let key = Some(pair[1].segments.join("."));
            return Err(ConfigError::env(doc.file(), &pair[1].var, key, message));
        }
    }
    for o in &overrides {
        set(doc, o)?;
    }
    Ok(())
}

struct Override {
    var: String,
    segments: Vec<String>,
    raw: String,
}

fn set(doc: &mut Document, o: &Override) -> Result<(), ConfigError> {
    let key = o.segments.join(".");
    let file = doc.file().map(ToOwned::to_owned);
    let error =
        |message: String| ConfigError::env(file.as_deref(), &o.var, Some(key.clone()), message);
    let (last, parents) = o
        .segments
        .split_last()
        .expect("an override has at least two segments");
    let mut table = &mut doc.table;
    let mut above = String::new();
    for segment in parents {
        above = keys::child(&above, segment);
        let entry = table
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(inner) => table = inner,
            other => {
                return Err(error(format!(
                    "cannot set it: `{above}` holds {}, not a table",
                    describe(other)
                )))
            }
        }
    }
    let value = match table.get(last) {
        Some(toml::Value::String(_)) => toml::Value::String(o.raw.clone()),
        _ => parse_value(&o.raw),
    };
    if table.get(last).is_some_and(toml::Value::is_table) && !value.is_table() {
        return Err(error(format!(
            "`{key}` is a table: set its keys one by one ({}__<KEY>) or give a whole table \
             like {{ name = \"value\" }}",
            o.var
        )));
    }
    table.insert(last.clone(), value.clone());
    doc.sources.remove_tree(&key);
    let source = Source::Env { var: o.var.clone() };
    doc.sources.insert_tree(&key, &value, &source);
    Ok(())
}

/// The variable's text as a TOML value, or as a string when it is not one.
fn parse_value(raw: &str) -> toml::Value {
    let as_string = || toml::Value::String(raw.to_owned());
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        // More than one key means the text smuggled in a line of its own: not a value.
        Ok(mut table) if table.len() == 1 => table.remove("v").unwrap_or_else(as_string),
        _ => as_string(),
    }
}
