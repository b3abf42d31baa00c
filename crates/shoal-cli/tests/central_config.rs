//! Central configuration delivered by a real agent (run in process, its programs socket
//! served) to real programs, driving the agent's domain directly, no center: an SDK service
//! (`shoal example hello`) takes a version through its reload path and answers with it, refuses
//! a bad one and keeps the old, never takes an empty or mismatched one nor the same one twice,
//! and starts again with the version in force after its restart and the agent's; a program not
//! built with the SDK (a shell script) gets its file and SIGHUP, and one that dies of it is
//! reported rejected.

mod common;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use common::{Scratch, LIMIT, SHOAL};
use sha2::Digest;
use shoal::rpc::Client;
use shoal_agent::central::Received;
use shoal_agent::{Config, Options, Running};
use shoal_api::agent::AppAction;
use shoal_api::config::{ConfigApplied, ConfigChanged, ConfigHeld, Delivery};
use shoal_api::program::methods;
use shoal_api::status::Status;
use shoal_pkg::manifest::Name;
use tokio_util::sync::CancellationToken;

/// An agent run in process over `data`, judging a program `settle` after it was told.
async fn agent(data: &Path, settle: Duration) -> (Running, CancellationToken) {
    let stop = CancellationToken::new();
    let config = Config {
        options: Options {
            settle,
            ..Options::default()
        },
        ..Config::new(data)
    };
    let running = shoal_agent::run(config, stop.clone()).await.unwrap();
    (running, stop)
}

async fn stop_agent((running, stop): (Running, CancellationToken)) {
    stop.cancel();
    tokio::time::timeout(LIMIT, running.stopped())
        .await
        .unwrap();
}

/// How long a program must stay up after its install or its signal where the test does not
/// depend on it (the SDK service acknowledges for itself).
const QUICK: Duration = Duration::from_millis(300);
/// Where a program dying of its signal must be seen, even on a loaded machine.
const SETTLE: Duration = Duration::from_secs(2);

