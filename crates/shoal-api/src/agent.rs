//! What the agent answers and takes: apps, install reports, versions, backups, cron jobs and runs, log queries.
//!
//! The JSON they make is the local API's wire format, and what a center will send over RPC:
//! field names in snake_case, choices as lowercase words (`"running"`, `"rolled_back"`),
//! times in RFC 3339 UTC, durations in whole milliseconds (`*_ms`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::Overlap;

/// What a package is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// Programs the agent supervises.
    Service,
    /// Jobs the agent runs on schedules.
    Crontab,
}

/// Where an app is in its life, as `shoal ps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AppState {
    /// Started; with `[health]`, no check has passed yet.
    Starting,
    /// Started, and (with `[health]`) a check has passed since.
    Running,
    /// Ended or unhealthy, waiting to be started again.
    Backoff,
    /// Being sent its stop signal, then SIGKILL.
    Stopping,
    /// Stopped on request, or never started.
    Stopped,
    /// Ended with exit code 0 and its restart policy does not start it again.
    Exited,
    /// Ended otherwise and its restart policy does not start it again.
    Failed,
    /// A crontab package: its jobs run on their schedules.
    Scheduled,
    /// A service the supervisor does not know (its registration failed).
    Unknown,
}

impl AppState {
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Starting => "starting",
            AppState::Running => "running",
            AppState::Backoff => "backoff",
            AppState::Stopping => "stopping",
            AppState::Stopped => "stopped",
            AppState::Exited => "exited",
            AppState::Failed => "failed",
            AppState::Scheduled => "scheduled",
            AppState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service's health checks: `"ok"`, or `{"failing": {"failures": 3, "reason": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// The last check passed.
    Ok,
    /// The last check failed.
    Failing {
        /// Failed checks in a row that count (outside the grace period after a start).
        failures: u32,
        /// Why the last check failed.
        reason: Option<String>,
    },
}

impl fmt::Display for Health {
    /// `ok`, or `failing (3): connection refused`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Ok => f.write_str("ok"),
            Health::Failing { failures, reason } => {
                write!(f, "failing ({failures})")?;
                match reason {
                    Some(reason) => write!(f, ": {reason}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// One installed app as `shoal ps` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppStatus {
    pub name: String,
    /// The version running (a service's running process), else the current one.
    pub version: String,
    pub kind: AppKind,
    pub state: AppState,
    pub pid: Option<u32>,
    pub uptime_secs: Option<u64>,
    /// Starts the supervisor made by itself since the last start asked for.
    pub restarts: u64,
    /// Of one core, over the time since the previous look.
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// None without `[health]` checks.
    pub health: Option<Health>,
    /// How the last process ended (`exit code 1`), or why it could not start.
    pub last_exit: Option<String>,
    /// Where the service answers: `HOST:PORT` for each of its manifest's `run.ports`, while
    /// it runs and passes its health checks (without checks: while it runs). Empty otherwise,
    /// and when the agent knows no address of its own (no `--advertise`, no center).
    #[serde(default)]
    pub endpoints: Vec<String>,
}

impl AppStatus {
    /// An app with no process figures known: no pid, uptime, CPU, memory, health, last exit
    /// or endpoints, no restarts. Set the rest with struct update syntax.
    pub fn new(name: String, version: String, kind: AppKind, state: AppState) -> AppStatus {
        AppStatus {
            name,
            version,
            kind,
            state,
            pid: None,
            uptime_secs: None,
            restarts: 0,
            cpu_percent: None,
            rss_bytes: None,
            health: None,
            last_exit: None,
            endpoints: Vec::new(),
        }
    }
}

/// What an install or rollback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallOutcome {
    /// No version was installed before.
    Installed,
    /// A newer version than the current one.
    Upgraded,
    /// An older version than the current one.
    Downgraded,
    /// Back to an installed version, on request.
    RolledBack,
}

impl fmt::Display for InstallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstallOutcome::Installed => "installed",
            InstallOutcome::Upgraded => "upgraded",
            InstallOutcome::Downgraded => "downgraded",
            InstallOutcome::RolledBack => "rolled back",
        })
    }
}

/// The header that carries an uploaded package archive's sha256 (64 hex digits): on the
/// agent's `POST /v1/install` and the center's `POST /api/v1/packages`. The receiver refuses an
/// archive of another digest before it keeps anything.
pub const SHA256_HEADER: &str = "x-shoal-sha256";

