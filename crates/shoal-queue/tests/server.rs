//! The queue server over loopback with ephemeral ports and over a Unix socket: every RPC
//! method through `shoal_queue::Client`, the errors a caller sees, access control, and a
//! graceful close whose data survives a restart.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_queue::client::codes;
use shoal_queue::{Client, Config, Queue, StartError, TlsFiles};
use shoal_rpc::{Addr, ClientTls};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(20);

struct Running {
    addr: Addr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), StartError>>,
}

async fn start(config: Config) -> Running {
    let queue = Queue::bind(config).await.unwrap();
    let addr = queue.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(queue.serve(async move {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

impl Running {
    async fn close(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(T, self.task)
            .await
            .expect("the queue closes within the grace period")
            .unwrap()
            .unwrap();
    }
}

fn loopback(dir: &Path) -> Config {
    Config::new(dir, "127.0.0.1:0".parse().unwrap())
}

fn code(err: &shoal_rpc::Error) -> Option<i64> {
    err.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_over_loopback_and_the_data_survives_a_restart() {
    let dir = TestDir::new("e2e");
    let queue = start(loopback(dir.path())).await;
    let client = Client::connect(&queue.addr).await.unwrap();
    client.create_topic("jobs", Some(1 << 16)).await.unwrap();
    client.register("jobs", "billing").await.unwrap();
    client.register("jobs", "audit").await.unwrap();

    // A fetch waiting on an empty topic is answered by the next publish.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.fetch("jobs", "billing", 10, T).await })
    };
    let seqs = client.publish("jobs", ["a", "b", "c"]).await.unwrap();
    assert_eq!(seqs, [1, 2, 3]);
    let got = tokio::time::timeout(T, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        !got.is_empty() && got[0].seq == 1 && got[0].data == b"a",
        "{got:?}"
    );
    let rest = client
        .fetch("jobs", "billing", 10, Duration::ZERO)
        .await
        .unwrap();
    let delivered: Vec<u64> = got.iter().chain(&rest).map(|m| m.seq).collect();
    assert_eq!(delivered, [1, 2, 3]);

    // billing acks 1 and 2 and hands 3 back; it comes again once its delay passes.
    client.ack("jobs", "billing", &[1, 2]).await.unwrap();
    client
        .nack("jobs", "billing", &[3], Duration::from_millis(100))
        .await
        .unwrap();
    let again = client.fetch("jobs", "billing", 10, T).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].seq == 3 && again[0].redelivered, "{again:?}");

    let stats = client.stats(Some("jobs")).await.unwrap();
    assert_eq!((stats[0].first_seq, stats[0].last_seq), (1, 3));
    let billing = stats[0].subs.iter().find(|s| s.name == "billing").unwrap();
    assert_eq!(
        (billing.lag, billing.unacked, billing.redelivered),
        (1, 1, 1)
    );
    let audit = stats[0].subs.iter().find(|s| s.name == "audit").unwrap();
    assert_eq!((audit.lag, audit.unacked), (3, 0));

    // Errors carry their code and name what is at fault.
    let err = client.publish("nope", ["x"]).await.unwrap_err();
    assert_eq!(code(&err), Some(codes::NO_TOPIC), "{err}");
    assert!(err.to_string().contains("no topic nope"), "{err}");
    let err = client
        .fetch("jobs", "ghost", 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(codes::NO_SUBSCRIPTION), "{err}");
    let err = client
        .publish("jobs", [vec![0u8; 2 << 20]])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(codes::TOO_LARGE), "{err}");

    // audit never acks: the topic fills up, and the error names it.
    let err = loop {
        match client.publish("jobs", [vec![7u8; 4000]]).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(code(&err), Some(codes::FULL), "{err}");
    assert!(
        err.to_string().contains("topic jobs is full")
            && err.to_string().contains("subscription audit"),
        "{err}"
    );
    let last = client.stats(Some("jobs")).await.unwrap()[0].last_seq;
    queue.close().await;

    // After a restart: every acknowledged publish is there, and billing's acks held.
    let queue = start(loopback(dir.path())).await;
    let client = Client::connect(&queue.addr).await.unwrap();
    let stats = client.stats(None).await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].last_seq, last);
    let first = client
        .fetch("jobs", "billing", 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first[0].seq, 3);
    let audit = client
        .fetch("jobs", "audit", 3, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(audit.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3]);
    // Unregistering audit releases what it held.
    client.unregister("jobs", "audit").await.unwrap();
    client.ack("jobs", "billing", &[3]).await.unwrap();
    let drained = client
        .fetch("jobs", "billing", 1000, Duration::ZERO)
        .await
        .unwrap();
    let seqs: Vec<u64> = drained.iter().map(|m| m.seq).collect();
    client.ack("jobs", "billing", &seqs).await.unwrap();
    let stats = client.stats(Some("jobs")).await.unwrap();
    assert_eq!(stats[0].subs[0].lag, 0);
    assert!(stats[0].bytes < 1 << 16, "{stats:?}");
    queue.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_runs_open_and_a_close_finishes_the_fetch_in_flight() {
    let dir = TestDir::new("unix");
    let socket = dir.path().join("queue.sock");
    let queue = start(Config::new(dir.path().join("data"), Addr::Unix(socket))).await;
    let client = Client::connect(&queue.addr).await.unwrap();
    client.create_topic("t", None).await.unwrap();
    client.register("t", "s").await.unwrap();
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.fetch("t", "s", 1, Duration::from_millis(300)).await })
    };
    // Once the fetch waits on the empty topic, closing lets it finish with its answer rather
    // than cutting the connection.
    wait_for(|| async { client.stats(Some("t")).await.unwrap()[0].waiting == 1 }).await;
    let _ = queue.stop.send(());
    assert_eq!(waiting.await.unwrap().unwrap(), []);
    tokio::time::timeout(T, queue.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_its_connection_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TestDir::new("malformed");
    let queue = start(loopback(dir.path())).await;
    let client = Client::connect(&queue.addr).await.unwrap();
    client.create_topic("t", None).await.unwrap();
    let mut raw = tokio::net::TcpStream::connect(queue.addr.to_string())
        .await
        .unwrap();
    // 0xc1 is never used by MessagePack.
    raw.write_all(&[0xc1, 0xc1, 0xc1, 0xc1]).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(T, raw.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the server kept a connection that sent garbage open"
    );
    assert_eq!(client.publish("t", ["still here"]).await.unwrap(), [1]);
    queue.close().await;
}

