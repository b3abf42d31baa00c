//! The store's tables and the pragmas every connection is opened with.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::sql;
use crate::Result;

const SCHEMA: &str = "
-- Every change to a key, in one order: the row id is the revision. AUTOINCREMENT, so a
-- revision is never given twice, even after the newest rows are compacted.
CREATE TABLE IF NOT EXISTS changes (
    rev INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    -- NULL: the key was deleted.
    value BLOB
);
CREATE INDEX IF NOT EXISTS changes_key ON changes (key, rev);
-- Each key's current value and the revision that wrote it.
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    rev INTEGER NOT NULL
) WITHOUT ROWID;
-- Append-only logs: sequences from 1 per log, times never decreasing within a log.
CREATE TABLE IF NOT EXISTS log_records (
    log TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    dedup TEXT,
    data BLOB NOT NULL,
    PRIMARY KEY (log, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS log_dedup ON log_records (log, dedup) WHERE dedup IS NOT NULL;
CREATE INDEX IF NOT EXISTS log_time ON log_records (log, time_ns);
-- Named numbers: 'compacted' is the first revision whose change is still kept.
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// How long a connection waits for a lock before failing (a checkpoint, another process).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the write connection: WAL, `synchronous=FULL`, the tables created.
pub(super) fn open_writer(db: &Path) -> Result<Connection> {
    let doing = || format!("opening the store database {}", db.display());
    let conn = sql(doing, Connection::open(db))?;
    sql(doing, conn.busy_timeout(BUSY_TIMEOUT))?;
    sql(doing, conn.pragma_update(None, "journal_mode", "wal"))?;
    // FULL: an acknowledged commit is on disk, not only in the OS cache (see the module doc).
    sql(doing, conn.pragma_update(None, "synchronous", "full"))?;
    sql(doing, conn.execute_batch(SCHEMA))?;
    Ok(conn)
}

/// Opens a read connection; it cannot write.
pub(super) fn open_reader(db: &Path) -> Result<Connection> {
    let doing = || format!("opening the store database {} to read", db.display());
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = sql(doing, Connection::open_with_flags(db, flags))?;
    sql(doing, conn.busy_timeout(BUSY_TIMEOUT))?;
    Ok(conn)
}
