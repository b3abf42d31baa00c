//! The runtime's own RPC methods, answered before the services' router: `shoal.status` and
//! `shoal.metrics` on every listener, and the control methods (`shoal.reload`, `shoal.close`, `shoal.restart`)
//! only on the admin socket: a Unix socket open to its owner only from the moment it exists
//! (see `app::listen::bind_private`), served by [`serve`], which also refuses a connection
//! from any other user by its credentials and names the caller in every action's log line.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::task::{Context as TaskContext, Poll};

use futures_util::future::BoxFuture;
use shoal_rpc::accept::AcceptFailures;
use shoal_rpc::{Args, Reply, Request, RpcError, Server, Value};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Layer, Service};
use tracing::{debug, info, warn};

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
        if self.control {
            // The admin server names each connection after its caller (see `serve`).
            let caller = req
                .ctx
                .peer()
                .map(|p| p.addr().to_owned())
                .unwrap_or_default();
            match req.method.as_str() {
                RELOAD | CLOSE | RESTART => info!(method = %req.method, %caller, "admin action"),
                _ => debug!(method = %req.method, %caller, "admin call"),
            }
        }
        match (req.method.as_str(), self.control) {
            (STATUS, control) => Box::pin(async move {
                Args::new(STATUS, req.params, 0)?;
                let mut status = handle.status();
                // Anyone who reaches the RPC port may ask: the configuration, redacted or
                // not, describes the deployment, so it is shown there only when asked for.
                if !control && !handle.config().runtime().status.public_config {
                    status.config = toml::Table::new();
                }
                Reply::encode(&status)
            }),
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

/// Serves the admin socket until `shutdown` completes, then drains like
/// [`Server::serve`](shoal_rpc::Server::serve). Every connection's peer credentials
/// (`SO_PEERCRED`) are read first: one from a user other than this process's own (or root)
/// is closed before a byte of it is read, and logged. The file's mode already keeps other
/// users out; this holds even when someone loosens it, or a connection slipped in before.
/// The connection is named after its caller (`uid=1000 pid=4242`), which every admin action
/// logs.
pub(crate) async fn serve(
    server: Server,
    listener: UnixListener,
    path: PathBuf,
    shutdown: impl Future<Output = ()>,
) {
    let owner = nix::unistd::geteuid().as_raw();
    info!(admin = %path.display(), owner, "serving the admin socket");
    let stop = CancellationToken::new();
    // Cancelled when this future is dropped (the grace period ran out): the connections
    // still open close with it.
    let abandon = CancellationToken::new();
    let _abandon_on_drop = abandon.clone().drop_guard();
    let connections = TaskTracker::new();
    let mut failures = AcceptFailures::new(format!("unix:{}", path.display()));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                failures.accepted();
                stream
            }
            Err(e) => {
                // Out of descriptors and the like: pause instead of spinning, and log once
                // per interval rather than every attempt.
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = failures.failed(&e) => {}
                }
                continue;
            }
        };
        let caller = match stream.peer_cred() {
            Ok(cred) if allowed(cred.uid(), owner) => Caller {
                uid: cred.uid(),
                pid: cred.pid(),
            },
            Ok(cred) => {
                warn!(
                    admin = %path.display(),
                    uid = cred.uid(),
                    pid = cred.pid(),
                    owner,
                    "refused an admin connection from another user"
                );
                continue;
            }
            Err(e) => {
                warn!(admin = %path.display(), error = %e, "refused an admin connection: cannot read who is calling");
                continue;
            }
        };
        debug!(admin = %path.display(), %caller, "admin connection");
        let (r, w) = tokio::io::split(stream);
        let peer =
            server.serve_connection(Box::new(r), Box::new(w), caller.to_string(), stop.clone());
        let abandon = abandon.clone();
        connections.spawn(async move {
            tokio::select! {
                _ = abandon.cancelled() => peer.close(),
                _ = peer.closed() => {}
            }
        });
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
}

/// Who may use the admin socket: the process's own user, and root, who can reach any file.
fn allowed(uid: u32, owner: u32) -> bool {
    uid == owner || uid == 0
}

/// The user and process on the other end of an admin connection.
#[derive(Debug, Clone, Copy)]
struct Caller {
    uid: u32,
    pid: Option<i32>,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid={}", self.uid)?;
        if let Some(pid) = self.pid {
            write!(f, " pid={pid}")?;
        }
        Ok(())
    }
}
