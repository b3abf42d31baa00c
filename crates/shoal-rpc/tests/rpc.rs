//! End-to-end behaviour of connections, server and client over real transports: concurrency,
//! ordering, callbacks, deadlines, cancellation, limits, TLS, Unix sockets and shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{client, in_memory, serve_tcp, server, Probe, TestService};
use shoal_rpc::{codes, CallOptions, Client, Error, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn calls_builtins_and_errors_in_memory() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe).build().unwrap();
    let peer = in_memory(&server);
    assert_eq!(
        peer.call("echo", &("hi",), T).await.unwrap(),
        Value::from("hi")
    );
    assert_eq!(
        peer.call("shoal.ping", &[(); 0], T).await.unwrap(),
        Value::from("pong")
    );
    let methods = peer.call("shoal.methods", &[(); 0], T).await.unwrap();
    let names: Vec<_> = methods
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"echo".to_owned()) && names.contains(&"shoal.ping".to_owned()));

    let check = |r: Result<Value, Error>, code: i64| {
        let Err(Error::Remote(e)) = r else {
            panic!("expected a remote error, got {r:?}")
        };
        assert_eq!(e.code, Some(code), "{e}");
        e
    };
    check(
        peer.call("nope", &[(); 0], T).await,
        codes::METHOD_NOT_FOUND,
    );
    check(peer.call("echo", &(1, 2), T).await, codes::INVALID_PARAMS);
    let e = check(peer.call("fail", &[(); 0], T).await, 1001);
    assert_eq!(
        (e.message.as_str(), e.data),
        ("failed on purpose", Some(Value::from("why")))
    );
}

#[tokio::test]
async fn replies_leave_out_of_order_and_calls_run_concurrently() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe).build().unwrap();
    let peer = in_memory(&server);
    let slow = tokio::spawn({
        let peer = peer.clone();
        async move { peer.call("hold", &("slow",), T).await }
    });
    probe.wait_held(1).await;
    // The second call is answered while the first is still held on the same connection.
    assert_eq!(
        peer.call("echo", &("fast",), T).await.unwrap(),
        Value::from("fast")
    );
    assert!(!slow.is_finished());
    assert!(probe.release_one());
    assert_eq!(slow.await.unwrap().unwrap(), Value::from("slow"));
}

