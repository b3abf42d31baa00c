//! The package manifest (`shoal.toml`) as a value: what the agent acts on and what crosses
//! between processes. `shoal-pkg` reads and checks the TOML into these types; here they are
//! only data, serialized with durations as humantime strings (`"1m 30s"`) and versions as
//! semver strings.
//!
//! A deserialized value is as checked as its sender made it, except [`Name`], which checks
//! itself because names become directory names.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use semver::Version;
use serde::{Deserialize, Serialize};

/// A package's `shoal.toml`, checked whole: every value here is one the agent can act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub package: Package,
    /// The program a service runs; `None` for a crontab package.
    pub run: Option<Run>,
    /// `None` when `[health]` is absent: the process being alive is its health.
    pub health: Option<Health>,
    pub hooks: Hooks,
    pub logs: Logs,
    pub backup: Option<Backup>,
    /// In file order; names are unique.
    pub cron: Vec<CronJob>,
    /// `[config]`: how a program not built with the SDK takes the center's configuration;
    /// `None`: the app is a service built with the SDK, which reads it as its center layer.
    #[serde(default)]
    pub config: Option<ConfigFile>,
}

impl Manifest {
    /// `NAME-VERSION.tar.gz`, the archive's file name.
    pub fn archive_name(&self) -> String {
        format!("{}-{}.tar.gz", self.package.name, self.package.version)
    }
}

/// `[package]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Package {
    pub name: Name,
    /// Compared as a semantic version: 1.10.0 is newer than 1.9.0.
    pub version: Version,
    pub kind: Kind,
}

/// A package or cron job name: 1 to 64 lowercase ASCII letters, digits, `-` and `_`, starting
/// with a letter or a digit. Package names become directory names, so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub const MAX_LEN: usize = 64;

    /// Checks `name`; the error says what is allowed.
    pub fn new(name: &str) -> Result<Name, String> {
        let valid_start = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let valid_rest = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid_start && valid_rest && name.len() <= Name::MAX_LEN {
            Ok(Name(name.to_owned()))
        } else {
            Err(format!(
                "{name:?} is not a valid name: use 1 to {} lowercase letters, digits, '-' and \
                 '_', starting with a letter or a digit",
                Name::MAX_LEN
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = String;

    fn try_from(name: String) -> Result<Name, String> {
        Name::new(&name)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// `package.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A long-running program under `[run]`, supervised and health-checked.
    Service,
    /// Only `[[cron]]` jobs; no `[run]`.
    Crontab,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Crontab => "crontab",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A program and its arguments, run without a shell.
///
/// `program` is a path relative to the version directory when it contains a `/` and does not
/// start with one (`bin/calculate`), an absolute path (`/usr/bin/python3`), or a bare name
/// looked up on `PATH` (`python3`). A relative path never contains `..`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    #[serde(rename = "command")]
    pub program: String,
    pub args: Vec<String>,
}

impl Command {
    /// The program to execute for a package unpacked in `dir`: `dir/bin/x` for `bin/x`, an
    /// absolute path as it is, a bare name as it is (for the `PATH` lookup of exec).
    pub fn program_in(&self, dir: &Path) -> PathBuf {
        if self.program.contains('/') && !self.program.starts_with('/') {
            dir.join(&self.program)
        } else {
            PathBuf::from(&self.program)
        }
    }
}

impl fmt::Display for Command {
    /// The words separated by spaces, for people; not something to give a shell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// `[run]`: what a service runs and how it is stopped and restarted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// `command` and `args`.
    #[serde(flatten)]
    pub command: Command,
    /// Added to the agent's environment for the program.
    pub env: BTreeMap<String, String>,
    pub stop_signal: StopSignal,
    /// After `stop_signal`, how long until the whole process group gets SIGKILL.
    #[serde(with = "duration")]
    pub stop_timeout: Duration,
    /// How long a stop of a healthy instance waits between taking its endpoints out of the
    /// agent's report and sending `stop_signal`, so clients move to other instances first
    /// (Nomad's `shutdown_delay`). Zero unless set.
    #[serde(default, with = "duration")]
    pub shutdown_delay: Duration,
    pub restart: Restart,
    /// Packages that must be healthy before this one starts.
    pub start_after: Vec<Name>,
    /// The TCP ports the program listens on, in manifest order, no two alike: while it is
    /// running and healthy, the agent reports `HOST:PORT` for each as an endpoint of the
    /// service named after the package, for discovery.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// `run.stop_signal`: the signals a program may ask to be stopped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopSignal {
    #[serde(rename = "TERM")]
    Term,
    #[serde(rename = "INT")]
    Int,
    #[serde(rename = "QUIT")]
    Quit,
    #[serde(rename = "HUP")]
    Hup,
    #[serde(rename = "USR1")]
    Usr1,
    #[serde(rename = "USR2")]
    Usr2,
    #[serde(rename = "WINCH")]
    Winch,
    #[serde(rename = "KILL")]
    Kill,
}

impl StopSignal {
    /// Every signal a program may ask to be stopped with.
    pub const ALL: [StopSignal; 8] = [
        StopSignal::Term,
        StopSignal::Int,
        StopSignal::Quit,
        StopSignal::Hup,
        StopSignal::Usr1,
        StopSignal::Usr2,
        StopSignal::Winch,
        StopSignal::Kill,
    ];

    /// The name without `SIG`, as manifests write it: `"TERM"`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Term => "TERM",
            StopSignal::Int => "INT",
            StopSignal::Quit => "QUIT",
            StopSignal::Hup => "HUP",
            StopSignal::Usr1 => "USR1",
            StopSignal::Usr2 => "USR2",
            StopSignal::Winch => "WINCH",
            StopSignal::Kill => "KILL",
        }
    }

    /// The full name, `"SIGTERM"`, which `nix::sys::signal::Signal::from_str` reads.
    pub fn sig_name(self) -> String {
        format!("SIG{}", self.name())
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `run.restart`: when the agent starts a service again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    Always,
    /// After a non-zero exit or a death by signal.
    OnFailure,
    Never,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        }
    }
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[health]`: how the agent decides a running service is healthy. With only `port`, a TCP
/// connection to it; with `ping`, the `shoal.ping` RPC method on it; with `http`, a GET that
/// must answer 2xx or 3xx. At least one check is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// On 127.0.0.1.
    pub port: Option<u16>,
    pub ping: bool,
    pub http: Option<HttpCheck>,
    #[serde(with = "duration")]
    pub interval: Duration,
    /// At most `interval`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Consecutive failed checks that make the agent restart the service; at least 1.
    pub failures: u32,
    /// After a start, how long failed checks do not count.
    #[serde(with = "duration")]
    pub grace: Duration,
}

/// `health.http`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HttpCheck {
    /// `"/healthz"`: GET on 127.0.0.1 at `health.port`.
    Path(String),
    /// `"http://127.0.0.1:8080/healthz"`: GET this URL.
    Url(String),
}

impl fmt::Display for HttpCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpCheck::Path(s) | HttpCheck::Url(s) => f.write_str(s),
        }
    }
}

/// `[hooks]`: programs run inside the version directory during an install or upgrade.
///
/// A hook is written either as an array, `["pip", "install", "-r", "requirements.txt"]`, or
/// as a string that is split at whitespace, `"pip install -r requirements.txt"`. Neither goes
/// through a shell: a string that needs one (quotes, `|`, `&`, `;`, `<`, `>`, `$`, `` ` ``,
/// `*`, `?`, `\`) is refused, so that nothing reads as shell syntax that is not run as such;
/// put such steps in a script and name the script.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// After unpacking, before the version is switched to.
    pub install: Option<Command>,
    /// After the new version has started during an upgrade; failing rolls back.
    pub verify: Option<Command>,
}

/// `[logs]`: rotation of the captured stdout and stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logs {
    /// Bytes.
    pub max_size: u64,
    /// Rotated files kept.
    pub keep: u32,
}

