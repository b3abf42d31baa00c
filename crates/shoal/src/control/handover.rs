//! Zero-downtime re-execution: the running process starts the binary at its own path again,
//! passing its listening sockets as inherited file descriptors, and waits until the new
//! process says it is serving. Only then does the old one stop accepting and drain, so the
//! listening sockets never close and no connection is refused.
//!
//! Between the two processes: `SHOAL_HANDOVER_FDS=rpc=5,admin=6` names the sockets,
//! `SHOAL_HANDOVER_READY=7` is the write end of a pipe the new process writes one byte to once
//! it serves, and `SHOAL_HANDOVER_FROM` is the old process's pid. The new process takes the
//! descriptors only when it is that pid's child, so a program it starts in turn, which
//! inherits the variables, never mistakes its own descriptors for them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

const FDS_VAR: &str = "SHOAL_HANDOVER_FDS";
const READY_VAR: &str = "SHOAL_HANDOVER_READY";
const FROM_VAR: &str = "SHOAL_HANDOVER_FROM";

/// Sockets and the readiness pipe inherited from the process this one replaces.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    listeners: HashMap<String, OwnedFd>,
    ready: Option<OwnedFd>,
    from: Option<u32>,
}

impl Inherited {
    /// Takes the descriptors named in `env`, if this process is a handover's new process.
    pub(crate) fn from_env(env: &[(String, String)]) -> Inherited {
        // Descriptors can be taken once per process: a second App::run must not take
        // whatever has the same numbers by then.
        static TAKEN: AtomicBool = AtomicBool::new(false);
        let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let Some(from) = var(FROM_VAR).and_then(|v| v.parse::<u32>().ok()) else {
            return Inherited::default();
        };
        if nix::unistd::getppid().as_raw() as u32 != from || TAKEN.swap(true, Ordering::SeqCst) {
            return Inherited::default();
        }
        let mut inherited = Inherited {
            from: Some(from),
            ..Inherited::default()
        };
        let mut seen: Vec<RawFd> = Vec::new();
        let mut take = |fd: &str, kind: &str| -> Option<OwnedFd> {
            let fd: RawFd = fd.parse().ok()?;
            // Each number is owned once, whatever the variables say.
            if seen.contains(&fd) {
                return None;
            }
            seen.push(fd);
            adopt(fd, kind)
        };
        for entry in var(FDS_VAR)
            .unwrap_or("")
            .split(',')
            .filter(|e| !e.is_empty())
        {
            let Some((name, fd)) = entry.split_once('=') else {
                continue;
            };
            if inherited.listeners.contains_key(name) {
                warn!(name, "inherited listener named twice; using the first");
                continue;
            }
            match take(fd, "socket:") {
                Some(fd) => {
                    inherited.listeners.insert(name.to_owned(), fd);
                }
                None => warn!(
                    name,
                    fd, "inherited listener is not an open socket; binding anew"
                ),
            }
        }
        inherited.ready = var(READY_VAR).and_then(|fd| take(fd, "pipe:"));
        inherited
    }

    /// The pid of the process being replaced.
    pub(crate) fn predecessor(&self) -> Option<u32> {
        self.from
    }

    /// The inherited listening socket named `name` (`rpc`, `admin`).
    pub(crate) fn take(&mut self, name: &str) -> Option<OwnedFd> {
        self.listeners.remove(name)
    }

    /// Tells the old process that this one serves; it then stops accepting and drains.
    pub(crate) fn signal_ready(&mut self) {
        if let Some(fd) = self.ready.take() {
            let mut pipe = std::fs::File::from(fd);
            if let Err(e) = pipe.write_all(b"R") {
                warn!(error = %e, "could not tell the old process this one is ready");
            }
        }
    }
}

/// Takes ownership of descriptor `fd` if it is open and of the expected kind (`/proc/self/fd`
/// names it `socket:[…]` or `pipe:[…]`).
#[allow(unsafe_code)]
fn adopt(fd: RawFd, kind: &str) -> Option<OwnedFd> {
    if fd < 3 {
        return None;
    }
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    if !target.to_string_lossy().starts_with(kind) {
        return None;
    }
    // SAFETY: the descriptor is open (it is listed in /proc/self/fd) and of the kind the old
    // process said it passed. Nothing in this process owns it: it was inherited across exec
    // (the runtime creates every descriptor of its own close-on-exec); `from_env` runs once
    // per process, first thing in `App::run` before any setup code, and takes each number at
    // most once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // A program this process starts later must not inherit it.
    let _ = fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    Some(owned)
}

