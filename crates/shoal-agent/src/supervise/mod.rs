//! Supervision: the agent's programs run, are restarted with backoff, health-checked,
//! stopped without orphans, have their output captured, and outlive the agent.
//!
//! [`Supervisor`] is the handle everything else uses (install and upgrade, the local API,
//! the CLI); [`ProgramSpec`] is what it runs and [`ProgramStatus`] what it reports.
//!
//! # Modules
//!
//! - `spec.rs`: [`ProgramSpec`], from a manifest and its version directory.
//! - `program.rs`: one task per program, the only place its processes are started, stopped
//!   and restarted; the [`Supervisor`] sends it commands and reads what it publishes.
//! - `process.rs`: starting a process in its own session with its output into FIFOs,
//!   adopting one, noticing its exit, stopping its group.
//! - `launch.rs`: a start's argument vector, environment and executable, found as `execvp`
//!   finds it.
//! - `capture.rs`: the one thread that copies every FIFO into its log file.
//! - `health.rs`: a TCP, `shoal.ping` or HTTP check.
//! - `backoff.rs`: restart delays.
//! - `store.rs`: the `supervised` table in the agent's SQLite state.
//! - `lock.rs`: one supervisor per data directory.
//! - `spawn.rs`: a process in a new session, from a `vfork` child with a descriptor table of
//!   its own (or `posix_spawn`).
//! - `sys.rs`: pidfd and `/proc` (with `spawn.rs`, the crate's only `unsafe`).
//! - `status.rs`, `error.rs`: what callers get back.
//!
//! # A program's process
//!
//! Each program runs as the leader of its own session (`setsid`), so its process group id is
//! its pid, no terminal signal reaches it, and the agent can signal the whole group. It runs
//! in its version directory, without a shell: `command` is executed with `args` (a relative
//! path with a `/` is resolved against the version directory, a bare name on the program's
//! own `PATH` as `execvp` does it, a file without an executable format run with `/bin/sh`).
//! Its stdin is `/dev/null`; it holds no descriptor of the agent's but its stdio; no signal is
//! blocked and every one is at its default disposition. It is started from a `vfork` child
//! (`clone(CLONE_VM | CLONE_VFORK)`, see `spawn.rs`) that takes an empty descriptor table of
//! its own, so a start copies neither the agent's address space nor its descriptors, however
//! many programs it runs. Its environment is the agent's, without the variables that address
//! the agent itself (`NOTIFY_SOCKET`, `LISTEN_*`, `SHOAL_CONFIG`, `SHOAL_HANDOVER_*`,
//! `SHOAL_WORKER*`, `SHOAL_RPC_WORKER`), plus the spec's `env`, plus:
//!
//! | variable | value |
//! |---|---|
//! | `SHOAL_APP` | the program's name |
//! | `SHOAL_VERSION` | its version |
//! | `SHOAL_APP_DIR` | its version directory (also its working directory) |
//! | `SHOAL_APP_DATA` | `apps/NAME/data`, kept across versions (created before the start) |
//! | `SHOAL_DATA_DIR` | the agent's data directory, where the `shoal` CLI finds the agent |
//! | `SHOAL_AGENT` | `unix:DATA/programs.sock`, the agent's programs socket (see [`crate::programs`]) |
//! | `SHOAL_CENTER_CONFIG` | `DATA/apps/NAME/center/config.toml`, the center's layer of a service built with the SDK (see [`crate::central`]); absent until a version is released |
//!
//! # Output, and an agent that dies
//!
//! An agent restart, even `kill -9`, never disturbs a program: nothing the program holds
//! depends on the agent being alive.
//!
//! - Its stdout and stderr are FIFOs, `run/NAME/stdout` and `run/NAME/stderr`, which the
//!   program's own process opens read-write as its fd 1 and 2 (the agent opens them for it
//!   before exec). Because the program holds a read end itself, the pipe always has a
//!   reader: it never gets SIGPIPE or EPIPE while no agent runs; its writes only block once
//!   the pipe is full (the agent asks for 128 KiB pipes instead of 64 KiB).
//! - The agent opens the same FIFOs read-write and non-blocking, and one thread reads them
//!   all (`capture.rs`) into `logs/NAME/stdout.log` and `stderr.log`
//!   ([`shoal::logging::RotatingFile`]: rotated at `[logs] max_size`, `keep` rotated files
//!   gzipped, the active name stable). Every read is written to the log before the next
//!   read, and what the agent has not read stays in the pipe for the next agent: lines
//!   written while no agent runs are in the log once one does. Only an agent killed between
//!   a read and its write loses that read (at most 64 KiB). Reads are written in records of
//!   whole lines up to 4 KiB, so a file rotates close to `max_size` and a line is split
//!   between two files only when it is longer than that or was still being written.
//! - One agent supervises a data directory: [`Supervisor::open`] takes an exclusive lock on
//!   `run/supervise.lock` (released when its process dies, however), so a second agent is
//!   refused rather than adopting the same processes.
//! - A program does not die with the agent: no parent-death signal, its own session.
//! - Every start is recorded in the `supervised` table: pid, start time (from
//!   `/proc/PID/stat`), boot id, start wall time, version and FIFO paths. [`Supervisor::open`]
//!   adopts a recorded process only if the boot id, the pid and its start time all match, so
//!   a reused pid is never mistaken for the program. It watches an adopted process through a
//!   pidfd (readable when it exits, child or not), reopens its FIFOs (the unread output comes
//!   first), and enforces the restart policy and health checks again. An adopted process is
//!   not the agent's child, so when it ends the kernel does not tell the agent how:
//!   [`Exit::Unknown`], counted as a failure by the `on-failure` policy.
//! - A program recorded as running but found gone, or one that was waiting in backoff, is
//!   started again (its `start_after` honoured) if it should run; one found gone whose
//!   policy is `never` is failed instead. One adopted while it was being stopped is stopped.
//!
//! # Restarts
//!
//! `restart = "always"` starts a program again whenever it ends; `"on-failure"` when it ends
//! with a non-zero code, by a signal, of an unknown cause, or fails its health checks;
//! `"never"` leaves it (then [`ProgramState::Exited`] or [`ProgramState::Failed`]). Delays
//! ([`BACKOFF_FIRST`], [`BACKOFF_CAP`], [`BACKOFF_RESET`]): the first restart after a stable
//! run is immediate; then 100 ms, doubling, up to 30 s; a run of 30 s or more starts over.
//! The supervisor never gives up on a program that should run: one that keeps failing is
//! tried every 30 s (supervisord gives up after 3 quick failures; PM2 uses 100 ms x 1.5 up to
//! 15 s, reset after 30 s; systemd restarts after 100 ms). While it waits, the program is in
//! [`ProgramState::Backoff`] with [`ProgramStatus::next_start`]. When a main process exits,
//! what is left of its group gets the stop signal, then SIGKILL after `stop_timeout`, before
//! the next start.
//!
//! # Stopping
//!
//! A healthy program is first published as [`ProgramState::Stopping`] (the agent's link then
//! reports its endpoints gone at once, [`Supervisor::serving`]); with a `shutdown_delay`, the
//! stop waits that long (or until the process exits) before its signal.
//! `stop_signal` goes to the whole process group; after `stop_timeout`, if the main process
//! or any other member is alive, SIGKILL goes to the group, and [`Supervisor::stop`] returns
//! once no live process of the group is left. [`Supervisor::signal`] (`SIGHUP` for a reload)
//! goes to the main process only.
//!
//! # Health
//!
//! With `[health]`, a check runs every `interval` (bounded by `timeout`): `shoal.ping` on
//! `port` when `ping`, a GET of `http` (2xx and 3xx are healthy; with both set, both must
//! pass), or with neither a TCP connection to 127.0.0.1:`port`. Until the first check passes within the `grace` period
//! after a start, checks run every 200 ms (or `interval`, if shorter) and failures do not
//! count; a program is [`ProgramState::Starting`] until a check passes. After `failures`
//! failed checks in a row the program is stopped and started again through the backoff.
//! An adopted program is checked at once.
//!
//! # Resources
//!
//! [`ProgramStatus::cpu_percent`] and [`ProgramStatus::rss_bytes`] sum every live process in
//! the program's group, read from `/proc/PID/stat` in one pass over `/proc` per
//! [`Supervisor::status`] call; nothing is sampled in the background, so an idle agent does
//! no work for them. A program costs a task, a watch channel, two pipe descriptors and a
//! pidfd; there is no thread or buffer per program.

