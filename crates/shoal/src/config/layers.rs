//! The layers a configuration is built from, and the files' layer itself: the files in the
//! order given, each after the files it includes, merged key by key.

use std::path::{Path, PathBuf};

use super::keys::{self, Sources};
use super::{describe, file, read_regular_file, ConfigError, Source};

/// A layer of the configuration, lowest first: a key set in a later layer replaces the value
/// an earlier one gave it, and tables are merged key by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// The runtime's own defaults, for keys no other layer sets.
    Default,
    /// Configuration files, in the order given (`--config base.toml --config local.toml`),
    /// each after the files it includes.
    File,
    /// The configuration the center releases for this service, above the files and below the
    /// environment: the file `SHOAL_CENTER_CONFIG` names, which the agent writes.
    Center,
    /// `SHOAL_<TABLE>__<KEY>` environment overrides.
    Environment,
}

impl Layer {
    /// Every layer, lowest first.
    pub const ORDER: [Layer; 4] = [
        Layer::Default,
        Layer::File,
        Layer::Center,
        Layer::Environment,
    ];
}

/// The top-level key that lists the files a file includes.
const INCLUDE: &str = "include";

/// The merged files' values and where each came from.
#[derive(Default)]
pub(super) struct Files {
    pub(super) table: toml::Table,
    pub(super) sources: Sources,
    /// The files being read, outermost first, to refuse an include cycle: (identity, path as
    /// named).
    open: Vec<(PathBuf, PathBuf)>,
}

impl Files {
    /// Reads `path` (from disk, or `text` when given) and what it includes, and merges them
    /// over what is already there: its includes first, then its own keys.
    pub(super) fn read(
        &mut self,
        path: &Path,
        text: Option<&str>,
        included_from: Option<&Path>,
    ) -> Result<(), ConfigError> {
        let text = match text {
            Some(text) => text.to_owned(),
            None => read_regular_file(path)?,
        };
        let (mut table, sources) = file::parse(&text, path, included_from)?;
        let includes = take_includes(&mut table, &sources, path)?;
        self.open.push((identity(path), path.to_owned()));
        for include in includes {
            let target = relative_to(path, &include);
            self.refuse_cycle(&target, &sources, path)?;
            self.read(&target, None, Some(path))?;
        }
        self.open.pop();
        merge(&mut self.table, &mut self.sources, table, &sources, "");
        Ok(())
    }

    /// An error when `target` is one of the files being read: the cycle, named file by file.
    fn refuse_cycle(
        &self,
        target: &Path,
        sources: &Sources,
        includer: &Path,
    ) -> Result<(), ConfigError> {
        let id = identity(target);
        let Some(start) = self.open.iter().position(|(open, _)| *open == id) else {
            return Ok(());
        };
        let names = self.open[start..]
            .iter()
            .map(|(_, path)| path.as_path())
            .chain([target])
            .map(|path| path.display().to_string());
        let mut chain = String::new();
        for (i, name) in names.enumerate() {
            chain.push_str(match i {
                0 => "",
                1 => " includes ",
                _ => ", which includes ",
            });
            chain.push_str(&name);
        }
        let message = format!("include cycle: {chain}; remove one of these includes");
        Err(ConfigError::at(
            Some(includer),
            sources.find(INCLUDE),
            INCLUDE,
            message,
        ))
    }
}

/// Takes `include = ["a.toml", …]` out of a file's table: it names files, it is not a value.
fn take_includes(
    table: &mut toml::Table,
    sources: &Sources,
    path: &Path,
) -> Result<Vec<PathBuf>, ConfigError> {
    let Some(value) = table.remove(INCLUDE) else {
        return Ok(Vec::new());
    };
    let wrong = |got: String| {
        let message = format!("expected an array of file paths like [\"base.toml\"], got {got}");
        ConfigError::at(Some(path), sources.find(INCLUDE), INCLUDE, message)
    };
    let toml::Value::Array(items) = value else {
        return Err(wrong(describe(&value)));
    };
    items
        .iter()
        .map(|item| match item {
            toml::Value::String(name) if !name.is_empty() => Ok(PathBuf::from(name)),
            other => Err(wrong(other.to_string())),
        })
        .collect()
}

/// `include` as written, relative to the directory of the file that names it.
fn relative_to(file: &Path, include: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) => dir.join(include),
        None => include.to_owned(),
    }
}

/// The same file however it is named, when it exists (else its name: reading it then fails).
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// The center's layer: the values of the file `SHOAL_CENTER_CONFIG` names and the version
/// its name carries.
pub(super) struct Center {
    pub(super) table: toml::Table,
    pub(super) sources: Sources,
    pub(super) version: Option<u64>,
}

/// How often reading the center's file starts over when the version its link named was
/// replaced meanwhile (the agent keeps the version before the last, so once is rare).
const CENTER_TRIES: usize = 3;

/// Reads the center's layer from `path` (`None` when there is no such file: nothing released
/// yet). The agent keeps `path` a symlink to `vVERSION.toml`: the link is read first and the
/// file it names is read, so the version and the values always go together.
pub(super) fn read_center(path: &Path) -> Result<Option<Center>, ConfigError> {
    for _ in 0..CENTER_TRIES {
        let (file, version) = match std::fs::read_link(path) {
            Ok(target) => {
                let version = target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(shoal_api::program::center_file_version);
                (relative_to(path, &target), version)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // Not a symlink: a file written by hand, without a version.
            Err(_) => (path.to_owned(), None),
        };
        let text = match read_regular_file(&file) {
            Ok(text) => text,
            Err(_) if !file.exists() && file != path => continue,
            Err(_) if !file.exists() => return Ok(None),
            Err(e) => return Err(e),
        };
        let (table, mut sources) = file::parse(&text, &file, None)?;
        if table.contains_key(INCLUDE) {
            let message = "the center's configuration includes no files: remove `include`";
            return Err(ConfigError::at(
                Some(&file),
                sources.find(INCLUDE),
                INCLUDE,
                message.into(),
            ));
        }
        sources.relabel(|source| {
            if let Source::File { path, line, .. } = source {
                *source = Source::Center {
                    path: std::mem::take(path),
                    line: *line,
                    version,
                };
            }
        });
        return Ok(Some(Center {
            table,
            sources,
            version,
        }));
    }
    Ok(None)
}

/// Merges the center's layer over the files' values.
pub(super) fn merge_center(table: &mut toml::Table, sources: &mut Sources, center: Center) {
    merge(table, sources, center.table, &center.sources, "");
}

/// Merges `from` over `into`: tables key by key, anything else replaced whole with the
/// sources of its new value.
fn merge(
    into: &mut toml::Table,
    into_sources: &mut Sources,
    from: toml::Table,
    from_sources: &Sources,
    prefix: &str,
) {
    for (name, value) in from {
        let key = keys::child(prefix, &name);
        match (into.get_mut(&name), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => {
                if let Some(source) = from_sources.get(&key) {
                    into_sources.insert(key.clone(), source.clone());
                }
                merge(old, into_sources, new, from_sources, &key);
            }
            (_, value) => {
                into_sources.remove_tree(&key);
                into_sources.copy_tree(from_sources, &key);
                into.insert(name, value);
            }
        }
    }
}
