//! audit.rs: the append-only audit log of every mutating request and command, on the store's
//! `Log` named `audit`: time, token id, role, the token's namespace, action, targets, outcome.
//! A token limited to a namespace reads only the entries of tokens of that namespace.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shoal_api::center::{AuditEntry, Role};
use shoal_store::{From, Log, StoreError};

use crate::tokens::Caller;

const LOG: &str = "audit";
/// Entries read at a time when the newest of one namespace are looked for.
const PAGE: u64 = 512;

/// The entry as stored; `seq` is the log's.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    time: chrono::DateTime<Utc>,
    token: String,
    role: Option<Role>,
    #[serde(default)]
    namespace: Option<String>,
    action: String,
    targets: Vec<String>,
    outcome: String,
}

/// Who an entry says acted: a request's token, the submitter of a command the center ends by
/// itself, or a join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub token: String,
    pub role: Option<Role>,
    pub namespace: Option<String>,
}

impl std::convert::From<&Caller> for Actor {
    fn from(caller: &Caller) -> Actor {
        Actor {
            token: caller.token.clone(),
            role: Some(caller.role),
            namespace: caller.namespace.clone(),
        }
    }
}

/// What became of what an entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// A command stored with its frozen targets; a second entry tells how it ended.
    Submitted,
    /// How a command ended, as a line (`ok`, the count of each status, `interrupted: ...`).
    Ended(String),
    /// Refused for the token: a role too low or another namespace (403).
    Denied(String),
    /// Refused or failed for any other reason: the error.
    Failed(String),
}

impl Outcome {
    /// `Ok` or the error's text.
    pub fn of<T, E: std::fmt::Display>(result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Submitted => f.write_str("submitted"),
            Outcome::Ended(line) | Outcome::Failed(line) => f.write_str(line),
            Outcome::Denied(why) => write!(f, "denied: {why}"),
        }
    }
}

/// The audit log.
#[derive(Debug, Clone)]
pub struct Audit {
    log: Arc<dyn Log>,
}

impl Audit {
    pub fn new(log: Arc<dyn Log>) -> Audit {
        Audit { log }
    }

    /// Writes one entry, now.
    pub async fn record(
        &self,
        by: impl Into<Actor>,
        action: &str,
        targets: Vec<String>,
        outcome: Outcome,
    ) -> Result<u64, StoreError> {
        let by = by.into();
        let stored = Stored {
            time: Utc::now(),
            token: by.token,
            role: by.role,
            namespace: by.namespace,
            action: action.to_owned(),
            targets,
            outcome: outcome.to_string(),
        };
        let data = serde_json::to_vec(&stored).expect("an audit entry serializes");
        Ok(self.log.append(LOG, None, Bytes::from(data)).await?.seq)
    }

    /// Up to `limit` entries from sequence `from`, oldest first.
    pub async fn read(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let records = self.log.read(LOG, From::Seq(from), limit).await?;
        Ok(records.into_iter().map(entry).collect())
    }

    /// The newest `limit` entries `by` may read, oldest first: every entry for a token of
    /// every namespace, else those of tokens of its own namespace.
    pub async fn tail(&self, by: &Caller, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let last = self.log.last(LOG).await?;
        let Some(own) = &by.namespace else {
            let from = last.saturating_sub(limit as u64).saturating_add(1).max(1);
            return self.read(from, limit).await;
        };
        // Pages backwards from the end until `limit` of the namespace's are found.
        let mut found: Vec<AuditEntry> = Vec::new();
        let mut end = last;
        while end > 0 && found.len() < limit {
            let start = end.saturating_sub(PAGE - 1).max(1);
            let page = self.read(start, (end - start + 1) as usize).await?;
            let mine = page
                .into_iter()
                .filter(|e| e.namespace.as_deref() == Some(own.as_str()));
            let mut older: Vec<AuditEntry> = mine.collect();
            older.append(&mut found);
            found = older;
            end = start - 1;
        }
        let skip = found.len().saturating_sub(limit);
        Ok(found.split_off(skip))
    }
}

fn entry(record: shoal_store::Record) -> AuditEntry {
    match serde_json::from_slice::<Stored>(&record.data) {
        Ok(s) => AuditEntry {
            seq: record.seq,
            time: s.time,
            token: s.token,
            role: s.role,
            namespace: s.namespace,
            action: s.action,
            targets: s.targets,
            outcome: s.outcome,
        },
        Err(e) => AuditEntry {
            seq: record.seq,
            time: record.time.into(),
            token: "-".into(),
            role: None,
            namespace: None,
            action: "unreadable".into(),
            targets: Vec::new(),
            outcome: format!("the stored entry is unreadable: {e}"),
        },
    }
}
