//! The queue's semantics, one suite run against both engines through [`Backend`]: shoal's file
//! engine, and JetStream's on a real nats-server (skipped without one, see `common`). Then
//! JetStream's durability: nats-server killed with SIGKILL at 200 seeded random moments while
//! publishers run; every answered publish is there after it restarts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_queue::engine::{EngineOptions, Error, MIN_MAX_BYTES};
use shoal_queue::nats::JetStream;
use shoal_queue::{Backend, Engine};

mod common;

use common::{NatsServer, Scratch};

const T: Duration = Duration::from_secs(20);
const ACK_TIMEOUT: Duration = Duration::from_millis(500);

fn options() -> EngineOptions {
    let mut options = EngineOptions::default();
    options.log.ack_timeout = ACK_TIMEOUT;
    options
}

/// Runs `suite` against the file engine, then against JetStream when a nats-server is there.
async fn both<F, Fut>(suite: F)
where
    F: Fn(Arc<dyn Backend>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = Scratch::new("file");
    let file = Engine::open(dir.path(), options()).await.unwrap();
    suite(Arc::new(file.clone())).await;
    file.close().await;
    let Some(server) = NatsServer::start() else {
        return;
    };
    let js = Arc::new(JetStream::connect(&server.url(), options()).await.unwrap());
    suite(js.clone()).await;
    js.close().await;
}

fn kib(n: usize, tag: u8) -> Vec<u8> {
    vec![tag; n << 10]
}

