//! instances.rs: what each instance (an agent's app) holds of a configuration, from the
//! agent's reports and its `config.applied` answers, under `config-instances/<ns>/<name>/<agent>`,
//! so that `config status` says the same after a center restart; and the state an instance is
//! in against the version it should run.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_api::center::InstanceState;
use shoal_api::config::{ConfigVersion, Delivery};
use shoal_store::{Kv, StoreError};

const PREFIX: &str = "config-instances/";
/// Tries of a compare-and-swap on one instance (only its own agent's link writes it).
const CAS_TRIES: usize = 8;

/// One instance's copy of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Instance {
    /// The newest version it received.
    pub version: ConfigVersion,
    pub delivery: Delivery,
    /// The last version its app applied.
    pub applied: Option<ConfigVersion>,
}

impl Instance {
    /// `old` after the agent said `version` stands at `delivery`. A pending report of a
    /// version already answered (a report sent before the answer) changes nothing.
    fn after(old: Option<&Instance>, version: ConfigVersion, delivery: &Delivery) -> Instance {
        if let Some(old) = old {
            if old.version == version
                && *delivery == Delivery::Pending
                && old.delivery != Delivery::Pending
            {
                return old.clone();
            }
        }
        let applied = match delivery {
            Delivery::Applied => Some(version),
            _ => old.and_then(|o| o.applied),
        };
        Instance {
            version,
            delivery: delivery.clone(),
            applied,
        }
    }

    /// Where this instance stands against `desired`, its agent online.
    pub fn state(this: Option<&Instance>, desired: ConfigVersion) -> InstanceState {
        match this {
            Some(i) if i.version == desired => match &i.delivery {
                Delivery::Applied => InstanceState::Applied,
                Delivery::Pending => InstanceState::Pending,
                Delivery::Rejected { reason } => InstanceState::Rejected {
                    reason: reason.clone(),
                },
            },
            _ => InstanceState::Pending,
        }
    }
}

fn key(namespace: &str, name: &str, agent: &str) -> String {
    format!("{PREFIX}{namespace}/{name}/{agent}")
}

/// Every instance of `namespace`/`name`, by agent id.
pub(crate) async fn load(
    kv: &dyn Kv,
    namespace: &str,
    name: &str,
) -> Result<Vec<(String, Instance)>, StoreError> {
    let prefix = format!("{PREFIX}{namespace}/{name}/");
    let mut all = Vec::new();
    for entry in kv.list(&prefix).await? {
        let agent = entry.key[prefix.len()..].to_owned();
        all.push((agent, decode(&entry.key, &entry.value)?));
    }
    Ok(all)
}

/// Records that `agent`'s app `name` holds `version` at `delivery`; writes only a change.
pub(crate) async fn record(
    kv: &dyn Kv,
    namespace: &str,
    name: &str,
    agent: &str,
    version: ConfigVersion,
    delivery: &Delivery,
) -> Result<(), StoreError> {
    let key = key(namespace, name, agent);
    let mut tries = 0;
    loop {
        let entry = kv.get(&key).await?;
        let old = match &entry {
            Some(e) => Some(decode(&key, &e.value)?),
            None => None,
        };
        let new = Instance::after(old.as_ref(), version, delivery);
        if old.as_ref() == Some(&new) {
            return Ok(());
        }
        let value = Bytes::from(serde_json::to_vec(&new).expect("an instance serializes"));
        let written = match &entry {
            Some(e) => kv.update(&key, value, e.revision).await,
            None => kv.create(&key, value).await,
        };
        match written {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) if tries < CAS_TRIES => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn decode(key: &str, value: &[u8]) -> Result<Instance, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Backend {
        doing: format!("reading the configuration instance {key}"),
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected() -> Delivery {
        Delivery::Rejected {
            reason: "bad".into(),
        }
    }

    #[test]
    fn a_late_pending_report_does_not_undo_an_answer() {
        let applied = Instance::after(None, 3, &Delivery::Applied);
        assert_eq!(applied.applied, Some(3));
        assert_eq!(
            Instance::after(Some(&applied), 3, &Delivery::Pending),
            applied
        );
        let next = Instance::after(Some(&applied), 4, &Delivery::Pending);
        assert_eq!((next.version, next.applied), (4, Some(3)));
        let refused = Instance::after(Some(&next), 4, &rejected());
        assert_eq!(refused.applied, Some(3));
        assert_eq!(
            Instance::state(Some(&refused), 4),
            InstanceState::Rejected {
                reason: "bad".into()
            }
        );
        assert_eq!(Instance::state(Some(&refused), 5), InstanceState::Pending);
        assert_eq!(Instance::state(None, 1), InstanceState::Pending);
    }
}