/// Waits until `check` answers `Some`, or fails after [`LIMIT`] saying `what`.
async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn version(app: &str, version: u64, text: &str) -> ConfigChanged {
    ConfigChanged {
        name: app.into(),
        version,
        sha256: hex(&sha2::Sha256::digest(text.as_bytes())),
        data: text.as_bytes().to_vec(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn held(running: &Running, app: &str) -> Option<ConfigHeld> {
    let all = running.agent().central().held().await.unwrap();
    all.into_iter().find(|h| h.name == app)
}

/// Waits until the agent holds `version` of `app` in a settled state, and answers it.
async fn settled(running: &Running, app: &str, version: u64) -> ConfigHeld {
    until(&format!("{app} v{version} applied or rejected"), || async {
        held(running, app)
            .await
            .filter(|h| h.version == version && h.delivery != Delivery::Pending)
    })
    .await
}

/// Builds a package from `files` (path, text, executable) into `dir`; answers the archive's
/// path and sha256.
fn package(dir: &Path, files: &[(&str, &str, bool)]) -> (std::path::PathBuf, shoal_pkg::Sha256) {
    use std::os::unix::fs::PermissionsExt;
    let src = dir.join("src");
    for (path, text, executable) in files {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        if *executable {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let out = dir.join("built");
    std::fs::create_dir_all(&out).unwrap();
    let built = shoal_pkg::build(&src, &out).unwrap();
    (built.archive, built.sha256)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn greet(port: u16) -> Option<String> {
    let client = Client::connect(&format!("127.0.0.1:{port}")).await.ok()?;
    client.call("greet", &["x"]).await.ok()
}

async fn status(port: u16) -> Status {
    let client = Client::connect(&format!("127.0.0.1:{port}")).await.unwrap();
    client
        .call("shoal.status", &Vec::<()>::new())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_service_takes_a_version_through_its_reload_and_keeps_the_old_one_on_a_bad_one() {
    let dir = Scratch::new("central-sdk");
    let data = dir.path().join("agent");
    let port = free_port();
    let manifest = format!(
        "[package]\nname = \"hello\"\nversion = \"1.0.0\"\nkind = \"service\"\n\n\
         [run]\ncommand = \"{SHOAL}\"\nargs = [\"example\", \"hello\", \"--config\", \"hello.toml\"]\n\
         restart = \"always\"\n\n[health]\nport = {port}\nping = true\ninterval = \"2s\"\n"
    );
    let config = format!("[rpc]\nlisten = \"127.0.0.1:{port}\"\n\n[hello]\ngreeting = \"Hello\"\n");
    let (archive, sha256) = package(
        dir.path(),
        &[
            ("shoal.toml", &manifest, false),
            ("hello.toml", &config, false),
        ],
    );
    let run = agent(&data, QUICK).await;
    let running = &run.0;
    let central = running.agent().central();
    running.agent().install(&archive, &sha256).await.unwrap();
    assert_eq!(greet(port).await.as_deref(), Some("Hello, x"));
    assert_eq!(status(port).await.center_version, None);

    // A version reaches the running service, which reloads and acknowledges it.
    let v1 = version("hello", 1, "[hello]\ngreeting = \"Bonjour\"\n");
    assert_eq!(
        central.receive(v1.clone()).await.unwrap(),
        Received::Accepted
    );
    let got = settled(running, "hello", 1).await;
    assert_eq!(got.delivery, Delivery::Applied);
    assert_eq!(got.sha256, v1.sha256);
    assert_eq!(greet(port).await.as_deref(), Some("Bonjour, x"));
    let after_v1 = status(port).await;
    assert_eq!(after_v1.center_version, Some(1));
    let reloaded_at = after_v1.last_reload.as_ref().map(|r| r.at);

    // Only hello's own processes speak for hello on the programs socket.
    let socket = format!("unix:{}", data.join("programs.sock").display());
    let outsider = Client::connect(&socket).await.unwrap();
    let forged = ConfigApplied {
        name: "hello".into(),
        version: 1,
        delivery: Delivery::Rejected {
            reason: "forged".into(),
        },
    };
    let refused = outsider
        .call::<_, ()>(methods::CONFIG_APPLIED, &[forged])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("only a process of hello"),
        "{refused}"
    );
    assert_eq!(
        held(running, "hello").await.unwrap().delivery,
        Delivery::Applied
    );

    // The same version again is not applied again.
    assert_eq!(central.receive(v1.clone()).await.unwrap(), Received::Known);

    // A version the service's check refuses: rejected with its reason, the old one in force.
    let bad = version("hello", 2, "[hello]\ngreting = \"typo\"\n");
    assert_eq!(central.receive(bad).await.unwrap(), Received::Accepted);
    let got = settled(running, "hello", 2).await;
    match &got.delivery {
        Delivery::Rejected { reason } => assert!(reason.contains("greting"), "{reason}"),
        other => panic!("expected rejected, got {other:?}"),
    }
    assert_eq!(greet(port).await.as_deref(), Some("Bonjour, x"));
    assert_eq!(status(port).await.center_version, Some(1));
    let link = data.join("apps/hello/center/config.toml");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("v1.toml"));

    // Empty, or not what its sha256 says: never stored, never applied.
    let mut wrong = version("hello", 3, "[hello]\ngreeting = \"Evil\"\n");
    wrong.sha256 = hex(&sha2::Sha256::digest(b"something else"));
    assert!(
        matches!(central.receive(wrong).await.unwrap(), Received::Refused(r) if r.contains("sha256"))
    );
    let empty = version("hello", 3, "");
    assert!(
        matches!(central.receive(empty).await.unwrap(), Received::Refused(r) if r.contains("empty"))
    );
    assert_eq!(held(running, "hello").await.unwrap().version, 2);

    // A good version after the rejected one.
    let v3 = version("hello", 3, "[hello]\ngreeting = \"Hola\"\n");
    central.receive(v3).await.unwrap();
    assert_eq!(
        settled(running, "hello", 3).await.delivery,
        Delivery::Applied
    );
    assert_eq!(greet(port).await.as_deref(), Some("Hola, x"));
    let v3_status = status(port).await;
    assert_ne!(v3_status.last_reload.as_ref().map(|r| r.at), reloaded_at);

    // The service restarted starts with the version in force.
    let pid = v3_status.pid;
    running
        .agent()
        .act(&Name::new("hello").unwrap(), AppAction::Restart)
        .await
        .unwrap();
    until("hello restarted and answering", || async {
        let s = Client::connect(&format!("127.0.0.1:{port}")).await.ok()?;
        let status: Status = s.call("shoal.status", &Vec::<()>::new()).await.ok()?;
        (status.pid != pid).then_some(())
    })
    .await;
    assert_eq!(greet(port).await.as_deref(), Some("Hola, x"));
    let restarted = status(port).await;
    assert_eq!(restarted.center_version, Some(3));
    assert_eq!(restarted.last_reload, None, "a start is not a reload");

    // The agent restarted: it reports what it held and applies nothing again.
    stop_agent(run).await;
    let run = agent(&data, QUICK).await;
    let running = &run.0;
    let got = held(running, "hello").await.unwrap();
    assert_eq!((got.version, got.delivery), (3, Delivery::Applied));
    // The service finds the new agent and tells it what it runs; nothing is reloaded.
    let v3_again = version("hello", 3, "[hello]\ngreeting = \"Hola\"\n");
    assert_eq!(
        running.agent().central().receive(v3_again).await.unwrap(),
        Received::Known
    );
    assert_eq!(greet(port).await.as_deref(), Some("Hola, x"));
    assert_eq!(status(port).await.last_reload, None);

    // The service, adopted by the new agent, follows it: a new version is applied.
    let hello = Name::new("hello").unwrap();
    let central = running.agent().central();
    central
        .receive(version("hello", 4, "[hello]\ngreeting = \"Salut\"\n"))
        .await
        .unwrap();
    assert_eq!(
        settled(running, "hello", 4).await.delivery,
        Delivery::Applied
    );
    assert_eq!(greet(port).await.as_deref(), Some("Salut, x"));

    // The agent's watch answers at once for a service that has another version.
    let answered = central
        .watch(&hello, Some(1), Duration::from_secs(30))
        .await;
    assert_eq!(answered, Some(4));

    // A version for a stopped service stays pending until it starts with it.
    running.agent().act(&hello, AppAction::Stop).await.unwrap();
    central
        .receive(version("hello", 5, "[hello]\ngreeting = \"Ciao\"\n"))
        .await
        .unwrap();
    assert_eq!(
        held(running, "hello").await.unwrap().delivery,
        Delivery::Pending
    );
    running.agent().act(&hello, AppAction::Start).await.unwrap();
    assert_eq!(
        settled(running, "hello", 5).await.delivery,
        Delivery::Applied
    );
    assert_eq!(greet(port).await.as_deref(), Some("Ciao, x"));

    // A bad version for a stopped service: its start fails, the version is rejected, and the
    // next start runs the version it had.
    running.agent().act(&hello, AppAction::Stop).await.unwrap();
    central
        .receive(version("hello", 6, "[hello]\ngreting = \"typo\"\n"))
        .await
        .unwrap();
    // Started once the link names it (before, the service would start with 5 and refuse 6
    // in a reload instead).
    until("the link naming v6", || async {
        (std::fs::read_link(&link).ok()? == Path::new("v6.toml")).then_some(())
    })
    .await;
    running.agent().act(&hello, AppAction::Start).await.unwrap();
    match settled(running, "hello", 6).await.delivery {
        Delivery::Rejected { reason } => assert!(reason.contains("code 2"), "{reason}"),
        other => panic!("expected rejected, got {other:?}"),
    }
    let answer = until("hello back on version 5", || async {
        greet(port).await.filter(|a| a == "Ciao, x")
    })
    .await;
    assert_eq!(answer, "Ciao, x");
    assert_eq!(status(port).await.center_version, Some(5));
    running.agent().act(&hello, AppAction::Stop).await.unwrap();
    stop_agent(run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_without_the_sdk_gets_its_file_and_its_signal_and_dying_of_it_is_a_rejection() {
    let dir = Scratch::new("central-file");
    let data = dir.path().join("agent");
    let manifest = "[package]\nname = \"plain\"\nversion = \"1.0.0\"\nkind = \"service\"\n\n\
                    [run]\ncommand = \"bin/plain\"\nrestart = \"on-failure\"\n\n\
                    [config]\npath = \"etc/plain.conf\"\nreload_signal = \"HUP\"\n";
    // On SIGHUP: copies the file it was given to `seen`, or exits 1 when it says "die".
    let script = "#!/bin/sh\n\
                  conf=\"$SHOAL_APP_DATA/etc/plain.conf\"\n\
                  reload() {\n  if grep -q die \"$conf\"; then exit 1; fi\n  \
                  cp \"$conf\" \"$SHOAL_APP_DATA/seen.tmp\" && mv \"$SHOAL_APP_DATA/seen.tmp\" \"$SHOAL_APP_DATA/seen\"\n}\n\
                  trap reload HUP\n\
                  while :; do sleep 0.05; done\n";
    let (archive, sha256) = package(
        dir.path(),
        &[("shoal.toml", manifest, false), ("bin/plain", script, true)],
    );
    let run = agent(&data, SETTLE).await;
    let running = &run.0;
    let central = running.agent().central();
    // A version that arrives before its app: delivered as its manifest says once installed.
    central
        .receive(version("plain", 1, "level = 1\n"))
        .await
        .unwrap();
    running.agent().install(&archive, &sha256).await.unwrap();
    assert_eq!(
        settled(running, "plain", 1).await.delivery,
        Delivery::Applied
    );
    let seen = data.join("apps/plain/data/seen");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "level = 1\n");
    assert_eq!(
        std::fs::read_to_string(data.join("apps/plain/data/etc/plain.conf")).unwrap(),
        "level = 1\n"
    );

    central.receive(version("plain", 2, "die\n")).await.unwrap();
    match settled(running, "plain", 2).await.delivery {
        Delivery::Rejected { reason } => {
            assert_eq!(reason, "exit code 1 after SIGHUP");
        }
        other => panic!("expected rejected, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "level = 1\n");

    // Written while the program is stopped: applied once it has started and stayed up.
    let plain = Name::new("plain").unwrap();
    running.agent().act(&plain, AppAction::Stop).await.unwrap();
    central
        .receive(version("plain", 3, "level = 3\n"))
        .await
        .unwrap();
    let conf = data.join("apps/plain/data/etc/plain.conf");
    until("the file of version 3 written", || async {
        (std::fs::read_to_string(&conf).ok()? == "level = 3\n").then_some(())
    })
    .await;
    assert_eq!(
        held(running, "plain").await.unwrap().delivery,
        Delivery::Pending
    );
    running.agent().act(&plain, AppAction::Start).await.unwrap();
    assert_eq!(
        settled(running, "plain", 3).await.delivery,
        Delivery::Applied
    );
    running.agent().act(&plain, AppAction::Stop).await.unwrap();
    stop_agent(run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_restarted_for_its_file_is_judged_after_the_restart() {
    let dir = Scratch::new("central-restart");
    let data = dir.path().join("agent");
    let manifest = "[package]\nname = \"again\"\nversion = \"1.0.0\"\nkind = \"service\"\n\n\
                    [run]\ncommand = \"bin/again\"\nrestart = \"on-failure\"\n\n\
                    [config]\npath = \"again.conf\"\n";
    // Reads its file at start: exits 1 when it says "die", else notes what it read.
    let script = "#!/bin/sh\n\
                  conf=\"$SHOAL_APP_DATA/again.conf\"\n\
                  if [ -f \"$conf\" ] && grep -q die \"$conf\"; then exit 1; fi\n\
                  if [ -f \"$conf\" ]; then cp \"$conf\" \"$SHOAL_APP_DATA/started\"; fi\n\
                  while :; do sleep 0.05; done\n";
    let (archive, sha256) = package(
        dir.path(),
        &[("shoal.toml", manifest, false), ("bin/again", script, true)],
    );
    let run = agent(&data, SETTLE).await;
    let running = &run.0;
    let central = running.agent().central();
    running.agent().install(&archive, &sha256).await.unwrap();

    central
        .receive(version("again", 1, "mode = fast\n"))
        .await
        .unwrap();
    assert_eq!(
        settled(running, "again", 1).await.delivery,
        Delivery::Applied
    );
    let started = data.join("apps/again/data/started");
    assert_eq!(std::fs::read_to_string(&started).unwrap(), "mode = fast\n");

    central.receive(version("again", 2, "die\n")).await.unwrap();
    match settled(running, "again", 2).await.delivery {
        Delivery::Rejected { reason } => assert_eq!(reason, "exit code 1 after a restart"),
        other => panic!("expected rejected, got {other:?}"),
    }
    running
        .agent()
        .act(&Name::new("again").unwrap(), AppAction::Stop)
        .await
        .unwrap();
    stop_agent(run).await;
}
