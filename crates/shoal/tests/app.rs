//! The application runtime in process: lifecycle hooks, services chosen by configuration,
//! shared state, layers and event hooks, reload, graceful close, the admin methods and status,
//! timers and the watchdog. Real sockets on loopback; time is paused where timers matter.

mod common;

#[path = "../examples/calculator.rs"]
#[allow(dead_code)]
mod calculator;
#[path = "../examples/hello.rs"]
#[allow(dead_code)]
mod hello;
#[path = "../examples/lifecycle.rs"]
#[allow(dead_code)]
mod lifecycle;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config_args, no_env, wait_for, Scratch};
use serde::Deserialize;
use shoal::events::{priority, Event, EventKind};
use shoal::rpc::Request;
use shoal::status::{ErrorRecord, ServiceState, Status};
use shoal::timer::{TestClock, Timer, Zone};
use shoal::workers::WorkerState;
use shoal::{codes, App, BoxError, Client, Context, Exit, Handle, Hooks, RpcError, WorkerKind};

const LIMIT: Duration = Duration::from_secs(10);

async fn client(running: &shoal::Running) -> Client {
    Client::connect(&running.rpc_addr().expect("rpc listener").to_string())
        .await
        .unwrap()
}

fn code(e: shoal::Error) -> Option<i64> {
    match e {
        shoal::Error::Remote(remote) => remote.code,
        other => panic!("expected an error reply, got {other}"),
    }
}

