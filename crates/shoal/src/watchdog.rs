//! Liveness: the application's watchdog (no `heartbeat()` within `watchdog.timeout` ends the
//! process with a recorded reason), systemd's `WATCHDOG=1` keep-alives, and the periodic
//! summary.

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Period;
use crate::control::systemd::Notifier;
use crate::status::SummaryRecord;
use crate::timer::{Clock, Schedule, Unit, Zone};
use crate::Handle;

/// Watches heartbeats until `stop`; sends the reason on `fired` when one is overdue. While
/// heartbeats are on time (or the application has no watchdog), tells systemd it is alive.
pub(crate) async fn watch(
    handle: Handle,
    notifier: Option<Arc<Notifier>>,
    fired: mpsc::UnboundedSender<String>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let keepalive = notifier.as_ref().and_then(|n| n.watchdog_every());
    loop {
        // Registered before the configuration is read, so a reload in between is not missed.
        let changed = changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let timeout = handle.config().runtime().watchdog.timeout;
        let now = Instant::now();
        let mut wake = None;
        if let Some(timeout) = timeout {
            let last = handle.last_heartbeat();
            let due = last + timeout;
            if now >= due {
                let silent = humantime::format_duration(round_ms(now - last));
                let _ = fired.send(format!(
                    "no heartbeat for {silent} (watchdog.timeout is {})",
                    humantime::format_duration(timeout)
                ));
                return;
            }
            wake = Some(due);
        }
        if let (Some(every), Some(notifier)) = (keepalive, &notifier) {
            notifier.send("WATCHDOG=1");
            let next = now + every;
            wake = Some(wake.map_or(next, |w: Instant| w.min(next)));
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changed => {}
            _ = sleep_until(wake) => {}
        }
    }
}

/// Logs the summary every `summary.every` until `stop`.
pub(crate) async fn summarize(
    handle: Handle,
    clock: Arc<dyn Clock>,
    zone: Zone,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let changed = changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let every = handle.config().runtime().summary.every;
        let next = every.and_then(|p| schedule(p).next_after(clock.now(), zone));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changed => {}
            _ = async {
                match next {
                    Some(when) => clock.sleep_until(when).await,
                    None => std::future::pending().await,
                }
            } => log_summary(&handle),
        }
    }
}

/// Logs and records the application's summary now.
pub(crate) fn log_summary(handle: &Handle) {
    let shared = &handle.shared;
    let mut text = shared.hooks.summary();
    if text.is_empty() {
        let (calls, errors) = shared
            .stats
            .snapshot()
            .iter()
            .fold((0, 0), |(c, e), m| (c + m.calls, e + m.errors));
        text = format!(
            "up {}, {calls} calls, {errors} call errors",
            humantime::format_duration(std::time::Duration::from_secs(
                shared.started.elapsed().as_secs()
            ))
        );
    }
    info!(app = %shared.name, summary = %text, "summary");
    shared.recorder.summary(SummaryRecord {
        at: chrono::Utc::now(),
        text,
    });
}

fn schedule(period: Period) -> Schedule {
    let boundary = |unit| Schedule::Boundary {
        unit,
        offset: std::time::Duration::ZERO,
    };
    match period {
        Period::Minute => boundary(Unit::Minute),
        Period::Hour => boundary(Unit::Hour),
        Period::Day => boundary(Unit::Day),
        Period::Every(every) => Schedule::Every(every),
    }
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

fn round_ms(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}
