//! Balancing over real loopback servers: round robin spreads calls, a stopped server is
//! ejected while calls go on elsewhere and is probed back when it returns, a hashring key
//! always reaches the same server, a shard falls over to its backup, and a pipeline goes
//! whole to one server.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::{server, Probe};
use shoal_rpc::balance::{key_hash, Ring};
use shoal_rpc::{
    codes, Addr, Balance, CallOptions, Client, EndpointConfig, Error, Listener, Pipeline, RouteKey,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any awaited condition may take before the test fails.
const T: Duration = Duration::from_secs(10);

/// A test server on a loopback port that can be stopped and started again on the same port.
struct Node {
    addr: Addr,
    probe: Arc<Probe>,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Node {
    async fn start() -> Node {
        let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut node = Node {
            addr: listener.local_addr(),
            probe: Arc::new(Probe::default()),
            running: None,
        };
        node.serve(listener);
        node
    }

    fn serve(&mut self, listener: Listener) {
        let srv = server(&self.probe).build().unwrap();
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move { srv.serve(listener, shutdown).await.unwrap() });
        self.running = Some((stop, task));
    }

    /// Stops accepting and closes every connection.
    async fn stop(&mut self) {
        let (stop, task) = self.running.take().expect("node is running");
        stop.cancel();
        task.await.unwrap();
    }

    async fn restart(&mut self) {
        let listener = Listener::bind(&self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Calls to `deadline`, the method each test makes, that this server handled.
    fn served(&self) -> usize {
        self.probe.deadlines.lock().unwrap().len()
    }

    fn config(&self) -> EndpointConfig {
        EndpointConfig::new(self.addr.clone())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((stop, _)) = &self.running {
            stop.cancel();
        }
    }
}

async fn nodes(n: usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Node::start().await);
    }
    nodes
}

/// Makes one call and says which node handled it.
async fn call(client: &Client, nodes: &[Node], key: Option<RouteKey>) -> Result<usize, Error> {
    let before: Vec<usize> = nodes.iter().map(Node::served).collect();
    let opts = CallOptions {
        key,
        ..Default::default()
    };
    client.call_value(&opts, "deadline", &[(); 0]).await?;
    let changed: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].served() != before[i])
        .collect();
    assert_eq!(changed.len(), 1, "one call, served by {changed:?}");
    Ok(changed[0])
}

