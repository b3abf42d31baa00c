//! The read connections: a small pool, each used by one blocking task at a time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::{blocking, locked, schema};
use crate::{Result, StoreError};

/// Idle read connections kept; more are opened under load and closed after use.
const KEEP_IDLE: usize = 4;

#[derive(Debug)]
pub(super) struct Readers {
    pub db: PathBuf,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl Readers {
    pub fn new(db: PathBuf) -> Readers {
        Readers {
            db,
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `f` on a read connection in `spawn_blocking`.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.check_open()?;
        let readers = Arc::clone(self);
        blocking(move || {
            let idle = locked(&readers.idle).pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => schema::open_reader(&readers.db)?,
            };
            let result = f(&mut conn);
            let mut idle = locked(&readers.idle);
            if idle.len() < KEEP_IDLE && readers.check_open().is_ok() {
                idle.push(conn);
            }
            result
        })
        .await
    }

    /// Closes the idle connections; later reads answer `Closed`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        locked(&self.idle).clear();
    }

    /// `Closed` once the store is closed.
    pub fn check_open(&self) -> Result<()> {
        match self.closed.load(Ordering::Acquire) {
            true => Err(StoreError::Closed),
            false => Ok(()),
        }
    }
}