mod backoff;
mod capture;
mod error;
mod health;
mod launch;
mod lock;
mod process;
mod program;
mod spawn;
mod spec;
mod status;
mod store;
/// `/proc` and process syscalls, also for the crontab runner and the installer.
pub(crate) mod sys;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use shoal_pkg::manifest::{Name, Restart};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use self::backoff::{BACKOFF_CAP, BACKOFF_FIRST, BACKOFF_RESET};
pub use self::error::SupervisorError;
pub use self::lock::LockError;
pub use self::spec::ProgramSpec;
pub use self::status::{Exit, HealthStatus, ProgramState, ProgramStatus};
pub use nix::sys::signal::Signal;

use self::capture::Capture;
use self::lock::Lock;
use self::process::{Outputs, Process};
use self::program::{Cmd, Initial, Program, Shared, Slot};
use self::store::{Goal, Row, Store};
use crate::{DataDir, State};

/// How long [`Supervisor::start`] waits for each program in `start_after` to be healthy.
pub const START_AFTER_TIMEOUT: Duration = Duration::from_secs(60);

/// Descriptors the agent holds for each program it runs: the read ends of its two FIFOs, its
/// two log files and its pidfd.
const DESCRIPTORS_PER_PROGRAM: usize = 5;

/// Room for the agent's own descriptors beside its programs': the database, the sockets, the
/// API's connections, the runtime's.
const DESCRIPTORS_OWN: usize = 64;

