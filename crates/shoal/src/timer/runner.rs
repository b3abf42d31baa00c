//! Running timers: [`Timer`] (a named job on a schedule), [`Timers`] (an app's set, run in one
//! serial lane plus a task per `on_own_task` timer), their [`TimerStats`] and [`TimerFailure`]s.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
pub use shoal_api::status::TimerStats;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use super::{Clock, Schedule, Zone};

/// What a timer's job returns; an `Err` counts as a failed run.
pub type TimerResult = Result<(), Box<dyn StdError + Send + Sync>>;

/// What [`Timers::run`] calls with each failed run.
pub type OnFailure = Arc<dyn Fn(TimerFailure) + Send + Sync>;

type Job = Arc<dyn Fn() -> BoxFuture<'static, TimerResult> + Send + Sync>;

/// A named job on a schedule, as the app registers it.
#[derive(Clone)]
pub struct Timer {
    name: String,
    schedule: Schedule,
    job: Job,
    own_task: bool,
    max_runs: Option<u64>,
}

impl Timer {
    /// A timer that calls `job` on `schedule`, in turn with the app's other timers.
    pub fn new<F, Fut>(name: impl Into<String>, schedule: Schedule, job: F) -> Timer
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TimerResult> + Send + 'static,
    {
        Timer {
            name: name.into(),
            schedule,
            job: Arc::new(move || job().boxed()),
            own_task: false,
            max_runs: None,
        }
    }

    /// Runs on its own task instead of in turn with the app's other timers. It still never
    /// overlaps itself: a run that overruns skips the ticks it covers.
    pub fn on_own_task(mut self) -> Timer {
        self.own_task = true;
        self
    }

    /// Stops after this many runs, failed ones included (Tiny's `max_run_count`).
    pub fn max_runs(mut self, n: u64) -> Timer {
        self.max_runs = Some(n);
        self
    }

    /// The name logs, stats and failure reports use.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the timer fires.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("own_task", &self.own_task)
            .field("max_runs", &self.max_runs)
            .finish_non_exhaustive()
    }
}

/// A failed run, as the app's error callback receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerFailure {
    /// The timer's name.
    pub timer: String,
    /// The error's message, or `panicked: MESSAGE`.
    pub message: String,
    /// The error and its sources, one per line (`caused by: ...`); for a panic, its message
    /// (the location goes to the panic hook, which prints it to stderr by default).
    pub trace: String,
}

/// An app's timers. Clones share the stats; [`Timers::run`] runs them until shutdown.
///
/// Timers run in one serial lane, one at a time, earliest due first (ties in registration
/// order), so they need no locks between them; each [`Timer::on_own_task`] timer gets a lane
/// of its own. A lane sleeps until its earliest due time, runs what is due, then computes each
/// run timer's next time from the clock's now: ticks that passed meanwhile are skipped and
/// counted, never run in a burst. A timer whose tick was delayed by another timer's run still
/// runs once, late.
#[derive(Clone)]
pub struct Timers {
    registry: Arc<Mutex<Registry>>,
    clock: Arc<dyn Clock>,
    zone: Zone,
}

#[derive(Default)]
struct Registry {
    /// Timers added and not yet running; `run` takes them.
    pending: Vec<Timer>,
    /// One per timer added, in registration order.
    stats: Vec<TimerStats>,
    started: bool,
}

impl Timers {
    /// No timers yet; they will read `clock` and place boundaries and cron times in `zone`.
    pub fn new(clock: Arc<dyn Clock>, zone: Zone) -> Timers {
        Timers {
            registry: Arc::default(),
            clock,
            zone,
        }
    }

    /// Adds a timer. Timers added after [`Timers::run`] started are not run (and logged).
    pub fn add(&mut self, timer: Timer) {
        let mut registry = lock(&self.registry);
        if registry.started {
            warn!(timer = %timer.name, "timer added after the timers started; it will not run");
            return;
        }
        registry.stats.push(TimerStats {
            name: timer.name.clone(),
            schedule: timer.schedule.to_string(),
            runs: 0,
            failures: 0,
            skipped: 0,
            last_run: None,
            last_duration_ms: None,
            next_run: None,
            last_error: None,
        });
        registry.pending.push(timer);
    }

