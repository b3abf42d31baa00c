//! `Kv` on SQLite: writes go to the writer thread, reads to the read pool.

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, Row};
use tokio::sync::oneshot;

use super::watch::change;
use super::write::{Cmd, KvOp};
use super::{prefix_upper, sql, watch, Sqlite};
use crate::{Entry, Event, Kv, Result, Revision, Watch};

#[async_trait]
impl Kv for Sqlite {
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let key = key.to_string();
        let db = self.inner.db.clone();
        self.inner
            .readers
            .run(move |conn| {
                let doing = || format!("{}: reading key {key:?}", db.display());
                let row = conn
                    .query_row(
                        "SELECT key, value, rev FROM kv WHERE key = ?1",
                        [&key],
                        entry,
                    )
                    .optional();
                sql(doing, row)
            })
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let prefix = prefix.to_string();
        let db = self.inner.db.clone();
        self.inner
            .readers
            .run(move |conn| {
                let doing = || format!("{}: listing keys under {prefix:?}", db.display());
                sql(doing, list(conn, &prefix))
            })
            .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        self.write(key, KvOp::Create(value)).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        self.write(key, KvOp::Update(value, expected)).await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<Revision> {
        self.write(key, KvOp::Put(value)).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision> {
        self.write(key, KvOp::Delete(expected)).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        if is_closed(self) {
            return Err(crate::StoreError::Closed);
        }
        // Subscribed here, before the watch task reads its catch-up.
        let live = self.inner.events.subscribe();
        Ok(watch::start(
            watch::Source {
                readers: self.inner.readers.clone(),
                live,
                prefix: prefix.to_string(),
            },
            after,
            &self.inner.tasks,
            self.inner.cancel.clone(),
        ))
    }

    async fn history(&self, key: &str) -> Result<Vec<Event>> {
        let key = key.to_string();
        let db = self.inner.db.clone();
        self.inner
            .readers
            .run(move |conn| {
                let doing = || format!("{}: reading the history of key {key:?}", db.display());
                let mut stmt = sql(
                    doing,
                    conn.prepare_cached(
                        "SELECT rev, key, value FROM changes WHERE key = ?1 ORDER BY rev",
                    ),
                )?;
                let rows = stmt.query_map([&key], change);
                sql(doing, rows.and_then(|rows| rows.collect()))
            })
            .await
    }

    async fn revision(&self) -> Result<Revision> {
        let db = self.inner.db.clone();
        self.inner
            .readers
            .run(move |conn| {
                let doing = || format!("{}: reading the latest revision", db.display());
                sql(doing, revision(conn))
            })
            .await
    }
}

impl Sqlite {
    async fn write(&self, key: &str, op: KvOp) -> Result<Revision> {
        let (reply, answer) = oneshot::channel();
        let key = key.to_string();
        self.send(Cmd::Kv { key, op, reply }, answer).await
    }
}

fn is_closed(store: &Sqlite) -> bool {
    super::locked(&store.inner.writer).is_none()
}

fn list(conn: &Connection, prefix: &str) -> rusqlite::Result<Vec<Entry>> {
    let upper = prefix_upper(prefix);
    let mut stmt = conn.prepare_cached(
        "SELECT key, value, rev FROM kv WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) ORDER BY key",
    )?;
    let rows = stmt.query_map(params![prefix, upper], entry)?;
    rows.collect()
}

/// The latest revision given: `changes`' AUTOINCREMENT counter, right even when the newest
/// changes are compacted.
pub(super) fn revision(conn: &Connection) -> rusqlite::Result<Revision> {
    let seq: Option<Revision> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'changes'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(seq.unwrap_or(0))
}

fn entry(row: &Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        key: row.get(0)?,
        value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
        revision: row.get(2)?,
    })
}
