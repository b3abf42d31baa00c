//! Running workers: one supervisor task per worker that runs it, restarts it after a failure
//! with a backoff, and stops it when the application closes. Process-mode RPC workers use
//! the same supervisor, with the RPC listener handed to each process.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{info, warn};

use super::{
    process, AsyncBody, Backoff, BlockingBody, Board, Body, Worker, WorkerGroup, WorkerKind,
    WorkerState,
};
use crate::Handle;

/// What every supervisor needs.
#[derive(Clone)]
pub(crate) struct Launcher {
    pub(crate) handle: Handle,
    /// The binary's name for process listings, and the arguments, a process worker is
    /// started with; None when the application is not a process of its own.
    pub(crate) exe: Option<PathBuf>,
    pub(crate) args: Vec<OsString>,
    /// How long a process worker has to say it runs (`control.handover_timeout`).
    pub(crate) ready_timeout: Duration,
    pub(crate) tracker: TaskTracker,
    /// The supervisors, to stop them when the grace period is over.
    pub(crate) aborts: Arc<Mutex<Vec<AbortHandle>>>,
    /// Counts reloads; each process supervisor passes them on to its own worker.
    pub(crate) reloads: Arc<watch::Sender<u64>>,
}

/// The group name process-mode RPC workers have in status.
pub(crate) const RPC_GROUP: &str = "rpc";