/// Counts, per node, which node handled each of `n` calls; every call must succeed.
async fn spread(client: &Client, nodes: &[Node], n: usize) -> Vec<usize> {
    let mut counts = vec![0; nodes.len()];
    for _ in 0..n {
        counts[call(client, nodes, None).await.unwrap()] += 1;
    }
    counts
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

/// Waits until the client has seen its connection to `index` close, so the next call there
/// fails before sending (a call racing the close could fail as `Closed`, which is not retried).
async fn disconnected(client: &Client, index: usize) {
    eventually("the client sees the connection close", || async {
        !client.endpoint_status()[index].connected
    })
    .await;
}

fn ring(nodes: &[Node]) -> Ring {
    let ids: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    Ring::new(ids.iter().map(|id| (id.as_str(), 1)))
}

#[tokio::test]
async fn round_robin_ejects_a_stopped_server_and_probes_it_back() {
    let mut nodes = nodes(3).await;
    let client = Client::builder()
        .endpoints(nodes.iter().map(Node::config))
        .connect()
        .await
        .unwrap();
    assert_eq!(spread(&client, &nodes, 30).await, [10, 10, 10]);

    nodes[1].stop().await;
    disconnected(&client, 1).await;
    // Every call succeeds: the one that picks the stopped server cannot connect, so it was
    // never sent and moves on.
    let counts = spread(&client, &nodes, 30).await;
    assert_eq!(counts[1], 0, "{counts:?}");
    assert_eq!(counts[0] + counts[2], 30);
    let status = &client.endpoint_status()[1];
    assert!(status.ejected && status.failures >= 1, "{status:?}");

    nodes[1].restart().await;
    eventually("the restarted server takes a call again", || async {
        call(&client, &nodes, None).await.unwrap() == 1
    })
    .await;
    let status = &client.endpoint_status()[1];
    assert!(
        !status.ejected && status.failures == 0 && status.connected,
        "{status:?}"
    );
    assert_eq!(spread(&client, &nodes, 30).await, [10, 10, 10]);
}

/// A pipeline picks one server for all its calls and, like a call, moves on only when it
/// never left: to the stopped server it cannot connect, so it goes to the other.
#[tokio::test]
async fn a_pipeline_goes_whole_to_one_server_and_around_a_stopped_one() {
    let mut nodes = nodes(2).await;
    let client = Client::builder()
        .endpoints(nodes.iter().map(Node::config))
        .connect()
        .await
        .unwrap();
    let mut p = Pipeline::new();
    for _ in 0..3 {
        p.call("deadline", &[(); 0]).unwrap();
    }
    for _ in 0..2 {
        let answers = client
            .call_pipeline(&CallOptions::default(), &p)
            .await
            .unwrap();
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    }
    assert_eq!([nodes[0].served(), nodes[1].served()], [3, 3]);

    nodes[0].stop().await;
    disconnected(&client, 0).await;
    for _ in 0..4 {
        let answers = client
            .call_pipeline(&CallOptions::default(), &p)
            .await
            .unwrap();
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    }
    assert_eq!([nodes[0].served(), nodes[1].served()], [3, 15]);
    let status = &client.endpoint_status()[0];
    assert!(status.ejected && status.failures >= 1, "{status:?}");
}

#[tokio::test]
async fn least_pending_spreads_and_skips_a_stopped_server() {
    let mut nodes = nodes(3).await;
    let client = Client::builder()
        .endpoints(nodes.iter().map(Node::config))
        .balance(Balance::LeastPending)
        .connect()
        .await
        .unwrap();
    let counts = spread(&client, &nodes, 60).await;
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    nodes[2].stop().await;
    disconnected(&client, 2).await;
    let counts = spread(&client, &nodes, 30).await;
    assert!(
        counts[2] == 0 && counts[0] > 0 && counts[1] > 0,
        "{counts:?}"
    );
}

#[tokio::test]
async fn a_hashring_key_always_reaches_the_same_server() {
    let mut nodes = nodes(3).await;
    let client = Client::builder()
        .endpoints(nodes.iter().map(Node::config))
        .balance(Balance::HashRing)
        .connect()
        .await
        .unwrap();
    // The server is the one the documented ring formula names, from the addresses alone.
    let ring = ring(&nodes);
    let mut used = [false; 3];
    for k in 0..30u64 {
        let owner = ring.owner(key_hash(&RouteKey::Int(k))).unwrap();
        for _ in 0..3 {
            assert_eq!(
                call(&client, &nodes, Some(RouteKey::Int(k))).await.unwrap(),
                owner,
                "key {k}"
            );
        }
        used[owner] = true;
    }
    assert_eq!(used, [true; 3]);

    // Without a key, a client sticks to one server: its own random key, or the pinned one.
    let first = call(&client, &nodes, None).await.unwrap();
    for _ in 0..10 {
        assert_eq!(call(&client, &nodes, None).await.unwrap(), first);
    }
    let pinned = Client::builder()
        .endpoints(nodes.iter().map(Node::config))
        .balance(Balance::HashRing)
        .pin_key("user:7")
        .build()
        .unwrap();
    let owner = ring.owner(key_hash(&RouteKey::from("user:7"))).unwrap();
    for _ in 0..5 {
        assert_eq!(call(&pinned, &nodes, None).await.unwrap(), owner);
    }

    // The owner of a key stops: the key moves clockwise to the next server, and only its keys
    // move.
    let key = RouteKey::Int(3);
    let walk: Vec<usize> = ring.walk(key_hash(&key)).collect();
    nodes[walk[0]].stop().await;
    disconnected(&client, walk[0]).await;
    for _ in 0..3 {
        assert_eq!(
            call(&client, &nodes, Some(key.clone())).await.unwrap(),
            walk[1]
        );
    }
    for k in 0..30u64 {
        let owner = ring.owner(key_hash(&RouteKey::Int(k))).unwrap();
        if owner != walk[0] {
            assert_eq!(
                call(&client, &nodes, Some(RouteKey::Int(k))).await.unwrap(),
                owner
            );
        }
    }
}

#[tokio::test]
async fn a_shard_falls_over_to_its_backup() {
    let mut nodes = nodes(3).await;
    let (a, b, backup) = (0, 1, 2);
    let mut first = nodes[a].config();
    first.shard = Some((0, 1));
    first.backup = Some(nodes[backup].addr.clone());
    let mut second = nodes[b].config();
    second.shard = Some((2, 3));
    let client = Client::builder()
        .endpoints([first, second])
        .balance(Balance::Shard { count: 4 })
        .connect()
        .await
        .unwrap();
    // The backup was not listed, so it became an endpoint of its own, after the others.
    assert_eq!(client.endpoints()[2], nodes[backup].addr);
    let key = |k| Some(RouteKey::Int(k));
    for k in [0, 1, 4, 5, 9] {
        assert_eq!(call(&client, &nodes, key(k)).await.unwrap(), a, "key {k}");
    }
    for k in [2, 3, 6, 7] {
        assert_eq!(call(&client, &nodes, key(k)).await.unwrap(), b, "key {k}");
    }

    nodes[a].stop().await;
    disconnected(&client, a).await;
    for k in [0, 1, 4, 5, 9] {
        assert_eq!(
            call(&client, &nodes, key(k)).await.unwrap(),
            backup,
            "key {k}"
        );
    }
    for k in [2, 3] {
        assert_eq!(call(&client, &nodes, key(k)).await.unwrap(), b, "key {k}");
    }
    let err = call(&client, &nodes, None).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("shard balancing needs an integer key"),
        "{err}"
    );
    let err = call(&client, &nodes, Some(RouteKey::from("five")))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("shard balancing needs an integer key"),
        "{err}"
    );
}