/// Sizes the process's descriptor table for the programs of `data` (a directory under `run/`
/// each), within the open-file limit; returns the room made. For `main`, before the runtime
/// starts its threads.
///
/// The kernel grows the table by doubling as descriptors are opened, and it grows a table
/// that other threads share only after an RCU grace period, during which every thread that
/// opens a descriptor waits. An agent starting 200 programs (about 1,000 descriptors) grew it
/// four times, 10-20 ms each on a virtual machine, with every start stopped meanwhile. Grown
/// while the process has one thread, it is one copy and no wait. A table left to grow only
/// makes the start slower: the caller may ignore the error.
pub fn size_descriptor_table(data: &DataDir) -> std::io::Result<usize> {
    let programs = match std::fs::read_dir(data.runs()) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    sys::reserve_descriptors(DESCRIPTORS_OWN + DESCRIPTORS_PER_PROGRAM * programs)
}

/// The agent's programs. Clones share them; every method may be called from any task.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Released by `detach` and `shutdown`, once every program's task has ended.
    lock: Mutex<Option<Lock>>,
    programs: Mutex<BTreeMap<Name, Handle>>,
    tracker: TaskTracker,
    /// Cancelled by `detach` and `shutdown`.
    closed: CancellationToken,
}

#[derive(Clone)]
struct Handle {
    commands: mpsc::UnboundedSender<Cmd>,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let programs = self.programs();
        f.debug_struct("Supervisor")
            .field("data", &self.inner.shared.data.root())
            .field("programs", &programs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Supervisor {
    /// Opens the supervisor on `data` and its `state`, adopting every process recorded as
    /// running that still is, and starting (in the background, `start_after` honoured) the
    /// programs that should run and do not.
    pub async fn open(data: DataDir, state: State) -> Result<Supervisor, SupervisorError> {
        // The lock, the table and its rows: file and SQLite work, off the executor.
        let lock_path = data.run_lock();
        let (lock, store, rows) =
            tokio::task::spawn_blocking(move || -> Result<_, SupervisorError> {
                let lock = Lock::take(&lock_path)?;
                let store = Store::open(state)?;
                let rows = store.load()?;
                Ok((lock, store, rows))
            })
            .await
            .map_err(SupervisorError::Opening)??;
        let capture = Capture::start().map_err(SupervisorError::Capture)?;
        let shared = Arc::new(Shared {
            data,
            store,
            capture,
            serving: watch::Sender::new(0),
        });
        let supervisor = Supervisor {
            inner: Arc::new(Inner {
                shared,
                lock: Mutex::new(Some(lock)),
                programs: Mutex::new(BTreeMap::new()),
                tracker: TaskTracker::new(),
                closed: CancellationToken::new(),
            }),
        };
        for row in rows {
            if let Some(name) = supervisor.resume(row).await {
                supervisor.start_in_background(name);
            }
        }
        Ok(supervisor)
    }

    /// Registers `spec`, or replaces the spec of the program of that name: a running process
    /// keeps running as it was started until it is restarted (its log rotation changes at
    /// once). A new program is stopped until [`start`](Supervisor::start)ed. The spec the
    /// program has already changes nothing and writes nothing: an agent that starts registers
    /// every installed app again, while the programs start.
    pub async fn add(&self, spec: ProgramSpec) -> Result<(), SupervisorError> {
        if self.inner.closed.is_cancelled() {
            return Err(SupervisorError::Closed);
        }
        if spec.start_after.contains(&spec.name) {
            return Err(SupervisorError::Cycle {
                cycle: format!("{0} -> {0}", spec.name),
                name: spec.name,
            });
        }
        if let Ok(handle) = self.handle(&spec.name) {
            if *handle.slot.spec() == spec {
                return Ok(());
            }
        }
        let spec = Arc::new(spec);
        // Written before the table is locked (the write is awaited; the lock is not held
        // across it). Callers register one program at a time (the agent's changes are
        // serialised), so the stored spec is the one applied.
        self.inner.shared.store.put_spec(&spec).await?;
        let mut programs = self.programs();
        match programs.get(&spec.name) {
            Some(handle) => {
                handle.slot.set_spec(spec.clone());
                handle
                    .commands
                    .send(Cmd::Replace(spec))
                    .map_err(|_| SupervisorError::Closed)?;
            }
            None => {
                let status = initial_status(&spec);
                let name = spec.name.clone();
                let handle = self.spawn_program(
                    spec,
                    0,
                    status,
                    Initial::Idle {
                        goal: Goal::Stopped,
                    },
                );
                programs.insert(name, handle);
            }
        }
        Ok(())
    }

    /// Stops the program (as [`stop`](Supervisor::stop)), closes its output and forgets it.
    /// Its logs stay.
    pub async fn remove(&self, name: &Name) -> Result<(), SupervisorError> {
        let handle = self.handle(name)?;
        let removed = request(&handle, Cmd::Remove).await;
        let mut programs = self.programs();
        if programs
            .get(name)
            .is_some_and(|h| Arc::ptr_eq(&h.slot, &handle.slot))
        {
            programs.remove(name);
        }
        removed
    }

    /// Starts the program unless it runs, after every program in its `start_after` is
    /// healthy (each waited for up to [`START_AFTER_TIMEOUT`]; one that is stopped, failed or
    /// not registered fails the start at once). Returns once the process is started, without
    /// waiting for it to be healthy ([`wait_healthy`](Supervisor::wait_healthy)). A start
    /// resets the backoff and the restart count. Err if it could not be executed (the
    /// restart policy then goes on trying, through the backoff).
    pub async fn start(&self, name: &Name) -> Result<(), SupervisorError> {
        let handle = self.handle(name)?;
        if handle.slot.status.borrow().pid.is_some() {
            return Ok(());
        }
        self.await_start_after(name, &handle).await?;
        request(&handle, Cmd::Start).await
    }

    /// Stops the program: its stop signal to its process group, SIGKILL to the group after
    /// its stop timeout; returns once no process of the group is left. It stays stopped
    /// (across agent restarts too) until started.
    pub async fn stop(&self, name: &Name) -> Result<(), SupervisorError> {
        let handle = self.handle(name)?;
        request(&handle, Cmd::Stop).await
    }

    /// Stops the program if it runs, then starts it with its registered spec (as
    /// [`start`](Supervisor::start) does, `start_after` included).
    pub async fn restart(&self, name: &Name) -> Result<(), SupervisorError> {
        let handle = self.handle(name)?;
        self.await_start_after(name, &handle).await?;
        request(&handle, Cmd::Restart).await
    }

    /// Sends `signal` to the program's main process (`Signal::SIGHUP` to reload).
    pub async fn signal(&self, name: &Name, signal: Signal) -> Result<(), SupervisorError> {
        let handle = self.handle(name)?;
        request(&handle, |reply| Cmd::Signal(signal, reply)).await
    }

    /// Waits until the program is running and (with `[health]`) its last check passed.
    /// Fails at once if it is stopped, exited or failed, and after `timeout` otherwise,
    /// saying why (restarting after an exit, its check failing and the last error, ...).
    pub async fn wait_healthy(
        &self,
        name: &Name,
        timeout: Duration,
    ) -> Result<(), SupervisorError> {
        let handle = self.handle(name)?;
        let mut status = handle.slot.status.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let now = status.borrow_and_update();
                if now.is_healthy() {
                    return Ok(());
                }
                if now.state.is_at_rest() {
                    return Err(SupervisorError::NotHealthy {
                        name: name.clone(),
                        reason: why_not_healthy(&now),
                    });
                }
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(SupervisorError::Closed),
                Err(_) => {
                    return Err(SupervisorError::NotHealthy {
                        name: name.clone(),
                        reason: format!(
                            "not after {}: {}",
                            humanize(timeout),
                            why_not_healthy(&status.borrow())
                        ),
                    })
                }
            }
        }
    }

