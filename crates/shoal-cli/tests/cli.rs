//! The `shoal` binary end to end: `bench serve` as a real process on loopback and on a Unix
//! socket, `shoal call` against it (results, errors, exit codes), `bench run --json`,
//! `shoal monitor` subscribed to an application publishing in this process, and `shoal idl
//! python` writing a client module or refusing a bad IDL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// A `shoal bench serve` child, killed when dropped.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(listen: &str) -> Serve {
        let mut child = Command::new(SHOAL)
            .args(["bench", "serve", "--listen", listen, "--threads", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shoal bench serve");
        let mut line = String::new();
        // Blocks until the server prints its address (it does so once it is bound).
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Serve { child, addr }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shoal(args: &[&str]) -> Output {
    let started = Instant::now();
    let out = Command::new(SHOAL).args(args).output().expect("run shoal");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shoal {args:?} took too long"
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn call_prints_results_and_errors_as_json_with_exit_codes() {
    let serve = Serve::start("127.0.0.1:0");
    let addr = serve.addr.as_str();

    let out = shoal(&["call", addr, "echo", r#"{"a":[1,"two",null]}"#]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), r#"{"a":[1,"two",null]}"#);

    let out = shoal(&["call", addr, "sleep_echo", "0", "\"x\""]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "\"x\"".to_owned())
    );

    // The server's error, printed as JSON, exit code 1.
    let out = shoal(&["call", addr, "no_such_method"]);
    assert_eq!(out.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(err["error"]["code"], 1);

    // A deadline that passes: exit code 2 and the reason on stderr.
    let out = shoal(&["call", "--timeout", "50ms", addr, "sleep_echo", "2000", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("deadline exceeded"));

    // A notification: nothing printed, success.
    let out = shoal(&["call", "--notify", addr, "sink", "1"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(0), String::new()));

    // Arguments that are not JSON are named, and nothing is sent.
    let out = shoal(&["call", addr, "echo", "hello"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("argument 1 (hello) is not JSON"),
        "{stderr}"
    );

    // Nobody listening: a clear refusal, exit code 2.
    let out = shoal(&["call", "127.0.0.1:1", "echo", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// `--timeout` bounds the whole call, the hello included: against a server that accepts
/// the connection and never answers anything, `shoal call` ends with an error naming the
/// deadline, not a hang or a later failure.
#[test]
fn call_against_a_server_that_never_answers_ends_with_a_deadline_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let mute = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        // Reads nothing and writes nothing until the test is done with it.
        let _ = wait.recv();
        drop(conn);
    });
    let out = shoal(&["call", "--timeout", "1s", &addr, "echo", "1"]);
    done.send(()).unwrap();
    // Should the call not have connected at all, this lets the thread's accept return.
    let _ = std::net::TcpStream::connect(&addr);
    mute.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("deadline exceeded"), "{stderr}");
    assert!(stderr.contains("within --timeout 1s"), "{stderr}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn unix_socket_addresses_work_for_serve_and_call() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listen = format!("unix:{}", dir.join("echo.sock").display());
    let serve = Serve::start(&listen);
    assert_eq!(serve.addr, listen);
    let out = shoal(&["call", &serve.addr, "echo", "[1,2]"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "[1,2]".to_owned())
    );
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_run_reports_json() {
    let serve = Serve::start("127.0.0.1:0");
    let modes: [&[&str]; 4] = [
        &[],
        &["--notify"],
        &["--pipeline"],
        &["--pipeline", "--notify"],
    ];
    for extra in modes {
        let mut args = vec![
            "bench",
            "run",
            "--addr",
            &serve.addr,
            "--connections",
            "2",
            "--in-flight",
            "4",
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = shoal(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert!(report["rps"].as_f64().unwrap() > 0.0, "{report}");
        assert!(report["p50_us"].as_f64().unwrap() > 0.0, "{report}");
        assert!(report["p99_us"].as_f64().unwrap() >= report["p50_us"].as_f64().unwrap());
        assert_eq!(report["errors"], 0);
        assert_eq!(
            report["pipeline"],
            extra.contains(&"--pipeline"),
            "{report}"
        );
        if extra.contains(&"--pipeline") {
            // Every call of a pipeline counts with it: 4 calls, or 4 batches of 64
            // notifications, each time.
            let per_pipeline = if extra.contains(&"--notify") {
                4 * 64
            } else {
                4
            };
            assert_eq!(
                report["calls"].as_u64().unwrap() % per_pipeline,
                0,
                "{report}"
            );
        }
    }
}

#[test]
fn config_explain_shows_sources_and_rejects_bad_files() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hello.toml");
    let explain = |text: &str| {
        std::fs::write(&file, text).unwrap();
        // Only the variables given here: the test's own environment must not leak in.
        Command::new(SHOAL)
            .args(["config", "explain"])
            .arg(&file)
            .env_clear()
            .env("SHOAL_HELLO__GREETING", "Hi")
            .env("SHOAL_DATA_DIR", "/not/an/override")
            .output()
            .expect("run shoal config explain")
    };

    let out = explain(
        "[rpc]\nlisten = \"127.0.0.1:7000\"\nmax_connections = 16\n\n[db]\npassword = \"hunter2\"\n",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let at = format!("(file {}", file.display());
    assert_eq!(
        line("rpc.listen"),
        format!("rpc.listen = \"127.0.0.1:7000\" {at}, line 2)")
    );
    assert_eq!(
        line("db.password"),
        format!("db.password = \"<redacted>\" {at}, line 6)")
    );
    // The server's limits, set or at their defaults.
    assert_eq!(
        line("rpc.max_connections"),
        format!("rpc.max_connections = 16 {at}, line 3)")
    );
    assert_eq!(
        line("rpc.stall_timeout"),
        "rpc.stall_timeout = \"30s\" (default)"
    );
    assert_eq!(line("rpc.max_unsent"), "rpc.max_unsent = 4194304 (default)");
    assert_eq!(
        line("hello.greeting"),
        "hello.greeting = \"Hi\" (environment SHOAL_HELLO__GREETING)"
    );
    assert_eq!(line("shutdown.grace"), "shutdown.grace = \"10s\" (default)");
    assert!(!text.contains("hunter2"), "{text}");
    // The source column lines up.
    let columns: Vec<usize> = text.lines().map(|l| l.find("  (").unwrap()).collect();
    assert!(columns.windows(2).all(|w| w[0] == w[1]), "{text}");

    let out = explain("[rpc]\nlisten = \"nowhere\"\n");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:2: key `rpc.listen`: expected host:port or unix:PATH, got \"nowhere\"",
        file.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");

    // Several files, in order: the later one wins, and each value names its file.
    std::fs::write(&file, "[hello]\nname = \"base\"\nport = 1\n").unwrap();
    let local = dir.join("local.toml");
    std::fs::write(&local, "[hello]\nport = 2\n").unwrap();
    let out = Command::new(SHOAL)
        .args(["config", "explain"])
        .arg(&file)
        .arg(&local)
        .env_clear()
        .output()
        .expect("run shoal config explain");
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let port = format!("hello.port = 2 (file {}, line 2)", local.display());
    let name = format!("hello.name = \"base\" (file {}, line 2)", file.display());
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(lines.contains(&port) && lines.contains(&name), "{text}");

    let _ = std::fs::remove_dir_all(&dir);
}

/// An application publishing its monitor feed every 100 ms, run in this process on a runtime
/// of its own while the test runs `shoal monitor` against it; closed when dropped.
struct Publishing {
    rt: tokio::runtime::Runtime,
    running: Option<shoal::Running>,
    addr: String,
}

impl Publishing {
    fn start() -> Publishing {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let env = [
            ("SHOAL_MONITOR__PUBLISH", "tcp://127.0.0.1:0"),
            ("SHOAL_MONITOR__EVERY", "100ms"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let (running, addr) = rt.block_on(async {
            let running = shoal::App::new("monitored", "1.2.3")
                .args(Vec::<String>::new(), env)
                .start()
                .await
                .expect("the application starts");
            let addr = tokio::time::timeout(Duration::from_secs(10), running.monitor_addr())
                .await
                .expect("the feed binds")
                .expect("monitor.publish is set");
            (running, addr)
        });
        Publishing {
            rt,
            running: Some(running),
            addr,
        }
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.handle().close();
            self.rt.block_on(running.wait());
        }
    }
}

#[test]
fn monitor_prints_snapshots_as_json_lines_or_text() {
    let app = Publishing::start();
    let out = shoal(&[
        "monitor",
        &app.addr,
        "--count",
        "2",
        "--json",
        "--timeout",
        "10s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let snapshots: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(snapshots.len(), 2, "{text}");
    for s in &snapshots {
        assert_eq!(s["name"], "monitored", "{s}");
        assert_eq!(s["version"], "1.2.3", "{s}");
        assert_eq!(s["pid"], std::process::id(), "{s}");
        assert_eq!(s["state"], "running", "{s}");
        assert_eq!(s["monitor_addr"], app.addr.as_str(), "{s}");
    }

    let out = shoal(&["monitor", &app.addr, "--count", "1", "--timeout", "10s"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let header = format!(" monitored 1.2.3 pid {} running up ", std::process::id());
    assert!(text.lines().next().unwrap().contains(&header), "{text}");
}

#[test]
fn monitor_skips_malformed_messages_with_a_warning() {
    use zeromq::{Socket, SocketSend};

    let app = Publishing::start();
    let good = serde_json::to_vec(&app.running.as_ref().unwrap().handle().status()).unwrap();
    // A publisher sending, over and over, three bad messages and then a good one.
    let addr = app.rt.block_on(async {
        let mut publisher = zeromq::PubSocket::new();
        let addr = publisher
            .bind("tcp://127.0.0.1:0")
            .await
            .unwrap()
            .to_string();
        let bad: [&[&[u8]]; 3] = [
            &[b"shoal.status", b"\xc1"],
            &[b"shoal.status", b"{\"name\": 1}"],
            &[b"shoal.status", b"{}", b"{}"],
        ];
        app.rt.spawn(async move {
            loop {
                for frames in bad
                    .iter()
                    .copied()
                    .chain([&[b"shoal.status", &good[..]][..]])
                {
                    let mut message = zeromq::ZmqMessage::from(frames[0].to_vec());
                    for frame in &frames[1..] {
                        message.push_back(frame.to_vec().into());
                    }
                    let _ = publisher.send(message).await;
                }
                // Pacing only: the test waits on the command's output, not on this.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        addr
    });
    let out = shoal(&["monitor", &addr, "--count", "2", "--timeout", "10s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.contains(" monitored 1.2.3 "))
            .count(),
        2
    );
    // Between two good snapshots, all three bad messages came and were skipped.
    for expected in [
        "skipped a malformed message: bad MessagePack",
        "skipped a snapshot that is not a status",
        "skipped a malformed message: 3 frames, expected 2",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
}

#[test]
fn monitor_rejects_bad_addresses_and_gives_up_after_its_timeout() {
    for (addr, reason) in [
        ("127.0.0.1:5558", ""),
        ("tcp://127.0.0.1", " (no port)"),
        ("ipc://", " (no path)"),
    ] {
        let out = shoal(&["monitor", addr]);
        assert_eq!(out.status.code(), Some(2), "{addr}");
        let expected = format!(
            "invalid address \"{addr}\": expected a ZeroMQ endpoint tcp://HOST:PORT or \
             ipc://PATH{reason}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&expected), "{stderr}");
    }
    // Nobody publishing there.
    let out = shoal(&["monitor", "tcp://127.0.0.1:1", "--timeout", "200ms"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no snapshot from tcp://127.0.0.1:1 within 200ms"),
        "{stderr}"
    );
}

#[test]
fn idl_python_writes_the_client_and_rejects_bad_files_without_writing() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-idl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let svr = dir.join("svr.json");
    std::fs::write(&svr, include_str!("../../shoal-idl/tests/echo.json")).unwrap();
    let out_dir = dir.join("out");
    let idl_python = |idl: &std::path::Path, out: &std::path::Path| {
        Command::new(SHOAL)
            .args(["idl", "python"])
            .arg(idl)
            .arg("-o")
            .arg(out)
            .output()
            .expect("run shoal idl python")
    };

    let out = idl_python(&svr, &out_dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let module = out_dir.join("echo_client.py");
    assert_eq!(stdout(&out), format!("wrote {}", module.display()));
    let code = std::fs::read_to_string(&module).unwrap();
    assert!(
        code.starts_with("# Generated by shoal-idl from svr.json; do not edit"),
        "{code}"
    );
    assert!(code.contains("\nclass EchoClient:\n"));
    assert!(code.contains("\nDEFAULT_BALANCE = \"hashring\"\n"));
    // Nothing left beside it.
    let files: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert_eq!(files.len(), 1, "{files:?}");

    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"app\": \"x\",\n \"protos\": [}").unwrap();
    let bad_out = dir.join("bad-out");
    let out = idl_python(&bad, &bad_out);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2:13: $.protos[0]: expected value",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(!bad_out.exists(), "a bad IDL writes nothing");

    let out = idl_python(&dir.join("missing.json"), &bad_out);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("read IDL file"), "{stderr}");
    assert!(!bad_out.exists());

    let _ = std::fs::remove_dir_all(&dir);
}
