//! The future of a call under [`CatchPanic`](super::CatchPanic): the inner future with its
//! panics caught, or the error for a panic already caught in `call`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::{CatchUnwind, FutureExt};
use pin_project_lite::pin_project;

use crate::error::RpcError;
use crate::service::Reply;

pin_project! {
    /// Resolves to the inner result, or to an `internal` error if the handler panicked.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Running {
            #[pin]
            inner: CatchUnwind<AssertUnwindSafe<F>>,
        },
        Panicked {
            error: Option<RpcError>,
        },
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(super) fn running(inner: F) -> Self {
        // Unwind safety: a future that panicked is never polled again, and the state it
        // shares with other calls is the handler's to keep consistent, as with any error.
        Self {
            kind: Kind::Running {
                inner: AssertUnwindSafe(inner).catch_unwind(),
            },
        }
    }

    pub(super) fn panicked(error: RpcError) -> Self {
        Self {
            kind: Kind::Panicked { error: Some(error) },
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Reply, RpcError>>,
{
    type Output = Result<Reply, RpcError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Running { inner } => inner
                .poll(cx)
                .map(|caught| caught.unwrap_or_else(|p| Err(super::panic_error(p)))),
            KindProj::Panicked { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}