impl Launcher {
    pub(crate) fn new(
        handle: Handle,
        exe: Option<PathBuf>,
        args: Vec<OsString>,
        ready_timeout: Duration,
    ) -> Launcher {
        Launcher {
            handle,
            exe,
            args,
            ready_timeout,
            tracker: TaskTracker::new(),
            aborts: Arc::default(),
            reloads: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Every worker's status, which `shoal.status` shows.
    fn board(&self) -> &Board {
        &self.handle.shared.workers
    }

    fn spawn_supervisor(&self, slot: Slot, first: Option<oneshot::Sender<Result<(), String>>>) {
        let task = self.tracker.spawn(self.clone().supervise(slot, first));
        self.aborts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task.abort_handle());
    }

    /// Past the grace period: stops every supervisor, which drops (aborts) task workers and
    /// kills worker processes, and waits briefly for that to happen.
    pub(crate) async fn abort(&self) {
        for abort in self.aborts.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            abort.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
    }

    /// Starts `count` workers of `group`.
    pub(crate) fn start_group(&self, group: &WorkerGroup, count: usize) {
        for index in 0..count {
            self.board().add(&group.name, index, group.kind);
            let slot = Slot {
                group: group.name.clone(),
                index,
                count,
                kind: group.kind,
                body: Some(group.body.clone()),
                listener: None,
                always_restart: false,
            };
            self.spawn_supervisor(slot, None);
        }
    }

    /// Starts `count` RPC worker processes on `listener`; resolves once each has said it
    /// serves, or with the first reason one did not.
    pub(crate) async fn start_rpc(&self, listener: OwnedFd, count: usize) -> Result<(), String> {
        if self.exe.is_none() {
            return Err("rpc.processes needs the binary's path, which is unknown here".into());
        }
        let listener = Arc::new(listener);
        let mut first = Vec::new();
        for index in 0..count {
            self.board().add(RPC_GROUP, index, WorkerKind::Process);
            let slot = Slot {
                group: RPC_GROUP.to_owned(),
                index,
                count,
                kind: WorkerKind::Process,
                body: None,
                listener: Some(listener.clone()),
                always_restart: true,
            };
            let (tx, rx) = oneshot::channel();
            first.push(rx);
            self.spawn_supervisor(slot, Some(tx));
        }
        for rx in first {
            rx.await
                .unwrap_or_else(|_| Err("the worker's supervisor ended".into()))?;
        }
        Ok(())
    }

    async fn supervise(self, slot: Slot, mut first: Option<oneshot::Sender<Result<(), String>>>) {
        let closing = self.handle.shared.closing.clone();
        let origin = format!("worker {}[{}]", slot.group, slot.index);
        let mut backoff = Backoff::new();
        loop {
            let started = Instant::now();
            let outcome = match slot.kind {
                WorkerKind::Process => self.run_process(&slot, &mut first).await,
                WorkerKind::Task | WorkerKind::Thread => {
                    self.board().update(&slot.group, slot.index, |w| {
                        w.pid = Some(std::process::id());
                        w.state = WorkerState::Running;
                    });
                    let worker =
                        Worker::new(&slot.group, slot.index, slot.count, self.handle.clone());
                    match &slot.body {
                        Some(body) => run_body(body, worker).await,
                        None => Err("a worker without a body".into()),
                    }
                }
            };
            let ended = match &outcome {
                // An RPC worker serves until the application closes: ending is a failure.
                Ok(()) if slot.always_restart && !closing.is_cancelled() => {
                    "ended (exit 0) while the application still runs".to_owned()
                }
                Ok(()) => "finished".to_owned(),
                Err(e) => e.clone(),
            };
            if closing.is_cancelled() {
                self.board().update(&slot.group, slot.index, |w| {
                    w.state = WorkerState::Stopped;
                    w.pid = None;
                    w.last_exit = Some(ended);
                });
                return;
            }
            match outcome {
                Ok(()) if !slot.always_restart => {
                    info!(group = %slot.group, index = slot.index, "worker finished");
                    self.board().update(&slot.group, slot.index, |w| {
                        w.state = WorkerState::Finished;
                        w.pid = None;
                        w.last_exit = Some(ended);
                    });
                    return;
                }
                _ => self
                    .handle
                    .record_error(&origin, ended.clone(), ended.clone()),
            }
            if let Some(first) = first.take() {
                // A worker that fails before it ever served fails the start.
                let _ = first.send(Err(format!("{origin}: {ended}")));
                return;
            }
            let delay = backoff.after(started.elapsed());
            self.board().update(&slot.group, slot.index, |w| {
                w.state = WorkerState::Restarting;
                w.pid = None;
                w.restarts += 1;
                w.last_exit = Some(ended);
            });
            warn!(
                group = %slot.group,
                index = slot.index,
                delay = %humantime::format_duration(delay),
                "restarting the worker"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = closing.cancelled() => {
                    self.board().update(&slot.group, slot.index, |w| {
                        w.state = WorkerState::Stopped;
                        w.pid = None;
                    });
                    return;
                }
            }
        }
    }

    /// One run of a worker process: start, wait until it says it runs, then until it ends or
    /// the application closes (then SIGTERM, and wait; past the grace period the close aborts
    /// this future, which kills the process). Reloads are passed on as SIGHUP, only to a
    /// worker that has said it runs (its handlers are in place by then); one that arrives
    /// while it starts is passed on once it runs.
    async fn run_process(
        &self,
        slot: &Slot,
        first: &mut Option<oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), String> {
        let exe = self.exe.as_deref().ok_or(
            "a process worker needs the application run as a process (App::run, which knows \
             its binary)",
        )?;
        let closing = self.handle.shared.closing.clone();
        let listeners: Vec<(&str, std::os::fd::BorrowedFd<'_>)> = match &slot.listener {
            Some(fd) => vec![("rpc", fd.as_fd())],
            None => Vec::new(),
        };
        let group = (!slot.always_restart).then_some(slot.group.as_str());
        let mut reloads = self.reloads.subscribe();
        reloads.borrow_and_update();
        let mut spawned =
            process::start(exe, &self.args, group, slot.index, slot.count, &listeners)?;
        let pid = spawned.pid;
        let signal = |signal: Signal| {
            // The child is not reaped before this future waits on it, so the pid is still
            // this worker's.
            let _ = kill(Pid::from_raw(pid as i32), signal);
        };
        self.board().update(&slot.group, slot.index, |w| {
            w.pid = Some(pid);
            w.state = WorkerState::Starting;
        });
        let ready = tokio::select! {
            ready = spawned.ready(self.ready_timeout) => ready.map_err(|e| {
                format!("{e} (a worker has control.handover_timeout to start)")
            }),
            _ = closing.cancelled() => Ok(()),
        };
        if let Err(e) = ready {
            let _ = spawned.child.start_kill();
            let _ = spawned.child.wait().await;
            return Err(e);
        }
        if !closing.is_cancelled() {
            info!(group = %slot.group, index = slot.index, pid, "worker process runs");
            self.board()
                .update(&slot.group, slot.index, |w| w.state = WorkerState::Running);
            if let Some(first) = first.take() {
                let _ = first.send(Ok(()));
            }
            if reloads.has_changed().unwrap_or(false) {
                reloads.borrow_and_update();
                signal(Signal::SIGHUP);
            }
            loop {
                tokio::select! {
                    status = spawned.child.wait() => return exit_outcome(pid, status),
                    changed = reloads.changed() => {
                        if changed.is_ok() {
                            signal(Signal::SIGHUP);
                        }
                    }
                    _ = closing.cancelled() => break,
                }
            }
        }
        self.board()
            .update(&slot.group, slot.index, |w| w.state = WorkerState::Stopping);
        signal(Signal::SIGTERM);
        exit_outcome(pid, spawned.child.wait().await)
    }

    /// Passes a reload on to every worker process (SIGHUP: each reads the file again).
    pub(crate) fn reload_processes(&self) {
        self.reloads.send_modify(|n| *n += 1);
    }
}

/// One worker's place in its group.
struct Slot {
    group: String,
    index: usize,
    count: usize,
    kind: WorkerKind,
    body: Option<Body>,
    listener: Option<Arc<OwnedFd>>,
    /// RPC workers serve until the application closes: any end is a failure.
    always_restart: bool,
}

fn exit_outcome(pid: u32, status: std::io::Result<std::process::ExitStatus>) -> Result<(), String> {
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("process {pid} ended: {status}")),
        Err(e) => Err(format!("process {pid}: {e}")),
    }
}

