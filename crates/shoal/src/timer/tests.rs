//! Runner tests: paused tokio time and a [`TestClock`] make every run time exact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use super::*;

/// 2024-05-01 12:00:00 UTC, where every test clock starts.
fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// `start()` plus `secs` seconds.
fn at(secs: i64) -> DateTime<Utc> {
    start() + TimeDelta::seconds(secs)
}

fn ats(secs: &[i64]) -> Vec<DateTime<Utc>> {
    secs.iter().map(|s| at(*s)).collect()
}

fn schedule(text: &str) -> Schedule {
    text.parse().unwrap()
}

/// A shared, appendable log.
type Log<T> = Arc<Mutex<Vec<T>>>;

fn log<T>() -> Log<T> {
    Arc::default()
}

fn entries<T: Clone>(log: &Log<T>) -> Vec<T> {
    log.lock().unwrap().clone()
}

/// Timers on a [`TestClock`] at `start()`, in UTC, with their failures collected.
struct Harness {
    clock: Arc<TestClock>,
    timers: Timers,
    failures: Log<TimerFailure>,
}

impl Harness {
    fn new() -> Harness {
        let clock = Arc::new(TestClock::starting_at(start()));
        Harness {
            timers: Timers::new(clock.clone(), Zone::Utc),
            clock,
            failures: log(),
        }
    }

    fn add(&mut self, timer: Timer) {
        self.timers.add(timer);
    }

    /// A job that logs the clock's time when it starts, then takes `took` seconds on its
    /// `slow_run`-th run (1-based; 0 for never).
    fn recorder(
        &self,
        runs: &Log<DateTime<Utc>>,
        slow_run: usize,
        took: u64,
    ) -> impl Fn() -> BoxedJob + Send + Sync + 'static {
        let clock = self.clock.clone();
        let runs = runs.clone();
        move || {
            let n = {
                let mut runs = runs.lock().unwrap();
                runs.push(clock.now());
                runs.len()
            };
            Box::pin(async move {
                if n == slow_run {
                    sleep(Duration::from_secs(took)).await;
                }
                Ok(())
            })
        }
    }

    fn on_failure(&self) -> OnFailure {
        let failures = self.failures.clone();
        Arc::new(move |failure| failures.lock().unwrap().push(failure))
    }

    /// Runs the timers for `secs` seconds of paused time, then shuts them down and waits for
    /// the runner to return.
    async fn run_for(&self, secs: u64) -> Vec<TimerStats> {
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(self.timers.clone().run(shutdown.clone(), self.on_failure()));
        sleep(Duration::from_secs(secs)).await;
        shutdown.cancel();
        runner.await.unwrap();
        self.timers.stats()
    }
}

type BoxedJob = std::pin::Pin<Box<dyn std::future::Future<Output = TimerResult> + Send>>;

