//! What `shoal.status` answers: who the process is, what happened to it last (reload, error,
//! summary), its effective configuration with secrets redacted, and per-method call counts.
//! The records are kept in a `Recorder`, which every part of the runtime writes to.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::timer::TimerStats;
use crate::workers::WorkerStatus;

/// A snapshot of a running application, as `shoal.status` returns it (a MessagePack map with
/// these field names; times are RFC 3339 strings in UTC).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub version: String,
    pub pid: u32,
    /// `starting`, `running`, `reloading` or `closing`.
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub uptime_secs: u64,
    pub config_file: Option<String>,
    /// Where the RPC listener listens, with the real port.
    pub rpc_addr: Option<String>,
    /// Where the Prometheus exporter listens (`metrics.listen`), with the real port.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// Where the monitor feed publishes (`tcp://HOST:PORT` with the real port, or
    /// `ipc://PATH`); None when `monitor.publish` is unset or not bound yet.
    #[serde(default)]
    pub monitor_addr: Option<String>,
    pub last_reload: Option<ReloadRecord>,
    pub last_error: Option<ErrorRecord>,
    /// Errors recorded since start.
    pub errors: u64,
    pub last_summary: Option<SummaryRecord>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// The configuration in force, secrets replaced by `"<redacted>"`.
    pub config: toml::Table,
    pub services: Vec<String>,
    pub methods: Vec<MethodCount>,
    pub timers: Vec<TimerStats>,
    /// Worker groups' workers and process-mode RPC workers (group `rpc`).
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
}

/// The outcome of the last reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadRecord {
    pub at: DateTime<Utc>,
    pub ok: bool,
    /// Why the new configuration was rejected; the old one stays in force.
    pub error: Option<String>,
}

/// An error the runtime recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub at: DateTime<Utc>,
    /// Where it happened: `timer NAME`, `on_start`, `run`, `reload`, `watchdog`, ...
    pub origin: String,
    pub message: String,
    /// The chain of causes, one per line, or a panic's location.
    pub trace: String,
}

/// The last summary logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub at: DateTime<Utc>,
    pub text: String,
}

/// Calls answered per method since start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodCount {
    pub method: String,
    pub calls: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// The mutable part of status, shared by the runtime's tasks.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    inner: Mutex<Records>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Records {
    pub state: &'static str,
    pub last_reload: Option<ReloadRecord>,
    pub last_error: Option<ErrorRecord>,
    pub errors: u64,
    pub last_summary: Option<SummaryRecord>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Records {
                state: "starting",
                ..Records::default()
            }),
        }
    }

    pub(crate) fn read(&self) -> Records {
        self.lock().clone()
    }

    pub(crate) fn set_state(&self, state: &'static str) {
        self.lock().state = state;
    }

    pub(crate) fn error(&self, record: ErrorRecord) {
        let mut records = self.lock();
        records.errors += 1;
        records.last_error = Some(record);
    }

    pub(crate) fn reload(&self, record: ReloadRecord) {
        self.lock().last_reload = Some(record);
    }

    pub(crate) fn summary(&self, record: SummaryRecord) {
        self.lock().last_summary = Some(record);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The causes of `error`, outermost first, one per line.
pub(crate) fn trace_of(error: &(dyn std::error::Error + 'static)) -> String {
    let mut lines = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        lines.push(format!("caused by: {cause}"));
        source = cause.source();
    }
    lines.join("\n")
}
