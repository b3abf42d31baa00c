//! The admin socket against other users: private from the moment its file exists even under
//! umask 000, a connection from another uid refused by its credentials and logged, and every
//! admin action logged with its caller's uid. The tests acting as `nobody` (in a forked
//! child) need root; a binary of its own because it changes the umask.

mod common;
// The shoal-rpc tests' log capture, the one copy.
#[path = "../../shoal-rpc/tests/common/logs.rs"]
mod logs;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{config_args, no_env, Scratch};
use logs::Logs;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{kill, raise, Signal};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{umask, Mode};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe, read, setgid, setuid, write, ForkResult, Gid, Pid, Uid};
use shoal::status::Status;
use shoal::{App, Client};

const LIMIT: Duration = Duration::from_secs(10);
const NOBODY: u32 = 65534;

/// `[0, 1, "shoal.status", []]`: a request any peer can send.
const STATUS_REQUEST: &[u8] = b"\x94\x00\x01\xacshoal.status\x90";

fn as_root() -> bool {
    if Uid::effective().is_root() {
        return true;
    }
    common::skip("the admin socket tests act as another user, which needs root");
    false
}

fn app(dir: &Scratch) -> App {
    let file = dir.write(
        "admin.toml",
        &format!(
            "[admin]\nlisten = \"unix:{}\"\n",
            dir.join("admin.sock").display()
        ),
    );
    App::new("admin-test", "1.0.0").args(config_args(&file), no_env())
}

/// A directory anyone may enter, so that only the socket's own mode and the credentials
/// check stand between `nobody` and the socket.
fn open_dir(name: &str) -> Scratch {
    let dir = Scratch::new(name);
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// Forks a child that becomes `nobody` and runs `body` with the pipe's write end; the child
/// writes `u` once it is `nobody`, then whatever `body` reports, and ends by SIGKILL (it
/// never returns into the test harness). Only system calls run in the child: nothing that
/// allocates or takes a lock another thread of the parent may hold.
#[allow(unsafe_code)]
fn as_nobody(body: impl FnOnce(&OwnedFd)) -> (Child, OwnedFd) {
    let (r, w) = pipe().unwrap();
    // SAFETY: the child runs only async-signal-safe system calls (setgid, setuid, socket,
    // connect, read, write, raise) on values built before the fork, then kills itself.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(r);
            if setgid(Gid::from_raw(NOBODY)).is_ok() && setuid(Uid::from_raw(NOBODY)).is_ok() {
                let _ = write(&w, b"u");
                body(&w);
            }
            let _ = raise(Signal::SIGKILL);
            unreachable!("SIGKILL ends the child");
        }
        ForkResult::Parent { child } => (Child(child), r),
    }
}

/// A forked child, killed when dropped (also when an assertion fails first).
struct Child(Pid);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
        let _ = waitpid(self.0, None);
    }
}

