//! Caps the calls in progress across every connection of a server and sheds the rest: a call
//! over the cap is answered `overloaded` at once instead of waiting for a slot.
//!
//! Shedding rather than queueing is deliberate. A queued call still holds its connection's
//! in-flight slot and its caller's deadline keeps running, so under sustained overload a queue
//! only turns fast refusals into slow timeouts. An immediate `overloaded` lets the client back
//! off or retry on another endpoint (safe even for calls that are not idempotent: a refused
//! call never reaches a handler) while the calls already admitted finish at full speed.

pub mod future;
mod layer;

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tokio::sync::Semaphore;
use tower::Service;

use crate::error::RpcError;
use crate::service::{Reply, Request};

use self::future::ResponseFuture;
pub use self::layer::ConcurrencyLimitLayer;

/// Admits a call only while fewer than `max` are in progress among all services that share
/// its semaphore (every service made by one [`ConcurrencyLimitLayer`], and their clones).
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max: usize,
}

impl<S> ConcurrencyLimit<S> {
    /// Takes permits from `permits`, which should hold `max` of them.
    pub(super) fn new(inner: S, permits: Arc<Semaphore>, max: usize) -> Self {
        Self {
            inner,
            permits,
            max,
        }
    }

    /// Calls in progress now, across every service sharing the limit.
    pub fn in_progress(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

impl<S> Service<Request> for ConcurrencyLimit<S>
where
    S: Service<Request, Response = Reply, Error = RpcError>,
{
    type Response = Reply;
    type Error = RpcError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), RpcError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => ResponseFuture::admitted(self.inner.call(req), permit),
            Err(_) => ResponseFuture::refused(RpcError::overloaded(format!(
                "server is at its limit of {} calls in progress; retry later or elsewhere",
                self.max
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
