//! Unit tests of the topic log and the engine around it.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::testdir::TestDir;
use super::*;

const TIMEOUT: Duration = Duration::from_secs(30);

fn options() -> LogOptions {
    LogOptions {
        max_message: 1024,
        ack_timeout: TIMEOUT,
    }
}

fn create(dir: &TestDir, max_bytes: u64, segment_bytes: u64) -> TopicLog {
    TopicLog::create(
        &dir.path().join("t"),
        "t",
        TopicLimits {
            max_bytes,
            segment_bytes,
        },
        options(),
    )
    .unwrap()
}

fn reopen(dir: &TestDir) -> TopicLog {
    TopicLog::open(&dir.path().join("t"), "t", options()).unwrap()
}

fn msgs(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

fn segment_files(dir: &TestDir) -> usize {
    segment_paths(dir).len()
}

/// The topic's segment files, oldest first.
fn segment_paths(dir: &TestDir) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir.path().join("t"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    paths.sort();
    paths
}

fn only_segment(dir: &TestDir) -> PathBuf {
    let [segment] = &segment_paths(dir)[..] else {
        panic!("one segment expected");
    };
    segment.clone()
}

/// Writes `data` at `offset`, as a write cut short by a crash may have left it.
fn write_at(path: &Path, offset: u64, data: &[u8]) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(data, offset)
        .unwrap();
}

#[test]
fn a_subscription_gets_what_was_published_after_it_registered_and_nothing_before() {
    let dir = TestDir::new("register");
    let mut log = create(&dir, 1 << 20, 1 << 16);
    log.register("early").unwrap();
    assert_eq!(log.publish(&msgs(&["a", "b"])).unwrap(), 1..3);
    log.register("late").unwrap();
    log.publish(&msgs(&["c"])).unwrap();
    let now = Instant::now();
    let early = log.fetch("early", 10, now).unwrap();
    assert_eq!(seqs(&early), [1, 2, 3]);
    assert_eq!(early[0].data, b"a");
    assert_eq!(seqs(&log.fetch("late", 10, now).unwrap()), [3]);
    let err = log.fetch("nobody", 10, now).unwrap_err();
    assert_eq!(
        err.to_string(),
        "topic t has no subscription nobody: register it first (shoal queue sub add t nobody)"
    );
}

#[test]
fn unacked_messages_come_back_after_the_ack_timeout_and_nacked_ones_after_their_delay() {
    let dir = TestDir::new("redeliver");
    let mut log = create(&dir, 1 << 20, 1 << 16);
    log.register("s").unwrap();
    log.publish(&msgs(&["a", "b", "c"])).unwrap();
    let t0 = Instant::now();
    assert_eq!(seqs(&log.fetch("s", 10, t0).unwrap()), [1, 2, 3]);
    assert!(log.fetch("s", 10, t0).unwrap().is_empty());
    log.ack("s", &[2]).unwrap();
    log.nack("s", &[3], Duration::from_secs(1), t0).unwrap();
    let t1 = t0 + Duration::from_secs(1);
    let again = log.fetch("s", 10, t1).unwrap();
    assert_eq!(seqs(&again), [3]);
    assert!(again[0].redelivered);
    let t2 = t0 + TIMEOUT;
    assert_eq!(seqs(&log.fetch("s", 10, t2).unwrap()), [1]);
    let stats = log.stats();
    assert_eq!(stats.subs[0].redelivered, 2);
    assert_eq!(stats.subs[0].unacked, 2);
    assert_eq!(stats.subs[0].lag, 2);
    // Acked messages are never delivered again, however long one waits.
    log.ack("s", &[1, 3]).unwrap();
    assert!(log.fetch("s", 10, t2 + TIMEOUT * 2).unwrap().is_empty());
    let err = log.ack("s", &[4]).unwrap_err();
    assert!(matches!(err, Error::NotItsMessage { seq: 4, .. }), "{err}");
}

#[test]
fn a_message_is_deleted_only_once_every_subscription_registered_at_its_publication_acked_it() {
    let dir = TestDir::new("delete");
    // Records of one byte take 17 bytes: a segment holds two of them.
    let mut log = create(&dir, 1 << 20, 34);
    log.register("a").unwrap();
    log.register("b").unwrap();
    for text in ["1", "2", "3", "4", "5"] {
        log.publish(&msgs(&[text])).unwrap();
    }
    assert_eq!(segment_files(&dir), 3);
    let now = Instant::now();
    log.fetch("a", 10, now).unwrap();
    log.fetch("b", 10, now).unwrap();
    log.ack("a", &[1, 2, 3, 4, 5]).unwrap();
    log.sync().unwrap();
    assert_eq!(log.read(1).unwrap().unwrap(), b"1", "b has not acked 1");
    log.ack("b", &[1, 2, 3]).unwrap();
    log.sync().unwrap();
    assert_eq!(log.read(2).unwrap(), None);
    assert_eq!(
        log.read(3).unwrap().unwrap(),
        b"3",
        "its segment holds 4, not acked by b"
    );
    assert_eq!(log.stats().first_seq, 3);
    // Unregistering b releases its backlog; the next sequence number survives a reopen.
    log.unregister("b").unwrap();
    assert_eq!(log.stats().bytes, 0);
    assert_eq!(segment_files(&dir), 1);
    drop(log);
    let mut log = reopen(&dir);
    assert_eq!(log.publish(&msgs(&["6"])).unwrap(), 6..7);
}

