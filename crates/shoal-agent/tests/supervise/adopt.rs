//! An agent that dies, even by SIGKILL, disturbs no program: the next one adopts them with
//! the same pids, captures what they wrote meanwhile, and enforces their restart policy.
//! The agent here is `examples/supervisor.rs`, a process of its own.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use shoal_agent::supervise::Exit;
use shoal_agent::{ProgramState, Supervisor};
use tokio::net::TcpListener;

use crate::common::{alive, n, poll, status_of, tcp_health, wait_for, Env};

/// `examples/supervisor.rs` on the test's data directory, driven through its stdin.
struct Agent {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Agent {
    fn start(env: &Env) -> Agent {
        let exe = std::env::current_exe().unwrap();
        let helper = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("examples/supervisor");
        assert!(
            helper.exists(),
            "{} is missing: build the examples first (cargo build -p shoal-agent --examples)",
            helper.display()
        );
        let mut child = std::process::Command::new(helper)
            .arg(env.data.root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut agent = Agent {
            child,
            stdin,
            stdout,
        };
        assert_eq!(agent.read(), "ready");
        agent
    }

    fn read(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "the agent ended: {line:?}");
        line.trim_end().to_owned()
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.read()
    }

    fn add(&mut self, name: &str, dir: &Path) {
        assert_eq!(self.ask(&format!("add {name} {}", dir.display())), "ok");
    }

    /// `name`'s status, as JSON.
    fn status(&mut self, name: &str) -> Value {
        let all: Value = serde_json::from_str(&self.ask("status")).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not registered"))
            .clone()
    }

    fn pid(&mut self, name: &str) -> u32 {
        self.status(name)["pid"].as_u64().unwrap() as u32
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// The number of the last `line N` in `text`.
fn last_line(text: &str) -> Option<u64> {
    text.lines().last()?.strip_prefix("line ")?.parse().ok()
}

#[test]
fn a_killed_agent_leaves_programs_running_and_the_next_adopts_them() {
    let env = Env::new("adopt");
    // Writes numbered lines, and the last number into its data directory.
    let counter = env.script(
        "counter",
        "i=0\nwhile :; do echo \"line $i\"; echo $i > \"$SHOAL_APP_DATA/count\"; \
         i=$((i+1)); sleep 0.01; done",
    );
    let sleeper = env.script("sleeper", "exec sleep 600");
    let gone = env.script("gone", "exec sleep 600");
    let count = || -> Option<u64> {
        std::fs::read_to_string(env.data.data(&n("counter")).join("count"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };

    let mut agent = Agent::start(&env);
    agent.add("counter", &counter);
    agent.add("sleeper", &sleeper);
    agent.add("gone", &gone);
    let counter_pid = agent.pid("counter");
    let sleeper_pid = agent.pid("sleeper");
    let gone_pid = agent.pid("gone");
    poll("lines logged", || {
        last_line(&env.log("counter", "stdout")).filter(|&n| n >= 5)
    });

    agent.kill();
    for pid in [counter_pid, sleeper_pid, gone_pid] {
        assert!(alive(pid), "{pid} died with the agent");
    }
    // While no agent reads, the counter goes on, its lines waiting in the pipe.
    // (The file is rewritten in place: a read may find it empty.)
    let at_death = poll("the count read", count);
    let written = poll("lines written while no agent runs", || {
        count().filter(|&c| c >= at_death + 30)
    });
    let logged = last_line(&env.log("counter", "stdout")).unwrap();
    assert!(logged < written, "logged {logged}, written {written}");
    // One program ends while no agent runs.
    kill(Pid::from_raw(gone_pid as i32), Signal::SIGKILL).unwrap();

    let mut agent = Agent::start(&env);
    let status = agent.status("counter");
    assert_eq!(status["pid"], counter_pid);
    assert_eq!(status["state"], "running");
    assert_eq!(agent.pid("sleeper"), sleeper_pid);
    // What was written meanwhile is logged, and what comes after: every line, in order.
    let text = poll("the lines of the agent's absence logged", || {
        let text = env.log("counter", "stdout");
        last_line(&text).filter(|&n| n > written + 5).map(|_| text)
    });
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, format!("line {i}"));
    }

    // The program that ended meanwhile was started again; an adopted program that is
    // killed is restarted.
    let gone_now = poll("gone started again", || {
        let status = agent.status("gone");
        (status["state"] == "running").then_some(status)
    });
    assert_ne!(gone_now["pid"], gone_pid);
    assert_eq!(gone_now["last_exit"], "unknown");
    kill(Pid::from_raw(sleeper_pid as i32), Signal::SIGKILL).unwrap();
    let sleeper_now = poll("sleeper restarted", || {
        let status = agent.status("sleeper");
        (status["restarts"] == 1 && status["state"] == "running").then_some(status)
    });
    assert_ne!(sleeper_now["pid"], sleeper_pid);
    // Not this agent's child: how it ended is unknown.
    assert_eq!(sleeper_now["last_exit"], "unknown");

    assert_eq!(agent.ask("shutdown"), "ok");
    agent.child.wait().unwrap();
    let sleeper_new = sleeper_now["pid"].as_u64().unwrap() as u32;
    let gone_new = gone_now["pid"].as_u64().unwrap() as u32;
    for pid in [counter_pid, sleeper_new, gone_new] {
        assert!(!alive(pid), "{pid} outlived the shutdown");
    }
}

#[tokio::test]
async fn a_detached_supervisors_programs_are_adopted_by_the_next() {
    let env = Env::new("detach");
    let supervisor = env.supervisor().await;
    // One supervisor per data directory.
    let e = Supervisor::open(env.data.clone(), env.state())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "another agent (pid {}) supervises this data directory",
            std::process::id()
        )),
        "{e}"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut checked = env.spec("checked", "exec sleep 600");
    checked.health = Some(tcp_health(listener.local_addr().unwrap().port(), 2));
    supervisor.add(checked).await.unwrap();
    supervisor
        .add(env.spec("steady", "exec sleep 600"))
        .await
        .unwrap();
    for name in ["checked", "steady"] {
        supervisor.start(&n(name)).await.unwrap();
        supervisor
            .wait_healthy(&n(name), Duration::from_secs(10))
            .await
            .unwrap();
    }
    let pid = status_of(&supervisor, "steady").pid.unwrap();
    let checked_pid = status_of(&supervisor, "checked").pid;
    supervisor.detach().await;
    assert!(alive(pid));

