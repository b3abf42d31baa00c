//! The programs socket (`DATA/programs.sock`, named to each program in `SHOAL_AGENT`): a
//! MessagePack-RPC endpoint through which a service built with the SDK follows its central
//! configuration (`agent.config.watch`, `agent.config.applied`). A transport over
//! [`CentralConfig`]: each method reads a `shoal_api::program` type and calls one method.
//!
//! The socket file appears at its path already mode 0600 (bound in a 0700 directory beside
//! it, then renamed), and a connection from a user other than the agent's own (or root) is
//! closed before anything is read.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_api::config::ConfigApplied;
use shoal_api::program::{methods, ConfigWatch, ConfigWatched};
use shoal_pkg::manifest::Name;
use shoal_rpc::service::{Args, BoxReply, Dispatch, MethodInfo};
use shoal_rpc::{Reply, Request, RpcError, Server};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::central::CentralConfig;

/// Binds the programs socket at `path` (replacing a stale one) and serves it on `tasks`
/// until `shutdown`.
pub fn serve(
    central: CentralConfig,
    path: &Path,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = bind_private(path)?;
    let server = Server::builder()
        .service(Programs { central })
        .build()
        .map_err(std::io::Error::other)?;
    info!(socket = %path.display(), "serving the programs socket");
    tasks.spawn(accept(server, listener, path.to_owned(), shutdown));
    Ok(())
}

async fn accept(
    server: Server,
    listener: UnixListener,
    path: PathBuf,
    shutdown: CancellationToken,
) {
    let owner = nix::unistd::geteuid().as_raw();
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(socket = %path.display(), %error, "programs socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == owner || cred.uid() == 0 => {}
            Ok(cred) => {
                warn!(
                    uid = cred.uid(),
                    pid = cred.pid(),
                    "refused a programs socket connection from another user"
                );
                continue;
            }
            Err(error) => {
                warn!(%error, "refused a programs socket connection: cannot read who is calling");
                continue;
            }
        }
        let (r, w) = tokio::io::split(stream);
        let peer = server.serve_connection(Box::new(r), Box::new(w), "program", stop.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::select! {
                () = peer.closed() => {}
                () = shutdown.cancelled() => {
                    // A program that keeps its connection open does not hold the agent's close.
                    let _ = tokio::time::timeout(LINGER, peer.closed()).await;
                    peer.close();
                }
            }
        });
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
    stop.cancel();
    connections.close();
    connections.wait().await;
}

/// How long a program's connection may stay open once the socket closes.
const LINGER: Duration = Duration::from_secs(1);

/// Binds `path` so that it is never reachable by another user (see the module documentation).
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let dir = parent.join(format!(".programs-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let bound = dir.join("s");
    let result = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&bound)?;
        std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&bound, path)?;
        listener.set_nonblocking(true)?;
        UnixListener::from_std(listener)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

struct Programs {
    central: CentralConfig,
}

const fn method(name: &'static str, returns: &'static str) -> MethodInfo {
    MethodInfo {
        name,
        params: &[("request", "Map")],
        returns,
        notify: false,
        blocking: false,
        idempotent: true,
    }
}

const METHODS: &[MethodInfo] = &[
    method(methods::CONFIG_WATCH, "ConfigWatched"),
    method(methods::CONFIG_APPLIED, "()"),
];

impl Dispatch for Programs {
    fn service_name(&self) -> &'static str {
        "Agent"
    }

    fn methods(&self) -> &'static [MethodInfo] {
        METHODS
    }

    fn call(&self, req: Request) -> BoxReply {
        let central = self.central.clone();
        Box::pin(async move {
            let Request { method, params, .. } = req;
            match method.as_str() {
                methods::CONFIG_WATCH => {
                    let watch: ConfigWatch =
                        Args::new(methods::CONFIG_WATCH, params, 1)?.next("request")?;
                    let app = Name::new(&watch.app).map_err(RpcError::invalid_params)?;
                    let wait = Duration::from_millis(watch.wait_ms);
                    let version = central.watch(&app, watch.have, wait).await;
                    Reply::encode(&ConfigWatched { version })
                }
                methods::CONFIG_APPLIED => {
                    let ack: ConfigApplied =
                        Args::new(methods::CONFIG_APPLIED, params, 1)?.next("request")?;
                    central
                        .acknowledge(ack)
                        .await
                        .map_err(|e| RpcError::internal(e.to_string()))?;
                    Reply::encode(&())
                }
                other => Err(RpcError::method_not_found(other)),
            }
        })
    }
}
