//! The server against one greedy or broken peer: each test reproduces what such a peer did
//! to the server (memory, CPU, descriptors, log) and shows it bounded, while everyone else
//! is still served. Figures (memory, latency) are in `bench/rpc-hostile.sh`; these assert
//! only on quantities that are bounded by construction.

mod common;
#[path = "common/logs.rs"]
mod logs;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::{client, serve_tcp, server, Probe};
use logs::Logs;
use serde::Serialize;
use shoal_rpc::codec::{self, Decoder, Message};
use shoal_rpc::transport::memory_pair;
use shoal_rpc::{codes, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);

fn request<P: Serialize + ?Sized>(id: u32, method: &str, params: &P) -> Vec<u8> {
    let mut buf = BytesMut::new();
    codec::encode_request(&mut buf, id, method, params, None).unwrap();
    buf.to_vec()
}

fn notification<P: Serialize + ?Sized>(method: &str, params: &P) -> Vec<u8> {
    let mut buf = BytesMut::new();
    codec::encode_notification(&mut buf, method, params).unwrap();
    buf.to_vec()
}

/// About 8 MiB of `count` notifications (which the probe counts), and how many.
fn flood_of_counts() -> (Vec<u8>, usize) {
    let one = notification("count", &[(); 0]);
    let count = (8 << 20) / one.len();
    let bytes = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * count)
        .collect();
    (bytes, count)
}

/// Reads until `n` responses came; returns them.
async fn responses(rd: &mut (impl AsyncRead + Unpin), n: usize) -> Vec<Message> {
    let mut dec = Decoder::new(64 << 20);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    while got.len() < n {
        let read = tokio::time::timeout(T, rd.read_buf(&mut buf))
            .await
            .expect("the server stopped answering")
            .unwrap();
        assert!(read > 0, "closed after {} of {n} responses", got.len());
        while let Some(m) = dec.decode(&mut buf).unwrap() {
            got.push(m);
        }
    }
    got
}

/// Reads until the server closes; `within` is on the test's clock (paused in some tests,
/// where it only has to be later than the limit under test).
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .expect("the server kept the connection open")
        .unwrap();
    out
}

/// Waits for `cond`, polling, up to a deadline.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_its_replies_stops_being_read() {
    const BOUND: usize = 64 * 1024;
    const PAYLOAD: usize = 16 * 1024;
    const CALLS: u32 = 1000;
    let probe = Arc::new(Probe::default());
    let server = server(&probe).max_unsent(BOUND).build().unwrap();
    let ((mut cr, mut cw), (sr, sw)) = memory_pair();
    let at_server = server.serve_connection(sr, sw, "greedy", CancellationToken::new());
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move {
            let payload = "x".repeat(PAYLOAD);
            for id in 0..CALLS {
                let frame = request(id, "echo", &(payload.as_str(),));
                cw.write_all(&frame).await.unwrap();
                sent.fetch_add(frame.len(), Ordering::Relaxed);
            }
            cw
        }
    });
    // The clock is paused: this timer fires only once no task can move, so the writer is
    // blocked on a full pipe because the server stopped reading.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!writer.is_finished(), "the server read every call");
    let sent_now = sent.load(Ordering::Relaxed);
    // Two pipes of 256 KiB, the server's read buffer and the bound: well under the 16 MiB
    // of calls the peer tried to send.
    assert!(sent_now < 2 << 20, "the server read {sent_now} bytes");
    let unsent = at_server.unsent();
    assert!(unsent <= BOUND + PAYLOAD + 64, "{unsent} bytes queued");
    // Once the peer reads, the server reads on: every call is answered.
    let got = responses(&mut cr, CALLS as usize).await;
    assert_eq!(got.len(), CALLS as usize);
    writer.await.unwrap();
}

#[tokio::test]
async fn a_frame_of_too_many_values_is_refused_naming_the_limit() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).max_values(1000).build().unwrap()).await;
    let good = client(&addr).await;
    // 2,000 nils in 2,008 bytes would decode to 2,000 values of tens of bytes each.
    let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
    raw.write_all(&request(9, "echo", &vec![(); 2000]))
        .await
        .unwrap();
    let reply = read_to_close(&mut raw, T).await;
    let v = rmpv::decode::read_value(&mut &reply[..]).unwrap();
    assert_eq!(v[1], Value::from(9));
    assert_eq!(v[2]["code"], Value::from(codes::FRAME_TOO_LARGE));
    let message = v[2]["message"].as_str().unwrap();
    assert!(message.contains("more than 1000 values"), "{message}");
    assert_eq!(good.call::<_, i64>("echo", &(1,)).await.unwrap(), 1);
    stop.cancel();
}

