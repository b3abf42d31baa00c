//! The future of a call under [`StatsService`](super::StatsService): the inner future, which
//! records the call into the table when it completes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::table::Slot;
use crate::error::RpcError;
use crate::service::Reply;

pin_project! {
    /// Resolves to the inner result unchanged.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Taken when the call is recorded.
        slot: Option<Slot>,
        started: Instant,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, slot: Slot, started: Instant) -> Self {
        Self {
            inner,
            slot: Some(slot),
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
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(slot) = this.slot.take() {
            slot.record(&result, this.started.elapsed());
        }
        Poll::Ready(result)
    }
}
