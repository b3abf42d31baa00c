//! Handing a listening socket to a successor: listeners taken over from file descriptors, and
//! the `shoal.goaway` drain through which a closing server loses no call while another one
//! serves the same socket. Third-party peers keep plain MessagePack-RPC behaviour.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::{server, Probe, ServerName};
use shoal_rpc::codec::{Decoder, Message};
use shoal_rpc::{Addr, Client, Listener, Server, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);

/// Serves `server` on `listener` until the returned token is cancelled.
fn serve(server: Server, listener: Listener) -> (CancellationToken, JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            server
                .serve(listener, stop.cancelled_owned())
                .await
                .unwrap()
        }
    });
    (stop, task)
}

fn named(probe: &Arc<Probe>, name: &'static str) -> Server {
    server(probe).state(ServerName(name)).build().unwrap()
}

async fn loopback() -> Listener {
    Listener::bind(&"127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Waits until `done` holds, failing the test after [`T`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(T, async {
        while !done() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// Names of successive server generations, each taking the socket over from the one before.
const GENERATIONS: [&str; 4] = ["gen0", "gen1", "gen2", "gen3"];

/// Calls answered by each generation, and every call that failed.
#[derive(Default)]
struct Tally {
    answered: [AtomicUsize; GENERATIONS.len()],
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn answered(&self, generation: usize) -> usize {
        self.answered[generation].load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_a_loop_never_fail_while_successors_take_the_socket_over() {
    let listener = loopback().await;
    let addr = listener.local_addr();
    let probe = Arc::new(Probe::default());
    // What each successor process would inherit: the same listening socket.
    let inherited = listener.try_clone().unwrap();
    let mut current = serve(named(&probe, GENERATIONS[0]), listener);
    let client = Client::builder()
        .endpoint(addr.clone())
        .connect()
        .await
        .unwrap();

    // Many callers, so that requests are on the wire, unread, whenever a server closes.
    let tally = Arc::new(Tally::default());
    let running = CancellationToken::new();
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (client, tally, running) = (client.clone(), tally.clone(), running.clone());
            tokio::spawn(async move {
                while !running.is_cancelled() {
                    match client.call::<_, String>("whoami", &[(); 0]).await {
                        Ok(name) => {
                            let generation = GENERATIONS.iter().position(|g| *g == name).unwrap();
                            tally.answered[generation].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tally.failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    wait_until("the first server answers calls", || {
        tally.answered(0) >= 200
    })
    .await;

    for (generation, name) in GENERATIONS.iter().enumerate().skip(1) {
        let next = inherited.try_clone().unwrap();
        let (stop, task) = std::mem::replace(&mut current, serve(named(&probe, name), next));
        stop.cancel();
        // The old server returns once the client has closed its drained connection.
        tokio::time::timeout(T, task)
            .await
            .expect("the old server did not finish draining")
            .unwrap();
        wait_until("the successor answers calls", || {
            tally.answered(generation) >= 200
        })
        .await;
    }
    running.cancel();
    for caller in callers {
        caller.await.unwrap();
    }

    let failures = std::mem::take(&mut *tally.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} calls failed; the first: {}",
        failures.len(),
        failures[0]
    );
    // A drain is not a failure of the endpoint.
    let status = &client.endpoint_status()[0];
    assert_eq!((status.failures, status.ejected), (0, false), "{status:?}");
    let (stop, task) = current;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn calls_pending_at_goaway_are_answered_and_new_ones_go_to_the_successor() {
    let listener = loopback().await;
    let addr = listener.local_addr();
    let inherited = listener.try_clone().unwrap();
    let (old, new) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let (stop_a, task_a) = serve(server(&old).build().unwrap(), listener);
    let client = Client::builder()
        .endpoint(addr.clone())
        .connect()
        .await
        .unwrap();
    let to_a = client.peer().await.unwrap();
    let held: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.call::<_, i64>("hold", &(i,)).await })
        })
        .collect();
    old.wait_held(3).await;

    let (stop_b, task_b) = serve(server(&new).build().unwrap(), inherited);
    stop_a.cancel();
    wait_until("the client sees the goaway", || to_a.is_draining()).await;
    // Still open: three calls wait for their answers.
    assert!(!to_a.is_closed());
    assert_eq!(to_a.pending(), 3);

    // A new call opens a new connection, which the successor accepts.
    let on_b = tokio::spawn({
        let client = client.clone();
        async move { client.call::<_, i64>("hold", &(7,)).await }
    });
    new.wait_held(1).await;
    assert!(new.release_one());
    assert_eq!(on_b.await.unwrap().unwrap(), 7);
    assert!(!task_a.is_finished());

    while old.release_one() {}
    for (i, call) in held.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as i64);
    }
    tokio::time::timeout(T, to_a.closed())
        .await
        .expect("the drained connection did not close");
    tokio::time::timeout(T, task_a)
        .await
        .expect("the old server did not finish draining")
        .unwrap();
    stop_b.cancel();
    task_b.await.unwrap();
}

/// Reads one message from a raw connection.
async fn read_message(raw: &mut TcpStream, buf: &mut BytesMut, dec: &mut Decoder) -> Message {
    tokio::time::timeout(T, async {
        loop {
            if let Some(msg) = dec.decode(buf).unwrap() {
                return msg;
            }
            assert_ne!(raw.read_buf(buf).await.unwrap(), 0, "connection closed");
        }
    })
    .await
    .expect("no message came")
}

async fn send(raw: &mut TcpStream, msg: Value) {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &msg).unwrap();
    raw.write_all(&out).await.unwrap();
}

fn request(id: u32, method: &str, params: Vec<Value>) -> Value {
    Value::Array(vec![
        0.into(),
        id.into(),
        method.into(),
        Value::Array(params),
    ])
}

async fn read_to_close(raw: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(T, raw.read_to_end(&mut rest))
        .await
        .expect("the server did not close")
        .unwrap();
    rest
}

#[tokio::test]
async fn goaway_on_the_wire_and_serving_until_the_peer_closes() {
    let listener = loopback().await;
    let addr = listener.local_addr();
    let probe = Arc::new(Probe::default());
    let (stop, task) = serve(server(&probe).build().unwrap(), listener);
    let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
    let (mut buf, mut dec) = (BytesMut::new(), Decoder::default());
    let hello = Value::Map(vec![("version".into(), 1.into())]);
    send(&mut raw, request(1, "shoal.hello", vec![hello])).await;
    let Message::Response { id, error, result } = read_message(&mut raw, &mut buf, &mut dec).await
    else {
        panic!("expected the hello answer")
    };
    assert_eq!((id, error), (Value::from(1), Value::Nil));
    assert_eq!(result["goaway"], Value::from(true), "{result}");

    stop.cancel();
    let Message::Notification { method, params } = read_message(&mut raw, &mut buf, &mut dec).await
    else {
        panic!("expected the goaway notification")
    };
    assert_eq!((method.as_str(), params), ("shoal.goaway", vec![]));
    // Requests sent after the goaway are still answered...
    send(&mut raw, request(2, "echo", vec![5.into()])).await;
    let Message::Response { id, result, .. } = read_message(&mut raw, &mut buf, &mut dec).await
    else {
        panic!("expected the echo answer")
    };
    assert_eq!((id, result), (Value::from(2), Value::from(5)));
    assert!(!task.is_finished());
    // ...until the peer closes its side; then the server closes too and returns.
    raw.shutdown().await.unwrap();
    assert!(read_to_close(&mut raw).await.is_empty());
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_peer_that_never_closes_is_closed_when_serve_is_dropped() {
    let listener = loopback().await;
    let addr = listener.local_addr();
    let probe = Arc::new(Probe::default());
    let (stop, task) = serve(server(&probe).build().unwrap(), listener);
    let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
    let (mut buf, mut dec) = (BytesMut::new(), Decoder::default());
    let hello = Value::Map(vec![("version".into(), 1.into())]);
    send(&mut raw, request(1, "shoal.hello", vec![hello])).await;
    read_message(&mut raw, &mut buf, &mut dec).await;
    stop.cancel();
    let Message::Notification { method, .. } = read_message(&mut raw, &mut buf, &mut dec).await
    else {
        panic!("expected the goaway notification")
    };
    assert_eq!(method, "shoal.goaway");
    // The peer keeps its side open: `serve` waits for it...
    send(&mut raw, request(2, "echo", vec![5.into()])).await;
    read_message(&mut raw, &mut buf, &mut dec).await;
    assert!(!task.is_finished());
    // ...until the caller's grace period ends and drops it, which closes the connection.
    task.abort();
    assert!(read_to_close(&mut raw).await.is_empty());
}

#[tokio::test]
async fn a_plain_peer_sees_no_goaway_and_is_closed_after_its_calls() {
    let listener = loopback().await;
    let addr = listener.local_addr();
    let probe = Arc::new(Probe::default());
    let (stop, task) = serve(server(&probe).build().unwrap(), listener);
    let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
    let (mut buf, mut dec) = (BytesMut::new(), Decoder::default());
    send(&mut raw, request(1, "echo", vec!["x".into()])).await;
    let Message::Response { result, .. } = read_message(&mut raw, &mut buf, &mut dec).await else {
        panic!("expected the echo answer")
    };
    assert_eq!(result, Value::from("x"));
    send(&mut raw, request(2, "hold", vec!["held".into()])).await;
    probe.wait_held(1).await;

    stop.cancel();
    // The call already read finishes and its reply goes out; then the server closes the
    // connection without waiting for the peer, and nothing but the reply is on the wire.
    assert!(probe.release_one());
    let rest = read_to_close(&mut raw).await;
    buf.extend_from_slice(&rest);
    let Some(Message::Response { id, result, .. }) = dec.decode(&mut buf).unwrap() else {
        panic!("expected the held call's answer")
    };
    assert_eq!((id, result), (Value::from(2), Value::from("held")));
    assert!(buf.is_empty(), "more after the reply: {buf:?}");
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

/// A duplicate of `listener`'s descriptor, as a successor process would inherit it.
fn fd(listener: &Listener) -> OwnedFd {
    listener.as_fd().try_clone_to_owned().unwrap()
}

#[tokio::test]
async fn a_tcp_listener_from_a_descriptor_accepts_calls() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = std_listener.local_addr().unwrap().port();
    let listener = Listener::from_fd(OwnedFd::from(std_listener)).unwrap();
    let addr = listener.local_addr();
    assert_eq!(addr, Addr::Tcp(format!("127.0.0.1:{port}")));
    let probe = Arc::new(Probe::default());
    let (stop, task) = serve(named(&probe, "inherited"), listener);
    let client = Client::connect(&addr.to_string()).await.unwrap();
    assert_eq!(
        client.call::<_, String>("whoami", &[(); 0]).await.unwrap(),
        "inherited"
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_unix_socket_file_outlives_the_process_that_handed_it_over() {
    let dir = std::env::temp_dir().join(format!("shoal-rpc-handover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let addr: Addr = format!("unix:{}", path.display()).parse().unwrap();
    let mut first = Listener::bind(&addr).await.unwrap();
    let handed = fd(&first);
    first.leave_socket_file();
    drop(first);
    assert!(path.exists(), "the handing-over listener removed the file");

    let successor = Listener::from_fd(handed).unwrap();
    assert_eq!(successor.local_addr(), addr);
    let mut last = successor.try_clone().unwrap();
    let probe = Arc::new(Probe::default());
    let (stop, task) = serve(named(&probe, "successor"), successor);
    let client = Client::connect(&addr.to_string()).await.unwrap();
    assert_eq!(
        client.call::<_, String>("whoami", &[(); 0]).await.unwrap(),
        "successor"
    );
    stop.cancel();
    task.await.unwrap();
    // A listener from a descriptor leaves the file unless told to remove it.
    assert!(path.exists(), "the successor's listener removed the file");
    last.remove_socket_file_on_drop();
    drop(last);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn descriptors_that_are_not_listening_stream_sockets_are_refused() {
    let check = |fd: OwnedFd, expected: &str| {
        let err = Listener::from_fd(fd).unwrap_err().to_string();
        assert!(
            err.starts_with("listen on file descriptor") && err.contains(expected),
            "{err}"
        );
    };
    check(
        OwnedFd::from(std::fs::File::open("/dev/null").unwrap()),
        "not a socket",
    );
    check(
        OwnedFd::from(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()),
        "not a stream",
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    check(OwnedFd::from(connected), "not listening");
}
