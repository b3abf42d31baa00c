//! Key paths as the config spells them (`hello.upstreams[0].addr`) and the map from each key
//! to where its value came from.
//!
//! Key names holding a `.` or `[` are written as they are, so such keys are ambiguous in
//! paths; config keys are plain words.

use std::collections::BTreeMap;

use serde_path_to_error::Segment;

use super::Source;

/// `prefix.name`, or `name` at the top.
pub(super) fn child(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// `prefix[i]`.
pub(super) fn index(prefix: &str, i: usize) -> String {
    format!("{prefix}[{i}]")
}

/// The key one level up: `a.b[0]` for `a.b[0].c`, `a.b` for `a.b[0]`, None for `a`.
pub(super) fn parent(key: &str) -> Option<&str> {
    let cut = key.rfind(['.', '['])?;
    Some(&key[..cut])
}

/// An array walked element by element (in provenance and `explain`) rather than shown whole.
pub(super) fn is_array_of_tables(items: &[toml::Value]) -> bool {
    !items.is_empty() && items.iter().all(toml::Value::is_table)
}

/// The value at a dotted key, if there is one.
pub(super) fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let (name, indices) = split_indices(parts.next()?);
    let mut value = table.get(name)?;
    value = follow(value, indices)?;
    for part in parts {
        let (name, indices) = split_indices(part);
        value = follow(value.as_table()?.get(name)?, indices)?;
    }
    Some(value)
}

/// The full key of a serde error inside section `name`: path segments joined the way
/// provenance keys are, stopping where the path is unknown.
pub(super) fn from_serde_path(name: &str, path: &serde_path_to_error::Path) -> String {
    let mut key = name.to_owned();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index: i } => key = index(&key, *i),
            Segment::Map { key: k } | Segment::Enum { variant: k } => key = child(&key, k),
            Segment::Unknown => break,
        }
    }
    key
}

/// Where each key's value came from: leaves, tables and array elements alike.
#[derive(Debug, Default, Clone)]
pub(super) struct Sources(BTreeMap<String, Source>);

impl Sources {
    pub(super) fn insert(&mut self, key: String, source: Source) {
        self.0.insert(key, source);
    }

    /// The source recorded for `key` itself.
    pub(super) fn get(&self, key: &str) -> Option<&Source> {
        self.0.get(key)
    }

    /// The source of `key`, or of the nearest key above it that has one (a missing field
    /// points at its table's header; an element of a plain array at the array).
    pub(super) fn find(&self, key: &str) -> Option<&Source> {
        let mut key = key;
        loop {
            if let Some(source) = self.0.get(key) {
                return Some(source);
            }
            key = parent(key)?;
        }
    }

    /// Changes every source in place (the center's layer is read as a file, then relabelled).
    pub(super) fn relabel(&mut self, f: impl Fn(&mut Source)) {
        self.0.values_mut().for_each(f);
    }

    /// Forgets `key` and everything beneath it.
    pub(super) fn remove_tree(&mut self, key: &str) {
        self.0.retain(|k, _| !within(k, key));
    }

    /// Takes the sources of `key` and everything beneath it from `other`.
    pub(super) fn copy_tree(&mut self, other: &Sources, key: &str) {
        for (k, source) in other.0.iter().filter(|(k, _)| within(k, key)) {
            self.0.insert(k.clone(), source.clone());
        }
    }

    /// Marks `value` at `key`, and everything beneath it, as coming from `source`.
    pub(super) fn insert_tree(&mut self, key: &str, value: &toml::Value, source: &Source) {
        self.insert(key.to_owned(), source.clone());
        match value {
            toml::Value::Table(table) => {
                for (name, v) in table {
                    self.insert_tree(&child(key, name), v, source);
                }
            }
            toml::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.insert_tree(&index(key, i), v, source);
                }
            }
            _ => {}
        }
    }
}

/// Whether `key` is `top` or beneath it.
fn within(key: &str, top: &str) -> bool {
    key == top
        || key
            .strip_prefix(top)
            .is_some_and(|rest| rest.starts_with(['.', '[']))
}

/// `name[1][2]` → ("name", "[1][2]").
fn split_indices(part: &str) -> (&str, &str) {
    part.split_at(part.find('[').unwrap_or(part.len()))
}

fn follow<'a>(mut value: &'a toml::Value, mut indices: &str) -> Option<&'a toml::Value> {
    while !indices.is_empty() {
        let rest = indices.strip_prefix('[')?;
        let (i, rest) = rest.split_once(']')?;
        value = value.as_array()?.get(i.parse::<usize>().ok()?)?;
        indices = rest;
    }
    Some(value)
}
