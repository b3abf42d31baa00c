//! release.rs: one configuration as the store keeps it, `configs/<ns>/<name>`: the metadata of
//! its immutable versions and the release pointer (stable version, optional gray release,
//! earlier stable versions), changed only by compare-and-swap on that one key. Which version
//! an agent should run follows from the pointer alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use shoal_api::center::{ConfigRelease, ConfigVersionInfo, GrayRelease, GrayTarget};
use shoal_api::config::ConfigVersion;

/// Earlier stable versions a pointer remembers for `rollback` without `--to`.
const PREVIOUS_KEPT: usize = 64;

/// A configuration: its versions (version `n` at index `n - 1`) and its release pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub versions: Vec<ConfigVersionInfo>,
    pub stable: Option<ConfigVersion>,
    pub gray: Option<GrayRelease>,
    /// Stable versions before the current one, oldest first.
    pub previous: Vec<ConfigVersion>,
}

/// An agent as gray membership sees it.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub id: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

impl Record {
    pub fn version(&self, version: ConfigVersion) -> Option<&ConfigVersionInfo> {
        let index = usize::try_from(version.checked_sub(1)?).ok()?;
        self.versions.get(index)
    }

    pub fn latest(&self) -> ConfigVersion {
        self.versions.len() as ConfigVersion
    }

    /// The version `member` should run: the gray one if it is a member, else the stable one.
    pub fn desired(&self, name: &str, member: Member<'_>) -> Option<ConfigVersion> {
        match &self.gray {
            Some(gray) if is_member(&gray.target, name, gray.version, member) => Some(gray.version),
            _ => self.stable,
        }
    }

    /// Makes `version` the stable version, for everyone: the gray release ends.
    pub fn release_to_all(&mut self, version: ConfigVersion) {
        if let Some(old) = self.stable.filter(|&old| old != version) {
            self.previous.push(old);
            if self.previous.len() > PREVIOUS_KEPT {
                self.previous.remove(0);
            }
        }
        self.stable = Some(version);
        self.gray = None;
    }

    /// As the API shows the pointer at store revision `revision`.
    pub fn view(&self, namespace: &str, name: &str, revision: u64) -> ConfigRelease {
        ConfigRelease {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            stable: self.stable,
            gray: self.gray.clone(),
            latest: self.latest(),
            revision,
        }
    }
}

/// Whether `member` is in a gray release of `name` at `version` to `target`.
pub fn is_member(
    target: &GrayTarget,
    name: &str,
    version: ConfigVersion,
    member: Member<'_>,
) -> bool {
    match target {
        GrayTarget::Ids(ids) => ids.iter().any(|id| id == member.id),
        GrayTarget::Label { key, value } => member.labels.get(key) == Some(value),
        GrayTarget::Percent(percent) => {
            percent_slot(member.id, name, version) < u64::from(*percent) * 100
        }
    }
}

/// Where an agent falls, 0 to 9999, for a percentage release of `name` at `version`: the same
/// for every center and every percentage, so a larger share keeps every member of a smaller.
pub fn percent_slot(agent: &str, name: &str, version: ConfigVersion) -> u64 {
    let mut hash = Sha256::new();
    hash.update(agent.as_bytes());
    hash.update([0]);
    hash.update(name.as_bytes());
    hash.update([0]);
    hash.update(version.to_be_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % 10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member<'a>(id: &'a str, labels: &'a BTreeMap<String, String>) -> Member<'a> {
        Member { id, labels }
    }

    #[test]
    fn raising_the_percentage_never_drops_a_member() {
        let none = BTreeMap::new();
        let ids: Vec<String> = (0..2000).map(|n| format!("agent{n:05}")).collect();
        for version in [1, 17] {
            let mut had: Vec<bool> = vec![false; ids.len()];
            for percent in 1..=100u8 {
                let target = GrayTarget::Percent(percent);
                let mut count = 0;
                for (n, id) in ids.iter().enumerate() {
                    let now = is_member(&target, "shop", version, member(id, &none));
                    assert!(now || !had[n], "{id} dropped at {percent}%");
                    had[n] = now;
                    count += usize::from(now);
                }
                // Roughly the share asked for (2000 ids: a few points either way).
                let expected = ids.len() * usize::from(percent) / 100;
                assert!(count.abs_diff(expected) <= 100, "{count} at {percent}%");
            }
            assert!(had.iter().all(|&m| m), "100% takes everyone");
        }
    }

    #[test]
    fn gray_membership_by_ids_and_label() {
        let web: BTreeMap<String, String> = [("role".to_owned(), "web".to_owned())].into();
        let db: BTreeMap<String, String> = [("role".to_owned(), "db".to_owned())].into();
        let ids = GrayTarget::Ids(vec!["a".into(), "b".into()]);
        assert!(is_member(&ids, "n", 1, member("a", &db)));
        assert!(!is_member(&ids, "n", 1, member("c", &db)));
        let label = GrayTarget::Label {
            key: "role".into(),
            value: "web".into(),
        };
        assert!(is_member(&label, "n", 1, member("x", &web)));
        assert!(!is_member(&label, "n", 1, member("x", &db)));
    }

    #[test]
    fn desired_is_gray_for_members_and_stable_for_the_rest() {
        let none = BTreeMap::new();
        let record = Record {
            versions: Vec::new(),
            stable: Some(1),
            gray: Some(GrayRelease {
                version: 2,
                target: GrayTarget::Ids(vec!["a".into()]),
            }),
            previous: Vec::new(),
        };
        assert_eq!(record.desired("n", member("a", &none)), Some(2));
        assert_eq!(record.desired("n", member("b", &none)), Some(1));
    }
}
