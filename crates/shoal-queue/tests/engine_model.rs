//! A property test of the topic log against a model in memory, over publish, fetch, ack,
//! nack, register, unregister, the clock moving, and crash-and-reopen (with a torn tail):
//! no message deleted early, none delivered to a subscription registered after it, nothing
//! acked delivered again before a crash, disk never above `max_bytes` plus one segment.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shoal_queue::engine::{Error, LogOptions, TopicLimits, TopicLog};

/// A topic's limits and the largest payload the test publishes.
#[derive(Debug)]
struct Shape {
    max_bytes: u64,
    segment_bytes: u64,
    payload: usize,
}

/// Segments shorter than a block: every publish is written and fdatasynced.
const SMALL: Shape = Shape {
    max_bytes: 600,
    segment_bytes: 100,
    payload: 40,
};
/// Segments of whole blocks and records up to 3,000 bytes: most publishes are direct writes
/// of the blocks they land in, some cross a block boundary, the first of a segment zeroes it.
const BLOCKS: Shape = Shape {
    max_bytes: 48 << 10,
    segment_bytes: 12 << 10,
    payload: 3000,
};
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const SUBS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    Publish(Vec<Vec<u8>>),
    Register(usize),
    Unregister(usize),
    Fetch(usize, usize),
    /// Acks the delivered message at this position (modulo how many there are).
    Ack(usize, usize),
    Nack(usize, usize, u64),
    Advance(u64),
    Sync,
    /// Drops the log without a sync; with `Some(n)`, the first `n` bytes of a record that was
    /// never acknowledged are left at the tail, as a write cut short.
    Crash(Option<usize>),
}

fn op(payload: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..payload), 1..4).prop_map(Op::Publish),
        1 => (0..SUBS.len()).prop_map(Op::Register),
        1 => (0..SUBS.len()).prop_map(Op::Unregister),
        3 => (0..SUBS.len(), 1..6usize).prop_map(|(s, n)| Op::Fetch(s, n)),
        3 => (0..SUBS.len(), any::<usize>()).prop_map(|(s, i)| Op::Ack(s, i)),
        1 => (0..SUBS.len(), any::<usize>(), 0..3u64).prop_map(|(s, i, d)| Op::Nack(s, i, d)),
        1 => (0..15u64).prop_map(Op::Advance),
        1 => Just(Op::Sync),
        1 => prop::option::of(1..50usize).prop_map(Op::Crash),
    ]
}

#[derive(Debug, Default)]
struct ModelSub {
    start: u64,
    /// Every ack it was ever given (an ack lost in a crash still made the message deletable
    /// for the model's purposes: it must not be required).
    acked_ever: BTreeSet<u64>,
    /// Acks since the last crash: these must never be delivered again.
    acked_since_crash: BTreeSet<u64>,
    /// Delivered since the last crash, not acked.
    outstanding: Vec<u64>,
}

#[derive(Debug, Default)]
struct Model {
    published: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
    subs: BTreeMap<&'static str, ModelSub>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_the_model(ops in prop::collection::vec(op(SMALL.payload), 1..80)) {
        run(&SMALL, ops)?;
    }

    #[test]
    fn the_log_behaves_like_the_model_over_direct_writes(ops in prop::collection::vec(op(BLOCKS.payload), 1..80)) {
        run(&BLOCKS, ops)?;
    }
}

