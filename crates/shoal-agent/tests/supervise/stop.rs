//! Stopping a program's whole process group, signals, and `start_after`.

use std::time::Duration;

use chrono::Utc;
use shoal_agent::supervise::{Exit, Signal};
use shoal_agent::{ProgramState, SupervisorError};
use shoal_pkg::manifest::StopSignal;

use crate::common::{alive, eventually, group_members, n, status_of, tcp_health, wait_for, Env};

#[tokio::test]
async fn stop_kills_a_group_that_ignores_the_stop_signal_and_leaves_no_process() {
    let env = Env::new("stop-group");
    let supervisor = env.supervisor().await;
    // The shell ignores TERM, and its children inherit that.
    let mut stubborn = env.spec(
        "stubborn",
        "trap '' TERM\nsleep 600 &\nsleep 600 &\necho ready\nwait",
    );
    stubborn.stop_timeout = Duration::from_millis(300);
    supervisor.add(stubborn).await.unwrap();
    let mut polite = env.spec("polite", "exec sleep 600");
    polite.stop_signal = StopSignal::Int;
    supervisor.add(polite).await.unwrap();
    supervisor.start(&n("stubborn")).await.unwrap();
    supervisor.start(&n("polite")).await.unwrap();

    let pgid = status_of(&supervisor, "stubborn").pgid.unwrap();
    eventually("three processes in the group", || {
        (group_members(pgid).len() == 3).then_some(())
    })
    .await;
    supervisor.stop(&n("stubborn")).await.unwrap();
    assert_eq!(group_members(pgid), Vec::<u32>::new());
    let status = status_of(&supervisor, "stubborn");
    assert_eq!(status.state, ProgramState::Stopped);
    assert_eq!(status.pid, None);
    assert_eq!(status.last_exit, Some(Exit::Signal("SIGKILL".into())));

    let pgid = status_of(&supervisor, "polite").pgid.unwrap();
    supervisor.stop(&n("polite")).await.unwrap();
    assert_eq!(group_members(pgid), Vec::<u32>::new());
    let status = status_of(&supervisor, "polite");
    assert_eq!(status.last_exit, Some(Exit::Signal("SIGINT".into())));

    // A stopped program is not running to be signalled, nor restarted.
    let e = supervisor
        .signal(&n("polite"), Signal::SIGHUP)
        .await
        .unwrap_err();
    assert!(matches!(e, SupervisorError::NotRunning { .. }), "{e}");
    assert_eq!(status.restarts, 0);
    supervisor.shutdown().await;
}

#[tokio::test]
async fn a_signal_reaches_the_main_process() {
    let env = Env::new("signal");
    let supervisor = env.supervisor().await;
    supervisor
        .add(env.spec(
            "reloader",
            "trap 'echo reloaded' HUP\necho ready\nwhile :; do sleep 0.05; done",
        ))
        .await
        .unwrap();
    supervisor.start(&n("reloader")).await.unwrap();
    let pid = status_of(&supervisor, "reloader").pid;
    eventually("ready", || {
        env.log("reloader", "stdout")
            .contains("ready")
            .then_some(())
    })
    .await;
    supervisor
        .signal(&n("reloader"), Signal::SIGHUP)
        .await
        .unwrap();
    eventually("reloaded", || {
        env.log("reloader", "stdout")
            .contains("reloaded")
            .then_some(())
    })
    .await;
    assert_eq!(
        status_of(&supervisor, "reloader").pid,
        pid,
        "a reload restarts nothing"
    );
    supervisor.shutdown().await;
}

