//! Discovery over real loopback servers: while calls run without pause, one server joins the
//! endpoint set and another leaves. No call fails, a call already on the leaving server is
//! answered before its connection closes, one on a staying server is untouched, and the hash
//! ring moves only the keys of the servers that changed. A client over a watched endpoint file
//! follows the file, and one whose file is bad from the start says where.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{server, Probe, ServerName};
use shoal_rpc::balance::{key_hash, Ring};
use shoal_rpc::discover::FileWatch;
use shoal_rpc::{
    Addr, Balance, CallOptions, Client, EndpointConfig, EndpointSet, Error, Listener, RouteKey,
    Value,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any awaited condition may take before the test fails.
const T: Duration = Duration::from_secs(10);

/// Keys whose owner is compared before and after the change.
const KEYS: u64 = 2_000;

/// A named test server on an ephemeral loopback port, stopped when dropped.
struct Node {
    name: &'static str,
    addr: Addr,
    probe: Arc<Probe>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Node {
    async fn start(name: &'static str) -> Node {
        let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr();
        let probe = Arc::new(Probe::default());
        let srv = server(&probe).state(ServerName(name)).build().unwrap();
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move { srv.serve(listener, shutdown).await.unwrap() });
        Node {
            name,
            addr,
            probe,
            stop,
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        self.task.take().unwrap().await.unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn set(nodes: &[&Node]) -> EndpointSet {
    EndpointSet {
        balance: Balance::HashRing,
        endpoints: nodes
            .iter()
            .map(|n| EndpointConfig::new(n.addr.clone()))
            .collect(),
    }
}

fn addrs(nodes: &[&Node]) -> Vec<Addr> {
    nodes.iter().map(|n| n.addr.clone()).collect()
}

fn keyed(key: u64) -> CallOptions {
    CallOptions {
        key: Some(RouteKey::Int(key)),
        ..Default::default()
    }
}

/// The name of the server that answers a call routed by `key`.
async fn whoami(client: &Client, key: u64) -> Result<String, Error> {
    client.call_with(&keyed(key), "whoami", &[(); 0]).await
}

/// Which server answers each key of `0..KEYS`, asked one call per key.
async fn owners(client: &Client) -> Vec<String> {
    let mut owners = Vec::with_capacity(KEYS as usize);
    for key in 0..KEYS {
        owners.push(whoami(client, key).await.unwrap());
    }
    owners
}

/// The owner of each key of `0..KEYS` on the ring over `nodes`, by the documented formula.
fn ring_owners(nodes: &[&Node]) -> Vec<String> {
    let ids: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let ring = Ring::new(ids.iter().map(|id| (id.as_str(), 1)));
    (0..KEYS)
        .map(|k| {
            let owner = ring.owner(key_hash(&RouteKey::Int(k))).unwrap();
            nodes[owner].name.to_owned()
        })
        .collect()
}

/// Polls `condition` until it holds, failing the test after [`T`].
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = tokio::time::timeout(T, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    waited
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// What the callers running through the change saw.
#[derive(Default)]
struct Tally {
    calls: AtomicUsize,
    failures: Mutex<Vec<String>>,
    /// Set once the client is seen on the new set: calls started after it must not reach
    /// the server that left.
    switched: AtomicBool,
    /// Servers that answered calls started after the switch.
    answered_after: Mutex<Vec<String>>,
}

impl Tally {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Calls with random keys until `stop`, recording every outcome in `tally`.
async fn call_until_stopped(client: Client, tally: Arc<Tally>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let key = fastrand::u64(..KEYS);
        let after = tally.switched.load(Ordering::Acquire);
        match whoami(&client, key).await {
            Ok(name) if after => tally.answered_after.lock().unwrap().push(name),
            Ok(_) => {}
            Err(e) => tally
                .failures
                .lock()
                .unwrap()
                .push(format!("key {key}: {e}")),
        }
        tally.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_joins_and_another_leaves_while_calls_run_and_none_fails() {
    let (a, b, c, d) = (
        Node::start("a").await,
        Node::start("b").await,
        Node::start("c").await,
        Node::start("d").await,
    );
    let (sets, source) = watch::channel(set(&[&a, &b, &c]));
    // No retries: a call must not need one to survive the change.
    let client = Client::builder()
        .discover(&source)
        .retries(0)
        .connect()
        .await
        .unwrap();
    assert_eq!(client.endpoints(), addrs(&[&a, &b, &c]));
    let before = owners(&client).await;
    assert_eq!(
        before,
        ring_owners(&[&a, &b, &c]),
        "the client's ring is the formula's"
    );

    // One call parked on a server that stays (by a key it keeps: d takes keys from every
    // server), one on the server that leaves.
    let next = ring_owners(&[&a, &b, &d]);
    let on_a = (0..KEYS).find(|&k| before[k as usize] == "a" && next[k as usize] == "a");
    let on_a = on_a.unwrap();
    let on_c = before.iter().position(|o| o == "c").unwrap() as u64;
    let hold = |key: u64| {
        let client = client.clone();
        let opts = CallOptions {
            timeout: Some(T),
            ..keyed(key)
        };
        tokio::spawn(async move { client.call_with::<_, Value>(&opts, "hold", &[key]).await })
    };
    let held_on_a = hold(on_a);
    let held_on_c = hold(on_c);
    a.probe.wait_held(1).await;
    c.probe.wait_held(1).await;
    let a_conn = a.probe.held_on.lock().unwrap()[0].clone();
    let c_conn = c.probe.held_on.lock().unwrap()[0].clone();

    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(call_until_stopped(
                client.clone(),
                tally.clone(),
                stop.clone(),
            ))
        })
        .collect();
    eventually("calls are running", || async { tally.calls() >= 200 }).await;

    sets.send_replace(set(&[&a, &b, &d]));
    eventually("the client takes the new set", || async {
        client.endpoints() == addrs(&[&a, &b, &d])
    })
    .await;
    tally.switched.store(true, Ordering::Release);
    let at_switch = tally.calls();
    eventually("calls go on in the new set", || async {
        tally.calls() >= at_switch + 200
    })
    .await;

    // The staying server is called on the connection it had: a new call parks beside the
    // old one, on the same client port.
    let held_again_on_a = hold(on_a);
    a.probe.wait_held(2).await;
    let again = a.probe.held_on.lock().unwrap()[1].clone();
    assert_eq!(
        again.addr(),
        a_conn.addr(),
        "a new connection to a staying server"
    );

    // The parked calls are answered: those on the staying server, and the one on the
    // leaving server, whose connection then closes while the staying one's stays open.
    assert!(a.probe.release_one() && a.probe.release_one() && c.probe.release_one());
    let answer = held_on_a.await.unwrap().unwrap();
    assert_eq!(answer, Value::from(on_a));
    let answer = held_again_on_a.await.unwrap().unwrap();
    assert_eq!(answer, Value::from(on_a));
    let answer = held_on_c.await.unwrap().unwrap();
    assert_eq!(answer, Value::from(on_c));
    tokio::time::timeout(T, c_conn.closed())
        .await
        .expect("the client closes its connection to the server that left");
    assert!(
        !a_conn.is_closed(),
        "the staying server's connection is kept"
    );

    stop.cancel();
    for caller in callers {
        caller.await.unwrap();
    }
    let failures = std::mem::take(&mut *tally.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} of {} calls failed: {:?}",
        failures.len(),
        tally.calls(),
        &failures[..failures.len().min(5)]
    );
    let after_switch = std::mem::take(&mut *tally.answered_after.lock().unwrap());
    assert!(
        after_switch.iter().all(|name| name != "c"),
        "a call made after the switch reached the server that left"
    );
    assert!(after_switch.iter().any(|name| name == "d"), "d takes calls");

    // Key by key: a key moves only off the server that left or onto the one that joined.
    let after = owners(&client).await;
    assert_eq!(after, next, "the client's new ring is the formula's");
    let mut moved = 0;
    for key in 0..KEYS as usize {
        let (was, is) = (&before[key], &after[key]);
        if was != is {
            moved += 1;
            assert!(
                was == "c" || is == "d",
                "key {key} moved from {was} to {is}, neither of which changed"
            );
        }
    }
    let changed_share = (0..KEYS as usize)
        .filter(|&k| before[k] == "c" || after[k] == "d")
        .count();
    assert_eq!(
        moved, changed_share,
        "every key of c moved, and every key d took"
    );
    assert!(
        moved > 0 && moved < KEYS as usize,
        "{moved} of {KEYS} keys moved"
    );
    drop(client);
    for node in [a, b, c, d] {
        node.stop().await;
    }
}

/// A scratch directory for one test, removed by the test when it passes.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shoal-rpc-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_endpoints(path: &std::path::Path, nodes: &[&Node]) {
    let text: String = nodes
        .iter()
        .map(|n| format!("[[endpoint]]\naddr = \"{}\"\n", n.addr))
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_client_over_a_watched_file_follows_it() {
    let (a, b) = (Node::start("a").await, Node::start("b").await);
    let dir = scratch("follow");
    let path = dir.join("clients.toml");
    write_endpoints(&path, &[&a]);
    let watch = FileWatch::new(&path).interval(Duration::from_millis(10));
    let client = Client::builder().discover(&watch).connect().await.unwrap();
    assert_eq!(whoami(&client, 1).await.unwrap(), "a");

    write_endpoints(&path, &[&b]);
    eventually("the client follows the file", || async {
        client.endpoints() == addrs(&[&b])
    })
    .await;
    assert_eq!(whoami(&client, 1).await.unwrap(), "b");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_client_whose_watched_file_is_bad_from_the_start_says_where() {
    let dir = scratch("bad-start");
    let path = dir.join("clients.toml");
    std::fs::write(&path, "[[endpoint]]\naddr = \"127.0.0.1:1\"\nweight = 0\n").unwrap();
    let watch = FileWatch::new(&path).interval(Duration::from_millis(10));
    let err = Client::builder()
        .discover(&watch)
        .connect()
        .await
        .unwrap_err()
        .to_string();
    let at = format!("{}:3: endpoint[0].weight", path.display());
    assert!(err.contains(&at), "{err}\n  does not name {at}");

    // A client built without waiting fails its calls with the same error, not a timeout.
    let client = Client::builder().discover(&watch).build().unwrap();
    let err = client
        .call::<_, Value>("whoami", &[(); 0])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&at), "{err}\n  does not name {at}");
    std::fs::remove_dir_all(&dir).unwrap();
}
