//! [`Handle`]: what hooks, timers and services hold to reach the running application —
//! heartbeat, configuration, status, shared state and the control actions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use shoal_rpc::middleware::Stats;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::error;

use super::setup::StateMap;
use crate::config::Config;
use crate::control::Command;
use crate::hooks::DynHooks;
use crate::live::ConfigCell;
use crate::status::{trace_of, ErrorRecord, MethodCount, Recorder, Status};
use crate::timer::Timers;
use crate::workers::Board;

/// A cheap, cloneable reference to the running application.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.shared.name)
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) started: Instant,
    pub(crate) cell: Arc<ConfigCell>,
    pub(crate) recorder: Recorder,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) closing: CancellationToken,
    /// Milliseconds after `started` of the last heartbeat; the start counts as one, so a
    /// watchdog is armed from the first moment (not from the first heartbeat).
    pub(crate) heartbeat_ms: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    pub(crate) stats: Stats,
    pub(crate) hooks: Arc<dyn DynHooks>,
    pub(crate) timers: OnceLock<Timers>,
    pub(crate) services: OnceLock<Vec<String>>,
    pub(crate) rpc_addr: OnceLock<String>,
    pub(crate) metrics_addr: OnceLock<String>,
    /// Where the monitor feed is bound now; the feed's task writes it.
    pub(crate) monitor_addr: watch::Sender<Option<String>>,
    pub(crate) state: OnceLock<StateMap>,
    pub(crate) workers: Arc<Board>,
}

impl Handle {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn version(&self) -> &str {
        &self.shared.version
    }

    /// Tells the watchdog the application is alive. Without one within `watchdog.timeout`,
    /// the process exits with code 4 so its supervisor restarts it.
    pub fn heartbeat(&self) {
        let ms = self.shared.started.elapsed().as_millis() as u64;
        self.shared.heartbeat_ms.store(ms, Ordering::Relaxed);
        self.shared.heartbeats.fetch_add(1, Ordering::Relaxed);
    }

    /// Restarts the watchdog's count without counting a heartbeat: when serving begins.
    pub(crate) fn reset_watchdog(&self) {
        let ms = self.shared.started.elapsed().as_millis() as u64;
        self.shared.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// When the last heartbeat was (the start, before the first).
    pub(crate) fn last_heartbeat(&self) -> Instant {
        self.shared.started
            + std::time::Duration::from_millis(self.shared.heartbeat_ms.load(Ordering::Relaxed))
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.shared.cell.snapshot().config.clone()
    }

    /// Resolves when the application starts closing.
    pub fn closing(&self) -> WaitForCancellationFutureOwned {
        self.shared.closing.clone().cancelled_owned()
    }

    pub fn is_closing(&self) -> bool {
        self.shared.closing.is_cancelled()
    }

    /// Re-reads the configuration, as SIGHUP does; says why a rejected one was rejected.
    pub async fn reload(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Reload(Some(tx)))?;
        rx.await
            .map_err(|_| "the application is closing".to_string())?
    }

    /// Starts a graceful close, as SIGTERM does.
    pub fn close(&self) {
        let _ = self.send(Command::Close { signal: None });
    }

    /// Re-executes the binary and hands the listeners over, as SIGUSR2 does; returns the new
    /// process's pid once it serves. This process then closes.
    pub async fn restart(&self) -> Result<u32, String> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Restart(Some(tx)))?;
        rx.await
            .map_err(|_| "the application is closing".to_string())?
    }

    /// The shared value of type `T` the setup put in.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.shared.state.get()?.get::<T>()
    }

    /// Records an error (shown as status's `last_error`), logs it and passes it to
    /// `on_error`. `origin` says where it happened, like `"timer cleanup"`.
    pub fn report_error(&self, origin: &str, error: &(dyn std::error::Error + 'static)) {
        self.record_error(origin, error.to_string(), trace_of(error));
    }

    pub(crate) fn record_error(&self, origin: &str, message: String, trace: String) {
        error!(origin, error = %message, "{origin} failed");
        let record = ErrorRecord {
            at: Utc::now(),
            origin: origin.to_owned(),
            message,
            trace,
        };
        self.shared.hooks.on_error(&record);
        self.shared.recorder.error(record);
    }

    /// What `shoal.status` answers.
    pub fn status(&self) -> Status {
        let shared = &self.shared;
        let records = shared.recorder.read();
        let snapshot = shared.cell.snapshot();
        let heartbeats = shared.heartbeats.load(Ordering::Relaxed);
        let last_heartbeat = (heartbeats > 0).then(|| {
            let ms = shared.heartbeat_ms.load(Ordering::Relaxed);
            shared.started_at + chrono::Duration::milliseconds(ms as i64)
        });
        Status {
            name: shared.name.clone(),
            version: shared.version.clone(),
            pid: std::process::id(),
            state: records.state,
            started_at: shared.started_at,
            uptime_secs: shared.started.elapsed().as_secs(),
            rpc_addr: shared.rpc_addr.get().cloned(),
            metrics_addr: shared.metrics_addr.get().cloned(),
            monitor_addr: shared.monitor_addr.borrow().clone(),
            // Several files as `base.toml, local.toml`, in the order given.
            config_file: (!snapshot.config.files().is_empty())
                .then(|| crate::config::file_names(snapshot.config.files())),
            last_reload: records.last_reload,
            last_error: records.last_error,
            errors: records.errors,
            last_summary: records.last_summary,
            last_heartbeat,
            config: snapshot.config.redacted(),
            services: shared.services.get().cloned().unwrap_or_default(),
            methods: shared
                .stats
                .snapshot()
                .into_iter()
                .map(|m| MethodCount {
                    method: m.method,
                    calls: m.calls,
                    errors: m.errors,
                    p50_us: m.latency.p50_us,
                    p99_us: m.latency.p99_us,
                })
                .collect(),
            timers: shared.timers.get().map(Timers::stats).unwrap_or_default(),
            workers: shared.workers.snapshot(),
            center_version: snapshot.config.center_version(),
        }
    }

    fn send(&self, command: Command) -> Result<(), String> {
        self.shared
            .commands
            .send(command)
            .map_err(|_| "the application has ended".to_string())
    }
}