/// One connection has 8 MiB of notifications (about 900,000) waiting to be read by a server
/// on one thread; another connection's call is answered after only a bounded number of them
/// was handled. Before, the flood's read loop took 128 reads of 64 KiB, the whole flood, in
/// one turn while the call waited.
#[tokio::test]
async fn a_notification_flood_does_not_starve_other_connections() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe).build().unwrap();
    let (flood, at_server) = tokio::io::duplex(16 << 20);
    let (sr, sw) = tokio::io::split(at_server);
    server.serve_connection(
        Box::new(sr),
        Box::new(sw),
        "flood",
        CancellationToken::new(),
    );
    let good = common::in_memory(&server);
    good.call("shoal.ping", &[(); 0], T).await.unwrap();

    let (bytes, count) = flood_of_counts();
    let (_fr, mut fw) = tokio::io::split(flood);
    fw.write_all(&bytes).await.unwrap();
    let before = probe.counted.load(Ordering::Relaxed);
    good.call("shoal.ping", &[(); 0], T).await.unwrap();
    let during = probe.counted.load(Ordering::Relaxed) - before;
    // A read loop handles about 1024 messages per turn (a unit of budget per 8), and the
    // call takes a few turns.
    assert!(
        during < count / 10,
        "{during} of {count} notifications were handled while one call waited"
    );
    wait_until("the flood is handled", || {
        probe.counted.load(Ordering::Relaxed) == count
    })
    .await;
}

/// A shoal peer that keeps the socket full of notifications still hears of a shutdown at
/// once: its reader looks for shutdown before each read, not only when a read finds nothing.
#[tokio::test]
async fn a_peer_that_keeps_the_socket_full_is_told_to_go_away_at_shutdown() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe).build().unwrap();
    let (flood, at_server) = tokio::io::duplex(16 << 20);
    let (sr, sw) = tokio::io::split(at_server);
    let stop = CancellationToken::new();
    server.serve_connection(Box::new(sr), Box::new(sw), "flood", stop.clone());
    let (mut fr, mut fw) = tokio::io::split(flood);
    fw.write_all(&request(1, "shoal.hello", &[(); 0]))
        .await
        .unwrap();
    let hello = responses(&mut fr, 1).await;
    assert!(matches!(&hello[0], Message::Response { error, .. } if error.is_nil()));

    let (bytes, count) = flood_of_counts();
    fw.write_all(&bytes).await.unwrap();
    stop.cancel();
    let mut dec = Decoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let handled = loop {
        let read = tokio::time::timeout(T, fr.read_buf(&mut buf))
            .await
            .expect("no goaway came")
            .unwrap();
        assert!(read > 0, "closed without a goaway");
        let handled = probe.counted.load(Ordering::Relaxed);
        match dec.decode(&mut buf).unwrap() {
            None => continue,
            Some(Message::Notification { method, .. }) if method == "shoal.goaway" => {
                break handled
            }
            Some(other) => panic!("expected shoal.goaway, got {other:?}"),
        }
    };
    assert!(
        handled < count / 10,
        "the goaway came after {handled} of the {count} notifications queued before it"
    );
    // Told to go away, the peer is still served until it closes.
    wait_until("the flood is handled", || {
        probe.counted.load(Ordering::Relaxed) == count
    })
    .await;
}

#[tokio::test]
async fn notifications_to_unknown_methods_are_counted_and_logged_at_a_bounded_rate() {
    let logs = Logs::default();
    let _guard = logs.install();
    let probe = Arc::new(Probe::default());
    let server = server(&probe).build().unwrap();
    let ((mut cr, mut cw), (sr, sw)) = memory_pair();
    server.serve_connection(sr, sw, "noisy", CancellationToken::new());
    let one = notification("no.such.method", &[(); 0]);
    let flood: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 20_000)
        .collect();
    cw.write_all(&flood).await.unwrap();
    // A call after the flood: once it is answered, every notification was handled.
    cw.write_all(&request(1, "shoal.ping", &[(); 0]))
        .await
        .unwrap();
    responses(&mut cr, 1).await;
    let lines = logs.lines_with("notification failed");
    // One line per 10 s per connection; the test takes far less, but allow a slow machine.
    assert!(
        !lines.is_empty() && lines.len() <= 3,
        "{} lines for 20,000 failures",
        lines.len()
    );
    assert!(
        lines[0].contains("method not found: no.such.method"),
        "{}",
        lines[0]
    );
}