    /// The status of program `name` as it changes (without the `/proc` figures).
    pub fn watch_status(&self, name: &Name) -> Option<tokio::sync::watch::Receiver<ProgramStatus>> {
        let handle = self.programs().get(name).cloned()?;
        Some(handle.slot.status.subscribe())
    }

    /// Every program, by name, with its CPU and memory read now: a walk of `/proc`, so
    /// blocking (async code calls it through `spawn_blocking`, or takes
    /// [`snapshots`](Supervisor::snapshots)).
    /// Changes whenever a program becomes healthy or stops being healthy (a stop is seen as
    /// it begins, before the stop signal is sent).
    pub fn serving(&self) -> watch::Receiver<u64> {
        self.inner.shared.serving.subscribe()
    }

    pub fn status(&self) -> Vec<ProgramStatus> {
        let handles: Vec<Handle> = self.programs().values().cloned().collect();
        let mut all: Vec<ProgramStatus> = handles
            .iter()
            .map(|h| h.slot.status.borrow().clone())
            .collect();
        let groups: Vec<i32> = all
            .iter()
            .filter_map(|s| s.pgid)
            .map(|p| p as i32)
            .collect();
        let usage = sys::group_usage(&groups);
        for (status, handle) in all.iter_mut().zip(&handles) {
            let Some(pgid) = status.pgid else { continue };
            let Some(used) = usage.get(&(pgid as i32)) else {
                continue;
            };
            status.rss_bytes = Some(used.rss_pages * sys::page_size());
            status.cpu_percent = Some(handle.slot.cpu_percent(
                pgid,
                used.cpu_ticks,
                status.started_at,
            ));
        }
        all
    }

