//! audit.rs: the append-only audit log of every mutating request and command, on the store's
//! `Log` named `audit`: time, token id, role, action, targets, outcome.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shoal_api::center::{AuditEntry, Role};
use shoal_store::{From, Log, StoreError};

use crate::tokens::Caller;

const LOG: &str = "audit";

/// The entry as stored; `seq` is the log's.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    time: chrono::DateTime<Utc>,
    token: String,
    role: Option<Role>,
    action: String,
    targets: Vec<String>,
    outcome: String,
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

    /// Writes one entry; `outcome` is `ok` or the error's text.
    pub async fn record(
        &self,
        by: &Caller,
        action: &str,
        targets: Vec<String>,
        outcome: Result<(), String>,
    ) -> Result<u64, StoreError> {
        let stored = Stored {
            time: Utc::now(),
            token: by.token.clone(),
            role: Some(by.role),
            action: action.to_owned(),
            targets,
            outcome: outcome.err().unwrap_or_else(|| "ok".into()),
        };
        let data = serde_json::to_vec(&stored).expect("an audit entry serializes");
        Ok(self.log.append(LOG, None, Bytes::from(data)).await?.seq)
    }

    /// Up to `limit` entries from sequence `from`, oldest first.
    pub async fn read(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let records = self.log.read(LOG, From::Seq(from), limit).await?;
        Ok(records
            .into_iter()
            .map(
                |record| match serde_json::from_slice::<Stored>(&record.data) {
                    Ok(s) => AuditEntry {
                        seq: record.seq,
                        time: s.time,
                        token: s.token,
                        role: s.role,
                        action: s.action,
                        targets: s.targets,
                        outcome: s.outcome,
                    },
                    Err(e) => AuditEntry {
                        seq: record.seq,
                        time: record.time.into(),
                        token: "-".into(),
                        role: None,
                        action: "unreadable".into(),
                        targets: Vec::new(),
                        outcome: format!("the stored entry is unreadable: {e}"),
                    },
                },
            )
            .collect())
    }

    /// The newest `limit` entries, oldest first.
    pub async fn tail(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let last = self.log.last(LOG).await?;
        let from = last.saturating_sub(limit as u64).saturating_add(1).max(1);
        self.read(from, limit).await
    }
}
