//! The future of a call under [`ConcurrencyLimit`](super::ConcurrencyLimit): either the
//! admitted call holding its slot, or the refusal.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::RpcError;
use crate::service::Reply;

pin_project! {
    /// Resolves to the inner result, holding a slot of the limit until then; or to the
    /// `overloaded` refusal.
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
        Admitted {
            #[pin]
            inner: F,
            // Taken when the inner future completes, so the slot frees as soon as the
            // handler is done rather than when the caller drops this future.
            permit: Option<OwnedSemaphorePermit>,
        },
        Refused {
            error: Option<RpcError>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn admitted(inner: F, permit: OwnedSemaphorePermit) -> Self {
        Self {
            kind: Kind::Admitted {
                inner,
                permit: Some(permit),
            },
        }
    }

    pub(super) fn refused(error: RpcError) -> Self {
        Self {
            kind: Kind::Refused { error: Some(error) },
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
            KindProj::Admitted { inner, permit } => {
                let result = std::task::ready!(inner.poll(cx));
                permit.take();
                Poll::Ready(result)
            }
            KindProj::Refused { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}