#[tokio::test]
async fn a_lone_server_is_tried_again_at_once_when_it_returns() {
    let mut nodes = nodes(1).await;
    let client = Client::builder()
        .endpoint(nodes[0].addr.clone())
        .connect()
        .await
        .unwrap();
    assert_eq!(call(&client, &nodes, None).await.unwrap(), 0);
    nodes[0].stop().await;
    disconnected(&client, 0).await;
    let err = call(&client, &nodes, None).await.unwrap_err();
    assert!(matches!(err, Error::NotSent { .. }), "{err}");
    assert!(client.endpoint_status()[0].ejected);
    // Back, still within its backoff: the call goes through rather than failing unsent.
    nodes[0].restart().await;
    assert_eq!(call(&client, &nodes, None).await.unwrap(), 0);
    assert!(!client.endpoint_status()[0].ejected);
}

#[tokio::test]
async fn a_call_that_times_out_is_not_retried_elsewhere() {
    let nodes = nodes(2).await;
    let client = Client::builder()
        .endpoints(nodes.iter().map(Node::config))
        .connect()
        .await
        .unwrap();
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(100)),
        idempotent: true,
        ..Default::default()
    };
    let err = client.call_value(&opts, "hold", &(1,)).await.unwrap_err();
    // Our timer or the server's (the deadline travels with the call) may fire first.
    assert_eq!(err.code(), Some(codes::DEADLINE_EXCEEDED), "{err}");
    let held: Vec<usize> = nodes
        .iter()
        .map(|n| n.probe.gates.lock().unwrap().len())
        .collect();
    assert_eq!(held.iter().sum::<usize>(), 1, "{held:?}");
    // A slow answer is not a failure: nothing is ejected.
    assert!(client.endpoint_status().iter().all(|s| !s.ejected));
}

#[tokio::test]
async fn an_endpoint_file_configures_the_client() {
    let nodes = nodes(2).await;
    let path = std::env::temp_dir().join(format!("shoal-balance-{}.toml", std::process::id()));
    let text = format!(
        "balance = \"hashring\"\n\n[[endpoint]]\naddr = \"{}\"\n\n[[endpoint]]\naddr = \"{}\"\n",
        nodes[0].addr, nodes[1].addr
    );
    std::fs::write(&path, text).unwrap();
    let built = Client::builder().endpoints_file(&path);
    std::fs::remove_file(&path).unwrap();
    let client = built.unwrap().build().unwrap();
    let ring = ring(&nodes);
    for k in 0..10u64 {
        let owner = ring.owner(key_hash(&RouteKey::Int(k))).unwrap();
        assert_eq!(
            call(&client, &nodes, Some(RouteKey::Int(k))).await.unwrap(),
            owner
        );
    }
}