/// Runs an async body as a task, a blocking one on a thread of its own.
async fn run_body(body: &Body, worker: Worker) -> Result<(), String> {
    match body {
        Body::Async(body) => run_task(body, worker).await,
        Body::Blocking(body) => run_thread(body.clone(), worker).await,
    }
}

async fn run_task(body: &AsyncBody, worker: Worker) -> Result<(), String> {
    // Dropped past the grace period: the task stops with it.
    let task = AbortOnDropHandle::new(tokio::spawn(body(worker)));
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(crate::status::trace_of(e.as_ref())),
        Err(e) => Err(panic_text(e)),
    }
}

async fn run_thread(body: BlockingBody, worker: Worker) -> Result<(), String> {
    let _wake = AbortOnDropHandle::new(tokio::spawn(worker.wake_on_close()));
    let name = format!("{}-{}", worker.group(), worker.index());
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(worker)));
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    match rx.await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(crate::status::trace_of(e.as_ref())),
        Ok(Err(panic)) => Err(format!("panicked: {}", panic_message(panic.as_ref()))),
        Err(_) => Err("the thread ended without a result".into()),
    }
}

pub(crate) fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
        Err(e) => e.to_string(),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs this process as worker `index` of `group`: the body only, until it ends or SIGTERM
/// closes it. Returns the process's exit: 0 when the body returned Ok, 1 when it failed.
pub(crate) async fn as_group_worker(
    handle: Handle,
    group: &WorkerGroup,
    index: usize,
    count: usize,
) -> crate::Exit {
    let worker = Worker::new(&group.name, index, count, handle.clone());
    let outcome = run_body(&group.body, worker).await;
    match outcome {
        Ok(()) => crate::Exit::Closed,
        Err(e) => {
            handle.record_error(&format!("worker {}[{index}]", group.name), e.clone(), e);
            crate::Exit::Failed
        }
    }
}
