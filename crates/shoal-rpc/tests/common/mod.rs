//! A hand-written service for the connection tests (the macro lives in another crate),
//! helpers that start a server on loopback or in memory, and skipping a test whose peer is
//! missing.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_rpc::transport::{memory_pair, Addr, Listener};
use shoal_rpc::{
    Args, BoxReply, Client, Dispatch, MethodInfo, Reply, Request, RpcError, Server, Value,
};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

/// Shared state the test service reports through.
#[derive(Default)]
pub struct Probe {
    /// Notifications received by `record`, in order.
    pub records: Mutex<Vec<i64>>,
    /// Calls to `hold` wait here until released.
    pub gates: Mutex<Vec<oneshot::Sender<()>>>,
    pub release: Notify,
    pub entered: Notify,
    /// Set when a `hold` handler's future was dropped before finishing.
    pub dropped: Notify,
    /// `hold` handlers dropped before finishing, in all.
    pub dropped_count: AtomicUsize,
    pub deadlines: Mutex<Vec<Option<Duration>>>,
    /// The server's end of each connection a `hold` call came on, in arrival order.
    pub held_on: Mutex<Vec<shoal_rpc::Peer>>,
    /// Notifications received by `count`.
    pub counted: AtomicUsize,
}

pub struct TestService(pub Arc<Probe>);

/// Server state (`ServerBuilder::state`) that `whoami` answers with.
#[derive(Debug)]
pub struct ServerName(pub &'static str);

/// Server state that `hit` counts calls in.
#[derive(Debug, Default)]
pub struct Hits(pub AtomicUsize);

const METHODS: &[MethodInfo] = &[
    m("echo", false),
    m("more", false),
    m("hold", false),
    m("record", true),
    m("callback", false),
    m("deadline", false),
    m("fail", false),
    m("fail_big", false),
    m("big", false),
    m("whoami", false),
    m("hit", false),
    m("count", true),
    m("recorded", false),
    m("greet", false),
];

const fn m(name: &'static str, notify: bool) -> MethodInfo {
    MethodInfo {
        name,
        params: &[],
        returns: "Value",
        notify,
        blocking: false,
        idempotent: false,
    }
}

struct DropSignal(Arc<Probe>, bool);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped_count.fetch_add(1, Ordering::Relaxed);
            self.0.dropped.notify_one();
        }
    }
}

impl Dispatch for TestService {
    fn service_name(&self) -> &'static str {
        "Test"
    }

    fn methods(&self) -> &'static [MethodInfo] {
        METHODS
    }

    fn call(&self, req: Request) -> BoxReply {
        let probe = self.0.clone();
        Box::pin(async move {
            let Request {
                method,
                params,
                ctx,
            } = req;
            match method.as_str() {
                "echo" => {
                    let mut args = Args::new("echo", params, 1)?;
                    Reply::encode(&args.next::<Value>("x")?)
                }
                "hold" => {
                    let mut args = Args::new("hold", params, 1)?;
                    let x: Value = args.next("x")?;
                    let mut guard = DropSignal(probe.clone(), false);
                    if let Some(peer) = ctx.peer() {
                        probe.held_on.lock().unwrap().push(peer.clone());
                    }
                    let (tx, rx) = oneshot::channel();
                    probe.gates.lock().unwrap().push(tx);
                    probe.entered.notify_one();
                    let _ = rx.await;
                    guard.1 = true;
                    Reply::encode(&x)
                }
                "record" => {
                    let mut args = Args::new("record", params, 1)?;
                    let i: i64 = args.next("i")?;
                    // Yield a varying number of times so a reordering would show.
                    for _ in 0..(i % 3) {
                        tokio::task::yield_now().await;
                    }
                    probe.records.lock().unwrap().push(i);
                    Ok(Reply::none())
                }
                "callback" => {
                    let peer = ctx
                        .peer()
                        .cloned()
                        .ok_or_else(|| RpcError::internal("no peer"))?;
                    let v: Value = peer
                        .call("client.add", &(20, 22), Duration::from_secs(5))
                        .await
                        .map_err(|e| RpcError::internal(e.to_string()))?;
                    Reply::encode(&v)
                }
                "deadline" => {
                    let left = ctx.deadline().map(|d| d - tokio::time::Instant::now());
                    probe.deadlines.lock().unwrap().push(left);
                    Reply::encode(&left.is_some())
                }
                "fail" => Err(RpcError::new(1001, "failed on purpose").with_data("why".into())),
                "fail_big" => {
                    // An error whose data is `n` bytes: a handler's error can be any size.
                    let mut args = Args::new("fail_big", params, 1)?;
                    let n: usize = args.next("n")?;
                    Err(RpcError::new(1002, "failed with a large payload")
                        .with_data(Value::from("d".repeat(n))))
                }
                "big" => {
                    let mut args = Args::new("big", params, 1)?;
                    let n: usize = args.next("n")?;
                    Reply::encode(&vec![7u8; n])
                }
                "whoami" => match ctx.state::<ServerName>() {
                    Some(name) => Reply::encode(name.0),
                    None => Err(RpcError::internal("the server has no ServerName")),
                },
                "greet" => {
                    // The second parameter is a trailing Option: callers may leave it out.
                    let mut args = Args::new("greet", params, 2)?;
                    let name: String = args.next("name")?;
                    let greeting: Option<String> = args.next("greeting")?;
                    Reply::encode(&format!(
                        "{}, {name}",
                        greeting.as_deref().unwrap_or("hello")
                    ))
                }
                "more" => {
                    Args::new("more", params, 0)?;
                    Reply::encode(&ctx.more_input())
                }
                "recorded" => Reply::encode(&probe.records.lock().unwrap().len()),
                "count" => {
                    probe.counted.fetch_add(1, Ordering::Relaxed);
                    Ok(Reply::none())
                }
                "hit" => {
                    let hits = ctx
                        .state_arc::<Hits>()
                        .ok_or_else(|| RpcError::internal("the server has no Hits"))?;
                    Reply::encode(&(hits.0.fetch_add(1, Ordering::Relaxed) + 1))
                }
                other => Err(RpcError::method_not_found(other)),
            }
        })
    }
}

