//! Central configuration on the link: what the center sends an agent when a configuration's
//! release reaches it (`config.changed`), what the agent answers once the app took it or
//! refused it (`config.applied`), and what every `hello` and `heartbeat` reports of the
//! configurations an agent holds, so that a push lost on the way is repaired within one
//! heartbeat.
//!
//! A configuration is named after the app it configures: configuration `NAME` of a namespace
//! reaches app `NAME` on the agents of that namespace. Its versions are immutable and numbered
//! from 1 within the name; a version's content is text (TOML for a service built with the
//! SDK, any UTF-8 file for another program), at most [`MAX_CONFIG_BYTES`].

use serde::{Deserialize, Serialize};

/// A configuration's version number: 1, 2, 3, ... within one name and namespace.
pub type ConfigVersion = u64;

/// The largest content a configuration version may have.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// The link's configuration methods (see [`crate::fleet::methods`] for the others).
pub mod methods {
    /// Center → agent notification: [`super::ConfigChanged`], the version now in force for
    /// one app of that agent. Not answered: the agent's next report says what it holds.
    pub const CONFIG_CHANGED: &str = "config.changed";
    /// Agent → center notification: [`super::ConfigApplied`], how the app took a version.
    pub const CONFIG_APPLIED: &str = "config.applied";
}

/// `config.changed`: one version of configuration `name` for app `name` on this agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChanged {
    pub name: String,
    pub version: ConfigVersion,
    /// sha256 of `data`, lowercase hex: the agent applies nothing that does not match, and
    /// nothing empty.
    pub sha256: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Where an agent's copy of one configuration stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Delivery {
    /// Received and handed to the app, which has not answered yet (or is not running).
    Pending,
    /// The app runs with it: a service built with the SDK checked and swapped it in; another
    /// program was signalled or restarted and still runs, healthy, afterwards.
    Applied,
    /// The app refused it and runs on with the configuration it had; `reason` is the app's.
    Rejected { reason: String },
}

/// `config.applied`: how app `name` took `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigApplied {
    pub name: String,
    pub version: ConfigVersion,
    #[serde(flatten)]
    pub delivery: Delivery,
}

/// One configuration an agent holds, in every `hello` and `heartbeat`: the newest version it
/// received for app `name` and where that version stands. The center sends `config.changed`
/// again to an agent whose report differs from the version it should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigHeld {
    pub name: String,
    pub version: ConfigVersion,
    pub sha256: String,
    #[serde(flatten)]
    pub delivery: Delivery,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_reads_as_a_state_word_with_its_reason_beside_it() {
        let applied = ConfigApplied {
            name: "shop".into(),
            version: 3,
            delivery: Delivery::Rejected {
                reason: "rpc.listen: not an address".into(),
            },
        };
        let json = serde_json::to_value(&applied).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "shop", "version": 3, "state": "rejected",
                "reason": "rpc.listen: not an address"
            })
        );
        let wire = rmp_serde::to_vec_named(&applied).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<ConfigApplied>(&wire).unwrap(),
            applied
        );
        let held: ConfigHeld = serde_json::from_value(serde_json::json!({
            "name": "shop", "version": 4, "sha256": "ab", "state": "pending"
        }))
        .unwrap();
        assert_eq!(held.delivery, Delivery::Pending);
    }
}
