//! `shoal queue` killed with SIGKILL at random moments while publishers run, then restarted on
//! the same data directory, 200 times: every publish that was answered is there after the
//! restart, readable by the subscription registered before it, with its payload; only
//! unanswered publishes may be missing; and a torn or garbled record left at the tail of the
//! newest segment is dropped on reopen.
//!
//! The moments come from a seeded RNG; the seed is printed, and `SHOAL_TEST_SEED=N` replays it.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_queue::Client;
use shoal_rpc::Addr;

mod common;

use common::{Scratch, SHOAL};

const TRIALS: usize = 200;
const PUBLISHERS: usize = 4;
const TOPIC: &str = "crash";
/// Registered before the first publish; it checks and acks what each restart finds.
const CHECKER: &str = "checker";

#[test]
fn every_answered_publish_survives_kill_9_at_random_moments() {
    let seed = std::env::var("SHOAL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (replay with SHOAL_TEST_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let scratch = Scratch::new("queue-crash");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut answered = Answered::default();
    let mut torn_dropped = 0;
    let mut total_answered = 0;
    for trial in 0..TRIALS {
        let queue = QueueProcess::start(scratch.path());
        torn_dropped += queue.torn_dropped;
        let client = runtime.block_on(Client::connect(&queue.addr)).unwrap();
        if trial == 0 {
            runtime.block_on(async {
                client.create_topic(TOPIC, Some(1 << 30)).await.unwrap();
                client.register(TOPIC, CHECKER).await.unwrap();
            });
        }
        let checked = runtime.block_on(check(&client, &answered));
        answered.0.clear();
        assert!(
            checked.is_ok(),
            "trial {trial} (seed {seed}): {}",
            checked.unwrap_err()
        );

        // Publishers run; the queue dies at a random moment among them.
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(BTreeMap::new()));
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| runtime.spawn(publish(client.clone(), trial, p, stop.clone(), got.clone())))
            .collect();
        let delay = Duration::from_micros(rng.u64(0..15_000));
        std::thread::sleep(delay); // the random moment of the kill, not a synchronisation
        queue.kill9();
        stop.store(true, Ordering::Relaxed);
        for p in publishers {
            runtime.block_on(p).unwrap();
        }
        answered.0.extend(std::mem::take(&mut *got.lock().unwrap()));
        total_answered += answered.0.len();
        // Now and then the kill also leaves a torn or garbled record at the tail.
        if trial % 10 == 9 {
            tear_tail(scratch.path(), &mut rng);
        }
    }
    let queue = QueueProcess::start(scratch.path());
    torn_dropped += queue.torn_dropped;
    let client = runtime.block_on(Client::connect(&queue.addr)).unwrap();
    let checked = runtime.block_on(check(&client, &answered));
    assert!(
        checked.is_ok(),
        "last restart (seed {seed}): {}",
        checked.unwrap_err()
    );
    assert!(
        torn_dropped >= TRIALS / 10,
        "only {torn_dropped} restarts reported a dropped tail"
    );
    // Most kills land among publishes: the check above is about something.
    assert!(
        total_answered >= TRIALS,
        "only {total_answered} publishes answered"
    );
    println!(
        "{TRIALS} kills, {total_answered} answered publishes checked; {torn_dropped} restarts \
         dropped a torn tail"
    );
}

/// Publishes answered since the last check: sequence -> payload.
#[derive(Default)]
struct Answered(BTreeMap<u64, Vec<u8>>);

