//! The center's layer followed through an agent: the `hello` example in process, with
//! `SHOAL_CENTER_CONFIG` and `SHOAL_AGENT` pointing at a stand-in agent on a Unix socket. The
//! service tells the agent the version it started with, reloads when the agent offers
//! another and says how that went, keeps its configuration on a bad version, and tells a
//! restarted agent its last outcome again.

mod common;

#[path = "../examples/hello.rs"]
#[allow(dead_code)]
mod hello;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config_args, Scratch};
use shoal::rpc::service::{Args, BoxReply, Dispatch, MethodInfo};
use shoal::rpc::{Addr, Listener, Reply, Request, RpcError, Server};
use shoal::{Client, Exit};
use shoal_api::config::{ConfigApplied, ConfigVersion, Delivery};
use shoal_api::program::{methods, ConfigWatch, ConfigWatched};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(10);

/// What the stand-in agent offers and hears.
struct Agent {
    offered: Arc<watch::Sender<Option<ConfigVersion>>>,
    /// The center directory, whose link a rejection points back at the version last applied.
    center: PathBuf,
    applied: Arc<Mutex<Option<ConfigVersion>>>,
    heard: mpsc::UnboundedSender<ConfigApplied>,
    /// Cut short by the agent's stop, as the real agent's watch is.
    stop: CancellationToken,
}

const fn method(name: &'static str) -> MethodInfo {
    MethodInfo {
        name,
        params: &[("request", "Map")],
        returns: "",
        notify: false,
        blocking: false,
        idempotent: true,
    }
}

const METHODS: &[MethodInfo] = &[
    method(methods::CONFIG_WATCH),
    method(methods::CONFIG_APPLIED),
];

impl Dispatch for Agent {
    fn service_name(&self) -> &'static str {
        "Agent"
    }

    fn methods(&self) -> &'static [MethodInfo] {
        METHODS
    }

    fn call(&self, req: Request) -> BoxReply {
        let (sender, heard) = (self.offered.clone(), self.heard.clone());
        let (center, last) = (self.center.clone(), self.applied.clone());
        let mut offered = sender.subscribe();
        let stop = self.stop.clone();
        Box::pin(async move {
            match req.method.as_str() {
                methods::CONFIG_WATCH => {
                    let watch: ConfigWatch = Args::one(methods::CONFIG_WATCH, req.params)?;
                    let wait = Duration::from_millis(watch.wait_ms);
                    let changed = offered.wait_for(|v| *v != watch.have);
                    tokio::select! {
                        _ = tokio::time::timeout(wait, changed) => {}
                        () = stop.cancelled() => return Err(RpcError::new(1002, "closing")),
                    }
                    let version = *offered.borrow();
                    Reply::encode(&ConfigWatched { version })
                }
                methods::CONFIG_APPLIED => {
                    let applied: ConfigApplied = Args::one(methods::CONFIG_APPLIED, req.params)?;
                    // As the real agent does before it answers: a rejection's link goes back.
                    let mut last = last.lock().unwrap();
                    match &applied.delivery {
                        Delivery::Applied => *last = Some(applied.version),
                        _ => {
                            let back = last.expect("a version applied before");
                            point(&center, back);
                            sender.send_replace(Some(back));
                        }
                    }
                    let _ = heard.send(applied);
                    Reply::encode(&())
                }
                other => Err(RpcError::method_not_found(other)),
            }
        })
    }
}

/// What a stand-in agent shares with the test and with the next stand-in.
#[derive(Clone)]
struct Shared {
    offered: Arc<watch::Sender<Option<ConfigVersion>>>,
    center: PathBuf,
    applied: Arc<Mutex<Option<ConfigVersion>>>,
    heard: mpsc::UnboundedSender<ConfigApplied>,
}

/// Serves a stand-in agent at `socket` until the token is cancelled.
async fn serve(socket: &Path, shared: Shared) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let _ = std::fs::remove_file(socket);
    let listener = Listener::bind(&Addr::Unix(socket.to_owned()))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let server = Server::builder()
        .service(Agent {
            offered: shared.offered,
            center: shared.center,
            applied: shared.applied,
            heard: shared.heard,
            stop: stop.clone(),
        })
        .build()
        .unwrap();
    let until = stop.clone();
    let task = tokio::spawn(async move {
        let _ = server.serve(listener, until.cancelled_owned()).await;
    });
    (stop, task)
}

