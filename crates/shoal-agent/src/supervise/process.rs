//! A program's processes: starting one in its own session with its output going into FIFOs
//! ([`Outputs`], [`spawn`]), adopting one an earlier agent started ([`Process::adopt`]),
//! noticing its exit through a pidfd, and stopping its whole process group.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use shoal::logging::{RotatingFile, Rotation};
use shoal_pkg::manifest::{Logs, Version};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::capture::{Capture, StreamKey};
use super::launch::Launch;
use super::spawn;
use super::spec::ProgramSpec;
use super::status::Exit;
use super::sys;
use crate::DataDir;

/// The size asked for each FIFO's pipe (the kernel's default is 64 KiB): what a program can
/// write while no agent reads before its writes block. 200 programs ask for 2 x 200 x
/// 128 KiB = 50 MiB of the kernel's default per-user budget of 64 MiB
/// (`/proc/sys/fs/pipe-user-pages-soft`); past the budget the kernel refuses, and the pipe
/// keeps its size.
const PIPE_SIZE: i32 = 128 * 1024;

/// How long a process group is given to die after SIGKILL before the supervisor gives up
/// waiting (a process stuck in the kernel, in state D, outlives it for a while).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Variables of the agent's own environment that a program does not inherit: they tell a
/// process what its parent expects of it (systemd's notify socket and socket activation,
/// shoal's configuration file, handover and worker roles), and they are the agent's.
const NOT_INHERITED: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "SHOAL_CONFIG",
    "SHOAL_HANDOVER_FDS",
    "SHOAL_HANDOVER_READY",
    "SHOAL_HANDOVER_FROM",
    "SHOAL_WORKER",
    "SHOAL_WORKER_OF",
    "SHOAL_RPC_WORKER",
];

/// A program's stdout and stderr: a FIFO each under `run/NAME/`, read by the capture thread
/// into `logs/NAME/stdout.log` and `stderr.log`.
#[derive(Debug)]
pub(crate) struct Outputs {
    pub stdout: Output,
    pub stderr: Output,
}

#[derive(Debug)]
pub(crate) struct Output {
    pub fifo: PathBuf,
    log: RotatingFile,
    key: StreamKey,
}

impl Outputs {
    /// Creates the FIFOs if missing, opens their read ends and the logs, and hands them to
    /// `capture`. A FIFO that a running program writes into (an earlier agent's) is opened
    /// as it is, so what that agent left unread comes next.
    pub fn open(data: &DataDir, spec: &ProgramSpec, capture: &Capture) -> io::Result<Outputs> {
        let run = data.run(&spec.name);
        let logs = data.logs(&spec.name);
        std::fs::create_dir_all(&run).map_err(|e| at(&run, e))?;
        std::fs::create_dir_all(&logs).map_err(|e| at(&logs, e))?;
        let open = |stream: &str| -> io::Result<Output> {
            let fifo = run.join(stream);
            let reader = open_reader(&fifo).map_err(|e| at(&fifo, e))?;
            let path = logs.join(format!("{stream}.log"));
            let log = RotatingFile::open(&path, rotation(&spec.logs)).map_err(|e| at(&path, e))?;
            let key = capture.add(reader, log.clone());
            Ok(Output { fifo, log, key })
        };
        let stdout = open("stdout")?;
        match open("stderr") {
            Ok(stderr) => Ok(Outputs { stdout, stderr }),
            Err(e) => {
                // Closed without waiting for the last bytes: the program never ran.
                drop(capture.remove(stdout.key));
                Err(e)
            }
        }
    }

    pub fn set_logs(&self, logs: &Logs) {
        self.stdout.log.set_rotation(rotation(logs));
        self.stderr.log.set_rotation(rotation(logs));
    }

    /// Copies what is left in the FIFOs into the logs and closes them.
    pub async fn close(self, capture: &Capture) {
        let stdout = capture.remove(self.stdout.key);
        let stderr = capture.remove(self.stderr.key);
        // Err: the capture thread is gone, and the streams with it.
        let _ = stdout.await;
        let _ = stderr.await;
    }
}

fn rotation(logs: &Logs) -> Rotation {
    Rotation {
        max_size: Some(logs.max_size),
        every: None,
        keep: usize::try_from(logs.keep).unwrap_or(usize::MAX),
        compress: true,
    }
}

