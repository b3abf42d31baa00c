//! Logging at a bounded rate: an event that a peer can repeat as fast as it likes (a
//! notification to an unknown method, a refused connection, a failed accept) is counted every
//! time but logged at most once per interval, with the count of those not logged.

use std::time::Duration;

use tokio::time::Instant;

/// How often a repeated event is logged by default.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counts one kind of event and says when to log it.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    /// Events since the last one logged.
    unlogged: u64,
    total: u64,
}

impl LogThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            unlogged: 0,
            total: 0,
        }
    }

    /// Counts one event at `now`; `Some(n)` when it should be logged, `n` being the events
    /// not logged before it (the first event is always logged, with `n = 0`).
    pub(crate) fn note(&mut self, now: Instant) -> Option<u64> {
        self.total += 1;
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }

    /// Every event counted.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_once_per_interval_with_the_count_left_out() {
        let start = Instant::now();
        let mut t = LogThrottle::new(Duration::from_secs(10));
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(t.note(at(0)), Some(0));
        assert_eq!(t.note(at(1)), None);
        assert_eq!(t.note(at(9)), None);
        assert_eq!(t.note(at(10)), Some(2));
        assert_eq!(t.note(at(11)), None);
        assert_eq!(t.note(at(100)), Some(1));
        assert_eq!(t.total(), 6);
        // A million events in one interval make one line.
        let logged = (0..1_000_000).filter(|_| t.note(at(105)).is_some()).count();
        assert_eq!(logged, 0);
        assert_eq!(t.note(at(110)), Some(1_000_000));
    }
}