#[tokio::test]
async fn hello_greets_with_the_configured_greeting_and_reloads_whole_or_not_at_all() {
    let dir = Scratch::new("hello");
    let toml = |greeting: &str| {
        format!("[rpc]\nlisten = \"127.0.0.1:0\"\n\n[hello]\ngreeting = {greeting}\n")
    };
    let file = dir.write("hello.toml", &toml("\"Hello\""));
    let running = hello::app()
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let greeter = hello::HelloClient::new(client(&running).await);
    assert_eq!(greeter.greet("world".into()).await.unwrap(), "Hello, world");

    dir.write("hello.toml", &toml("\"Hi\""));
    running.handle().reload().await.unwrap();
    assert_eq!(greeter.greet("world".into()).await.unwrap(), "Hi, world");
    let status = running.handle().status();
    assert!(status.last_reload.as_ref().unwrap().ok);

    // A bad value: rejected naming the file and the key; the old greeting stays.
    dir.write("hello.toml", &toml("5"));
    let error = running.handle().reload().await.unwrap_err();
    assert!(error.contains("hello.toml"), "{error}");
    assert!(error.contains("hello.greeting"), "{error}");
    assert_eq!(greeter.greet("world".into()).await.unwrap(), "Hi, world");
    let status = running.handle().status();
    let reload = status.last_reload.unwrap();
    assert!(!reload.ok);
    assert!(reload.error.unwrap().contains("hello.greeting"));
    let last_error = status.last_error.unwrap();
    assert_eq!(last_error.origin, "reload");
    assert!(
        last_error.message.contains("stays in force"),
        "{last_error:?}"
    );

    // A bad runtime key is rejected the same way.
    dir.write(
        "hello.toml",
        "[rpc]\nlisten = \"nowhere\"\n\n[hello]\ngreeting = \"Yo\"\n",
    );
    let error = running.handle().reload().await.unwrap_err();
    assert!(error.contains("rpc.listen"), "{error}");
    assert_eq!(greeter.greet("world".into()).await.unwrap(), "Hi, world");

    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn a_bad_configuration_at_start_is_exit_2_before_anything_is_bound() {
    let dir = Scratch::new("badstart");
    let socket = dir.join("rpc.sock");
    let listen = format!("[rpc]\nlisten = \"unix:{}\"\n", socket.display());
    for text in [
        "[rpc]\nlisten = 5\n".to_string(),
        format!("{listen}[hello]\ngreeting = 5\n"),
        format!("{listen}[services]\nenabled = [\"nope\"]\n"),
        format!("{listen}[shutdown]\ngrace = \"soon\"\n"),
        format!("{listen}[rpc\n"),
    ] {
        let file = dir.write("bad.toml", &text);
        let exit = hello::app()
            .args(config_args(&file), no_env())
            .start()
            .await
            .unwrap_err()
            .exit();
        assert_eq!(exit, Exit::BadConfig, "{text}");
        assert!(!socket.exists(), "nothing was bound: {text}");
    }
    let exit = hello::app()
        .args(["--frobnicate"], no_env())
        .start()
        .await
        .unwrap_err()
        .exit();
    assert_eq!(exit, Exit::BadConfig, "bad arguments");
    let missing = dir.join("missing.toml");
    let exit = hello::app()
        .args(config_args(&missing), no_env())
        .start()
        .await
        .unwrap_err()
        .exit();
    assert_eq!(exit, Exit::BadConfig);
}

#[tokio::test]
async fn environment_overrides_reach_typed_sections() {
    let dir = Scratch::new("env");
    let file = dir.write(
        "hello.toml",
        "[rpc]\nlisten = \"127.0.0.1:0\"\n[hello]\ngreeting = \"Hello\"\n",
    );
    let env = vec![("SHOAL_HELLO__GREETING".to_string(), "Howdy".to_string())];
    let running = hello::app()
        .args(config_args(&file), env)
        .start()
        .await
        .unwrap();
    let greeter = hello::HelloClient::new(client(&running).await);
    assert_eq!(greeter.greet("you".into()).await.unwrap(), "Howdy, you");
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn a_reload_reads_every_file_and_include_again_or_keeps_the_old_configuration() {
    let dir = Scratch::new("layers");
    dir.write("shared.toml", "[hello]\ngreeting = \"Hello\"\n");
    let base = dir.write(
        "base.toml",
        "include = [\"shared.toml\"]\n[rpc]\nlisten = \"127.0.0.1:0\"\n",
    );
    let local = dir.write("local.toml", "[status]\npublic_config = true\n");
    let args: Vec<String> = [&base, &local]
        .iter()
        .flat_map(|file| config_args(file))
        .collect();
    let running = hello::app().args(args, no_env()).start().await.unwrap();
    let greeter = hello::HelloClient::new(client(&running).await);
    assert_eq!(greeter.greet("world".into()).await.unwrap(), "Hello, world");
    let status = running.handle().status();
    let files = format!("{}, {}", base.display(), local.display());
    assert_eq!(status.config_file.as_deref(), Some(files.as_str()));

    // A change in the included file is read on reload.
    dir.write("shared.toml", "[hello]\ngreeting = \"Hi\"\n");
    running.handle().reload().await.unwrap();
    assert_eq!(greeter.greet("world".into()).await.unwrap(), "Hi, world");

    // A later file wins over the include, on reload too.
    dir.write("local.toml", "[hello]\ngreeting = \"Yo\"\n");
    running.handle().reload().await.unwrap();
    assert_eq!(greeter.greet("world".into()).await.unwrap(), "Yo, world");
    dir.write("local.toml", "\n");
    running.handle().reload().await.unwrap();
    assert_eq!(greeter.greet("world".into()).await.unwrap(), "Hi, world");

    // A bad included file: refused naming that file, the key and the line; the old greeting
    // stays in force.
    let shared = dir.write("shared.toml", "[hello]\n\ngreeting = 5\n");
    let error = running.handle().reload().await.unwrap_err();
    let place = format!("{}:3: key `hello.greeting`", shared.display());
    assert!(error.contains(&place), "{error}");
    assert_eq!(greeter.greet("world".into()).await.unwrap(), "Hi, world");
    let reload = running.handle().status().last_reload.unwrap();
    assert!(!reload.ok && reload.error.unwrap().contains(&place));

    // An include cycle is refused the same way, naming both files.
    dir.write("shared.toml", "include = [\"base.toml\"]\n");
    let error = running.handle().reload().await.unwrap_err();
    assert!(error.contains("include cycle"), "{error}");
    assert!(
        error.contains(&format!("{} includes", base.display())),
        "{error}"
    );
    assert!(error.contains(&shared.display().to_string()), "{error}");
    assert_eq!(greeter.greet("world".into()).await.unwrap(), "Hi, world");

    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn services_enabled_by_configuration_start_with_what_they_require() {
    let dir = Scratch::new("calc");
    let file = dir.write(
        "calc.toml",
        "[rpc]\nlisten = \"127.0.0.1:0\"\n[services]\nenabled = [\"calculator\"]\n",
    );
    let running = calculator::app()
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    assert_eq!(
        running.handle().status().services,
        vec!["history".to_string(), "calculator".to_string()]
    );
    let c = client(&running).await;
    let calc = calculator::CalculatorClient::new(c.clone());
    let history = calculator::HistoryClient::new(c.clone());
    assert_eq!(calc.add(2, 3).await.unwrap(), 5);
    assert_eq!(calc.mul(4, 5).await.unwrap(), 20);
    assert_eq!(
        code(calc.div(1, 0).await.unwrap_err()),
        Some(codes::APP_MIN + 2)
    );
    assert_eq!(
        history.recent(10).await.unwrap(),
        vec!["4 * 5 = 20".to_string(), "2 + 3 = 5".to_string()]
    );
    assert_eq!(history.total().await.unwrap(), 2);
    // The calculator's own metrics, answered beside the runtime's.
    let metrics: shoal::metrics::Snapshot = c.call("shoal.metrics", &()).await.unwrap();
    let ops = |op| metrics.counter("calculator_operations_total", &[("op", op)]);
    assert_eq!(
        (ops("add"), ops("mul"), ops("div")),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(metrics.gauge("calculator_history_entries", &[]), Some(2.0));
    let digits = metrics
        .histogram("calculator_operand_digits", &[("op", "mul")])
        .unwrap();
    assert_eq!((digits.count, digits.sum), (2, 2.0));
    assert_eq!(digits.buckets[0].le, 1.0);
    assert_eq!(digits.buckets.last().map(|b| b.le), Some(16.0));
    let timers: Vec<(String, String)> = running
        .handle()
        .status()
        .timers
        .into_iter()
        .map(|t| (t.name, t.schedule))
        .collect();
    assert_eq!(
        timers,
        [
            ("heartbeat".to_string(), "every 5s".to_string()),
            ("trim".to_string(), "cron: 0 * * * * *".to_string())
        ]
    );
    let handle = running.handle().clone();
    wait_for("the two auditors", LIMIT, || {
        let workers = handle.status().workers;
        let auditors: Vec<(usize, WorkerKind)> = workers
            .iter()
            .filter(|w| w.group == "auditor" && w.state == WorkerState::Running)
            .map(|w| (w.index, w.kind))
            .collect();
        (auditors == [(0, WorkerKind::Task), (1, WorkerKind::Task)]).then_some(())
    })
    .await;
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);

    // Only the history: the calculator's methods are not served.
    let file = dir.write(
        "calc.toml",
        "[rpc]\nlisten = \"127.0.0.1:0\"\n[services]\nenabled = [\"history\"]\n",
    );
    let running = calculator::app()
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let c = client(&running).await;
    let calc = calculator::CalculatorClient::new(c);
    assert_eq!(
        code(calc.add(1, 1).await.unwrap_err()),
        Some(codes::METHOD_NOT_FOUND)
    );
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[shoal::service]
pub trait Probe {
    async fn hits(&self, cx: &Context) -> u64;
    async fn forbidden(&self) -> bool;
    async fn slow(&self) -> bool;
    async fn stuck(&self) -> bool;
}

#[derive(Default)]
struct Hits(AtomicU64);

#[derive(Default)]
struct ProbeImpl {
    started: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

impl Probe for ProbeImpl {
    async fn hits(&self, cx: &Context) -> u64 {
        let hits = cx.state::<Hits>().expect("shared state");
        hits.0.fetch_add(1, Ordering::Relaxed) + 1
    }
    async fn forbidden(&self) -> bool {
        true
    }
    async fn slow(&self) -> bool {
        self.started.notify_one();
        self.release.notified().await;
        true
    }
    async fn stuck(&self) -> bool {
        self.started.notify_one();
        std::future::pending::<()>().await;
        false
    }
}

#[test]
fn cyclic_and_unknown_requirements_are_exit_2() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cyclic = App::new("cycle", "0").setup(|app| {
            app.service("a", |_| Ok(ProbeServer::new(ProbeImpl::default())))
                .requires(["b"]);
            app.service("b", |_| Ok(ProbeServer::new(ProbeImpl::default())))
                .requires(["a"]);
            Ok(())
        });
        assert_eq!(cyclic.start().await.unwrap_err().exit(), Exit::BadConfig);
        let unknown = App::new("ghost", "0").setup(|app| {
            app.service("a", |_| Ok(ProbeServer::new(ProbeImpl::default())))
                .requires(["ghost"]);
            Ok(())
        });
        assert_eq!(unknown.start().await.unwrap_err().exit(), Exit::BadConfig);
    });
}

#[tokio::test]
async fn shared_state_layers_and_event_hooks_in_priority_order() {
    let dir = Scratch::new("events");
    let file = dir.write("app.toml", "[rpc]\nlisten = \"127.0.0.1:0\"\n");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let layered = Arc::new(AtomicU64::new(0));
    let app = {
        let seen = seen.clone();
        let layered = layered.clone();
        App::new("events", "1.2.3").setup(move |app| {
            app.state(Hits::default());
            app.serve(ProbeServer::new(ProbeImpl::default()));
            let layered = layered.clone();
            app.layer(tower::util::MapRequestLayer::new(move |req: Request| {
                layered.fetch_add(1, Ordering::Relaxed);
                req
            }));
            for (kind, prio, tag) in [
                (EventKind::Startup, priority::LOW, "startup-low"),
                (EventKind::Startup, priority::HIGH, "startup-high"),
                (EventKind::ConfigLoaded, priority::NORMAL, "config"),
                (EventKind::ServicesStarted, priority::NORMAL, "started"),
                (EventKind::Reload, priority::NORMAL, "reload"),
                (EventKind::Close, priority::NORMAL, "close"),
            ] {
                let seen = seen.clone();
                app.on(kind, prio, move |_| {
                    seen.lock().unwrap().push(tag.to_string());
                    Ok(())
                });
            }
            app.on(EventKind::BeforeCall, priority::HIGH, |event| {
                if let Event::BeforeCall(req) = event {
                    if req.method == "forbidden" {
                        return Err(Box::new(RpcError::new(4003, "not for you")) as BoxError);
                    }
                }
                Ok(())
            });
            let seen_after = seen.clone();
            app.on(EventKind::AfterCall, priority::NORMAL, move |event| {
                if let Event::AfterCall(outcome) = event {
                    seen_after.lock().unwrap().push(format!(
                        "after {} {}",
                        outcome.method,
                        outcome.error.as_ref().map_or(0, |e| e.code)
                    ));
                }
                Ok(())
            });
            Ok(())
        })
    };
    let running = app
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let probe = ProbeClient::new(client(&running).await);
    assert_eq!(probe.hits().await.unwrap(), 1);
    assert_eq!(probe.hits().await.unwrap(), 2);
    assert_eq!(code(probe.forbidden().await.unwrap_err()), Some(4003));
    assert_eq!(
        layered.load(Ordering::Relaxed),
        2,
        "the refused call never reached the layer"
    );
    running.handle().reload().await.unwrap();
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "startup-high",
            "startup-low",
            "config",
            "started",
            "after hits 0",
            "after hits 0",
            "config",
            "reload",
            "close"
        ]
    );
}

