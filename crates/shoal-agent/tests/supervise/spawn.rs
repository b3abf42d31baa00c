//! What a started program inherits from the agent, read from outside through `/proc`: its own
//! session and no terminal, its three stdio and no other descriptor, no blocked or ignored
//! signal, its directory and environment; how its command is found and executed; and the
//! agent's descriptor table, sized for its programs before they start.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{SigSet, Signal};
use shoal_agent::supervise::Exit;
use shoal_pkg::manifest::Restart;

use crate::common::{eventually, n, wait_for, Env};

#[tokio::test]
async fn a_program_leads_its_own_session_with_its_stdio_only_and_no_signal_held() {
    let env = Env::new("spawn-inherit");
    // What the program must not get: a descriptor of the agent's without close-on-exec, a
    // blocked signal in the thread that starts it (this runtime's only thread), an ignored
    // signal (Rust's runtime ignores SIGPIPE), and a variable addressed to the agent.
    let open = File::open("/dev/zero").unwrap();
    fcntl(&open, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    let blocked = SigSet::from(Signal::SIGUSR2);
    blocked.thread_block().unwrap();
    assert_ne!(
        signal_mask(
            &std::fs::read_to_string("/proc/thread-self/status").unwrap(),
            "SigIgn:"
        ),
        0
    );
    std::env::set_var("NOTIFY_SOCKET", "/run/systemd/notify");

    let supervisor = env.supervisor().await;
    let mut spec = env.spec("inherit", "exec sleep 600");
    spec.env.insert("GREETING".into(), "hello".into());
    let dir = spec.dir.clone();
    supervisor.add(spec).await.unwrap();
    supervisor.start(&n("inherit")).await.unwrap();
    blocked.thread_unblock().unwrap();
    std::env::remove_var("NOTIFY_SOCKET");
    let status = wait_for(&supervisor, "inherit", "running", |s| s.pid.is_some()).await;
    let pid = status.pid.unwrap();
    let proc = PathBuf::from(format!("/proc/{pid}"));
    eventually("sleep executed", || {
        let comm = std::fs::read_to_string(proc.join("comm")).ok()?;
        (comm.trim() == "sleep").then_some(())
    })
    .await;

    let stat = std::fs::read_to_string(proc.join("stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    // proc(5) fields 5, 6, 7: process group, session, controlling terminal.
    assert_eq!(fields[2], pid.to_string(), "process group: {stat}");
    assert_eq!(fields[3], pid.to_string(), "session: {stat}");
    assert_eq!(fields[4], "0", "controlling terminal: {stat}");
    assert_eq!(status.pgid, Some(pid));

    // Until the program has settled: just after the exec, its dynamic loader holds a
    // descriptor of its own for a moment (the library it is mapping). One the agent leaked
    // would stay.
    let stdio = BTreeSet::from(["0", "1", "2"].map(String::from));
    eventually("the program holding only its stdio (fds 0, 1, 2)", || {
        let fds: BTreeSet<String> = std::fs::read_dir(proc.join("fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        (fds == stdio).then_some(())
    })
    .await;
    let target = |fd: &str| std::fs::read_link(proc.join("fd").join(fd)).unwrap();
    let run = env.data.run(&n("inherit"));
    assert_eq!(target("0"), PathBuf::from("/dev/null"));
    assert_eq!(target("1"), run.join("stdout"));
    assert_eq!(target("2"), run.join("stderr"));
    assert!(open.as_raw_fd() > 2);

    let proc_status = std::fs::read_to_string(proc.join("status")).unwrap();
    assert_eq!(signal_mask(&proc_status, "SigBlk:"), 0, "{proc_status}");
    assert_eq!(signal_mask(&proc_status, "SigIgn:"), 0, "{proc_status}");
    assert_eq!(std::fs::read_link(proc.join("cwd")).unwrap(), dir);

    let environ = std::fs::read(proc.join("environ")).unwrap();
    let vars: BTreeSet<&[u8]> = environ.split(|&b| b == 0).collect();
    assert!(vars.contains(&b"GREETING=hello"[..]));
    assert!(vars.contains(&b"SHOAL_APP=inherit"[..]));
    assert!(!vars.iter().any(|v| v.starts_with(b"NOTIFY_SOCKET=")));
    supervisor.shutdown().await;
}

#[tokio::test]
async fn a_bare_name_is_found_on_the_programs_path_and_a_file_without_interpreter_runs_in_sh() {
    let env = Env::new("spawn-path");
    let supervisor = env.supervisor().await;
    let mut spec = env.spec("tool", "exit 0");
    let bin = spec.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // No `#!` line: the kernel cannot execute it, /bin/sh runs it.
    let tool = bin.join("shoal-test-tool");
    std::fs::write(&tool, "echo \"tool $1 in $PWD\"\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    spec.command.program = "shoal-test-tool".into();
    spec.command.args = vec!["x".into()];
    spec.env.insert(
        "PATH".into(),
        format!("/nonexistent:{}:/usr/bin:/bin", bin.display()),
    );
    spec.restart = Restart::Never;
    let dir = spec.dir.clone();
    supervisor.add(spec).await.unwrap();
    supervisor.start(&n("tool")).await.unwrap();
    let status = wait_for(&supervisor, "tool", "exited", |s| s.last_exit.is_some()).await;
    assert_eq!(status.last_exit, Some(Exit::Code(0)), "{status:#?}");
    let expected = format!("tool x in {}\n", dir.display());
    eventually("the tool's line logged", || {
        (env.log("tool", "stdout") == expected).then_some(())
    })
    .await;
    supervisor.shutdown().await;
}

/// The hexadecimal signal set on line `key` of a `/proc/PID/status`.
fn signal_mask(status: &str, key: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// The table is sized for five descriptors a program and 64 of the agent's own, from the
/// programs' directories under `run/`, within the open-file limit: `/proc` shows its size.
#[test]
fn the_descriptor_table_is_sized_for_the_programs_of_the_data_directory() {
    let env = Env::new("spawn-fdtable");
    for i in 0..300 {
        std::fs::create_dir(env.data.runs().join(format!("p{i:03}"))).unwrap();
    }
    // A file beside them is no program.
    std::fs::write(env.data.runs().join("supervise.lock"), "").unwrap();
    let (limit, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let wanted = (64 + 5 * 300).min(usize::try_from(limit).unwrap_or(usize::MAX));
    let room = shoal_agent::supervise::size_descriptor_table(&env.data).unwrap();
    assert_eq!(room, wanted);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let size: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("FDSize:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(size >= wanted, "FDSize {size}, wanted {wanted}");
}
