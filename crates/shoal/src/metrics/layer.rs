//! [`MetricsLayer`]: per-method call counts and latency recorded through the `metrics` facade
//! (`shoal_rpc_calls_total`, `shoal_rpc_call_duration_seconds`) for every call and
//! notification that gets an answer; calls dropped before they answer are not recorded.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context as TaskContext, Poll};

use pin_project_lite::pin_project;
use shoal_rpc::middleware::Stats;
use shoal_rpc::{codes, Reply, Request, RpcError};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{MAX_METHODS, RPC_CALLS, RPC_CALL_DURATION};

/// Wraps services in [`MetricsService`]. Clones share the set of method names seen, which is
/// what bounds the labels a client can make (see the [module](super) docs).
#[derive(Debug, Clone, Default)]
pub struct MetricsLayer {
    names: Arc<Names>,
}

impl MetricsLayer {
    pub fn new() -> MetricsLayer {
        MetricsLayer::default()
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            names: self.names.clone(),
        }
    }
}

/// Records each answered call: one to `shoal_rpc_calls_total{method, outcome}` and its time
/// to `shoal_rpc_call_duration_seconds{method}`.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    names: Arc<Names>,
}

impl<S> Service<Request> for MetricsService<S>
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
        let method = req.method.clone();
        ResponseFuture {
            inner: self.inner.call(req),
            record: Some(Record {
                method,
                names: self.names.clone(),
                started: Instant::now(),
            }),
        }
    }
}

pin_project! {
    /// The inner future, which records the call when it resolves; its output unchanged.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Taken when the call is recorded.
        record: Option<Record>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Reply, RpcError>>,
{
    type Output = Result<Reply, RpcError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(record) = this.record.take() {
            record.done(&result);
        }
        Poll::Ready(result)
    }
}

#[derive(Debug)]
struct Record {
    method: String,
    names: Arc<Names>,
    started: Instant,
}

impl Record {
    fn done(self, result: &Result<Reply, RpcError>) {
        let seconds = self.started.elapsed().as_secs_f64();
        let not_found = matches!(result, Err(e) if e.code == codes::METHOD_NOT_FOUND);
        let method = self.names.label(self.method, not_found);
        let outcome = if result.is_ok() { "ok" } else { "error" };
        ::metrics::counter!(RPC_CALLS, "method" => method.clone(), "outcome" => outcome)
            .increment(1);
        ::metrics::histogram!(RPC_CALL_DURATION, "method" => method).record(seconds);
    }
}

/// The method names given their own label value so far.
#[derive(Debug, Default)]
struct Names {
    known: RwLock<HashSet<String>>,
}

impl Names {
    /// The label for a call to `method`: itself if it is known or there is room, else
    /// [`Stats::UNKNOWN`] when the services did not know it, or [`Stats::OTHER`].
    fn label(&self, method: String, not_found: bool) -> String {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        if known.contains(&method) {
            return method;
        }
        drop(known);
        if not_found {
            return Stats::UNKNOWN.to_owned();
        }
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        // Two places stay for the folded names.
        if known.contains(&method) || known.len() < MAX_METHODS - 2 {
            known.insert(method.clone());
            method
        } else {
            Stats::OTHER.to_owned()
        }
    }
}