    /// A snapshot of every timer's counters, in registration order.
    pub fn stats(&self) -> Vec<TimerStats> {
        lock(&self.registry).stats.clone()
    }

    /// Whether no timer was added.
    pub fn is_empty(&self) -> bool {
        lock(&self.registry).stats.is_empty()
    }

    /// Runs the timers until `shutdown` is cancelled or every timer has stopped (`max_runs`
    /// reached, or a schedule with no next time); returns at once if there are none. A run in
    /// progress when shutdown fires finishes (the caller bounds it with its grace period); no
    /// run starts after. `on_failure` is called with every failed run.
    ///
    /// The timers run only once: a second call (on a clone) finds none left to run. Dropping
    /// the returned future stops every lane, runs in progress included.
    pub async fn run(self, shutdown: CancellationToken, on_failure: OnFailure) {
        let timers = {
            let mut registry = lock(&self.registry);
            registry.started = true;
            std::mem::take(&mut registry.pending)
        };
        let lane = || Lane {
            entries: Vec::new(),
            registry: self.registry.clone(),
            clock: self.clock.clone(),
            zone: self.zone,
            on_failure: on_failure.clone(),
        };
        let (own, serial): (Vec<_>, Vec<_>) = timers
            .into_iter()
            .enumerate()
            .partition(|(_, t)| t.own_task);

        // A JoinSet rather than detached tasks: dropping `run` aborts the lanes.
        let mut lanes = JoinSet::new();
        if !serial.is_empty() {
            lanes.spawn(lane().run(serial, shutdown.clone()));
        }
        for timer in own {
            lanes.spawn(lane().run(vec![timer], shutdown.clone()));
        }
        while let Some(ended) = lanes.join_next().await {
            if let Err(e) = ended {
                // Jobs' panics are caught in the lane; this is a bug in the lane itself.
                error!(error = %e, "a timer lane ended abnormally");
            }
        }
    }
}

impl fmt::Debug for Timers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timers")
            .field("zone", &self.zone)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Timers that run one at a time, on one task.
struct Lane {
    entries: Vec<Entry>,
    registry: Arc<Mutex<Registry>>,
    clock: Arc<dyn Clock>,
    zone: Zone,
    on_failure: OnFailure,
}

/// A scheduled timer in a lane.
struct Entry {
    /// Its place in the registry's stats, which is also its registration order.
    index: usize,
    timer: Timer,
    /// When the lane started: `every` periods keep this phase.
    anchor: DateTime<Utc>,
    due: DateTime<Utc>,
    runs: u64,
}

/// How many missed ticks are counted after one run at most. Counting walks the schedule, and
/// a wall clock that jumped by years should not stall the lane; the stat saturates instead.
const MAX_SKIPPED_COUNT: u64 = 100_000;

impl Lane {
    /// Runs `timers` (each with its index in the stats) until shutdown or until none is left.
    async fn run(mut self, timers: Vec<(usize, Timer)>, shutdown: CancellationToken) {
        let start = self.clock.now();
        for (index, timer) in timers {
            let due = match timer.max_runs {
                Some(0) => None,
                _ => next_due(&timer.schedule, start, start, self.zone),
            };
            let Some(due) = due else {
                warn!(timer = %timer.name, schedule = %timer.schedule, "timer never fires");
                continue;
            };
            self.update(index, |stats| stats.next_run = Some(due));
            self.entries.push(Entry {
                index,
                timer,
                anchor: start,
                due,
                runs: 0,
            });
        }

        while let Some(i) = self.earliest() {
            let due = self.entries[i].due;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = self.clock.sleep_until(due) => {}
            }
            if shutdown.is_cancelled() {
                break;
            }
            let entry = self.entries.swap_remove(i);
            if let Some(entry) = self.run_once(entry).await {
                self.entries.push(entry);
            }
        }

