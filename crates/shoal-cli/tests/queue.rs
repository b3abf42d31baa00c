//! `shoal queue` end to end: the queue as a child process on a Unix socket, the client
//! subcommands against it through `SHOAL_QUEUE` and `--queue`, and SIGTERM closing it.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::Scratch;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
const T: Duration = Duration::from_secs(30);

/// A `shoal queue` child, killed when dropped if still running.
struct Queue {
    child: Child,
    addr: String,
}

impl Queue {
    fn start(dir: &Path) -> Queue {
        let addr = format!("unix:{}", dir.join("queue.sock").display());
        let child = Command::new(SHOAL)
            .args(["queue", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen", &addr])
            .stderr(Stdio::null())
            .spawn()
            .expect("start shoal queue");
        let queue = Queue { child, addr };
        let deadline = Instant::now() + T;
        while !queue.run(&["stats"]).status.success() {
            assert!(Instant::now() < deadline, "shoal queue did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        queue
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(SHOAL)
            .arg("queue")
            .args(args)
            .env("SHOAL_QUEUE", &self.addr)
            .output()
            .expect("run shoal queue")
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(SHOAL)
            .arg("queue")
            .args(args)
            .env("SHOAL_QUEUE", &self.addr)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// SIGTERM, then its exit status within the deadline.
    fn terminate(mut self) -> std::process::ExitStatus {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + T;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "shoal queue ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "status {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn topics_subscriptions_publish_get_and_stats_from_the_command_line() {
    let dir = Scratch::new("cli");
    let queue = Queue::start(dir.path());
    ok(queue.run(&["topic", "create", "jobs", "--max-bytes", "1MiB"]));
    ok(queue.run(&["sub", "add", "jobs", "worker"]));
    assert_eq!(ok(queue.run(&["pub", "jobs", "hello"])), "1\n");
    assert_eq!(
        ok(queue.run_stdin(&["pub", "jobs", "-"], "two\nthree\n")),
        "2\n3\n"
    );

    assert_eq!(
        ok(queue.run(&["get", "jobs", "worker", "--max", "2", "--ack"])),
        "1\thello\n2\ttwo\n"
    );
    let json = ok(queue.run(&["get", "jobs", "worker", "--json", "--wait", "1s"]));
    let line: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(line["seq"], 3);
    assert_eq!(line["data"], "three");

    let stats = ok(queue.run(&["stats", "jobs", "--json"]));
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats[0]["last_seq"], 3);
    assert_eq!(stats[0]["subs"][0]["lag"], 1);
    assert_eq!(stats[0]["subs"][0]["unacked"], 1);
    let table = ok(queue.run(&["stats"]));
    assert!(
        table.starts_with("TOPIC") && table.contains("worker"),
        "{table}"
    );

    // Errors name what is at fault and exit 2.
    let out = queue.run(&["pub", "nope", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no topic nope"),
        "{out:?}"
    );
    let out = Command::new(SHOAL)
        .args(["queue", "stats"])
        .env_remove("SHOAL_QUEUE")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give --queue ADDR or set SHOAL_QUEUE"),
        "{out:?}"
    );
    ok(queue.run(&["sub", "rm", "jobs", "worker"]));

    assert!(queue.terminate().success());
    // What was published is there after a restart, through --queue this time.
    let queue = Queue::start(dir.path());
    let out = Command::new(SHOAL)
        .args(["queue", "stats", "jobs", "--json", "--queue", &queue.addr])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(stats[0]["last_seq"], 3);
}

#[test]
fn the_queue_refuses_an_open_network_address() {
    let dir = Scratch::new("open");
    let out = Command::new(SHOAL)
        .args(["queue", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0.0.0.0:0 is not a loopback address"),
        "{stderr}"
    );
}