    /// Every program, by name, as its task last published it, without the CPU and memory
    /// figures: nothing is read, so async code may call it.
    pub fn snapshots(&self) -> Vec<ProgramStatus> {
        self.programs()
            .values()
            .map(|h| h.slot.status.borrow().clone())
            .collect()
    }

    /// One program as [`snapshots`](Supervisor::snapshots) gives it.
    pub fn snapshot(&self, name: &Name) -> Option<ProgramStatus> {
        let handle = self.programs().get(name).cloned()?;
        let status = handle.slot.status.borrow().clone();
        Some(status)
    }

    /// The agent is exiting: stops supervising and returns, leaving every program running
    /// (and its unread output in its pipes) for the next agent to adopt. The state is
    /// already saved: every change is written when it happens.
    pub async fn detach(self) {
        self.inner.closed.cancel();
        let handles: Vec<Handle> = std::mem::take(&mut *self.programs())
            .into_values()
            .collect();
        for handle in &handles {
            let _ = handle.commands.send(Cmd::Detach);
        }
        drop(handles);
        self.finish().await;
    }

    /// Stops every program, those that others start after last (in reverse `start_after`
    /// order, each level at once), then returns. Programs that should run stay recorded
    /// so: the next [`open`](Supervisor::open) starts them again.
    pub async fn shutdown(self) {
        self.inner.closed.cancel();
        let handles: BTreeMap<Name, Handle> = std::mem::take(&mut *self.programs());
        let specs: HashMap<Name, Arc<ProgramSpec>> = handles
            .iter()
            .map(|(name, h)| (name.clone(), h.slot.spec()))
            .collect();
        let mut levels: BTreeMap<usize, Vec<&Handle>> = BTreeMap::new();
        for (name, handle) in &handles {
            levels
                .entry(depth(name, &specs, &mut Vec::new()))
                .or_default()
                .push(handle);
        }
        for (_, level) in levels.into_iter().rev() {
            // Every command of a level is sent before any answer is awaited: the programs'
            // tasks stop them all at once.
            let answers: Vec<_> = level
                .into_iter()
                .map(|handle| {
                    let (reply, answer) = oneshot::channel();
                    let _ = handle.commands.send(Cmd::Shutdown(reply));
                    answer
                })
                .collect();
            for answer in answers {
                if let Ok(Err(error)) = answer.await {
                    tracing::warn!(%error, "cannot stop a program");
                }
            }
        }
        drop(handles);
        self.finish().await;
    }

