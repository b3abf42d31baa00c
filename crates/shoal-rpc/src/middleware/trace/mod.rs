//! A `tracing` span per call, named `rpc` with the method and the peer's address, around the
//! handler and everything it logs; the outcome and elapsed time are logged when it ends.

pub mod future;
mod layer;

use std::task::{Context as TaskContext, Poll};

use tokio::time::Instant;
use tower::Service;

use crate::error::RpcError;
use crate::service::{Reply, Request};

use self::future::ResponseFuture;
pub use self::layer::TraceLayer;

/// Runs each call inside an `info` span `rpc{method, peer}` and logs how it ended:
///
/// - success: `debug`, with `elapsed_us`;
/// - an error answer: `debug`, with `code`, `error` and `elapsed_us`;
/// - an internal error (`codes::INTERNAL`, which includes caught panics): `warn`, same fields.
///
/// A call dropped before it ends (cancelled, or its connection closed) logs nothing here.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
}

impl<S> Trace<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<Request> for Trace<S>
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
        let span = tracing::info_span!(
            "rpc",
            method = %req.method,
            peer = req.ctx.peer().map(|p| p.addr()),
        );
        let started = Instant::now();
        // The synchronous part of the call runs in the span too.
        let inner = span.in_scope(|| self.inner.call(req));
        ResponseFuture::new(inner, span, started)
    }
}

#[cfg(test)]
mod tests;
