//! What the supervision tests share: a data directory of their own, programs written as
//! small `/bin/sh` scripts, specs, waiting on a program's status with a deadline, and a
//! clean-up that kills whatever a failed test left running.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_agent::{DataDir, ProgramSpec, ProgramStatus, State, Supervisor};
use shoal_pkg::manifest::{Command, Health, Logs, Name, Restart, StopSignal};

/// How long any one condition is waited for before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A test's own data directory under the system's temporary directory, removed (with every
/// process started from it) when dropped.
pub struct Env {
    pub root: PathBuf,
    pub data: DataDir,
}

impl Env {
    pub fn new(test: &str) -> Env {
        let root = std::env::temp_dir().join(format!(
            "shoal-agent-{test}-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        let _ = std::fs::remove_dir_all(&root);
        let data = DataDir::create(root.join("data")).unwrap();
        Env { root, data }
    }

    pub fn state(&self) -> State {
        State::open(&self.data.database()).unwrap()
    }

    pub async fn supervisor(&self) -> Supervisor {
        Supervisor::open(self.data.clone(), self.state())
            .await
            .unwrap()
    }

    /// A version directory for `name` holding `run.sh` with `body` after `#!/bin/sh`.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let dir = self.root.join("programs").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    /// `name` running `body` (see [`Env::script`]): restart always, stop by TERM within a
    /// second, no health check.
    pub fn spec(&self, name: &str, body: &str) -> ProgramSpec {
        ProgramSpec {
            name: Name::new(name).unwrap(),
            version: "1.0.0".parse().unwrap(),
            dir: self.script(name, body),
            command: Command {
                program: "./run.sh".into(),
                args: Vec::new(),
            },
            env: BTreeMap::new(),
            stop_signal: StopSignal::Term,
            stop_timeout: Duration::from_secs(1),
            shutdown_delay: Duration::ZERO,
            restart: Restart::Always,
            health: None,
            logs: Logs::default(),
            start_after: Vec::new(),
        }
    }

    /// The active log of `name`'s `stream`, each line's capture time taken off (see
    /// [`unstamp`]).
    pub fn log(&self, name: &str, stream: &str) -> String {
        unstamp(
            &std::fs::read_to_string(self.data.logs(&n(name)).join(format!("{stream}.log")))
                .unwrap_or_default(),
        )
    }
}

/// `text` without the capture time that starts each line (`2026-11-22T11:00:00.123Z `),
/// checking that every line has one.
pub fn unstamp(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (time, rest) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("a line without its capture time: {line:?}"));
        assert!(
            time.len() == 24
                && time.ends_with('Z')
                && chrono::DateTime::parse_from_rfc3339(time).is_ok(),
            "a line without its capture time: {line:?}"
        );
        out.push_str(rest);
    }
    out
}

impl Drop for Env {
    fn drop(&mut self) {
        kill_started_from(self.data.root());
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) % 1_000_000
}

pub fn n(name: &str) -> Name {
    Name::new(name).unwrap()
}

/// A check of `port` on 127.0.0.1 every 100 ms, restarting after `failures`, no grace.
pub fn tcp_health(port: u16, failures: u32) -> Health {
    Health {
        port: Some(port),
        ping: false,
        http: None,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        failures,
        grace: Duration::ZERO,
    }
}

pub fn status_of(supervisor: &Supervisor, name: &str) -> ProgramStatus {
    supervisor
        .status()
        .into_iter()
        .find(|s| s.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} is not registered"))
}

/// Polls `name`'s status until `done` holds, failing the test (with the last status) after
/// [`DEADLINE`].
pub async fn wait_for(
    supervisor: &Supervisor,
    name: &str,
    what: &str,
    mut done: impl FnMut(&ProgramStatus) -> bool,
) -> ProgramStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = status_of(supervisor, name);
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not {what} after {DEADLINE:?}: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `check` until it returns Some, failing the test after [`DEADLINE`].
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "not {what} after {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`eventually`] for a test without a runtime.
pub fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "not {what} after {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The live (not zombie) processes of group `pgid`, from /proc.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            members.push(pid);
        }
    }
    members
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            Some(!rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// SIGKILLs every process whose environment names `data` as its SHOAL_DATA_DIR: whatever a
/// test that failed half-way left running.
pub fn kill_started_from(data: &Path) {
    let marker = format!("SHOAL_DATA_DIR={}", data.display());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ
            .split(|&b| b == 0)
            .any(|var| var == marker.as_bytes())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