/// Senders write their frames at once when nothing is queued before them; what a small pipe
/// does not take waits for the writer task, and every later frame waits behind it. Many
/// callers on several threads, with frames from a few bytes to many times the pipe's size,
/// each get their own answer whole: no frame overtook or cut into another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frames_written_at_once_never_overtake_queued_ones() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe).build().unwrap();
    let (at_client, at_server) = tokio::io::duplex(1024);
    let (sr, sw) = tokio::io::split(at_server);
    server.serve_connection(Box::new(sr), Box::new(sw), "pipe", Default::default());
    let (cr, cw) = tokio::io::split(at_client);
    let peer = common::client_on(cr, cw, "pipe-client");
    let sizes = [0, 7, 1000, 3000, 70_000, 200];
    let callers: Vec<_> = (0..16)
        .map(|caller| {
            let peer = peer.clone();
            tokio::spawn(async move {
                for round in 0..30 {
                    let size = sizes[(caller + round) % sizes.len()];
                    let text: String =
                        std::iter::repeat_n(char::from(b'a' + (caller as u8 % 26)), size)
                            .chain(format!("/{caller}/{round}").chars())
                            .collect();
                    let answer = peer.call("echo", &(&text,), T).await.unwrap();
                    assert_eq!(answer.as_str(), Some(text.as_str()), "caller {caller}");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
}

#[tokio::test]
async fn notifications_run_in_arrival_order() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe).build().unwrap();
    let peer = in_memory(&server);
    for i in 0..500 {
        peer.notify("record", &(i,)).unwrap();
    }
    // A call after the notifications: once it is answered they have all been read.
    peer.call("echo", &(1,), T).await.unwrap();
    tokio::time::timeout(T, async {
        while probe.records.lock().unwrap().len() < 500 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        *probe.records.lock().unwrap(),
        (0..500).collect::<Vec<i64>>()
    );
}

/// The client serves `client.add` so the server's handler can call back into it.
struct ClientSide;

impl shoal_rpc::Dispatch for ClientSide {
    fn service_name(&self) -> &'static str {
        "ClientSide"
    }

    fn methods(&self) -> &'static [shoal_rpc::MethodInfo] {
        &[shoal_rpc::MethodInfo {
            name: "client.add",
            params: &[],
            returns: "i64",
            notify: false,
            blocking: false,
            idempotent: false,
        }]
    }

    fn call(&self, req: shoal_rpc::Request) -> shoal_rpc::BoxReply {
        Box::pin(async move {
            let mut args = shoal_rpc::Args::new("client.add", req.params, 2)?;
            let (a, b): (i64, i64) = (args.next("a")?, args.next("b")?);
            shoal_rpc::Reply::encode(&(a + b))
        })
    }
}

#[tokio::test]
async fn a_handler_calls_back_into_its_client_over_tcp() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, task) = serve_tcp(server(&probe).build().unwrap()).await;
    let client = Client::builder()
        .endpoint(addr)
        .serve(vec![Arc::new(ClientSide)])
        .unwrap()
        .connect()
        .await
        .unwrap();
    let got: i64 = client.call("callback", &[(); 0]).await.unwrap();
    assert_eq!(got, 42);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn deadline_travels_between_shoal_peers_only() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let client = client(&addr).await;
    assert!(client.peer().await.unwrap().is_extended());
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(1500)),
        ..Default::default()
    };
    let seen: bool = client.call_with(&opts, "deadline", &[(); 0]).await.unwrap();
    assert!(seen);
    let left = probe.deadlines.lock().unwrap()[0].unwrap();
    assert!(
        left <= Duration::from_millis(1500) && left > Duration::ZERO,
        "{left:?}"
    );

    // A plain peer (one that never says hello) sends no deadline: the wire stays standard.
    let plain = in_memory(&server(&probe).build().unwrap());
    assert!(!plain.is_extended());
    assert_eq!(
        plain.call("deadline", &[(); 0], T).await.unwrap(),
        Value::from(false)
    );
    stop.cancel();
}

#[tokio::test]
async fn dropping_a_call_cancels_the_handler_on_a_shoal_server() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let client = client(&addr).await;
    let dropped = probe.dropped.notified();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call::<_, Value>("hold", &("x",)).await }
    });
    probe.wait_held(1).await;
    call.abort();
    tokio::time::timeout(T, dropped)
        .await
        .expect("handler was not cancelled");
    stop.cancel();
}

#[tokio::test]
async fn timeout_is_a_deadline_error_and_not_retried() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let client = client(&addr).await;
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let err = client
        .call_with::<_, Value>(&opts, "hold", &("x",))
        .await
        .unwrap_err();
    // The caller's sweep or the server's timer (the deadline travelled with the request)
    // may see it first; either way the caller gets its own deadline error, since the
    // server's cannot come before the caller's deadline.
    assert!(matches!(err, Error::DeadlineExceeded(_)), "{err:?}");
    assert_eq!(err.code(), Some(codes::DEADLINE_EXCEEDED), "{err}");
    // Exactly one handler ran: a timeout is never retried.
    assert_eq!(probe.gates.lock().unwrap().len(), 1);
    stop.cancel();
}

/// Each call's deadline holds on its own, from one sweep per connection: a call due soon
/// fails on time while an earlier call due later waits on, and that one is still answered.
/// The peer is plain (no hello), so the server is never told a deadline: only the caller's
/// side ends the call. Time is tokio's paused clock, which moves only to the next timer.
#[tokio::test(start_paused = true)]
async fn a_call_due_sooner_fails_on_time_while_a_later_one_waits() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe).build().unwrap();
    let peer = in_memory(&server);
    let later = tokio::spawn({
        let peer = peer.clone();
        async move {
            peer.call("hold", &("later",), Duration::from_secs(60))
                .await
        }
    });
    probe.wait_held(1).await;
    let started = tokio::time::Instant::now();
    let err = peer
        .call("hold", &("sooner",), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::DEADLINE_EXCEEDED), "{err}");
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(50)..Duration::from_secs(1)).contains(&waited),
        "the sooner call ended after {waited:?}"
    );
    assert_eq!(peer.pending(), 1, "the later call still waits");
    assert!(probe.release_one(), "the later call is the first held");
    let answer = later.await.unwrap().expect("the later call was answered");
    assert_eq!(answer, Value::from("later"));
    assert_eq!(peer.pending(), 0);
}

