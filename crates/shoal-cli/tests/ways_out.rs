//! Every way out of a command ends it cleanly, through the built binary: `shoal up` stops
//! everything it started when its output closes, on SIGINT, SIGTERM and SIGHUP (also while
//! a write is stuck on a reader that stopped reading), and when it fails after starting
//! things; `shoal logs -f` ends when its reader goes although nothing
//! more is written; one-shot commands writing into a closed pipe end quietly; an agent sent
//! SIGTERM while its programs start stops them all. "Nothing left"
//! is checked in `/proc`: no process whose working directory or command line is under the
//! test's data directory.

use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod common;

use common::{kill_under, shoal_ok, under, wait_for, Agent, AtExit, Scratch, LIMIT, SHOAL};

#[test]
fn up_stops_everything_when_its_output_closes() {
    let dir = Scratch::new("up-closed");
    let mut up = Up::start(&dir, Stdio::piped());
    let stdout = up.child.stdout.take().unwrap();
    // `head -3`: three lines read, then the pipe closed, once the test has looked around.
    let (send_line, lines) = channel();
    let (send_close, close) = channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        for _ in 0..3 {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let _ = send_line.send(line);
        }
        let _ = close.recv();
    });
    let deadline = Instant::now() + LIMIT;
    let seen: Vec<String> = (0..3)
        .map(|_| {
            let left = deadline.saturating_duration_since(Instant::now());
            lines.recv_timeout(left).expect("three lines from shoal up")
        })
        .collect();
    assert!(seen[0].starts_with("installed hello"), "{seen:?}");
    let running = up.started();
    assert!(
        running.iter().any(|(_, cmd)| cmd.contains("example hello")),
        "the hello service should run: {running:?}"
    );
    send_close.send(()).unwrap();
    reader.join().unwrap();

    let (status, stderr) = up.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(under(&up.data), Vec::new(), "left running");
}

#[test]
fn up_stops_everything_on_sigint() {
    up_stops_everything_on(Signal::SIGINT);
}

#[test]
fn up_stops_everything_on_sigterm() {
    up_stops_everything_on(Signal::SIGTERM);
}

#[test]
fn up_stops_everything_on_sighup() {
    up_stops_everything_on(Signal::SIGHUP);
}

/// `shoal up` until the hello service is healthy, then `signal`: it exits 0 after "stopped",
/// with nothing left.
fn up_stops_everything_on(signal: Signal) {
    let dir = Scratch::new(&format!("up-{signal}"));
    let mut up = Up::start(&dir, Stdio::piped());
    let lines = lines_of(up.child.stdout.take().unwrap());
    let deadline = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    let hello = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            panic!("no healthy hello; shoal up showed:\n{}", seen.join("\n"));
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let pid = words.get(3).and_then(|p| p.parse::<i32>().ok());
        seen.push(line.clone());
        if let (Some(&"hello"), Some(&"running"), Some(pid), Some(&"ok")) =
            (words.first(), words.get(2), pid, words.last())
        {
            break pid;
        }
    };
    assert!(up.started().iter().any(|(pid, _)| *pid == hello));
    kill(Pid::from_raw(up.child.id() as i32), signal).unwrap();

    let (status, stderr) = up.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let rest: Vec<String> = lines.iter().collect();
    assert_eq!(rest.last().map(String::as_str), Some("stopped"), "{rest:?}");
    assert_eq!(under(&up.data), Vec::new(), "left running");
}

#[test]
fn up_stops_everything_on_sigterm_while_its_output_is_stuck() {
    // A reader that is there but stops reading: a pipe made small, never read, fills after a
    // few redraws, and the next write blocks.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    let dir = Scratch::new("up-stuck");
    let mut up = Up::start(&dir, Stdio::from(writer));
    let tasks = format!("/proc/{}/task", up.child.id());
    wait_for("shoal up to block writing to its full pipe", || {
        std::fs::read_dir(&tasks)
            .ok()?
            .flatten()
            .any(|task| {
                std::fs::read_to_string(task.path().join("wchan"))
                    .is_ok_and(|wchan| wchan.contains("pipe_write"))
            })
            .then_some(())
    });
    let running = up.started();
    assert!(
        running.iter().any(|(_, cmd)| cmd.contains("example hello")),
        "the hello service should run: {running:?}"
    );
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGTERM).unwrap();

    let (status, stderr) = up.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(under(&up.data), Vec::new(), "left running");
    drop(reader);
}

