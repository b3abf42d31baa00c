//! A bounded pool for blocking handlers: at most `threads` of them run at once, on tokio's
//! blocking threads, never on the async executor's workers.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

use crate::error::RpcError;

/// Default number of blocking handlers that may run at once.
pub const DEFAULT_BLOCKING_THREADS: usize = 64;

#[derive(Debug, Clone)]
pub struct BlockingPool {
    permits: Arc<Semaphore>,
}

impl BlockingPool {
    pub fn new(threads: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(threads.max(1))),
        }
    }

    /// The pool used when a server was given none.
    pub fn shared_default() -> Self {
        static POOL: OnceLock<BlockingPool> = OnceLock::new();
        POOL.get_or_init(|| BlockingPool::new(DEFAULT_BLOCKING_THREADS))
            .clone()
    }

    /// Runs `f` once a slot is free; a panic in `f` becomes an internal error.
    pub fn run<F, T>(&self, f: F) -> impl Future<Output = Result<T, RpcError>> + Send + 'static
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permits = self.permits.clone();
        async move {
            let permit = permits
                .acquire_owned()
                .await
                .map_err(|_| RpcError::overloaded("blocking pool is closed"))?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                f()
            })
            .await
            .map_err(|e| RpcError::internal(format!("blocking handler failed: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_runs_more_than_its_size_at_once() {
        let pool = BlockingPool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let calls = (0..6).map(|_| {
            let (running, peak, barrier) = (running.clone(), peak.clone(), barrier.clone());
            pool.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Both slots are taken before either leaves: proves two ran side by side.
                barrier.wait();
                running.fetch_sub(1, Ordering::SeqCst);
                std::thread::current().name().map(str::to_owned)
            })
        });
        let names = futures_util::future::join_all(calls).await;
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        for name in names {
            assert_ne!(name.unwrap().as_deref(), Some("tokio-runtime-worker"));
        }
    }

    #[tokio::test]
    async fn panics_become_internal_errors() {
        let err = BlockingPool::new(1)
            .run(|| panic!("boom"))
            .await
            .unwrap_err();
        assert_eq!(err.code, crate::codes::INTERNAL);
    }
}
