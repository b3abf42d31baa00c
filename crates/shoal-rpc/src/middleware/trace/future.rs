//! The future of a call under [`Trace`](super::Trace): the inner future polled inside the
//! call's span, logging the outcome when it completes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tracing::Span;

use crate::error::{codes, RpcError};
use crate::service::Reply;

pin_project! {
    /// Resolves to the inner result unchanged.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        started: Instant,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, span: Span, started: Instant) -> Self {
        Self {
            inner,
            span,
            started,
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Reply, RpcError>>,
{
    type Output = Result<Reply, RpcError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = std::task::ready!(this.inner.poll(cx));
        let elapsed_us = u64::try_from(this.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => tracing::debug!(elapsed_us, "call succeeded"),
            Err(e) if e.code == codes::INTERNAL => {
                tracing::warn!(code = e.code, error = %e.message, elapsed_us, "call failed")
            }
            Err(e) => tracing::debug!(code = e.code, error = %e.message, elapsed_us, "call failed"),
        }
        Poll::Ready(result)
    }
}
