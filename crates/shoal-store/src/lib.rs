//! shoal-store: the center's storage traits (`Kv`, `Log`, `Blobs`, `Lease`) and their backends.
//!
//! The center reaches its data only through these traits, as `Arc<dyn ...>`; the SQLite backend
//! is the default, and a NATS JetStream backend (a later feature) runs the same conformance
//! suite unchanged.
//!
//! - [`sqlite::Sqlite`]: one directory, `store.db` (WAL, `synchronous=FULL`: what it
//!   acknowledged survives kill -9 and power loss) and `blobs/` (files named by digest,
//!   written atomically). One writer thread commits in groups; a watch subscribes to the
//!   committed events before it reads its catch-up, and de-duplicates by revision. The
//!   [`sqlite`] module says why for each choice.
//! - [`lease::KvLease`]: `Lease` written once over any `Kv`, so every backend shares it.
//! - [`conformance`]: the properties every backend keeps, as public async functions.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

pub mod conformance;
pub mod lease;
pub mod sqlite;

pub use sqlite::Sqlite;

/// A point in the store's one total order of changes; every write gets a larger one.
pub type Revision = u64;

/// A key's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Bytes,
    /// The revision of the write that made this value.
    pub revision: Revision,
}

/// One change, as a watch or a history sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Entry),
    Delete { key: String, revision: Revision },
}

impl Event {
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put(entry) => entry.revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Event::Put(entry) => &entry.key,
            Event::Delete { key, .. } => key,
        }
    }
}

/// What a store refuses or fails with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write found another revision than the one it expected (`None`: the key
    /// does not exist).
    #[error("{key}: changed meanwhile (expected revision {expected:?}, found {found:?})")]
    Conflict {
        key: String,
        expected: Option<Revision>,
        found: Option<Revision>,
    },
    /// A lease's fencing token is no longer the current one.
    #[error("{key}: the lease was taken over (token {token} is stale)")]
    Fenced { key: String, token: u64 },
    /// A watch fell so far behind that the history it needs is gone: start again from a
    /// fresh read.
    #[error("the history before revision {0} is compacted: read again and watch from there")]
    Compacted(Revision),
    /// The backend failed (disk, database, connection); the message names what it was doing.
    #[error("{doing}: {source}")]
    Backend {
        doing: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store is closed.
    #[error("the store is closed")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Keys and values with revisions: compare-and-swap and watch from a revision.
#[async_trait]
pub trait Kv: Send + Sync + std::fmt::Debug {
    async fn get(&self, key: &str) -> Result<Option<Entry>>;
    /// Every current entry whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>>;
    /// Writes `value` only if `key` does not exist; `Conflict` otherwise.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;
    /// Writes `value` only if `key`'s current revision is `expected`; `Conflict` otherwise.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision>;
    /// Writes `value` whatever is there.
    async fn put(&self, key: &str, value: Bytes) -> Result<Revision>;
    /// Deletes `key` (only at revision `expected` when given); deleting what is not there
    /// is `Conflict` with `found: None`.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision>;
    /// Every change to keys under `prefix` with a revision above `after`, in revision order,
    /// then every later one as it happens: no gap, no duplicate. Subscribes before it catches
    /// up, so nothing written meanwhile is missed.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch>;
    /// The changes to `key`, oldest first.
    async fn history(&self, key: &str) -> Result<Vec<Event>>;
    /// The store's latest revision.
    async fn revision(&self) -> Result<Revision>;
}

/// A watch's events; `None` when the store closed. Dropping it ends the watch.
#[derive(Debug)]
pub struct Watch {
    pub events: tokio::sync::mpsc::Receiver<Result<Event>>,
}

/// Where a read of a log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The first record with this sequence or later.
    Seq(u64),
    /// The first record appended at this time or later.
    Time(SystemTime),
}

/// One record of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub time: SystemTime,
    pub data: Bytes,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// The dedup id was seen before: nothing was written, `seq` is the first append's.
    pub duplicate: bool,
}

/// Append-only logs by name (audit, command results): sequence numbers from 1, no gaps.
#[async_trait]
pub trait Log: Send + Sync + std::fmt::Debug {
    /// Appends `data` to `log`; an append with a `dedup` id already in that log writes nothing.
    async fn append(&self, log: &str, dedup: Option<&str>, data: Bytes) -> Result<Appended>;
    /// Up to `limit` records of `log` from `from`, oldest first.
    async fn read(&self, log: &str, from: From, limit: usize) -> Result<Vec<Record>>;
    /// The last sequence of `log` (0 when empty).
    async fn last(&self, log: &str) -> Result<u64>;
}

/// A sha256 digest, as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub String);

impl Digest {
    /// The sha256 of `data`.
    pub fn of(data: &[u8]) -> Digest {
        let hash = Sha256::digest(data);
        Digest(hash.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Whether this is 64 lowercase hex digits (anything else names no blob).
    pub fn is_valid(&self) -> bool {
        self.0.len() == 64
            && self
                .0
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Content-addressed blobs (packages) by sha256.
#[async_trait]
pub trait Blobs: Send + Sync + std::fmt::Debug {
    /// Stores `data` under its sha256 and returns it; storing it twice keeps one copy.
    async fn put(&self, data: Bytes) -> Result<Digest>;
    async fn get(&self, digest: &Digest) -> Result<Option<Bytes>>;
    async fn delete(&self, digest: &Digest) -> Result<()>;
}

/// A lease held: `token` is the fencing token, larger at every new holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key: String,
    pub holder: String,
    pub token: u64,
    pub until: SystemTime,
}

/// Leases with fencing tokens, on the `Kv`'s compare-and-swap.
#[async_trait]
pub trait Lease: Send + Sync + std::fmt::Debug {
    /// Takes `key` for `holder` for `ttl` if it is free or expired; `None` if another holds it.
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Option<Grant>>;
    /// Extends a grant; `Fenced` if another has taken the key since.
    async fn renew(&self, grant: &Grant, ttl: Duration) -> Result<Grant>;
    /// Gives the key up; `Fenced` if another has taken it since.
    async fn release(&self, grant: &Grant) -> Result<()>;
    /// Whether `token` is still the current, unexpired holder's.
    async fn check(&self, key: &str, token: u64) -> Result<bool>;
}