#[tokio::test]
async fn oversized_messages_fail_with_an_explicit_error() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe).max_message(1024).build().unwrap();
    let (addr, stop, _task) = serve_tcp(server).await;

    // A reply too large for the limit becomes a frame-too-large error, not a disconnect.
    let client = Client::builder()
        .endpoint(addr.clone())
        .max_message(1 << 20)
        .connect()
        .await
        .unwrap();
    let err = client.call::<_, Value>("big", &(4096,)).await.unwrap_err();
    assert_eq!(err.code(), Some(codes::FRAME_TOO_LARGE), "{err}");
    assert_eq!(client.call::<_, i64>("echo", &(5,)).await.unwrap(), 5);

    // A request the client itself knows is too large never leaves.
    let small = Client::builder()
        .endpoint(addr.clone())
        .max_message(1024)
        .connect()
        .await
        .unwrap();
    let err = small
        .call::<_, Value>("echo", &("x".repeat(2000),))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FrameTooLarge { .. }), "{err}");

    // A peer that sends one anyway is answered with the error and its msgid, then closed.
    let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
    let mut frame = vec![0x94, 0x00, 0xce, 0xff, 0xff, 0xff, 0xff, 0xa4];
    frame.extend_from_slice(b"echo");
    frame.extend_from_slice(&[0x91, 0xda, 0x10, 0x00]);
    frame.extend_from_slice(&[b'a'; 4096]);
    raw.write_all(&frame).await.unwrap();
    let reply = read_to_close(&mut raw).await;
    let v = rmpv::decode::read_value(&mut &reply[..]).unwrap();
    assert_eq!(v[1], Value::from(u32::MAX));
    assert_eq!(v[2]["code"], Value::from(codes::FRAME_TOO_LARGE));
    // Everyone else is still served.
    assert_eq!(client.call::<_, i64>("echo", &(6,)).await.unwrap(), 6);
    stop.cancel();
}

async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn malformed_bytes_close_one_connection_only() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let client = client(&addr).await;
    for garbage in [&[0xc1u8][..], &[0x93, 0x07, 0x01, 0x02], &[0x01]] {
        let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
        raw.write_all(garbage).await.unwrap();
        assert!(read_to_close(&mut raw).await.is_empty());
        assert_eq!(
            client.call::<_, String>("echo", &("ok",)).await.unwrap(),
            "ok"
        );
    }
    stop.cancel();
}

#[tokio::test]
async fn ids_up_to_u32_max_and_floats_are_echoed_unchanged() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
    let ids = [
        Value::from(0),
        Value::from(u32::MAX),
        Value::from(1u64 << 31),
        Value::F64(12.0),
    ];
    let mut out = Vec::new();
    for id in &ids {
        let req = Value::Array(vec![
            0.into(),
            id.clone(),
            "echo".into(),
            Value::Array(vec![1.into()]),
        ]);
        rmpv::encode::write_value(&mut out, &req).unwrap();
    }
    raw.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    let mut buf = bytes::BytesMut::new();
    let mut dec = shoal_rpc::codec::Decoder::default();
    while got.len() < ids.len() {
        raw.read_buf(&mut buf).await.unwrap();
        while let Some(shoal_rpc::codec::Message::Response { id, .. }) =
            dec.decode(&mut buf).unwrap()
        {
            got.push(id);
        }
    }
    assert_eq!(got, ids);
    stop.cancel();
}