#[tokio::test]
async fn graceful_close_lets_in_flight_calls_finish_within_the_grace_period() {
    let dir = Scratch::new("grace");
    let file = dir.write(
        "app.toml",
        "[rpc]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"30s\"\n",
    );
    let probe_impl = ProbeImpl::default();
    let (started, release) = (probe_impl.started.clone(), probe_impl.release.clone());
    let closed = Arc::new(AtomicBool::new(false));
    struct OnClose(Arc<AtomicBool>);
    impl Hooks for OnClose {
        async fn on_close(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let running = App::new("grace", "0")
        .hooks(OnClose(closed.clone()))
        .setup(move |app| {
            app.serve(ProbeServer::new(probe_impl));
            Ok(())
        })
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let probe = ProbeClient::new(client(&running).await);
    let call = tokio::spawn(async move { probe.slow().await });
    started.notified().await;
    running.handle().close();
    wait_for("on_close", LIMIT, || {
        closed.load(Ordering::SeqCst).then_some(())
    })
    .await;
    assert_eq!(running.handle().status().state, ServiceState::Closing);
    release.notify_one();
    assert!(
        call.await.unwrap().unwrap(),
        "the in-flight call was answered"
    );
    let handle = running.handle().clone();
    assert_eq!(running.wait().await, Exit::Closed);
    let summary = handle.status().last_summary.expect("a summary at close");
    assert!(summary.text.contains("1 calls"), "{summary:?}");
}

#[tokio::test]
async fn past_the_grace_period_the_app_ends_with_exit_3() {
    let dir = Scratch::new("grace3");
    let file = dir.write(
        "app.toml",
        "[rpc]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"200ms\"\n",
    );
    let probe_impl = ProbeImpl::default();
    let started = probe_impl.started.clone();
    let running = App::new("grace3", "0")
        .setup(move |app| {
            app.serve(ProbeServer::new(probe_impl));
            Ok(())
        })
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let probe = ProbeClient::new(client(&running).await);
    let _call = tokio::spawn(async move { probe.stuck().await });
    started.notified().await;
    running.handle().close();
    assert_eq!(running.wait().await, Exit::GraceExpired);
}

#[tokio::test]
async fn admin_socket_answers_status_and_control_the_main_port_only_status() {
    let dir = Scratch::new("admin");
    let admin = dir.join("admin.sock");
    // A secret in a section of its own: the hello section denies unknown keys.
    let file = dir.write(
        "hello.toml",
        &format!(
            "[rpc]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"unix:{}\"\n[summary]\nevery = \"200ms\"\n[hello]\ngreeting = \"Hello\"\n[store]\npassword = \"s3cret\"\nurl = \"postgres://user:secretpw@h/db\"\n",
            admin.display()
        ),
    );
    let running = hello::app()
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let greeter = hello::HelloClient::new(client(&running).await);
    greeter.greet("a".into()).await.unwrap();
    greeter.greet("b".into()).await.unwrap();

    let admin_client = Client::connect(&format!("unix:{}", admin.display()))
        .await
        .unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&admin).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the admin socket is its owner's only");

    let status: Status = admin_client.call("shoal.status", &()).await.unwrap();
    assert_eq!(status.name, "hello");
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.pid, std::process::id());
    assert_eq!(status.state, ServiceState::Running);
    assert_eq!(status.config_file.as_deref(), Some(file.to_str().unwrap()));
    assert_eq!(
        status.config["store"]["password"].as_str(),
        Some("<redacted>")
    );
    assert_eq!(status.config["hello"]["greeting"].as_str(), Some("Hello"));
    assert_eq!(
        status.config["store"]["url"].as_str(),
        Some("postgres://user:<redacted>@h/db")
    );
    let greet = status.methods.iter().find(|m| m.method == "greet").unwrap();
    assert_eq!((greet.calls, greet.errors), (2, 0));
    assert_eq!(status.services, vec!["Hello".to_string()]);

    // The summary comes every 200 ms.
    // The summary comes every 200 ms; it counts the two greetings and the status call.
    let summary = wait_for("a summary of three calls", LIMIT, || {
        running
            .handle()
            .status()
            .last_summary
            .filter(|s| s.text.contains("3 calls"))
    })
    .await;
    assert!(summary.text.contains("0 call errors"), "{summary:?}");

    // Status on the main port too, but no control there.
    let main = client(&running).await;
    let status: Status = main.call("shoal.status", &()).await.unwrap();
    assert_eq!(status.name, "hello");
    // Without `status.public_config`, the port anyone reaches shows no configuration.
    assert!(status.config.is_empty(), "{:?}", status.config);
    let refused = main.call::<_, bool>("shoal.close", &()).await.unwrap_err();
    assert_eq!(code(refused), Some(codes::METHOD_NOT_FOUND));

    // Reload and close through the admin socket.
    let reloaded: bool = admin_client.call("shoal.reload", &()).await.unwrap();
    assert!(reloaded);
    assert!(running.handle().status().last_reload.unwrap().ok);
    let closing: bool = admin_client.call("shoal.close", &()).await.unwrap();
    assert!(closing);
    assert_eq!(running.wait().await, Exit::Closed);
    assert!(!admin.exists(), "the admin socket file is removed at exit");
}

