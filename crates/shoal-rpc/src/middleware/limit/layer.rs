//! The [`ConcurrencyLimitLayer`], which owns the semaphore its services share.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tower::Layer;

use super::ConcurrencyLimit;

/// Wraps services in [`ConcurrencyLimit`]; every service it makes draws on one shared pool of
/// `max` slots, so the cap holds for the whole server, not per connection.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConcurrencyLimitLayer {
    /// At most `max` calls in progress at once. `max` is raised to 1 (a server that refuses
    /// every call is better built without one) and lowered to what a semaphore can hold.
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Calls in progress now, across every service made by this layer.
    pub fn in_progress(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit::new(inner, self.permits.clone(), self.max)
    }
}
