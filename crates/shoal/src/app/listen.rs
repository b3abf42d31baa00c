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

/// Who may connect to a socket this process binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Anyone the address and the file's mode let in.
    Open,
    /// A Unix socket for its owner only, from the moment its file exists (`bind_private`).
    OwnerOnly,
}

/// Binds `addr`, or takes the listener a predecessor handed over under `name`.
/// A process-mode RPC worker (`must_inherit`) serves on what its parent handed it, wherever
/// the configuration file says now, or not at all.
pub(super) async fn listen(
    name: &str,
    addr: &Addr,
    access: Access,
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
        None => match (access, addr) {
            (Access::OwnerOnly, Addr::Unix(path)) => {
                let fd = bind_private(path)?;
                Listener::from_fd(fd).map_err(|e| e.to_string())?
            }
            _ => {
                // First, so that a missing directory or a file in the way is said plainly.
                if let Addr::Unix(path) = addr {
                    check_unix_path(path).map_err(|e| e.to_string())?;
                }
                Listener::bind(addr).await.map_err(|e| e.to_string())?
            }
        },
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
        (Addr::Unix(a), Addr::Unix(b)) => a == b || bound_privately_for(a, b),
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

/// Binds a listening Unix socket at `path` that no other user can connect to at any moment.
///
/// A socket file takes its mode from the umask when it is bound, and on Linux `fchmod` on the
/// socket does not reach the file, so binding at `path` and then changing the mode leaves a
/// window (under umask 000, a world-writable socket) in which anyone may connect. Changing
/// the umask around the bind would close it, but the umask is the whole process's, so files
/// other threads create meanwhile would get it too. Instead the socket is bound inside a
/// fresh directory of mode 0700 beside `path` (the same filesystem), made 0600, and renamed
/// onto `path`: it is never reachable by another user before it has its final mode. The
/// socket keeps the name it was bound under (`getsockname`), which `same_place` accepts for
/// an inherited listener.
pub(super) fn bind_private(path: &Path) -> Result<OwnedFd, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    check_unix_path(path).map_err(|e| e.to_string())?;
    let parent = parent_dir(path);
    let dir = parent.join(format!("{PRIVATE_DIR}{}", std::process::id()));
    // A directory left by a process of the same pid that crashed here.
    let _ = std::fs::remove_file(dir.join(PRIVATE_NAME));
    let _ = std::fs::remove_dir(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {} to bind in: {e}", dir.display()))?;
    let bound = dir.join(PRIVATE_NAME);
    let result = std::os::unix::net::UnixListener::bind(&bound)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))
        .and_then(|listener| {
            std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))
                .and_then(|()| std::fs::rename(&bound, path))
                .map_err(|e| format!("cannot put the socket at {}: {e}", path.display()))?;
            Ok(OwnedFd::from(listener))
        });
    let _ = std::fs::remove_file(&bound);
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Why an address cannot be bound now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddrProblem {
    /// Someone listens there: perhaps this very service, whose successor takes its sockets
    /// over (SIGUSR2), so `--check` only says so.
    InUse(String),
    /// Nothing can listen there as configured: a start would fail.
    Unusable(String),
}

impl std::fmt::Display for AddrProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddrProblem::InUse(why) | AddrProblem::Unusable(why) => f.write_str(why),
        }
    }
}

/// Whether `addr` can be bound now, tried without keeping anything: a TCP address by binding
/// it and letting go (port 0 always can), a Unix path by [`check_unix_path`].
pub(crate) fn check_addr(addr: &Addr) -> Result<(), AddrProblem> {
    match addr {
        Addr::Unix(path) => check_unix_path(path),
        Addr::Tcp(host_port) => match std::net::TcpListener::bind(host_port.as_str()) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(AddrProblem::InUse(
                format!("{host_port} is in use: another process listens on it"),
            )),
            Err(e) => Err(AddrProblem::Unusable(format!(
                "cannot listen on {host_port}: {e}"
            ))),
        },
    }
}

/// Whether a Unix socket path can be bound: its directory exists, and nothing but a stale
/// socket (one nobody listens on) is there. The error says what is in the way.
pub(crate) fn check_unix_path(path: &Path) -> Result<(), AddrProblem> {
    use std::os::unix::fs::FileTypeExt;

    let unusable = |why: String| Err(AddrProblem::Unusable(why));
    let parent = parent_dir(path);
    match std::fs::metadata(parent) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return unusable(format!("{} is not a directory", parent.display())),
        Err(e) => {
            return unusable(format!(
                "the directory {} cannot be used: {e}; create it first",
                parent.display()
            ))
        }
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => unusable(format!("cannot look at {}: {e}", path.display())),
        Ok(meta) if !meta.file_type().is_socket() => unusable(format!(
            "{} exists and is {}, not a socket, so it is left alone; remove it or listen on \
             another path",
            path.display(),
            crate::logging::file_kind(meta.file_type())
        )),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(AddrProblem::InUse(format!(
                "{} is in use: another process listens on it",
                path.display()
            ))),
            // Left by a process that ended: binding replaces it.
            Err(_) => Ok(()),
        },
    }
}

/// The directory `bind_private` binds in, beside the socket, followed by the pid.
const PRIVATE_DIR: &str = ".shoal-bind-";
/// The socket's name inside it: short, so that a path near the 108-byte limit still fits.
const PRIVATE_NAME: &str = "s";

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Whether `actual`, the name an inherited socket reports, is where `bind_private` bound the
/// socket now at `configured`.
fn bound_privately_for(actual: &Path, configured: &Path) -> bool {
    let dir = actual.parent();
    actual.file_name() == Some(std::ffi::OsStr::new(PRIVATE_NAME))
        && dir
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PRIVATE_DIR))
        && dir.map(parent_dir) == Some(parent_dir(configured))
}