/// The FIFO at `path` (created, or made again if something else is there), opened
/// read-write and non-blocking for the capture thread. Holding it for writing too means it
/// never reads as closed between two processes of the program.
fn open_reader(path: &Path) -> io::Result<OwnedFd> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => {}
        Ok(_) => {
            std::fs::remove_file(path)?;
            nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)?;
        }
        Err(e) => return Err(e),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)?;
    // The pipe keeps its size when the kernel refuses (over the per-user budget).
    let _ = fcntl(&file, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok(file.into())
}

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Starts `spec`'s program as the leader of a new session, in its version directory, with
/// stdin from /dev/null and stdout and stderr into `outputs`.
pub(crate) fn spawn(spec: &ProgramSpec, data: &DataDir, outputs: &Outputs) -> io::Result<Process> {
    let app_data = data.data(&spec.name);
    std::fs::create_dir_all(&app_data).map_err(|e| at(&app_data, e))?;
    let env = environment(spec, data, &app_data);
    let launch = Launch::new(&spec.program(), &spec.command.args, &env, &spec.dir)?;
    let stdio = spawn::Stdio::new(&outputs.stdout.fifo, &outputs.stderr.fifo)?;
    let pid = launch.start(&stdio).map_err(|e| {
        // The child's chdir fails with the same words as a missing program: say which. Asked
        // only after a failure, so that a start makes no extra lookup.
        if spec.dir.is_dir() {
            e
        } else {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("its directory {} does not exist", spec.dir.display()),
            )
        }
    })?;
    // No one else reaps this child (the agent never waits for "any child"), so the pid stays
    // this process's until `reap`.
    let watched = sys::pidfd_open(pid).and_then(|pidfd| {
        let start_time = sys::stat(pid)?.start_time;
        Ok((sys::watch_pidfd(pidfd)?, start_time))
    });
    match watched {
        Ok((pidfd, start_time)) => Ok(Process {
            pid,
            start_time,
            started_at: SystemTime::now(),
            started: Instant::now(),
            version: spec.version.clone(),
            pidfd,
        }),
        Err(e) => {
            // A process the supervisor cannot watch must not run unsupervised: a restart
            // would start a second one beside it.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(e)
        }
    }
}

/// The agent's own environment without [`NOT_INHERITED`], then the spec's `env`, then the
/// variables that tell a program where it runs (see the module documentation).
fn environment(
    spec: &ProgramSpec,
    data: &DataDir,
    app_data: &Path,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for name in NOT_INHERITED {
        env.remove(OsStr::new(name));
    }
    let mut set = |name: &str, value: &OsStr| {
        env.insert(name.into(), value.to_owned());
    };
    for (name, value) in &spec.env {
        set(name, value.as_ref());
    }
    set("SHOAL_DATA_DIR", data.root().as_os_str());
    set("SHOAL_APP", spec.name.as_str().as_ref());
    set("SHOAL_VERSION", spec.version.to_string().as_ref());
    set("SHOAL_APP_DIR", spec.dir.as_os_str());
    set("SHOAL_APP_DATA", app_data.as_os_str());
    for (name, value) in data.program_env(&spec.name) {
        set(name, value.as_ref());
    }
    env
}

/// What the state database remembers of a running process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub pid: i32,
    pub start_time: u64,
    pub boot_id: String,
    pub started_at: SystemTime,
    pub version: Version,
}

/// A program's main process, which leads its own session and process group (so its pid is
/// also the group's id).
#[derive(Debug)]
pub(crate) struct Process {
    pub pid: Pid,
    /// Clock ticks after boot (`/proc/PID/stat`), which tell this process from a later one
    /// with the same pid.
    pub start_time: u64,
    pub started_at: SystemTime,
    /// For uptime, on the monotonic clock.
    pub started: Instant,
    pub version: Version,
    pidfd: AsyncFd<OwnedFd>,
}

