//! One program's task: it alone starts, stops and restarts the program's processes, runs its
//! health checks and applies its restart policy, taking commands from the [`Supervisor`]
//! in order and publishing what happens in the program's [`Slot`].
//!
//! [`Supervisor`]: super::Supervisor

use std::future::{pending, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use shoal_pkg::manifest::{Health, Name, Restart, StopSignal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tracing::{info, warn};

use super::backoff::Backoff;
use super::capture::Capture;
use super::error::SupervisorError;
use super::health;
use super::process::{self, Outputs, Process};
use super::spec::ProgramSpec;
use super::status::{Exit, HealthStatus, ProgramState, ProgramStatus};
use super::store::{Goal, Store};
use super::sys;
use crate::DataDir;

/// Until a program's first check passes, within its grace period, checks come at least this
/// often, so that a program others start after is seen healthy soon after it is.
const STARTING_CHECK_EVERY: Duration = Duration::from_millis(200);

/// What every program's task uses.
#[derive(Debug)]
pub(crate) struct Shared {
    pub data: DataDir,
    pub store: Store,
    pub capture: Capture,
    /// Bumped whenever a program becomes healthy or stops being healthy
    /// ([`ProgramStatus::is_healthy`]): the apps' endpoints changed.
    pub serving: watch::Sender<u64>,
}

/// What a program's task shares with the [`Supervisor`](super::Supervisor).
#[derive(Debug)]
pub(crate) struct Slot {
    pub status: watch::Sender<ProgramStatus>,
    /// The registered spec (what the next start runs).
    pub spec: Mutex<Arc<ProgramSpec>>,
    /// The CPU time seen at the previous look, for `cpu_percent`.
    cpu: Mutex<Option<CpuSample>>,
}

#[derive(Debug, Clone, Copy)]
struct CpuSample {
    pgid: u32,
    ticks: u64,
    at: Instant,
}

impl Slot {
    pub fn new(status: ProgramStatus, spec: Arc<ProgramSpec>) -> Slot {
        Slot {
            status: watch::Sender::new(status),
            spec: Mutex::new(spec),
            cpu: Mutex::new(None),
        }
    }

    pub fn spec(&self) -> Arc<ProgramSpec> {
        self.spec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_spec(&self, spec: Arc<ProgramSpec>) {
        *self.spec.lock().unwrap_or_else(PoisonError::into_inner) = spec;
    }

    /// Percent of one core used by group `pgid` (now at `ticks`) since the previous look at
    /// least a second old, or since `started_at` at the first look.
    pub fn cpu_percent(&self, pgid: u32, ticks: u64, started_at: Option<DateTime<Utc>>) -> f64 {
        let now = Instant::now();
        let mut sample = self.cpu.lock().unwrap_or_else(PoisonError::into_inner);
        let (before, elapsed) = match *sample {
            Some(s) if s.pgid == pgid => (s.ticks, now - s.at),
            _ => {
                let uptime = started_at
                    .and_then(|t| (Utc::now() - t).to_std().ok())
                    .unwrap_or_default();
                (0, uptime)
            }
        };
        // A baseline is kept a second at least, so that two looks close together still
        // measure over a useful interval.
        if sample.is_none_or(|s| s.pgid != pgid || now - s.at >= Duration::from_secs(1)) {
            *sample = Some(CpuSample {
                pgid,
                ticks,
                at: now,
            });
        }
        let seconds = elapsed.as_secs_f64();
        if seconds <= 0.0 {
            return 0.0;
        }
        let used = ticks.saturating_sub(before) as f64 / sys::clock_ticks() as f64;
        used / seconds * 100.0
    }
}

pub(crate) type Reply = oneshot::Sender<Result<(), SupervisorError>>;

/// What the supervisor asks of a program's task.
#[derive(Debug)]
pub(crate) enum Cmd {
    Start(Reply),
    Stop(Reply),
    Restart(Reply),
    Signal(Signal, Reply),
    /// The spec the next start runs; a running process keeps running.
    Replace(Arc<ProgramSpec>),
    /// Stop, close the output, forget the program.
    Remove(Reply),
    /// Stop, keeping the goal: the next agent starts it again.
    Shutdown(Reply),
    /// End the task, leaving the process running.
    Detach,
}

/// How a program's task begins.
#[derive(Debug)]
pub(crate) enum Initial {
    /// Nothing runs; `goal` says whether something should.
    Idle { goal: Goal },
    /// A process an earlier agent started, found alive, with its outputs opened again.
    /// With a goal other than [`Goal::Run`], that agent died stopping it: the stop is
    /// finished.
    Adopted {
        process: Process,
        outputs: Option<Outputs>,
        goal: Goal,
    },
}

/// One program's task state.
pub(crate) struct Program {
    name: Name,
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    spec: Arc<ProgramSpec>,
    running: Option<Running>,
    outputs: Option<Outputs>,
    /// It should be running: restart it when it ends (as its policy says).
    wanted: bool,
    backoff: Backoff,
    next_start: Option<Instant>,
    restarts: u32,
    /// How the last process ended, not yet published: it is, with the state that follows,
    /// so that no one sees a program running without a process.
    gone: Option<Exit>,
    /// How the last process ended, not yet written to the store: a start at once writes it
    /// with the new process, after the spawn; anything else writes it before it rests.
    unrecorded: Option<Exit>,
    /// A stop an earlier agent did not finish, done first.
    unfinished_stop: Option<Goal>,
}

struct Running {
    process: Process,
    /// What it was started with.
    spec: Arc<ProgramSpec>,
    checks: Option<Checks>,
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

struct Checks {
    health: Health,
    grace_end: Instant,
    next_at: Instant,
    in_flight: Option<CheckFuture>,
    /// Failed checks in a row outside the grace period.
    failures: u32,
    passed: bool,
}

impl Checks {
    fn new(health: Health, started: Instant) -> Checks {
        Checks {
            grace_end: started + health.grace,
            next_at: Instant::now() + STARTING_CHECK_EVERY.min(health.interval),
            health,
            in_flight: None,
            failures: 0,
            passed: false,
        }
    }
}

/// How a process ended, for the restart policy.
struct Ended {
    failure: bool,
    uptime: Duration,
}

enum Event {
    Exited,
    Cmd(Option<Cmd>),
    Checked(Result<(), String>),
    CheckDue,
    BackoffOver,
}

/// Whether the task goes on after a command.
enum Flow {
    Continue,
    End,
}

impl Program {
    pub fn new(
        slot: Arc<Slot>,
        shared: Arc<Shared>,
        spec: Arc<ProgramSpec>,
        restarts: u32,
        initial: Initial,
    ) -> Program {
        let mut program = Program {
            name: spec.name.clone(),
            slot,
            shared,
            spec,
            running: None,
            outputs: None,
            wanted: false,
            backoff: Backoff::default(),
            next_start: None,
            restarts,
            gone: None,
            unrecorded: None,
            unfinished_stop: None,
        };
        match initial {
            Initial::Idle { goal } => program.wanted = goal == Goal::Run,
            Initial::Adopted {
                process,
                outputs,
                goal,
            } => {
                program.wanted = goal == Goal::Run;
                program.unfinished_stop = (goal != Goal::Run).then_some(goal);
                let mut checks = program
                    .spec
                    .health
                    .clone()
                    .map(|h| Checks::new(h, process.started));
                if let Some(checks) = &mut checks {
                    // Check an adopted program at once: its grace period is long over.
                    checks.next_at = Instant::now();
                }
                program.outputs = outputs;
                program.running = Some(Running {
                    process,
                    spec: program.spec.clone(),
                    checks,
                });
            }
        }
        program
    }

    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Cmd>) {
        if let Some(goal) = self.unfinished_stop.take() {
            info!("finishing the stop an earlier agent began");
            self.stop(goal).await;
        }
        loop {
            let event = {
                let (process, checks) = match &mut self.running {
                    Some(running) => (Some(&running.process), running.checks.as_mut()),
                    None => (None, None),
                };
                let (check_due, in_flight) = match checks {
                    Some(c) => (
                        c.in_flight.is_none().then_some(c.next_at),
                        c.in_flight.as_mut(),
                    ),
                    None => (None, None),
                };
                tokio::select! {
                    biased;
                    () = exit_of(process) => Event::Exited,
                    cmd = commands.recv() => Event::Cmd(cmd),
                    result = outcome(in_flight) => Event::Checked(result),
                    () = until(check_due) => Event::CheckDue,
                    () = until(self.next_start) => Event::BackoffOver,
                }
            };
            match event {
                Event::Exited => self.on_exit().await,
                Event::Cmd(None) => return,
                Event::Cmd(Some(cmd)) => {
                    if let Flow::End = self.command(cmd).await {
                        return;
                    }
                }
                Event::Checked(result) => self.on_checked(result).await,
                Event::CheckDue => self.check(),
                Event::BackoffOver => {
                    self.next_start = None;
                    self.relaunch().await;
                }
            }
        }
    }

    async fn command(&mut self, cmd: Cmd) -> Flow {
        match cmd {
            Cmd::Start(reply) => {
                let _ = reply.send(self.start().await);
            }
            Cmd::Stop(reply) => {
                self.stop(Goal::Stopped).await;
                let _ = reply.send(Ok(()));
            }
            Cmd::Restart(reply) => {
                self.stop_process().await;
                let _ = reply.send(self.start().await);
            }
            Cmd::Signal(signal, reply) => {
                let sent =
                    match &self.running {
                        Some(running) => running.process.signal(signal).map_err(|source| {
                            SupervisorError::Signal {
                                name: self.name.clone(),
                                signal,
                                source,
                            }
                        }),
                        None => Err(SupervisorError::NotRunning {
                            name: self.name.clone(),
                        }),
                    };
                let _ = reply.send(sent);
            }
            Cmd::Replace(spec) => self.replace(spec),
            Cmd::Remove(reply) => {
                self.stop(Goal::Stopped).await;
                // Its FIFOs go with it; its logs stay.
                let _ = std::fs::remove_dir_all(self.shared.data.run(&self.name));
                let removed = self
                    .shared
                    .store
                    .delete(&self.name)
                    .await
                    .map_err(Into::into);
                let _ = reply.send(removed);
                return Flow::End;
            }
            Cmd::Shutdown(reply) => {
                self.next_start = None;
                self.stop_process().await;
                self.set_state(ProgramState::Stopped);
                self.close_outputs().await;
                let _ = reply.send(Ok(()));
                return Flow::End;
            }
            Cmd::Detach => return Flow::End,
        }
        Flow::Continue
    }

    /// A start asked for: from a clean slate (no backoff, no restarts counted).
    async fn start(&mut self) -> Result<(), SupervisorError> {
        if self.running.is_some() {
            return Ok(());
        }
        // `wanted` mirrors the stored goal: already Run (a program resumed at open, say), the
        // write would change nothing, and 200 of them would delay 200 starts.
        if !self.wanted {
            self.wanted = true;
            let written = self.shared.store.set_goal(&self.name, Goal::Run).await;
            self.record(written);
        }
        self.backoff.reset();
        self.next_start = None;
        self.restarts = 0;
        self.update(|s| {
            s.error = None;
            s.restarts = 0;
        });
        match self.launch().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let message = e.to_string();
                self.settle(Ended {
                    failure: true,
                    uptime: Duration::ZERO,
                })
                .await;
                // After settle, which may have started it after all (an immediate retry).
                self.update(|s| s.error = Some(message));
                Err(e)
            }
        }
    }

    /// Starts a process of the registered spec.
    async fn launch(&mut self) -> Result<(), SupervisorError> {
        let spec = self.spec.clone();
        if self.outputs.is_none() {
            let outputs = Outputs::open(&self.shared.data, &spec, &self.shared.capture).map_err(
                |source| SupervisorError::Output {
                    name: self.name.clone(),
                    source,
                },
            )?;
            self.outputs = Some(outputs);
        }
        let outputs = self.outputs.as_ref().expect("opened above");
        let process = process::spawn(&spec, &self.shared.data, outputs).map_err(|source| {
            SupervisorError::Spawn {
                name: self.name.clone(),
                program: spec.program(),
                source,
            }
        })?;
        info!(pid = %process.pid, version = %spec.version, restarts = self.restarts, "started");
        let exit = self.unrecorded.take();
        let written = self
            .shared
            .store
            .started(
                &self.name,
                &process.recorded(),
                outputs,
                self.restarts,
                exit.as_ref(),
            )
            .await;
        self.record(written);
        let checks = spec.health.clone().map(|h| Checks::new(h, process.started));
        let state = if checks.is_some() {
            ProgramState::Starting
        } else {
            ProgramState::Running
        };
        let pid = process.pid.as_raw() as u32;
        let started_at = DateTime::<Utc>::from(process.started_at);
        let restarts = self.restarts;
        self.running = Some(Running {
            process,
            spec: spec.clone(),
            checks,
        });
        self.publish(|s| {
            set_state(s, state);
            s.version = spec.version.clone();
            s.pid = Some(pid);
            s.pgid = Some(pid);
            s.started_at = Some(started_at);
            s.next_start = None;
            s.restarts = restarts;
            if let Some(h) = &mut s.health {
                h.ok = false;
                h.consecutive_failures = 0;
            }
        });
        Ok(())
    }

    /// The backoff is over, or no backoff was due: start again, or settle a failure to.
    async fn relaunch(&mut self) {
        self.restarts = self.restarts.saturating_add(1);
        if let Err(e) = self.launch().await {
            warn!(error = %e, "cannot start again");
            let message = e.to_string();
            self.update(|s| s.error = Some(message));
            self.settle(Ended {
                failure: true,
                uptime: Duration::ZERO,
            })
            .await;
        }
    }

    /// Nothing runs any more: start again now, after a backoff, or leave it at rest, as the
    /// restart policy says.
    async fn settle(&mut self, mut ended: Ended) {
        loop {
            let again = self.wanted
                && match self.spec.restart {
                    Restart::Always => true,
                    Restart::OnFailure => ended.failure,
                    Restart::Never => false,
                };
            if !again {
                self.record_exit().await;
                let rest = if ended.failure {
                    Goal::Failed
                } else {
                    Goal::Exited
                };
                self.wanted = false;
                let written = self.shared.store.set_goal(&self.name, rest).await;
                self.record(written);
                self.set_state(rest.state());
                self.close_outputs().await;
                return;
            }
            let delay = self.backoff.next(ended.uptime);
            if !delay.is_zero() {
                self.record_exit().await;
                info!(
                    delay_ms = delay.as_millis() as u64,
                    "backing off before starting again"
                );
                self.next_start = Some(Instant::now() + delay);
                let now = Utc::now();
                let restarts = self.restarts;
                self.publish(|s| {
                    set_state(s, ProgramState::Backoff);
                    s.since = now;
                    s.next_start = Some(now + delay);
                    // Counts the starts that failed too.
                    s.restarts = restarts;
                });
                return;
            }
            self.restarts = self.restarts.saturating_add(1);
            match self.launch().await {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, "cannot start again");
                    let message = e.to_string();
                    self.update(|s| s.error = Some(message));
                    ended = Ended {
                        failure: true,
                        uptime: Duration::ZERO,
                    };
                }
            }
        }
    }

    /// The main process exited by itself.
    async fn on_exit(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let exit = running.process.reap();
        info!(pid = %running.process.pid, %exit, "exited");
        running
            .process
            .clear_group(
                signal_of(running.spec.stop_signal),
                running.spec.stop_timeout,
            )
            .await;
        let failure = !exit.is_success();
        // Not written yet: a restart at once writes it with the new process, one write after
        // the spawn instead of one before it (`settle` writes it otherwise).
        self.gone = Some(exit.clone());
        self.unrecorded = Some(exit);
        self.settle(Ended {
            failure,
            uptime: running.process.uptime(),
        })
        .await;
    }

    /// Writes the exit [`on_exit`](Program::on_exit) left unwritten, if any.
    async fn record_exit(&mut self) {
        if let Some(exit) = self.unrecorded.take() {
            let written = self.shared.store.ended(&self.name, Some(&exit)).await;
            self.record(written);
        }
    }

    /// Records that the process is gone; the status says so with the next state.
    async fn ended(&mut self, exit: &Exit) {
        let written = self.shared.store.ended(&self.name, Some(exit)).await;
        self.record(written);
        self.gone = Some(exit.clone());
    }

    /// Stops the running process, if any, and leaves the program at rest in `rest`.
    async fn stop(&mut self, rest: Goal) {
        self.wanted = false;
        self.next_start = None;
        let written = self.shared.store.set_goal(&self.name, rest).await;
        self.record(written);
        self.stop_process().await;
        self.set_state(rest.state());
        self.close_outputs().await;
    }

    /// Stops the running process (the stop signal to its group, then SIGKILL), if any.
    async fn stop_process(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let healthy = self.slot.status.borrow().is_healthy();
        // Published first: the agent's link reports the endpoints gone at once.
        self.set_state(ProgramState::Stopping);
        let delay = running.spec.shutdown_delay;
        if healthy && !delay.is_zero() {
            info!(pid = %running.process.pid, ?delay, "endpoints withdrawn; stopping after the shutdown delay");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = running.process.exited() => {}
            }
        }
        info!(pid = %running.process.pid, signal = %running.spec.stop_signal, "stopping");
        let exit = running
            .process
            .stop(
                signal_of(running.spec.stop_signal),
                running.spec.stop_timeout,
            )
            .await;
        info!(pid = %running.process.pid, %exit, "stopped");
        self.ended(&exit).await;
    }

    fn replace(&mut self, spec: Arc<ProgramSpec>) {
        if let Some(outputs) = &self.outputs {
            outputs.set_logs(&spec.logs);
        }
        let idle = self.running.is_none();
        let version = spec.version.clone();
        let has_health = spec.health.is_some();
        self.spec = spec;
        if idle {
            self.update(|s| {
                s.version = version;
                s.health = has_health.then(HealthStatus::unknown);
            });
        }
    }

    fn check(&mut self) {
        let Some(checks) = self.running.as_mut().and_then(|r| r.checks.as_mut()) else {
            return;
        };
        let health = checks.health.clone();
        checks.in_flight = Some(Box::pin(async move { health::check(&health).await }));
    }

    async fn on_checked(&mut self, result: Result<(), String>) {
        let Some(checks) = self.running.as_mut().and_then(|r| r.checks.as_mut()) else {
            return;
        };
        checks.in_flight = None;
        let now = Instant::now();
        match &result {
            Ok(()) => {
                checks.failures = 0;
                checks.passed = true;
            }
            Err(_) if now >= checks.grace_end => checks.failures += 1,
            Err(_) => {}
        }
        let starting = !checks.passed && now < checks.grace_end;
        checks.next_at = now
            + if starting {
                STARTING_CHECK_EVERY.min(checks.health.interval)
            } else {
                checks.health.interval
            };
        let failures = checks.failures;
        let threshold = checks.health.failures;
        let ok = result.is_ok();
        let error = result.err();
        if let Some(error) = &error {
            if !starting {
                warn!(%error, failures, "health check failed");
            }
        }
        let became_healthy = ok && self.slot.status.borrow().state == ProgramState::Starting;
        if became_healthy {
            info!("healthy");
        }
        self.publish(|s| {
            if became_healthy {
                set_state(s, ProgramState::Running);
            }
            if let Some(h) = &mut s.health {
                h.ok = ok;
                h.consecutive_failures = failures;
                if error.is_some() {
                    h.last_error = error.clone();
                }
                h.checked_at = Some(Utc::now());
            }
        });
        if let (Some(error), true) = (error, failures >= threshold) {
            self.unhealthy(failures, &error).await;
        }
    }

    /// Failed `failures` checks in a row: stopped, then started again through the backoff.
    async fn unhealthy(&mut self, failures: u32, error: &str) {
        let Some(running) = self.running.as_ref() else {
            return;
        };
        let uptime = running.process.uptime();
        warn!(failures, %error, "unhealthy: restarting");
        let reason = format!("health check failed {failures} times in a row: {error}");
        self.update(|s| s.error = Some(reason));
        self.stop_process().await;
        self.settle(Ended {
            failure: true,
            uptime,
        })
        .await;
    }

    async fn close_outputs(&mut self) {
        if let Some(outputs) = self.outputs.take() {
            outputs.close(&self.shared.capture).await;
        }
    }

    fn set_state(&mut self, state: ProgramState) {
        self.publish(|s| set_state(s, state));
    }

    fn update(&mut self, f: impl FnOnce(&mut ProgramStatus)) {
        self.publish(f);
    }

    /// Changes the published status in one step, with how the last process ended if that
    /// is not published yet.
    fn publish(&mut self, f: impl FnOnce(&mut ProgramStatus)) {
        let gone = self.gone.take();
        let mut flipped = false;
        self.slot.status.send_modify(|s| {
            let was = s.is_healthy();
            if let Some(exit) = gone {
                s.pid = None;
                s.pgid = None;
                s.started_at = None;
                s.last_exit = Some(exit);
            }
            f(s);
            flipped = was != s.is_healthy();
        });
        if flipped {
            self.shared.serving.send_modify(|n| *n += 1);
        }
    }

    /// A failure to write the state database does not stop supervision: it is logged, and
    /// the next agent may find the record a step behind.
    fn record<T>(&self, written: Result<T, crate::StateError>) {
        if let Err(error) = written {
            warn!(%error, "cannot record the program's state");
        }
    }
}

