//! One run of a crontab job: the program started in its own process group with stdout and
//! stderr on one pipe, watched until it exits, times out or is cancelled, and its whole group
//! stopped (SIGTERM, then SIGKILL) so that nothing it started outlives the run.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use crate::supervise::sys;

/// What to start.
#[derive(Debug)]
pub(super) struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The working directory: the package's version directory.
    pub dir: PathBuf,
    /// Added to the agent's environment.
    pub env: Vec<(&'static str, OsString)>,
}

/// A started run.
#[derive(Debug)]
pub(super) struct Spawned {
    child: Child,
    /// The process group, whose id is the job's process id.
    pub pgid: Pid,
    /// The leader's start time in `/proc/PID/stat`, to recognise the group after a crash.
    pub start_time: Option<u64>,
    output: pipe::Receiver,
}

/// How the run's own process ended, before its group was cleaned up.
#[derive(Debug)]
pub(super) enum End {
    Exited(ExitStatus),
    TimedOut,
    Cancelled,
    /// Waiting for the process failed; it is treated as gone and its group is stopped.
    Lost(io::Error),
}

/// What a finished run leaves.
#[derive(Debug)]
pub(super) struct Ended {
    pub end: End,
    pub output: String,
    pub duration: Duration,
}

/// Bounds on a run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub timeout: Duration,
    pub kill_grace: Duration,
    pub output_tail: usize,
}

/// Once a group was sent SIGKILL, how long to wait for it to be gone: a member can linger as
/// a zombie when its new parent does not reap it, and then waiting longer changes nothing.
const AFTER_KILL: Duration = Duration::from_secs(2);
/// How often a group is looked at while it is being stopped.
const POLL: Duration = Duration::from_millis(20);
/// After the group is gone, how long the rest of the output may take. A process that left
/// the group (with `setsid`) may hold the pipe open; its output is not waited for.
const DRAIN: Duration = Duration::from_secs(1);

/// Starts `spec` in a new process group, stdin from `/dev/null`, stdout and stderr into one
/// pipe. Must be called inside a tokio runtime.
pub(super) fn spawn(spec: &Spec) -> io::Result<Spawned> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let output = pipe::Receiver::from_owned_fd(read)?;
    let stderr = write.try_clone()?;
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.dir)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    let child = command.spawn();
    // The command holds the pipe's write end; dropping it leaves the job's processes the only
    // writers, so the pipe ends when they do.
    drop(command);
    let child = child?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| io::Error::other("the started process has no id"))?;
    Ok(Spawned {
        child,
        pgid: Pid::from_raw(pid),
        start_time: sys::stat(Pid::from_raw(pid)).ok().map(|s| s.start_time),
        output,
    })
}

/// Watches a started run to its end: its process exits, `limits.timeout` passes or `cancel`
/// fires. Then whatever is left of its process group is stopped (SIGTERM, SIGKILL after
/// `limits.kill_grace`), reading output all along; the tail of it is kept.
pub(super) async fn watch(mut run: Spawned, limits: Limits, cancel: CancellationToken) -> Ended {
    let started = Instant::now();
    let mut tail = Tail::new(limits.output_tail);
    let mut reader = Some(run.output);
    let mut buf = vec![0; 8192];
    let deadline = sleep(limits.timeout);
    tokio::pin!(deadline);
    let end = loop {
        tokio::select! {
            status = run.child.wait() => break match status {
                Ok(status) => End::Exited(status),
                Err(e) => End::Lost(e),
            },
            () = &mut deadline => break End::TimedOut,
            () = cancel.cancelled() => break End::Cancelled,
            read = read_some(&mut reader, &mut buf) => tail.take(read, &buf, &mut reader),
        }
    };

    // A job that exited may have left processes behind in its group; they go too.
    {
        let stop = stop_group(run.pgid, Some(&mut run.child), limits.kill_grace);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                read = read_some(&mut reader, &mut buf) => tail.take(read, &buf, &mut reader),
            }
        }
    }
    let drain = async {
        while reader.is_some() {
            let read = read_some(&mut reader, &mut buf).await;
            tail.take(read, &buf, &mut reader);
        }
    };
    let _ = tokio::time::timeout(DRAIN, drain).await;
    // Reaped by now, unless the group outlived SIGKILL; then this is the last look.
    let _ = run.child.try_wait();

    Ended {
        end,
        output: tail.into_string(),
        duration: started.elapsed(),
    }
}

