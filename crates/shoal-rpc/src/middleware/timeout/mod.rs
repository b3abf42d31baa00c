//! Caps every call at a duration, or at the caller's own deadline when that comes sooner, and
//! answers `deadline exceeded` when the cap passes; the handler's future is dropped then.

pub mod future;
mod layer;

use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;

use crate::error::RpcError;
use crate::service::{Reply, Request};

use self::future::ResponseFuture;
pub use self::layer::TimeoutLayer;

/// Answers [`RpcError::deadline_exceeded`] when a call runs past its deadline.
///
/// The deadline is the sooner of `now + timeout` and the one the request came with; it is
/// written into `ctx` before the inner service is called, so handlers (and the calls they
/// make onwards) see the deadline that is enforced.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Timeout<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<S> Service<Request> for Timeout<S>
where
    S: Service<Request, Response = Reply, Error = RpcError>,
{
    type Response = Reply;
    type Error = RpcError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), RpcError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let deadline = effective_deadline(Instant::now(), self.timeout, req.ctx.deadline());
        req.ctx.set_deadline(deadline);
        ResponseFuture::new(self.inner.call(req), deadline)
    }
}

/// The sooner of `now + timeout` and `requested`; a timeout too long to represent as an
/// instant leaves only the requested deadline.
fn effective_deadline(
    now: Instant,
    timeout: Duration,
    requested: Option<Instant>,
) -> Option<Instant> {
    match (now.checked_add(timeout), requested) {
        (Some(cap), Some(requested)) => Some(cap.min(requested)),
        (cap, requested) => cap.or(requested),
    }
}

#[cfg(test)]
mod tests;
