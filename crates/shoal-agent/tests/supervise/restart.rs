//! Restart policies, and the backoff of a program that keeps failing.

use std::time::Duration;

use shoal_agent::supervise::Exit;
use shoal_agent::ProgramState;
use shoal_pkg::manifest::Restart;

use crate::common::{n, status_of, wait_for, Env};

#[tokio::test]
async fn a_crash_loop_backs_off_visibly_with_doubling_delays() {
    let env = Env::new("crash-loop");
    let supervisor = env.supervisor().await;
    supervisor
        .add(env.spec("crash", "echo crashing >&2\nexit 1"))
        .await
        .unwrap();
    supervisor.start(&n("crash")).await.unwrap();

    // Each backoff seen: the restarts made so far and the delay before the next.
    let mut seen: Vec<(u32, Duration)> = Vec::new();
    wait_for(&supervisor, "crash", "restarted 5 times", |s| {
        if s.state == ProgramState::Backoff && seen.last().is_none_or(|(r, _)| *r != s.restarts) {
            let next = s.next_start.expect("a backoff has a next start");
            seen.push((s.restarts, (next - s.since).to_std().unwrap()));
        }
        s.restarts >= 5
    })
    .await;

    // The delay before restart k+1 is 100 ms << (k-1): restart 1 came at once, the next
    // after 100 ms, then 200, 400, 800.
    assert!(seen.len() >= 3, "too few backoffs seen: {seen:?}");
    for (restarts, delay) in &seen {
        assert_eq!(
            *delay,
            Duration::from_millis(100) * (1 << (restarts - 1)),
            "{seen:?}"
        );
    }
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "{seen:?}");
    let status = status_of(&supervisor, "crash");
    assert_eq!(status.last_exit, Some(Exit::Code(1)));
    assert!(env.log("crash", "stderr").contains("crashing\n"));

    // A start asked for starts over: no backoff, no restarts counted.
    supervisor.stop(&n("crash")).await.unwrap();
    assert_eq!(status_of(&supervisor, "crash").state, ProgramState::Stopped);
    supervisor.start(&n("crash")).await.unwrap();
    let status = status_of(&supervisor, "crash");
    assert!(status.restarts <= 1, "{status:#?}");
    supervisor.shutdown().await;
}

