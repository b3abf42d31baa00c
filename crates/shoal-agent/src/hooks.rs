//! Running an install or verify hook: the manifest's program with its arguments (never a
//! shell), inside the version directory, in a process group of its own, its output appended
//! to `logs/NAME/hooks.log` and its tail kept for the error. A hook is over when its own
//! process exits (what it left running in its group is killed then, so a background child
//! holding its output open cannot hold the install) or at its timeout (the whole group is
//! killed). Its environment is the agent's without the variables that address the agent
//! itself, plus what the caller adds.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use shoal_pkg::manifest::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The output kept for an error message.
const TAIL: usize = 2048;

/// Why a hook failed: what ran, how it ended, and the end of its output.
#[derive(Debug, thiserror::Error)]
#[error("{what} `{command}` {how}{}", tail_text(.tail))]
pub struct HookError {
    pub what: String,
    pub command: String,
    pub how: String,
    pub tail: String,
}

fn tail_text(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its output ended with:\n{tail}")
    }
}

/// Variables of the agent's environment a hook does not inherit: they address the agent (its
/// service manager's notifications, sockets handed to it, its own configuration).
const NOT_INHERITED: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "SHOAL_CONFIG",
];

/// Set in a hook's environment to which hook it is (`install`, `verify`), beside `SHOAL_APP`
/// and `SHOAL_DATA_DIR`: what [`kill_left_over`] finds a hook and its children by.
pub const HOOK_VAR: &str = "SHOAL_HOOK";

/// How long [`kill_left_over`] waits for the processes it killed to be gone.
const AFTER_KILL: Duration = Duration::from_secs(2);

/// How long output already written is still read after the hook's process exits.
const DRAIN: Duration = Duration::from_millis(200);

/// Runs `command` in `dir` with `env` added, appending its output to `log`; `what` names it
/// in errors ("the install hook of web 1.2.0").
pub async fn run(
    what: &str,
    command: &Command,
    dir: &Path,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    log: &Path,
) -> Result<(), HookError> {
    let fail = |how: String, tail: String| HookError {
        what: what.to_owned(),
        command: command.to_string(),
        how,
        tail,
    };
    if let Some(parent) = log.parent() {
        let _ = tokio::fs::create_dir_all(parent).await;
    }
    let mut spawn = tokio::process::Command::new(command.program_in(dir));
    for name in NOT_INHERITED {
        spawn.env_remove(name);
    }
    let mut child = spawn
        .args(&command.args)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}"), String::new()))?;
    let pgid = child.id().map(|id| nix::unistd::Pid::from_raw(id as i32));
    let mut log_file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await
        .ok();
    if let Some(file) = log_file.as_mut() {
        let _ = file
            .write_all(format!("--- {what}: {command}\n").as_bytes())
            .await;
    }
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let mut tail: Vec<u8> = Vec::new();
    let collect = async {
        let (mut out_buf, mut err_buf) = ([0u8; 4096], [0u8; 4096]);
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            let chunk = tokio::select! {
                n = stdout.read(&mut out_buf), if out_open => match n {
                    Ok(0) | Err(_) => { out_open = false; continue }
                    Ok(n) => &out_buf[..n],
                },
                n = stderr.read(&mut err_buf), if err_open => match n {
                    Ok(0) | Err(_) => { err_open = false; continue }
                    Ok(n) => &err_buf[..n],
                },
            };
            if let Some(file) = log_file.as_mut() {
                let _ = file.write_all(chunk).await;
            }
            tail.extend_from_slice(chunk);
            if tail.len() > TAIL {
                tail.drain(..tail.len() - TAIL);
            }
        }
    };
    let run = async {
        tokio::pin!(collect);
        tokio::select! {
            () = &mut collect => child.wait().await,
            status = child.wait() => {
                // Over when its own process is: output still open belongs to something it
                // left running, read only what is already there.
                let _ = tokio::time::timeout(DRAIN, &mut collect).await;
                status
            }
        }
    };
    let ended = tokio::time::timeout(timeout, run).await;
    // Nothing of a hook outlives it.
    if let Some(pgid) = pgid {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    }
    let tail_string = |tail: &[u8]| String::from_utf8_lossy(tail).trim_end().to_owned();
    match ended {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(fail(
            match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(code), _) => format!("exited with {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                _ => format!("ended: {status}"),
            },
            tail_string(&tail),
        )),
        Ok(Err(e)) => Err(fail(
            format!("could not be waited for: {e}"),
            tail_string(&tail),
        )),
        Err(_) => Err(fail(
            format!(
                "did not finish within {}",
                humantime::format_duration(timeout)
            ),
            tail_string(&tail),
        )),
    }
}

/// Kills every process left from a hook of `app` run by the agent of data directory `root`
/// (an agent killed while the hook ran): each process whose environment has [`HOOK_VAR`],
/// `SHOAL_APP=app` and `SHOAL_DATA_DIR=root`, which a hook's children inherit too. Found by
/// environment rather than by a pid written down when the hook started, because the agent
/// can die between the hook's start and that write. Blocking (reads `/proc`); waits up to
/// [`AFTER_KILL`] for them to be gone and returns how many it killed.
pub fn kill_left_over(root: &Path, app: &str) -> usize {
    let want = [
        format!("SHOAL_APP={app}"),
        format!("SHOAL_DATA_DIR={}", root.display()),
    ];
    let marked = |pid: i32| {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return false;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let has = |var: &[u8]| vars.contains(&var);
        let hook = vars
            .iter()
            .any(|v| v.starts_with(format!("{HOOK_VAR}=").as_bytes()));
        hook && want.iter().all(|w| has(w.as_bytes()))
    };
    let killed: Vec<i32> = processes().filter(|pid| marked(*pid)).collect();
    for pid in &killed {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if !killed.is_empty() {
        tracing::warn!(app, count = killed.len(), "killed what a hook left running");
    }
    let deadline = std::time::Instant::now() + AFTER_KILL;
    while killed.iter().any(|pid| running(*pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.len()
}

/// The pids in `/proc`.
fn processes() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
}

/// Whether `pid` exists and is not a zombie (a killed process whose new parent has not
/// reaped it yet is over all the same).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(") ")
            .next()
            .is_some_and(|rest| !rest.starts_with('Z'))
    })
}
