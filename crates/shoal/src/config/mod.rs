//! Configuration: layers of TOML files and `SHOAL_…` environment overrides, typed sections,
//! provenance.
//!
//! [`Config::load_files`] is the one way in, at startup and on reload alike: read every file
//! (and what each includes) and the center's layer again, apply the environment, validate
//! the runtime's own keys into a [`RuntimeConfig`]. Nothing is bound before it succeeds, and
//! a reload that fails leaves the running config alone (the caller keeps its old
//! [`Config`]; this module has no state).
//! Services read their own top-level tables with [`Config::section`].
//!
//! # Layers
//!
//! A value comes from the highest [`Layer`] that sets its key, lowest first:
//!
//! 1. defaults: the runtime's own keys, where nothing else sets them;
//! 2. files, in the order given (`--config base.toml --config local.toml`: `local.toml`
//!    wins). A file may start with `include = ["other.toml", …]`, paths relative to that
//!    file: the included files are read first, in order, so the including file's own keys
//!    win. An include cycle is refused, naming the files in it;
//! 3. the center's layer, the configuration released for this service: the file
//!    `SHOAL_CENTER_CONFIG` names (the agent sets it for the programs it starts and writes the
//!    file), when it exists. The agent keeps it a symlink to `vVERSION.toml`, and
//!    [`Config::center_version`] is the version that name gives. It includes no files;
//! 4. the `SHOAL_…` environment.
//!
//! The merge is per key: tables are merged key by key, at any depth; any other value (an
//! array too) from a later layer replaces the earlier one whole. [`Config::explain`] names the
//! layer and the file of every value.
//!
//! # Environment overrides
//!
//! - `SHOAL_<A>__<B>[__<C>…]` sets key `a.b[.c…]`: the segments are split on `__` and
//!   lowercased, so a key may hold single underscores (`SHOAL_RPC__MAX_IN_FLIGHT` sets
//!   `rpc.max_in_flight`). Keys with upper-case letters cannot be set this way.
//! - A `SHOAL_` variable without `__` is not an override and is ignored (`SHOAL_DATA_DIR` and
//!   the runtime's own handover variables live there). A variable with an empty segment
//!   (`SHOAL_RPC__`) is an error.
//! - The value is read as a TOML value (`8080` is an integer, `true` a boolean, `["a","b"]` an
//!   array, `"quoted"` a string, `{ a = 1 }` a table), and as a plain string when it does not
//!   parse (`127.0.0.1:7000`, `10s`). When the file already holds a string at that key, the raw
//!   text is kept as a string: `SHOAL_HELLO__GREETING=123` stays `"123"`.
//! - An override replaces the value at its key, creating the tables above it. It cannot reach
//!   into an array, and only a table may replace a table.
//! - Overrides apply in the order of their keys, so the result does not depend on the order of
//!   the environment.
//!
//! # Errors
//!
//! A [`ConfigError`] is one lowercase line that names where the bad value came from and what
//! was expected:
//!
//! ```text
//! hello.toml:3: key `rpc.listen`: expected host:port or unix:PATH, got "nowhere"
//! env SHOAL_SHUTDOWN__GRACE: key `shutdown.grace`: expected a duration like "10s", at most 24h, got "soon"
//! hello.toml: cannot read: No such file or directory (os error 2)
//! app.toml: is a FIFO, not a regular file; give the path of a TOML configuration file
//! hello.toml:7:5: TOML syntax: invalid string
//! ```
//!
//! An error in a file, included or given, names that file. Each file must be a regular file:
//! it is opened without waiting, so a FIFO (or a device) is refused at once by its kind
//! instead of blocking the start, `--check` or a reload. A reload reads the files off the
//! control loop and gives up after 10 seconds (a hung network mount), keeping the old
//! configuration.
//!
//! # Secrets
//!
//! A key whose name contains `password`, `passwd`, `secret`, `token` or `credential`, or is
//! `key` or ends with `_key` or `-key` (case-insensitive), is shown as `"<redacted>"` by
//! [`Config::redacted`] and [`Config::explain`], with everything beneath it.
//!
//! Whatever its key, a string value is shown with the secrets inside it cut out:
//!
//! - the password of a URL (`scheme://user:PASSWORD@host`): `postgres://app:<redacted>@db/app`,
//!   `redis://:<redacted>@cache`, `amqp://u:<redacted>@mq`; a user name alone is kept;
//! - a `password=`, `passwd=`, `pwd=`, `secret=` or `token=` field of a DSN or a query string
//!   (`host=db password=<redacted> dbname=app`, `Server=db;Pwd=<redacted>;`,
//!   `https://h/?token=<redacted>&a=1`), the name case-insensitive, the value up to the next
//!   space, `;` or `&`, or inside its quotes.