fn seqs(messages: &[shoal_queue::Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_gets_exactly_what_was_published_after_it_registered() {
    both(|q| async move {
        q.create_topic("reg", None).await.unwrap();
        q.create_topic("reg", None).await.unwrap();
        assert_eq!(q.publish("reg", vec![b"a".to_vec()]).await.unwrap(), [1]);
        q.register("reg", "early").await.unwrap();
        let bc = q.publish("reg", vec![b"b".to_vec(), b"c".to_vec()]).await;
        assert_eq!(bc.unwrap(), [2, 3]);
        q.register("reg", "late").await.unwrap();
        q.register("reg", "early").await.unwrap(); // again: keeps what it has
        q.publish("reg", vec![b"d".to_vec()]).await.unwrap();

        let early = q.fetch("reg", "early", 10, T).await.unwrap();
        let mut got = early.clone();
        while got.len() < 3 {
            got.extend(q.fetch("reg", "early", 10, T).await.unwrap());
        }
        assert_eq!(seqs(&got), [2, 3, 4]);
        assert_eq!(got[0].data, b"b");
        assert!(!got[0].redelivered);
        let late = q.fetch("reg", "late", 10, T).await.unwrap();
        assert_eq!(seqs(&late), [4]);
        assert_eq!(
            q.fetch("reg", "late", 10, Duration::from_millis(50))
                .await
                .unwrap(),
            []
        );
        let stats = q.stats("reg").await.unwrap();
        assert_eq!(stats.last_seq, 4);
        let lag: BTreeMap<_, _> = stats
            .subs
            .iter()
            .map(|s| (s.name.as_str(), s.lag))
            .collect();
        assert_eq!(lag, BTreeMap::from([("early", 3), ("late", 1)]));
        assert_eq!(q.topics().await.unwrap(), ["reg"]);

        let err = q
            .fetch("reg", "ghost", 1, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NoSubscription { .. }), "{err}");
        let err = q.publish("nope", vec![b"x".to_vec()]).await.unwrap_err();
        assert!(matches!(err, Error::NoTopic { .. }), "{err}");
        let err = q.create_topic("reg", Some(1 << 20)).await.unwrap_err();
        assert!(matches!(err, Error::TopicExists { .. }), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_goes_only_once_every_subscription_acked_it() {
    both(|q| async move {
        q.create_topic("del", Some(MIN_MAX_BYTES)).await.unwrap();
        q.register("del", "a").await.unwrap();
        q.register("del", "b").await.unwrap();
        let published: Vec<Vec<u8>> = (0..30).map(|i| kib(1, i)).collect();
        for m in &published {
            q.publish("del", vec![m.clone()]).await.unwrap();
        }
        let mut a = Vec::new();
        while a.len() < 30 {
            a.extend(seqs(&q.fetch("del", "a", 30, T).await.unwrap()));
        }
        q.ack("del", "a", a).await.unwrap();
        // Unregistering reaps at once in both engines: whatever a's acks released is gone now.
        q.register("del", "c").await.unwrap();
        q.unregister("del", "c").await.unwrap();
        let mut b = Vec::new();
        while b.len() < 30 {
            b.extend(q.fetch("del", "b", 30, T).await.unwrap());
        }
        let data: Vec<Vec<u8>> = b.iter().map(|m| m.data.clone()).collect();
        assert_eq!(data, published, "b lost messages only a had acked");
        q.ack("del", "b", seqs(&b)).await.unwrap();
        q.ack("del", "b", seqs(&b)).await.unwrap(); // again: harmless
        wait_for("the acked messages to go", || {
            let q = q.clone();
            async move { q.stats("del").await.unwrap().first_seq == 31 }
        })
        .await;
        let stats = q.stats("del").await.unwrap();
        assert!(
            stats.subs.iter().all(|s| s.lag == 0 && s.ack_floor == 31),
            "{stats:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_come_back_after_the_ack_timeout_and_nacked_ones_after_their_delay() {
    both(|q| async move {
        q.create_topic("re", None).await.unwrap();
        q.register("re", "w").await.unwrap();
        q.publish("re", vec![b"x".to_vec(), b"y".to_vec()])
            .await
            .unwrap();
        let mut first = Vec::new();
        while first.len() < 2 {
            first.extend(q.fetch("re", "w", 2, T).await.unwrap());
        }
        q.nack("re", "w", vec![1], Duration::from_millis(100))
            .await
            .unwrap();
        let again = q.fetch("re", "w", 1, T).await.unwrap();
        assert_eq!(seqs(&again), [1]);
        assert!(again[0].redelivered);
        q.ack("re", "w", vec![1]).await.unwrap();
        // 2 was never acked: it comes back once the ack timeout passes.
        let late = q.fetch("re", "w", 1, T).await.unwrap();
        assert_eq!(seqs(&late), [2]);
        assert!(late[0].redelivered && late[0].data == b"y");
        q.ack("re", "w", vec![2]).await.unwrap();
        let stats = q.stats("re").await.unwrap();
        assert_eq!(stats.subs[0].lag, 0, "{stats:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_topic_refuses_naming_the_holder_until_it_is_unregistered() {
    both(|q| async move {
        q.create_topic("full", Some(MIN_MAX_BYTES)).await.unwrap();
        q.register("full", "slow").await.unwrap();
        q.register("full", "fast").await.unwrap();
        let err = loop {
            match q.publish("full", vec![kib(1, 7)]).await {
                Ok(seq) => q
                    .ack("full", "fast", deliver(&q, "fast", seq[0]).await)
                    .await
                    .unwrap(),
                Err(e) => break e,
            }
        };
        match &err {
            Error::Full { topic, holder, .. } => {
                assert_eq!((&topic[..], &holder[..]), ("full", "slow"))
            }
            other => panic!("expected full, got {other}"),
        }
        assert!(err.to_string().contains("topic full is full"), "{err}");
        // A batch is refused whole.
        let last = q.stats("full").await.unwrap().last_seq;
        let err = q
            .publish("full", vec![kib(1, 1), kib(1, 2)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Full { .. }), "{err}");
        assert_eq!(q.stats("full").await.unwrap().last_seq, last);
        let err = q.publish("full", vec![kib(2048, 0)]).await.unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");

        q.unregister("full", "slow").await.unwrap();
        let seq = q.publish("full", vec![kib(1, 8)]).await.unwrap();
        assert_eq!(seq, [last + 1]);
        let err = q.unregister("full", "slow").await.unwrap_err();
        assert!(matches!(err, Error::NoSubscription { .. }), "{err}");
    })
    .await;
}

/// Fetches for `sub` until `seq` is delivered; answers what was delivered.
async fn deliver(q: &Arc<dyn Backend>, sub: &str, seq: u64) -> Vec<u64> {
    let mut got = Vec::new();
    while !got.contains(&seq) {
        got.extend(seqs(&q.fetch("full", sub, 100, T).await.unwrap()));
    }
    got
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + T;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const TRIALS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_keeps_every_answered_publish_over_kill_9_of_nats_server() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let seed = std::env::var("SHOAL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (replay with SHOAL_TEST_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut answered: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut total = 0;
    for trial in 0..=TRIALS {
        let js = Arc::new(JetStream::connect(&server.url(), options()).await.unwrap());
        if trial == 0 {
            js.create_topic("crash", Some(1 << 30)).await.unwrap();
            js.register("crash", "checker").await.unwrap();
        }
        check(&js, &answered)
            .await
            .unwrap_or_else(|e| panic!("trial {trial} (seed {seed}): {e}"));
        answered.clear();
        if trial == TRIALS {
            js.close().await;
            break;
        }
        let got = Arc::new(Mutex::new(BTreeMap::new()));
        let publishers: Vec<_> = (0..4)
            .map(|p| tokio::spawn(publish(js.clone(), trial, p, got.clone())))
            .collect();
        let delay = Duration::from_micros(rng.u64(0..15_000));
        tokio::time::sleep(delay).await; // the random moment of the kill, not a synchronisation
        server.kill9();
        // What was in flight at the kill was never answered: it may be lost.
        for p in publishers {
            p.abort();
            let _ = p.await;
        }
        answered.extend(std::mem::take(&mut *got.lock().unwrap()));
        total += answered.len();
        drop(js); // its server is gone: nothing to flush
        server.restart();
    }
    assert!(total >= TRIALS, "only {total} publishes answered");
    println!("{TRIALS} kills of nats-server, {total} answered publishes checked");
}

/// Every answered publish is readable by the checker with its payload; all it reads is
/// something a publisher sent. Acks all it read.
async fn check(js: &JetStream, answered: &BTreeMap<u64, Vec<u8>>) -> Result<(), String> {
    let mut found = BTreeMap::new();
    loop {
        let batch = js
            .fetch("crash", "checker", 1000, Duration::ZERO)
            .await
            .map_err(|e| format!("fetch: {e}"))?;
        if batch.is_empty() {
            break;
        }
        let seqs = seqs(&batch);
        found.extend(batch.into_iter().map(|m| (m.seq, m.data)));
        js.ack("crash", "checker", seqs)
            .await
            .map_err(|e| format!("ack: {e}"))?;
    }
    for (seq, payload) in answered {
        match found.get(seq) {
            Some(data) if data == payload => {}
            Some(_) => return Err(format!("seq {seq} reads other bytes than were published")),
            None => return Err(format!("answered publish seq {seq} is missing")),
        }
    }
    if let Some((seq, _)) = found.iter().find(|(_, d)| !d.starts_with(b"trial ")) {
        return Err(format!("seq {seq} holds bytes nobody published"));
    }
    Ok(())
}

async fn publish(
    js: Arc<JetStream>,
    trial: usize,
    publisher: usize,
    got: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
) {
    for n in 0.. {
        let payload = format!("trial {trial} publisher {publisher} message {n}").into_bytes();
        match js.publish("crash", vec![payload.clone()]).await {
            Ok(seqs) => {
                got.lock().unwrap().insert(seqs[0], payload);
            }
            Err(_) => break,
        }
    }
}