/// Everything the child wrote, once it has ended.
async fn reports(child: Child, r: OwnedFd) -> Vec<u8> {
    tokio::time::timeout(
        LIMIT,
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = read(&r, &mut buf) {
                out.extend_from_slice(&buf[..n]);
            }
            drop(child);
            out
        }),
    )
    .await
    .expect("the child reports in time")
    .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn under_umask_000_no_other_user_ever_connects_to_the_admin_socket() {
    if !as_root() {
        return;
    }
    let dir = open_dir("admin-umask");
    let sock = dir.join("admin.sock");
    let addr = UnixAddr::new(&sock).unwrap();
    umask(Mode::empty());
    // A child as `nobody` connects in a loop while the application starts and closes again
    // and again: a socket file that was ever open to others lets one connect through.
    let (child, r) = as_nobody(|w| loop {
        let Ok(fd) = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        ) else {
            continue;
        };
        if connect(fd.as_raw_fd(), &addr).is_ok() {
            let _ = write(w, b"c");
        }
    });
    for _ in 0..30 {
        // How the file appears: moved in whole, already private. A socket bound at its path
        // would show up as created there (with the umask's mode) and then changed.
        let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
        watch
            .add_watch(
                &dir.path,
                AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_MOVED_TO,
            )
            .unwrap();
        let running = app(&dir).start().await.unwrap();
        let events: Vec<AddWatchFlags> = watch
            .read_events()
            .unwrap()
            .into_iter()
            .filter(|e| e.name.as_deref() == Some(std::ffi::OsStr::new("admin.sock")))
            .map(|e| e.mask)
            .collect();
        assert_eq!(events, [AddWatchFlags::IN_MOVED_TO], "{events:?}");
        assert_eq!(mode(&sock), 0o600, "the admin socket is its owner's only");
        let leftovers: Vec<_> = std::fs::read_dir(&dir.path)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with(".shoal-bind"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        running.handle().close();
        running.wait().await;
    }
    kill(child.0, Signal::SIGKILL).unwrap();
    let got = reports(child, r).await;
    assert_eq!(got.first(), Some(&b'u'), "the child became nobody");
    let connects = got.iter().filter(|&&b| b == b'c').count();
    assert_eq!(
        connects, 0,
        "nobody connected to the admin socket {connects} times"
    );
}

#[tokio::test]
async fn a_connection_from_another_user_is_refused_even_when_the_mode_lets_it_in() {
    if !as_root() {
        return;
    }
    let logs = Logs::default();
    let _guard = logs.install();
    let dir = open_dir("admin-cred");
    let sock = dir.join("admin.sock");
    let running = app(&dir).start().await.unwrap();
    // Someone loosens the mode: the credentials check still holds.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let addr = UnixAddr::new(&sock).unwrap();
    let (child, r) = as_nobody(|w| {
        let Ok(fd) = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        ) else {
            let _ = write(w, b"s");
            return;
        };
        if connect(fd.as_raw_fd(), &addr).is_err() {
            let _ = write(w, b"f");
            return;
        }
        let _ = write(&fd, STATUS_REQUEST);
        let mut buf = [0u8; 1];
        // The server closed the connection without answering: end of file, or a reset
        // because it never read the request.
        let verdict: &[u8] = match read(&fd, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::ECONNRESET) => b"r",
            Ok(_) => b"a",
            Err(_) => b"e",
        };
        let _ = write(w, verdict);
    });
    let got = reports(child, r).await;
    assert_eq!(
        got, b"ur",
        "nobody connected and was refused without an answer (u: became nobody, r: refused)"
    );
    // The refusal is logged, naming who was refused.
    let refused = logs.lines_with("refused an admin connection from another user");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains(&format!("uid={NOBODY}")),
        "{}",
        refused[0]
    );
    // The owner (root here) is still served.
    let client = Client::connect(&format!("unix:{}", sock.display()))
        .await
        .unwrap();
    let status: Status = client.call("shoal.status", &()).await.unwrap();
    assert_eq!(status.name, "admin-test");
    running.handle().close();
    running.wait().await;
}

/// Every action on the admin socket is logged with the caller's uid and pid (the admin
/// server names each connection after its peer's credentials). Needs no root: the caller is
/// this process.
#[tokio::test]
async fn an_admin_action_is_logged_with_the_callers_uid() {
    let logs = Logs::default();
    let _guard = logs.install();
    let dir = Scratch::new("admin-log");
    let sock = dir.join("admin.sock");
    let running = app(&dir).start().await.unwrap();
    let client = Client::connect(&format!("unix:{}", sock.display()))
        .await
        .unwrap();
    let reloaded: bool = client.call("shoal.reload", &()).await.unwrap();
    assert!(reloaded);
    let caller = format!(
        "caller=uid={} pid={}",
        nix::unistd::geteuid(),
        std::process::id()
    );
    let actions = logs.lines_with("admin action");
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(actions[0].contains("method=shoal.reload"), "{}", actions[0]);
    assert!(
        actions[0].contains(&caller),
        "{} lacks {caller}",
        actions[0]
    );
    running.handle().close();
    running.wait().await;
}
