//! Parsing the config file: its values, and the line each key was written on (from
//! `toml_edit`'s spans), for errors and `explain`.

use std::path::Path;

use toml_edit::{ImDocument, Item, Key};

use super::keys::{self, Sources};
use super::{ConfigError, Source};

/// The file's values and, for every key in it (tables and array elements too), its line;
/// `included_from` names the file that includes this one, if one does.
pub(super) fn parse(
    text: &str,
    path: &Path,
    included_from: Option<&Path>,
) -> Result<(toml::Table, Sources), ConfigError> {
    let lines = Lines::new(text);
    let syntax = |message: &str, span: Option<std::ops::Range<usize>>| {
        let (line, column) = lines.position(span.map_or(0, |s| s.start));
        ConfigError::syntax(path, line, column, message)
    };
    let doc = ImDocument::parse(text).map_err(|e| syntax(e.message(), e.span()))?;
    // The same parser again, for values in `toml`'s own types; it cannot fail where the first
    // one passed, but if it does the error is still placed.
    let table: toml::Table = toml::from_str(text).map_err(|e| syntax(e.message(), e.span()))?;
    let mut walk = Walk {
        path,
        included_from,
        lines: &lines,
        sources: Sources::default(),
    };
    walk.table(doc.as_table(), "");
    Ok((table, walk.sources))
}

struct Walk<'a> {
    path: &'a Path,
    included_from: Option<&'a Path>,
    lines: &'a Lines<'a>,
    sources: Sources,
}

impl Walk<'_> {
    fn table(&mut self, table: &toml_edit::Table, prefix: &str) {
        for (name, item) in table.iter() {
            let key = keys::child(prefix, name);
            self.record(
                &key,
                table.key(name).and_then(Key::span).or_else(|| item.span()),
            );
            match item {
                Item::Table(sub) => self.table(sub, &key),
                Item::ArrayOfTables(array) => {
                    for (i, sub) in array.iter().enumerate() {
                        let element = keys::index(&key, i);
                        self.record(&element, sub.span());
                        self.table(sub, &element);
                    }
                }
                Item::Value(value) => self.value(value, &key),
                Item::None => {}
            }
        }
    }

    fn value(&mut self, value: &toml_edit::Value, key: &str) {
        match value {
            toml_edit::Value::InlineTable(table) => {
                for (name, v) in table.iter() {
                    let child = keys::child(key, name);
                    self.record(
                        &child,
                        table.key(name).and_then(Key::span).or_else(|| v.span()),
                    );
                    self.value(v, &child);
                }
            }
            toml_edit::Value::Array(array) => {
                for (i, v) in array.iter().enumerate() {
                    let element = keys::index(key, i);
                    self.record(&element, v.span());
                    self.value(v, &element);
                }
            }
            _ => {}
        }
    }

    fn record(&mut self, key: &str, span: Option<std::ops::Range<usize>>) {
        if let Some(span) = span {
            let (line, _) = self.lines.position(span.start);
            let source = Source::File {
                path: self.path.to_owned(),
                line,
                included_from: self.included_from.map(Path::to_owned),
            };
            self.sources.insert(key.to_owned(), source);
        }
    }
}

/// Byte offsets to 1-based line and column (in characters).
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Lines { text, starts }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&start| start <= offset);
        let start = self.starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }
}
