//! The agent's own state in SQLite (`agent.db`): one connection, in WAL mode, behind a lock.
//!
//! Each part of the agent owns its tables and creates them with [`State::ensure`] when it
//! starts (`CREATE TABLE IF NOT EXISTS ...`), so no part edits another's schema. Statements
//! are short, but a statement may wait on the disk or on the lock: async code runs them with
//! [`State::call`], on a blocking thread (one at a time), never on an async worker. Every
//! write that must survive a crash is a single statement or one transaction
//! ([`State::transaction`]), so the database is always the state before or after it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Transaction};
use tokio::sync::{Semaphore, SemaphorePermit};

/// What went wrong with the state database, naming it.
#[derive(Debug, thiserror::Error)]
#[error("agent state {path}: {source}")]
pub struct StateError {
    pub path: String,
    #[source]
    pub source: rusqlite::Error,
}

/// The state database; clones share the connection.
#[derive(Debug, Clone)]
pub struct State {
    conn: Arc<Mutex<Connection>>,
    /// One async caller at a time on a blocking thread: the connection serves one statement
    /// at a time anyway, and without it every caller waiting for the lock holds a blocking
    /// thread of its own (200 programs starting at once made 120 threads, each with its
    /// stack and a malloc arena).
    calls: Arc<Semaphore>,
    path: Arc<str>,
}

impl State {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<State, StateError> {
        let name: Arc<str> = path.display().to_string().into();
        let fail = |source| StateError {
            path: name.to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(fail)?;
        // WAL: a crash between two transactions loses neither; readers never block writers.
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "normal")
            .map_err(fail)?;
        conn.pragma_update(None, "foreign_keys", "on")
            .map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        Ok(State {
            conn: Arc::new(Mutex::new(conn)),
            calls: Arc::new(Semaphore::new(1)),
            path: name,
        })
    }

    /// Runs `schema` (statements separated by `;`, each idempotent such as `CREATE TABLE IF
    /// NOT EXISTS`).
    pub fn ensure(&self, schema: &str) -> Result<(), StateError> {
        self.with(|conn| conn.execute_batch(schema))
    }

    /// Runs `f` with the connection.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(|source| self.error(source))
    }

    /// [`State::with`] on a blocking thread, for async callers.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let _turn = self.turn().await;
        let state = self.clone();
        match tokio::task::spawn_blocking(move || state.with(f)).await {
            Ok(done) => done,
            Err(e) => Err(self.unfinished(e)),
        }
    }

    /// [`State::transaction`] on a blocking thread, for async callers.
    pub async fn call_transaction<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let _turn = self.turn().await;
        let state = self.clone();
        match tokio::task::spawn_blocking(move || state.transaction(f)).await {
            Ok(done) => done,
            Err(e) => Err(self.unfinished(e)),
        }
    }

    /// Waits for this caller's turn on a blocking thread (first come, first served).
    async fn turn(&self) -> Option<SemaphorePermit<'_>> {
        // Err only if the semaphore were closed, which it never is: then go without a turn.
        self.calls.acquire().await.ok()
    }

    /// A statement whose blocking task did not finish: a panic goes on unwinding in the
    /// caller; a runtime shutting down before it ran is an error.
    fn unfinished(&self, e: tokio::task::JoinError) -> StateError {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => self.error(rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
        }
    }

    /// Runs `f` in one transaction, committed when it returns `Ok`.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction().map_err(|source| self.error(source))?;
        let value = f(&tx).map_err(|source| self.error(source))?;
        tx.commit().map_err(|source| self.error(source))?;
        Ok(value)
    }

    fn error(&self, source: rusqlite::Error) -> StateError {
        StateError {
            path: self.path.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_survive_a_reopen_and_a_failed_transaction_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("shoal-agent-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.db");
        let state = State::open(&path).unwrap();
        state
            .ensure("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);")
            .unwrap();
        state
            .with(|c| c.execute("INSERT INTO t VALUES ('a', 1)", []))
            .unwrap();
        let failed = state.transaction(|tx| {
            tx.execute("INSERT INTO t VALUES ('b', 2)", [])?;
            tx.execute("INSERT INTO t VALUES ('a', 3)", []) // duplicate key
        });
        let e = failed.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("agent state {}: ", path.display())),
            "{e}"
        );
        drop(state);

        let state = State::open(&path).unwrap();
        state
            .ensure("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);")
            .unwrap();
        let rows: Vec<(String, i64)> = state
            .with(|c| {
                let mut stmt = c.prepare("SELECT k, v FROM t ORDER BY k")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .unwrap();
        assert_eq!(rows, [("a".to_owned(), 1)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