pub mod duration;
mod env;
mod error;
mod file;
mod keys;
mod layers;
mod redact;
mod runtime;
mod sinks;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

pub use error::ConfigError;
pub use layers::Layer;
pub use runtime::{
    AdminConfig, ControlConfig, LogConfig, MetricsConfig, MonitorAddr, MonitorConfig,
    MonitorFormat, Period, RpcConfig, RuntimeConfig, ServicesConfig, ShutdownConfig, StatusConfig,
    SummaryConfig, WatchdogConfig, WorkersConfig,
};
pub use sinks::{
    EmailSink, Facility, FileSink, LogFormat, Secret, SinkConfig, SinkKind, SmtpServer, SmtpTls,
    SyslogAddress, SyslogSink,
};

use keys::Sources;

/// What a secret's value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// A validated configuration: cheap to clone, immutable; a reload builds a new one.
#[derive(Clone)]
pub struct Config {
    inner: Arc<Inner>,
}

/// One effective value and where it came from, as [`Config::explain`] lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    /// The dotted key, with `[i]` for elements of arrays of tables: `rpc.listen`,
    /// `hello.upstreams[0].addr`.
    pub key: String,
    /// The value, or `"<redacted>"` for a secret.
    pub value: toml::Value,
    pub source: Source,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built into the runtime: no file line and no variable set it.
    Default,
    /// A line (1-based) of a config file; `included_from` names the file whose `include`
    /// brought it in, when one did.
    File {
        path: PathBuf,
        line: usize,
        included_from: Option<PathBuf>,
    },
    /// A line of the center's layer (the file `SHOAL_CENTER_CONFIG` names), of version
    /// `version` when the file's name says it.
    Center {
        path: PathBuf,
        line: usize,
        version: Option<u64>,
    },
    /// An environment variable.
    Env { var: String },
}

impl Source {
    /// The layer this source belongs to.
    pub fn layer(&self) -> Layer {
        match self {
            Source::Default => Layer::Default,
            Source::File { .. } => Layer::File,
            Source::Center { .. } => Layer::Center,
            Source::Env { .. } => Layer::Environment,
        }
    }
}

/// `default`, `file local.toml, line 3`, `file base.toml, line 2, included from local.toml`,
/// `center v7, file DATA/apps/shop/center/v7.toml, line 2`, `environment SHOAL_RPC__LISTEN`.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File {
                path,
                line,
                included_from,
            } => {
                write!(f, "file {}, line {line}", path.display())?;
                match included_from {
                    Some(by) => write!(f, ", included from {}", by.display()),
                    None => Ok(()),
                }
            }
            Source::Center {
                path,
                line,
                version,
            } => {
                f.write_str("center")?;
                if let Some(version) = version {
                    write!(f, " v{version}")?;
                }
                write!(f, ", file {}, line {line}", path.display())
            }
            Source::Env { var } => write!(f, "environment {var}"),
        }
    }
}