        for entry in &self.entries {
            self.update(entry.index, |stats| stats.next_run = None);
        }
    }

    /// The entry due first; ties go to the one registered first.
    fn earliest(&self) -> Option<usize> {
        (0..self.entries.len()).min_by_key(|&i| (self.entries[i].due, self.entries[i].index))
    }

    /// Runs `entry`'s job once and records the outcome; returns the entry unless it is done.
    async fn run_once(&self, mut entry: Entry) -> Option<Entry> {
        let name = entry.timer.name.clone();
        let started_at = self.clock.now();
        let started = tokio::time::Instant::now();
        let job = entry.timer.job.clone();
        // Calling `job` inside the future catches a panic in the call as well as in the poll.
        let outcome = AssertUnwindSafe(async move { job().await })
            .catch_unwind()
            .instrument(tracing::info_span!("timer", timer = %name))
            .await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some((error.to_string(), error_chain(&*error))),
            Err(panic) => {
                let message = format!("panicked: {}", panic_message(&*panic));
                Some((message.clone(), message))
            }
        };

        entry.runs += 1;
        let now = self.clock.now();
        let schedule = &entry.timer.schedule;
        let done = entry.timer.max_runs.is_some_and(|max| entry.runs >= max);
        let next = next_due(schedule, entry.anchor, now, self.zone).filter(|_| !done);
        let skipped = skipped_between(schedule, entry.anchor, entry.due, now, self.zone);
        self.update(entry.index, |stats| {
            stats.runs += 1;
            stats.last_run = Some(started_at);
            stats.last_duration_ms = Some(duration_ms);
            stats.next_run = next;
            stats.skipped += skipped;
            if let Some((message, _)) = &failure {
                stats.failures += 1;
                stats.last_error = Some(message.clone());
            }
        });

        if skipped > 0 {
            info!(timer = %name, skipped, "timer missed ticks");
        }
        if let Some((message, trace)) = failure {
            warn!(timer = %name, error = %message, "timer failed");
            let report = TimerFailure {
                timer: name.clone(),
                message,
                trace,
            };
            // The callback is the app's code; its panic must not end the lane either.
            let on_failure = &self.on_failure;
            if std::panic::catch_unwind(AssertUnwindSafe(|| on_failure(report))).is_err() {
                error!(timer = %name, "the timer failure callback panicked");
            }
        }
        if next.is_none() && !done {
            warn!(timer = %name, schedule = %schedule, "timer never fires again");
        }

        entry.due = next?;
        Some(entry)
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut TimerStats)) {
        if let Some(stats) = lock(&self.registry).stats.get_mut(index) {
            change(stats);
        }
    }
}

/// The first time after `now` that `schedule` fires, `every` periods in phase with `anchor`.
fn next_due(
    schedule: &Schedule,
    anchor: DateTime<Utc>,
    now: DateTime<Utc>,
    zone: Zone,
) -> Option<DateTime<Utc>> {
    match schedule {
        Schedule::Every(period) => {
            let ticks = periods_since(anchor, *period, now)?;
            let offset = ticks
                .checked_add(1)?
                .checked_mul(period.as_nanos().try_into().ok()?)?;
            anchor.checked_add_signed(TimeDelta::nanoseconds(offset.try_into().ok()?))
        }
        _ => schedule.next_after(now, zone),
    }
}

/// How many ticks of `schedule` fall in `(due, now]`: the ticks a late run skipped.
fn skipped_between(
    schedule: &Schedule,
    anchor: DateTime<Utc>,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    zone: Zone,
) -> u64 {
    if let Schedule::Every(period) = schedule {
        let count = |t| periods_since(anchor, *period, t);
        return match (count(due), count(now)) {
            (Some(due), Some(now)) => u64::try_from(now - due).unwrap_or(0),
            _ => 0,
        };
    }
    let mut skipped = 0;
    let mut tick = due;
    while skipped < MAX_SKIPPED_COUNT {
        match schedule.next_after(tick, zone) {
            Some(next) if next <= now => {
                skipped += 1;
                tick = next;
            }
            _ => break,
        }
    }
    skipped
}

/// Whole periods from `anchor` to `t` (negative before the anchor, if the clock went back).
fn periods_since(
    anchor: DateTime<Utc>,
    period: std::time::Duration,
    t: DateTime<Utc>,
) -> Option<i128> {
    let period = i128::try_from(period.as_nanos()).ok().filter(|p| *p > 0)?;
    let since = i128::from((t - anchor).num_nanoseconds()?);
    Some(since.div_euclid(period))
}

/// The error and its sources, one per line.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str("\ncaused by: ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

/// A panic's message: `panic!` payloads are a `&str` or a `String`.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "a non-string payload"
    }
}

/// Locks the registry, whose data stay consistent even if a holder panicked (every change is
/// a few plain assignments).
fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}