/// Writes version `version` of the center's layer and points the link at it, as the agent
/// does.
fn offer(center: &Path, version: ConfigVersion, text: &str) {
    std::fs::write(center.join(format!("v{version}.toml")), text).unwrap();
    point(center, version);
}

/// Points the link in `center` at `version`'s file.
fn point(center: &Path, version: ConfigVersion) {
    let temp = center.join("next");
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(format!("v{version}.toml"), &temp).unwrap();
    std::fs::rename(&temp, center.join("config.toml")).unwrap();
}

/// The next outcome the service tells the agent; `what` says what is awaited.
async fn heard(rx: &mut mpsc::UnboundedReceiver<ConfigApplied>, what: &str) -> ConfigApplied {
    tokio::time::timeout(LIMIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("the service did not tell the agent {what}"))
        .unwrap()
}

fn applied(version: ConfigVersion) -> ConfigApplied {
    ConfigApplied {
        name: "hello".into(),
        version,
        delivery: Delivery::Applied,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_follows_the_centers_layer_through_its_agent() {
    let dir = Scratch::new("center-layer");
    let file = dir.write(
        "hello.toml",
        "[rpc]\nlisten = \"127.0.0.1:0\"\n\n[hello]\ngreeting = \"File\"\n",
    );
    let center: PathBuf = dir.join("center");
    std::fs::create_dir_all(&center).unwrap();
    offer(&center, 1, "[hello]\ngreeting = \"One\"\n");
    let socket = dir.join("programs.sock");
    let (heard_tx, mut heard_rx) = mpsc::unbounded_channel();
    let shared = Shared {
        offered: Arc::new(watch::Sender::new(Some(1))),
        center: center.clone(),
        applied: Arc::default(),
        heard: heard_tx,
    };
    let offered_tx = shared.offered.clone();
    let (stop, task) = serve(&socket, shared.clone()).await;
    let env = vec![
        (
            "SHOAL_AGENT".to_owned(),
            format!("unix:{}", socket.display()),
        ),
        (
            "SHOAL_CENTER_CONFIG".to_owned(),
            center.join("config.toml").display().to_string(),
        ),
        ("SHOAL_APP".to_owned(), "hello".to_owned()),
    ];
    let running = hello::app()
        .args(config_args(&file), env)
        .start()
        .await
        .unwrap();
    let addr = running.rpc_addr().unwrap().to_string();
    let greeter = hello::HelloClient::new(Client::connect(&addr).await.unwrap());

    // Started with version 1, which the center's layer puts over the file.
    assert_eq!(heard(&mut heard_rx, "v1 at start").await, applied(1));
    assert_eq!(greeter.greet("x".into()).await.unwrap(), "One, x");
    assert_eq!(running.handle().status().center_version, Some(1));

    // Version 2 offered: reloaded and acknowledged.
    offer(&center, 2, "[hello]\ngreeting = \"Two\"\n");
    offered_tx.send_replace(Some(2));
    assert_eq!(heard(&mut heard_rx, "v2 applied").await, applied(2));
    assert_eq!(greeter.greet("x".into()).await.unwrap(), "Two, x");

    // A version its checks refuse: rejected with the reason, version 2 still in force.
    offer(&center, 3, "[hello]\ngreting = \"typo\"\n");
    offered_tx.send_replace(Some(3));
    let rejected = heard(&mut heard_rx, "v3 rejected").await;
    assert_eq!(rejected.version, 3);
    match &rejected.delivery {
        Delivery::Rejected { reason } => assert!(reason.contains("greting"), "{reason}"),
        other => panic!("expected rejected, got {other:?}"),
    }
    assert_eq!(*offered_tx.borrow(), Some(2));
    assert_eq!(greeter.greet("x".into()).await.unwrap(), "Two, x");
    assert_eq!(running.handle().status().center_version, Some(2));

    // A restarted agent hears the last outcome again.
    stop.cancel();
    task.await.unwrap();
    let (stop, task) = serve(&socket, shared).await;
    assert_eq!(heard(&mut heard_rx, "v3 again").await, rejected);

    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
    stop.cancel();
    task.await.unwrap();
}
