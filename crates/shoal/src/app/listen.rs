//! The listening sockets of the bind phase: bound, or taken over from a predecessor (a
//! re-executed binary's, or a process-mode worker's parent), and kept for handing over and for
//! removing Unix socket files at exit.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use shoal_rpc::{Addr, Listener};
use tracing::warn;

use crate::control::handover::Inherited;

/// The listening sockets, kept for handing over and for removing Unix socket files at exit.
#[derive(Debug, Default)]
pub(super) struct Sockets {
    /// Duplicates of the listeners' descriptors, by name.
    pub(super) fds: Vec<(String, OwnedFd)>,
    /// Unix socket files, and whether this process bound them (rather than inherited them).
    files: Vec<(PathBuf, bool)>,
}

impl Sockets {
    /// At the end of a process that did not hand its sockets over.
    pub(super) fn remove_files(&self) {
        for (path, _) in &self.files {
            let _ = std::fs::remove_file(path);
        }
    }

    /// When the start failed: a predecessor may still serve on the inherited ones.
    pub(super) fn remove_bound_files(&self) {
        for (path, _) in self.files.iter().filter(|(_, bound)| *bound) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds `addr`, or takes the listener a predecessor handed over under `name`.
/// A process-mode RPC worker (`must_inherit`) serves on what its parent handed it, wherever
/// the configuration file says now, or not at all.
pub(super) async fn listen(
    name: &str,
    addr: &Addr,
    must_inherit: bool,
    inherited: &mut Inherited,
    sockets: &mut Sockets,
) -> Result<Listener, String> {
    let mut listener = None;
    let fd = inherited.take(name);
    if must_inherit && fd.is_none() {
        return Err(format!(
            "the parent process handed over no {name} listener (SHOAL_HANDOVER_FDS)"
        ));
    }
    if let Some(fd) = fd {
        match Listener::from_fd(fd) {
            Ok(l) if must_inherit || same_place(&l.local_addr(), addr) => listener = Some(l),
            Err(e) if must_inherit => {
                return Err(format!("the inherited {name} listener is unusable: {e}"))
            }
            Ok(l) => warn!(
                configured = %addr,
                inherited = %l.local_addr(),
                "the inherited {name} listener is not where the configuration says; binding anew"
            ),
            Err(e) => warn!(error = %e, "the inherited {name} listener is unusable; binding anew"),
        }
    }
    let inherited_one = listener.is_some();
    let mut listener = match listener {
        Some(l) => l,
        None => Listener::bind(addr).await.map_err(|e| e.to_string())?,
    };
    // The runtime removes socket files itself: not after handing them over, and, when it
    // fails to start, only those it bound (a predecessor still serves on inherited ones).
    listener.leave_socket_file();
    if let Addr::Unix(path) = addr {
        sockets.files.push((path.clone(), !inherited_one));
    }
    let fd = listener
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot keep the {name} listener for handover: {e}"))?;
    sockets.fds.push((name.to_owned(), fd));
    Ok(listener)
}

/// Whether an inherited listener serves the configured address (port 0 matches any port).
fn same_place(actual: &Addr, configured: &Addr) -> bool {
    match (actual, configured) {
        (Addr::Unix(a), Addr::Unix(b)) => a == b,
        (Addr::Tcp(a), Addr::Tcp(b)) => {
            match (
                a.parse::<std::net::SocketAddr>(),
                b.parse::<std::net::SocketAddr>(),
            ) {
                (Ok(a), Ok(b)) => a.ip() == b.ip() && (b.port() == 0 || a.port() == b.port()),
                // A host name: trust the predecessor, which bound the same configuration.
                _ => true,
            }
        }
        _ => false,
    }
}

/// The metrics listener as the tokio listener hyper serves on: a duplicate of its socket,
/// which `listen` has already kept a copy of for handing over.
pub(super) fn tokio_listener(listener: Listener) -> Result<tokio::net::TcpListener, String> {
    let local = listener.local_addr();
    let fail = |e: std::io::Error| format!("cannot serve the metrics on {local}: {e}");
    let fd = listener.as_fd().try_clone_to_owned().map_err(fail)?;
    let std_listener = std::net::TcpListener::from(fd);
    std_listener.set_nonblocking(true).map_err(fail)?;
    tokio::net::TcpListener::from_std(std_listener).map_err(fail)
}

pub(super) fn owner_only(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {} to its owner: {e}", path.display()))
}
