//! The programs socket (`DATA/programs.sock`, named to each program in `SHOAL_AGENT`): a
//! MessagePack-RPC endpoint through which a service built with the SDK follows its central
//! configuration (`agent.config.watch`, `agent.config.applied`) and a program follows a
//! service's endpoints (`agent.discover.watch`, passed on over the link as `discover.watch`).
//! A transport over [`CentralConfig`] and [`CenterPeer`]: each method reads a
//! `shoal_api::program` or `shoal_api::fleet` type and calls one method.
//!
//! The socket file appears at its path already mode 0600 (bound in a 0700 directory beside
//! it, then renamed), and a connection from a user other than the agent's own (or root) is
//! closed before anything is read. A call speaks for one app only if the caller's process
//! (`SO_PEERCRED`) is in that program's process group: one program cannot acknowledge, nor
//! watch, another's configuration. Discovery speaks for no app: any program may ask.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_api::config::ConfigApplied;
use shoal_api::fleet::DiscoverWatch;
use shoal_api::program::{methods, ConfigWatch, ConfigWatched};
use shoal_pkg::manifest::Name;
use shoal_rpc::service::{Args, BoxReply, Dispatch, MethodInfo};
use shoal_rpc::{Reply, Request, RpcError, Server};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::central::CentralConfig;
use crate::link::{CenterCallError, CenterPeer};

/// What the programs socket's calls reach.
#[derive(Debug, Clone)]
pub struct Serving {
    pub central: CentralConfig,
    /// The link to the center, for discovery.
    pub center: CenterPeer,
}

/// Binds the programs socket at `path` (replacing a stale one) and serves it on `tasks`
/// until `shutdown`.
pub fn serve(
    serving: Serving,
    path: &Path,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = bind_private(path)?;
    info!(socket = %path.display(), "serving the programs socket");
    tasks.spawn(accept(serving, listener, path.to_owned(), shutdown));
    Ok(())
}

async fn accept(
    serving: Serving,
    listener: UnixListener,
    path: PathBuf,
    shutdown: CancellationToken,
) {
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
        let Some(caller) = caller(&stream) else {
            continue;
        };
        // One small server per connection: its calls know their caller.
        let dispatch = Programs {
            serving: serving.clone(),
            caller,
        };
        let server = match Server::builder().service(dispatch).build() {
            Ok(server) => server,
            Err(error) => {
                warn!(%error, "programs socket: cannot serve a connection");
                continue;
            }
        };
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

/// The calling process of a connection the agent's user (or root) made; `None` (logged)
/// for any other.
fn caller(stream: &tokio::net::UnixStream) -> Option<Option<u32>> {
    let owner = nix::unistd::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == owner || cred.uid() == 0 => {
            Some(cred.pid().and_then(|pid| u32::try_from(pid).ok()))
        }
        Ok(cred) => {
            warn!(
                uid = cred.uid(),
                pid = cred.pid(),
                "refused a programs socket connection from another user"
            );
            None
        }
        Err(error) => {
            warn!(%error, "refused a programs socket connection: cannot read who is calling");
            None
        }
    }
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
    serving: Serving,
    /// The calling process, from the connection's credentials.
    caller: Option<u32>,
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
    method(methods::DISCOVER_WATCH, "ServiceEndpoints"),
];

impl Dispatch for Programs {
    fn service_name(&self) -> &'static str {
        "Agent"
    }

    fn methods(&self) -> &'static [MethodInfo] {
        METHODS
    }

    fn call(&self, req: Request) -> BoxReply {
        let (central, caller) = (self.serving.central.clone(), self.caller);
        let center = self.serving.center.clone();
        Box::pin(async move {
            let Request { method, params, .. } = req;
            match method.as_str() {
                methods::CONFIG_WATCH => {
                    let watch: ConfigWatch = Args::one(methods::CONFIG_WATCH, params)?;
                    let app = Name::new(&watch.app).map_err(RpcError::invalid_params)?;
                    speaks_for(&central, caller, &app)?;
                    let wait = Duration::from_millis(watch.wait_ms);
                    let version = central.watch(&app, watch.have, wait).await;
                    if central.is_closing() {
                        // Not a version to act on: the caller waits and calls again.
                        return Err(RpcError::new(CLOSING, "the agent is closing"));
                    }
                    Reply::encode(&ConfigWatched { version })
                }
                methods::CONFIG_APPLIED => {
                    let ack: ConfigApplied = Args::one(methods::CONFIG_APPLIED, params)?;
                    let app = Name::new(&ack.name).map_err(RpcError::invalid_params)?;
                    speaks_for(&central, caller, &app)?;
                    central
                        .acknowledge(ack)
                        .await
                        .map_err(|e| RpcError::internal(e.to_string()))?;
                    Reply::encode(&())
                }
                methods::DISCOVER_WATCH => {
                    let watch: DiscoverWatch = Args::one(methods::DISCOVER_WATCH, params)?;
                    let answer = center.discover(watch).await.map_err(|e| {
                        let code = match e {
                            CenterCallError::NoCenter => NO_CENTER,
                            CenterCallError::NotLinked { .. } => NOT_LINKED,
                            CenterCallError::Failed { .. } => CENTER_FAILED,
                        };
                        RpcError::new(code, e.to_string())
                    })?;
                    Reply::encode(&answer)
                }
                other => Err(RpcError::method_not_found(other)),
            }
        })
    }
}

/// The code of a call made for an app by a process that is not that app's.
pub const NOT_THE_APP: i64 = 1001;
/// The code of a watch the agent answers because it is closing.
pub const CLOSING: i64 = 1002;
/// The code of a discovery asked of an agent that has no center.
pub const NO_CENTER: i64 = 1003;
/// The code of a discovery asked while the agent's link to its center is down.
pub const NOT_LINKED: i64 = 1004;
/// The code of a discovery the center failed or refused (the message says which).
pub const CENTER_FAILED: i64 = 1005;

/// Refuses a call about `app` from a process outside its program's process group.
fn speaks_for(central: &CentralConfig, caller: Option<u32>, app: &Name) -> Result<(), RpcError> {
    let group = caller.and_then(|pid| {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).ok()?);
        nix::unistd::getpgid(Some(pid)).ok()
    });
    match (group, central.program_group(app)) {
        (Some(group), Some(program)) if u32::try_from(group.as_raw()).ok() == Some(program) => {
            Ok(())
        }
        _ => Err(RpcError::new(
            NOT_THE_APP,
            format!("only a process of {app}'s program may speak for its configuration"),
        )),
    }
}
