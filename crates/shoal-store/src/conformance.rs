//! The conformance suite: the properties every backend of the store traits keeps, as public
//! async functions that panic on a violation, so each backend's tests run them unchanged.
//!
//! A backend's test builds a fresh, empty store per property and calls the property, or calls
//! [`run_all`] with a function that makes one. Waits are bounded by [`WAIT`]; nothing sleeps.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::lease::KvLease;
use crate::{Blobs, Digest, Event, From, Kv, Lease, Log, Revision, StoreError, Watch};

/// How long a property waits for an event before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// One store as the suite sees it: its traits side by side (often the same object).
#[derive(Debug, Clone)]
pub struct Stores {
    pub kv: Arc<dyn Kv>,
    pub log: Arc<dyn Log>,
    pub blobs: Arc<dyn Blobs>,
}

impl Stores {
    /// The three traits of one backend object.
    pub fn of<S: Kv + Log + Blobs + 'static>(store: Arc<S>) -> Stores {
        Stores {
            kv: store.clone(),
            log: store.clone(),
            blobs: store,
        }
    }

    /// Leases on this store's `Kv`.
    pub fn lease(&self) -> KvLease {
        KvLease::new(self.kv.clone(), "leases/")
    }
}

/// Runs every property, each on a fresh store from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Stores>,
{
    kv_revisions_increase(&make().await).await;
    kv_create_conflicts(&make().await).await;
    kv_stale_revision_conflicts(&make().await).await;
    kv_cas_under_concurrency(&make().await).await;
    kv_list_by_prefix(&make().await).await;
    kv_history(&make().await).await;
    kv_watch_from_revision(&make().await).await;
    kv_watch_across_reconnects(&make().await).await;
    kv_slow_watch_loses_nothing(&make().await).await;
    log_sequences_without_gaps(&make().await).await;
    log_dedup(&make().await).await;
    log_read_from_seq_and_time(&make().await).await;
    log_independent(&make().await).await;
    blobs_put_get_delete(&make().await).await;
    lease_acquire_expire_takeover(&make().await).await;
    lease_stale_grant_is_fenced(&make().await).await;
    lease_one_winner_of_a_race(&make().await).await;
}

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Every write gets a larger revision than the one before, whichever key it writes, and
/// `revision` and `get` report it.
pub async fn kv_revisions_increase(s: &Stores) {
    let mut last = s.kv.revision().await.unwrap();
    let writes = [
        s.kv.put("rev/a", b("1")).await,
        s.kv.put("rev/b", b("1")).await,
        s.kv.create("rev/c", b("1")).await,
        s.kv.put("rev/a", b("2")).await,
        s.kv.delete("rev/b", None).await,
    ];
    let mut revisions = Vec::new();
    for (i, rev) in writes.into_iter().enumerate() {
        let rev = rev.unwrap();
        assert!(rev > last, "write {i}: revision {rev} not above {last}");
        last = rev;
        revisions.push(rev);
    }
    let rev = s.kv.update("rev/c", b("2"), revisions[2]).await.unwrap();
    assert!(rev > last);
    assert_eq!(s.kv.revision().await.unwrap(), rev);
    let entry = s.kv.get("rev/c").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (b("2"), rev));
    assert_eq!(s.kv.get("rev/b").await.unwrap(), None);
}

/// `create` on an existing key is a conflict naming the key's revision.
pub async fn kv_create_conflicts(s: &Stores) {
    let rev = s.kv.create("create/x", b("first")).await.unwrap();
    match s.kv.create("create/x", b("second")).await {
        Err(StoreError::Conflict {
            key,
            expected: None,
            found: Some(found),
        }) => assert_eq!((key.as_str(), found), ("create/x", rev)),
        other => panic!("create on an existing key: {other:?}"),
    }
    assert_eq!(
        s.kv.get("create/x").await.unwrap().unwrap().value,
        b("first")
    );
}

