//! A watch's task: the catch-up from `changes`, then the live broadcast, de-duplicated by
//! revision; a lag behind the broadcast sends it back to `changes` for what it missed.
//!
//! Why there is neither gap nor duplicate: the task subscribes before it reads, so every
//! commit is in what it reads, in the broadcast, or in both; the writer broadcasts in commit
//! order after the commit, and the task forwards only revisions above the last it passed.

use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, Row};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::read::Readers;

use super::{prefix_upper, sql};
use crate::{Entry, Event, Result, Revision, StoreError, Watch};

/// Events read from `changes` at a time.
const BATCH: usize = 256;
/// Events a watch holds for its receiver; a slow receiver slows its task, which then reads
/// what it missed from `changes`.
const BUFFER: usize = 256;

/// Where a watch reads from.
#[derive(Debug)]
pub(super) struct Source {
    pub readers: Arc<Readers>,
    /// Subscribed before the catch-up is read.
    pub live: broadcast::Receiver<Event>,
    pub prefix: String,
}

/// Starts the task of a watch of `source` from `after`.
pub(super) fn start(
    source: Source,
    after: Revision,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> Watch {
    let (events, receiver) = mpsc::channel(BUFFER);
    tasks.spawn(async move {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = follow(source, after, events) => {}
        }
    });
    Watch { events: receiver }
}

/// Why a watch stops following.
enum Stop {
    /// The receiver is gone, the store closed, or an error was sent.
    End,
    /// The broadcast dropped events: read them from `changes`.
    Lagged,
}

async fn follow(mut source: Source, mut last: Revision, events: mpsc::Sender<Result<Event>>) {
    loop {
        if catch_up(&source, &mut last, &events).await.is_err() {
            return;
        }
        match tail(&mut source, &mut last, &events).await {
            Stop::Lagged => continue,
            Stop::End => return,
        }
    }
}

/// Sends every change under the prefix above `last` that `changes` holds now.
async fn catch_up(
    source: &Source,
    last: &mut Revision,
    events: &mpsc::Sender<Result<Event>>,
) -> Result<(), ()> {
    loop {
        let (prefix, after) = (source.prefix.clone(), *last);
        let batch = source
            .readers
            .run(move |conn| read_after(conn, &prefix, after))
            .await;
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                let _ = events.send(Err(e)).await;
                return Err(());
            }
        };
        let full = batch.len() == BATCH;
        for event in batch {
            *last = event.revision();
            events.send(Ok(event)).await.map_err(|_| ())?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// Forwards live events above `last` under the prefix.
async fn tail(
    source: &mut Source,
    last: &mut Revision,
    events: &mpsc::Sender<Result<Event>>,
) -> Stop {
    loop {
        let received = tokio::select! {
            received = source.live.recv() => received,
            () = events.closed() => return Stop::End,
        };
        let event = match received {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(_)) => return Stop::Lagged,
            Err(broadcast::error::RecvError::Closed) => return Stop::End,
        };
        if event.revision() <= *last {
            continue;
        }
        // Every revision up to here was passed on or is outside the prefix.
        *last = event.revision();
        if event.key().starts_with(&source.prefix) && events.send(Ok(event)).await.is_err() {
            return Stop::End;
        }
    }
}

/// Up to [`BATCH`] changes under `prefix` above `after`, in revision order; `Compacted` if
/// some of them are gone.
fn read_after(conn: &mut Connection, prefix: &str, after: Revision) -> Result<Vec<Event>> {
    let doing = || format!("reading the changes under {prefix:?} after revision {after}");
    let tx = sql(doing, conn.transaction())?;
    let floor: Option<Revision> = sql(
        doing,
        tx.query_row(
            "SELECT value FROM meta WHERE name = 'compacted'",
            [],
            |row| row.get(0),
        )
        .optional(),
    )?;
    if let Some(floor) = floor.filter(|floor| after.saturating_add(1) < *floor) {
        return Err(StoreError::Compacted(floor));
    }
    // `+key`: scan by revision from `after` (a watch is usually near the end), not by key.
    let mut stmt = sql(
        doing,
        tx.prepare_cached(
            "SELECT rev, key, value FROM changes
             WHERE rev > ?1 AND +key >= ?2 AND (?3 IS NULL OR +key < ?3)
             ORDER BY rev LIMIT ?4",
        ),
    )?;
    let rows = stmt.query_map(
        params![after, prefix, prefix_upper(prefix), BATCH as i64],
        change,
    );
    sql(doing, rows.and_then(|rows| rows.collect()))
}

/// One row of `changes` (rev, key, value) as an event.
pub(super) fn change(row: &Row<'_>) -> rusqlite::Result<Event> {
    let revision: Revision = row.get(0)?;
    let key: String = row.get(1)?;
    Ok(match row.get::<_, Option<Vec<u8>>>(2)? {
        Some(value) => Event::Put(Entry {
            key,
            value: Bytes::from(value),
            revision,
        }),
        None => Event::Delete { key, revision },
    })
}