impl Process {
    /// The process `recorded` names, if it still runs: same boot, same pid, same start time.
    pub fn adopt(recorded: &Recorded) -> Option<Process> {
        if recorded.boot_id != sys::boot_id() {
            return None;
        }
        let pid = Pid::from_raw(recorded.pid);
        // Opened first, checked second: if the start time matches after the pidfd exists,
        // the pidfd is of that process (a pid is not reused while its process lives).
        let pidfd = sys::pidfd_open(pid).ok()?;
        if sys::stat(pid).ok()?.start_time != recorded.start_time {
            return None;
        }
        let uptime = SystemTime::now()
            .duration_since(recorded.started_at)
            .unwrap_or_default();
        Some(Process {
            pid,
            start_time: recorded.start_time,
            started_at: recorded.started_at,
            started: Instant::now()
                .checked_sub(uptime)
                .unwrap_or_else(Instant::now),
            version: recorded.version.clone(),
            pidfd: sys::watch_pidfd(pidfd).ok()?,
        })
    }

    pub fn pgid(&self) -> Pid {
        self.pid
    }

    pub fn recorded(&self) -> Recorded {
        Recorded {
            pid: self.pid.as_raw(),
            start_time: self.start_time,
            boot_id: sys::boot_id().to_owned(),
            started_at: self.started_at,
            version: self.version.clone(),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Completes once the main process has exited (the pidfd reads as ready then, and stays
    /// so).
    pub async fn exited(&self) {
        // Err only if the descriptor could not be polled at all: treat as exited rather than
        // wait forever.
        let _ = self.pidfd.readable().await.map(|mut g| g.retain_ready());
    }

    /// How the main process ended, once [`exited`](Process::exited): from `waitid` when it is
    /// this process's child (which also reaps it), [`Exit::Unknown`] when it was adopted.
    pub fn reap(&self) -> Exit {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
        match waitid(Id::PIDFd(self.pidfd.get_ref().as_fd()), flags) {
            Ok(WaitStatus::Exited(_, code)) => Exit::Code(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => Exit::Signal(signal.as_str().to_owned()),
            _ => Exit::Unknown,
        }
    }

    /// Sends `signal` to the main process only.
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        kill(self.pid, signal)
    }

    /// Stops the program: `signal` to the whole group, then, if the main process or any other
    /// member is still alive after `timeout`, SIGKILL to the group. Returns once no process
    /// of the group is left (or, for one stuck in the kernel, after [`KILL_WAIT`] more).
    pub async fn stop(&self, signal: Signal, timeout: Duration) -> Exit {
        let deadline = Instant::now() + timeout;
        signal_group(self.pgid(), signal);
        if tokio::time::timeout_at(deadline, self.exited())
            .await
            .is_err()
        {
            signal_group(self.pgid(), Signal::SIGKILL);
            if tokio::time::timeout(KILL_WAIT, self.exited())
                .await
                .is_err()
            {
                tracing::warn!(pid = %self.pid, "still alive after SIGKILL");
            }
        }
        let exit = self.reap();
        self.clear_group_by(deadline).await;
        exit
    }

    /// After the main process exited by itself: the rest of its group (children it left
    /// behind) is stopped the same way, so a new process never meets the old one's.
    pub async fn clear_group(&self, signal: Signal, timeout: Duration) {
        if sys::group_alive_async(self.pgid()).await {
            tracing::info!(pgid = %self.pgid(), "stopping what the exited process left in its group");
            signal_group(self.pgid(), signal);
            self.clear_group_by(Instant::now() + timeout).await;
        }
    }

    async fn clear_group_by(&self, deadline: Instant) {
        if group_empty_by(self.pgid(), deadline).await {
            return;
        }
        signal_group(self.pgid(), Signal::SIGKILL);
        if !group_empty_by(self.pgid(), Instant::now() + KILL_WAIT).await {
            tracing::warn!(pgid = %self.pgid(), "processes of the group still alive after SIGKILL");
        }
    }
}

fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(%pgid, %signal, error = %e, "cannot signal the process group"),
    }
}

/// Waits until no live process is left in group `pgid`, or `deadline`; true if none is.
async fn group_empty_by(pgid: Pid, deadline: Instant) -> bool {
    // Nothing tells when the last member of a group goes: look, more rarely as time passes.
    let mut pause = Duration::from_millis(2);
    loop {
        if !sys::group_alive_async(pgid).await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
