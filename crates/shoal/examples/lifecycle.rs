//! Lifecycle hooks and a run loop: a worker that does a unit of work every `beat_every` and
//! beats the watchdog's heart each time, checks new configurations before they apply, flushes
//! for `close_delay` when closing, and counts its work in the summary. With `beats = N` it
//! stops after N units without closing, so the watchdog ends it (exit code 4).
//!
//! ```text
//! cargo run -p shoal --example lifecycle -- --config crates/shoal/examples/lifecycle.toml
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use shoal::status::ErrorRecord;
use shoal::{App, BoxError, Config, Handle, Hooks};
use tracing::info;

/// The `[worker]` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    #[serde(default = "default_beat", with = "shoal::config::duration")]
    pub beat_every: Duration,
    /// Units of work before the loop stops beating (0: never).
    #[serde(default)]
    pub beats: u64,
    /// How long closing takes (flushing, say).
    #[serde(default, with = "shoal::config::duration")]
    pub close_delay: Duration,
}

fn default_beat() -> Duration {
    Duration::from_secs(1)
}

#[derive(Default)]
struct Worker {
    done: AtomicU64,
    close_delay_ms: AtomicU64,
    errors: AtomicU64,
}

impl Worker {
    fn apply(&self, config: &WorkerConfig) {
        self.close_delay_ms
            .store(config.close_delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Hooks for Worker {
    async fn on_start(&self, app: &Handle) -> Result<(), BoxError> {
        let config: WorkerConfig = app.config().section("worker")?;
        self.apply(&config);
        info!(every = ?config.beat_every, "worker starting");
        Ok(())
    }

    async fn on_reload(&self, config: &Config) -> Result<(), BoxError> {
        let next: WorkerConfig = config.section("worker")?;
        if next.beat_every.is_zero() {
            return Err("worker.beat_every must be more than 0s".into());
        }
        self.apply(&next);
        Ok(())
    }

    async fn on_close(&self) {
        let delay = Duration::from_millis(self.close_delay_ms.load(Ordering::Relaxed));
        info!(?delay, "flushing before close");
        tokio::time::sleep(delay).await;
    }

    fn on_error(&self, _error: &ErrorRecord) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn summary(&self) -> String {
        format!(
            "{} units of work, {} errors",
            self.done.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed)
        )
    }

    async fn run(&self, app: Handle) -> Result<(), BoxError> {
        let closing = app.closing();
        tokio::pin!(closing);
        loop {
            let config: WorkerConfig = app.config().section("worker")?;
            if config.beats > 0 && self.done.load(Ordering::Relaxed) >= config.beats {
                // Stuck, as far as the watchdog can tell.
                closing.as_mut().await;
                return Ok(());
            }
            tokio::select! {
                _ = closing.as_mut() => return Ok(()),
                _ = tokio::time::sleep(config.beat_every) => {
                    self.done.fetch_add(1, Ordering::Relaxed);
                    app.heartbeat();
                }
            }
        }
    }
}

/// The application, for `main` and for tests.
pub fn app() -> App {
    App::new("lifecycle", env!("CARGO_PKG_VERSION")).hooks(Worker::default())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> shoal::Exit {
    app().run().await
}