fn set_state(status: &mut ProgramStatus, state: ProgramState) {
    if status.state != state {
        status.state = state;
        status.since = Utc::now();
    }
    if state != ProgramState::Backoff {
        status.next_start = None;
    }
}

impl HealthStatus {
    /// No check has run.
    pub(crate) fn unknown() -> HealthStatus {
        HealthStatus {
            ok: false,
            consecutive_failures: 0,
            last_error: None,
            checked_at: None,
        }
    }
}

pub(crate) fn signal_of(signal: StopSignal) -> Signal {
    match signal {
        StopSignal::Term => Signal::SIGTERM,
        StopSignal::Int => Signal::SIGINT,
        StopSignal::Quit => Signal::SIGQUIT,
        StopSignal::Hup => Signal::SIGHUP,
        StopSignal::Usr1 => Signal::SIGUSR1,
        StopSignal::Usr2 => Signal::SIGUSR2,
        StopSignal::Winch => Signal::SIGWINCH,
        StopSignal::Kill => Signal::SIGKILL,
    }
}

async fn exit_of(process: Option<&Process>) {
    match process {
        Some(process) => process.exited().await,
        None => pending().await,
    }
}

async fn outcome(check: Option<&mut CheckFuture>) -> Result<(), String> {
    match check {
        Some(check) => check.await,
        None => pending().await,
    }
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => pending().await,
    }
}