async fn a_peer_that_goes_away_frees_its_connection(reset: bool) {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let good = client(&addr).await;
    good.call::<_, String>("shoal.ping", &[(); 0])
        .await
        .unwrap();
    let before = open_descriptors();
    let raw = TcpStream::connect(addr.to_string()).await.unwrap();
    let mut raw = raw.into_std().unwrap();
    raw.write_all(&request(1, "hold", &("x",))).unwrap();
    probe.wait_held(1).await;
    let at_server = probe.held_on.lock().unwrap()[0].clone();
    let dropped = probe.dropped.notified();
    if reset {
        // Linger 0: close sends a reset.
        let s = socket2_less_linger(raw);
        drop(s);
    } else {
        raw.shutdown(std::net::Shutdown::Both).unwrap();
        drop(raw);
    }
    // The handler is dropped and the server's end closes, without the handler finishing.
    tokio::time::timeout(T, dropped)
        .await
        .expect("the handler was not cancelled");
    tokio::time::timeout(T, at_server.closed())
        .await
        .expect("the connection stayed open");
    wait_until("the server's descriptor is closed", || {
        open_descriptors() <= before
    })
    .await;
    assert_eq!(probe.gates.lock().unwrap().len(), 1);
    assert_eq!(good.call::<_, i64>("echo", &(3,)).await.unwrap(), 3);
    stop.cancel();
}

/// Sets SO_LINGER to zero so that closing the socket resets the connection.
fn socket2_less_linger(s: std::net::TcpStream) -> std::net::TcpStream {
    use std::os::fd::AsFd;
    nix::sys::socket::setsockopt(
        &s.as_fd(),
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    s
}

#[tokio::test]
async fn a_peer_that_resets_cancels_its_handlers_and_frees_its_connection() {
    a_peer_that_goes_away_frees_its_connection(true).await;
}

#[tokio::test]
async fn a_peer_that_closes_cancels_its_handlers_and_frees_its_connection() {
    a_peer_that_goes_away_frees_its_connection(false).await;
}

/// Every in-flight slot is taken by a long call and one more call waits for a slot when the
/// peer goes away: the reader, waiting, still sees it, and the calls are cancelled at once.
/// Before, the reader waited for a slot without reading, so the peer's going away was seen
/// only once a handler ended.
async fn a_peer_past_the_in_flight_limit_that_goes_away_frees_its_connection(reset: bool) {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).max_in_flight(2).build().unwrap()).await;
    let before = open_descriptors();
    let raw = TcpStream::connect(addr.to_string()).await.unwrap();
    let mut raw = raw.into_std().unwrap();
    for id in 0..4 {
        raw.write_all(&request(id, "hold", &("x",))).unwrap();
    }
    probe.wait_held(2).await;
    let at_server = probe.held_on.lock().unwrap()[0].clone();
    if reset {
        drop(socket2_less_linger(raw));
    } else {
        raw.shutdown(std::net::Shutdown::Both).unwrap();
        drop(raw);
    }
    wait_until("both running calls are cancelled", || {
        probe.dropped_count.load(Ordering::Relaxed) == 2
    })
    .await;
    tokio::time::timeout(T, at_server.closed())
        .await
        .expect("the connection stayed open");
    wait_until("the server's descriptor is closed", || {
        open_descriptors() <= before
    })
    .await;
    // The calls past the limit never started.
    assert_eq!(probe.gates.lock().unwrap().len(), 2);
    stop.cancel();
}

#[tokio::test]
async fn a_peer_past_the_in_flight_limit_that_resets_frees_its_connection() {
    a_peer_past_the_in_flight_limit_that_goes_away_frees_its_connection(true).await;
}

#[tokio::test]
async fn a_peer_past_the_in_flight_limit_that_closes_frees_its_connection() {
    a_peer_past_the_in_flight_limit_that_goes_away_frees_its_connection(false).await;
}

