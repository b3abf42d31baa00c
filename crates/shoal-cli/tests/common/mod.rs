//! What the end-to-end tests of the `shoal` binary share: scratch directories, running it,
//! a `shoal agent` that leaves nothing behind when a test fails, waiting on a condition, and
//! finding what still runs under a directory; [`fleet`], a center and agents joined to it.

#![allow(dead_code)]

pub mod fleet;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// Generous: an agent installs, starts and health-checks packages on a shared machine.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A scratch directory (canonical, as the paths in `/proc` are); when dropped, whatever runs
/// under it is killed and it is removed.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("shoal-cli-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path.canonicalize().unwrap())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        kill_under(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a command wrote, standard output then standard error.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `shoal ARGS --data-dir DATA`.
pub fn shoal(data: &Path, args: &[&str]) -> Output {
    Command::new(SHOAL)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

/// As [`shoal`], which must succeed; its standard output.
pub fn shoal_ok(data: &Path, args: &[&str]) -> String {
    let out = shoal(data, args);
    assert!(out.status.success(), "shoal {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `shoal pkg build PKG -o OUT`, which must succeed.
pub fn pkg_build(pkg: &Path, out: &Path) {
    let built = Command::new(SHOAL)
        .args(["pkg", "build"])
        .arg(pkg)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "shoal pkg build {}: {}",
        pkg.display(),
        text(&built)
    );
}

/// What an agent does with its programs when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtExit {
    /// `shoal agent`: they go on, for the next agent to adopt.
    KeepRunning,
    /// `shoal agent --stop-on-exit`.
    Stop,
}

/// A running `shoal agent`; when dropped, it and everything under its data directory are
/// killed, so a failed test leaves nothing running.
pub struct Agent {
    pub child: Child,
    pub data: PathBuf,
}

impl Agent {
    /// `shoal agent --data-dir DATA`, once it answers.
    pub fn start(data: &Path) -> Agent {
        Agent::start_with(data, AtExit::KeepRunning)
    }

    pub fn start_with(data: &Path, at_exit: AtExit) -> Agent {
        let agent = Agent::launch(data, at_exit);
        wait_for("the agent to answer", || {
            shoal(data, &["ps"]).status.success().then_some(())
        });
        agent
    }

    /// `shoal agent --data-dir DATA`, spawned: not waited for.
    pub fn launch(data: &Path, at_exit: AtExit) -> Agent {
        let mut command = Command::new(SHOAL);
        command.arg("agent");
        if at_exit == AtExit::Stop {
            command.arg("--stop-on-exit");
        }
        let child = command
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent {
            child,
            data: data.to_owned(),
        }
    }

    /// SIGKILL to the agent alone: its programs go on.
    pub fn kill9(self) {
        let mut me = std::mem::ManuallyDrop::new(self);
        me.child.kill().unwrap();
        me.child.wait().unwrap();
    }

    /// SIGTERM: the agent ends, successfully, within [`LIMIT`]. What runs under its data
    /// directory then (its programs, unless it stops them at exit), found before the cleanup
    /// of a failed test kills it.
    pub fn stop(mut self) -> Vec<(i32, String)> {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let status = wait_for("the agent to exit", || self.child.try_wait().unwrap());
        assert!(status.success(), "the agent exited with {status}");
        let left = under(&self.data);
        std::mem::forget(self);
        left
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_under(&self.data);
    }
}

/// Polls `check` until it returns `Some`, or panics after [`LIMIT`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    wait_showing(what, || check().ok_or_else(|| "not yet".to_owned()))
}

/// As [`wait_for`], with `check` saying what it found instead, for the panic to show.
pub fn wait_showing<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        let seen = match check() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last seen: {seen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The live processes whose working directory or command line is under `dir`, as (pid,
/// command line); zombies have neither, so they do not count.
pub fn under(dir: &Path) -> Vec<(i32, String)> {
    let text = dir.to_str().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let cwd = std::fs::read_link(entry.path().join("cwd"));
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cwd.is_ok_and(|cwd| cwd.starts_with(dir)) || cmdline.contains(text) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// SIGKILL to every process under `dir` and its process group: the cleanup of a failed test.
pub fn kill_under(dir: &Path) {
    for (pid, _) in under(dir) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