#[test]
fn up_stops_what_it_started_when_it_fails() {
    // Its output a device that refuses every write: the first line, written once the hello
    // service runs, fails with ENOSPC, an error like any other.
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        skip("/dev/full cannot be opened for writing");
        return;
    };
    let dir = Scratch::new("up-fails");
    let mut up = Up::start(&dir, Stdio::from(full));
    let (status, stderr) = up.wait();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("writing to standard output") && stderr.contains("No space left"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The failure came after the service was installed, so after it had run.
    assert!(
        std::fs::symlink_metadata(up.data.join("data/apps/hello/current")).is_ok(),
        "hello was never installed: {stderr}"
    );
    assert_eq!(under(&up.data), Vec::new(), "left running");
}

#[test]
fn logs_follow_ends_when_its_reader_closes() {
    let dir = Scratch::new("logs-follow");
    let (agent, data, _) = talking(&dir);
    let mut follow = Command::new(SHOAL)
        .args(["logs", "talker", "-f", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = Killed(follow.id());
    let stderr = all_of(follow.stderr.take().unwrap());
    // `head -1`: one line read, then the pipe closed.
    let stdout = follow.stdout.take().unwrap();
    let first = std::thread::spawn(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let status = exit_of(&mut follow);
    guard.reaped();
    let line = first.join().unwrap().unwrap();
    assert!(line.contains("first words"), "{line:?}");
    let stderr = stderr.recv_timeout(LIMIT).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(agent.stop(), Vec::new(), "left running");
}

#[test]
fn one_shot_commands_into_a_closed_pipe_end_quietly() {
    let dir = Scratch::new("one-shot");
    let (agent, data, archive) = talking(&dir);
    let data = data.to_str().unwrap();
    for args in [
        vec!["ps", "--data-dir", data],
        vec!["ps", "--json", "--data-dir", data],
        vec!["logs", "talker", "--data-dir", data],
        vec!["versions", "talker", "--data-dir", data],
        vec!["--help"],
        vec!["pkg", "inspect", archive.to_str().unwrap()],
    ] {
        let out = into_closed_pipe(&args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "shoal {args:?}: {}: {said}",
            out.status
        );
        assert!(!said.contains("panicked"), "shoal {args:?}: {said}");
    }
    drop(agent);
}

/// A SIGTERM as soon as the first of an agent's programs runs, while it starts the others:
/// the agent finishes starting, stops them all (`--stop-on-exit`) and ends successfully.
/// Before its handlers were installed first, the signal's default action killed the agent
/// there and left its programs running with nobody watching them.
#[test]
fn agent_stops_its_programs_on_sigterm_while_they_start() {
    let dir = Scratch::new("agent-term-start");
    let data = dir.0.join("data");
    let agent = Agent::start_with(&data, AtExit::Stop);
    const PROGRAMS: usize = 4;
    for i in 0..PROGRAMS {
        let archive = package(&dir.0, &format!("s{i:02}"), "exec sleep 1000");
        shoal_ok(&data, &["install", archive.to_str().unwrap()]);
    }
    assert_eq!(agent.stop(), vec![], "the agent stops its programs at exit");

    // Started again, the agent starts all four; the signal goes as soon as one runs.
    let agent = Agent::launch(&data, AtExit::Stop);
    let me = agent.child.id() as i32;
    let deadline = Instant::now() + LIMIT;
    // Polled without a pause: the window is the rest of the agent's start-up, milliseconds.
    while !under(&data).iter().any(|(pid, _)| *pid != me) {
        assert!(Instant::now() < deadline, "no program of the agent ran");
    }
    assert_eq!(agent.stop(), vec![], "nothing is left running");
}

/// An agent on `DIR/data` running `talker`, which says "first words" and then nothing more
/// (so only the reader going can end a follow), once that line is in its log; and the
/// talker's package.
fn talking(dir: &Scratch) -> (Agent, PathBuf, PathBuf) {
    let data = dir.0.join("data");
    let agent = Agent::start_with(&data, AtExit::Stop);
    let archive = package(&dir.0, "talker", "echo first words\nexec sleep 1000");
    shoal_ok(&data, &["install", archive.to_str().unwrap()]);
    wait_for("the talker's line in its log", || {
        shoal_ok(&data, &["logs", "talker"])
            .contains("first words")
            .then_some(())
    });
    (agent, data, archive)
}

/// `shoal ARGS` with its standard output a pipe whose reader is already gone.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(SHOAL)
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = Killed(child.id());
    let stderr = all_of(child.stderr.take().unwrap());
    let status = exit_of(&mut child);
    guard.reaped();
    Output {
        status,
        stdout: Vec::new(),
        stderr: stderr.recv_timeout(LIMIT).unwrap().into_bytes(),
    }
}

/// A `shoal up` on `DIR/up`; if the test fails, it and everything under its directory are
/// killed.
struct Up {
    child: Child,
    data: PathBuf,
    stderr: Option<Receiver<String>>,
}

impl Up {
    fn start(dir: &Scratch, stdout: Stdio) -> Up {
        let data = dir.0.join("up");
        let mut child = Command::new(SHOAL)
            .args(["up", "--data-dir"])
            .arg(&data)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Some(all_of(child.stderr.take().unwrap()));
        Up {
            child,
            data,
            stderr,
        }
    }

    /// What runs under the data directory now, but `shoal up` itself.
    fn started(&self) -> Vec<(i32, String)> {
        let me = self.child.id() as i32;
        under(&self.data)
            .into_iter()
            .filter(|(pid, _)| *pid != me)
            .collect()
    }

    /// Its exit status and everything it wrote on stderr.
    fn wait(&mut self) -> (ExitStatus, String) {
        let status = exit_of(&mut self.child);
        let stderr = self.stderr.take().unwrap().recv_timeout(LIMIT).unwrap();
        (status, stderr)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_under(&self.data);
    }
}

/// SIGKILL to a child on drop, so a failed assertion leaves it not running.
struct Killed(u32);

impl Killed {
    /// The child exited and was reaped: its pid may be another process's now.
    fn reaped(self) {
        std::mem::forget(self);
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
    }
}

/// Waits for `child` to exit, within [`LIMIT`].
fn exit_of(child: &mut Child) -> ExitStatus {
    wait_for("the command to exit", || child.try_wait().unwrap())
}

/// Each line `from` gives, as it comes.
fn lines_of(from: impl Read + Send + 'static) -> Receiver<String> {
    let (send, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    lines
}

/// Everything `from` gives, once it ends.
fn all_of(mut from: impl Read + Send + 'static) -> Receiver<String> {
    let (send, all) = channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = from.read_to_string(&mut text);
        let _ = send.send(text);
    });
    all
}

/// A service package `name` 1.0.0 without `[health]`, whose program runs `body`, built with
/// `shoal pkg build` into `dir`.
fn package(dir: &Path, name: &str, body: &str) -> PathBuf {
    let pkg = dir.join(name);
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    let program = pkg.join("bin/run");
    std::fs::write(&program, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        pkg.join("shoal.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\nkind = \"service\"\n\n\
             [run]\ncommand = \"bin/run\"\nrestart = \"always\"\n"
        ),
    )
    .unwrap();
    common::pkg_build(&pkg, dir);
    dir.join(format!("{name}-1.0.0.tar.gz"))
}

fn skip(why: &str) {
    if std::env::var_os("SHOAL_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
        panic!("{why}; SHOAL_REQUIRE_TOOLS=1 requires every tool the tests use");
    }
    println!("skipped: {why}");
}
