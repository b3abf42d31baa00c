//! `Log` on SQLite: appends go to the writer thread (which keeps sequences gapless and
//! times ordered), reads to the read pool.

use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Row};
use tokio::sync::oneshot;

use super::sql;
use super::write::{time_ns, Cmd};
use super::Sqlite;
use crate::{Appended, From, Log, Record, Result};

#[async_trait]
impl Log for Sqlite {
    async fn append(&self, log: &str, dedup: Option<&str>, data: Bytes) -> Result<Appended> {
        let (reply, answer) = oneshot::channel();
        let cmd = Cmd::Append {
            log: log.to_string(),
            dedup: dedup.map(str::to_string),
            data,
            reply,
        };
        self.send(cmd, answer).await
    }

    async fn read(&self, log: &str, from: From, limit: usize) -> Result<Vec<Record>> {
        let log = log.to_string();
        let db = self.inner.db.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.inner
            .readers
            .run(move |conn| {
                let doing = || format!("{}: reading log {log:?} from {from:?}", db.display());
                let (sql_text, start) = match from {
                    From::Seq(seq) => (
                        "SELECT seq, time_ns, data FROM log_records
                         WHERE log = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                        i64::try_from(seq).unwrap_or(i64::MAX),
                    ),
                    From::Time(time) => (
                        "SELECT seq, time_ns, data FROM log_records
                         WHERE log = ?1 AND time_ns >= ?2 ORDER BY seq LIMIT ?3",
                        time_ns(time),
                    ),
                };
                let mut stmt = sql(doing, conn.prepare_cached(sql_text))?;
                let rows = stmt.query_map(params![log, start, limit], record);
                sql(doing, rows.and_then(|rows| rows.collect()))
            })
            .await
    }

    async fn last(&self, log: &str) -> Result<u64> {
        let log = log.to_string();
        let db = self.inner.db.clone();
        self.inner
            .readers
            .run(move |conn| {
                let doing = || format!("{}: reading the end of log {log:?}", db.display());
                sql(
                    doing,
                    conn.query_row(
                        "SELECT coalesce(max(seq), 0) FROM log_records WHERE log = ?1",
                        [&log],
                        |row| row.get(0),
                    ),
                )
            })
            .await
    }
}

fn record(row: &Row<'_>) -> rusqlite::Result<Record> {
    let ns: i64 = row.get(1)?;
    Ok(Record {
        seq: row.get(0)?,
        time: UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64),
        data: Bytes::from(row.get::<_, Vec<u8>>(2)?),
    })
}
