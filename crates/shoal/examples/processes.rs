//! Process mode and process workers: the master binds `rpc.listen` and starts `rpc.processes`
//! copies of this binary that all serve it (a crashed one is started again), plus a group of
//! background worker processes. Each answer says which process served it.
//!
//! ```text
//! cargo run -p shoal --example processes -- --config crates/shoal/examples/processes.toml
//! shoal call 127.0.0.1:7002 whoami        # a worker's pid; kill -9 it and call again
//! shoal call unix:/tmp/shoal-processes.sock shoal.status
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal::App;

#[shoal::service]
pub trait Processes {
    /// The pid of the process that answers.
    async fn whoami(&self) -> u32;
    /// Waits `ms` milliseconds, then answers like `whoami`: a call in flight during a close.
    async fn slow(&self, ms: u64) -> u32;
    /// This process's pid and how many `slow` calls it is in.
    async fn busy(&self) -> (u32, u64);
}

/// `slow` calls in progress in this process.
static IN_SLOW: AtomicU64 = AtomicU64::new(0);

struct Answer;

impl Processes for Answer {
    async fn whoami(&self) -> u32 {
        std::process::id()
    }

    async fn slow(&self, ms: u64) -> u32 {
        IN_SLOW.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        IN_SLOW.fetch_sub(1, Ordering::SeqCst);
        std::process::id()
    }

    async fn busy(&self) -> (u32, u64) {
        (std::process::id(), IN_SLOW.load(Ordering::SeqCst))
    }
}

/// The application, for `main` and for tests.
pub fn app() -> App {
    App::new("processes", env!("CARGO_PKG_VERSION")).setup(|app| {
        app.serve(ProcessesServer::new(Answer));
        // Background work in processes of its own: each sweeps until told to close.
        app.workers("sweeper", 2, |w| async move {
            tracing::info!(
                group = w.group(),
                index = w.index(),
                count = w.count(),
                "sweeping"
            );
            loop {
                tokio::select! {
                    _ = w.closing() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(5)) => w.handle().heartbeat(),
                }
            }
        })
        .processes();
        Ok(())
    })
}

#[tokio::main]
async fn main() -> shoal::Exit {
    app().run().await
}
