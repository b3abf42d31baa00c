//! What the SQLite store acknowledged survives kill -9: this test runs itself again as a
//! writer process, kills it in the middle of its writes, and reopens the directory.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_store::lease::KvLease;
use shoal_store::{From, Kv, Lease, Log, Sqlite};

/// Set in the writer process: the directory it writes to.
const CHILD_DIR: &str = "SHOAL_STORE_CRASH_DIR";
/// Acknowledged writes the parent waits for before it kills the writer.
const ACKED: u64 = 150;

#[test]
fn acknowledged_writes_survive_kill_9() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        return write_until_killed(dir.into());
    }
    let dir = std::env::temp_dir().join(format!("shoal-store-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_writes_survive_kill_9",
            "--nocapture",
        ])
        .env(CHILD_DIR, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acked = 0;
    let mut token = 0;
    for line in lines {
        let line = line.unwrap();
        assert!(
            Instant::now() < deadline,
            "the writer acknowledged only {acked} writes"
        );
        if let Some(t) = line.strip_prefix("token ") {
            token = t.parse().unwrap();
        } else if let Some(n) = line.strip_prefix("acked ") {
            acked = n.parse().unwrap();
            if acked >= ACKED {
                break;
            }
        }
    }
    // SIGKILL: no destructor, no close, no checkpoint.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(acked >= ACKED, "the writer ended after {acked} writes");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Sqlite::open(&dir).unwrap();
        let kv: &dyn Kv = &store;
        let log: &dyn Log = &store;
        for n in 1..=acked {
            let entry = kv.get(&format!("crash/{n}")).await.unwrap();
            assert_eq!(
                entry.map(|e| e.value),
                Some(Bytes::from(n.to_string())),
                "key {n}"
            );
        }
        assert!(log.last("audit").await.unwrap() >= acked);
        let records = log
            .read("audit", From::Seq(1), acked as usize)
            .await
            .unwrap();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=acked).collect::<Vec<_>>());
        let lease = KvLease::new(Arc::new(store.clone()), "leases/");
        assert!(lease.check("leader", token).await.unwrap());
        store.close().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The writer: a lease, then a key and an audit record per step, each printed once
/// acknowledged, until the parent kills it.
fn write_until_killed(dir: std::path::PathBuf) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Sqlite::open(&dir).unwrap();
        let lease = KvLease::new(Arc::new(store.clone()), "leases/");
        let grant = lease
            .acquire("leader", "writer", Duration::from_secs(3600))
            .await;
        let mut out = std::io::stdout().lock();
        writeln!(out, "token {}", grant.unwrap().unwrap().token).unwrap();
        for n in 1u64.. {
            let value = Bytes::from(n.to_string());
            Kv::put(&store, &format!("crash/{n}"), value.clone())
                .await
                .unwrap();
            store
                .append("audit", Some(&n.to_string()), value)
                .await
                .unwrap();
            writeln!(out, "acked {n}").unwrap();
            out.flush().unwrap();
        }
    });
}
