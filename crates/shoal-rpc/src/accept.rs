//! What an accept loop does when accepting fails: a failure of the one connection is passed
//! over, while one of the process (out of descriptors, out of memory) pauses the loop, 10 ms
//! doubling up to 1 s, and is logged at a bounded rate. Every shoal listener uses it, so none
//! spins or floods the log when descriptors run out.

use std::fmt;
use std::io;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use crate::throttle::{LogThrottle, LOG_INTERVAL};

/// First and longest pause after a failed accept: an accept that fails for want of a
/// resource fails again at once, and retrying in a loop would spin.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// The failures of one accept loop: call [`AcceptFailures::accepted`] on each connection
/// accepted and await [`AcceptFailures::failed`] on each error (select it against the
/// loop's shutdown: it is where the loop pauses).
#[derive(Debug)]
pub struct AcceptFailures {
    /// What the log lines name the listener by (an address, a socket path).
    listener: String,
    backoff: Option<Duration>,
    log: LogThrottle,
    /// Connections refused for the listener's cap on open ones.
    refusals: LogThrottle,
}

impl AcceptFailures {
    pub fn new(listener: impl fmt::Display) -> Self {
        Self {
            listener: listener.to_string(),
            backoff: None,
            log: LogThrottle::new(LOG_INTERVAL),
            refusals: LogThrottle::new(LOG_INTERVAL),
        }
    }

    /// A connection from `peer` accepted and closed at once, the listener having as many
    /// open as `max` allows: logged at most once per 10 s, with the count of those not
    /// logged (a peer can connect as fast as it likes).
    pub fn refused(&mut self, peer: impl fmt::Display, max: usize) {
        if let Some(unlogged) = self.refusals.note(Instant::now()) {
            warn!(
                addr = %self.listener,
                %peer,
                max,
                unlogged,
                "connection refused: the listener has as many open as its limit allows"
            );
        }
    }

    /// A connection came: the next failure pauses the shortest time again.
    pub fn accepted(&mut self) {
        self.backoff = None;
    }

    /// Logs `e` (at most once per 10 s, with the count of those not logged, for failures of
    /// the process) and pauses as long as it calls for before the loop accepts again.
    pub async fn failed(&mut self, e: &io::Error) {
        if let Some(pause) = self.note(e, Instant::now()) {
            tokio::time::sleep(pause).await;
        }
    }

    /// Counts `e` at `now` and logs it if due; the pause it calls for, `None` when the
    /// failure was the connection's own and the next accept may well succeed.
    fn note(&mut self, e: &io::Error, now: Instant) -> Option<Duration> {
        if is_per_connection(e) {
            // That one connection failed before we took it; the next may not.
            debug!(addr = %self.listener, error = %e, "accept failed");
            return None;
        }
        let (first, longest) = BACKOFF;
        let pause = self.backoff.map_or(first, |d| (d * 2).min(longest));
        self.backoff = Some(pause);
        if let Some(unlogged) = self.log.note(now) {
            warn!(
                addr = %self.listener,
                error = %e,
                unlogged,
                ?pause,
                "accept failed; pausing before the next (one line per 10 s at most)"
            );
        }
        Some(pause)
    }
}

/// An accept error that concerns only the connection being accepted (it was reset before we
/// took it), not the listener or the process.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    #[test]
    fn the_pause_doubles_to_its_cap_and_starts_over_once_a_connection_comes() {
        let start = Instant::now();
        let mut f = AcceptFailures::new("127.0.0.1:1");
        let ms = Duration::from_millis;
        let pauses: Vec<_> = (0..9).map(|_| f.note(&emfile(), start).unwrap()).collect();
        assert_eq!(
            pauses,
            [
                ms(10),
                ms(20),
                ms(40),
                ms(80),
                ms(160),
                ms(320),
                ms(640),
                ms(1000),
                ms(1000)
            ]
        );
        // A reset connection is passed over, without a pause.
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(f.note(&reset, start), None);
        f.accepted();
        assert_eq!(f.note(&emfile(), start), Some(ms(10)));
    }

    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Logs {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Logs {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Everything logged on this thread from now until the guard drops.
    fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        );
        (logs, guard)
    }

    /// A loop that fails to accept for a minute (on the paused clock) pauses between
    /// attempts and logs one line per 10 s, naming the listener and the error.
    #[tokio::test(start_paused = true)]
    async fn out_of_descriptors_a_loop_backs_off_and_logs_once_per_interval() {
        let (logs, _guard) = capture_logs();
        let mut f = AcceptFailures::new("unix:/run/x.sock");
        let start = Instant::now();
        let mut attempts = 0;
        while start.elapsed() < Duration::from_secs(60) {
            f.failed(&emfile()).await;
            attempts += 1;
        }
        // 10 ms doubling to 1 s: 7 short pauses, then one a second.
        assert!(attempts <= 70, "{attempts} attempts in a minute");
        let text = logs.text();
        let lines: Vec<_> = text
            .lines()
            .filter(|l| l.contains("accept failed"))
            .collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines[0].contains("unix:/run/x.sock"), "{}", lines[0]);
        assert!(lines[0].contains("os error 24"), "{}", lines[0]);
        assert!(lines[1].contains("unlogged="), "{}", lines[1]);
    }

    /// Connections refused at the listener's cap, a thousand a second for 30 s (on the
    /// paused clock): one line per 10 s, naming the listener, the peer and the cap.
    #[tokio::test(start_paused = true)]
    async fn refusals_at_the_cap_are_logged_once_per_interval() {
        let (logs, _guard) = capture_logs();
        let mut f = AcceptFailures::new("0.0.0.0:7440");
        for _ in 0..30_000 {
            f.refused("10.0.0.9:5000", 64);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let text = logs.text();
        let lines: Vec<_> = text
            .lines()
            .filter(|l| l.contains("connection refused"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("0.0.0.0:7440"), "{}", lines[0]);
        assert!(lines[0].contains("10.0.0.9:5000"), "{}", lines[0]);
        assert!(lines[0].contains("max=64"), "{}", lines[0]);
        assert!(lines[1].contains("unlogged=9999"), "{}", lines[1]);
    }
}
