//! The wall clock timers read and sleep on: [`SystemClock`] in production, [`TestClock`] (driven
//! by tokio's paused time) in tests.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

/// A wall clock that can be slept on.
pub trait Clock: Send + Sync + 'static {
    /// The current wall time.
    fn now(&self) -> DateTime<Utc>;

    /// Sleeps until the wall clock reaches `when` (re-checks after waking: the wall clock may
    /// jump). Returns at once if `when` has passed.
    fn sleep_until(&self, when: DateTime<Utc>) -> BoxFuture<'_, ()>;
}

/// The system's wall clock ([`Utc::now`]), slept on with tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The longest single sleep of [`SystemClock`]. tokio sleeps on the monotonic clock, so a wall
/// clock stepped forward (NTP, a resumed laptop) would otherwise be noticed only when the whole
/// sleep ends; waking once a minute bounds how late a timer fires after such a step.
const MAX_NAP: Duration = Duration::from_secs(60);

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, when: DateTime<Utc>) -> BoxFuture<'_, ()> {
        async move {
            // A negative remainder fails `to_std`: the time has come.
            while let Ok(left) = (when - Utc::now()).to_std() {
                if left.is_zero() {
                    break;
                }
                tokio::time::sleep(left.min(MAX_NAP)).await;
            }
        }
        .boxed()
    }
}

/// A wall clock for tests: a fixed start plus the tokio time elapsed since the clock was made.
/// Under `#[tokio::test(start_paused = true)]` tokio's time advances only when every task is
/// idle, and jumps straight to the next sleep's end, so timers run deterministically and fast.
#[derive(Debug, Clone)]
pub struct TestClock {
    start: DateTime<Utc>,
    created: tokio::time::Instant,
}

impl TestClock {
    /// A clock that reads `start` now and advances with tokio's time.
    pub fn starting_at(start: DateTime<Utc>) -> TestClock {
        TestClock {
            start,
            created: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.created.elapsed();
        // `elapsed` exceeds chrono's range only after some 292 years of test time.
        self.start + chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
    }

    fn sleep_until(&self, when: DateTime<Utc>) -> BoxFuture<'_, ()> {
        async move {
            let Ok(offset) = (when - self.start).to_std() else {
                return; // `when` is before the start: it has passed.
            };
            match self.created.checked_add(offset) {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                // Beyond what tokio's clock can represent: never.
                None => std::future::pending().await,
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn test_clock_follows_paused_time() {
        let start = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = TestClock::starting_at(start);
        assert_eq!(clock.now(), start);

        let later = start + chrono::TimeDelta::seconds(90);
        clock.sleep_until(later).await;
        assert_eq!(clock.now(), later);

        // A time that has passed does not sleep.
        let before = tokio::time::Instant::now();
        clock.sleep_until(start).await;
        assert_eq!(tokio::time::Instant::now(), before);
    }
}