impl Probe {
    /// Waits until `n` `hold` calls are parked.
    pub async fn wait_held(&self, n: usize) {
        loop {
            let entered = self.entered.notified();
            if self.gates.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::timeout(Duration::from_secs(10), entered)
                .await
                .expect("hold calls never arrived");
        }
    }

    /// Lets the `i`th parked `hold` call finish.
    pub fn release_one(&self) -> bool {
        let mut gates = self.gates.lock().unwrap();
        if gates.is_empty() {
            return false;
        }
        let _ = gates.remove(0).send(());
        true
    }
}

pub fn server(probe: &Arc<Probe>) -> shoal_rpc::ServerBuilder {
    Server::builder().service(TestService(probe.clone()))
}

/// A server on an ephemeral loopback port; stopped when the returned token is cancelled.
pub async fn serve_tcp(server: Server) -> (Addr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        server.serve(listener, s.cancelled_owned()).await.unwrap();
    });
    (addr, stop, task)
}

/// A client and a server joined by an in-memory pipe.
pub fn in_memory(server: &Server) -> shoal_rpc::Peer {
    let ((cr, cw), (sr, sw)) = memory_pair();
    server.serve_connection(sr, sw, "memory", CancellationToken::new());
    client_on(cr, cw, "memory-client")
}

/// The calling end of a connection over `reader` and `writer`, serving no methods itself.
pub fn client_on<R, W>(reader: R, writer: W, addr: &str) -> shoal_rpc::Peer
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    shoal_rpc::conn::spawn(
        reader,
        writer,
        addr.to_owned(),
        tower::util::BoxCloneSyncService::new(shoal_rpc::Router::new(vec![]).unwrap()),
        Default::default(),
        CancellationToken::new(),
        &tokio_util::task::TaskTracker::new(),
    )
}

pub async fn client(addr: &Addr) -> Client {
    Client::builder()
        .endpoint(addr.clone())
        .connect()
        .await
        .unwrap()
}

/// Says why a test leaves out a check whose tool is missing (`skipped: WHY` on stdout), or,
/// where `SHOAL_REQUIRE_TOOLS=1` (as `.ci/run` sets it), fails the test: in CI a missing tool
/// means a broken install step, which must not pass as a skip.
pub fn skip(why: &str) {
    if std::env::var_os("SHOAL_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
        panic!("{why}; SHOAL_REQUIRE_TOOLS=1 requires every tool the tests use (see .ci/run)");
    }
    println!("skipped: {why}");
}
