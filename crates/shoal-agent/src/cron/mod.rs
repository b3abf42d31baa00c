//! Crontab jobs: the `[[cron]]` entries of installed packages run on their schedules, one
//! process group per run, with a timeout, `overlap` honoured, and a history in SQLite.
//!
//! # Schedules
//!
//! A schedule has six fields, seconds first, in croner's syntax (checked by `shoal-pkg`). Its
//! ticks are computed from the wall clock in local time. Each job's next tick always comes
//! after the last one it fired, and at most one run is started per tick:
//!
//! - a tick that passed while the agent was not running is not made up for;
//! - when the clock jumps forward, the job runs once (for the first tick it was waiting for)
//!   and then waits for the next tick after the new time: a jump never fires a burst;
//! - when the clock goes back, the job waits until the clock passes the last tick it fired
//!   again: no tick runs twice. The agent never sleeps more than a minute at a time, so a
//!   clock change is noticed within a minute.
//!
//! # Runs
//!
//! A run executes the job's `command` (argv, no shell; a relative path with a `/` is inside
//! the package) in the package's version directory, in a new process group, with stdin from
//! `/dev/null` and stdout and stderr together on one pipe, of which the last
//! [`CronOptions::output_tail`] bytes are kept. Its environment is the agent's plus
//! `SHOAL_APP` (the package's name), `SHOAL_APP_DATA` (`apps/NAME/data`, which survives
//! versions) and `SHOAL_CRON_JOB` (the job's name).
//!
//! A run ends when its process exits; whatever it left in its process group then gets
//! SIGTERM, and SIGKILL after [`CronOptions::kill_grace`]. A run still going after the job's
//! `timeout` gets the same, group-wide, and is recorded as timed out. No process of a run
//! outlives it, unless it left the process group on purpose (`setsid`).
//!
//! With `overlap = "forbid"`, a tick while a run of the job is going is skipped and recorded
//! as skipped (a streak of skips is one record that counts them), and [`Cron::run_now`]
//! refuses with [`CronError::AlreadyRunning`]. This holds across [`Cron::add`] (an upgrade) and
//! [`Cron::remove`]: a run of the old version still counts. With `overlap = "allow"`, runs go
//! side by side.
//!
//! # History
//!
//! Every run is a row in `cron_runs`: when it started, what started it, how long it took, how
//! it ended (exit code, signal, timed out, failed to start and why, skipped, interrupted,
//! stopped) and the tail of its output. The newest [`CronOptions::keep_runs`] rows of each job
//! are kept. A run the agent was watching when it died is recorded as "interrupted: agent
//! restarted" by the next [`Cron::open`], which first stops what is left of its process group
//! (recognised by its leader's start time), so that a forbidden overlap cannot come from a
//! run the agent no longer sees.
//!
//! # Shutdown
//!
//! [`Cron::shutdown`] stops the schedules at once, then lets runs in progress finish within
//! its grace period; those still going after it are stopped as on a timeout and recorded as
//! "interrupted: agent shut down". A job's work is not cut short by a routine agent restart
//! that leaves it the grace period, and nothing is left running that the next agent would
//! not know about.

mod history;
mod run;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Local, TimeZone, Timelike, Utc};
use serde::Serialize;
use shoal_pkg::manifest::{CronJob, Name, Overlap};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::layout::DataDir;
use crate::state::{State, StateError};

pub use history::{Outcome, RunId, RunRecord, Trigger};

/// How runs are bounded and how much history is kept.
#[derive(Debug, Clone)]
pub struct CronOptions {
    /// Rows kept per job (at least 1); a streak of skipped ticks is one row.
    pub keep_runs: u32,
    /// Between SIGTERM and SIGKILL when a run's process group is stopped.
    pub kill_grace: Duration,
    /// Bytes of output kept per run, the last ones.
    pub output_tail: usize,
}

impl Default for CronOptions {
    /// 100 runs, 5 seconds, 4 KiB.
    fn default() -> CronOptions {
        CronOptions {
            keep_runs: 100,
            kill_grace: Duration::from_secs(5),
            output_tail: 4096,
        }
    }
}

/// The crontab jobs of every app, their runs and their history. Clones share everything.
#[derive(Clone)]
pub struct Cron {
    inner: Arc<Inner>,
}

