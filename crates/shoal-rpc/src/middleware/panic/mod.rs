//! Turns a panic in a handler, whether in the service's `call` or in the future it returns,
//! into an `internal` error answer, so one bad call fails alone instead of taking down the
//! connection's task.

pub mod future;
mod layer;

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::task::{Context as TaskContext, Poll};

use tower::Service;

use crate::error::RpcError;
use crate::service::{Reply, Request};

use self::future::ResponseFuture;
pub use self::layer::CatchPanicLayer;

/// Answers `RpcError::internal("handler panicked: <message>")` when the inner service panics,
/// and logs the panic at error level.
///
/// The log event carries no method name: under a [`TraceLayer`](super::TraceLayer) it falls
/// inside the call's span, which has it. The process's panic hook still runs first (by
/// default printing the panic to stderr). After a panic the inner service is called again as
/// if nothing happened, which suits shoal's routers: they hold no state a call can leave half
/// changed.
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> CatchPanic<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<Request> for CatchPanic<S>
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
        // Unwind safety: on a panic the request is gone and the service is only ever used
        // again through `call`, which must cope with any earlier call having failed anyway.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => ResponseFuture::running(future),
            Err(payload) => ResponseFuture::panicked(panic_error(payload)),
        }
    }
}

/// The error answered for a panic, logged as it is made.
fn panic_error(payload: Box<dyn Any + Send>) -> RpcError {
    let message = panic_message(payload.as_ref());
    tracing::error!(panic = message, "handler panicked");
    RpcError::internal(format!("handler panicked: {message}"))
}

/// The text of a panic: `panic!` payloads are a `&str` or a `String`; anything else (from
/// `panic_any`) has no text to show.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "panic payload is not a string"
    }
}

#[cfg(test)]
mod tests;