    let reopened_at = Utc::now();
    let supervisor = env.supervisor().await;
    let status = status_of(&supervisor, "steady");
    assert_eq!(status.pid, Some(pid));
    assert_eq!(status.state, ProgramState::Running);
    assert!(status.rss_bytes.unwrap() > 0);
    // Health checks go on for the adopted program, and a failing one restarts it.
    assert_eq!(status_of(&supervisor, "checked").pid, checked_pid);
    wait_for(&supervisor, "checked", "checked again", |s| {
        s.health
            .as_ref()
            .unwrap()
            .checked_at
            .is_some_and(|t| t >= reopened_at)
    })
    .await;
    drop(listener);
    let restarted = wait_for(&supervisor, "checked", "restarted", |s| s.restarts >= 1).await;
    assert_ne!(restarted.pid, checked_pid);

    // Adopted by the process that started it, so still its child: its end is known.
    supervisor.stop(&n("steady")).await.unwrap();
    let status = status_of(&supervisor, "steady");
    assert_eq!(status.last_exit, Some(Exit::Signal("SIGTERM".into())));
    assert!(!alive(pid));

    // Stopped stays stopped for the next supervisor; a shutdown keeps what should run.
    supervisor
        .add(env.spec("wanted", "exec sleep 600"))
        .await
        .unwrap();
    supervisor.start(&n("wanted")).await.unwrap();
    supervisor.shutdown().await;
    let supervisor = env.supervisor().await;
    assert_eq!(
        status_of(&supervisor, "steady").state,
        ProgramState::Stopped
    );
    supervisor
        .wait_healthy(&n("wanted"), Duration::from_secs(10))
        .await
        .unwrap();
    supervisor.shutdown().await;
}