/// The result of an install, upgrade or rollback that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallReport {
    pub name: String,
    /// The version now current.
    pub version: String,
    /// The version that was current before, if any.
    pub previous: Option<String>,
    pub outcome: InstallOutcome,
}

/// An installed version of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    /// `current` points to it.
    pub current: bool,
}

/// A rollback: to `to`, or without it to the newest version older than the current one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub to: Option<String>,
}

/// What to do to a service's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppAction {
    Start,
    Stop,
    /// Stop, then start.
    Restart,
    /// Send it SIGHUP.
    Reload,
}

impl AppAction {
    pub const ALL: [AppAction; 4] = [
        AppAction::Start,
        AppAction::Stop,
        AppAction::Restart,
        AppAction::Reload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AppAction::Start => "start",
            AppAction::Stop => "stop",
            AppAction::Restart => "restart",
            AppAction::Reload => "reload",
        }
    }
}

impl fmt::Display for AppAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AppAction {
    type Err = UnknownAction;

    fn from_str(text: &str) -> Result<AppAction, UnknownAction> {
        AppAction::ALL
            .into_iter()
            .find(|a| a.as_str() == text)
            .ok_or_else(|| UnknownAction(text.to_owned()))
    }
}

/// A word that is no [`AppAction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAction(pub String);

impl fmt::Display for UnknownAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no action {:?}; use start, stop, restart or reload",
            self.0
        )
    }
}

impl std::error::Error for UnknownAction {}

/// An action done: what `POST /v1/apps/NAME/ACTION` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionDone {
    pub app: String,
    pub done: AppAction,
}

/// One backup of an app's `[backup] paths`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The file name, which a restore takes: `NAME-YYYYMMDDTHHMMSSZ.tar.gz`.
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// Bytes of the archive.
    pub size: u64,
    /// The archive's SHA-256, in hex.
    pub sha256: String,
}

/// A backup just taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCreated {
    pub backup: BackupInfo,
    /// What was left out or changed while it was read: `data/app.sock: a socket: left out`.
    pub notes: Vec<String>,
    /// Backups removed to keep `[backup] keep`.
    pub pruned: Vec<String>,
}

/// A restore done: what `POST /v1/apps/NAME/backups/ID/restore` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    pub app: String,
    /// The backup's id.
    pub restored: String,
}

/// A crontab job as `shoal cron ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub app: String,
    pub job: String,
    /// Six fields, seconds first.
    pub schedule: String,
    /// The command line, for people.
    pub command: String,
    pub overlap: Overlap,
    pub timeout_ms: u64,
    /// The next tick, if the schedule has one.
    pub next: Option<DateTime<Utc>>,
    /// The runs going now, oldest first.
    pub running: Vec<i64>,
    /// The newest record that is not a run still going.
    pub last: Option<RunRecord>,
}

/// What started a cron run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A tick of the job's schedule.
    Schedule,
    /// `shoal cron run`.
    Manual,
}

/// How a cron run ended, or that it has not yet; in JSON its `status` and the fields that go
/// with it, beside the record's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RunStatus {
    Running,
    /// The job's process exited by itself with this code (0 is success).
    Exited {
        code: i32,
    },
    /// The job's process was killed by this signal, not by the agent.
    Signaled {
        signal: i32,
    },
    /// Still going after the job's timeout: its process group was stopped.
    TimedOut,
    /// The program could not be started.
    FailedToStart {
        error: String,
    },
    /// Ticks that came while run `blocked_by` was going and the job's overlap is `forbid`.
    Skipped {
        ticks: u32,
        blocked_by: i64,
    },
    /// The agent stopped watching the run: it shut down, or was killed and restarted.
    Interrupted {
        reason: String,
    },
    /// Stopped on request.
    Stopped,
}

impl fmt::Display for RunStatus {
    /// Short, for a table cell: `exit 4`, `signal 9`, `skipped 3 ticks (run 7 going)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunStatus::Running => f.write_str("running"),
            RunStatus::Exited { code } => write!(f, "exit {code}"),
            RunStatus::Signaled { signal } => write!(f, "signal {signal}"),
            RunStatus::TimedOut => f.write_str("timed out"),
            RunStatus::FailedToStart { error } => write!(f, "failed to start: {error}"),
            RunStatus::Skipped { ticks, blocked_by } => {
                write!(f, "skipped {ticks} ticks (run {blocked_by} going)")
            }
            RunStatus::Interrupted { reason } => write!(f, "interrupted: {reason}"),
            RunStatus::Stopped => f.write_str("stopped"),
        }
    }
}

