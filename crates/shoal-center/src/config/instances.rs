//! instances.rs: what each instance (an agent's app) holds of a configuration, from the
//! agent's reports and its `config.applied` answers, kept in memory ([`Held`]) and persisted
//! under `config-instances/<ns>/<name>/<agent>` in batches, so that `config status` says the
//! same after a center restart; and the state an instance is in against the version it
//! should run.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use shoal_api::center::InstanceState;
use shoal_api::config::{ConfigVersion, Delivery};
use shoal_store::{Kv, StoreError};

const PREFIX: &str = "config-instances/";

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
            delivery: bounded(delivery),
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

/// The longest rejection reason kept; an agent's longer one is cut (on a character boundary)
/// and marked, so one agent cannot fill the store or the status answers with its reasons.
pub(crate) const MAX_REASON: usize = 4096;

/// `delivery` with its reason cut to [`MAX_REASON`] bytes.
fn bounded(delivery: &Delivery) -> Delivery {
    match delivery {
        Delivery::Rejected { reason } if reason.len() > MAX_REASON => {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            Delivery::Rejected {
                reason: format!("{} [cut at {MAX_REASON} bytes]", &reason[..end]),
            }
        }
        other => other.clone(),
    }
}

/// A configuration by (namespace, name).
pub(crate) type ConfigKey = (String, String);

/// Every instance's copy of every configuration, as this center last heard it, and which of
/// them changed since they were last written to the store.
#[derive(Debug, Default)]
pub(crate) struct Held {
    by_config: HashMap<ConfigKey, HashMap<String, Instance>>,
    /// Changed instances not yet written: (configuration, agent).
    dirty: HashSet<(ConfigKey, String)>,
}

/// Changed instances taken out of [`Held`] to be written, each as its store key and value.
pub(crate) struct Batch(Vec<((ConfigKey, String), String, Bytes)>);

impl Held {
    /// Every instance the store holds.
    pub async fn load(kv: &dyn Kv) -> Result<Held, StoreError> {
        let mut held = Held::default();
        for entry in kv.list(PREFIX).await? {
            let mut parts = entry.key[PREFIX.len()..].splitn(3, '/');
            let (Some(namespace), Some(name), Some(agent)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let instance = decode(&entry.key, &entry.value)?;
            held.by_config
                .entry((namespace.to_owned(), name.to_owned()))
                .or_default()
                .insert(agent.to_owned(), instance);
        }
        Ok(held)
    }

    /// The instances of one configuration, by agent id.
    pub fn of(&self, config: &ConfigKey) -> Option<&HashMap<String, Instance>> {
        self.by_config.get(config)
    }

    /// Records that `agent`'s app holds `version` of `config` at `delivery`; whether that
    /// changed anything (a change is written by the next [`Held::take_dirty`]).
    pub fn record(
        &mut self,
        config: &ConfigKey,
        agent: &str,
        version: ConfigVersion,
        delivery: &Delivery,
    ) -> bool {
        let instances = self.by_config.entry(config.clone()).or_default();
        let old = instances.get(agent);
        let new = Instance::after(old, version, delivery);
        if old == Some(&new) {
            return false;
        }
        instances.insert(agent.to_owned(), new);
        self.dirty.insert((config.clone(), agent.to_owned()));
        true
    }

    /// The changed instances as they stand now, no longer marked changed.
    pub fn take_dirty(&mut self) -> Batch {
        let dirty = std::mem::take(&mut self.dirty);
        let mut batch = Vec::with_capacity(dirty.len());
        for slot in dirty {
            let ((namespace, name), agent) = &slot;
            let Some(instance) = self.by_config.get(&slot.0).and_then(|i| i.get(agent)) else {
                continue;
            };
            let value = Bytes::from(serde_json::to_vec(instance).expect("an instance serializes"));
            let key = key(namespace, name, agent);
            batch.push((slot, key, value));
        }
        Batch(batch)
    }

    /// Marks `slots` changed again (their write failed).
    pub fn redirty(&mut self, slots: impl IntoIterator<Item = (ConfigKey, String)>) {
        self.dirty.extend(slots);
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Writes every instance at once (the store commits writes waiting together in one
    /// transaction); the slots whose write failed, with the first error.
    pub async fn write(self, kv: &dyn Kv) -> (Vec<(ConfigKey, String)>, Option<StoreError>) {
        let writes = self
            .0
            .iter()
            .map(|(_, key, value)| kv.put(key, value.clone()));
        let results = join_all(writes).await;
        let mut failed = Vec::new();
        let mut first = None;
        for ((slot, _, _), result) in self.0.into_iter().zip(results) {
            if let Err(error) = result {
                failed.push(slot);
                first.get_or_insert(error);
            }
        }
        (failed, first)
    }
}

fn key(namespace: &str, name: &str, agent: &str) -> String {
    format!("{PREFIX}{namespace}/{name}/{agent}")
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
    fn a_long_reason_is_cut_on_a_character_boundary() {
        let long = format!("x{}", "é".repeat(MAX_REASON));
        let kept = Instance::after(None, 1, &Delivery::Rejected { reason: long });
        let Delivery::Rejected { reason } = kept.delivery else {
            panic!("{kept:?}");
        };
        assert!(reason.len() <= MAX_REASON + 32, "{}", reason.len());
        assert!(reason.ends_with(&format!(" [cut at {MAX_REASON} bytes]")));
        let short = Instance::after(None, 1, &rejected());
        assert_eq!(short.delivery, rejected());
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
