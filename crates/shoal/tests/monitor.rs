//! The monitor feed end to end: an application publishing its status on a real ZeroMQ PUB
//! socket on loopback, received by the `zeromq` crate's SUB socket and by Python's pyzmq (a
//! third-party ZeroMQ implementation, libzmq); formats, reloads, a busy address, an `ipc://`
//! path that is not a socket, close, and hostile peers (bad bytes, peers that never subscribe
//! or never read) that must not keep real subscribers out.

mod common;

#[path = "../examples/hello.rs"]
#[allow(dead_code)]
mod hello;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{config_args, no_env, wait_for, Scratch};
use shoal::status::{ServiceState, Status};
use shoal::{Client, Exit, Running, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use zeromq::{Socket, SocketRecv, SubSocket};

/// Longest any one step may take before the test fails (a deadline, not a measurement).
const LIMIT: Duration = Duration::from_secs(10);
/// Longest the feed may take to close the connection of a peer it must refuse at once: well
/// below the 10 s it gives a peer to complete the handshake, so that a refusal is not
/// mistaken for that timeout.
const AT_ONCE: Duration = Duration::from_secs(2);
/// Longest the feed may take to drop a peer that never subscribes (it gives one 10 s) or
/// never reads (5 s to take each message), with room to spare.
const DROPPED: Duration = Duration::from_secs(30);
/// Peers the feed serves at once.
const PLACES: usize = 64;

/// A `hello` configuration publishing every 100 ms with `monitor` as the rest of the table,
/// and a database URL with a password.
fn config(monitor: &str) -> String {
    format!(
        "[rpc]\nlisten = \"127.0.0.1:0\"\n\n[monitor]\nevery = \"100ms\"\n{monitor}\n\n\
         [hello]\ngreeting = \"Hi\"\n\n[store]\nurl = \"postgres://user:secretpw@h/db\"\n"
    )
}

async fn start(file: &Path) -> Running {
    hello::app()
        .args(config_args(file), no_env())
        .start()
        .await
        .expect("the application starts")
}

async fn monitor_addr(running: &Running) -> String {
    tokio::time::timeout(LIMIT, running.monitor_addr())
        .await
        .expect("the monitor feed binds")
        .expect("monitor.publish is set")
}

async fn subscribe(addr: &str) -> SubSocket {
    let mut sub = SubSocket::new();
    tokio::time::timeout(LIMIT, sub.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    sub.subscribe(shoal::monitor::TOPIC).await.unwrap();
    sub
}

/// The payload of the next message, checking that it is the topic then one payload frame.
async fn next_payload(sub: &mut SubSocket) -> Vec<u8> {
    let message = tokio::time::timeout(LIMIT, sub.recv())
        .await
        .expect("a snapshot arrives")
        .expect("receive");
    let frames = message.into_vec();
    assert_eq!(frames.len(), 2, "topic and payload: {frames:?}");
    assert_eq!(&frames[0][..], b"shoal.status");
    frames[1].to_vec()
}

/// Decodes a payload in either format, saying which it was.
fn decode(payload: &[u8]) -> (&'static str, Status) {
    if payload.first() == Some(&b'{') {
        (
            "json",
            serde_json::from_slice(payload).expect("a JSON status"),
        )
    } else {
        (
            "msgpack",
            rmp_serde::from_slice(payload).expect("a msgpack status"),
        )
    }
}

/// Receives snapshots until one satisfies `check`.
async fn next_where(
    sub: &mut SubSocket,
    what: &str,
    check: impl Fn(&'static str, &Status) -> bool,
) -> Status {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot with {what} within {LIMIT:?}"
        );
        let (format, status) = decode(&next_payload(sub).await);
        if check(format, &status) {
            return status;
        }
    }
}

fn keys(value: &Value) -> Vec<String> {
    let map = value.as_map().expect("a map");
    let mut keys: Vec<String> = map
        .iter()
        .map(|(k, _)| k.as_str().expect("string keys").to_owned())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn msgpack_snapshots_reach_a_subscriber_and_the_last_one_says_closing() {
    let dir = Scratch::new("monitor-msgpack");
    let file = dir.write(
        "hello.toml",
        &config("publish = \"tcp://127.0.0.1:0\"\nformat = \"msgpack\""),
    );
    let running = start(&file).await;
    let addr = monitor_addr(&running).await;
    let port: u16 = addr
        .strip_prefix("tcp://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a loopback endpoint with a port: {addr}"));
    assert_ne!(port, 0);
    assert_eq!(running.handle().status().monitor_addr.as_ref(), Some(&addr));

    let mut sub = subscribe(&addr).await;
    for _ in 0..2 {
        let payload = next_payload(&mut sub).await;
        let (format, status) = decode(&payload);
        assert_eq!(format, "msgpack");
        assert_eq!(status.name, "hello");
        assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(status.pid, std::process::id());
        assert_eq!(status.state, ServiceState::Running);
        assert_eq!(status.monitor_addr.as_ref(), Some(&addr));
        assert_eq!(status.config["hello"]["greeting"].as_str(), Some("Hi"));
        // A password inside a value is cut out, whatever the key.
        assert_eq!(
            status.config["store"]["url"].as_str(),
            Some("postgres://user:<redacted>@h/db")
        );
        assert!(
            !payload.windows(8).any(|w| w == b"secretpw"),
            "the feed carries the password"
        );
        // The same map `shoal.status` answers.
        let published: Value = rmp_serde::from_slice(&payload).unwrap();
        let rpc = running.rpc_addr().unwrap().to_string();
        let answered: Value = Client::connect(&rpc)
            .await
            .unwrap()
            .call("shoal.status", &[(); 0])
            .await
            .unwrap();
        assert_eq!(keys(&published), keys(&answered));
    }

    running.handle().close();
    let last = next_where(&mut sub, "state closing", |_, s| {
        s.state != ServiceState::Running
    })
    .await;
    assert_eq!(last.state, ServiceState::Closing);
    assert_eq!(last.pid, std::process::id());
    assert_eq!(running.wait().await, Exit::Closed);
    // Closed, not leaked: the port can be bound again.
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the monitor port is free");
}

#[tokio::test]
async fn a_reload_changes_format_at_once_and_moves_the_feed_releasing_the_old_port() {
    let dir = Scratch::new("monitor-reload");
    let file = dir.write(
        "hello.toml",
        &config("publish = \"tcp://127.0.0.1:0\"\nformat = \"json\""),
    );
    let running = start(&file).await;
    let tcp = monitor_addr(&running).await;
    let mut sub = subscribe(&tcp).await;
    let status = next_where(&mut sub, "JSON", |f, _| f == "json").await;
    assert_eq!(
        (status.name.as_str(), status.pid),
        ("hello", std::process::id())
    );
    assert_eq!(status.state, ServiceState::Running);

    // The format: the same socket, msgpack from the next snapshot on.
    dir.write(
        "hello.toml",
        &config("publish = \"tcp://127.0.0.1:0\"\nformat = \"msgpack\""),
    );
    running.handle().reload().await.unwrap();
    let status = next_where(&mut sub, "msgpack", |f, _| f == "msgpack").await;
    assert_eq!(status.monitor_addr.as_ref(), Some(&tcp));
    assert!(status.last_reload.unwrap().ok);

    // A malformed endpoint is rejected naming the key; the feed goes on where it was.
    dir.write("hello.toml", &config("publish = \"tcp://127.0.0.1\""));
    let error = running.handle().reload().await.unwrap_err();
    assert!(error.contains("monitor.publish"), "{error}");
    assert!(error.contains("tcp://HOST:PORT"), "{error}");
    next_payload(&mut sub).await;
    assert_eq!(running.handle().status().monitor_addr.as_ref(), Some(&tcp));

    // The address: the old socket is closed before the new one binds.
    let socket = dir.join("monitor.sock");
    let ipc = format!("ipc://{}", socket.display());
    dir.write("hello.toml", &config(&format!("publish = \"{ipc}\"")));
    running.handle().reload().await.unwrap();
    wait_for("the feed on the new address", LIMIT, || {
        (running.handle().status().monitor_addr.as_ref() == Some(&ipc)).then_some(())
    })
    .await;
    let port: u16 = tcp.rsplit(':').next().unwrap().parse().unwrap();
    wait_for("the old port to be free", LIMIT, || {
        std::net::TcpListener::bind(("127.0.0.1", port)).ok()
    })
    .await;
    let mut sub = subscribe(&ipc).await;
    let status = next_where(&mut sub, "the new address", |f, s| {
        f == "msgpack" && s.monitor_addr.as_ref() == Some(&ipc)
    })
    .await;
    assert_eq!(status.state, ServiceState::Running);

    running.handle().close();
    next_where(&mut sub, "state closing", |_, s| {
        s.state == ServiceState::Closing
    })
    .await;
    assert_eq!(running.wait().await, Exit::Closed);
    assert!(!socket.exists(), "the socket file is removed at close");
}

#[tokio::test]
async fn a_malformed_endpoint_is_a_configuration_error_at_start() {
    let dir = Scratch::new("monitor-bad");
    for publish in [
        "tcp://127.0.0.1",
        "127.0.0.1:5558",
        "udp://127.0.0.1:5558",
        "ipc://*",
    ] {
        let file = dir.write("hello.toml", &config(&format!("publish = \"{publish}\"")));
        let exit = hello::app()
            .args(config_args(&file), no_env())
            .start()
            .await
            .unwrap_err()
            .exit();
        assert_eq!(exit, Exit::BadConfig, "{publish}");
    }
}

#[tokio::test]
async fn an_address_in_use_does_not_fail_the_start_and_is_bound_once_free() {
    // What a re-executed process meets while its predecessor still holds the port.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let dir = Scratch::new("monitor-busy");
    let addr = format!("tcp://127.0.0.1:{port}");
    let file = dir.write("hello.toml", &config(&format!("publish = \"{addr}\"")));
    let running = start(&file).await;
    // Serving meanwhile.
    let rpc = running.rpc_addr().unwrap().to_string();
    let greeting: String = Client::connect(&rpc)
        .await
        .unwrap()
        .call("greet", &["you"])
        .await
        .unwrap();
    assert_eq!(greeting, "Hi, you");
    assert_eq!(running.handle().status().monitor_addr, None);

    drop(holder);
    assert_eq!(monitor_addr(&running).await, addr);
    let mut sub = subscribe(&addr).await;
    let status = next_where(&mut sub, "a snapshot", |_, _| true).await;
    assert_eq!(status.pid, std::process::id());
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn an_ipc_path_naming_a_file_that_is_not_a_socket_leaves_it_and_binds_once_it_is_gone() {
    // `ipc://app.toml` for `ipc://app.sock`: connecting to a file that is not a socket is
    // refused as connecting to a dead socket is, which must not make the file look stale.
    let dir = Scratch::new("monitor-not-a-socket");
    let notes = dir.write("notes.txt", "keep me\n");
    let ipc = format!("ipc://{}", notes.display());
    let file = dir.write("hello.toml", &config(&format!("publish = \"{ipc}\"")));
    let running = start(&file).await;
    // Serving meanwhile, without the feed.
    let rpc = running.rpc_addr().unwrap().to_string();
    let greeting: String = Client::connect(&rpc)
        .await
        .unwrap()
        .call("greet", &["you"])
        .await
        .unwrap();
    assert_eq!(greeting, "Hi, you");
    assert_eq!(running.handle().status().monitor_addr, None);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "keep me\n");

    // The bind is retried: once the file is moved away, the feed binds there.
    std::fs::rename(&notes, dir.join("notes.moved")).unwrap();
    assert_eq!(monitor_addr(&running).await, ipc);
    let mut sub = subscribe(&ipc).await;
    next_where(&mut sub, "a snapshot", |_, _| true).await;
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
    assert!(!notes.exists(), "the socket file is removed at close");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.moved")).unwrap(),
        "keep me\n"
    );
}