fn run(shape: &Shape, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = TestDir::new();
    let topic_dir = dir.0.join("t");
    let limits = TopicLimits {
        max_bytes: shape.max_bytes,
        segment_bytes: shape.segment_bytes,
    };
    let mut log = TopicLog::create(&topic_dir, "t", limits, options()).unwrap();
    let mut model = Model {
        next_seq: 1,
        ..Model::default()
    };
    let start = Instant::now();
    let mut now = start;
    for op in ops {
        match op {
            Op::Publish(payloads) => {
                let before = log.stats();
                match log.publish(&payloads) {
                    Ok(range) => {
                        prop_assert_eq!(range.start, model.next_seq);
                        for (seq, p) in range.zip(payloads) {
                            model.published.insert(seq, p);
                            model.next_seq = seq + 1;
                        }
                    }
                    Err(Error::Full { holder, .. }) => {
                        prop_assert_eq!(
                            log.stats().last_seq,
                            before.last_seq,
                            "a refused publish wrote nothing"
                        );
                        prop_assert!(
                            model.subs.contains_key(holder.as_str()),
                            "holder {} is registered",
                            holder
                        );
                    }
                    Err(e) => prop_assert!(false, "publish failed: {}", e),
                }
            }
            Op::Register(s) => {
                log.register(SUBS[s]).unwrap();
                model.subs.entry(SUBS[s]).or_insert_with(|| ModelSub {
                    start: model.next_seq,
                    ..ModelSub::default()
                });
            }
            Op::Unregister(s) => {
                let r = log.unregister(SUBS[s]);
                prop_assert_eq!(r.is_ok(), model.subs.remove(SUBS[s]).is_some());
            }
            Op::Fetch(s, max) => {
                let r = log.fetch(SUBS[s], max, now);
                let Some(sub) = model.subs.get_mut(SUBS[s]) else {
                    prop_assert!(
                        matches!(r, Err(Error::NoSubscription { .. })),
                        "fetch by an unregistered subscription"
                    );
                    continue;
                };
                let messages = r.unwrap();
                prop_assert!(messages.len() <= max);
                for m in messages {
                    prop_assert!(
                        m.seq >= sub.start,
                        "seq {} went to {} registered at {}",
                        m.seq,
                        SUBS[s],
                        sub.start
                    );
                    prop_assert_eq!(Some(&m.data), model.published.get(&m.seq));
                    prop_assert!(
                        !sub.acked_since_crash.contains(&m.seq),
                        "acked seq {} delivered again",
                        m.seq
                    );
                    if !sub.outstanding.contains(&m.seq) {
                        sub.outstanding.push(m.seq);
                    }
                }
            }
            Op::Ack(s, i) | Op::Nack(s, i, _)
                if model
                    .subs
                    .get(SUBS[s])
                    .is_none_or(|m| m.outstanding.is_empty()) =>
            {
                let _ = i;
            }
            Op::Ack(s, i) => {
                let sub = model.subs.get_mut(SUBS[s]).unwrap();
                let seq = sub.outstanding.remove(i % sub.outstanding.len());
                log.ack(SUBS[s], &[seq]).unwrap();
                sub.acked_ever.insert(seq);
                sub.acked_since_crash.insert(seq);
            }
            Op::Nack(s, i, delay) => {
                let sub = &model.subs[SUBS[s]];
                let seq = sub.outstanding[i % sub.outstanding.len()];
                log.nack(SUBS[s], &[seq], Duration::from_secs(delay), now)
                    .unwrap();
            }
            Op::Advance(secs) => now += Duration::from_secs(secs),
            Op::Sync => log.sync().unwrap(),
            Op::Crash(torn) => {
                drop(log);
                if let Some(cut) = torn {
                    let mut record = Vec::new();
                    shoal_queue::engine::encode_record(model.next_seq, &[7; 40], &mut record);
                    let newest = segments(&topic_dir).into_iter().max().unwrap();
                    let mut file = fs::OpenOptions::new().append(true).open(newest).unwrap();
                    file.write_all(&record[..cut.min(record.len() - 1)])
                        .unwrap();
                }
                log = TopicLog::open(&topic_dir, "t", options()).unwrap();
                for sub in model.subs.values_mut() {
                    sub.outstanding.clear();
                    sub.acked_since_crash.clear();
                }
            }
        }
        check(&log, &model, &topic_dir, shape)?;
    }
    // Every subscription takes and acks everything: then nothing is left on disk.
    now += ACK_TIMEOUT;
    let names: Vec<_> = model.subs.keys().copied().collect();
    for name in names {
        loop {
            let got = log.fetch(name, 100, now).unwrap();
            if got.is_empty() {
                break;
            }
            let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
            log.ack(name, &seqs).unwrap();
        }
    }
    log.sync().unwrap();
    prop_assert_eq!(log.stats().bytes, 0);
    prop_assert_eq!(disk_bytes(&topic_dir), 0);
    for sub in log.stats().subs {
        prop_assert_eq!(sub.lag, 0);
    }
    Ok(())
}

fn check(log: &TopicLog, model: &Model, dir: &Path, shape: &Shape) -> Result<(), TestCaseError> {
    let stats = log.stats();
    prop_assert_eq!(stats.last_seq, model.next_seq - 1);
    let disk = disk_bytes(dir);
    // Records, plus the newest segment's zeroed tail (within one segment).
    prop_assert!(
        stats.bytes <= disk && disk <= stats.bytes + shape.segment_bytes,
        "{} bytes on disk for {} of records",
        disk,
        stats.bytes
    );
    prop_assert!(
        disk <= shape.max_bytes + shape.segment_bytes,
        "{} bytes on disk",
        disk
    );
    for (name, sub) in &model.subs {
        for (seq, payload) in model.published.range(sub.start..) {
            if sub.acked_ever.contains(seq) {
                continue;
            }
            let stored = log.read(*seq).unwrap();
            prop_assert_eq!(
                stored.as_ref(),
                Some(payload),
                "seq {} deleted before {} acked it",
                seq,
                name
            );
        }
    }
    Ok(())
}

fn options() -> LogOptions {
    LogOptions {
        max_message: 4096,
        ack_timeout: ACK_TIMEOUT,
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect()
}

fn disk_bytes(dir: &Path) -> u64 {
    segments(dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

struct TestDir(PathBuf);

impl TestDir {
    fn new() -> TestDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "shoal-queue-model-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
