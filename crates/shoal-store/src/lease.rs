//! `Lease` on any `Kv`, written once for every backend: a lease is one key whose value holds
//! the fencing token, the holder and the expiry, changed only by compare-and-swap on the
//! key's revision.
//!
//! The token is a counter bumped at every new holder and never reset: releasing keeps the
//! key (marked released), so the next holder's token is still larger. A holder that acquires
//! again while its grant runs keeps its token. Expiry is wall-clock time, as every center
//! sharing the store reads it; holders should keep their clocks in sync and renew well
//! before `until`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Entry, Grant, Kv, Lease, Result, StoreError};

/// Leases as keys under `prefix` of a `Kv`.
#[derive(Debug, Clone)]
pub struct KvLease {
    kv: Arc<dyn Kv>,
    prefix: String,
}

impl KvLease {
    /// Leases stored as `<prefix><key>` in `kv`.
    pub fn new(kv: Arc<dyn Kv>, prefix: impl Into<String>) -> KvLease {
        KvLease {
            kv,
            prefix: prefix.into(),
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The lease's state and the revision it was read at.
    async fn read(&self, key: &str) -> Result<Option<(State, u64)>> {
        let Some(entry) = self.kv.get(&self.path(key)).await? else {
            return Ok(None);
        };
        Ok(Some((State::decode(&entry)?, entry.revision)))
    }

    /// Writes `state` if the lease is still at `revision` (`None`: absent); `false` on a
    /// conflict.
    async fn swap(&self, key: &str, state: &State, revision: Option<u64>) -> Result<bool> {
        let path = self.path(key);
        let written = match revision {
            None => self.kv.create(&path, state.encode()).await,
            Some(revision) => self.kv.update(&path, state.encode(), revision).await,
        };
        match written {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Lease for KvLease {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Option<Grant>> {
        loop {
            let now = SystemTime::now();
            let current = self.read(key).await?;
            let token = match &current {
                None => 1,
                Some((state, _)) if !state.live(now) => state.token + 1,
                Some((state, _)) if state.holder == holder => state.token,
                Some(_) => return Ok(None),
            };
            let state = State::held(token, holder, now + ttl);
            if self.swap(key, &state, current.map(|(_, rev)| rev)).await? {
                return Ok(Some(state.grant(key)));
            }
        }
    }

    async fn renew(&self, grant: &Grant, ttl: Duration) -> Result<Grant> {
        loop {
            let current = self.read(&grant.key).await?;
            let revision = match current {
                Some((state, rev)) if state.held && state.token == grant.token => rev,
                _ => return Err(fenced(grant)),
            };
            let state = State::held(grant.token, &grant.holder, SystemTime::now() + ttl);
            if self.swap(&grant.key, &state, Some(revision)).await? {
                return Ok(state.grant(&grant.key));
            }
        }
    }

    async fn release(&self, grant: &Grant) -> Result<()> {
        loop {
            let (state, revision) = match self.read(&grant.key).await? {
                Some((state, rev)) if state.token == grant.token => (state, rev),
                _ => return Err(fenced(grant)),
            };
            if !state.held {
                return Ok(());
            }
            let released = State {
                held: false,
                until: UNIX_EPOCH,
                ..state
            };
            if self.swap(&grant.key, &released, Some(revision)).await? {
                return Ok(());
            }
        }
    }

    async fn check(&self, key: &str, token: u64) -> Result<bool> {
        let current = self.read(key).await?;
        Ok(current.is_some_and(|(state, _)| state.token == token && state.live(SystemTime::now())))
    }
}

fn fenced(grant: &Grant) -> StoreError {
    StoreError::Fenced {
        key: grant.key.clone(),
        token: grant.token,
    }
}

/// A lease's value: `<token> <until, ms since the epoch> <held|released> <holder>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    token: u64,
    until: SystemTime,
    held: bool,
    holder: String,
}

impl State {
    fn held(token: u64, holder: &str, until: SystemTime) -> State {
        // Whole milliseconds, as stored, so the grant equals what a later read sees.
        let ms = until
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        State {
            token,
            until: UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)),
            held: true,
            holder: holder.to_string(),
        }
    }

    fn live(&self, now: SystemTime) -> bool {
        self.held && self.until > now
    }

    fn grant(&self, key: &str) -> Grant {
        Grant {
            key: key.to_string(),
            holder: self.holder.clone(),
            token: self.token,
            until: self.until,
        }
    }

    fn encode(&self) -> Bytes {
        let ms = self
            .until
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let held = if self.held { "held" } else { "released" };
        Bytes::from(format!("{} {ms} {held} {}", self.token, self.holder))
    }

    fn decode(entry: &Entry) -> Result<State> {
        let unreadable = || {
            StoreError::Backend {
            doing: format!("reading lease {}", entry.key),
            source: "its value is not `<token> <until ms> held|released <holder>`: delete the key to reset the lease".into(),
        }
        };
        let text = std::str::from_utf8(&entry.value).map_err(|_| unreadable())?;
        let mut parts = text.splitn(4, ' ');
        let mut next = || parts.next().ok_or_else(unreadable);
        let token = next()?.parse().map_err(|_| unreadable())?;
        let ms: u64 = next()?.parse().map_err(|_| unreadable())?;
        let held = match next()? {
            "held" => true,
            "released" => false,
            _ => return Err(unreadable()),
        };
        Ok(State {
            token,
            until: UNIX_EPOCH + Duration::from_millis(ms),
            held,
            holder: next()?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_refuses_garbage() {
        let state = State::held(7, "center a", UNIX_EPOCH + Duration::from_millis(1234));
        let entry = |value: Bytes| Entry {
            key: "leases/x".into(),
            value,
            revision: 1,
        };
        assert_eq!(State::decode(&entry(state.encode())).unwrap(), state);
        for bad in ["", "7", "x 1 held a", "7 1 maybe a", "7 1 held"] {
            assert!(State::decode(&entry(Bytes::from(bad))).is_err(), "{bad:?}");
        }
    }
}
