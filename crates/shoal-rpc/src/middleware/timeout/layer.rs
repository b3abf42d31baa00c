//! The [`TimeoutLayer`] that wraps services in [`Timeout`].

use std::time::Duration;

use tower::Layer;

use super::Timeout;

/// Wraps services so every call ends within `timeout` (or the request's deadline if sooner).
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::new(inner, self.timeout)
    }
}
