//! Hooks: run as argv in their directory, output logged and quoted in errors, the whole
//! process group killed at the timeout.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Scratch;
use shoal_agent::hooks;
use shoal_pkg::manifest::Command;

fn script(dir: &Path, name: &str, body: &str) -> Command {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let path = dir.join("bin").join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Command {
        program: format!("bin/{name}"),
        args: vec!["one arg; not shell".into()],
    }
}

/// Waits until process `pid` is gone: SIGKILLed with its group, then reaped by init (a zombie
/// counts as gone).
async fn gone(pid: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        if stat.is_empty() || state == Some('Z') {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} still runs: {stat}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_hook_runs_in_its_directory_and_its_failure_quotes_its_output() {
    let dir = Scratch::new("hooks");
    let log = dir.0.join("logs/hooks.log");
    let env = BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]);
    let ok = script(
        &dir.0,
        "ok",
        "echo \"$GREETING from $(pwd): $1\"; touch made",
    );
    hooks::run(
        "the install hook",
        &ok,
        &dir.0,
        &env,
        Duration::from_secs(10),
        &log,
    )
    .await
    .unwrap();
    assert!(dir.0.join("made").is_file());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!("hi from {}: one arg; not shell", dir.0.display())),
        "{logged}"
    );

    let bad = script(
        &dir.0,
        "bad",
        "echo checking; echo 'port 3000 refused' >&2; exit 3",
    );
    let e = hooks::run(
        "the verify hook",
        &bad,
        &dir.0,
        &env,
        Duration::from_secs(10),
        &log,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("the verify hook `bin/bad one arg; not shell` exited with 3"),
        "{e}"
    );
    assert!(e.contains("port 3000 refused"), "{e}");

    let missing = Command {
        program: "bin/none".into(),
        args: vec![],
    };
    let e = hooks::run(
        "the install hook",
        &missing,
        &dir.0,
        &env,
        Duration::from_secs(10),
        &log,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("`bin/none` could not start"), "{e}");
}

#[tokio::test]
async fn a_hook_past_its_timeout_is_killed_with_its_children() {
    let dir = Scratch::new("hooks-timeout");
    let pid_file = dir.0.join("child.pid");
    let slow = script(
        &dir.0,
        "slow",
        &format!("sleep 1000 & echo $! > {}; wait", pid_file.display()),
    );
    let e = hooks::run(
        "the install hook",
        &slow,
        &dir.0,
        &BTreeMap::new(),
        Duration::from_millis(500),
        &dir.0.join("hooks.log"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("did not finish within 500ms"), "{e}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    gone(pid).await;
}

#[tokio::test]
async fn a_hook_is_over_when_its_process_exits_and_leaves_nothing_behind() {
    let dir = Scratch::new("hooks-leftover");
    let pid_file = dir.0.join("child.pid");
    // Exits 0 at once, leaving a background child that holds its output open.
    let quick = script(
        &dir.0,
        "quick",
        &format!("sleep 1000 & echo $! > {}; echo done", pid_file.display()),
    );
    hooks::run(
        "the install hook",
        &quick,
        &dir.0,
        &BTreeMap::new(),
        Duration::from_secs(60),
        &dir.0.join("hooks.log"),
    )
    .await
    .unwrap();
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    gone(pid).await;
}

#[tokio::test]
async fn what_a_hook_left_running_is_found_by_its_environment_and_killed() {
    let dir = Scratch::new("hooks-left-over");
    let root = dir.0.join("data");
    let start = |root: &Path, hook: bool, pid_file: &Path| {
        let mut command = std::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(format!(
                "sleep 1000 & echo $! > {}.tmp; mv {0}.tmp {0}; exec sleep 1000",
                pid_file.display()
            ))
            .env("SHOAL_APP", "web")
            .env("SHOAL_DATA_DIR", root);
        if hook {
            command.env(hooks::HOOK_VAR, "verify");
        }
        command.spawn().unwrap()
    };
    let read_pid = |file: PathBuf| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                return pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{file:?} never written"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let mut hook = start(&root, true, &dir.0.join("hook.pid"));
    // The same app of another agent's data directory, and a program of this one (no hook).
    let mut other = start(&dir.0.join("elsewhere"), true, &dir.0.join("other.pid"));
    let mut program = start(&root, false, &dir.0.join("program.pid"));
    let hook_child = read_pid(dir.0.join("hook.pid")).await;
    let other_child = read_pid(dir.0.join("other.pid")).await;
    let program_child = read_pid(dir.0.join("program.pid")).await;

    let killed = tokio::task::spawn_blocking(move || hooks::kill_left_over(&root, "web"))
        .await
        .unwrap();
    assert_eq!(killed, 2, "the hook and the child it started");
    assert!(hook.wait().unwrap().code().is_none(), "killed by a signal");
    gone(hook_child).await;
    for pid in [
        other.id() as i32,
        other_child,
        program.id() as i32,
        program_child,
    ] {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert!(
            !stat.rsplit(") ").next().unwrap().starts_with('Z'),
            "{stat}"
        );
    }
    for pid in [other_child, program_child] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let _ = (other.kill(), program.kill(), other.wait(), program.wait());
}