/// `update` and `delete` with a revision that is not the key's current one are conflicts,
/// and change nothing; so are both on a missing key.
pub async fn kv_stale_revision_conflicts(s: &Stores) {
    let first = s.kv.create("stale/x", b("1")).await.unwrap();
    let second = s.kv.update("stale/x", b("2"), first).await.unwrap();
    let conflict = |r| matches!(r, Err(StoreError::Conflict { .. }));
    assert!(conflict(s.kv.update("stale/x", b("3"), first).await));
    assert!(conflict(s.kv.delete("stale/x", Some(first)).await));
    assert_eq!(s.kv.get("stale/x").await.unwrap().unwrap().revision, second);
    s.kv.delete("stale/x", Some(second)).await.unwrap();
    match s.kv.delete("stale/x", None).await {
        Err(StoreError::Conflict { found: None, .. }) => {}
        other => panic!("delete of a missing key: {other:?}"),
    }
    match s.kv.update("stale/x", b("4"), second).await {
        Err(StoreError::Conflict { found: None, .. }) => {}
        other => panic!("update of a missing key: {other:?}"),
    }
    // Deleted, the key can be created again.
    s.kv.create("stale/x", b("5")).await.unwrap();
}

/// 16 tasks increment one counter with compare-and-swap loops: every increment counts once,
/// every conflict is retried, and the history holds each value once, in order.
pub async fn kv_cas_under_concurrency(s: &Stores) {
    const TASKS: usize = 16;
    const EACH: usize = 25;
    let conflicts = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let (kv, conflicts) = (s.kv.clone(), conflicts.clone());
        tasks.spawn(async move {
            for _ in 0..EACH {
                increment(&*kv, "cas/counter", &conflicts).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let entry = s.kv.get("cas/counter").await.unwrap().unwrap();
    assert_eq!(entry.value, b(&(TASKS * EACH).to_string()));
    let history = s.kv.history("cas/counter").await.unwrap();
    let values: Vec<Bytes> = history
        .iter()
        .map(|e| match e {
            Event::Put(entry) => entry.value.clone(),
            Event::Delete { .. } => panic!("the counter was never deleted"),
        })
        .collect();
    let expected: Vec<Bytes> = (1..=TASKS * EACH).map(|n| b(&n.to_string())).collect();
    assert_eq!(values, expected);
}

async fn increment(kv: &dyn Kv, key: &str, conflicts: &AtomicUsize) {
    loop {
        let written = match kv.get(key).await.unwrap() {
            None => kv.create(key, b("1")).await,
            Some(entry) => {
                let n: usize = std::str::from_utf8(&entry.value).unwrap().parse().unwrap();
                kv.update(key, b(&(n + 1).to_string()), entry.revision)
                    .await
            }
        };
        match written {
            Ok(_) => return,
            Err(StoreError::Conflict { .. }) => conflicts.fetch_add(1, Ordering::Relaxed),
            Err(e) => panic!("increment: {e}"),
        };
    }
}

/// `list` returns the current entries under a prefix, in key order, and nothing else.
pub async fn kv_list_by_prefix(s: &Stores) {
    for key in ["list/b", "list/a", "list", "lisu", "list/c", "lis"] {
        s.kv.put(key, b(key)).await.unwrap();
    }
    s.kv.delete("list/c", None).await.unwrap();
    let keys = |entries: Vec<crate::Entry>| -> Vec<String> {
        entries.into_iter().map(|e| e.key).collect()
    };
    assert_eq!(
        keys(s.kv.list("list/").await.unwrap()),
        ["list/a", "list/b"]
    );
    assert_eq!(
        keys(s.kv.list("lis").await.unwrap()),
        ["lis", "list", "list/a", "list/b", "lisu"]
    );
    assert_eq!(
        keys(s.kv.list("nothing/").await.unwrap()),
        Vec::<String>::new()
    );
}

/// `history` gives a key's changes, deletes included, oldest first, and no other key's.
pub async fn kv_history(s: &Stores) {
    let r1 = s.kv.put("hist/x", b("1")).await.unwrap();
    s.kv.put("hist/y", b("other")).await.unwrap();
    let r2 = s.kv.put("hist/x", b("2")).await.unwrap();
    let r3 = s.kv.delete("hist/x", Some(r2)).await.unwrap();
    let r4 = s.kv.create("hist/x", b("3")).await.unwrap();
    let history = s.kv.history("hist/x").await.unwrap();
    let seen: Vec<(Revision, Option<Bytes>)> = history.iter().map(summary).collect();
    assert_eq!(
        seen,
        [
            (r1, Some(b("1"))),
            (r2, Some(b("2"))),
            (r3, None),
            (r4, Some(b("3")))
        ]
    );
}

fn summary(event: &Event) -> (Revision, Option<Bytes>) {
    match event {
        Event::Put(entry) => (entry.revision, Some(entry.value.clone())),
        Event::Delete { revision, .. } => (*revision, None),
    }
}

/// The next event of `watch`, failing after [`WAIT`].
pub async fn next_event(watch: &mut Watch) -> Event {
    match tokio::time::timeout(WAIT, watch.events.recv()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("the watch ended"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// A watch from revision `r` sees exactly the changes under its prefix after `r`, in order,
/// then the later ones as they happen.
pub async fn kv_watch_from_revision(s: &Stores) {
    s.kv.put("watch/a", b("1")).await.unwrap();
    let from = s.kv.put("watch/b", b("1")).await.unwrap();
    let mut expected = vec![
        s.kv.put("watch/a", b("2")).await.unwrap(),
        s.kv.delete("watch/b", None).await.unwrap(),
    ];
    s.kv.put("other/a", b("1")).await.unwrap();
    expected.push(s.kv.put("watch/c", b("1")).await.unwrap());
    let mut watch = s.kv.watch("watch/", from).await.unwrap();
    for rev in &expected {
        let event = next_event(&mut watch).await;
        assert_eq!(event.revision(), *rev, "{event:?}");
    }
    s.kv.put("other/b", b("1")).await.unwrap();
    let live = s.kv.put("watch/d", b("live")).await.unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!((event.key(), event.revision()), ("watch/d", live));
    // Nothing else is pending: the next event is the next write under the prefix.
    let last = s.kv.put("watch/e", b("last")).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), last);
}

/// Writers keep writing while a watcher drops its watch every few events and starts again
/// from the last revision it saw: it sees every change under the prefix once, in order.
pub async fn kv_watch_across_reconnects(s: &Stores) {
    const WRITERS: usize = 4;
    const EACH: usize = 100;
    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let kv = s.kv.clone();
        writers.spawn(async move {
            let mut mine = Vec::new();
            for i in 0..EACH {
                let rev = kv
                    .put(&format!("re/{w}/{}", i % 7), b(&i.to_string()))
                    .await;
                mine.push(rev.unwrap());
                kv.put(&format!("outside/{w}"), b("x")).await.unwrap();
            }
            mine
        });
    }
    let mut seen = Vec::new();
    let mut last = 0;
    let mut reconnects = 0;
    while seen.len() < WRITERS * EACH {
        let mut watch = s.kv.watch("re/", last).await.unwrap();
        // Up to 1 + reconnects % 13 events, then drop: many short watches.
        for _ in 0..=(reconnects % 13) {
            let event = next_event(&mut watch).await;
            assert!(event.key().starts_with("re/"), "{event:?}");
            assert!(event.revision() > last, "{} after {last}", event.revision());
            last = event.revision();
            seen.push(last);
            if seen.len() == WRITERS * EACH {
                break;
            }
        }
        reconnects += 1;
    }
    let mut written = BTreeSet::new();
    while let Some(done) = writers.join_next().await {
        written.extend(done.unwrap());
    }
    assert_eq!(seen, written.into_iter().collect::<Vec<_>>());
}

/// A watcher that reads nothing while thousands of changes are written still gets every
/// one, in order, once it reads.
pub async fn kv_slow_watch_loses_nothing(s: &Stores) {
    const WRITES: usize = 3000;
    let start = s.kv.revision().await.unwrap();
    let mut watch = s.kv.watch("slow/", start).await.unwrap();
    let mut written = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        written.push(s.kv.put(&format!("slow/{}", i % 10), b("v")).await.unwrap());
    }
    for rev in written {
        assert_eq!(next_event(&mut watch).await.revision(), rev);
    }
}

/// Sequences start at 1 and grow by one; `last` follows.
pub async fn log_sequences_without_gaps(s: &Stores) {
    assert_eq!(s.log.last("seq").await.unwrap(), 0);
    for n in 1..=20u64 {
        let appended = s.log.append("seq", None, b(&n.to_string())).await.unwrap();
        assert_eq!((appended.seq, appended.duplicate), (n, false));
    }
    assert_eq!(s.log.last("seq").await.unwrap(), 20);
    let records = s.log.read("seq", From::Seq(1), 100).await.unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(records[4].data, b("5"));
}

/// An append with a dedup id already in the log writes nothing and answers the first seq.
pub async fn log_dedup(s: &Stores) {
    let first = s.log.append("dedup", Some("cmd-1"), b("a")).await.unwrap();
    s.log.append("dedup", None, b("b")).await.unwrap();
    let again = s.log.append("dedup", Some("cmd-1"), b("c")).await.unwrap();
    assert_eq!((first.seq, first.duplicate), (1, false));
    assert_eq!((again.seq, again.duplicate), (1, true));
    let other = s.log.append("dedup", Some("cmd-2"), b("d")).await.unwrap();
    assert_eq!((other.seq, other.duplicate), (3, false));
    let data: Vec<Bytes> = s
        .log
        .read("dedup", From::Seq(1), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.data)
        .collect();
    assert_eq!(data, [b("a"), b("b"), b("d")]);
    // Appends racing with one dedup id: one record, every answer its seq.
    let mut racing = JoinSet::new();
    for i in 0..10 {
        let log = s.log.clone();
        racing.spawn(async move { log.append("dedup", Some("race"), b(&i.to_string())).await });
    }
    let mut answers = Vec::new();
    while let Some(done) = racing.join_next().await {
        answers.push(done.unwrap().unwrap());
    }
    assert_eq!(
        answers.iter().filter(|a| !a.duplicate).count(),
        1,
        "{answers:?}"
    );
    assert!(answers.iter().all(|a| a.seq == 4), "{answers:?}");
    assert_eq!(s.log.last("dedup").await.unwrap(), 4);
}

/// Reads start at a sequence or at a time and stop at the limit.
pub async fn log_read_from_seq_and_time(s: &Stores) {
    for n in 1..=5 {
        s.log.append("from", None, b(&n.to_string())).await.unwrap();
    }
    let before = SystemTime::now();
    for n in 6..=10 {
        s.log.append("from", None, b(&n.to_string())).await.unwrap();
    }
    let seqs =
        |records: Vec<crate::Record>| -> Vec<u64> { records.iter().map(|r| r.seq).collect() };
    assert_eq!(
        seqs(s.log.read("from", From::Seq(4), 3).await.unwrap()),
        [4, 5, 6]
    );
    assert_eq!(
        seqs(s.log.read("from", From::Seq(11), 3).await.unwrap()),
        Vec::<u64>::new()
    );
    let later = s.log.read("from", From::Time(before), 100).await.unwrap();
    assert_eq!(seqs(later.clone()), [6, 7, 8, 9, 10]);
    assert!(later.iter().all(|r| r.time >= before));
    let all = s
        .log
        .read("from", From::Time(SystemTime::UNIX_EPOCH), 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].time <= w[1].time));
}

