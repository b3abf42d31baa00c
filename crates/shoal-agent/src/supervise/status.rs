//! What [`Supervisor::status`](super::Supervisor::status) reports about each program.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_pkg::manifest::{Name, Version};

/// One program as the supervisor sees it now. Serializes to JSON for the local API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramStatus {
    pub name: Name,
    /// The running process's version; the registered one when nothing runs.
    pub version: Version,
    pub state: ProgramState,
    /// The main process, while one runs.
    pub pid: Option<u32>,
    /// Its process group (the same number: every program leads its own session).
    pub pgid: Option<u32>,
    /// When the running process started.
    pub started_at: Option<DateTime<Utc>>,
    /// When `state` last changed.
    pub since: DateTime<Utc>,
    /// In [`ProgramState::Backoff`], when the next start is due.
    pub next_start: Option<DateTime<Utc>>,
    /// Starts the supervisor made by itself (after an exit or failed health checks) since the
    /// last start asked for.
    pub restarts: u32,
    /// How the last process ended.
    pub last_exit: Option<Exit>,
    /// Why the last start failed or the last restart happened, when it was not a plain exit:
    /// the program could not be executed, a `start_after` program was not healthy, health
    /// checks failed.
    pub error: Option<String>,
    /// `None` when the program has no `[health]`.
    pub health: Option<HealthStatus>,
    /// CPU used by the process group (every live member), in percent of one core, over the
    /// time since the previous look at the program at least a second old (at the first look:
    /// since the process started). `None` while nothing runs.
    pub cpu_percent: Option<f64>,
    /// Resident memory of the process group (every live member), in bytes.
    pub rss_bytes: Option<u64>,
}

impl ProgramStatus {
    /// Running, and (with `[health]`) its last check passed.
    pub fn is_healthy(&self) -> bool {
        self.state == ProgramState::Running && self.health.as_ref().is_none_or(|h| h.ok)
    }
}

/// Where a program is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgramState {
    /// Started; with `[health]`, no check has passed yet.
    Starting,
    /// Started, and (with `[health]`) a check has passed since.
    Running,
    /// Ended or unhealthy, waiting for [`ProgramStatus::next_start`] to start again.
    Backoff,
    /// Being sent its stop signal, then SIGKILL.
    Stopping,
    /// Stopped on request, or never started.
    Stopped,
    /// Ended with exit code 0 and its restart policy does not start it again.
    Exited,
    /// Ended otherwise (or could not be started) and its restart policy does not start it
    /// again.
    Failed,
}

impl ProgramState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramState::Starting => "starting",
            ProgramState::Running => "running",
            ProgramState::Backoff => "backoff",
            ProgramState::Stopping => "stopping",
            ProgramState::Stopped => "stopped",
            ProgramState::Exited => "exited",
            ProgramState::Failed => "failed",
        }
    }

    /// Nothing will start the program again unless asked to.
    pub fn is_at_rest(self) -> bool {
        matches!(
            self,
            ProgramState::Stopped | ProgramState::Exited | ProgramState::Failed
        )
    }
}

impl fmt::Display for ProgramState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal (`"SIGKILL"`).
    Signal(String),
    /// It was adopted from an earlier agent, so not this agent's child: the kernel tells
    /// only its parent how it ended.
    Unknown,
}

impl Exit {
    pub fn is_success(&self) -> bool {
        *self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(signal) => write!(f, "killed by {signal}"),
            Exit::Unknown => f.write_str("unknown: adopted"),
        }
    }
}

/// The health checks of a program with `[health]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthStatus {
    /// The last check passed.
    pub ok: bool,
    /// Failed checks in a row that count (outside the grace period after a start).
    pub consecutive_failures: u32,
    /// Why the last failed check failed.
    pub last_error: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
}
