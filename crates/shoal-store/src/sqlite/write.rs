//! The writer thread: it alone writes the database, taking commands in order and committing
//! every command waiting in its queue in one transaction, each in its own savepoint; answers
//! and events leave only after the commit.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::warn;

use super::backend;
use crate::{Appended, Entry, Event, Result, Revision, StoreError};

/// Commands committed together at most; a full batch still costs one fsync.
const MAX_BATCH: usize = 256;

/// What the writer is asked to do.
#[derive(Debug)]
pub(super) enum Cmd {
    Kv {
        key: String,
        op: KvOp,
        reply: oneshot::Sender<Result<Revision>>,
    },
    Append {
        log: String,
        dedup: Option<String>,
        data: Bytes,
        reply: oneshot::Sender<Result<Appended>>,
    },
    Compact {
        upto: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// A write to one key and the condition it holds under.
#[derive(Debug)]
pub(super) enum KvOp {
    Create(Bytes),
    Update(Bytes, Revision),
    Put(Bytes),
    Delete(Option<Revision>),
}

/// Starts the writer thread; it ends when every sender of `commands` is gone.
pub(super) fn spawn(
    conn: Connection,
    commands: mpsc::Receiver<Cmd>,
    events: broadcast::Sender<Event>,
    db: PathBuf,
) -> Result<JoinHandle<()>> {
    let writer = Writer { conn, events, db };
    std::thread::Builder::new()
        .name("shoal-store-writer".into())
        .spawn(move || writer.run(commands))
        .map_err(|e| backend("starting the store's writer thread", e))
}

struct Writer {
    conn: Connection,
    events: broadcast::Sender<Event>,
    db: PathBuf,
}

/// A command carried out (not yet committed): its answer and the event it makes.
enum Done {
    Kv(
        oneshot::Sender<Result<Revision>>,
        Result<Revision>,
        Option<Event>,
    ),
    Append(oneshot::Sender<Result<Appended>>, Result<Appended>),
    Compact(oneshot::Sender<Result<()>>, Result<()>),
}

impl Writer {
    fn run(mut self, mut commands: mpsc::Receiver<Cmd>) {
        while let Some(first) = commands.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match commands.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// Carries out `batch` in one transaction, then answers and broadcasts.
    fn commit(&mut self, batch: Vec<Cmd>) {
        let db = self.db.clone();
        let failed = |e: rusqlite::Error| backend(format!("committing to {}", db.display()), e);
        let mut tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => return answer_all(batch.into_iter().map(|c| c.skip()), &failed(e)),
        };
        let done: Vec<Done> = batch
            .into_iter()
            .map(|cmd| in_savepoint(&mut tx, &db, cmd))
            .collect();
        if let Err(e) = tx.commit() {
            let error = failed(e);
            warn!(%error, writes = done.len(), "the store's commit failed");
            return answer_all(done, &error);
        }
        for done in done {
            match done {
                Done::Kv(reply, result, event) => {
                    if let Some(event) = event {
                        // No watcher is fine: the event is in `changes`.
                        let _ = self.events.send(event);
                    }
                    let _ = reply.send(result);
                }
                Done::Append(reply, result) => drop(reply.send(result)),
                Done::Compact(reply, result) => drop(reply.send(result)),
            }
        }
    }
}

impl Cmd {
    /// The command not carried out (its answer comes from [`answer_all`]).
    fn skip(self) -> Done {
        match self {
            Cmd::Kv { reply, .. } => Done::Kv(reply, Err(StoreError::Closed), None),
            Cmd::Append { reply, .. } => Done::Append(reply, Err(StoreError::Closed)),
            Cmd::Compact { reply, .. } => Done::Compact(reply, Err(StoreError::Closed)),
        }
    }
}

/// Answers every command of a batch that failed as a whole with `error`.
fn answer_all(done: impl IntoIterator<Item = Done>, error: &StoreError) {
    let again = || backend(error.to_string(), "the transaction was rolled back");
    for done in done {
        match done {
            Done::Kv(reply, ..) => drop(reply.send(Err(again()))),
            Done::Append(reply, _) => drop(reply.send(Err(again()))),
            Done::Compact(reply, _) => drop(reply.send(Err(again()))),
        }
    }
}

/// Carries out `cmd` in a savepoint, rolled back if it fails.
fn in_savepoint(tx: &mut Transaction<'_>, db: &Path, cmd: Cmd) -> Done {
    let failed = |what: &str, e| backend(format!("{}: {what}", db.display()), e);
    let sp = match tx.savepoint() {
        Ok(sp) => sp,
        Err(e) => return fail_done(cmd.skip(), failed("opening a savepoint", e)),
    };
    let done = apply(&sp, db, cmd);
    if done.is_ok() {
        if let Err(e) = sp.commit() {
            return fail_done(done, failed("releasing a savepoint", e));
        }
    }
    // Dropped uncommitted, the savepoint rolls back.
    done
}

fn apply(conn: &Connection, db: &Path, cmd: Cmd) -> Done {
    let failed = |what: String| move |e| backend(format!("{}: {what}", db.display()), e);
    match cmd {
        Cmd::Kv { key, op, reply } => match kv_write(conn, &key, op) {
            Ok(Ok(event)) => Done::Kv(reply, Ok(event.revision()), Some(event)),
            Ok(Err(conflict)) => Done::Kv(reply, Err(conflict), None),
            Err(e) => Done::Kv(reply, Err(failed(format!("writing key {key:?}"))(e)), None),
        },
        Cmd::Append {
            log,
            dedup,
            data,
            reply,
        } => {
            let result = append(conn, &log, dedup.as_deref(), &data)
                .map_err(failed(format!("appending to log {log:?}")));
            Done::Append(reply, result)
        }
        Cmd::Compact { upto, reply } => {
            let result = compact(conn, upto).map_err(failed(format!("compacting to {upto}")));
            Done::Compact(reply, result)
        }
    }
}

impl Done {
    fn is_ok(&self) -> bool {
        match self {
            Done::Kv(_, result, _) => result.is_ok(),
            Done::Append(_, result) => result.is_ok(),
            Done::Compact(_, result) => result.is_ok(),
        }
    }
}

/// `done`, its result replaced by `error`.
fn fail_done(done: Done, error: StoreError) -> Done {
    match done {
        Done::Kv(reply, ..) => Done::Kv(reply, Err(error), None),
        Done::Append(reply, _) => Done::Append(reply, Err(error)),
        Done::Compact(reply, _) => Done::Compact(reply, Err(error)),
    }
}

/// Writes one key if its condition holds: the event, or the conflict.
fn kv_write(
    conn: &Connection,
    key: &str,
    op: KvOp,
) -> rusqlite::Result<std::result::Result<Event, StoreError>> {
    let found: Option<Revision> = conn
        .query_row("SELECT rev FROM kv WHERE key = ?1", [key], |row| row.get(0))
        .optional()?;
    let (conflict, expected) = match &op {
        KvOp::Create(_) => (found.is_some(), None),
        KvOp::Update(_, rev) => (found != Some(*rev), Some(*rev)),
        KvOp::Put(_) => (false, None),
        KvOp::Delete(None) => (found.is_none(), None),
        KvOp::Delete(Some(rev)) => (found != Some(*rev), Some(*rev)),
    };
    if conflict {
        return Ok(Err(StoreError::Conflict {
            key: key.to_string(),
            expected,
            found,
        }));
    }
    let value = match op {
        KvOp::Create(value) | KvOp::Update(value, _) | KvOp::Put(value) => Some(value),
        KvOp::Delete(_) => None,
    };
    conn.execute(
        "INSERT INTO changes (key, value) VALUES (?1, ?2)",
        params![key, value.as_deref()],
    )?;
    let revision = conn.last_insert_rowid() as Revision;
    Ok(Ok(match value {
        Some(value) => {
            conn.execute(
                "INSERT INTO kv (key, value, rev) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, rev = excluded.rev",
                params![key, &value[..], revision as i64],
            )?;
            Event::Put(Entry {
                key: key.to_string(),
                value,
                revision,
            })
        }
        None => {
            conn.execute("DELETE FROM kv WHERE key = ?1", [key])?;
            Event::Delete {
                key: key.to_string(),
                revision,
            }
        }
    }))
}

/// Appends one record unless its dedup id is in the log already.
fn append(
    conn: &Connection,
    log: &str,
    dedup: Option<&str>,
    data: &[u8],
) -> rusqlite::Result<Appended> {
    if let Some(dedup) = dedup {
        let first: Option<u64> = conn
            .query_row(
                "SELECT seq FROM log_records WHERE log = ?1 AND dedup = ?2",
                params![log, dedup],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(seq) = first {
            return Ok(Appended {
                seq,
                duplicate: true,
            });
        }
    }
    let (last, last_time): (u64, i64) = conn.query_row(
        "SELECT coalesce(max(seq), 0), coalesce(max(time_ns), 0) FROM log_records WHERE log = ?1",
        [log],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    // Never before the previous record, even if the clock steps back: reading from a time
    // then returns a suffix of the log.
    let time = time_ns(SystemTime::now()).max(last_time);
    let seq = last + 1;
    conn.execute(
        "INSERT INTO log_records (log, seq, time_ns, dedup, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![log, seq, time, dedup, data],
    )?;
    Ok(Appended {
        seq,
        duplicate: false,
    })
}

/// Drops the changes up to `upto` and records the first revision kept.
fn compact(conn: &Connection, upto: Revision) -> rusqlite::Result<()> {
    let floor = upto.saturating_add(1) as i64;
    conn.execute("DELETE FROM changes WHERE rev < ?1", [floor])?;
    conn.execute(
        "INSERT INTO meta (name, value) VALUES ('compacted', ?1)
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        [floor],
    )?;
    Ok(())
}

/// Nanoseconds since the epoch as stored (0 before it, saturated far after it).
pub(super) fn time_ns(time: SystemTime) -> i64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}
