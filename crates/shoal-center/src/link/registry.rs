//! The agents' records in the store: `agents/<id>` → JSON of [`Record`] (an [`AgentInfo`]
//! without its online state, which lives in memory). Updates are compare-and-swap on the
//! record's revision, so a revocation is never lost under a concurrent heartbeat.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_api::agent::AppStatus;
use shoal_api::fleet::{AgentInfo, AgentReport};
use shoal_store::{Kv, Revision, StoreError};

const PREFIX: &str = "agents/";
/// Tries of a compare-and-swap that keeps finding the record changed.
const CAS_TRIES: usize = 8;

/// One agent as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: String,
    pub hostname: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub revoked: bool,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub version: String,
    pub apps: Vec<AppStatus>,
    /// The join token it enrolled with.
    pub token_id: String,
    pub enrolled_at: DateTime<Utc>,
}

impl Record {
    /// As the API shows it, with the live link's heartbeat and report when it is online.
    pub fn info(self, live: Option<(DateTime<Utc>, &AgentReport)>) -> AgentInfo {
        let (last_heartbeat, hostname, labels, version, apps) = match live {
            Some((at, report)) => (
                Some(at),
                report.hostname.clone(),
                report.labels.clone(),
                report.version.clone(),
                report.apps.clone(),
            ),
            None => (
                self.last_heartbeat,
                self.hostname,
                self.labels,
                self.version,
                self.apps,
            ),
        };
        AgentInfo {
            id: self.id,
            hostname,
            namespace: self.namespace,
            labels,
            online: live.is_some(),
            revoked: self.revoked,
            last_heartbeat,
            version,
            apps,
        }
    }

    /// Takes what a report says.
    pub fn apply(&mut self, report: &AgentReport, at: DateTime<Utc>) {
        self.hostname.clone_from(&report.hostname);
        self.labels.clone_from(&report.labels);
        self.version.clone_from(&report.version);
        self.apps.clone_from(&report.apps);
        self.last_heartbeat = Some(at);
    }
}

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

fn decode(key: &str, value: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Backend {
        doing: format!("reading the agent record {key}"),
        source: Box::new(e),
    })
}

fn encode(record: &Record) -> Bytes {
    Bytes::from(serde_json::to_vec(record).expect("a record always serializes"))
}

pub(crate) async fn load_all(kv: &dyn Kv) -> Result<Vec<Record>, StoreError> {
    kv.list(PREFIX)
        .await?
        .iter()
        .map(|e| decode(&e.key, &e.value))
        .collect()
}

pub(crate) async fn load(kv: &dyn Kv, id: &str) -> Result<Option<(Record, Revision)>, StoreError> {
    let key = key(id);
    match kv.get(&key).await? {
        Some(entry) => Ok(Some((decode(&key, &entry.value)?, entry.revision))),
        None => Ok(None),
    }
}

pub(crate) async fn create(kv: &dyn Kv, record: &Record) -> Result<(), StoreError> {
    kv.create(&key(&record.id), encode(record)).await.map(drop)
}

/// Changes agent `id`'s record with `change`; the record written, `None` when there is none.
pub(crate) async fn update(
    kv: &dyn Kv,
    id: &str,
    change: impl Fn(&mut Record),
) -> Result<Option<Record>, StoreError> {
    let mut tries = 0;
    loop {
        let Some((mut record, revision)) = load(kv, id).await? else {
            return Ok(None);
        };
        change(&mut record);
        match kv.update(&key(id), encode(&record), revision).await {
            Ok(_) => return Ok(Some(record)),
            Err(StoreError::Conflict { .. }) if tries < CAS_TRIES => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

pub(crate) async fn set_revoked(kv: &dyn Kv, id: &str) -> Result<bool, StoreError> {
    Ok(update(kv, id, |r| r.revoked = true).await?.is_some())
}
