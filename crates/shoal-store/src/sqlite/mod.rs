//! The SQLite backend: one database file in WAL mode, written by one thread, read by a small
//! pool of connections off the executor; blobs as files named by their digest.
//!
//! Choices, and why:
//!
//! - **Durability.** `synchronous=FULL` in WAL mode: a write is acknowledged only after its
//!   commit is fsynced, so an acknowledged token, audit record or revision survives kill -9
//!   and power loss. The cost (one fsync per commit) is shared: the writer commits every
//!   write waiting in its queue in one transaction (group commit), each in its own
//!   savepoint, so one failed write does not undo the others.
//! - **One writer.** A dedicated thread owns the only write connection and takes commands in
//!   order over a channel, so writes never contend for SQLite's lock and revisions are given
//!   in one order. Reads run on pooled read connections in `spawn_blocking`; WAL lets them
//!   run while the writer writes.
//! - **Revisions.** The row id of the `changes` table (AUTOINCREMENT, so never reused) is the
//!   revision: one global order across keys. `kv` holds each key's current value.
//! - **Watch.** A watch subscribes to the broadcast of committed events *before* it reads the
//!   catch-up from `changes`, then drops every event at or below the last revision it has
//!   passed on: nothing committed meanwhile is missed, nothing is sent twice. A watcher that
//!   lags behind the broadcast reads the missed events from `changes` again, then resumes.
//! - **Compaction.** [`Sqlite::compact`] drops the changes up to a revision; a watch from
//!   before that gets [`StoreError::Compacted`] instead of an incomplete stream.
//! - **Blobs.** Files under `blobs/<first two hex digits>/<digest>`, written to a temporary
//!   file, fsynced, renamed into place and the directory fsynced: a reader sees a whole blob
//!   or none. Packages are large; keeping them out of the database keeps its pages and WAL
//!   small. Each read checks the content against its digest.

mod blobs;
mod kv;
mod lock;
mod log;
mod read;
mod schema;
mod watch;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Event, Result, Revision, StoreError};
use read::Readers;
use write::Cmd;

/// The database file's name inside a store directory.
pub const DB_FILE: &str = "store.db";
/// The blob directory's name inside a store directory.
pub const BLOB_DIR: &str = "blobs";

/// Committed events kept for watchers; one that falls further behind reads `changes` again.
const BROADCAST_CAPACITY: usize = 1024;
/// Writes waiting in the writer's queue; callers wait beyond that.
const WRITE_QUEUE: usize = 1024;

/// The SQLite store: `Kv`, `Log` and `Blobs` on one directory. Clones share the store.
#[derive(Debug, Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: PathBuf,
    blob_dir: PathBuf,
    /// `None` once closed.
    writer: Mutex<Option<mpsc::Sender<Cmd>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Released at close.
    lock: Mutex<Option<lock::Lock>>,
    readers: Arc<Readers>,
    events: broadcast::Sender<Event>,
    /// The watch tasks.
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Sqlite {
    /// Opens (creating if needed) the store at `path`: a directory (an existing one, or a new
    /// path without an extension) holds `store.db` and `blobs/`; any other path is the
    /// database file itself, with the blobs in `<path>.blobs/`. One process at a time: a
    /// store another process has open is refused (`<database>.lock`). Blocks on the file
    /// system briefly: call it at start, or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Sqlite> {
        let (db, blob_dir) = paths(path.as_ref());
        if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| backend(format!("creating {}", parent.display()), e))?;
        }
        let lock = lock::Lock::take(&with_suffix(&db, ".lock"))?;
        blobs::prepare(&blob_dir)?;
        let conn = schema::open_writer(&db)?;
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (writer, commands) = mpsc::channel(WRITE_QUEUE);
        let thread = write::spawn(conn, commands, events.clone(), db.clone())?;
        Ok(Sqlite {
            inner: Arc::new(Inner {
                readers: Arc::new(Readers::new(db.clone())),
                db,
                blob_dir,
                writer: Mutex::new(Some(writer)),
                thread: Mutex::new(Some(thread)),
                lock: Mutex::new(Some(lock)),
                events,
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.db
    }

    /// Ends every watch (their receivers see `None`), lets the writer finish the writes it
    /// has taken, waits for it to stop, and unlocks the store for the next `open`. Later
    /// calls answer [`StoreError::Closed`].
    pub async fn close(&self) {
        let writer = locked(&self.inner.writer).take();
        drop(writer);
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.readers.close();
        let thread = locked(&self.inner.thread).take();
        if let Some(thread) = thread {
            // The thread ends once every sender is gone: in-flight calls hold one briefly.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        locked(&self.inner.lock).take();
    }

    /// Drops the history of changes up to and including `upto`; a later watch or catch-up
    /// from a revision below `upto` gets [`StoreError::Compacted`], and `history` starts
    /// after `upto`. Current values and the revision counter stay.
    pub async fn compact(&self, upto: Revision) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Cmd::Compact { upto, reply }, answer).await
    }

    /// Hands `cmd` to the writer and waits for its answer.
    async fn send<T>(&self, cmd: Cmd, answer: oneshot::Receiver<Result<T>>) -> Result<T> {
        let writer = locked(&self.inner.writer).clone();
        let writer = writer.ok_or(StoreError::Closed)?;
        writer.send(cmd).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// The database file and the blob directory of the store at `path` (see [`Sqlite::open`]).
fn paths(path: &Path) -> (PathBuf, PathBuf) {
    if path.is_dir() || (!path.exists() && path.extension().is_none()) {
        (path.join(DB_FILE), path.join(BLOB_DIR))
    } else {
        (path.to_path_buf(), with_suffix(path, ".blobs"))
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A backend failure while `doing`.
pub(crate) fn backend(
    doing: impl Into<String>,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Backend {
        doing: doing.into(),
        source: source.into(),
    }
}

/// Runs a blocking closure off the executor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| backend("running a blocking store task", e))?
}

/// The smallest string above every string that starts with `prefix`, or `None` when no
/// string is (the empty prefix, or one of only `char::MAX`). UTF-8 byte order (SQLite's
/// BINARY collation) is code point order, so `prefix <= key < upper` selects the prefix.
pub(crate) fn prefix_upper(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// An SQLite result, its error named by what was being done.
fn sql<T>(doing: impl FnOnce() -> String, result: rusqlite::Result<T>) -> Result<T> {
    result.map_err(|e| backend(doing(), e))
}

#[cfg(test)]
mod tests {
    use super::prefix_upper;

    #[test]
    fn prefix_upper_bounds_the_prefix() {
        for (prefix, upper) in [
            ("", None),
            ("a", Some("b")),
            ("agents/", Some("agents0")),
            ("z\u{10FFFF}", Some("{")),
            ("\u{10FFFF}", None),
            ("\u{D7FF}", Some("\u{E000}")),
        ] {
            assert_eq!(prefix_upper(prefix).as_deref(), upper, "prefix {prefix:?}");
        }
    }
}