    /// Takes up a program an earlier agent recorded: adopts its process if it still runs;
    /// returns its name if it should run and does not.
    async fn resume(&self, row: Row) -> Option<Name> {
        let spec = match row.spec {
            Ok(spec) => Arc::new(spec),
            Err(reason) => {
                tracing::error!(program = %row.name, %reason, "cannot read the program's stored spec: left alone");
                return None;
            }
        };
        let name = spec.name.clone();
        let mut status = initial_status(&spec);
        status.restarts = row.restarts;
        status.last_exit = row.last_exit;
        let adopted = row.process.as_ref().and_then(Process::adopt);
        let (initial, to_start) = match adopted {
            Some(process) => {
                tracing::info!(program = %name, pid = %process.pid, "adopted");
                let shared = &self.inner.shared;
                let outputs = Outputs::open(&shared.data, &spec, &shared.capture)
                    .inspect_err(|error| {
                        tracing::error!(program = %name, %error, "cannot capture the adopted program's output")
                    })
                    .ok();
                let pid = process.pid.as_raw() as u32;
                status.version = process.version.clone();
                status.state = ProgramState::Running;
                status.pid = Some(pid);
                status.pgid = Some(pid);
                status.started_at = Some(process.started_at.into());
                let initial = Initial::Adopted {
                    process,
                    outputs,
                    goal: row.goal,
                };
                (initial, false)
            }
            None => {
                let mut goal = row.goal;
                if row.process.is_some() {
                    tracing::info!(program = %name, "ended while no agent ran");
                    status.last_exit = Some(Exit::Unknown);
                    let store = &self.inner.shared.store;
                    record(&name, store.ended(&name, Some(&Exit::Unknown)).await);
                    // An unknown end counts as a failure: only `never` leaves it so.
                    if goal == Goal::Run && spec.restart == Restart::Never {
                        goal = Goal::Failed;
                        record(&name, store.set_goal(&name, goal).await);
                    }
                }
                status.state = goal.state();
                (Initial::Idle { goal }, goal == Goal::Run)
            }
        };
        let handle = self.spawn_program(spec, row.restarts, status, initial);
        self.programs().insert(name.clone(), handle);
        to_start.then_some(name)
    }

