//! What `shoal.status` answers: a snapshot of a running service, readable without the runtime.
//!
//! The runtime (`shoal`) builds a [`Status`] and sends it as a MessagePack map with these
//! field names (the monitor feed sends the same map, or the same object as JSON); times are
//! RFC 3339 strings in UTC, and every choice (the service's state, a worker's kind and state)
//! is a lowercase string on the wire and an enum here.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A snapshot of a running service, as `shoal.status` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub version: String,
    pub pid: u32,
    pub state: ServiceState,
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
    /// The configuration in force, secrets (by key name, and passwords inside URLs and DSNs)
    /// replaced by `"<redacted>"`. Empty when asked on the service's public port, unless its
    /// `status.public_config` is true; the admin socket always carries it.
    pub config: toml::Table,
    pub services: Vec<String>,
    pub methods: Vec<MethodCount>,
    pub timers: Vec<TimerStats>,
    /// Worker groups' workers and process-mode RPC workers (group `rpc`).
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
    /// The version of the center's configuration layer in force (`SHOAL_CENTER_CONFIG`);
    /// `None` without one.
    #[serde(default)]
    pub center_version: Option<u64>,
}

/// Where a service is in its life; `"starting"`, `"running"`, `"reloading"` or `"closing"`
/// on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum ServiceState {
    /// Loading its configuration, binding, running `on_start`.
    Starting,
    /// Serving.
    Running,
    /// Reading its configuration again; it serves meanwhile.
    Reloading,
    /// Told to close: no new connections, in-flight work finishing.
    Closing,
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

/// One timer's counters. Times are RFC 3339 strings in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerStats {
    /// The timer's name.
    pub name: String,
    /// The schedule in its string form (`every 30s`, `hour+5m`, `cron: ...`).
    pub schedule: String,
    /// Runs started and finished, failed ones included.
    pub runs: u64,
    /// Runs that returned an error or panicked.
    pub failures: u64,
    /// Ticks missed because a run (of this timer or, in the serial lane, another) overran, or
    /// the wall clock jumped forward.
    pub skipped: u64,
    /// When the last run started.
    #[serde(default, with = "rfc3339")]
    pub last_run: Option<DateTime<Utc>>,
    /// How long the last run took.
    pub last_duration_ms: Option<u64>,
    /// When the timer runs next; `None` before the timers start and after the timer stops.
    #[serde(default, with = "rfc3339")]
    pub next_run: Option<DateTime<Utc>>,
    /// The last failure's message.
    pub last_error: Option<String>,
}

/// A worker of a worker group, or a process-mode RPC worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The group's name; `rpc` for process-mode RPC workers.
    pub group: String,
    pub index: usize,
    pub kind: WorkerKind,
    /// The process running it (the service's own for tasks and threads); None between
    /// restarts.
    pub pid: Option<u32>,
    pub state: WorkerState,
    /// Restarts after failures since the application started.
    pub restarts: u64,
    /// How the last run ended, when one has.
    pub last_exit: Option<String>,
}

/// How the workers of a group run; `"task"`, `"thread"` or `"process"` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum WorkerKind {
    /// Async tasks on the application's runtime.
    Task,
    /// OS threads, for blocking work.
    Thread,
    /// Processes: the binary started again, running only this worker.
    Process,
}

/// Where a worker is; its lowercase name on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum WorkerState {
    /// Started (a process that has not yet said it runs).
    Starting,
    Running,
    /// Waiting out the backoff after a failure.
    Restarting,
    /// Returned Ok (a process exited 0): not restarted.
    Finished,
    /// A process told to close.
    Stopping,
    Stopped,
}