#[tokio::test]
async fn hostile_peers_are_disconnected_and_the_feed_goes_on() {
    let dir = Scratch::new("monitor-hostile");
    let file = dir.write("hello.toml", &config("publish = \"tcp://127.0.0.1:0\""));
    let running = start(&file).await;
    let addr = monitor_addr(&running).await;
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let greeting = zmtp_greeting();
    let mut huge_frame = vec![0x06];
    huge_frame.extend_from_slice(&(1u64 << 44).to_be_bytes());
    let mut http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    http.resize(64, b' ');
    let cases: [(&str, Vec<u8>); 3] = [
        // What made the `zeromq` crate allocate 16 TiB and abort.
        ("a 16 TiB frame", [&greeting[..], &huge_frame].concat()),
        ("not ZMTP", http),
        ("ZMTP 2", {
            let mut old = greeting;
            old[10] = 2;
            old.to_vec()
        }),
    ];
    // A peer that connects and says nothing holds no one up.
    let _silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    for (what, bytes) in cases {
        let mut peer = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        peer.write_all(&bytes).await.unwrap();
        // Our greeting and READY, then the end of the connection (or a reset), at once: not
        // after the handshake's time runs out.
        let mut got = Vec::new();
        let closed = tokio::time::timeout(AT_ONCE, peer.read_to_end(&mut got)).await;
        assert!(closed.is_ok(), "{what}: the connection stays open");
    }
    let mut sub = subscribe(&addr).await;
    let status = next_where(&mut sub, "a snapshot", |_, _| true).await;
    assert_eq!(status.state, ServiceState::Running);
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn peers_that_stop_reading_are_dropped_and_subscribers_get_their_places() {
    // Snapshots of a quarter MiB (they show the configuration, greeting included): one is
    // more than a peer's socket buffers hold.
    let dir = Scratch::new("monitor-no-read");
    let big = format!(
        "[rpc]\nlisten = \"127.0.0.1:0\"\n\n[monitor]\nevery = \"100ms\"\n\
         publish = \"tcp://127.0.0.1:0\"\n\n[hello]\ngreeting = \"{}\"\n",
        "x".repeat(256 << 10)
    );
    let running = start(&dir.write("hello.toml", &big)).await;
    let addr = monitor_addr(&running).await;
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();

    let mut hostile = Vec::new();
    for _ in 0..PLACES {
        hostile.push(handshaken(port).await);
    }
    assert!(has_a_place(port).await.is_none(), "{PLACES} places at most");
    // Subscribed (the topic frame of a snapshot arrives), then never reading again: the rest
    // of that snapshot fills their buffers.
    for peer in &mut hostile {
        peer.write_all(b"\x00\x0d\x01shoal.status").await.unwrap();
    }
    for peer in &mut hostile {
        let mut topic = [0; 14];
        tokio::time::timeout(LIMIT, peer.read_exact(&mut topic))
            .await
            .expect("a snapshot in time")
            .unwrap();
        assert_eq!(&topic, b"\x01\x0cshoal.status");
    }
    wait_until_every_place_is_free(port).await;
    drop(hostile);
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn peers_that_never_subscribe_are_dropped_and_subscribers_get_their_places() {
    let dir = Scratch::new("monitor-no-subscription");
    let file = dir.write("hello.toml", &config("publish = \"tcp://127.0.0.1:0\""));
    let running = start(&file).await;
    let addr = monitor_addr(&running).await;
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();

    let mut hostile = Vec::new();
    for _ in 0..PLACES {
        hostile.push(handshaken(port).await);
    }
    assert!(has_a_place(port).await.is_none(), "{PLACES} places at most");
    wait_until_every_place_is_free(port).await;
    // Each was closed: the end of the stream after the handshake, as nothing was sent them.
    for mut peer in hostile {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(LIMIT, peer.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "a peer without subscriptions is still connected"
        );
        assert_eq!(rest, b"");
    }
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn without_publish_there_is_no_feed() {
    let dir = Scratch::new("monitor-off");
    let file = dir.write("hello.toml", "[hello]\ngreeting = \"Hi\"\n");
    let running = start(&file).await;
    assert_eq!(running.monitor_addr().await, None);
    assert_eq!(running.handle().status().monitor_addr, None);
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

/// A ZMTP 3.0 greeting with the NULL mechanism.
fn zmtp_greeting() -> [u8; 64] {
    let mut greeting = [0u8; 64];
    greeting[0] = 0xff;
    greeting[9] = 0x7f;
    greeting[10] = 3;
    greeting[12..16].copy_from_slice(b"NULL");
    greeting
}

/// A peer that completes the handshake as a SUB socket and subscribes to nothing, with a small
/// receive buffer; returned once the feed has answered a PING after the handshake, so it holds
/// one of the places.
async fn handshaken(port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut peer = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let ready = b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03SUB";
    let ping = b"\x04\x09\x04PING\x00\x00ok";
    peer.write_all(&[&zmtp_greeting()[..], ready, ping].concat())
        .await
        .unwrap();
    // The feed's greeting and READY command, then the PONG.
    let mut theirs = [0; 64 + 2];
    tokio::time::timeout(LIMIT, peer.read_exact(&mut theirs))
        .await
        .expect("the feed answers the handshake in time")
        .expect("the feed has a place for the peer");
    let mut rest = vec![0; usize::from(theirs[65]) + 9];
    tokio::time::timeout(LIMIT, peer.read_exact(&mut rest))
        .await
        .expect("the feed answers the PING in time")
        .expect("the feed takes the handshake");
    assert!(rest.starts_with(b"\x05READY"), "{rest:?}");
    assert!(rest.ends_with(b"\x04\x07\x04PONGok"), "{rest:?}");
    peer
}

/// A connection the feed has a place for (it sends its greeting), or None when it closes the
/// connection instead.
async fn has_a_place(port: u16) -> Option<TcpStream> {
    let mut peer = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut greeting = [0; 64];
    let read = tokio::time::timeout(AT_ONCE, peer.read_exact(&mut greeting))
        .await
        .expect("greeted or closed at once");
    read.ok().map(|_| peer)
}

/// Waits within [`DROPPED`] until a subscriber receives snapshots and [`PLACES`] - 1 more
/// peers are served beside it: every earlier peer was dropped.
async fn wait_until_every_place_is_free(port: u16) {
    let deadline = tokio::time::Instant::now() + DROPPED;
    let addr = format!("tcp://127.0.0.1:{port}");
    let mut sub = loop {
        // Without a place, the feed closes the connection before the handshake.
        let mut sub = SubSocket::new();
        if let Ok(Ok(())) = tokio::time::timeout(AT_ONCE, sub.connect(&addr)).await {
            sub.subscribe(shoal::monitor::TOPIC).await.unwrap();
            break sub;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no place for a subscriber within {DROPPED:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = next_where(&mut sub, "a snapshot", |_, _| true).await;
    assert_eq!(status.pid, std::process::id());
    let mut others = Vec::new();
    while others.len() < PLACES - 1 {
        match has_a_place(port).await {
            Some(peer) => others.push(peer),
            None => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} of {PLACES} places free within {DROPPED:?}",
                    others.len() + 1
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // The subscriber among them still receives snapshots.
    next_where(&mut sub, "a snapshot", |_, _| true).await;
}

/// The venv `.ci/run` makes with `pyzmq` and `msgpack`.
const PYTHON: &str = "SHOAL_TEST_PYTHON_ZMQ";

#[tokio::test]
async fn pyzmq_subscriber_decodes_the_snapshots() {
    let Some(python) = python().await else {
        return;
    };
    let dir = Scratch::new("monitor-pyzmq");
    for format in ["msgpack", "json"] {
        let file = dir.write(
            "hello.toml",
            &config(&format!(
                "publish = \"tcp://127.0.0.1:0\"\nformat = \"{format}\""
            )),
        );
        let running = start(&file).await;
        let addr = monitor_addr(&running).await;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/monitor_sub.py");
        let child = tokio::process::Command::new(&python)
            .arg(&script)
            .args([&addr, "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the Python subscriber");
        let out = tokio::time::timeout(LIMIT * 3, child.wait_with_output())
            .await
            .expect("the Python subscriber ends in time")
            .unwrap();
        assert!(out.status.success(), "monitor_sub.py: {}", out.status);
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for line in &lines {
            assert_eq!(line["topic"], "shoal.status", "{line}");
            assert_eq!(line["format"], format, "{line}");
            assert_eq!(line["name"], "hello", "{line}");
            assert_eq!(line["pid"], std::process::id(), "{line}");
            assert_eq!(line["state"], "running", "{line}");
            assert_eq!(line["monitor_addr"], addr.as_str(), "{line}");
            assert_eq!(line["greeting"], "Hi", "{line}");
            assert!(line["uptime_secs"].is_u64(), "{line}");
            assert!(line["methods"].is_array(), "{line}");
        }
        running.handle().close();
        assert_eq!(running.wait().await, Exit::Closed);
    }
}

/// The interpreter, or `None` after printing why the test is skipped (see [`common::skip`]).
async fn python() -> Option<std::path::PathBuf> {
    let skip = |why: String| {
        common::skip(&format!("pyzmq interop: {why} (set {PYTHON}, see .ci/run)"));
        None
    };
    let Some(exe) = std::env::var_os(PYTHON) else {
        return skip(format!("{PYTHON} is not set"));
    };
    let status = tokio::process::Command::new(&exe)
        .args(["-c", "import zmq, msgpack"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => Some(exe.into()),
        Ok(s) => skip(format!("`import zmq, msgpack` failed in {exe:?} ({s})")),
        Err(e) => skip(format!("cannot run {exe:?}: {e}")),
    }
}