/// Each log has its own sequences and dedup ids.
pub async fn log_independent(s: &Stores) {
    s.log.append("one", Some("id"), b("1")).await.unwrap();
    s.log.append("one", None, b("2")).await.unwrap();
    let two = s.log.append("two", Some("id"), b("1")).await.unwrap();
    assert_eq!((two.seq, two.duplicate), (1, false));
    assert_eq!(s.log.last("one").await.unwrap(), 2);
    assert_eq!(s.log.last("two").await.unwrap(), 1);
    assert_eq!(s.log.read("two", From::Seq(1), 10).await.unwrap().len(), 1);
}

/// Blobs are stored under their sha256, once, and read back whole.
pub async fn blobs_put_get_delete(s: &Stores) {
    let data = Bytes::from(vec![7u8; 100_000]);
    let digest = s.blobs.put(data.clone()).await.unwrap();
    // sha256 of the empty input, a known vector.
    let empty = s.blobs.put(Bytes::new()).await.unwrap();
    assert_eq!(
        empty.0,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(digest, Digest::of(&data));
    assert_eq!(s.blobs.put(data.clone()).await.unwrap(), digest);
    assert_eq!(s.blobs.get(&digest).await.unwrap(), Some(data));
    s.blobs.delete(&digest).await.unwrap();
    assert_eq!(s.blobs.get(&digest).await.unwrap(), None);
    s.blobs.delete(&digest).await.unwrap();
    assert_eq!(
        s.blobs
            .get(&Digest("../../etc/passwd".into()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.blobs.get(&empty).await.unwrap(), Some(Bytes::new()));
    // The same blob stored by racing writers: one copy, whole.
    let big = Bytes::from(
        (0..1_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut racing = JoinSet::new();
    for _ in 0..8 {
        let (blobs, big) = (s.blobs.clone(), big.clone());
        racing.spawn(async move { blobs.put(big).await });
    }
    while let Some(done) = racing.join_next().await {
        assert_eq!(done.unwrap().unwrap(), Digest::of(&big));
    }
    assert_eq!(s.blobs.get(&Digest::of(&big)).await.unwrap(), Some(big));
}

/// A lease is held until it expires; then another holder takes it with a larger token,
/// and the first holder's token no longer checks.
pub async fn lease_acquire_expire_takeover(s: &Stores) {
    let lease = s.lease();
    // Long enough that the second holder's first try comes before the expiry, even on a
    // loaded machine; short enough to wait for.
    let ttl = Duration::from_secs(1);
    let first = lease.acquire("leader", "a", ttl).await.unwrap().unwrap();
    assert!(lease.check("leader", first.token).await.unwrap());
    assert_eq!(lease.acquire("leader", "b", ttl).await.unwrap(), None);
    let second = wait_for_acquire(&lease, "leader", "b", ttl).await;
    assert!(
        second.token > first.token,
        "{} after {}",
        second.token,
        first.token
    );
    assert!(!lease.check("leader", first.token).await.unwrap());
    assert!(lease.check("leader", second.token).await.unwrap());
    // Released, the key is free at once, and the next holder's token is larger still.
    lease.release(&second).await.unwrap();
    assert!(!lease.check("leader", second.token).await.unwrap());
    let third = lease.acquire("leader", "a", ttl).await.unwrap().unwrap();
    assert!(third.token > second.token);
}

/// Acquires `key` once its current grant expires, failing after [`WAIT`].
async fn wait_for_acquire(lease: &KvLease, key: &str, holder: &str, ttl: Duration) -> crate::Grant {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(grant) = lease.acquire(key, holder, ttl).await.unwrap() {
            return grant;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never expired"
        );
        // Polling an expiry: the lease's time passes with the wall clock, nothing to wait on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Renewing or releasing a grant after another holder took the key is `Fenced`; renewing a
/// current grant keeps its token and extends it.
pub async fn lease_stale_grant_is_fenced(s: &Stores) {
    let lease = s.lease();
    let short = Duration::from_millis(200);
    let old = lease.acquire("job", "a", short).await.unwrap().unwrap();
    let renewed = lease.renew(&old, short).await.unwrap();
    assert_eq!(renewed.token, old.token);
    assert!(renewed.until >= old.until);
    let new = wait_for_acquire(&lease, "job", "b", Duration::from_secs(60)).await;
    for (what, result) in [
        ("renew", lease.renew(&renewed, short).await.map(|_| ())),
        ("release", lease.release(&renewed).await),
    ] {
        match result {
            Err(StoreError::Fenced { key, token }) => {
                assert_eq!((key.as_str(), token), ("job", old.token), "{what}")
            }
            other => panic!("{what} of a stale grant: {other:?}"),
        }
    }
    assert!(lease.check("job", new.token).await.unwrap());
    assert!(!lease.check("job", old.token).await.unwrap());
}

/// Holders racing for a free lease: exactly one wins; racing again after each release,
/// every winner's token is larger than the last.
pub async fn lease_one_winner_of_a_race(s: &Stores) {
    let lease = Arc::new(s.lease());
    let mut last_token = 0;
    for round in 0..5 {
        let mut racing = JoinSet::new();
        for holder in 0..10 {
            let lease = lease.clone();
            racing.spawn(async move {
                let holder = format!("holder-{holder}");
                lease
                    .acquire("race", &holder, Duration::from_secs(60))
                    .await
            });
        }
        let mut winners = Vec::new();
        while let Some(done) = racing.join_next().await {
            winners.extend(done.unwrap().unwrap());
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let grant = winners.pop().unwrap();
        assert!(
            grant.token > last_token,
            "round {round}: {} after {last_token}",
            grant.token
        );
        last_token = grant.token;
        lease.release(&grant).await.unwrap();
    }
}