/// A process restarted at once is written with how the one before it ended, in one write
/// after the spawn: the state database holds both, as the next agent reads them.
#[tokio::test]
async fn a_restart_at_once_stores_the_exit_with_the_new_process() {
    let env = Env::new("restart-record");
    let supervisor = env.supervisor().await;
    // The first process exits 3; the one after it stays up.
    let body = "if [ -e ran ]; then exec sleep 60; fi\ntouch ran\nexit 3";
    supervisor.add(env.spec("flaky", body)).await.unwrap();
    supervisor.start(&n("flaky")).await.unwrap();
    let status = wait_for(&supervisor, "flaky", "running again", |s| {
        s.restarts == 1 && s.state == ProgramState::Running
    })
    .await;
    assert_eq!(status.last_exit, Some(Exit::Code(3)));

    let (pid, last_exit): (Option<u32>, Option<String>) = env
        .state()
        .with(|c| {
            c.query_row(
                "SELECT pid, last_exit FROM supervised WHERE name = 'flaky'",
                (),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .unwrap();
    assert_eq!(pid, status.pid);
    let last_exit: Exit = serde_json::from_str(&last_exit.expect("an exit is stored")).unwrap();
    assert_eq!(last_exit, Exit::Code(3));
    supervisor.shutdown().await;
}

#[tokio::test]
async fn restart_policies_decide_by_exit_code() {
    // (name, policy, exit code, the state it rests in, or None: it is restarted)
    let cases = [
        ("always-ok", Restart::Always, 0, None),
        ("always-fail", Restart::Always, 3, None),
        (
            "onfail-ok",
            Restart::OnFailure,
            0,
            Some(ProgramState::Exited),
        ),
        ("onfail-fail", Restart::OnFailure, 3, None),
        ("never-ok", Restart::Never, 0, Some(ProgramState::Exited)),
        ("never-fail", Restart::Never, 3, Some(ProgramState::Failed)),
    ];
    let env = Env::new("policies");
    let supervisor = env.supervisor().await;
    for (name, restart, code, _) in cases {
        let mut spec = env.spec(name, &format!("exit {code}"));
        spec.restart = restart;
        supervisor.add(spec).await.unwrap();
        supervisor.start(&n(name)).await.unwrap();
    }
    for (name, restart, code, rest) in cases {
        let status = match rest {
            Some(state) => {
                let status =
                    wait_for(&supervisor, name, state.as_str(), |s| s.state == state).await;
                assert_eq!(status.restarts, 0, "{name} ({restart}) was restarted");
                status
            }
            None => wait_for(&supervisor, name, "restarted twice", |s| s.restarts >= 2).await,
        };
        assert_eq!(status.last_exit, Some(Exit::Code(code)), "{name}");
    }
    supervisor.shutdown().await;
}

#[tokio::test]
async fn a_program_that_cannot_be_executed_fails_its_start_and_says_why() {
    let env = Env::new("no-exec");
    let supervisor = env.supervisor().await;
    let mut missing = env.spec("missing", "exit 0");
    missing.command.program = "./absent".into();
    missing.restart = Restart::Never;
    supervisor.add(missing).await.unwrap();
    let e = supervisor.start(&n("missing")).await.unwrap_err();
    let message = e.to_string();
    assert!(message.starts_with("missing: cannot start "), "{message}");
    assert!(
        message.ends_with("/missing/./absent: No such file or directory (os error 2)"),
        "{message}"
    );
    let status = status_of(&supervisor, "missing");
    assert_eq!(status.state, ProgramState::Failed);
    assert_eq!(status.error.as_deref(), Some(message.as_str()));

    // With `always`, it is tried again through the backoff.
    let mut gone = env.spec("gone", "exit 0");
    gone.dir = env.root.join("nowhere");
    supervisor.add(gone).await.unwrap();
    let e = supervisor.start(&n("gone")).await.unwrap_err();
    assert!(e.to_string().ends_with("nowhere does not exist"), "{e}");
    wait_for(&supervisor, "gone", "backing off", |s| {
        s.state == ProgramState::Backoff && s.restarts >= 1
    })
    .await;
    supervisor.shutdown().await;
}

#[tokio::test]
async fn registering_the_spec_a_program_has_writes_nothing_and_leaves_it_running() {
    let env = Env::new("re-add");
    let supervisor = env.supervisor().await;
    let spec = env.spec("steady", "exec sleep 600");
    supervisor.add(spec.clone()).await.unwrap();
    supervisor.start(&n("steady")).await.unwrap();
    let before = wait_for(&supervisor, "steady", "running", |s| s.pid.is_some()).await;
    // Another connection holds the database's write lock: a write would wait for it and
    // fail once the busy timeout is over.
    let state = env.state();
    state.with(|c| c.execute_batch("BEGIN IMMEDIATE")).unwrap();
    supervisor.add(spec.clone()).await.unwrap();
    state.with(|c| c.execute_batch("COMMIT")).unwrap();
    let after = status_of(&supervisor, "steady");
    assert_eq!((after.pid, after.restarts), (before.pid, before.restarts));
    // A changed spec is written and registered.
    let mut changed = spec;
    changed.env.insert("GREETING".into(), "hello".into());
    supervisor.add(changed).await.unwrap();
    let stored: String = state
        .with(|c| {
            c.query_row(
                "SELECT spec FROM supervised WHERE name = 'steady'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert!(stored.contains("GREETING"), "{stored}");
    supervisor.shutdown().await;
}