/// Starts `exe` with `args`, handing it `listeners`, and waits until it says it serves. On
/// success returns its pid; on failure (it exited, or was not ready within `timeout`, then it
/// is killed) says why, and the caller keeps serving as before.
pub(crate) async fn start_successor(
    exe: &Path,
    args: &[OsString],
    listeners: &[(&str, BorrowedFd<'_>)],
    timeout: Duration,
) -> Result<u32, String> {
    let mut spawned = spawn(exe, args, &[], listeners, None)?;
    let pid = spawned.pid;
    info!(pid, exe = %exe.display(), "started the new process; waiting until it serves");
    let outcome = spawned.ready(timeout).await.map(|()| pid);
    if outcome.is_err() {
        let _ = spawned.child.start_kill();
        let _ = spawned.child.wait().await;
    }
    outcome
}

/// A process started with inherited listeners and a readiness pipe.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: tokio::process::Child,
    pub(crate) pid: u32,
    ready: tokio::net::unix::pipe::Receiver,
}

impl Spawned {
    /// Waits until the process says it serves, or says why it will not.
    pub(crate) async fn ready(&mut self, timeout: Duration) -> Result<(), String> {
        let pid = self.pid;
        let mut byte = [0u8; 1];
        tokio::select! {
            read = self.ready.read(&mut byte) => match read {
                Ok(1) => Ok(()),
                _ => Err(match self.child.wait().await {
                    Ok(status) => format!("the new process (pid {pid}) exited before it was ready: {status}"),
                    Err(e) => format!("the new process (pid {pid}) closed its pipe before it was ready: {e}"),
                }),
            },
            _ = tokio::time::sleep(timeout) => {
                Err(format!("the new process (pid {pid}) was not ready within {}", humantime::format_duration(timeout)))
            }
        }
    }
}

/// Starts `exe` with `args` and `env` added, handing it `listeners` and the write end of a
/// readiness pipe. The descriptors are made inheritable in the child only, between fork and
/// exec, so nothing else this process starts meanwhile inherits them. A `worker` runs in a
/// process group of its own (a terminal's Ctrl-C reaches only its parent, which closes it in
/// order), is killed if the handle is dropped, is sent SIGTERM by the kernel when this
/// process dies (and never starts if it already has), and is not told the systemd notify
/// socket (only the main process speaks to systemd).
pub(crate) fn spawn(
    exe: &Path,
    args: &[OsString],
    env: &[(&str, String)],
    listeners: &[(&str, BorrowedFd<'_>)],
    worker: Option<&OsString>,
) -> Result<Spawned, String> {
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;
    let mut names = Vec::new();
    for (name, fd) in listeners {
        names.push(format!("{name}={}", fd.as_raw_fd()));
    }
    let mut command = tokio::process::Command::new(exe);
    command
        .args(args)
        .env(FDS_VAR, names.join(","))
        .env(READY_VAR, write_end.as_raw_fd().to_string())
        .env(FROM_VAR, std::process::id().to_string());
    for (key, value) in env {
        command.env(key, value);
    }
    if let Some(arg0) = worker {
        command
            .arg0(arg0)
            .process_group(0)
            .kill_on_drop(true)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_PID")
            .env_remove("WATCHDOG_USEC");
    }
    let inherit: Vec<RawFd> = listeners
        .iter()
        .map(|(_, fd)| fd.as_raw_fd())
        .chain(std::iter::once(write_end.as_raw_fd()))
        .collect();
    let parent = nix::unistd::getpid();
    let follow_parent = worker.is_some();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes three system calls (fcntl, prctl,
    // getppid) on values copied in before the fork, allocates nothing and takes no lock.
    // The descriptors are open for as long as `listeners` and `write_end` live, which is
    // past the spawn.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            for fd in &inherit {
                let fd = BorrowedFd::borrow_raw(*fd);
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
            }
            if follow_parent {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
                }
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    drop(write_end);
    let child = spawned.map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let pid = child.id().unwrap_or(0);
    let ready = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)
        .map_err(|e| format!("cannot watch the new process: {e}"))?;
    Ok(Spawned { child, pid, ready })
}
