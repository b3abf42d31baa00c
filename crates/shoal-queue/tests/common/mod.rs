//! What the queue's integration tests share: scratch directories, tools that may be missing,
//! and a real nats-server (JetStream, fsync on every write) they can kill and restart.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// A scratch directory, removed when dropped.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "shoal-queue-it-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Prints `skipped: why` and answers `None`; under `SHOAL_REQUIRE_TOOLS=1` (as `.ci/run` sets
/// it) panics instead, so CI never passes a test that did not run.
pub fn skip<T>(why: &str) -> Option<T> {
    if std::env::var_os("SHOAL_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
        panic!("{why}; SHOAL_REQUIRE_TOOLS=1 requires every tool the tests use (see .ci/run)");
    }
    println!("skipped: {why}");
    None
}

/// Where nats-server is: `$SHOAL_TEST_NATS_SERVER` (`.ci/run` installs a pinned one into
/// `.venv-nats`).
pub const NATS_SERVER: &str = "SHOAL_TEST_NATS_SERVER";

/// A nats-server with JetStream on 127.0.0.1, storing under a scratch directory with
/// `sync_interval: always` (a publish is acked after fsync); killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    exe: PathBuf,
    child: Option<Child>,
    dir: Scratch,
    port: u16,
}

impl NatsServer {
    /// Starts one on an ephemeral port, or `None` (see [`skip`]) when there is no nats-server.
    pub fn start() -> Option<NatsServer> {
        let Some(exe) = std::env::var_os(NATS_SERVER) else {
            return skip(&format!(
                "JetStream engine: {NATS_SERVER} is not set (see .ci/run: .venv-nats)"
            ));
        };
        let mut server = NatsServer {
            exe: exe.into(),
            child: None,
            dir: Scratch::new("nats"),
            port: 0,
        };
        server.spawn();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs it and reads its log up to "Server is ready", learning the port.
    fn spawn(&mut self) {
        let config = self.dir.path().join("nats.conf");
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        std::fs::write(
            &config,
            format!(
                "host: 127.0.0.1\nport: {port}\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
                self.dir.path().join("js")
            ),
        )
        .unwrap();
        let mut child = Command::new(&self.exe)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.exe.display()));
        let mut log = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            assert!(
                log.read_line(&mut line).unwrap() > 0,
                "nats-server exited before it was ready:\n{seen}"
            );
            if let Some(at) = line.find("Listening for client connections on ") {
                let addr = line[at..].trim_end();
                self.port = addr.rsplit(':').next().unwrap().parse().unwrap();
            }
            seen.push_str(&line);
            if line.contains("Server is ready") {
                break;
            }
        }
        // Keep reading, so its log never fills the pipe and blocks it.
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        self.child = Some(child);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