/// The peer goes away while the server has stopped reading from it (its replies are not
/// taken): only the writer sees it, when its write fails. The peer's running calls are
/// cancelled all the same. Before, they ran on and held the connection until they ended.
#[tokio::test(start_paused = true)]
async fn a_peer_gone_that_only_the_writer_sees_cancels_its_handlers() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe)
        .max_unsent(64 * 1024)
        .stall_timeout(None)
        .build()
        .unwrap();
    let ((cr, mut cw), (sr, sw)) = memory_pair();
    let at_server = server.serve_connection(sr, sw, "gone", CancellationToken::new());
    cw.write_all(&request(0, "hold", &("x",))).await.unwrap();
    probe.wait_held(1).await;
    let writer = tokio::spawn(async move {
        let payload = "x".repeat(16 * 1024);
        for id in 1..1000 {
            if cw
                .write_all(&request(id, "echo", &(payload.as_str(),)))
                .await
                .is_err()
            {
                break;
            }
        }
        cw
    });
    // The clock is paused: this fires only once no task can move, so the server stopped
    // reading, its writer blocked on a pipe nobody reads.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!writer.is_finished(), "the server read every call");
    writer.abort();
    let _ = writer.await;
    drop(cr);
    tokio::time::timeout(T, at_server.closed())
        .await
        .expect("the connection stayed open");
    wait_until("the running call is cancelled", || {
        probe.dropped_count.load(Ordering::Relaxed) == 1
    })
    .await;
}