/// A choice written as its name: `as_str`, `Display`, and serde through the name. A plain
/// string on the wire is what every decoder reads (rmpv's, which shoal's RPC client decodes
/// through, reads no string as an enum), and what older peers sent.
macro_rules! named_choice {
    ($ty:ident, $what:literal { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<$ty> for &'static str {
            fn from(choice: $ty) -> &'static str {
                choice.as_str()
            }
        }

        impl TryFrom<String> for $ty {
            type Error = String;

            fn try_from(text: String) -> Result<$ty, String> {
                match text.as_str() {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(format!(
                        "unknown {} {text:?}; expected one of {}",
                        $what,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
    };
}

named_choice!(ServiceState, "service state" {
    Starting => "starting",
    Running => "running",
    Reloading => "reloading",
    Closing => "closing",
});

named_choice!(WorkerKind, "worker kind" {
    Task => "task",
    Thread => "thread",
    Process => "process",
});

named_choice!(WorkerState, "worker state" {
    Starting => "starting",
    Running => "running",
    Restarting => "restarting",
    Finished => "finished",
    Stopping => "stopping",
    Stopped => "stopped",
});

/// `Option<DateTime<Utc>>` as an RFC 3339 string (whole seconds when there is no fraction).
mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        time: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => {
                serializer.serialize_some(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        DateTime::parse_from_rfc3339(&text)
            .map(|time| Some(time.with_timezone(&Utc)))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every choice reads and writes as the lowercase name older peers send.
    #[test]
    fn choices_are_their_lowercase_names_on_the_wire() {
        fn check<T>(value: T, name: &str)
        where
            T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug + fmt::Display,
        {
            let packed = rmp_serde::to_vec_named(&value).unwrap();
            let text: String = rmp_serde::from_slice(&packed).unwrap();
            assert_eq!(text, name);
            assert_eq!(value.to_string(), name);
            let packed_name = rmp_serde::to_vec_named(name).unwrap();
            assert_eq!(rmp_serde::from_slice::<T>(&packed_name).unwrap(), value);
            // The path shoal's RPC client decodes replies through.
            let value_name = rmpv::Value::from(name);
            assert_eq!(rmpv::ext::from_value::<T>(value_name).unwrap(), value);
            assert_eq!(
                rmpv::ext::to_value(&value).unwrap(),
                rmpv::Value::from(name)
            );
        }
        check(ServiceState::Starting, "starting");
        check(ServiceState::Running, "running");
        check(ServiceState::Reloading, "reloading");
        check(ServiceState::Closing, "closing");
        check(WorkerKind::Task, "task");
        check(WorkerKind::Thread, "thread");
        check(WorkerKind::Process, "process");
        check(WorkerState::Starting, "starting");
        check(WorkerState::Running, "running");
        check(WorkerState::Restarting, "restarting");
        check(WorkerState::Finished, "finished");
        check(WorkerState::Stopping, "stopping");
        check(WorkerState::Stopped, "stopped");
        let unknown = rmp_serde::to_vec_named("paused").unwrap();
        let error = rmp_serde::from_slice::<ServiceState>(&unknown).unwrap_err();
        assert!(
            error.to_string().contains(
                "unknown service state \"paused\"; expected one of starting, running, reloading, closing"
            ),
            "{error}"
        );
    }

    /// A snapshot as an older runtime wrote it (state a plain string, no `metrics_addr`,
    /// `monitor_addr` or `workers`) still decodes.
    #[test]
    fn an_older_snapshot_decodes() {
        let old = serde_json::json!({
            "name": "hello",
            "version": "1.0.0",
            "pid": 42,
            "state": "running",
            "started_at": "2024-05-01T12:00:00Z",
            "uptime_secs": 5,
            "config_file": null,
            "rpc_addr": "127.0.0.1:7000",
            "last_reload": null,
            "last_error": null,
            "errors": 0,
            "last_summary": null,
            "last_heartbeat": null,
            "config": {"rpc": {"listen": "127.0.0.1:7000"}},
            "services": ["Hello"],
            "methods": [],
            "timers": [{"name": "tick", "schedule": "every 10s", "runs": 1, "failures": 0,
                        "skipped": 0, "last_run": "2024-05-01T12:00:10Z",
                        "last_duration_ms": 3, "next_run": null, "last_error": null}],
        });
        let packed = rmp_serde::to_vec_named(&old).unwrap();
        let status: Status = rmp_serde::from_slice(&packed).unwrap();
        let through_value: Status =
            rmpv::ext::from_value(rmp_serde::from_slice::<rmpv::Value>(&packed).unwrap()).unwrap();
        assert_eq!(through_value.state, ServiceState::Running);
        assert_eq!(status.state, ServiceState::Running);
        assert_eq!(status.workers, Vec::new());
        assert_eq!(
            status.timers[0].last_run.unwrap().to_rfc3339(),
            "2024-05-01T12:00:10+00:00"
        );
        let again = serde_json::to_value(&status).unwrap();
        assert_eq!(again["state"], "running");
        assert_eq!(again["timers"][0]["last_run"], "2024-05-01T12:00:10Z");
    }
}