/// One cron run in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique in the agent's history.
    pub id: i64,
    pub app: String,
    pub job: String,
    pub trigger: Trigger,
    /// When the run started; for a skip, its first tick.
    pub started_at: DateTime<Utc>,
    /// How long it ran; none while running or when the agent lost track of it.
    pub duration_ms: Option<u64>,
    #[serde(flatten)]
    pub status: RunStatus,
    /// The job's process id (and process group), once started.
    pub pid: Option<u32>,
    /// The last bytes of its stdout and stderr together.
    pub output: String,
}

/// Which of an app's captured streams to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Both, merged by the time each line was captured.
    #[default]
    Both,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Both => "both",
        }
    }
}

impl std::str::FromStr for LogStream {
    type Err = String;

    fn from_str(text: &str) -> Result<LogStream, String> {
        [LogStream::Stdout, LogStream::Stderr, LogStream::Both]
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| format!("no stream {text:?}; use stdout, stderr or both"))
    }
}

/// A question about an app's captured output (the query of `GET /v1/apps/NAME/logs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogQuery {
    #[serde(default)]
    pub stream: LogStream,
    /// A regular expression the text after a line's time must match.
    pub grep: Option<String>,
    /// Only lines captured within this long: `90s`, `10m`, `2h`.
    pub since: Option<String>,
    /// Keep the answer open, sending what is written next.
    #[serde(default)]
    pub follow: bool,
    /// How many of the last lines (after `since` and `grep`); `tail` is the name earlier
    /// clients send.
    #[serde(default = "LogQuery::default_lines", alias = "tail")]
    pub lines: usize,
}

impl LogQuery {
    /// Lines answered when a query does not say.
    pub const DEFAULT_LINES: usize = 200;

    fn default_lines() -> usize {
        LogQuery::DEFAULT_LINES
    }
}

impl Default for LogQuery {
    fn default() -> LogQuery {
        LogQuery {
            stream: LogStream::Both,
            grep: None,
            since: None,
            follow: false,
            lines: LogQuery::DEFAULT_LINES,
        }
    }
}

/// An error as the agent's API answers it: `{"error": "what went wrong and what to do"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON of `value`, and that it reads back as the same value.
    fn json<T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug>(
        value: &T,
    ) -> String {
        let text = serde_json::to_string(value).unwrap();
        let back: T = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, value, "{text}");
        text
    }

    #[test]
    fn choices_are_readable_words_on_the_wire() {
        assert_eq!(json(&Health::Ok), r#""ok""#);
        assert_eq!(
            json(&Health::Failing {
                failures: 3,
                reason: Some("connection refused".into())
            }),
            r#"{"failing":{"failures":3,"reason":"connection refused"}}"#
        );
        assert_eq!(json(&InstallOutcome::RolledBack), r#""rolled_back""#);
        assert_eq!(json(&AppState::Backoff), r#""backoff""#);
        assert_eq!(json(&AppAction::Reload), r#""reload""#);
        assert_eq!(json(&LogStream::Stderr), r#""stderr""#);
        let run = RunRecord {
            id: 7,
            app: "report".into(),
            job: "daily".into(),
            trigger: Trigger::Manual,
            started_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            duration_ms: Some(12),
            status: RunStatus::Skipped {
                ticks: 2,
                blocked_by: 6,
            },
            pid: None,
            output: String::new(),
        };
        assert_eq!(
            json(&run),
            r#"{"id":7,"app":"report","job":"daily","trigger":"manual","started_at":"2023-11-14T22:13:20Z","duration_ms":12,"status":"skipped","ticks":2,"blocked_by":6,"pid":null,"output":""}"#
        );
    }

    #[test]
    fn words_read_as_actions_and_health_reads_as_text() {
        assert_eq!("restart".parse(), Ok(AppAction::Restart));
        let e = "kill".parse::<AppAction>().unwrap_err().to_string();
        assert_eq!(e, "no action \"kill\"; use start, stop, restart or reload");
        let failing = Health::Failing {
            failures: 2,
            reason: Some("timed out".into()),
        };
        assert_eq!(failing.to_string(), "failing (2): timed out");
        let query: LogQuery = serde_json::from_str("{}").unwrap();
        assert_eq!(query, LogQuery::default());
    }
}