/// Reads everything the checker has not acked: each answered publish must be there with its
/// payload, the sequence numbers must run without a gap, and every payload must be one a
/// publisher sent. Then acks it all, so the next check starts past it.
async fn check(client: &Client, answered: &Answered) -> Result<(), String> {
    let mut found = BTreeMap::new();
    loop {
        let batch = client
            .fetch(TOPIC, CHECKER, 1000, Duration::ZERO)
            .await
            .map_err(|e| format!("fetch: {e}"))?;
        if batch.is_empty() {
            break;
        }
        let seqs: Vec<u64> = batch.iter().map(|m| m.seq).collect();
        found.extend(batch.into_iter().map(|m| (m.seq, m.data)));
        client
            .ack(TOPIC, CHECKER, &seqs)
            .await
            .map_err(|e| format!("ack: {e}"))?;
    }
    for (seq, payload) in &answered.0 {
        match found.get(seq) {
            Some(data) if data == payload => {}
            Some(data) => {
                return Err(format!(
                    "seq {seq} reads {:?}, was published as {:?}",
                    String::from_utf8_lossy(data),
                    String::from_utf8_lossy(payload)
                ))
            }
            None => return Err(format!("answered publish seq {seq} is missing")),
        }
    }
    let seqs: Vec<u64> = found.keys().copied().collect();
    if let Some(gap) = seqs.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(format!("a gap between seq {} and {}", gap[0], gap[1]));
    }
    if let Some((seq, data)) = found.iter().find(|(_, d)| !d.starts_with(b"trial ")) {
        return Err(format!("seq {seq} holds bytes nobody published: {data:?}"));
    }
    let stats = client
        .stats(Some(TOPIC))
        .await
        .map_err(|e| format!("stats: {e}"))?;
    if let Some(last) = seqs.last() {
        if stats[0].last_seq != *last {
            return Err(format!(
                "last_seq is {} but the checker read up to {last}",
                stats[0].last_seq
            ));
        }
    }
    Ok(())
}

/// Publishes batches of one to three messages until `stop`, recording what was answered.
async fn publish(
    client: Client,
    trial: usize,
    publisher: usize,
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let size = 1 + n % 3;
        let batch: Vec<Vec<u8>> = (0..size)
            .map(|i| {
                format!(
                    "trial {trial} publisher {publisher} message {} {}",
                    n + i,
                    "x".repeat(200)
                )
                .into_bytes()
            })
            .collect();
        n += size;
        match client.publish(TOPIC, batch.clone()).await {
            Ok(seqs) => got.lock().unwrap().extend(seqs.into_iter().zip(batch)),
            // The queue was killed: this publish was never answered, so it may be lost.
            Err(_) => break,
        }
    }
}

/// Appends to the newest segment what a write cut short by a crash leaves: part of a record,
/// or a whole one whose checksum does not match.
fn tear_tail(dir: &Path, rng: &mut fastrand::Rng) {
    let topic = dir.join("data/topics").join(TOPIC);
    let newest: PathBuf = std::fs::read_dir(&topic)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .expect("a segment");
    let mut record = Vec::new();
    shoal_queue::engine::encode_record(u64::MAX / 2, b"never acknowledged", &mut record);
    if rng.bool() {
        record.truncate(rng.usize(1..record.len()));
    } else {
        let at = rng.usize(4..record.len());
        record[at] ^= 0x5a;
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    file.write_all(&record).unwrap();
}

/// A `shoal queue` child on a Unix socket, killed when dropped.
struct QueueProcess {
    child: Child,
    addr: Addr,
    /// Warnings about a dropped tail it printed while opening.
    torn_dropped: usize,
}

impl QueueProcess {
    /// Starts it and reads its standard error up to the line saying it listens.
    fn start(dir: &Path) -> QueueProcess {
        let socket = dir.join("queue.sock");
        let _ = std::fs::remove_file(&socket);
        let mut child = Command::new(SHOAL)
            .args(["queue", "--data-dir"])
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shoal queue");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut torn_dropped = 0;
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            let read = stderr.read_line(&mut line).unwrap();
            assert!(read > 0, "shoal queue exited before listening:\n{seen}");
            if line.contains("dropping a torn record") {
                torn_dropped += 1;
            }
            seen.push_str(&line);
            if line.contains("listening on") {
                break;
            }
        }
        // Keep reading, so a chatty queue never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        QueueProcess {
            child,
            addr: Addr::Unix(socket),
            torn_dropped,
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for QueueProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