impl Default for Logs {
    fn default() -> Logs {
        Logs {
            max_size: 100_000_000,
            keep: 10,
        }
    }
}

/// `[backup]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Relative paths that stay below the app's directory (no leading `/`, no `..`).
    pub paths: Vec<String>,
    #[serde(with = "duration")]
    pub every: Duration,
    pub keep: u32,
}

/// `[config]`: where the agent writes the center's configuration for a program not built with
/// the SDK, and how the program is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// Relative to the app's data directory (`apps/NAME/data`), never leaving it.
    pub path: String,
    pub reload: ConfigReload,
}

/// How a program takes a new configuration file: `config.reload_signal` names a signal, and
/// without it the program is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigReload {
    /// Its main process is sent this signal (`reload_signal = "HUP"`).
    Signal(StopSignal),
    /// It is restarted (no `reload_signal`).
    Restart,
}

impl fmt::Display for ConfigReload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigReload::Signal(signal) => write!(f, "SIG{signal}"),
            ConfigReload::Restart => f.write_str("a restart"),
        }
    }
}

/// One `[[cron]]` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronJob {
    pub name: Name,
    /// Six fields, seconds first (`"0 */5 * * * *"`), as croner reads them; checked.
    pub schedule: String,
    /// `command` and `args`.
    #[serde(flatten)]
    pub command: Command,
    pub overlap: Overlap,
    /// A run still going after this long is killed.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

/// `cron.overlap`: whether a tick starts a run while the previous one is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// The tick is skipped (and recorded as skipped).
    Forbid,
    Allow,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Forbid => "forbid",
            Overlap::Allow => "allow",
        }
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Durations as the manifest writes them: `"10s"`, `"1m 30s"`, `"1day"` (humantime).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*duration).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"10s\": {e}"))
        })
    }
}