impl Config {
    /// Reads `files` in order, each after what it includes (none: every runtime key at its
    /// default), and applies overrides from `env` (the runtime's `control` module reads the
    /// process's environment and passes it in; tests pass a Vec).
    pub fn load_files(
        files: &[PathBuf],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut read = layers::Files::default();
        for path in files {
            read.read(path, None, None)?;
        }
        Config::build(Document::new(files.to_vec(), read), env)
    }

    /// [`Config::load_files`] with at most one file.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let files: Vec<PathBuf> = path.into_iter().map(Path::to_owned).collect();
        Config::load_files(&files, env)
    }

    /// One file from text; `origin` names the file in errors and provenance, and the files it
    /// includes are read from disk relative to it.
    pub fn from_toml(
        text: &str,
        origin: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut read = layers::Files::default();
        read.read(origin, Some(text), None)?;
        Config::build(Document::new(vec![origin.to_owned()], read), env)
    }

    /// The last file given (the one that wins), when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.inner.doc.file()
    }

    /// The files given, in order (not the files they include); a reload reads them again.
    pub fn files(&self) -> &[PathBuf] {
        &self.inner.doc.files
    }

    /// The runtime's own validated keys.
    pub fn runtime(&self) -> &RuntimeConfig {
        &self.inner.runtime
    }

    /// Deserializes the top-level table `name` (an absent table deserializes from an empty
    /// table so `#[serde(default)]` works). Errors name the file, the full key path (e.g.
    /// `hello.greeting`), the line if it came from the file or the variable if it came from the
    /// environment, and what was expected.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T, ConfigError> {
        let doc = &self.inner.doc;
        let value = doc
            .table
            .get(name)
            .cloned()
            .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
        serde_path_to_error::deserialize(value).map_err(|e| {
            let key = keys::from_serde_path(name, e.path());
            doc.error_at(&key, e.inner().message().trim())
        })
    }

    /// One value by dotted key, e.g. `rpc.listen` or `hello.upstreams[0].addr`. Runtime keys
    /// with a default are always present, in their config spelling (`shutdown.grace` is
    /// `"10s"`).
    pub fn value(&self, key: &str) -> Option<&toml::Value> {
        self.inner.doc.get(key)
    }

    /// The effective config (runtime defaults included) as a table with secret values replaced
    /// by `"<redacted>"`.
    pub fn redacted(&self) -> toml::Table {
        let mut table = self.inner.doc.table.clone();
        redact_table(&mut table);
        table
    }

    /// Every effective leaf value (runtime keys at their defaults included), sorted by key,
    /// secrets redacted, with where it came from.
    pub fn explain(&self) -> Vec<Explained> {
        let doc = &self.inner.doc;
        let mut out = Vec::new();
        for (name, value) in &doc.table {
            explain_value(doc, name.clone(), value, is_secret(name), &mut out);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// An error about the value at `key`, placed where it came from (`hello.toml:12`), for
    /// problems found after validation (a log file that cannot be opened).
    pub(crate) fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.inner.doc.error_at(key, message)
    }

    /// The version of the center's layer in force, when there is one and its file's name
    /// gives it.
    pub fn center_version(&self) -> Option<u64> {
        self.inner.center_version
    }

    /// Puts the layers above the files' (in `doc`) on top: the center's (the file
    /// `SHOAL_CENTER_CONFIG` in `env` names, if it exists), then the environment; validates,
    /// and fills in the defaults below them.
    fn build(
        mut doc: Document,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let center_path = env
            .iter()
            .find(|(k, v)| k == shoal_api::program::env::CENTER_CONFIG && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v));
        let center = match &center_path {
            Some(path) => layers::read_center(path)?,
            None => None,
        };
        let mut center_version = None;
        if let Some(center) = center {
            center_version = center.version;
            layers::merge_center(&mut doc.table, &mut doc.sources, center);
        }
        env::apply(&mut doc, env)?;
        let runtime = RuntimeConfig::from_document(&doc)?;
        runtime::fill_defaults(&mut doc);
        Ok(Config {
            inner: Arc::new(Inner {
                doc,
                runtime,
                center_version,
            }),
        })
    }
}