#[tokio::test]
async fn any_other_address_needs_tls_and_a_private_token_file() {
    let dir = TestDir::new("access");
    let open = Config::new(dir.path(), "0.0.0.0:0".parse().unwrap());
    let err = Queue::bind(open.clone()).await.unwrap_err();
    assert!(matches!(err, StartError::OpenOnNetwork { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("0.0.0.0:0 is not a loopback address"),
        "{err}"
    );

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "s3cret\n").unwrap();
    std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut secured = open.clone();
    secured.tls = Some(TlsFiles {
        cert: cert_path,
        key: key_path,
    });
    secured.token_file = Some(token_path.clone());
    let err = Queue::bind(secured.clone()).await.unwrap_err();
    assert!(err.to_string().contains("mode is 0644"), "{err}");
    let mut no_tls = secured.clone();
    no_tls.tls = None;
    std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        Queue::bind(no_tls).await.unwrap_err(),
        StartError::OpenOnNetwork { .. }
    ));

    let queue = start(secured).await;
    let Addr::Tcp(bound) = &queue.addr else {
        panic!("bound {}", queue.addr)
    };
    let port = bound.rsplit_once(':').unwrap().1;
    let addr: Addr = format!("localhost:{port}").parse().unwrap();
    let tls = || {
        let mut tls = ClientTls::from_ca_pem(cert.cert.pem().as_bytes()).unwrap();
        tls.server_name = Some("localhost".into());
        tls
    };
    let wrong = Client::connect_with(&addr, Some(tls()), Some("guess".into()))
        .await
        .unwrap();
    let err = wrong.create_topic("t", None).await.unwrap_err();
    assert_eq!(err.code(), Some(codes::UNAUTHORIZED), "{err}");
    let right = Client::connect_with(&addr, Some(tls()), Some("s3cret".into()))
        .await
        .unwrap();
    right.create_topic("t", None).await.unwrap();
    assert_eq!(right.publish("t", ["x"]).await.unwrap(), [1]);
    queue.close().await;
}

async fn wait_for<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + T;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in {T:?}"
        );
        tokio::task::yield_now().await;
    }
}

struct TestDir(PathBuf);

impl TestDir {
    fn new(label: &str) -> TestDir {
        let path =
            std::env::temp_dir().join(format!("shoal-queue-server-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