/// A job as [`Cron::list`] shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub app: Name,
    pub job: Name,
    pub schedule: String,
    /// The command line, for people.
    pub command: String,
    pub overlap: Overlap,
    #[serde(rename = "timeout_ms", serialize_with = "millis")]
    pub timeout: Duration,
    /// The next tick, if the schedule has one.
    pub next: Option<DateTime<Utc>>,
    /// Runs going now, oldest first (runs of a previous version of the app included).
    pub running: Vec<RunId>,
    /// The newest record that is not a run still going.
    pub last: Option<RunRecord>,
}

/// Why a cron operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("{app} has no cron jobs: is it installed?")]
    UnknownApp { app: Name },
    #[error("{app} has no cron job \"{job}\"; its jobs: {jobs}")]
    UnknownJob { app: Name, job: Name, jobs: String },
    #[error(
        "{app}/{job} is already running (run {run}) and its overlap is \"forbid\": wait for it \
         to end, or set overlap = \"allow\" in the package's [[cron]] entry"
    )]
    AlreadyRunning { app: Name, job: Name, run: RunId },
    #[error("{app}: cron job {job}: schedule {schedule:?}: {source}")]
    Schedule {
        app: Name,
        job: Name,
        schedule: String,
        source: croner::errors::CronError,
    },
    #[error("no cron run {id}: it never existed or was pruned from the history")]
    UnknownRun { id: RunId },
    #[error("the agent is shutting down: no cron job starts now")]
    ShuttingDown,
    #[error(transparent)]
    State(#[from] StateError),
    /// A blocking task (SQLite, `/proc`, starting a process) did not finish: the runtime
    /// is shutting down.
    #[error("the cron scheduler's blocking work did not finish")]
    Blocking(#[source] tokio::task::JoinError),
}

impl Cron {
    /// The scheduler over `state`, with no jobs yet. Creates the history table, and records
    /// runs left going by a previous agent as interrupted after stopping what is left of
    /// them (SIGTERM, then SIGKILL after `options.kill_grace`). Call inside a tokio runtime.
    pub async fn open(
        data: DataDir,
        state: State,
        options: CronOptions,
    ) -> Result<Cron, CronError> {
        // The table, the runs left going and which of them still have processes: SQLite
        // and `/proc`, off the executor.
        let reading = state.clone();
        let leftovers = tokio::task::spawn_blocking(move || -> Result<_, CronError> {
            reading.ensure(history::SCHEMA)?;
            let leftovers = history::leftovers(&reading)?;
            Ok(leftovers
                .into_iter()
                .filter_map(|left| {
                    let pgid = left.pgid?;
                    run::is_ours(pgid, left.pid_start).then_some((left.id, pgid))
                })
                .collect::<Vec<_>>())
        })
        .await
        .map_err(CronError::Blocking)??;
        let stops = leftovers.into_iter().map(|(id, pgid)| {
            tracing::warn!(
                run = %id,
                pgid,
                "stopping what is left of a cron run the previous agent was watching"
            );
            run::stop_group(nix::unistd::Pid::from_raw(pgid), None, options.kill_grace)
        });
        futures_util::future::join_all(stops).await;
        let recovering = state.clone();
        tokio::task::spawn_blocking(move || history::recover(&recovering))
            .await
            .map_err(CronError::Blocking)??;

        let closing = CancellationToken::new();
        Ok(Cron {
            inner: Arc::new(Inner {
                data,
                state,
                options: CronOptions {
                    keep_runs: options.keep_runs.max(1),
                    ..options
                },
                table: Mutex::new(Table::default()),
                closing,
                interrupt: CancellationToken::new(),
                tasks: TaskTracker::new(),
                changed: watch::Sender::new(0),
            }),
        })
    }

    /// Schedules `jobs` for `app`, whose package is in `dir` (its version directory, the
    /// jobs' working directory), replacing the app's jobs if it had any: an upgrade calls
    /// this again. Runs already going are left to finish. Every schedule is checked before
    /// anything changes.
    pub fn add(&self, app: Name, dir: PathBuf, jobs: Vec<CronJob>) -> Result<(), CronError> {
        let jobs = jobs
            .into_iter()
            .map(|spec| {
                let schedule = croner::Cron::new(&spec.schedule)
                    .with_seconds_required()
                    .parse()
                    .map_err(|source| CronError::Schedule {
                        app: app.clone(),
                        job: spec.name.clone(),
                        schedule: spec.schedule.clone(),
                        source,
                    })?;
                Ok(Arc::new(Job { spec, schedule }))
            })
            .collect::<Result<Vec<_>, CronError>>()?;

        let mut table = self.inner.lock();
        if self.inner.closing.is_cancelled() {
            return Err(CronError::ShuttingDown);
        }
        let cancel = self.inner.closing.child_token();
        for job in &jobs {
            let inner = self.inner.clone();
            let (app, job, cancel) = (app.clone(), job.clone(), cancel.clone());
            self.inner
                .tasks
                .spawn(async move { inner.schedule(app, job, cancel).await });
        }
        let entry = AppJobs { dir, jobs, cancel };
        if let Some(old) = table.apps.insert(app.clone(), entry) {
            old.cancel.cancel();
        }
        tracing::info!(%app, jobs = table.apps[&app].jobs.len(), "cron jobs scheduled");
        Ok(())
    }

    /// Stops scheduling `app`'s jobs; false if it had none. Runs already going are left to
    /// finish; [`Cron::stop_runs`] stops them.
    pub fn remove(&self, app: &Name) -> bool {
        // Cancelled under the lock, so that a tick never finds the schedule live but its app
        // gone.
        let mut table = self.inner.lock();
        let removed = table.apps.remove(app);
        if let Some(entry) = &removed {
            entry.cancel.cancel();
        }
        removed.is_some()
    }

    /// Every scheduled job, by app and then in the manifest's order.
    pub fn list(&self) -> Result<Vec<JobStatus>, CronError> {
        let now = Local::now();
        let mut jobs = {
            let table = self.inner.lock();
            let mut apps: Vec<_> = table.apps.iter().collect();
            apps.sort_by(|a, b| a.0.cmp(b.0));
            apps.into_iter()
                .flat_map(|(app, entry)| entry.jobs.iter().map(move |job| (app, job)))
                .map(|(app, job)| JobStatus {
                    app: app.clone(),
                    job: job.spec.name.clone(),
                    schedule: job.spec.schedule.clone(),
                    command: job.spec.command.to_string(),
                    overlap: job.spec.overlap,
                    timeout: job.spec.timeout,
                    next: next_tick(&job.schedule, now).map(|t| t.with_timezone(&Utc)),
                    running: table
                        .running
                        .get(&(app.clone(), job.spec.name.clone()))
                        .cloned()
                        .unwrap_or_default(),
                    last: None,
                })
                .collect::<Vec<_>>()
        };
        for status in &mut jobs {
            status.last = history::last(&self.inner.state, &status.app, &status.job)?;
        }
        Ok(jobs)
    }

    /// Starts `job` of `app` now, outside its schedule. With `overlap = "forbid"` and a run
    /// of the job going, nothing starts and the answer is [`CronError::AlreadyRunning`]. A
    /// program that cannot start is still a run, recorded with why; [`Cron::wait`] gives it.
    pub async fn run_now(&self, app: &Name, job: &Name) -> Result<RunId, CronError> {
        let found = {
            let table = self.inner.lock();
            let entry = table
                .apps
                .get(app)
                .ok_or_else(|| CronError::UnknownApp { app: app.clone() })?;
            entry
                .jobs
                .iter()
                .find(|j| j.spec.name == *job)
                .cloned()
                .ok_or_else(|| CronError::UnknownJob {
                    app: app.clone(),
                    job: job.clone(),
                    jobs: entry
                        .jobs
                        .iter()
                        .map(|j| j.spec.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?
        };
        // Recording the run and starting its process block: off the executor.
        let (inner, owner) = (self.inner.clone(), app.clone());
        let started =
            tokio::task::spawn_blocking(move || inner.start(&owner, &found, Trigger::Manual, None))
                .await
                .map_err(CronError::Blocking)?;
        match started? {
            Start::Started(id) => Ok(id),
            Start::Busy(run) => Err(CronError::AlreadyRunning {
                app: app.clone(),
                job: job.clone(),
                run,
            }),
            // Only a schedule's start is cancelled.
            Start::Cancelled => Err(CronError::UnknownApp { app: app.clone() }),
        }
    }

    /// The newest `limit` records of `app`'s jobs, or of one of them, newest first. Apps
    /// removed since keep their history.
    pub fn history(
        &self,
        app: &Name,
        job: Option<&Name>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, CronError> {
        Ok(history::history(&self.inner.state, app, job, limit)?)
    }

    /// One record, if it is still in the history.
    pub fn get(&self, id: RunId) -> Result<Option<RunRecord>, CronError> {
        Ok(history::get(&self.inner.state, id)?)
    }

    /// Waits until run `id` has ended and gives its record.
    pub async fn wait(&self, id: RunId) -> Result<RunRecord, CronError> {
        let mut changed = self.inner.changed.subscribe();
        loop {
            changed.mark_unchanged();
            let cron = self.clone();
            let record = tokio::task::spawn_blocking(move || cron.get(id))
                .await
                .map_err(CronError::Blocking)??;
            match record {
                Some(record) if !record.outcome.is_running() => return Ok(record),
                Some(_) => {}
                None => return Err(CronError::UnknownRun { id }),
            }
            // The sender lives as long as `inner`, which `self` holds.
            let _ = changed.changed().await;
        }
    }

    /// Stops `app`'s runs in progress (SIGTERM to each process group, SIGKILL after the
    /// grace) and waits until they are recorded as stopped.
    pub async fn stop_runs(&self, app: &Name) -> Result<(), CronError> {
        let ids: Vec<RunId> = {
            let table = self.inner.lock();
            table
                .runs
                .iter()
                .filter(|(_, run)| run.app == *app)
                .map(|(id, run)| {
                    run.cancel.cancel();
                    *id
                })
                .collect()
        };
        for id in ids {
            self.wait(id).await?;
        }
        Ok(())
    }

    /// Stops scheduling, lets runs in progress finish within `grace`, then stops those left
    /// (recorded as "interrupted: agent shut down") and returns once every run is recorded.
    /// Afterwards [`Cron::add`] and [`Cron::run_now`] answer [`CronError::ShuttingDown`].
    pub async fn shutdown(&self, grace: Duration) {
        {
            let _table = self.inner.lock();
            self.inner.closing.cancel();
        }
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::info!("stopping cron runs still going at shutdown");
            self.inner.interrupt.cancel();
            self.inner.tasks.wait().await;
        }
    }
}

impl std::fmt::Debug for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.inner.lock();
        f.debug_struct("Cron")
            .field("apps", &table.apps.keys().collect::<Vec<_>>())
            .field("runs", &table.runs.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A clock that stops being read for longer than this would hide a clock change for as long.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The tick to wait for after firing `last`, at `now`: the first after both, so that a tick
/// never fires twice (the clock went back) and ticks missed are not made up (it jumped
/// forward, or the agent was down).
fn following<Tz: TimeZone>(
    schedule: &croner::Cron,
    last: DateTime<Tz>,
    now: DateTime<Tz>,
) -> Option<DateTime<Tz>> {
    next_tick(schedule, last.max(now))
}

/// The next tick of `schedule` strictly after `after`, in whole seconds.
fn next_tick<Tz: TimeZone>(schedule: &croner::Cron, after: DateTime<Tz>) -> Option<DateTime<Tz>> {
    let after = after.with_nanosecond(0).unwrap_or(after);
    schedule.find_next_occurrence(&after, false).ok()
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
}

struct Inner {
    data: DataDir,
    state: State,
    options: CronOptions,
    table: Mutex<Table>,
    /// Cancelled by shutdown: schedules end (each app's token is a child) and nothing starts.
    closing: CancellationToken,
    /// Cancelled when shutdown's grace is over: each run's token is a child.
    interrupt: CancellationToken,
    /// Every schedule and every run.
    tasks: TaskTracker,
    /// Bumped whenever a run ends, for [`Cron::wait`].
    changed: watch::Sender<u64>,
}

/// What is scheduled and what runs. The lock is never held across an await; a SQLite
/// statement may run under it (the state's lock is taken after this one, never before).
#[derive(Default)]
struct Table {
    apps: HashMap<Name, AppJobs>,
    /// Runs going per (app, job), oldest first, whatever version of the app started them.
    running: HashMap<(Name, Name), Vec<RunId>>,
    /// Runs whose process started.
    runs: HashMap<RunId, RunHandle>,
}

struct AppJobs {
    dir: PathBuf,
    jobs: Vec<Arc<Job>>,
    /// Ends this app's schedules.
    cancel: CancellationToken,
}

struct Job {
    spec: CronJob,
    schedule: croner::Cron,
}

struct RunHandle {
    app: Name,
    cancel: CancellationToken,
}

/// What [`Inner::start`] did.
enum Start {
    Started(RunId),
    /// Overlap is forbidden and this run is going.
    Busy(RunId),
    /// The schedule asking was replaced or removed meanwhile.
    Cancelled,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One job's schedule: sleeps until each tick and fires it, until `cancel`.
    async fn schedule(self: Arc<Inner>, app: Name, job: Arc<Job>, cancel: CancellationToken) {
        let mut last = Local::now();
        loop {
            let Some(tick) = following(&job.schedule, last, Local::now()) else {
                tracing::warn!(%app, job = %job.spec.name, schedule = %job.spec.schedule,
                    "cron schedule has no next tick");
                return;
            };
            loop {
                let now = Local::now();
                if now >= tick {
                    break;
                }
                let wait = (tick - now).to_std().unwrap_or_default().min(MAX_SLEEP);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            last = tick;
            // Recording the run (or the skip) and starting its process block: off the
            // executor.
            let (inner, owner, fired, token) =
                (self.clone(), app.clone(), job.clone(), cancel.clone());
            let started = tokio::task::spawn_blocking(move || {
                let started = inner.start(&owner, &fired, Trigger::Schedule, Some(&token));
                if let Ok(Start::Busy(run)) = started {
                    let recorded = history::record_skip(
                        &inner.state,
                        &owner,
                        &fired.spec.name,
                        tick.with_timezone(&Utc),
                        run,
                        inner.options.keep_runs,
                    );
                    if let Err(error) = recorded {
                        tracing::error!(app = %owner, job = %fired.spec.name, %error, "cron skip not recorded");
                    }
                }
                started
            })
            .await;
            match started {
                Ok(Ok(Start::Started(_))) => {}
                Ok(Ok(Start::Busy(run))) => {
                    tracing::debug!(%app, job = %job.spec.name, %run, "cron tick skipped: run still going");
                }
                Ok(Ok(Start::Cancelled) | Err(CronError::ShuttingDown)) | Err(_) => return,
                Ok(Err(error)) => {
                    tracing::error!(%app, job = %job.spec.name, %error, "cron job not started");
                }
            }
        }
    }

    /// Starts a run of `job`, unless its overlap is forbidden and one is going. `schedule`
    /// is the token of the schedule asking, checked under the lock so that a schedule
    /// replaced by [`Cron::add`] never fires beside its successor.
    fn start(
        self: &Arc<Inner>,
        app: &Name,
        job: &Arc<Job>,
        trigger: Trigger,
        schedule: Option<&CancellationToken>,
    ) -> Result<Start, CronError> {
        let name = &job.spec.name;
        let (id, dir) = {
            let mut table = self.lock();
            if self.closing.is_cancelled() {
                return Err(CronError::ShuttingDown);
            }
            if schedule.is_some_and(CancellationToken::is_cancelled) {
                return Ok(Start::Cancelled);
            }
            let Some(entry) = table.apps.get(app) else {
                return Err(CronError::UnknownApp { app: app.clone() });
            };
            let dir = entry.dir.clone();
            let key = (app.clone(), name.clone());
            if job.spec.overlap == Overlap::Forbid {
                if let Some(run) = table.running.get(&key).and_then(|runs| runs.first()) {
                    return Ok(Start::Busy(*run));
                }
            }
            let id = history::insert_running(
                &self.state,
                app,
                name,
                trigger,
                Utc::now(),
                self.options.keep_runs,
            )?;
            table.running.entry(key).or_default().push(id);
            (id, dir)
        };

        let spec = run::Spec {
            program: job.spec.command.program_in(&dir),
            args: job.spec.command.args.clone(),
            env: vec![
                ("SHOAL_APP", app.as_str().into()),
                ("SHOAL_APP_DATA", self.data.data(app).into_os_string()),
                ("SHOAL_CRON_JOB", name.as_str().into()),
            ],
            dir,
        };
        let spawned = match run::spawn(&spec) {
            Ok(spawned) => spawned,
            Err(e) => {
                let error = format!(
                    "{} (in {}): {e}",
                    spec.program.display(),
                    spec.dir.display()
                );
                tracing::warn!(%app, job = %name, run = %id, %error, "cron job failed to start");
                self.finish(
                    app,
                    name,
                    id,
                    Outcome::FailedToStart { error },
                    Some(Duration::ZERO),
                    "",
                );
                return Ok(Start::Started(id));
            }
        };
        if let Err(error) =
            history::set_process(&self.state, id, spawned.pgid.as_raw(), spawned.start_time)
        {
            tracing::error!(run = %id, %error, "cron run's process not recorded");
        }
        tracing::info!(%app, job = %name, run = %id, pid = spawned.pgid.as_raw(), ?trigger, "cron job started");
        let cancel = self.interrupt.child_token();
        self.lock().runs.insert(
            id,
            RunHandle {
                app: app.clone(),
                cancel: cancel.clone(),
            },
        );
        let limits = run::Limits {
            timeout: job.spec.timeout,
            kill_grace: self.options.kill_grace,
            output_tail: self.options.output_tail,
        };
        let inner = self.clone();
        let (app, name) = (app.clone(), name.clone());
        self.tasks.spawn(async move {
            let ended = run::watch(spawned, limits, cancel).await;
            let outcome = match ended.end {
                run::End::Exited(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    match (status.code(), status.signal()) {
                        (Some(code), _) => Outcome::Exited { code },
                        (None, Some(signal)) => Outcome::Signaled { signal },
                        (None, None) => Outcome::Exited { code: -1 },
                    }
                }
                run::End::TimedOut => Outcome::TimedOut,
                run::End::Cancelled if inner.interrupt.is_cancelled() => Outcome::Interrupted {
                    reason: "agent shut down".to_owned(),
                },
                run::End::Cancelled => Outcome::Stopped,
                run::End::Lost(e) => Outcome::Interrupted {
                    reason: format!("lost track of the process: {e}"),
                },
            };
            tracing::info!(%app, job = %name, run = %id, %outcome, "cron job ended");
            // A SQLite write: off the executor.
            let finished = tokio::task::spawn_blocking(move || {
                inner.finish(
                    &app,
                    &name,
                    id,
                    outcome,
                    Some(ended.duration),
                    &ended.output,
                );
            })
            .await;
            if let Err(error) = finished {
                tracing::error!(run = %id, %error, "cron run's end not recorded");
            }
        });
        Ok(Start::Started(id))
    }

    /// Records how run `id` ended, then lets the job start again.
    fn finish(
        &self,
        app: &Name,
        job: &Name,
        id: RunId,
        outcome: Outcome,
        duration: Option<Duration>,
        output: &str,
    ) {
        if let Err(error) = history::finish(&self.state, id, &outcome, duration, output) {
            tracing::error!(%app, %job, run = %id, %error, "cron run's end not recorded");
        }
        {
            let mut table = self.lock();
            let key = (app.clone(), job.clone());
            if let Some(runs) = table.running.get_mut(&key) {
                runs.retain(|r| *r != id);
                if runs.is_empty() {
                    table.running.remove(&key);
                }
            }
            table.runs.remove(&id);
        }
        self.changed.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_last_one_fired_and_the_clock() {
        let minutely = croner::Cron::new("0 * * * * *")
            .with_seconds_required()
            .parse()
            .unwrap();
        let at = |h: u32, m: u32, s: u32, ms: i64| {
            Utc.with_ymd_and_hms(2024, 3, 1, h, m, s).unwrap() + chrono::TimeDelta::milliseconds(ms)
        };
        let check = |last, now, expected| {
            assert_eq!(
                following(&minutely, last, now),
                Some(expected),
                "{last} {now}"
            );
        };
        // The usual case: woken just after the tick it fired.
        check(at(10, 0, 0, 0), at(10, 0, 0, 3), at(10, 1, 0, 0));
        // The clock jumped forward an hour: the next tick after the new time, no burst.
        check(at(10, 0, 0, 0), at(11, 30, 0, 500), at(11, 31, 0, 0));
        // The clock went back an hour: nothing before or at the last tick fires again.
        check(at(10, 0, 0, 0), at(9, 0, 0, 0), at(10, 1, 0, 0));
        // Seconds are whole: a tick is never a fraction late.
        check(at(10, 0, 59, 999), at(10, 0, 59, 999), at(10, 1, 0, 0));
    }
}