/// Stops the process group `pgid` if anything is left in it: SIGTERM, then SIGKILL after
/// `grace`. `leader`, the job's process when this agent started it, is reaped as it dies so
/// that its zombie does not keep the group alive.
pub(super) async fn stop_group(pgid: Pid, mut leader: Option<&mut Child>, grace: Duration) {
    if !signal_group(pgid, Signal::SIGTERM) {
        return;
    }
    if wait_group(pgid, leader.as_deref_mut(), grace).await {
        return;
    }
    if signal_group(pgid, Signal::SIGKILL) {
        tracing::debug!(pgid = pgid.as_raw(), "cron job's process group killed");
        wait_group(pgid, leader, AFTER_KILL).await;
    }
}

/// Whether the process group at `pgid` is the one a run started, whose leader started at
/// `start_time`, as far as `/proc` tells: its leader is alive with that start time, or its
/// leader is gone (then no other group can have that id while any member of it lives, since
/// the kernel does not reuse an id that is still a group's). Without a start time there is
/// nothing to check against, and the answer is no.
pub(super) fn is_ours(pgid: i32, start_time: Option<u64>) -> bool {
    let Some(start_time) = start_time else {
        return false;
    };
    match sys::stat(Pid::from_raw(pgid)) {
        Ok(stat) => stat.pgrp == pgid && stat.start_time == start_time,
        Err(_) => true,
    }
}

/// Sends `signal` to the group; false when the group no longer exists.
fn signal_group(pgid: Pid, signal: Signal) -> bool {
    !matches!(killpg(pgid, signal), Err(Errno::ESRCH))
}

/// Waits up to `within` for the group to be empty; true if it is.
async fn wait_group(pgid: Pid, mut leader: Option<&mut Child>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if let Some(child) = leader.as_deref_mut() {
            let _ = child.try_wait();
        }
        if matches!(killpg(pgid, None), Err(Errno::ESRCH)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
}

/// A read from the output pipe, or never once the pipe is done.
async fn read_some(reader: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> io::Result<usize> {
    match reader {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// The last `cap` bytes of output.
struct Tail {
    bytes: VecDeque<u8>,
    cap: usize,
    cut: bool,
}

impl Tail {
    fn new(cap: usize) -> Tail {
        Tail {
            bytes: VecDeque::with_capacity(cap.min(64 * 1024)),
            cap,
            cut: false,
        }
    }

    /// Keeps what a read gave; a read of nothing or a failed one ends the pipe.
    fn take(&mut self, read: io::Result<usize>, buf: &[u8], reader: &mut Option<pipe::Receiver>) {
        match read {
            Ok(n) if n > 0 => self.push(&buf[..n]),
            _ => *reader = None,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.cap {
            self.cut = true;
            self.bytes.clear();
            &data[data.len() - self.cap..]
        } else {
            data
        };
        self.bytes.extend(data);
        let excess = self.bytes.len().saturating_sub(self.cap);
        if excess > 0 {
            self.cut = true;
            self.bytes.drain(..excess);
        }
    }

    /// As text; a character cut in two at the start is dropped rather than shown as `�`.
    fn into_string(self) -> String {
        let bytes: Vec<u8> = self.bytes.into();
        let start = if self.cut {
            bytes
                .iter()
                .take(3)
                .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
                .count()
        } else {
            0
        };
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_and_whole_characters() {
        let check = |cap: usize, pushes: &[&[u8]], expected: &str| {
            let mut tail = Tail::new(cap);
            for p in pushes {
                tail.push(p);
            }
            assert_eq!(tail.into_string(), expected, "cap {cap}, {pushes:?}");
        };
        check(8, &[b"hello"], "hello");
        check(4, &[b"hello"], "ello");
        check(4, &[b"he", b"llo", b"!"], "llo!");
        check(4, &["aé€".as_bytes()], "€");
        check(5, &["aé€".as_bytes()], "é€");
        check(4, &[b"ab\xff"], "ab\u{fffd}");
    }
}