    /// Starts `name` (as [`start`](Supervisor::start)) in a task of its own, given up if
    /// the supervisor closes first.
    fn start_in_background(&self, name: Name) {
        let supervisor = self.clone();
        let closed = self.inner.closed.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                started = supervisor.start(&name) => {
                    if let Err(error) = started {
                        tracing::warn!(program = %name, %error, "cannot start again");
                    }
                }
                () = closed.cancelled() => {}
            }
        });
    }

    async fn finish(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        if let Some(thread) = self.inner.shared.capture.stop() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.inner
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn programs(&self) -> std::sync::MutexGuard<'_, BTreeMap<Name, Handle>> {
        self.inner
            .programs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn handle(&self, name: &Name) -> Result<Handle, SupervisorError> {
        if self.inner.closed.is_cancelled() {
            return Err(SupervisorError::Closed);
        }
        self.programs()
            .get(name)
            .cloned()
            .ok_or_else(|| SupervisorError::Unknown { name: name.clone() })
    }

    fn spawn_program(
        &self,
        spec: Arc<ProgramSpec>,
        restarts: u32,
        status: ProgramStatus,
        initial: Initial,
    ) -> Handle {
        let (commands, receiver) = mpsc::unbounded_channel();
        let slot = Arc::new(Slot::new(status, spec.clone()));
        let span = tracing::info_span!("program", name = %spec.name);
        let program = Program::new(
            slot.clone(),
            self.inner.shared.clone(),
            spec,
            restarts,
            initial,
        );
        self.inner
            .tracker
            .spawn(program.run(receiver).instrument(span));
        Handle { commands, slot }
    }

    /// Waits for `name`'s `start_after` programs to be healthy.
    async fn await_start_after(&self, name: &Name, handle: &Handle) -> Result<(), SupervisorError> {
        let spec = handle.slot.spec();
        if spec.start_after.is_empty() {
            return Ok(());
        }
        self.check_cycle(name)?;
        for after in &spec.start_after {
            let waited = match self.handle(after) {
                Ok(_) => self.wait_healthy(after, START_AFTER_TIMEOUT).await,
                Err(SupervisorError::Unknown { .. }) => Err(SupervisorError::NotHealthy {
                    name: after.clone(),
                    reason: "it is not registered".into(),
                }),
                Err(e) => Err(e),
            };
            if let Err(e) = waited {
                let e = match e {
                    SupervisorError::NotHealthy { reason, .. } => SupervisorError::StartAfter {
                        name: name.clone(),
                        after: after.clone(),
                        reason,
                    },
                    other => other,
                };
                let message = e.to_string();
                handle.slot.status.send_modify(|s| {
                    if s.pid.is_none() {
                        s.error = Some(message);
                        if s.state == ProgramState::Starting {
                            s.state = ProgramState::Failed;
                            s.since = Utc::now();
                        }
                    }
                });
                return Err(e);
            }
        }
        Ok(())
    }

    /// Err if following `start_after` from `name` comes back to it.
    fn check_cycle(&self, name: &Name) -> Result<(), SupervisorError> {
        let specs: HashMap<Name, Arc<ProgramSpec>> = self
            .programs()
            .iter()
            .map(|(n, h)| (n.clone(), h.slot.spec()))
            .collect();
        let mut path = vec![name.clone()];
        if let Some(cycle) = find_cycle(name, &specs, &mut path) {
            return Err(SupervisorError::Cycle {
                name: name.clone(),
                cycle,
            });
        }
        Ok(())
    }
}

