//! Background worker groups: named groups of N workers that run beside the services, as async
//! tasks, OS threads or processes (pysvrkit's `self_server`). Each worker is told its group,
//! its index and the group's size, and stops with the application.
//!
//! ```no_run
//! # use shoal::App;
//! App::new("feeds", "1.0").setup(|app| {
//!     // Four async tasks.
//!     app.workers("poll", 4, |w| async move {
//!         while !w.is_closing() {
//!             // ... poll feed number w.index() ...
//!             tokio::select! {
//!                 _ = w.closing() => break,
//!                 _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
//!             }
//!         }
//!         Ok(())
//!     });
//!     // Two OS threads for blocking work.
//!     app.thread_workers("crunch", 2, |w| {
//!         while !w.wait_closing(std::time::Duration::from_secs(1)) { /* ... */ }
//!         Ok(())
//!     });
//!     // Two processes: the binary started again, running only this group's worker.
//!     app.workers("isolate", 2, |w| async move { w.closing().await; Ok(()) }).processes();
//!     Ok(())
//! });
//! ```
//!
//! Rules, the same for every kind:
//! - a worker that fails (returns an error, panics, or its process exits non-zero or is
//!   killed) is logged, recorded in status and restarted after a backoff: 100 ms, doubling
//!   up to 10 s, back to 100 ms once a worker has run for 30 s;
//! - a worker that returns `Ok` (or whose process exits 0) before the application closes has
//!   finished and is not restarted;
//! - when the application closes, workers are told (`closing()`, `is_closing()`,
//!   `wait_closing()`; processes get SIGTERM) and awaited within `shutdown.grace`; past it,
//!   tasks are dropped and processes killed (threads cannot be: the process exits anyway).
//! - a group of processes needs the application run as a process (`App::run`); `App::start`
//!   refuses it (exit 2). The name `rpc` is reserved for process mode's RPC workers.
//!
//! `[workers]` in the configuration changes a group's size: `poll = 8`.
//!
//! [`coroutines`] runs several copies of a body inside one worker (pysvrkit's
//! `process_coroutine`: worker processes of N coroutines each).
//!
//! A process worker is the same binary started again with `SHOAL_WORKER=GROUP:INDEX:COUNT`
//! and `SHOAL_WORKER_OF=PID` (the parent's pid, checked against the real parent so a program
//! the worker starts never mistakes itself for one). It loads the same configuration, runs the
//! setup (declarations only: no listener, timer, hook or other group starts), then only its
//! worker; SIGHUP reloads its configuration, SIGTERM closes it, and it is sent SIGTERM if the
//! parent dies. Process-mode RPC workers (`rpc.processes`) are started the same way.

pub(crate) mod process;
pub(crate) mod run;

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
pub use shoal_api::status::{WorkerKind, WorkerState, WorkerStatus};
use tokio_util::sync::CancellationToken;

use crate::{BoxError, Handle};

/// What a worker is told: who it is, and when to stop.
#[derive(Clone)]
pub struct Worker {
    group: Arc<str>,
    index: usize,
    count: usize,
    handle: Handle,
    closing: CancellationToken,
    flag: Arc<ClosingFlag>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("group", &self.group)
            .field("index", &self.index)
            .field("count", &self.count)
            .finish()
    }
}

impl Worker {
    pub(crate) fn new(group: &str, index: usize, count: usize, handle: Handle) -> Worker {
        let closing = handle.shared.closing.clone();
        Worker {
            group: group.into(),
            index,
            count,
            handle,
            closing,
            flag: Arc::new(ClosingFlag::default()),
        }
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// This worker's index in its group, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many workers the group has.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The application: configuration, state, heartbeat, errors.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Whether the application is closing: the worker should return soon.
    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Resolves when the application starts closing.
    pub async fn closing(&self) {
        self.closing.cancelled().await
    }

    /// Blocks the calling thread up to `timeout` or until the application closes; true when
    /// it closes. For thread workers, between units of blocking work.
    pub fn wait_closing(&self, timeout: Duration) -> bool {
        if self.is_closing() {
            return true;
        }
        self.flag.wait(timeout) || self.is_closing()
    }

    /// Wakes threads blocked in [`Worker::wait_closing`] once the application closes.
    pub(crate) fn wake_on_close(&self) -> impl Future<Output = ()> + Send + 'static {
        let closing = self.closing.clone();
        let flag = self.flag.clone();
        async move {
            closing.cancelled().await;
            flag.set();
        }
    }
}