#[tokio::test]
async fn start_after_waits_until_those_are_healthy() {
    let env = Env::new("start-after");
    let supervisor = env.supervisor().await;
    // The port cache is checked on, bound but not listening: connections are refused until
    // the test listens on it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let mut cache = env.spec("cache", "exec sleep 600");
    cache.health = Some(tcp_health(port, 1000));
    supervisor.add(cache).await.unwrap();
    let mut web = env.spec("web", "exec sleep 600");
    web.start_after = vec![n("cache")];
    supervisor.add(web).await.unwrap();

    supervisor.start(&n("cache")).await.unwrap();
    let starting = {
        let supervisor = supervisor.clone();
        tokio::spawn(async move { supervisor.start(&n("web")).await })
    };
    // cache's checks fail while web waits.
    let failing = wait_for(&supervisor, "cache", "seen failing its check", |s| {
        s.health
            .as_ref()
            .is_some_and(|h| h.checked_at.is_some() && !h.ok)
    })
    .await;
    assert_eq!(failing.state, ProgramState::Starting);
    assert_eq!(status_of(&supervisor, "web").pid, None);

    let listening_at = Utc::now();
    let _listener = socket.listen(16).unwrap();
    starting.await.unwrap().unwrap();
    let web = status_of(&supervisor, "web");
    assert!(web.started_at.unwrap() >= listening_at, "{web:#?}");
    assert!(status_of(&supervisor, "cache").is_healthy());

    // A program that others start after, stopped: the start fails at once, naming it.
    supervisor.stop(&n("web")).await.unwrap();
    supervisor.stop(&n("cache")).await.unwrap();
    let e = supervisor.start(&n("web")).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "web starts after cache, which is not healthy: it is stopped"
    );
    assert_eq!(status_of(&supervisor, "web").pid, None);

    // Not registered, or in a circle.
    let mut lonely = env.spec("lonely", "exec sleep 600");
    lonely.start_after = vec![n("nobody")];
    supervisor.add(lonely).await.unwrap();
    let e = supervisor.start(&n("lonely")).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("nobody, which is not healthy: it is not registered"),
        "{e}"
    );
    let mut a = env.spec("a", "exec sleep 600");
    a.start_after = vec![n("b")];
    let mut b = env.spec("b", "exec sleep 600");
    b.start_after = vec![n("a")];
    supervisor.add(a).await.unwrap();
    supervisor.add(b).await.unwrap();
    let e = supervisor.start(&n("a")).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "a: start_after goes round in a circle: a -> b -> a"
    );
    supervisor.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_dependents_first() {
    let env = Env::new("shutdown-order");
    let supervisor = env.supervisor().await;
    // Each program writes when it is told to stop; `db` last.
    let body = "trap 'date +%s%N >> \"$SHOAL_APP_DATA/stopped\"; exit 0' TERM\n\
                echo ready\n\
                while :; do sleep 0.05; done";
    supervisor.add(env.spec("db", body)).await.unwrap();
    let mut api = env.spec("api", body);
    api.start_after = vec![n("db")];
    supervisor.add(api).await.unwrap();
    let mut front = env.spec("front", body);
    front.start_after = vec![n("api")];
    supervisor.add(front).await.unwrap();
    for name in ["db", "api", "front"] {
        supervisor.start(&n(name)).await.unwrap();
    }
    for name in ["db", "api", "front"] {
        eventually("its TERM trap set", || {
            env.log(name, "stdout").contains("ready").then_some(())
        })
        .await;
    }
    let data = env.data.clone();
    supervisor.shutdown().await;
    let stopped_at = |name: &str| -> u128 {
        std::fs::read_to_string(data.data(&n(name)).join("stopped"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(stopped_at("front") <= stopped_at("api"));
    assert!(stopped_at("api") <= stopped_at("db"));
}

#[tokio::test]
async fn a_healthy_program_is_withdrawn_first_and_signalled_after_its_shutdown_delay() {
    let env = Env::new("shutdown-delay");
    let supervisor = env.supervisor().await;
    let mut spec = env.spec(
        "draining",
        "trap 'echo term; exit 0' TERM\necho ready\nwhile :; do sleep 0.05; done",
    );
    let delay = Duration::from_millis(500);
    spec.shutdown_delay = delay;
    supervisor.add(spec).await.unwrap();
    let mut serving = supervisor.serving();
    supervisor.start(&n("draining")).await.unwrap();
    eventually("ready", || {
        env.log("draining", "stdout")
            .contains("ready")
            .then_some(())
    })
    .await;
    assert!(status_of(&supervisor, "draining").is_healthy());
    serving.borrow_and_update();

    let asked = std::time::Instant::now();
    let stop = {
        let supervisor = supervisor.clone();
        tokio::spawn(async move { supervisor.stop(&n("draining")).await })
    };
    // The withdrawal is published before the signal is sent.
    tokio::time::timeout(Duration::from_secs(10), serving.changed())
        .await
        .expect("the stop withdraws the program")
        .unwrap();
    let status = status_of(&supervisor, "draining");
    assert_eq!(status.state, ProgramState::Stopping);
    assert!(!status.is_healthy());
    assert!(alive(status.pid.unwrap()));
    assert!(!env.log("draining", "stdout").contains("term"));
    stop.await.unwrap().unwrap();
    assert!(asked.elapsed() >= delay);
    eventually("the signal handled", || {
        env.log("draining", "stdout").contains("term").then_some(())
    })
    .await;
    assert_eq!(
        status_of(&supervisor, "draining").state,
        ProgramState::Stopped
    );
}
