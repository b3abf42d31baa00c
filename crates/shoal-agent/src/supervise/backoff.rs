//! [`Backoff`]: how long a program waits before the supervisor starts it again.
//!
//! The first restart after a stable run is immediate, so a crash costs only the time to
//! notice it and start again; then 100 ms, doubling, up to 30 s; a run of 30 s or more
//! starts the count again. It never gives up: a program that always fails is started every
//! 30 s for as long as it should run.

use std::time::Duration;

/// The delay before the second restart in a row.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A run at least this long resets the backoff: the next restart is immediate again.
pub const BACKOFF_RESET: Duration = Duration::from_secs(30);

/// Restarts in a row, each after a run shorter than [`BACKOFF_RESET`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Backoff {
    streak: u32,
}

impl Backoff {
    /// The delay before starting again a program that ran for `uptime`.
    pub fn next(&mut self, uptime: Duration) -> Duration {
        if uptime >= BACKOFF_RESET {
            self.streak = 0;
        }
        let delay = match self.streak {
            0 => Duration::ZERO,
            n => {
                // 100 ms << 9 is 51.2 s, already past the cap.
                let doublings = (n - 1).min(9);
                (BACKOFF_FIRST * (1 << doublings)).min(BACKOFF_CAP)
            }
        };
        self.streak = self.streak.saturating_add(1);
        delay
    }

    /// A start was asked for: the next restart is immediate again.
    pub fn reset(&mut self) {
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediate_then_doubling_to_the_cap_and_reset_by_a_stable_run() {
        let mut backoff = Backoff::default();
        let quick = Duration::from_millis(10);
        let ms: Vec<u128> = (0..14).map(|_| backoff.next(quick).as_millis()).collect();
        assert_eq!(
            ms,
            [0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000, 30000]
        );
        for _ in 0..1000 {
            assert_eq!(backoff.next(quick), BACKOFF_CAP);
        }
        assert_eq!(backoff.next(BACKOFF_RESET), Duration::ZERO);
        assert_eq!(backoff.next(quick), BACKOFF_FIRST);
        backoff.reset();
        assert_eq!(backoff.next(quick), Duration::ZERO);
    }
}