/// Runs `count` copies of `body` at once as tasks of one worker, each told the worker and its
/// own index (`0..count`), and ends when all have: a worker process of `count` coroutines.
/// The first copy to fail (an error or a panic) ends the others, and its error is the
/// worker's, so the worker is restarted whole. A `count` of 0 runs one copy.
///
/// ```no_run
/// # use shoal::App;
/// App::new("feeds", "1.0").setup(|app| {
///     app.workers("fetch", 2, |w| {
///         shoal::workers::coroutines(w, 3, |w, coroutine| async move {
///             tracing::info!(index = w.index(), coroutine, "fetching");
///             w.closing().await;
///             Ok(())
///         })
///     })
///     .processes();
///     Ok(())
/// });
/// ```
pub async fn coroutines<F, Fut>(worker: Worker, count: usize, body: F) -> Result<(), BoxError>
where
    F: Fn(Worker, usize) -> Fut,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for coroutine in 0..count.max(1) {
        running.spawn(body(worker.clone(), coroutine));
    }
    while let Some(done) = running.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(
                    format!("a coroutine of {}: {}", worker.group(), run::panic_text(e)).into(),
                )
            }
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct ClosingFlag {
    set: Mutex<bool>,
    changed: Condvar,
}

impl ClosingFlag {
    fn set(&self) {
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    fn wait(&self, timeout: Duration) -> bool {
        let guard = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |set| !*set)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

pub(crate) type AsyncBody =
    Arc<dyn Fn(Worker) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;
pub(crate) type BlockingBody = Arc<dyn Fn(Worker) -> Result<(), BoxError> + Send + Sync>;

/// What a worker runs.
#[derive(Clone)]
pub(crate) enum Body {
    Async(AsyncBody),
    Blocking(BlockingBody),
}

/// A declared group, as [`crate::Setup::workers`] returns it to be refined.
pub struct WorkerGroup {
    pub(crate) name: String,
    pub(crate) kind: WorkerKind,
    pub(crate) count: usize,
    pub(crate) body: Body,
}

impl std::fmt::Debug for WorkerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerGroup")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("count", &self.count)
            .finish()
    }
}

impl WorkerGroup {
    pub(crate) fn tasks<F, Fut>(name: &str, count: usize, body: F) -> WorkerGroup
    where
        F: Fn(Worker) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        WorkerGroup {
            name: name.to_owned(),
            kind: WorkerKind::Task,
            count,
            body: Body::Async(Arc::new(move |w| Box::pin(body(w)))),
        }
    }

    pub(crate) fn threads<F>(name: &str, count: usize, body: F) -> WorkerGroup
    where
        F: Fn(Worker) -> Result<(), BoxError> + Send + Sync + 'static,
    {
        WorkerGroup {
            name: name.to_owned(),
            kind: WorkerKind::Thread,
            count,
            body: Body::Blocking(Arc::new(body)),
        }
    }

    /// Runs each worker of this group in a process of its own (the binary started again)
    /// instead of a task.
    pub fn processes(&mut self) -> &mut Self {
        self.kind = WorkerKind::Process;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> WorkerKind {
        self.kind
    }

    pub fn count(&self) -> usize {
        self.count
    }
}

/// Every worker's status, shared by the supervisors and `shoal.status`.
#[derive(Debug, Default)]
pub(crate) struct Board {
    workers: Mutex<Vec<WorkerStatus>>,
}

impl Board {
    pub(crate) fn snapshot(&self) -> Vec<WorkerStatus> {
        self.lock().clone()
    }

    pub(crate) fn add(&self, group: &str, index: usize, kind: WorkerKind) {
        self.lock().push(WorkerStatus {
            group: group.to_owned(),
            index,
            kind,
            pid: None,
            state: WorkerState::Starting,
            restarts: 0,
            last_exit: None,
        });
    }

    pub(crate) fn update(&self, group: &str, index: usize, change: impl FnOnce(&mut WorkerStatus)) {
        if let Some(w) = self
            .lock()
            .iter_mut()
            .find(|w| w.group == group && w.index == index)
        {
            change(w);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WorkerStatus>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Delay before restarting a failed worker: 100 ms doubling to 10 s, reset after 30 s of
/// running.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);
    const STABLE: Duration = Duration::from_secs(30);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The delay after a run that lasted `ran`.
    pub(crate) fn after(&mut self, ran: Duration) -> Duration {
        if ran >= Self::STABLE {
            self.next = Self::FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_after_a_stable_run() {
        let mut b = Backoff::new();
        let quick = Duration::from_millis(5);
        let delays: Vec<u64> = (0..9).map(|_| b.after(quick).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(b.after(Duration::from_secs(31)), Duration::from_millis(100));
        assert_eq!(b.after(quick), Duration::from_millis(200));
    }
}
