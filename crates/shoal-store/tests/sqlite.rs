//! The conformance suite against the SQLite backend, one test per property, and what only
//! SQLite has: reopening the same directory, compaction, closing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use shoal_store::conformance::{self, next_event, Stores};
use shoal_store::{Blobs, Event, From, Kv, Lease, Log, Sqlite, StoreError};

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "shoal-store-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one property on a fresh store in its own directory.
macro_rules! conformance {
    ($($property:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $property() {
            let scratch = Scratch::new(stringify!($property));
            let store = Arc::new(Sqlite::open(&scratch.0).unwrap());
            conformance::$property(&Stores::of(store.clone())).await;
            store.close().await;
        }
    )*};
}

conformance!(
    kv_revisions_increase,
    kv_create_conflicts,
    kv_stale_revision_conflicts,
    kv_cas_under_concurrency,
    kv_list_by_prefix,
    kv_history,
    kv_watch_from_revision,
    kv_watch_across_reconnects,
    kv_slow_watch_loses_nothing,
    log_sequences_without_gaps,
    log_dedup,
    log_read_from_seq_and_time,
    log_independent,
    blobs_put_get_delete,
    lease_acquire_expire_takeover,
    lease_stale_grant_is_fenced,
    lease_one_winner_of_a_race,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes() {
    let scratch = Scratch::new("all");
    let next = AtomicUsize::new(0);
    conformance::run_all(|| {
        let dir = scratch
            .0
            .join(next.fetch_add(1, Ordering::Relaxed).to_string());
        async move { Stores::of(Arc::new(Sqlite::open(dir).unwrap())) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_everything() {
    let scratch = Scratch::new("reopen");
    let store = Sqlite::open(&scratch.0).unwrap();
    let (kv, log, blobs) = views(&store);
    let rev = kv.put("k/a", Bytes::from("1")).await.unwrap();
    kv.delete("k/b", None).await.unwrap_err();
    let gone = kv.put("k/b", Bytes::from("2")).await.unwrap();
    let deleted = kv.delete("k/b", Some(gone)).await.unwrap();
    log.append("audit", Some("req-1"), Bytes::from("first"))
        .await
        .unwrap();
    let digest = blobs.put(Bytes::from("package")).await.unwrap();
    let lease = shoal_store::lease::KvLease::new(Arc::new(store.clone()), "leases/");
    let grant = lease
        .acquire("leader", "a", std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    assert!(matches!(kv.get("k/a").await, Err(StoreError::Closed)));

    let store = Sqlite::open(&scratch.0).unwrap();

    let (kv, log, blobs) = views(&store);
    assert_eq!(kv.get("k/a").await.unwrap().unwrap().revision, rev);
    assert_eq!(kv.get("k/b").await.unwrap(), None);
    let history = store.history("k/b").await.unwrap();
    assert_eq!(history.last().map(Event::revision), Some(deleted));
    let again = log
        .append("audit", Some("req-1"), Bytes::from("again"))
        .await
        .unwrap();
    assert_eq!((again.seq, again.duplicate), (1, true));
    assert_eq!(log.last("audit").await.unwrap(), 1);
    assert_eq!(
        blobs.get(&digest).await.unwrap(),
        Some(Bytes::from("package"))
    );
    let revision = store.revision().await.unwrap();
    let next = kv.put("k/c", Bytes::from("3")).await.unwrap();
    assert_eq!(next, revision + 1);
    let lease = shoal_store::lease::KvLease::new(Arc::new(store.clone()), "leases/");
    assert!(lease.check("leader", grant.token).await.unwrap());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_compaction_is_told_so() {
    let scratch = Scratch::new("compact");
    let store = Sqlite::open(&scratch.0).unwrap();
    let (kv, _, _) = views(&store);
    let first = kv.put("c/a", Bytes::from("1")).await.unwrap();
    let second = kv.put("c/a", Bytes::from("2")).await.unwrap();
    let third = kv.put("c/b", Bytes::from("3")).await.unwrap();
    store.compact(second).await.unwrap();
    let mut watch = store.watch("c/", first).await.unwrap();
    match watch.events.recv().await {
        Some(Err(StoreError::Compacted(floor))) => assert_eq!(floor, second + 1),
        other => panic!("a watch from before the compaction: {other:?}"),
    }
    assert!(watch.events.recv().await.is_none());
    // From the compacted revision itself, nothing is missing.
    let mut watch = store.watch("c/", second).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), third);
    assert_eq!(
        kv.get("c/a").await.unwrap().unwrap().value,
        Bytes::from("2")
    );
    // The revision counter does not go back, even with every change compacted.
    store.compact(third).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), third);
    assert!(kv.put("c/c", Bytes::from("4")).await.unwrap() > third);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_ends_watches_and_refuses_calls() {
    let scratch = Scratch::new("close");
    let store = Sqlite::open(&scratch.0).unwrap();
    let (kv, log, _) = views(&store);
    let mut watch = store.watch("", 0).await.unwrap();
    kv.put("x", Bytes::from("1")).await.unwrap();
    next_event(&mut watch).await;
    store.close().await;
    assert!(watch.events.recv().await.is_none());
    assert!(matches!(
        kv.put("x", Bytes::from("2")).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        log.append("l", None, Bytes::new()).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.watch("", 0).await, Err(StoreError::Closed)));
    // Reads of a log after reopening find what was there.
    let store = Sqlite::open(&scratch.0).unwrap();
    let (_, log, _) = views(&store);
    assert_eq!(log.read("l", From::Seq(1), 10).await.unwrap(), vec![]);
    store.close().await;
}

#[test]
fn a_file_path_opens_a_database_file_with_blobs_beside_it() {
    let scratch = Scratch::new("file");
    std::fs::create_dir_all(&scratch.0).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Sqlite::open(scratch.0.join("center.db")).unwrap();
        let (_, _, blobs) = views(&store);
        let digest = blobs.put(Bytes::from("b")).await.unwrap();
        store.close().await;
        assert!(scratch.0.join("center.db").is_file());
        let blob = scratch
            .0
            .join("center.db.blobs")
            .join(&digest.0[..2])
            .join(&digest.0);
        assert!(blob.is_file(), "{}", blob.display());
    });
}

/// The store as each of its traits (their method names overlap).
fn views(store: &Sqlite) -> (&dyn Kv, &dyn Log, &dyn Blobs) {
    (store, store, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_open_store_per_directory() {
    let scratch = Scratch::new("lock");
    let store = Sqlite::open(&scratch.0).unwrap();
    match Sqlite::open(&scratch.0) {
        Err(StoreError::Backend { doing, source }) => {
            assert!(doing.contains("store.db.lock"), "{doing}");
            let pid = std::process::id().to_string();
            assert!(source.to_string().contains(&pid), "{source}");
        }
        other => panic!("a second open: {other:?}"),
    }
    store.close().await;
    Sqlite::open(&scratch.0).unwrap().close().await;
}