/// `shoal.status` in raw bytes: with no argument it answers; with any it is an
/// invalid-params error naming the method and the count, and the connection goes on.
#[tokio::test]
async fn status_refuses_extra_arguments_in_raw_bytes() {
    use shoal::rpc::codec::{Decoder, Message};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = Scratch::new("status-args");
    let file = dir.write(
        "hello.toml",
        "[rpc]\nlisten = \"127.0.0.1:0\"\n[hello]\ngreeting = \"Hello\"\n",
    );
    let running = hello::app()
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let addr = running.rpc_addr().unwrap().to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut dec = Decoder::default();
    async fn answer(
        s: &mut tokio::net::TcpStream,
        buf: &mut bytes::BytesMut,
        dec: &mut Decoder,
        bytes: &[u8],
    ) -> (shoal::Value, shoal::Value) {
        s.write_all(bytes).await.unwrap();
        loop {
            if let Some(Message::Response { error, result, .. }) = dec.decode(buf).unwrap() {
                return (error, result);
            }
            let n = tokio::time::timeout(LIMIT, s.read_buf(buf))
                .await
                .expect("no answer")
                .unwrap();
            assert!(n > 0, "the connection closed");
        }
    }
    // [0, 1, "shoal.status", []]
    let (error, result) = answer(
        &mut s,
        &mut buf,
        &mut dec,
        b"\x94\x00\x01\xacshoal.status\x90",
    )
    .await;
    assert!(error.is_nil(), "{error}");
    assert_eq!(result["name"].as_str(), Some("hello"));
    // [0, 2, "shoal.status", [true]]
    let (error, _) = answer(
        &mut s,
        &mut buf,
        &mut dec,
        b"\x94\x00\x02\xacshoal.status\x91\xc3",
    )
    .await;
    assert_eq!(error["code"].as_i64(), Some(codes::INVALID_PARAMS));
    assert_eq!(
        error["message"].as_str(),
        Some("shoal.status takes 0 argument(s), got 1")
    );
    // The connection goes on.
    let (error, _) = answer(
        &mut s,
        &mut buf,
        &mut dec,
        b"\x94\x00\x03\xacshoal.status\x90",
    )
    .await;
    assert!(error.is_nil(), "{error}");
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

/// `rpc.max_connections` reaches the server the runtime builds: past it a connection is
/// closed unanswered, and once one closes a new one is served again.
#[tokio::test]
async fn a_configured_connection_cap_is_honoured_by_the_running_service() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // [0, 1, "shoal.ping", []]
    const PING: &[u8] = b"\x94\x00\x01\xaashoal.ping\x90";
    /// Sends a ping; the bytes of the answer, empty when the server closed the connection.
    async fn ping(s: &mut tokio::net::TcpStream) -> Vec<u8> {
        let _ = s.write_all(PING).await;
        let mut buf = vec![0; 64];
        match tokio::time::timeout(LIMIT, s.read(&mut buf)).await {
            Ok(Ok(n)) => buf[..n].to_vec(),
            Ok(Err(_)) => Vec::new(),
            Err(_) => panic!("neither answered nor closed"),
        }
    }

    let dir = Scratch::new("max-connections");
    let file = dir.write(
        "hello.toml",
        "[rpc]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\n[hello]\ngreeting = \"Hello\"\n",
    );
    let running = hello::app()
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let addr = running.rpc_addr().unwrap().to_string();
    let connect = || tokio::net::TcpStream::connect(addr.clone());
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = connect().await.unwrap();
        assert!(!ping(&mut s).await.is_empty(), "refused under the cap");
        open.push(s);
    }
    let mut third = connect().await.unwrap();
    assert!(ping(&mut third).await.is_empty(), "answered past the cap");
    drop(open.pop());
    // The server frees the place once it sees the close.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let mut s = connect().await.unwrap();
        if !ping(&mut s).await.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn status_public_config_shows_the_redacted_configuration_on_the_main_port() {
    let dir = Scratch::new("public-config");
    let file = dir.write(
        "hello.toml",
        "[rpc]\nlisten = \"127.0.0.1:0\"\n[status]\npublic_config = true\n[hello]\ngreeting = \"Hello\"\n[store]\nurl = \"redis://:pw@cache\"\ndsn = \"host=db password=hunter2\"\n",
    );
    let running = hello::app()
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let status: Status = client(&running)
        .await
        .call("shoal.status", &())
        .await
        .unwrap();
    assert_eq!(status.config["hello"]["greeting"].as_str(), Some("Hello"));
    assert_eq!(
        status.config["store"]["url"].as_str(),
        Some("redis://:<redacted>@cache")
    );
    assert_eq!(
        status.config["store"]["dsn"].as_str(),
        Some("host=db password=<redacted>")
    );
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn the_largest_values_of_every_range_start_serve_and_close() {
    let dir = Scratch::new("largest");
    let file = dir.write(
        "hello.toml",
        "[rpc]\nlisten = \"127.0.0.1:0\"\nmax_message = 1073741824\nmax_in_flight = 1000000\n\
         blocking_threads = 4096\n[shutdown]\ngrace = \"24h\"\n[control]\nhandover_timeout = \"24h\"\n\
         [watchdog]\ntimeout = \"24h\"\n[summary]\nevery = \"24h\"\n\
         [monitor]\npublish = \"tcp://127.0.0.1:0\"\nevery = \"24h\"\n[hello]\ngreeting = \"Hello\"\n",
    );
    let running = hello::app()
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let greeter = hello::HelloClient::new(client(&running).await);
    assert_eq!(greeter.greet("world".into()).await.unwrap(), "Hello, world");
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

/// Starts hello with `text` as its configuration (line 1 is `[section]`, line 2 the address
/// under test), or only checks it with `--check`; the start must end in an error or answer.
async fn start_error(
    dir: &Scratch,
    text: &str,
    check: bool,
) -> (std::path::PathBuf, shoal::StartError) {
    let file = dir.write(
        "hello.toml",
        &format!("{text}\n[hello]\ngreeting = \"Hi\"\n"),
    );
    let mut args = config_args(&file);
    if check {
        args.push("--check".into());
    }
    match hello::app().args(args, no_env()).start().await {
        Ok(running) => {
            running.handle().close();
            running.wait().await;
            panic!("{text:?} started");
        }
        Err(e) => (file, e),
    }
}

#[tokio::test]
async fn a_failed_bind_names_the_key_and_the_file_and_check_says_why_an_address_cannot_be_used() {
    let dir = Scratch::new("bind-errors");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let live = dir.join("live.sock");
    let _live = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let missing = dir.join("no/such/dir/admin.sock");
    let regular = dir.write("plain.txt", "not a socket");

    // (configuration, key, what the error says, whether --check only notes it)
    let cases = [
        (
            format!("[rpc]\nlisten = \"{taken}\""),
            "rpc.listen",
            taken.clone(),
            true,
        ),
        (
            format!("[rpc]\nlisten = \"unix:{}\"", live.display()),
            "rpc.listen",
            format!("{} is in use", live.display()),
            true,
        ),
        (
            format!("[metrics]\nlisten = \"{taken}\""),
            "metrics.listen",
            taken.clone(),
            true,
        ),
        (
            format!("[admin]\nlisten = \"unix:{}\"", missing.display()),
            "admin.listen",
            format!(
                "the directory {} cannot be used",
                missing.parent().unwrap().display()
            ),
            false,
        ),
        (
            format!("[admin]\nlisten = \"unix:{}\"", regular.display()),
            "admin.listen",
            format!(
                "{} exists and is a regular file, not a socket",
                regular.display()
            ),
            false,
        ),
        (
            format!("[rpc]\nlisten = \"unix:{}\"", regular.display()),
            "rpc.listen",
            format!(
                "{} exists and is a regular file, not a socket",
                regular.display()
            ),
            false,
        ),
    ];
    for (text, key, says, only_noted) in cases {
        let (file, e) = start_error(&dir, &text, false).await;
        let at = format!("{}:2: key `{key}`: ", file.display());
        let shown = e.to_string();
        assert_eq!(e.exit(), Exit::Failed, "{shown}");
        assert!(
            shown.contains(&at) && shown.contains(&says),
            "{text}: {shown}"
        );

        let (_, e) = start_error(&dir, &text, true).await;
        let shown = e.to_string();
        assert!(
            shown.contains(&at) && shown.contains(&says),
            "--check {text}: {shown}"
        );
        match only_noted {
            // In use, perhaps by this very service: valid, with a note.
            true => {
                assert_eq!(e.exit(), Exit::Closed, "{shown}");
                assert!(
                    shown.contains("is valid") && shown.contains("note: "),
                    "{shown}"
                );
            }
            false => assert_eq!(e.exit(), Exit::BadConfig, "{shown}"),
        }
    }
    // Nothing of a failed start is left behind.
    assert!(!missing.parent().unwrap().exists());
    assert_eq!(std::fs::read_to_string(&regular).unwrap(), "not a socket");
}

#[derive(Default)]
struct CountErrors(Arc<Mutex<Vec<ErrorRecord>>>);

impl Hooks for CountErrors {
    fn on_error(&self, error: &ErrorRecord) {
        self.0.lock().unwrap().push(error.clone());
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_timer_is_counted_and_reported_and_the_app_goes_on() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let ticks = Arc::new(AtomicU64::new(0));
    let clock = Arc::new(TestClock::starting_at(
        "2026-11-22T10:00:00Z".parse().unwrap(),
    ));
    let app = {
        let ticks = ticks.clone();
        App::new("timers", "0")
            .hooks(CountErrors(errors.clone()))
            .clock(clock, Zone::Utc)
            .setup(move |app| {
                app.timer(Timer::new("boom", "every 1s".parse()?, || async {
                    Err("the disk is full".into())
                }));
                app.timer(Timer::new("tick", "every 1s".parse()?, move || {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    async { Ok(()) }
                }));
                Ok(())
            })
    };
    let running = app
        .args(Vec::<String>::new(), no_env())
        .start()
        .await
        .unwrap();
    wait_for("three ticks", Duration::from_secs(60), || {
        (ticks.load(Ordering::Relaxed) >= 3).then_some(())
    })
    .await;
    let status = running.handle().status();
    let boom = status.timers.iter().find(|t| t.name == "boom").unwrap();
    assert!(boom.failures >= 3, "{boom:?}");
    assert_eq!(boom.last_error.as_deref(), Some("the disk is full"));
    let last = status.last_error.unwrap();
    assert_eq!(last.origin, "timer boom");
    assert_eq!(last.message, "the disk is full");
    assert!(
        errors.lock().unwrap().len() >= 3,
        "on_error saw every failure"
    );
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_ends_an_app_whose_heartbeats_stop_with_exit_4() {
    let dir = Scratch::new("watchdog");
    let file = dir.write(
        "lifecycle.toml",
        "[watchdog]\ntimeout = \"5s\"\n[worker]\nbeat_every = \"1s\"\nbeats = 3\n",
    );
    let running = lifecycle::app()
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let handle = running.handle().clone();
    assert_eq!(running.wait().await, Exit::Watchdog);
    let status = handle.status();
    let error = status.last_error.unwrap();
    assert_eq!(error.origin, "watchdog");
    assert!(
        error.message.starts_with("no heartbeat for 5s"),
        "{}",
        error.message
    );
    assert!(status.last_heartbeat.is_some());
}

#[tokio::test(start_paused = true)]
async fn the_run_loop_ending_closes_the_app_with_its_outcome() {
    struct Finite(Result<(), &'static str>);
    impl Hooks for Finite {
        async fn run(&self, _app: Handle) -> Result<(), BoxError> {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.0.map_err(Into::into)
        }
    }
    let ok = App::new("finite", "0").hooks(Finite(Ok(())));
    assert_eq!(ok.start().await.unwrap().wait().await, Exit::Closed);
    let failing = App::new("finite", "0").hooks(Finite(Err("lost the database")));
    let running = failing.start().await.unwrap();
    let handle = running.handle().clone();
    assert_eq!(running.wait().await, Exit::Failed);
    assert_eq!(
        handle.status().last_error.unwrap().message,
        "lost the database"
    );

    struct FailsToStart;
    impl Hooks for FailsToStart {
        async fn on_start(&self, _app: &Handle) -> Result<(), BoxError> {
            Err("no database".into())
        }
    }
    let exit = App::new("nostart", "0")
        .hooks(FailsToStart)
        .start()
        .await
        .unwrap_err()
        .exit();
    assert_eq!(exit, Exit::Failed);
}

#[derive(Debug, Deserialize)]
struct Pair {
    a: u64,
    b: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_handler_sees_a_half_applied_configuration() {
    let dir = Scratch::new("atomic");
    let write = |n: u64| dir.write("pair.toml", &format!("[pair]\na = {n}\nb = {n}\n"));
    let file = write(0);
    let live = Arc::new(Mutex::new(None));
    let app = {
        let live = live.clone();
        App::new("pair", "0").setup(move |app| {
            *live.lock().unwrap() = Some(app.section::<Pair>("pair")?);
            // A hook that rejects one value: nothing of that configuration may show.
            app.on(EventKind::ConfigLoaded, priority::NORMAL, |event| {
                if let Event::ConfigLoaded(config) = event {
                    if config.section::<Pair>("pair")?.a == 13 {
                        return Err("13 is unlucky".into());
                    }
                }
                Ok(())
            });
            Ok(())
        })
    };
    let running = app
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    let pair = live.lock().unwrap().clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let pair = pair.clone();
            let stop = stop.clone();
            let handle = running.handle().clone();
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let p = pair.get();
                    assert_eq!(p.a, p.b, "a half-applied configuration");
                    assert_ne!(p.a, 13, "a rejected configuration");
                    let whole: Pair = handle.config().section("pair").unwrap();
                    assert_eq!(whole.a, whole.b, "a half-applied configuration");
                    reads += 1;
                    tokio::task::yield_now().await;
                }
                reads
            })
        })
        .collect();
    for n in 1..=20 {
        write(n);
        let reloaded = running.handle().reload().await;
        assert_eq!(reloaded.is_err(), n == 13, "{reloaded:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
    assert_eq!(pair.get().a, 20);
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

/// `App::start` prints nothing: each way a start ends comes back as a `StartError` with its
/// exit code and cause. The checks run in a child process (this test binary again, output
/// not captured), whose output must not hold a word of the causes.
#[test]
fn start_returns_the_exit_code_and_the_cause_and_prints_nothing() {
    const CHILD: &str = "SHOAL_TEST_START_ERRORS_CHILD";
    const NAME: &str = "start_returns_the_exit_code_and_the_cause_and_prints_nothing";
    if std::env::var_os(CHILD).is_some() {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(check_start_errors());
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains(NAME),
        "the child ran the checks: {printed}"
    );
    for word in [
        "start-errors.toml",
        "rpc.listen",
        "hello.greeting",
        "is valid",
        "usage:",
        "no database",
        "boom",
    ] {
        assert!(!printed.contains(word), "{word:?} printed: {printed}");
    }
}

/// Every way `App::start` ends early, with its exit code, cause and message.
async fn check_start_errors() {
    use shoal::{StartCause, StartError};

    let dir = Scratch::new("start-errors");
    let start = |text: &str, extra: &[&str]| {
        let file = dir.write("start-errors.toml", text);
        let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        args.extend(config_args(&file));
        hello::app().args(args, no_env()).start()
    };
    let check = |error: StartError, exit: Exit, message: &str| {
        assert_eq!(error.exit(), exit, "{error}");
        assert!(
            error.to_string().contains(message),
            "{error} lacks {message:?}"
        );
        error
    };
    let file = dir.join("start-errors.toml");

    // A runtime key, then a section the setup reads: the file and the key, exit 2.
    let error = start("[rpc]\nlisten = 5\n", &[]).await.unwrap_err();
    let error = check(error, Exit::BadConfig, "rpc.listen");
    assert!(matches!(error.cause(), StartCause::Config(_)), "{error:?}");
    assert!(error.to_string().starts_with("hello: "), "{error}");
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
    let error = start("[hello]\ngreeting = 5\n", &[]).await.unwrap_err();
    let error = check(error, Exit::BadConfig, "hello.greeting");
    assert!(matches!(error.cause(), StartCause::Config(_)), "{error:?}");

    // The command line: rejected arguments, then the answers that are the command's output.
    let error = hello::app()
        .args(["--frobnicate"], no_env())
        .start()
        .await
        .unwrap_err();
    let error = check(error, Exit::BadConfig, "unknown argument `--frobnicate`");
    assert!(
        matches!(error.cause(), StartCause::Arguments(_)),
        "{error:?}"
    );
    let error = hello::app()
        .args(["--version"], no_env())
        .start()
        .await
        .unwrap_err();
    assert_eq!(error.exit(), Exit::Closed);
    match error.cause() {
        StartCause::Answered(text) => {
            assert_eq!(text, &format!("hello {}\n", env!("CARGO_PKG_VERSION")))
        }
        other => panic!("expected the version, got {other:?}"),
    }
    let error = start("[hello]\ngreeting = \"Hi\"\n", &["--check"])
        .await
        .unwrap_err();
    assert_eq!(error.exit(), Exit::Closed);
    assert!(
        matches!(error.cause(), StartCause::Answered(text) if text.contains("is valid")),
        "{error:?}"
    );
    let error = hello::app()
        .args(["--help"], no_env())
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(error.cause(), StartCause::Answered(text) if text.contains("usage:")),
        "{error:?}"
    );

    // Failures of the application's own code keep their source; exit 1.
    let error = App::new("broken", "0")
        .setup(|_| Err("boom".into()))
        .start()
        .await
        .unwrap_err();
    let error = check(
        error,
        Exit::Failed,
        "broken: setup failed ((default configuration))",
    );
    let source = std::error::Error::source(&error).expect("the setup's error");
    assert_eq!(source.to_string(), "boom");

    struct FailsToStart;
    impl Hooks for FailsToStart {
        async fn on_start(&self, _app: &Handle) -> Result<(), BoxError> {
            Err("no database".into())
        }
    }
    let error = App::new("nostart", "0")
        .hooks(FailsToStart)
        .start()
        .await
        .unwrap_err();
    let error = check(error, Exit::Failed, "nostart: on_start failed");
    assert!(error.is_logged());
    let source = std::error::Error::source(&error).expect("on_start's error");
    assert_eq!(source.to_string(), "no database");
}