#[test]
fn a_full_topic_refuses_a_publish_naming_the_holder_and_writes_nothing() {
    let dir = TestDir::new("full");
    let mut log = create(&dir, 100, 34);
    log.register("slow").unwrap();
    for text in ["1", "2", "3", "4", "5"] {
        log.publish(&msgs(&[text])).unwrap(); // 85 bytes in three segments
    }
    let err = log.publish(&msgs(&["6", "7"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "topic t is full (85 bytes stored, max_bytes 100): subscription slow holds the oldest \
         message (seq 1); ack or unregister it, or raise max_bytes"
    );
    assert_eq!(log.stats().last_seq, 5);
    assert_eq!(log.stats().bytes, 85);
    // Once the holder acks, the space comes back without an explicit sync.
    log.fetch("slow", 10, Instant::now()).unwrap();
    log.ack("slow", &[1, 2, 3, 4]).unwrap();
    assert_eq!(log.publish(&msgs(&["6", "7"])).unwrap(), 6..8);
    let err = log.publish(&[vec![0; 2000]]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { size: 2000, .. }), "{err}");
}

#[test]
fn reopening_drops_a_torn_tail_and_keeps_every_synced_record_and_ack_floor() {
    let dir = TestDir::new("torn");
    let mut log = create(&dir, 1 << 20, 1 << 16);
    log.register("s").unwrap();
    log.publish(&msgs(&["a", "b", "c"])).unwrap();
    log.fetch("s", 10, Instant::now()).unwrap();
    log.ack("s", &[1]).unwrap();
    log.sync().unwrap();
    let whole = log.stats().bytes;
    drop(log);
    // A publish cut short by the crash, over the zeroed tail: a whole header and half its
    // payload.
    let segment = only_segment(&dir);
    let mut torn = Vec::new();
    record::encode(4, b"never acknowledged", &mut torn);
    write_at(&segment, whole, &torn[..20]);
    let mut log = reopen(&dir);
    assert_eq!(fs::metadata(&segment).unwrap().len(), whole);
    assert_eq!(seqs(&log.fetch("s", 10, Instant::now()).unwrap()), [2, 3]);
    assert_eq!(log.publish(&msgs(&["d"])).unwrap(), 4..5);
    let end = log.stats().bytes;
    drop(log);
    // Then garbage that a checksum catches: the last byte of "d".
    let mut garbled = [0];
    File::open(&segment)
        .unwrap()
        .read_exact_at(&mut garbled, end - 1)
        .unwrap();
    write_at(&segment, end - 1, &[garbled[0] ^ 0xff]);
    let log = reopen(&dir);
    assert_eq!(log.stats().last_seq, 3);
}

#[test]
fn a_zeroed_tail_is_kept_and_a_torn_one_goes_whole_so_no_stale_record_comes_back() {
    let dir = TestDir::new("zeroed");
    let mut log = create(&dir, 1 << 20, 1 << 16);
    log.publish(&msgs(&["a", "b"])).unwrap();
    let whole = log.stats().bytes;
    drop(log);
    let segment = only_segment(&dir);
    let zeroed = fs::metadata(&segment).unwrap().len();
    assert!(zeroed > whole, "{zeroed} bytes for {whole} of records");
    let log = reopen(&dir);
    assert_eq!(fs::metadata(&segment).unwrap().len(), zeroed);
    assert_eq!(log.stats().last_seq, 2);
    drop(log);
    // A write cut short: record 3 torn, then record 4 whole, never acknowledged.
    let mut tail = Vec::new();
    record::encode(3, b"ccc", &mut tail);
    tail[record::HEADER] ^= 0xff;
    record::encode(4, b"ddd", &mut tail);
    write_at(&segment, whole, &tail);
    let mut log = reopen(&dir);
    assert_eq!(log.stats().last_seq, 2);
    // Written where the torn 3 was, with the same length: the old 4 must not follow it.
    assert_eq!(log.publish(&msgs(&["CCC"])).unwrap(), 3..4);
    drop(log);
    let log = reopen(&dir);
    assert_eq!(log.stats().last_seq, 3);
    assert_eq!(log.read(3).unwrap().as_deref(), Some(&b"CCC"[..]));
}

#[test]
fn a_segment_that_takes_no_more_appends_loses_its_zeroed_tail() {
    let dir = TestDir::new("trim");
    let mut log = create(&dir, 1 << 20, 4096);
    let payload = vec![7; 1000];
    for _ in 0..5 {
        log.publish(std::slice::from_ref(&payload)).unwrap();
    }
    let lens: Vec<u64> = segment_paths(&dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .collect();
    let record = record::size(payload.len());
    assert_eq!(
        lens,
        [4 * record, 4096],
        "the first trimmed, the newest zeroed ahead"
    );
    drop(log);
    let log = reopen(&dir);
    assert_eq!(log.stats().last_seq, 5);
    assert_eq!(log.read(5).unwrap(), Some(payload));
}

#[test]
fn what_was_fetched_before_a_reopen_can_still_be_acked_and_is_then_not_delivered_again() {
    let dir = TestDir::new("ack-after-reopen");
    let mut log = create(&dir, 1 << 20, 1 << 16);
    log.register("s").unwrap();
    log.publish(&msgs(&["a", "b", "c"])).unwrap();
    assert_eq!(
        seqs(&log.fetch("s", 10, Instant::now()).unwrap()),
        [1, 2, 3]
    );
    drop(log);
    let mut log = reopen(&dir);
    log.ack("s", &[2, 3]).unwrap();
    let again = log.fetch("s", 10, Instant::now()).unwrap();
    assert_eq!(seqs(&again), [1]);
    log.ack("s", &[1]).unwrap();
    assert_eq!(log.stats().subs[0].lag, 0);
    assert_eq!(log.stats().subs[0].ack_floor, 4);
}

#[test]
fn group_commit_answers_each_batch_alone() {
    let dir = TestDir::new("group");
    let mut log = create(&dir, 200, 1 << 16);
    let ok = msgs(&["x"; 3]);
    let big = vec![vec![0; 2000]];
    let more = msgs(&["y"; 8]);
    let results = log.publish_group(&[&ok, &big, &more, &ok]);
    assert_eq!(results[0].as_ref().unwrap(), &(1..4));
    assert!(matches!(results[1], Err(Error::TooLarge { .. })));
    // No subscription holds anything: everything published is deletable, so nothing is full.
    assert_eq!(results[2].as_ref().unwrap(), &(4..12));
    assert!(
        matches!(results[3], Err(Error::Full { .. })),
        "{:?}",
        results[3]
    );
    assert_eq!(log.stats().last_seq, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_group_commits_concurrent_publishes_and_wakes_a_waiting_fetch() {
    let dir = TestDir::new("engine");
    let engine = Engine::open(dir.path(), EngineOptions::default())
        .await
        .unwrap();
    engine.create_topic("jobs", None).await.unwrap();
    engine.create_topic("jobs", None).await.unwrap();
    engine.register("jobs", "worker").await.unwrap();
    let waiting = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .fetch("jobs", "worker", 100, Duration::from_secs(20))
                .await
        })
    };
    let publishes = (0..32).map(|i| {
        let engine = engine.clone();
        async move {
            engine
                .publish("jobs", vec![format!("m{i}").into_bytes()])
                .await
        }
    });
    let mut all: Vec<u64> = futures_join(publishes)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=32).collect::<Vec<_>>());
    let first = waiting.await.unwrap().unwrap();
    assert!(!first.is_empty());
    let stats = engine.stats("jobs").await.unwrap();
    assert_eq!((stats.first_seq, stats.last_seq), (1, 32));
    let err = engine.stats("nope").await.unwrap_err();
    assert!(matches!(err, Error::NoTopic { .. }));
    engine.close().await;
    assert!(matches!(engine.stats("jobs").await, Err(Error::Closed)));
    let engine = Engine::open(dir.path(), EngineOptions::default())
        .await
        .unwrap();
    assert_eq!(engine.topics(), ["jobs"]);
    // An empty fetch waits its timeout out and answers nothing.
    engine.register("jobs", "later").await.unwrap();
    let none = engine
        .fetch("jobs", "later", 10, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(none.is_empty());
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_share_one_fdatasync() {
    const N: usize = 16;
    let dir = TestDir::new("syncs");
    let engine = open_jobs(&dir).await;
    engine.publish("jobs", msgs(&["alone"])).await.unwrap();
    assert_eq!(engine.stats("jobs").await.unwrap().syncs, 1);

    // With the writer held, all N publishes are queued before it takes the next round.
    let release = engine.hold("jobs");
    let publishes = (0..N).map(|i| {
        let engine = engine.clone();
        async move { engine.publish("jobs", vec![vec![i as u8; 1024]]).await }
    });
    let mut all = Box::pin(futures_join(publishes));
    let first_poll = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(all.as_mut(), cx))
    })
    .await;
    assert!(
        first_poll.is_pending(),
        "publishes answered while the writer was held"
    );
    release.send(()).unwrap();
    let mut seqs: Vec<u64> = all.await.into_iter().flat_map(|r| r.unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (2..2 + N as u64).collect::<Vec<_>>());
    let stats = engine.stats("jobs").await.unwrap();
    assert_eq!(
        stats.syncs,
        2,
        "{N} concurrent publishes took {} syncs",
        stats.syncs - 1
    );
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_finding_its_topic_idle_writes_itself_and_others_go_to_the_writer() {
    let dir = TestDir::new("inline");
    let engine = open_jobs(&dir).await;
    for i in 1..=5u64 {
        assert_eq!(engine.publish("jobs", msgs(&["x"])).await.unwrap(), [i]);
    }
    assert_eq!(engine.inline_publishes("jobs"), 5);
    if engine.direct_publishes("jobs") == 0 {
        println!("skipped: the test directory's filesystem takes no direct writes");
    }

    // Grouped: handed to the writer even though the topic is idle.
    let grouped = engine
        .publish_with("jobs", msgs(&["y"]), Commit::Grouped)
        .await
        .unwrap();
    assert_eq!(grouped, [6]);
    assert_eq!(engine.inline_publishes("jobs"), 5);

    // The writer busy (held mid-round): a publish queues for its next group.
    let release = engine.hold("jobs");
    let mut queued = Box::pin(engine.publish("jobs", msgs(&["z"])));
    let first_poll = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(queued.as_mut(), cx))
    })
    .await;
    assert!(
        first_poll.is_pending(),
        "written while the writer held the log"
    );
    release.send(()).unwrap();
    assert_eq!(queued.await.unwrap(), [7]);
    assert_eq!(engine.inline_publishes("jobs"), 5);
    let stats = engine.stats("jobs").await.unwrap();
    assert_eq!((stats.last_seq, stats.syncs), (7, 7));

    // Every message is there, in order, for the subscription.
    let got = engine
        .fetch("jobs", "worker", 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(seqs(&got), (1..=7).collect::<Vec<_>>());
    engine.close().await;
    let closed = engine.publish("jobs", msgs(&["late"])).await;
    assert!(matches!(closed, Err(Error::Closed)), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_dropped_while_its_direct_write_runs_leaves_the_log_whole() {
    let dir = TestDir::new("dropped");
    let engine = open_jobs(&dir).await;
    // The first publish zeroes the segment ahead; the next ones can go as direct writes.
    assert_eq!(engine.publish("jobs", msgs(&["a"])).await.unwrap(), [1]);
    let mut dropped = Box::pin(engine.publish("jobs", msgs(&["b"])));
    let first_poll = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(dropped.as_mut(), cx))
    })
    .await;
    // Dropped while its write is in flight: the drop waits for the write and keeps it, as
    // a publish whose answer was lost.
    drop(dropped);
    if engine.direct_publishes("jobs") == 0 || first_poll.is_ready() {
        println!("skipped: the write was not in flight when its publish was dropped");
    }
    assert_eq!(engine.publish("jobs", msgs(&["c"])).await.unwrap(), [3]);
    let expected = msgs(&["a", "b", "c"]);
    let got = engine
        .fetch("jobs", "worker", 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|m| &m.data).collect::<Vec<_>>(),
        expected.iter().collect::<Vec<_>>()
    );
    engine.close().await;

    let engine = Engine::open(dir.path(), EngineOptions::default())
        .await
        .unwrap();
    let got = engine
        .fetch("jobs", "worker", 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(seqs(&got), [1, 2, 3]);
    assert_eq!(
        got.iter().map(|m| &m.data).collect::<Vec<_>>(),
        expected.iter().collect::<Vec<_>>()
    );
    engine.close().await;
}

#[tokio::test]
async fn on_a_one_thread_runtime_every_publish_goes_to_the_writer() {
    let dir = TestDir::new("one-thread");
    let engine = Engine::open(dir.path(), EngineOptions::default())
        .await
        .unwrap();
    engine.create_topic("jobs", None).await.unwrap();
    for i in 1..=3u64 {
        assert_eq!(engine.publish("jobs", msgs(&["x"])).await.unwrap(), [i]);
    }
    assert_eq!(engine.inline_publishes("jobs"), 0);
    engine.close().await;
}

/// An engine in `dir` with the topic `jobs` and its subscription `worker`.
async fn open_jobs(dir: &TestDir) -> Engine {
    let engine = Engine::open(dir.path(), EngineOptions::default())
        .await
        .unwrap();
    engine.create_topic("jobs", None).await.unwrap();
    engine.register("jobs", "worker").await.unwrap();
    engine
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, out) in set.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(|o| o.unwrap()).collect()
}