#[tokio::test]
async fn in_flight_limit_applies_backpressure() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe).max_in_flight(2).build().unwrap();
    let peer = in_memory(&server);
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let peer = peer.clone();
            tokio::spawn(async move { peer.call("hold", &(i,), T).await })
        })
        .collect();
    probe.wait_held(2).await;
    let ping = tokio::spawn({
        let peer = peer.clone();
        async move { peer.call("shoal.ping", &[(); 0], T).await }
    });
    // Let every task on this single-threaded runtime run: the server must still not read on.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(probe.gates.lock().unwrap().len(), 2);
    assert!(!ping.is_finished());
    // One slot frees: the third call enters, then the ping behind it is answered.
    assert!(probe.release_one());
    probe.wait_held(2).await;
    while probe.release_one() {}
    for c in calls {
        c.await.unwrap().unwrap();
    }
    ping.await.unwrap().unwrap();
}

#[tokio::test]
async fn unix_sockets_and_graceful_shutdown() {
    let dir = std::env::temp_dir().join(format!("shoal-rpc-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr: shoal_rpc::Addr = format!("unix:{}", dir.join("s.sock").display())
        .parse()
        .unwrap();
    let probe = Arc::new(Probe::default());
    let server = server(&probe).build().unwrap();
    let listener = shoal_rpc::Listener::bind(&addr).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { server.serve(listener, stop.cancelled_owned()).await }
    });
    let client = client(&addr).await;
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.call::<_, String>("hold", &("drained",)).await }
    });
    probe.wait_held(1).await;
    stop.cancel();
    // New connections are refused once shutdown began...
    tokio::time::timeout(T, async {
        while tokio::net::UnixStream::connect(dir.join("s.sock"))
            .await
            .is_ok()
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    // ...but the in-flight call still finishes and its reply is delivered.
    assert!(!task.is_finished());
    probe.release_one();
    assert_eq!(held.await.unwrap().unwrap(), "drained");
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_round_trip() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = shoal_rpc::transport::server_tls(
        cert.cert.pem().as_bytes(),
        cert.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let probe = Arc::new(Probe::default());
    let (addr, stop, task) = serve_tcp(server(&probe).tls(tls).build().unwrap()).await;
    let mut client_tls = shoal_rpc::ClientTls::from_ca_pem(cert.cert.pem().as_bytes()).unwrap();
    client_tls.server_name = Some("localhost".into());
    let client = Client::builder()
        .endpoint(addr.clone())
        .tls(client_tls)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        client
            .call::<_, String>("echo", &("secret",))
            .await
            .unwrap(),
        "secret"
    );
    // A client that does not trust the certificate is refused before any call.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let mut wrong = shoal_rpc::ClientTls::from_ca_pem(other.cert.pem().as_bytes()).unwrap();
    wrong.server_name = Some("localhost".into());
    let err = Client::builder()
        .endpoint(addr.clone())
        .tls(wrong)
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    // A peer that connects and never starts its handshake does not hold up shutdown.
    let _silent = TcpStream::connect(addr.to_string()).await.unwrap();
    stop.cancel();
    tokio::time::timeout(T, task)
        .await
        .expect("shutdown waited on a handshake")
        .unwrap();
}

#[tokio::test]
async fn client_reconnects_after_the_server_comes_back() {
    let probe = Arc::new(Probe::default());
    let listener = shoal_rpc::Listener::bind(&"127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let stop = tokio_util::sync::CancellationToken::new();
    let srv = server(&probe).build().unwrap();
    let task = tokio::spawn({
        let (srv, stop) = (srv.clone(), stop.clone());
        async move { srv.serve(listener, stop.cancelled_owned()).await }
    });
    let client = client(&addr).await;
    assert_eq!(client.call::<_, i64>("echo", &(1,)).await.unwrap(), 1);
    stop.cancel();
    task.await.unwrap().unwrap();
    let err = client.call::<_, i64>("echo", &(2,)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotSent { .. } | Error::Closed { .. } | Error::Unavailable(_)
        ),
        "{err}"
    );
    // Same port again: the client's next attempts find it once the backoff passes.
    let listener = shoal_rpc::Listener::bind(&addr).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { srv.serve(listener, stop.cancelled_owned()).await }
    });
    let got = tokio::time::timeout(T, async {
        loop {
            match client.call::<_, i64>("echo", &(3,)).await {
                Ok(v) => return v,
                Err(_) => tokio::task::yield_now().await,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, 3);
    stop.cancel();
    let _ = TestService(probe);
}

#[tokio::test]
async fn layers_added_to_the_server_wrap_every_call() {
    use shoal_rpc::middleware::{
        CatchPanicLayer, ConcurrencyLimitLayer, StatsLayer, TimeoutLayer, TraceLayer,
    };
    let probe = Arc::new(Probe::default());
    let stats = StatsLayer::new();
    let counts = stats.stats();
    let server = server(&probe)
        .layer(stats)
        .layer(TraceLayer::new())
        .layer(ConcurrencyLimitLayer::new(64))
        .layer(TimeoutLayer::new(Duration::from_millis(50)))
        .layer(CatchPanicLayer::new())
        .build()
        .unwrap();
    let peer = in_memory(&server);
    assert_eq!(peer.call("echo", &(7,), T).await.unwrap(), Value::from(7));
    // The server's own timeout answers long before the caller's 10 s.
    let Err(Error::Remote(e)) = peer.call("hold", &("x",), T).await else {
        panic!("expected the server's deadline error")
    };
    assert_eq!(e.code, Some(codes::DEADLINE_EXCEEDED));
    let snapshot = counts.snapshot();
    let calls = |m: &str| {
        snapshot
            .iter()
            .find(|s| s.method == m)
            .map(|s| (s.calls, s.errors))
    };
    assert_eq!(calls("echo"), Some((1, 0)));
    assert_eq!(calls("hold"), Some((1, 1)));
}

#[tokio::test]
async fn server_state_is_shared_with_every_call_by_type() {
    use common::{Hits, ServerName};
    let probe = Arc::new(Probe::default());
    let hits = Arc::new(Hits::default());
    let server = server(&probe)
        .state(ServerName("first"))
        .state(ServerName("kept"))
        .state_arc(hits.clone())
        .build()
        .unwrap();
    assert_eq!(server.state().len(), 2);
    // Two connections, one map: every call sees the same values.
    let (a, b) = (in_memory(&server), in_memory(&server));
    for peer in [&a, &b, &a] {
        assert_eq!(
            peer.call("whoami", &[(); 0], T).await.unwrap(),
            Value::from("kept")
        );
        peer.call("hit", &[(); 0], T).await.unwrap();
    }
    assert_eq!(hits.0.load(std::sync::atomic::Ordering::Relaxed), 3);

    // A server given no state answers without it.
    let bare = in_memory(&common::server(&probe).build().unwrap());
    let Err(Error::Remote(e)) = bare.call("whoami", &[(); 0], T).await else {
        panic!("expected the handler's error")
    };
    assert!(e.message.contains("no ServerName"), "{e}");
}

/// A server that accepts and never answers, not even `shoal.hello`: connecting (the hello's
/// wait included) and a call with the time left take the client's timeout once in all. The
/// clock is paused, so `elapsed` counts only the timers that fired.
#[tokio::test(start_paused = true)]
async fn the_timeout_bounds_connect_hello_and_call_together() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: shoal_rpc::Addr = listener.local_addr().unwrap().to_string().parse().unwrap();
    let mute = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let timeout = Duration::from_secs(1);
    let start = tokio::time::Instant::now();
    let connected = Client::builder()
        .endpoint(addr)
        .timeout(timeout)
        .retries(0)
        .connect()
        .await;
    assert!(
        start.elapsed() <= timeout,
        "connect took {:?}",
        start.elapsed()
    );
    if let Ok(client) = connected {
        let left = timeout.saturating_sub(start.elapsed());
        let opts = CallOptions {
            timeout: Some(left),
            ..Default::default()
        };
        let err = client
            .call_with::<_, Value>(&opts, "echo", &(1,))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(codes::DEADLINE_EXCEEDED), "{err}");
    }
    assert!(start.elapsed() <= timeout, "took {:?}", start.elapsed());
    mute.abort();
}
