//! The future of a call under [`Timeout`](super::Timeout): the inner future raced against a
//! timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::RpcError;
use crate::service::Reply;

pin_project! {
    /// Resolves to the inner result, or to `deadline exceeded` once the deadline passes.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // None when there is no deadline at all (a timeout too long to represent).
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, deadline: Option<Instant>) -> Self {
        Self {
            inner,
            sleep: deadline.map(tokio::time::sleep_until),
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
        // The inner future first: a result that is ready counts even at the deadline.
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| Err(RpcError::deadline_exceeded())),
            None => Poll::Pending,
        }
    }
}