/// Shows the path, the redacted values and the runtime keys: never a secret.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("files", &self.inner.doc.files)
            .field("values", &self.redacted())
            .field("runtime", &self.inner.runtime)
            .finish()
    }
}

struct Inner {
    doc: Document,
    runtime: RuntimeConfig,
    center_version: Option<u64>,
}

/// The effective values with their sources: what the files, then the environment, made.
struct Document {
    /// The files given, in order.
    files: Vec<PathBuf>,
    table: toml::Table,
    sources: Sources,
}

impl Document {
    fn new(files: Vec<PathBuf>, read: layers::Files) -> Document {
        Document {
            files,
            table: read.table,
            sources: read.sources,
        }
    }

    /// The last file given: errors that no file line explains are placed there.
    fn file(&self) -> Option<&Path> {
        self.files.last().map(PathBuf::as_path)
    }

    fn get(&self, key: &str) -> Option<&toml::Value> {
        keys::lookup(&self.table, key)
    }

    /// An error about the value at `key`, placed where that value (or the nearest table above
    /// it) came from.
    fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file(), self.sources.find(key), key, message.into())
    }
}

/// Leaves are everything but tables; arrays of tables are walked element by element.
fn explain_value(
    doc: &Document,
    key: String,
    value: &toml::Value,
    secret: bool,
    out: &mut Vec<Explained>,
) {
    match value {
        toml::Value::Table(table) if !secret => {
            for (name, v) in table {
                let child = keys::child(&key, name);
                explain_value(doc, child, v, is_secret(name), out);
            }
        }
        toml::Value::Array(items) if !secret && keys::is_array_of_tables(items) => {
            for (i, v) in items.iter().enumerate() {
                explain_value(doc, keys::index(&key, i), v, false, out);
            }
        }
        _ => {
            let source = doc.sources.find(&key).cloned().unwrap_or(Source::Default);
            let value = if secret {
                toml::Value::String(REDACTED.to_owned())
            } else {
                let mut value = value.clone();
                redact_value(&mut value);
                value
            };
            out.push(Explained { key, value, source });
        }
    }
}

fn redact_table(table: &mut toml::Table) {
    for (name, value) in table.iter_mut() {
        if is_secret(name) {
            *value = toml::Value::String(REDACTED.to_owned());
        } else {
            redact_value(value);
        }
    }
}

fn redact_value(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => redact_table(table),
        toml::Value::Array(items) => items.iter_mut().for_each(redact_value),
        toml::Value::String(text) => {
            if let Some(redacted) = redact::in_text(text) {
                *text = redacted;
            }
        }
        _ => {}
    }
}

/// Whether a key's own name (not its path) marks its value as a secret.
fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "credential"]
        .iter()
        .any(|word| name.contains(word))
        || name == "key"
        || name.ends_with("_key")
        || name.ends_with("-key")
}

/// Reads a configuration file, which must be a regular file: opening does not wait (a FIFO
/// without a writer would block it forever), and anything else is refused by its kind.
fn read_regular_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| ConfigError::unreadable(path, &e))?;
    let meta = file
        .metadata()
        .map_err(|e| ConfigError::unreadable(path, &e))?;
    if !meta.is_file() {
        return Err(ConfigError::not_a_file(
            path,
            crate::logging::file_kind(meta.file_type()),
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| ConfigError::unreadable(path, &e))?;
    Ok(text)
}

/// "a string", "an array", … for messages.
fn describe(value: &toml::Value) -> String {
    let kind = value.type_str();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

#[cfg(test)]
mod layer_tests;
#[cfg(test)]
mod tests;

/// `base.toml, local.toml`, or `(default configuration)` when there are none.
pub fn file_names(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return "(default configuration)".into();
    }
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}