/// Depth-first from the last name of `path`; the cycle back to `path[0]` as `a -> b -> a`.
fn find_cycle(
    start: &Name,
    specs: &HashMap<Name, Arc<ProgramSpec>>,
    path: &mut Vec<Name>,
) -> Option<String> {
    let last = path.last()?.clone();
    for next in specs
        .get(&last)
        .map(|s| s.start_after.as_slice())
        .unwrap_or(&[])
    {
        if next == start {
            let mut names: Vec<&str> = path.iter().map(Name::as_str).collect();
            names.push(start.as_str());
            return Some(names.join(" -> "));
        }
        // A cycle not through `start` is another program's to report.
        if path.contains(next) {
            continue;
        }
        path.push(next.clone());
        if let Some(cycle) = find_cycle(start, specs, path) {
            return Some(cycle);
        }
        path.pop();
    }
    None
}

/// How many `start_after` steps lead from `name` down to a program that starts after none
/// (cycles cut).
fn depth(name: &Name, specs: &HashMap<Name, Arc<ProgramSpec>>, seen: &mut Vec<Name>) -> usize {
    if seen.contains(name) {
        return 0;
    }
    seen.push(name.clone());
    let deepest = specs
        .get(name)
        .map(|s| {
            s.start_after
                .iter()
                .filter(|after| specs.contains_key(*after))
                .map(|after| depth(after, specs, seen) + 1)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    seen.pop();
    deepest
}

async fn request(
    handle: &Handle,
    cmd: impl FnOnce(program::Reply) -> Cmd,
) -> Result<(), SupervisorError> {
    let (reply, answer) = oneshot::channel();
    handle
        .commands
        .send(cmd(reply))
        .map_err(|_| SupervisorError::Closed)?;
    answer.await.map_err(|_| SupervisorError::Closed)?
}

/// A failure to write the state database does not stop supervision: it is logged, and the
/// next agent may find the record a step behind.
fn record<T>(name: &Name, written: Result<T, crate::StateError>) {
    if let Err(error) = written {
        tracing::warn!(program = %name, %error, "cannot record the program's state");
    }
}

fn initial_status(spec: &ProgramSpec) -> ProgramStatus {
    ProgramStatus {
        name: spec.name.clone(),
        version: spec.version.clone(),
        state: ProgramState::Stopped,
        pid: None,
        pgid: None,
        started_at: None,
        since: Utc::now(),
        next_start: None,
        restarts: 0,
        last_exit: None,
        error: None,
        health: spec.health.as_ref().map(|_| HealthStatus::unknown()),
        cpu_percent: None,
        rss_bytes: None,
    }
}

fn why_not_healthy(status: &ProgramStatus) -> String {
    let exit = status
        .last_exit
        .as_ref()
        .map_or_else(|| "no exit recorded".to_owned(), ToString::to_string);
    let mut reason = match status.state {
        ProgramState::Stopped => "it is stopped".to_owned(),
        ProgramState::Stopping => "it is stopping".to_owned(),
        ProgramState::Exited | ProgramState::Failed => format!("it {} ({exit})", status.state),
        ProgramState::Backoff => format!(
            "it is restarting after {exit} ({} restarts so far)",
            status.restarts
        ),
        ProgramState::Starting | ProgramState::Running => match &status.health {
            Some(HealthStatus {
                last_error: Some(e),
                checked_at: Some(_),
                ok: false,
                ..
            }) => format!("its health check fails: {e}"),
            Some(_) => "no health check has passed yet".to_owned(),
            None => "it is starting".to_owned(),
        },
    };
    if let Some(error) = &status.error {
        reason.push_str(&format!("; {error}"));
    }
    reason
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