/// A close at this end is not a peer going away: a connection told `shoal.goaway` with
/// none of its calls waiting closes, and the peer's call still running finishes and its
/// reply goes out first.
#[tokio::test]
async fn a_connection_closed_at_this_end_still_answers_the_calls_running() {
    let probe = Arc::new(Probe::default());
    let ((ar, aw), (br, bw)) = memory_pair();
    let tracker = tokio_util::task::TaskTracker::new();
    let serving = shoal_rpc::Router::new(vec![Arc::new(common::TestService(probe.clone()))]);
    shoal_rpc::conn::spawn(
        ar,
        aw,
        "a",
        tower::util::BoxCloneSyncService::new(serving.unwrap()),
        Default::default(),
        CancellationToken::new(),
        &tracker,
    );
    let b = shoal_rpc::conn::spawn(
        br,
        bw,
        "b",
        tower::util::BoxCloneSyncService::new(shoal_rpc::Router::new(vec![]).unwrap()),
        Default::default(),
        CancellationToken::new(),
        &tracker,
    );
    let call = tokio::spawn({
        let b = b.clone();
        async move { b.call("hold", &("kept",), T).await }
    });
    probe.wait_held(1).await;
    let a = probe.held_on.lock().unwrap()[0].clone();
    b.notify("shoal.goaway", &[(); 0]).unwrap();
    tokio::time::timeout(T, a.closed())
        .await
        .expect("a drain with no call waiting did not close");
    assert!(probe.release_one());
    let answer = call
        .await
        .unwrap()
        .expect("the running call was not answered");
    assert_eq!(answer, Value::from("kept"));
    assert_eq!(probe.dropped_count.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_partial_frame_left_stalled_is_closed_with_a_logged_reason() {
    let logs = Logs::default();
    let _guard = logs.install();
    let probe = Arc::new(Probe::default());
    let server = server(&probe)
        .stall_timeout(Some(Duration::from_secs(30)))
        .build()
        .unwrap();
    let (addr, stop, _task) = serve_tcp(server).await;
    let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
    // The start of a request whose 1 MiB string never comes.
    let frame = request(1, "echo", &("x".repeat(1 << 20),));
    raw.write_all(&frame[..4096]).await.unwrap();
    let started = tokio::time::Instant::now();
    assert!(read_to_close(&mut raw, Duration::from_secs(300))
        .await
        .is_empty());
    // The clock is paused and moves only to the next timer: the limit, not anything else,
    // ended the connection.
    assert!(started.elapsed() >= Duration::from_secs(30));
    let lines = logs.lines_with("part of a message came, then nothing");
    assert_eq!(lines.len(), 1, "{lines:?}");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_and_a_shoal_peer_told_to_go_away() {
    let logs = Logs::default();
    let _guard = logs.install();
    let probe = Arc::new(Probe::default());
    let server = server(&probe)
        .idle_timeout(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    let (addr, stop, _task) = serve_tcp(server).await;

    // A plain peer: closed once idle past the limit, with the reason logged.
    let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
    raw.write_all(&request(1, "shoal.ping", &[(); 0]))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let reply = read_to_close(&mut raw, Duration::from_secs(300)).await;
    assert!(started.elapsed() >= Duration::from_secs(60));
    assert!(
        !reply.is_empty(),
        "the call before the idle time was answered"
    );
    assert_eq!(logs.lines_with("idle past the limit").len(), 1);

    // A shoal client: told to go away, it closes the idle connection itself and its next
    // call goes out on a new one without failing.
    let good = client(&addr).await;
    assert_eq!(good.call::<_, i64>("echo", &(1,)).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(logs.lines_with("idle connection: sent goaway").len(), 1);
    assert_eq!(good.call::<_, i64>("echo", &(2,)).await.unwrap(), 2);
    stop.cancel();
}

/// The idle limit counts from the last read: a peer that sends within each limit stays,
/// and is closed one limit (not more) after it stops.
#[tokio::test(start_paused = true)]
async fn the_idle_limit_counts_from_the_last_read() {
    let logs = Logs::default();
    let _guard = logs.install();
    let probe = Arc::new(Probe::default());
    let server = server(&probe)
        .idle_timeout(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    let (addr, stop, _task) = serve_tcp(server).await;

    let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
    for id in 0..4 {
        raw.write_all(&request(id, "shoal.ping", &[(); 0]))
            .await
            .unwrap();
        responses(&mut raw, 1).await;
        tokio::time::sleep(Duration::from_secs(45)).await;
    }
    let last = tokio::time::Instant::now();
    raw.write_all(&request(9, "shoal.ping", &[(); 0]))
        .await
        .unwrap();
    let reply = read_to_close(&mut raw, Duration::from_secs(300)).await;
    assert!(!reply.is_empty(), "the last call was answered");
    let idle = last.elapsed();
    assert!(
        idle >= Duration::from_secs(60) && idle < Duration::from_secs(61),
        "closed {idle:?} after the last read"
    );
    assert_eq!(logs.lines_with("idle past the limit").len(), 1);
    stop.cancel();
}

#[tokio::test]
async fn connections_past_the_listener_cap_are_refused_with_a_logged_reason() {
    let logs = Logs::default();
    let _guard = logs.install();
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).max_connections(2).build().unwrap()).await;
    let mut open = Vec::new();
    for id in 0..2 {
        let mut s = TcpStream::connect(addr.to_string()).await.unwrap();
        s.write_all(&request(id, "shoal.ping", &[(); 0]))
            .await
            .unwrap();
        responses(&mut s, 1).await;
        open.push(s);
    }
    for _ in 0..5 {
        let mut third = TcpStream::connect(addr.to_string()).await.unwrap();
        let _ = third.write_all(&request(9, "shoal.ping", &[(); 0])).await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(T, third.read_to_end(&mut out))
            .await
            .expect("a connection past the cap stayed open");
        // Closed unanswered (a reset if our bytes arrived after the close).
        assert!(read.is_err() || out.is_empty(), "answered past the cap");
    }
    let lines = logs.lines_with("connection refused");
    assert_eq!(lines.len(), 1, "one line for five refusals: {lines:?}");
    // A place frees up: new connections are served again.
    drop(open.pop());
    wait_until_served(&addr).await;
    stop.cancel();
}

async fn wait_until_served(addr: &shoal_rpc::Addr) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let mut s = TcpStream::connect(addr.to_string()).await.unwrap();
        let _ = s.write_all(&request(1, "shoal.ping", &[(); 0])).await;
        let mut buf = vec![0; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(T, s.read(&mut buf)).await {
            if n > 0 {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Out of descriptors, the accept loop pauses between attempts and logs once per interval;
/// the connections already open are served meanwhile, and the waiting one once descriptors
/// are back. Before, it retried at once: 100% CPU and a line per attempt.
#[tokio::test(start_paused = true)]
async fn out_of_descriptors_the_accept_loop_backs_off_and_logs_once_per_interval() {
    let logs = Logs::default();
    let _guard = logs.install();
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let mut good = TcpStream::connect(addr.to_string()).await.unwrap();
    good.write_all(&request(1, "shoal.ping", &[(); 0]))
        .await
        .unwrap();
    responses(&mut good, 1).await;
    // Take every descriptor left, then give one back for the client's socket: the server's
    // accept has none.
    let null = std::fs::File::open("/dev/null").unwrap();
    let mut hog = Vec::new();
    loop {
        match null.try_clone() {
            Ok(f) => hog.push(f),
            Err(e) if e.raw_os_error() == Some(nix::libc::EMFILE) => break,
            Err(e) => panic!("{e}"),
        }
    }
    hog.pop();
    let mut waiting = TcpStream::connect(addr.to_string()).await.unwrap();
    waiting
        .write_all(&request(2, "shoal.ping", &[(); 0]))
        .await
        .unwrap();
    // A minute passes on the paused clock, during which the loop keeps failing to accept.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let lines = logs.lines_with("accept failed");
    assert!(
        (1..=7).contains(&lines.len()),
        "{} lines in a minute",
        lines.len()
    );
    // The connection already open is served meanwhile.
    good.write_all(&request(3, "shoal.ping", &[(); 0]))
        .await
        .unwrap();
    responses(&mut good, 1).await;
    drop(hog);
    responses(&mut waiting, 1).await;
    stop.cancel();
}

#[tokio::test]
async fn an_error_reply_is_never_larger_than_the_frame_limit() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).max_message(4096).build().unwrap()).await;
    // A method name that fills the frame: the error naming it would not fit.
    let name = "m".repeat(4080);
    let frame = request(5, &name, &[(); 0]);
    assert!(frame.len() <= 4096);
    let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
    raw.write_all(&frame).await.unwrap();
    let got = responses(&mut raw, 1).await;
    let Message::Response { id, error, .. } = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(id, &Value::from(5));
    assert_eq!(error["code"], Value::from(codes::METHOD_NOT_FOUND));
    let message = error["message"].as_str().unwrap();
    assert!(message.ends_with("... (4080 bytes)"), "{message}");
    assert!(message.len() < 400, "{message}");
    stop.cancel();
}

/// Any error reply over the frame limit, not only one naming a long method, is replaced by
/// a short frame-too-large error that says what was cut, and the connection goes on.
#[tokio::test]
async fn an_oversized_error_from_a_handler_is_cut_to_a_short_one() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).max_message(4096).build().unwrap()).await;
    let mut raw = TcpStream::connect(addr.to_string()).await.unwrap();
    raw.write_all(&request(7, "fail_big", &(8000,)))
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let got = loop {
        let mut chunk = vec![0; 8192];
        let n = tokio::time::timeout(T, raw.read(&mut chunk))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        bytes.extend_from_slice(&chunk[..n]);
        let mut dec = Decoder::new(64 << 20);
        if let Some(m) = dec.decode(&mut BytesMut::from(&bytes[..])).unwrap() {
            break m;
        }
    };
    assert!(bytes.len() < 4096, "a reply of {} bytes", bytes.len());
    let Message::Response { id, error, .. } = &got else {
        panic!("{got:?}")
    };
    assert_eq!(id, &Value::from(7));
    assert_eq!(error["code"], Value::from(codes::FRAME_TOO_LARGE));
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("error reply (code 1002) of ")
            && message.ends_with("bytes exceeds the limit of 4096 bytes"),
        "{message}"
    );
    // The same error under the limit goes out whole, on the same connection.
    raw.write_all(&request(8, "fail_big", &(100,)))
        .await
        .unwrap();
    let got = responses(&mut raw, 1).await;
    let Message::Response { error, .. } = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(error["code"], Value::from(1002));
    assert_eq!(error["data"].as_str().map(str::len), Some(100));
    stop.cancel();
}

/// Backpressure must not deadlock two shoal peers that both queue a lot: a client that has
/// more than the bound of calls queued still reads its answers, so the server's replies
/// drain and the server reads on.
#[tokio::test]
async fn many_large_calls_at_once_all_finish_under_backpressure() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe).max_unsent(256 * 1024).build().unwrap();
    let peer = common::in_memory(&server);
    let payload = "p".repeat(256 * 1024);
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let peer = peer.clone();
            let payload = payload.clone();
            tokio::spawn(async move { peer.call("echo", &(payload,), T).await })
        })
        .collect();
    for call in calls {
        let got = call.await.unwrap().unwrap();
        assert_eq!(got.as_str().map(str::len), Some(256 * 1024));
    }
}
