//! Per-method call counts, error counts and latency, kept in process and read as a
//! [`Stats::snapshot`]. Cheap on the hot path: a read lock held only to find a method's
//! counters, then atomics; the write lock only the first time a method name is seen.
//!
//! Exporting them through the `metrics` facade belongs to the service runtime.

pub mod future;
mod histogram;
mod layer;
mod table;

use std::task::{Context as TaskContext, Poll};

use tokio::time::Instant;
use tower::Service;

use crate::error::RpcError;
use crate::service::{Reply, Request};

use self::future::ResponseFuture;
pub use self::layer::StatsLayer;
pub use self::table::{LatencySummary, MethodStats, Stats};

/// Records every call that completes into a shared [`Stats`] table: one call, an error if it
/// answered one, and the time from `call` to its answer. Calls dropped before they answer are
/// not recorded.
#[derive(Debug, Clone)]
pub struct StatsService<S> {
    inner: S,
    stats: Stats,
}

impl<S> StatsService<S> {
    pub fn new(inner: S, stats: Stats) -> Self {
        Self { inner, stats }
    }
}

impl<S> Service<Request> for StatsService<S>
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
        let started = Instant::now();
        let slot = self.stats.slot(&req.method);
        ResponseFuture::new(self.inner.call(req), slot, started)
    }
}

#[cfg(test)]
mod tests;