/// A job that counts how many jobs it shares `active` with run at once, for `secs` seconds.
fn overlapping(
    active: &Arc<AtomicUsize>,
    peak: &Arc<AtomicUsize>,
    secs: u64,
) -> impl Fn() -> BoxedJob + Send + Sync + 'static {
    let (active, peak) = (active.clone(), peak.clone());
    move || {
        let (active, peak) = (active.clone(), peak.clone());
        Box::pin(async move {
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            sleep(Duration::from_secs(secs)).await;
            active.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn every_runs_in_phase_with_the_start() {
    let mut h = Harness::new();
    let runs = log();
    h.add(Timer::new(
        "tick",
        schedule("every 10s"),
        h.recorder(&runs, 0, 0),
    ));
    let stats = h.run_for(35).await;

    assert_eq!(entries(&runs), ats(&[10, 20, 30]));
    let stats = &stats[0];
    assert_eq!(
        (stats.name.as_str(), stats.schedule.as_str()),
        ("tick", "every 10s")
    );
    assert_eq!((stats.runs, stats.failures, stats.skipped), (3, 0, 0));
    assert_eq!(stats.last_run, Some(at(30)));
    assert_eq!(stats.last_duration_ms, Some(0));
    // Shutdown leaves no next run.
    assert_eq!(stats.next_run, None);
}

#[tokio::test(start_paused = true)]
async fn an_overrun_skips_ticks_instead_of_bunching_them() {
    let mut h = Harness::new();
    let runs = log();
    // The first run takes 35 s: ticks at 20, 30 and 40 pass during it.
    h.add(Timer::new(
        "slow",
        schedule("every 10s"),
        h.recorder(&runs, 1, 35),
    ));
    let stats = h.run_for(75).await;

    assert_eq!(entries(&runs), ats(&[10, 50, 60, 70]));
    assert_eq!((stats[0].runs, stats[0].skipped), (4, 3));
}

#[tokio::test(start_paused = true)]
async fn a_serial_overrun_delays_the_other_timers_once() {
    let mut h = Harness::new();
    let (slow_runs, other_runs) = (log(), log());
    h.add(Timer::new(
        "slow",
        schedule("every 10s"),
        h.recorder(&slow_runs, 1, 35),
    ));
    h.add(Timer::new(
        "other",
        schedule("every 10s"),
        h.recorder(&other_runs, 0, 0),
    ));
    let stats = h.run_for(75).await;

    assert_eq!(entries(&slow_runs), ats(&[10, 50, 60, 70]));
    // Due at 10 behind `slow`, `other` runs late at 45, once; 20, 30 and 40 are skipped.
    assert_eq!(entries(&other_runs), ats(&[45, 50, 60, 70]));
    assert_eq!((stats[1].runs, stats[1].skipped), (4, 3));
}

#[tokio::test(start_paused = true)]
async fn ties_run_in_registration_order() {
    let mut h = Harness::new();
    let order = log();
    for name in ["first", "second", "third"] {
        let order = order.clone();
        h.add(Timer::new(name, schedule("every 10s"), move || {
            order.lock().unwrap().push(name);
            async { Ok(()) }
        }));
    }
    h.run_for(25).await;

    let third = ["first", "second", "third"];
    assert_eq!(entries(&order), [third, third].concat());
}

#[derive(Debug, thiserror::Error)]
#[error("cannot reach the database")]
struct Unreachable {
    #[source]
    source: std::io::Error,
}

fn boom() -> TimerResult {
    panic!("boom")
}

#[tokio::test(start_paused = true)]
async fn failures_are_counted_reported_and_do_not_stop_other_timers() {
    let mut h = Harness::new();
    let runs = log();
    h.add(Timer::new("fails", schedule("every 10s"), || async {
        Err(Unreachable {
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        }
        .into())
    }));
    h.add(Timer::new("panics", schedule("every 10s"), || async {
        boom()
    }));
    // A job that panics when called, before it returns a future.
    h.add(Timer::new(
        "panics-early",
        schedule("every 10s"),
        || -> std::future::Ready<TimerResult> { panic!("early {}", 42) },
    ));
    h.add(Timer::new(
        "works",
        schedule("every 10s"),
        h.recorder(&runs, 0, 0),
    ));
    let stats = h.run_for(25).await;

    assert_eq!(entries(&runs), ats(&[10, 20]));
    let counts: Vec<_> = stats
        .iter()
        .map(|s| (s.name.as_str(), s.runs, s.failures))
        .collect();
    assert_eq!(
        counts,
        [
            ("fails", 2, 2),
            ("panics", 2, 2),
            ("panics-early", 2, 2),
            ("works", 2, 0)
        ]
    );
    assert_eq!(
        stats[0].last_error.as_deref(),
        Some("cannot reach the database")
    );
    assert_eq!(stats[1].last_error.as_deref(), Some("panicked: boom"));
    assert_eq!(stats[3].last_error, None);

    let failures = entries(&h.failures);
    let expected = |timer: &str, message: &str, trace: &str| TimerFailure {
        timer: timer.into(),
        message: message.into(),
        trace: trace.into(),
    };
    let failed = expected(
        "fails",
        "cannot reach the database",
        "cannot reach the database\ncaused by: refused",
    );
    let panicked = expected("panics", "panicked: boom", "panicked: boom");
    let early = expected("panics-early", "panicked: early 42", "panicked: early 42");
    assert_eq!(
        failures,
        [
            failed.clone(),
            panicked.clone(),
            early.clone(),
            failed,
            panicked,
            early
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_failure_callback_does_not_stop_the_timers() {
    let h = Harness::new();
    let runs = log();
    let mut timers = h.timers.clone();
    timers.add(Timer::new("fails", schedule("every 10s"), || async {
        Err("no".into())
    }));
    timers.add(Timer::new(
        "works",
        schedule("every 10s"),
        h.recorder(&runs, 0, 0),
    ));
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(timers.run(
        shutdown.clone(),
        Arc::new(|_: TimerFailure| panic!("callback")),
    ));
    sleep(Duration::from_secs(25)).await;
    shutdown.cancel();
    runner.await.unwrap();

    assert_eq!(entries(&runs), ats(&[10, 20]));
    assert_eq!(h.timers.stats()[0].failures, 2);
}

#[tokio::test(start_paused = true)]
async fn serial_timers_never_overlap() {
    let mut h = Harness::new();
    let (active, peak) = (Arc::default(), Arc::default());
    h.add(Timer::new(
        "a",
        schedule("every 10s"),
        overlapping(&active, &peak, 3),
    ));
    h.add(Timer::new(
        "b",
        schedule("every 10s"),
        overlapping(&active, &peak, 3),
    ));
    let stats = h.run_for(45).await;

    assert_eq!(peak.load(Ordering::SeqCst), 1);
    assert_eq!((stats[0].runs, stats[1].runs), (4, 4));
    // `b` waits 3 s behind `a` each time but misses no tick.
    assert_eq!((stats[1].last_run, stats[1].skipped), (Some(at(43)), 0));
}

#[tokio::test(start_paused = true)]
async fn own_task_timers_run_alongside_but_never_overlap_themselves() {
    let mut h = Harness::new();
    let (active, peak) = (Arc::default(), Arc::default());
    let (alone_active, alone_peak) = (Arc::default(), Arc::default());
    h.add(Timer::new("a", schedule("every 10s"), overlapping(&active, &peak, 3)).on_own_task());
    h.add(Timer::new("b", schedule("every 10s"), overlapping(&active, &peak, 3)).on_own_task());
    // Runs for 25 s every 10 s: a second run of itself would overlap the first.
    h.add(
        Timer::new(
            "long",
            schedule("every 10s"),
            overlapping(&alone_active, &alone_peak, 25),
        )
        .on_own_task(),
    );
    let stats = h.run_for(45).await;

    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!((stats[0].runs, stats[1].runs), (4, 4));
    assert_eq!(stats[1].last_run, Some(at(40)));
    assert_eq!(alone_peak.load(Ordering::SeqCst), 1);
    // Runs at 10 (until 35, skipping 20 and 30) and at 40 (until 65, past the shutdown at 45,
    // skipping 50 and 60).
    assert_eq!(
        (stats[2].runs, stats[2].skipped, stats[2].last_run),
        (2, 4, Some(at(40)))
    );
}

#[tokio::test(start_paused = true)]
async fn max_runs_stops_the_timer_and_the_runner_ends_when_all_have() {
    let mut h = Harness::new();
    let runs = log();
    h.add(Timer::new("thrice", schedule("every 1s"), h.recorder(&runs, 0, 0)).max_runs(3));
    h.add(Timer::new("never", schedule("every 1s"), h.recorder(&log(), 0, 0)).max_runs(0));
    // Never cancelled: `run` returns by itself.
    h.timers
        .clone()
        .run(CancellationToken::new(), h.on_failure())
        .await;

    assert_eq!(entries(&runs), ats(&[1, 2, 3]));
    let stats = h.timers.stats();
    assert_eq!((stats[0].runs, stats[0].next_run), (3, None));
    assert_eq!((stats[1].runs, stats[1].next_run), (0, None));
    assert_eq!(h.clock.now(), at(3));
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_sleep_returns_at_once() {
    let mut h = Harness::new();
    h.add(Timer::new(
        "hourly",
        schedule("every 1h"),
        h.recorder(&log(), 0, 0),
    ));
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(h.timers.clone().run(shutdown.clone(), h.on_failure()));
    sleep(Duration::from_secs(1)).await;
    assert_eq!(h.timers.stats()[0].next_run, Some(at(3600)));

    shutdown.cancel();
    let cancelled = Instant::now();
    runner.await.unwrap();
    // No tokio time passed: the runner did not wait for its sleep to end.
    assert_eq!(Instant::now(), cancelled);
    assert_eq!(h.timers.stats()[0].runs, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_run_in_progress_finish_and_starts_no_other() {
    let mut h = Harness::new();
    let runs = log();
    h.add(Timer::new(
        "slow",
        schedule("every 10s"),
        h.recorder(&runs, 1, 20),
    ));
    h.add(Timer::new(
        "next",
        schedule("every 10s"),
        h.recorder(&log(), 0, 0),
    ));
    let stats = h.run_for(15).await;

    // Cancelled at 15, while `slow` ran from 10 to 30; `next`, due since 10, never ran.
    assert_eq!(h.clock.now(), at(30));
    assert_eq!(entries(&runs), ats(&[10]));
    assert_eq!(stats[0].last_duration_ms, Some(20_000));
    assert_eq!((stats[1].runs, stats[1].next_run), (0, None));
}

#[tokio::test(start_paused = true)]
async fn boundary_timer_fires_at_its_offset() {
    let mut h = Harness::new();
    let runs = log();
    h.add(Timer::new(
        "quarter",
        schedule("minute+15s"),
        h.recorder(&runs, 0, 0),
    ));
    let stats = h.run_for(200).await;

    assert_eq!(entries(&runs), ats(&[15, 75, 135, 195]));
    assert_eq!(
        (stats[0].schedule.as_str(), stats[0].skipped),
        ("minute+15s", 0)
    );
}

#[tokio::test(start_paused = true)]
async fn boundary_overrun_skips_to_the_next_boundary() {
    let mut h = Harness::new();
    let runs = log();
    // The first run, at :15, lasts until 2:20; :15 of minutes 1 and 2 pass meanwhile.
    h.add(Timer::new(
        "quarter",
        schedule("minute+15s"),
        h.recorder(&runs, 1, 125),
    ));
    let stats = h.run_for(250).await;

    assert_eq!(entries(&runs), ats(&[15, 195]));
    assert_eq!(stats[0].skipped, 2);
}

#[tokio::test(start_paused = true)]
async fn cron_with_seconds_fires_on_its_seconds() {
    let mut h = Harness::new();
    let runs = log();
    h.add(Timer::new(
        "thirds",
        schedule("cron: */20 * * * * *"),
        h.recorder(&runs, 0, 0),
    ));
    let stats = h.run_for(65).await;

    assert_eq!(entries(&runs), ats(&[20, 40, 60]));
    assert_eq!(stats[0].next_run, None);
    assert_eq!(stats[0].runs, 3);
}

#[test]
fn stats_serialize_times_as_rfc3339() {
    let stats = TimerStats {
        name: "tick".into(),
        schedule: "every 10s".into(),
        runs: 1,
        failures: 0,
        skipped: 0,
        last_run: Some(at(10)),
        last_duration_ms: Some(3),
        next_run: None,
        last_error: None,
    };
    let text = toml::to_string(&stats).unwrap();
    assert!(
        text.contains("last_run = \"2024-05-01T12:00:10Z\""),
        "{text}"
    );
    let back: TimerStats = toml::from_str(&text).unwrap();
    assert_eq!(back, stats);
}

#[test]
fn timers_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Timers>();
    shareable::<Timer>();
}
