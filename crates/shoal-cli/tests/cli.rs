//! The `shoal` binary end to end: `bench serve` as a real process on loopback and on a Unix
//! socket, `shoal call` against it (results, errors, exit codes), and `bench run --json`.

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
    for extra in [&[][..], &["--notify"][..]] {
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

    let out = explain("[rpc]\nlisten = \"127.0.0.1:7000\"\n\n[db]\npassword = \"hunter2\"\n");
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
    let at = format!("# {}", file.display());
    assert_eq!(
        line("rpc.listen"),
        format!("rpc.listen = \"127.0.0.1:7000\" {at}:2")
    );
    assert_eq!(
        line("db.password"),
        format!("db.password = \"<redacted>\" {at}:5")
    );
    assert_eq!(
        line("hello.greeting"),
        "hello.greeting = \"Hi\" # env SHOAL_HELLO__GREETING"
    );
    assert_eq!(line("shutdown.grace"), "shutdown.grace = \"10s\" # default");
    assert!(!text.contains("hunter2"), "{text}");
    // The `#` column lines up.
    let columns: Vec<usize> = text.lines().map(|l| l.find(" # ").unwrap()).collect();
    assert!(columns.windows(2).all(|w| w[0] == w[1]), "{text}");

    let out = explain("[rpc]\nlisten = \"nowhere\"\n");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:2: key `rpc.listen`: expected host:port or unix:PATH, got \"nowhere\"",
        file.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");

    let _ = std::fs::remove_dir_all(&dir);
}
