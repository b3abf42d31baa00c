//! The runtime as a real process, driven the way a supervisor drives it: the example binaries
//! started with a configuration file, then signals (SIGHUP reload, SIGTERM close, a second
//! SIGTERM, SIGUSR2 re-execution with socket handover), the systemd notify socket, exit codes.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{wait_for, Scratch};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal::status::Status;
use shoal::workers::WorkerState;
use shoal::Client;

const LIMIT: Duration = Duration::from_secs(20);

/// The example binary `name`, built beside this test by `cargo test` / `cargo nextest`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first (cargo build -p shoal --examples)",
        path.display()
    );
    path
}

/// A started example whose stderr lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn start(exe: &Path, config: &Path, env: &[(&str, String)]) -> Proc {
        let mut command = Command::new(exe);
        command
            .arg("--config")
            .arg(config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_PID")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
                let _ = tx.send(line);
            }
        });
        Proc { child, lines }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// Waits for a stderr line containing `text`.
    fn expect_line(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line containing {text:?} within {LIMIT:?}"),
            }
        }
    }

    /// Waits for the exit code; inside a (multi-threaded) runtime, without stopping the
    /// tasks that still talk to the process.
    fn exit_code_async(&mut self) -> i32 {
        tokio::task::block_in_place(|| self.exit_code())
    }

    fn expect_line_async(&self, text: &str) -> String {
        tokio::task::block_in_place(|| self.expect_line(text))
    }

    /// Waits for the exit code.
    fn exit_code(&mut self) -> i32 {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exited, not killed");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process did not exit within {LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Ends a process this test did not start itself (a re-executed successor) if the test fails.
struct KillOnDrop(Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status through the admin socket, once it answers.
async fn status(admin: &Path) -> Status {
    let addr = format!("unix:{}", admin.display());
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let last = match Client::connect(&addr).await {
            Ok(client) => match client.call::<_, Status>("shoal.status", &()).await {
                Ok(status) => return status,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never answered shoal.status: {last}",
            admin.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn hello_config(dir: &Scratch, greeting: &str) -> PathBuf {
    let admin = dir.join("admin.sock");
    dir.write(
        "hello.toml",
        &format!(
            "[rpc]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"unix:{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[hello]\ngreeting = \"{greeting}\"\n",
            admin.display()
        ),
    )
}

/// The body of `GET /metrics` from the exporter at `addr` (it closes after one answer).
async fn get_metrics(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(LIMIT, stream.read_to_string(&mut answer))
        .await
        .expect("the exporter answers")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
}

async fn greet(client: &Client, name: &str) -> Result<String, shoal::Error> {
    client.call("greet", &(name,)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_from_outside_and_sigterm_closes_with_exit_0() {
    let dir = Scratch::new("proc-hup");
    let config = hello_config(&dir, "Hello");
    let admin = dir.join("admin.sock");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(LIMIT)).unwrap();
    let mut proc = Proc::start(
        &example("hello"),
        &config,
        &[("NOTIFY_SOCKET", notify_path.display().to_string())],
    );
    let first = status(&admin).await;
    assert_eq!(first.pid, proc.child.id());
    let client = Client::connect(first.rpc_addr.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(greet(&client, "world").await.unwrap(), "Hello, world");
    let next = |notify: &UnixDatagram| {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(&notify), "READY=1");

    hello_config(&dir, "Hi");
    proc.signal(Signal::SIGHUP);
    assert_eq!(next(&notify), "RELOADING=1");
    assert_eq!(next(&notify), "READY=1");
    assert_eq!(greet(&client, "world").await.unwrap(), "Hi, world");

    // An invalid file: the old greeting stays, and status says why.
    dir.write(
        "hello.toml",
        &std::fs::read_to_string(&config)
            .unwrap()
            .replace("greeting = \"Hi\"", "greeting = 42"),
    );
    proc.signal(Signal::SIGHUP);
    assert_eq!(next(&notify), "RELOADING=1");
    assert_eq!(next(&notify), "READY=1");
    let after = status(&admin).await;
    let reload = after.last_reload.unwrap();
    assert!(!reload.ok);
    let why = reload.error.unwrap();
    assert!(
        why.contains("hello.toml") && why.contains("hello.greeting"),
        "{why}"
    );
    assert_eq!(greet(&client, "world").await.unwrap(), "Hi, world");

    proc.signal(Signal::SIGTERM);
    assert_eq!(next(&notify), "STOPPING=1");
    assert_eq!(proc.exit_code_async(), 0);
    assert!(!admin.exists(), "the admin socket is removed at exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_hands_over_to_a_new_binary_without_a_refused_connection_or_a_failed_call() {
    // The new process is the old one's child; once the old one exits it becomes ours, so
    // this test can reap it.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let dir = Scratch::new("proc-usr2");
    let config = hello_config(&dir, "Hello");
    let admin = dir.join("admin.sock");
    let exe = dir.join("hello");
    std::fs::copy(example("hello"), &exe).unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut proc = Proc::start(
        &exe,
        &config,
        &[("NOTIFY_SOCKET", notify_path.display().to_string())],
    );
    // Signal handlers are in place once it says it is ready.
    proc.expect_line_async("ready");
    let first = status(&admin).await;
    let addr = first.rpc_addr.clone().unwrap();
    let metrics = first.metrics_addr.clone().unwrap();

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut loops = Vec::new();
    // Callers on long-lived connections.
    for _ in 0..4 {
        let (ok, failed, stop, addr) = (ok.clone(), failed.clone(), stop.clone(), addr.clone());
        loops.push(tokio::spawn(async move {
            let client = Client::connect(&addr).await.unwrap();
            while !stop.is_cancelled() {
                match greet(&client, "loop").await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("failed call: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // A caller that connects anew for every call: a refused connection would show here.
    {
        let (ok, failed, stop, addr) = (ok.clone(), failed.clone(), stop.clone(), addr.clone());
        loops.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let result = match Client::connect(&addr).await {
                    Ok(client) => greet(&client, "fresh").await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("failed fresh call: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    wait_for("calls before the handover", LIMIT, || {
        (ok.load(Ordering::Relaxed) > 200).then_some(())
    })
    .await;

    // A new build lands at the same path, then SIGUSR2.
    let staged = dir.join("hello.new");
    std::fs::copy(example("hello"), &staged).unwrap();
    std::fs::rename(&staged, &exe).unwrap();
    proc.signal(Signal::SIGUSR2);
    proc.expect_line_async("the new process serves");
    assert_eq!(proc.exit_code_async(), 0, "the old process closes cleanly");
    let second = status(&admin).await;
    let second_guard = KillOnDrop(Pid::from_raw(second.pid as i32));
    assert_ne!(second.pid, first.pid);
    // systemd hears the new main pid, and nothing from the old process once it handed over.
    assert_eq!(
        datagrams(&notify),
        [
            "READY=1".to_string(),
            format!("MAINPID={}\nREADY=1", second.pid)
        ]
    );
    assert_eq!(second.rpc_addr.as_deref(), Some(addr.as_str()));
    // The metrics socket was handed over too: the same port (bound as port 0), now serving
    // the new process's metrics.
    assert_eq!(second.metrics_addr.as_deref(), Some(metrics.as_str()));
    let text = get_metrics(&metrics).await;
    assert!(
        text.contains("shoal_rpc_calls_total{method=\"shoal.status\",outcome=\"ok\"}"),
        "{text}"
    );

    let before = ok.load(Ordering::Relaxed);
    wait_for("calls after the handover", LIMIT, || {
        (ok.load(Ordering::Relaxed) > before + 200).then_some(())
    })
    .await;

    // Once more through the admin method, which answers with the new pid.
    let admin_client = Client::connect(&format!("unix:{}", admin.display()))
        .await
        .unwrap();
    let third: u32 = admin_client
        .call_with(
            &shoal::CallOptions {
                timeout: Some(LIMIT),
                ..Default::default()
            },
            "shoal.restart",
            &(),
        )
        .await
        .unwrap();
    let third_guard = KillOnDrop(Pid::from_raw(third as i32));
    assert_ne!(third, second.pid);
    let old = Pid::from_raw(second.pid as i32);
    let waited = tokio::task::block_in_place(|| nix::sys::wait::waitpid(old, None).unwrap());
    // Reaped: its pid may be reused, so it must not be killed later.
    std::mem::forget(second_guard);
    assert_eq!(waited, nix::sys::wait::WaitStatus::Exited(old, 0));
    assert_eq!(status(&admin).await.pid, third);
    let before = ok.load(Ordering::Relaxed);
    wait_for("calls after the second handover", LIMIT, || {
        (ok.load(Ordering::Relaxed) > before + 200).then_some(())
    })
    .await;
    stop.cancel();
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no call failed");

    assert_eq!(datagrams(&notify), [format!("MAINPID={third}\nREADY=1")]);
    let new = Pid::from_raw(third as i32);
    kill(new, Signal::SIGTERM).unwrap();
    let waited = tokio::task::block_in_place(|| nix::sys::wait::waitpid(new, None).unwrap());
    std::mem::forget(third_guard);
    assert_eq!(
        waited,
        nix::sys::wait::WaitStatus::Exited(new, 0),
        "the new process closes cleanly too"
    );
    assert_eq!(datagrams(&notify), ["STOPPING=1".to_string()]);
    assert!(
        !admin.exists(),
        "the last process removes the admin socket file"
    );
}

/// The notifications received so far.
fn datagrams(socket: &UnixDatagram) -> Vec<String> {
    socket.set_nonblocking(true).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = socket.recv(&mut buf) {
        all.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    all
}

fn lifecycle_config(dir: &Scratch, extra: &str) -> PathBuf {
    dir.write(
        "lifecycle.toml",
        &format!("[worker]\nbeat_every = \"50ms\"\n{extra}\n"),
    )
}

#[test]
fn a_second_close_signal_exits_at_once_with_128_plus_the_signal() {
    let dir = Scratch::new("proc-twice");
    let config = lifecycle_config(&dir, "close_delay = \"60s\"\n[shutdown]\ngrace = \"120s\"");
    let mut proc = Proc::start(&example("lifecycle"), &config, &[]);
    proc.expect_line("ready");
    proc.signal(Signal::SIGTERM);
    proc.expect_line("flushing before close");
    proc.signal(Signal::SIGTERM);
    assert_eq!(proc.exit_code(), 128 + 15);
}

#[test]
fn a_close_past_the_grace_period_exits_3() {
    let dir = Scratch::new("proc-grace");
    let config = lifecycle_config(&dir, "close_delay = \"60s\"\n[shutdown]\ngrace = \"300ms\"");
    let mut proc = Proc::start(&example("lifecycle"), &config, &[]);
    proc.expect_line("ready");
    proc.signal(Signal::SIGINT);
    proc.expect_line("grace period ran out");
    assert_eq!(proc.exit_code(), 3);
}

#[test]
fn a_stuck_app_is_ended_by_the_watchdog_with_exit_4_after_systemd_keepalives() {
    let dir = Scratch::new("proc-watchdog");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(LIMIT)).unwrap();
    let config = lifecycle_config(&dir, "beats = 5\n[watchdog]\ntimeout = \"1s\"");
    let mut proc = Proc::start(
        &example("lifecycle"),
        &config,
        &[
            ("NOTIFY_SOCKET", notify_path.display().to_string()),
            ("WATCHDOG_USEC", "200000".to_string()),
        ],
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while seen.iter().filter(|s: &&String| *s == "WATCHDOG=1").count() < 2 {
        let n = notify.recv(&mut buf).unwrap();
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(seen.contains(&"READY=1".to_string()), "{seen:?}");
    let line = proc.expect_line("no heartbeat for");
    assert!(line.contains("watchdog.timeout is 1s"), "{line}");
    assert_eq!(proc.exit_code(), 4);
}

#[test]
fn command_line_errors_and_check() {
    let dir = Scratch::new("proc-check");
    let good = hello_config(&dir, "Hello");
    let bad = dir.write("bad.toml", "[hello]\ngreeting = 1\n");
    let run = |args: &[&str]| {
        let out = Command::new(example("hello")).args(args).output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&["--check", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("is valid"), "{text}");
    let (code, text) = run(&["--check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("bad.toml") && text.contains("hello.greeting"),
        "{text}"
    );
    let (code, text) = run(&["--frobnicate"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("unknown argument `--frobnicate`"), "{text}");
    let (code, text) = run(&["--version"]);
    assert_eq!(
        (code, text.trim()),
        (0, format!("hello {}", env!("CARGO_PKG_VERSION")).as_str())
    );
}

/// The processes example with `processes` RPC workers and its sweeper group.
fn processes_config(dir: &Scratch, processes: usize) -> PathBuf {
    let admin = dir.join("admin.sock");
    dir.write(
        "processes.toml",
        &format!(
            "[rpc]\nlisten = \"127.0.0.1:0\"\nprocesses = {processes}\n[admin]\nlisten = \"unix:{}\"\n[shutdown]\ngrace = \"5s\"\n[workers]\nsweeper = 2\n",
            admin.display()
        ),
    )
}

/// Waits until every worker of `group` runs, and returns their pids by index.
async fn running_workers(admin: &Path, group: &str, count: usize) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let status = status(admin).await;
        let mut pids: Vec<(usize, u32)> = status
            .workers
            .iter()
            .filter(|w| w.group == group && w.state == WorkerState::Running)
            .filter_map(|w| Some((w.index, w.pid?)))
            .collect();
        if pids.len() == count {
            pids.sort();
            return pids.into_iter().map(|(_, pid)| pid).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the {group} workers are not all running: {:?}",
            status.workers
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_mode_restarts_a_killed_worker_while_calls_keep_succeeding() {
    let dir = Scratch::new("proc-mode");
    let config = processes_config(&dir, 3);
    let admin = dir.join("admin.sock");
    let mut proc = Proc::start(&example("processes"), &config, &[]);
    let master = proc.child.id();
    let first = status(&admin).await;
    assert_eq!(first.pid, master);
    let addr = first.rpc_addr.clone().unwrap();
    let rpc = running_workers(&admin, "rpc", 3).await;
    let sweepers = running_workers(&admin, "sweeper", 2).await;
    for pid in rpc.iter().chain(&sweepers) {
        assert_ne!(*pid, master, "workers run in processes of their own");
        assert!(alive(*pid));
    }

    // Callers on long-lived connections and one that connects for every call, so new
    // connections reach whichever worker accepts them.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let served_by = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut loops = Vec::new();
    for caller in 0..5 {
        let (ok, failed, stop, addr, served_by) = (
            ok.clone(),
            failed.clone(),
            stop.clone(),
            addr.clone(),
            served_by.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut client = Client::connect(&addr).await.unwrap();
            while !stop.is_cancelled() {
                if caller == 4 {
                    client = Client::connect(&addr).await.unwrap();
                }
                match client.call::<_, u32>("whoami", &()).await {
                    Ok(pid) => {
                        served_by.lock().unwrap().insert(pid);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("caller {caller}: failed call: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let calls_past = |n: u64| {
        let ok = ok.clone();
        move || (ok.load(Ordering::Relaxed) >= n).then_some(())
    };
    wait_for("calls before the kill", LIMIT, calls_past(200)).await;

    // A crash: the worker is killed outright, then started again.
    let victim = rpc[1];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let before = ok.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + LIMIT;
    let replacement = loop {
        let now = running_workers(&admin, "rpc", 3).await;
        if now[1] != victim {
            break now[1];
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker 1 never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(alive(replacement));
    wait_for("calls after the restart", LIMIT, calls_past(before + 500)).await;
    // The new worker takes its share of new connections.
    wait_for("a call served by the new worker", LIMIT, || {
        served_by
            .lock()
            .unwrap()
            .contains(&replacement)
            .then_some(())
    })
    .await;
    stop.cancel();
    for l in loops {
        l.await.unwrap();
    }
    // Only a call in flight on the killed worker's connection can fail: at most one per
    // caller; every caller went on succeeding after it.
    let failed = failed.load(Ordering::Relaxed);
    assert!(failed <= 5, "{failed} calls failed");
    let status = status(&admin).await;
    let worker = status
        .workers
        .iter()
        .find(|w| w.group == "rpc" && w.index == 1)
        .unwrap();
    assert_eq!(worker.restarts, 1);
    assert!(
        worker
            .last_exit
            .as_deref()
            .unwrap_or("")
            .contains("SIGKILL"),
        "{worker:?}"
    );
    let error = status.last_error.unwrap();
    assert_eq!(error.origin, "worker rpc[1]");

    // A reload reaches the workers; a close stops every one of them.
    proc.signal(Signal::SIGHUP);
    proc.expect_line_async("configuration reloaded");
    proc.signal(Signal::SIGTERM);
    assert_eq!(proc.exit_code_async(), 0);
    let all: Vec<u32> = rpc
        .iter()
        .chain(&sweepers)
        .copied()
        .filter(|pid| *pid != victim)
        .chain([replacement])
        .collect();
    for pid in all {
        assert!(!alive(pid), "worker {pid} outlived the master");
    }
    assert!(!admin.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_workers_stop_when_the_master_is_killed() {
    // Orphaned workers become this test's children, so it can see them end (and reap them).
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let dir = Scratch::new("proc-orphans");
    let config = processes_config(&dir, 2);
    let admin = dir.join("admin.sock");
    let mut proc = Proc::start(&example("processes"), &config, &[]);
    let rpc = running_workers(&admin, "rpc", 2).await;
    let sweepers = running_workers(&admin, "sweeper", 2).await;
    proc.signal(Signal::SIGKILL);
    let _ = proc.child.wait();
    // The kernel tells each worker (SIGTERM) that its parent died; they close on their own.
    for pid in rpc.into_iter().chain(sweepers) {
        wait_for(&format!("worker {pid} to end"), LIMIT, || {
            use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
            match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => None,
                Ok(WaitStatus::Exited(_, code)) => Some(code),
                other => panic!("worker {pid}: {other:?}"),
            }
        })
        .await;
    }
}

/// Calls `method` on new connections until one lands on worker `pid` and `accept` takes its
/// answer (new connections go to whichever worker accepts first).
async fn on_worker<T: serde::de::DeserializeOwned + Send + 'static>(
    addr: &str,
    method: &str,
    mut accept: impl FnMut(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let client = Client::connect(addr).await.unwrap();
        if let Ok(answer) = client.call::<_, T>(method, &()).await {
            if accept(&answer) {
                return answer;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no worker answered {method} as expected"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_mode_passes_reloads_on_and_closes_in_order_when_the_whole_group_is_signalled() {
    let dir = Scratch::new("proc-mode-close");
    let config = processes_config(&dir, 2);
    let admin = dir.join("admin.sock");
    let mut proc = Proc::start(&example("processes"), &config, &[]);
    let addr = status(&admin).await.rpc_addr.unwrap();
    let rpc = running_workers(&admin, "rpc", 2).await;
    let sweepers = running_workers(&admin, "sweeper", 2).await;

    // Every RPC worker reloads, not only the master.
    proc.signal(Signal::SIGHUP);
    for pid in &rpc {
        on_worker::<Status>(&addr, "shoal.status", |s| {
            s.pid == *pid && s.last_reload.as_ref().is_some_and(|r| r.ok)
        })
        .await;
    }

    // A call in flight on one worker while a service manager stops the whole unit: every
    // process gets SIGTERM, then the master sends its own. The call still completes.
    let client = Client::connect(&addr).await.unwrap();
    let serving: u32 = client.call("whoami", &()).await.unwrap();
    let slow = tokio::spawn(async move { client.call::<_, u32>("slow", &(800u64,)).await });
    on_worker::<(u32, u64)>(&addr, "busy", |(pid, busy)| *pid == serving && *busy == 1).await;
    // Workers first, as a service manager's stop reaches them all at once: signalled after
    // the master, one may already have closed and been reaped.
    for pid in rpc.iter().chain(&sweepers).chain([&proc.child.id()]) {
        kill(Pid::from_raw(*pid as i32), Signal::SIGTERM).unwrap();
    }
    assert_eq!(slow.await.unwrap().unwrap(), serving);
    assert_eq!(proc.exit_code_async(), 0);
    for pid in rpc {
        assert!(!alive(pid));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_to_a_process_mode_master_hands_the_unix_socket_to_new_workers() {
    // The new master is the old one's child; once the old one exits it becomes ours.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let dir = Scratch::new("proc-mode-usr2");
    let rpc_sock = dir.join("rpc.sock");
    let admin = dir.join("admin.sock");
    let config = dir.write(
        "processes.toml",
        &format!(
            "[rpc]\nlisten = \"unix:{}\"\nprocesses = 2\n[admin]\nlisten = \"unix:{}\"\n[workers]\nsweeper = 1\n",
            rpc_sock.display(),
            admin.display()
        ),
    );
    let mut proc = Proc::start(&example("processes"), &config, &[]);
    let old_master = proc.child.id();
    let old_workers = running_workers(&admin, "rpc", 2).await;
    let addr = format!("unix:{}", rpc_sock.display());

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut loops = Vec::new();
    for _ in 0..3 {
        let (ok, failed, stop, addr) = (ok.clone(), failed.clone(), stop.clone(), addr.clone());
        loops.push(tokio::spawn(async move {
            let client = Client::connect(&addr).await.unwrap();
            while !stop.is_cancelled() {
                match client.call::<_, u32>("whoami", &()).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("failed call: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let calls_past = |n: u64| {
        let ok = ok.clone();
        move || (ok.load(Ordering::Relaxed) >= n).then_some(())
    };
    wait_for("calls before the handover", LIMIT, calls_past(100)).await;

    proc.signal(Signal::SIGUSR2);
    // The old master exits 0 once its successor serves and its own workers drained.
    assert_eq!(proc.exit_code_async(), 0);
    let new = status(&admin).await;
    assert_ne!(new.pid, old_master);
    let _new_master = KillOnDrop(Pid::from_raw(new.pid as i32));
    let new_workers = running_workers(&admin, "rpc", 2).await;
    for pid in &old_workers {
        assert!(!new_workers.contains(pid));
        wait_for("an old worker to be gone", LIMIT, || {
            use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
            // Reaped by the old master, or (orphaned) by this test.
            match waitpid(Pid::from_raw(*pid as i32), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => None,
                _ => Some(()),
            }
        })
        .await;
    }
    let before = ok.load(Ordering::Relaxed);
    wait_for("calls after the handover", LIMIT, calls_past(before + 100)).await;
    stop.cancel();
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no call failed");
    // The old workers left the socket file to the new ones.
    assert!(rpc_sock.exists());
    let fresh = Client::connect(&addr).await.unwrap();
    let pid: u32 = fresh.call("whoami", &()).await.unwrap();
    assert!(new_workers.contains(&pid));

    kill(Pid::from_raw(new.pid as i32), Signal::SIGTERM).unwrap();
    wait_for("the new master to exit", LIMIT, || {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        match waitpid(Pid::from_raw(new.pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            Ok(WaitStatus::StillAlive) => None,
            other => panic!("the new master: {other:?}"),
        }
    })
    .await;
    assert!(
        !rpc_sock.exists(),
        "the last master removes the socket file"
    );
}

/// Runs the hello example with `args` to its end, which must come within [`LIMIT`] (a process
/// stuck on a read is killed and fails the test): the exit code and everything it printed.
fn run_bounded(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let mut child = Command::new(example("hello"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hello {args:?} did not end within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn a_fifo_as_configuration_or_log_file_is_refused_at_start_and_check_naming_it() {
    let dir = Scratch::new("proc-fifo");
    let fifo = dir.join("app.toml");
    mkfifo(&fifo);
    for check in [true, false] {
        let mut args: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), fifo.as_os_str()];
        if check {
            args.push("--check".as_ref());
        }
        let (code, text) = run_bounded(&args);
        assert_eq!(code, 2, "{text}");
        assert!(
            text.contains(&format!(
                "{}: is a FIFO, not a regular file",
                fifo.display()
            )),
            "{text}"
        );
    }

    // A file log sink at a FIFO: the start fails naming the key and the path.
    let log_fifo = dir.join("app.log");
    mkfifo(&log_fifo);
    let config = dir.write(
        "sink.toml",
        &format!(
            "[[log.sinks]]\nkind = \"file\"\npath = \"{}\"\n[hello]\ngreeting = \"Hi\"\n",
            log_fifo.display()
        ),
    );
    let (code, text) = run_bounded(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("log.sinks[0].path")
            && text.contains(&format!(
                "{} is a FIFO, not a regular file",
                log_fifo.display()
            )),
        "{text}"
    );
    // `--check` says so too, with the file, the line and the key, rather than passing a
    // configuration the start then refuses.
    let (code, text) = run_bounded(&["--config".as_ref(), config.as_os_str(), "--check".as_ref()]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&format!("{}:3: key `log.sinks[0].path`", config.display()))
            && text.contains(&format!(
                "{} is a FIFO, not a regular file",
                log_fifo.display()
            )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_from_a_fifo_is_rejected_and_the_process_still_closes() {
    let dir = Scratch::new("proc-fifo-reload");
    let config = hello_config(&dir, "Hello");
    let admin = dir.join("admin.sock");
    let mut proc = Proc::start(&example("hello"), &config, &[]);
    status(&admin).await;

    // The configuration file becomes a FIFO nobody writes to.
    std::fs::remove_file(&config).unwrap();
    mkfifo(&config);
    proc.signal(Signal::SIGHUP);
    let line = proc.expect_line_async("reload failed");
    assert!(line.contains("is a FIFO, not a regular file"), "{line}");

    // A file log sink at a FIFO on reload: rejected too, naming the key.
    let log_fifo = dir.join("app.log");
    mkfifo(&log_fifo);
    std::fs::remove_file(&config).unwrap();
    let text = std::fs::read_to_string(hello_config(&dir, "Hi")).unwrap();
    dir.write(
        "hello.toml",
        &format!(
            "{text}[[log.sinks]]\nkind = \"file\"\npath = \"{}\"\n",
            log_fifo.display()
        ),
    );
    proc.signal(Signal::SIGHUP);
    let line = proc.expect_line_async("reload failed");
    assert!(
        line.contains("log.sinks[0].path") && line.contains("is a FIFO"),
        "{line}"
    );
    let after = status(&admin).await;
    assert!(!after.last_reload.unwrap().ok);

    proc.signal(Signal::SIGTERM);
    assert_eq!(proc.exit_code_async(), 0);
}
