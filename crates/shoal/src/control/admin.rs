//! The runtime's own RPC methods, answered before the services' router: `shoal.status` and
//! `shoal.metrics` on every listener, and the control methods (`shoal.reload`, `shoal.close`, `shoal.restart`)
//! only on the admin socket, which is a Unix socket whose file permissions decide who may
//! use it.

use std::task::{Context as TaskContext, Poll};

use futures_util::future::BoxFuture;
use shoal_rpc::{Reply, Request, RpcError, Value};
use tower::{Layer, Service};

use crate::Handle;

pub(crate) const STATUS: &str = "shoal.status";
pub(crate) const METRICS: &str = "shoal.metrics";
pub(crate) const RELOAD: &str = "shoal.reload";
pub(crate) const CLOSE: &str = "shoal.close";
pub(crate) const RESTART: &str = "shoal.restart";

/// Answers the runtime's methods; `control` adds the ones that change the process.
#[derive(Clone, Debug)]
pub(crate) struct RuntimeMethodsLayer {
    pub(crate) handle: Handle,
    pub(crate) control: bool,
}

impl<S> Layer<S> for RuntimeMethodsLayer {
    type Service = RuntimeMethods<S>;

    fn layer(&self, inner: S) -> RuntimeMethods<S> {
        RuntimeMethods {
            inner,
            handle: self.handle.clone(),
            control: self.control,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RuntimeMethods<S> {
    inner: S,
    handle: Handle,
    control: bool,
}

impl<S> Service<Request> for RuntimeMethods<S>
where
    S: Service<Request, Response = Reply, Error = RpcError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = RpcError;
    type Future = BoxFuture<'static, Result<Reply, RpcError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), RpcError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let handle = self.handle.clone();
        match (req.method.as_str(), self.control) {
            (STATUS, _) => Box::pin(async move { Reply::encode(&handle.status()) }),
            (METRICS, _) => Box::pin(metrics(req.params)),
            (RELOAD, true) => Box::pin(async move {
                handle
                    .reload()
                    .await
                    .map_err(|e| RpcError::internal(format!("reload rejected: {e}")))?;
                Reply::encode(&true)
            }),
            (CLOSE, true) => Box::pin(async move {
                handle.close();
                Reply::encode(&true)
            }),
            (RESTART, true) => Box::pin(async move {
                let pid = handle
                    .restart()
                    .await
                    .map_err(|e| RpcError::internal(format!("restart failed: {e}")))?;
                Reply::encode(&pid)
            }),
            _ => Box::pin(self.inner.call(req)),
        }
    }
}

/// `shoal.metrics`: the [`Snapshot`](crate::metrics::Snapshot), or with the one argument
/// `"prometheus"` the Prometheus text.
async fn metrics(params: Vec<Value>) -> Result<Reply, RpcError> {
    let text = match params.as_slice() {
        [] => false,
        [format] if format.as_str() == Some("prometheus") => true,
        _ => {
            return Err(RpcError::invalid_params(
                "shoal.metrics takes no argument (a snapshot) or \"prometheus\" (the text)",
            ))
        }
    };
    let snapshot = crate::metrics::collect()
        .await
        .map_err(RpcError::internal)?;
    if text {
        Reply::encode(&snapshot.to_prometheus())
    } else {
        Reply::encode(&snapshot)
    }
}
