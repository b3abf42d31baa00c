//! Central configuration, the domain: configuration `NAME` of namespace `NS` is kept as
//! immutable numbered versions (content in the store's `Blobs` by sha256, metadata and the
//! release pointer in one `Kv` record, `configs/<ns>/<name>`) and reaches app `NAME` on the
//! agents of `NS`. Every change of the pointer (push, promote, rollback) is a compare-and-swap
//! on that record, so racing changes leave one consistent release; a pointer that changed is
//! announced on [`Configs::subscribe`] for the link to deliver. What each instance holds is
//! kept beside it (`instances.rs`).
//!
//! The link's side goes through [`Configs::desired`], [`Configs::changed`] and
//! [`Configs::record`]; it answers every heartbeat from an in-memory copy of the records
//! (loaded once, replaced on each write this center makes), never from the store. What each
//! instance holds is kept in memory too: `record` and `status` never touch the store, and
//! [`Configs::persist`] writes the instances that changed, all together, at most every
//! [`FLUSH_EVERY`] (and [`Configs::flush`] once more when the center stops). What a crash
//! loses of the last window is reported again by each agent's `hello` (every report lists
//! what the agent holds), so status is repaired as the agents reconnect.

mod diff;
mod instances;
mod release;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use shoal_api::center::{
    ConfigContent, ConfigDiff, ConfigInstance, ConfigPush, ConfigPushed, ConfigRelease,
    ConfigStatus, ConfigVersionInfo, GrayRelease, GrayTarget,
};
use shoal_api::config::{ConfigChanged, ConfigVersion, Delivery, MAX_CONFIG_BYTES};
use shoal_api::fleet::AgentInfo;
use shoal_store::{Blobs, Digest, Kv, StoreError};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use release::{is_member, percent_slot, Member};

use self::instances::{Held, Instance};
use self::release::Record;
use crate::tokens::Caller;

/// The namespace of a request that names none (and of agents that joined without one).
pub const DEFAULT_NAMESPACE: &str = "default";
/// The longest message a version keeps.
pub const MAX_MESSAGE: usize = 4096;

const PREFIX: &str = "configs/";
/// Tries of a compare-and-swap on a pointer. A try fails only because another change
/// succeeded, so this many racers all get through.
const CAS_TRIES: usize = 100;
/// Release changes the link may fall behind on before it re-checks every agent.
const RELEASED_BACKLOG: usize = 1024;
/// How long [`Configs::persist`] gathers changed instances before it writes them: 1,000
/// acknowledgements of one push become a few store transactions instead of 1,000.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// What a configuration operation fails with; each names the configuration or version.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("the content is {size} bytes; a configuration is at most {MAX_CONFIG_BYTES} bytes")]
    TooLarge { size: usize },
    #[error("{0}")]
    NotFound(String),
    #[error("configuration {0} has no gray release to promote: push one with --gray")]
    NoGray(String),
    #[error("{0}")]
    NoRollback(String),
    #[error("configuration {0} kept changing while this change was tried; try again")]
    Busy(String),
    #[error("the configuration store: {0}")]
    Store(#[from] StoreError),
}

/// A release pointer that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub namespace: String,
    pub name: String,
}

/// A version an agent should hold of configuration `name` (for its app `name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub version: ConfigVersion,
    pub sha256: String,
}

/// The configurations, on the center's store. Clones share it.
#[derive(Debug, Clone)]
pub struct Configs {
    inner: Arc<Inner>,
}

/// Every record, by (namespace, name), with its store revision.
type Cache = HashMap<(String, String), (Arc<Record>, u64)>;

#[derive(Debug)]
struct Inner {
    kv: Arc<dyn Kv>,
    blobs: Arc<dyn Blobs>,
    cache: Mutex<Cache>,
    /// What each instance holds (loaded with the records).
    held: Mutex<Held>,
    /// Told when an instance changed, for [`Configs::persist`].
    dirtied: Notify,
    /// One flush at a time, so an older write never lands after a newer one.
    flushing: tokio::sync::Mutex<()>,
    loaded: tokio::sync::OnceCell<()>,
    released: broadcast::Sender<Released>,
}

impl Configs {
    pub fn new(kv: Arc<dyn Kv>, blobs: Arc<dyn Blobs>) -> Configs {
        Configs {
            inner: Arc::new(Inner {
                kv,
                blobs,
                cache: Mutex::new(HashMap::new()),
                held: Mutex::new(Held::default()),
                dirtied: Notify::new(),
                flushing: tokio::sync::Mutex::new(()),
                loaded: tokio::sync::OnceCell::new(),
                released: broadcast::channel(RELEASED_BACKLOG).0,
            }),
        }
    }

    /// Release changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Released> {
        self.inner.released.subscribe()
    }

    /// Stores `push.content` as the next version of `namespace`/`name`, by `by`, and releases
    /// it: to every instance, or to the gray target's. A push repeating what is released
    /// already (the stable content again, or the gray content again) makes no version: the
    /// gray content again with another target moves the gray release to that target.
    pub async fn push(
        &self,
        namespace: &str,
        name: &str,
        push: ConfigPush,
        by: &Caller,
    ) -> Result<ConfigPushed, ConfigError> {
        check_names(namespace, name)?;
        check_push(&push)?;
        let data = Bytes::from(push.content.into_bytes());
        let size = data.len() as u64;
        let sha256 = self.inner.blobs.put(data).await?.0;
        let message = push.message.unwrap_or_default();
        let gray = push.gray;
        let (version, record, revision) = self
            .change(namespace, name, |current| {
                let mut record = current.cloned().unwrap_or_default();
                if let Some(same) = repeated(&mut record, &sha256, gray.as_ref()) {
                    return Ok((record, same));
                }
                let info = ConfigVersionInfo {
                    name: name.to_owned(),
                    namespace: namespace.to_owned(),
                    version: record.latest() + 1,
                    sha256: sha256.clone(),
                    size,
                    message: message.clone(),
                    pushed_by: by.token.clone(),
                    pushed: Utc::now(),
                    rollback_of: None,
                };
                let version = info.version;
                record.versions.push(info);
                match &gray {
                    Some(target) => {
                        record.gray = Some(GrayRelease {
                            version,
                            target: target.clone(),
                        });
                    }
                    None => record.release_to_all(version),
                }
                Ok((record, version))
            })
            .await?;
        Ok(pushed(&record, namespace, name, version, revision))
    }

    /// Releases the gray version to every instance.
    pub async fn promote(&self, namespace: &str, name: &str) -> Result<ConfigRelease, ConfigError> {
        check_names(namespace, name)?;
        let ((), record, revision) = self
            .change(namespace, name, |current| {
                let mut record = existing(current, namespace, name)?.clone();
                let gray = record
                    .gray
                    .clone()
                    .ok_or_else(|| ConfigError::NoGray(format!("{namespace}/{name}")))?;
                record.release_to_all(gray.version);
                Ok((record, ()))
            })
            .await?;
        Ok(record.view(namespace, name, revision))
    }

    /// Publishes a new version with version `to`'s content (the stable version before the
    /// current one when `None`) and releases it to every instance.
    pub async fn rollback(
        &self,
        namespace: &str,
        name: &str,
        to: Option<ConfigVersion>,
        by: &Caller,
    ) -> Result<ConfigPushed, ConfigError> {
        check_names(namespace, name)?;
        let (version, record, revision) = self
            .change(namespace, name, |current| {
                let mut record = existing(current, namespace, name)?.clone();
                let target = rollback_target(&record, namespace, name, to)?;
                let mut info = record
                    .version(target)
                    .cloned()
                    .ok_or_else(|| no_version(namespace, name, target))?;
                info.version = record.latest() + 1;
                info.message = format!("rollback to version {target}");
                info.pushed_by.clone_from(&by.token);
                info.pushed = Utc::now();
                info.rollback_of = Some(target);
                let version = info.version;
                record.versions.push(info);
                record.release_to_all(version);
                Ok((record, version))
            })
            .await?;
        Ok(pushed(&record, namespace, name, version, revision))
    }

    /// The release pointer.
    pub async fn release(&self, namespace: &str, name: &str) -> Result<ConfigRelease, ConfigError> {
        let (record, revision) = self.read(namespace, name).await?;
        Ok(record.view(namespace, name, revision))
    }

    /// Every version, newest first.
    pub async fn versions(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<ConfigVersionInfo>, ConfigError> {
        let (record, _) = self.read(namespace, name).await?;
        Ok(record.versions.iter().rev().cloned().collect())
    }

    /// Version `version` with its content; the stable version (the newest before any
    /// release to all) when `None`.
    pub async fn show(
        &self,
        namespace: &str,
        name: &str,
        version: Option<ConfigVersion>,
    ) -> Result<ConfigContent, ConfigError> {
        let (record, _) = self.read(namespace, name).await?;
        let version = version.or(record.stable).unwrap_or(record.latest());
        let info = record
            .version(version)
            .cloned()
            .ok_or_else(|| no_version(namespace, name, version))?;
        let content = self.content(&info).await?;
        Ok(ConfigContent { info, content })
    }

    /// The unified diff from version `from` to version `to`.
    pub async fn diff(
        &self,
        namespace: &str,
        name: &str,
        from: ConfigVersion,
        to: ConfigVersion,
    ) -> Result<ConfigDiff, ConfigError> {
        let old = self.show(namespace, name, Some(from)).await?;
        let new = self.show(namespace, name, Some(to)).await?;
        let diff = diff::unified(
            &format!("{name} v{from}"),
            &old.content,
            &format!("{name} v{to}"),
            &new.content,
        );
        Ok(ConfigDiff {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            from,
            to,
            diff,
        })
    }

    /// Every instance the release reaches among `agents` (the registry): the agents of
    /// `namespace` running an app `name`, each with its desired and applied version and state.
    pub async fn status(
        &self,
        namespace: &str,
        name: &str,
        agents: &[AgentInfo],
    ) -> Result<ConfigStatus, ConfigError> {
        let (record, revision) = self.read(namespace, name).await?;
        self.load().await?;
        let config = (namespace.to_owned(), name.to_owned());
        let guard = self.inner.held.lock().unwrap();
        let held = guard.of(&config);
        let mut list = Vec::new();
        for agent in agents {
            if agent.namespace != namespace || !agent.apps.iter().any(|a| a.name == name) {
                continue;
            }
            let member = Member {
                id: &agent.id,
                labels: &agent.labels,
            };
            let Some(desired) = record.desired(name, member) else {
                continue;
            };
            let instance = held.and_then(|h| h.get(&agent.id));
            list.push(ConfigInstance {
                agent: agent.id.clone(),
                hostname: agent.hostname.clone(),
                desired,
                applied: instance.and_then(|i| i.applied),
                state: if agent.online {
                    Instance::state(instance, desired)
                } else {
                    shoal_api::center::InstanceState::Offline
                },
            });
        }
        drop(guard);
        list.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.agent.cmp(&b.agent)));
        Ok(ConfigStatus {
            release: record.view(namespace, name, revision),
            instances: list,
        })
    }

    /// What agent `member` of `namespace` should hold for each of `apps`: the apps that have a
    /// configuration released to it.
    pub async fn desired<'a>(
        &self,
        namespace: &str,
        member: Member<'_>,
        apps: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Wanted>, StoreError> {
        self.load().await?;
        let cache = self.inner.cache.lock().unwrap();
        let mut wanted = Vec::new();
        for app in apps {
            let Some((record, _)) = cache.get(&(namespace.to_owned(), app.to_owned())) else {
                continue;
            };
            let Some(version) = record.desired(app, member) else {
                continue;
            };
            if let Some(info) = record.version(version) {
                wanted.push(Wanted {
                    name: app.to_owned(),
                    version,
                    sha256: info.sha256.clone(),
                });
            }
        }
        Ok(wanted)
    }

    /// The `config.changed` that delivers `wanted` (content read from the store, checked
    /// against its sha256 there).
    pub async fn changed(&self, wanted: &Wanted) -> Result<Option<ConfigChanged>, StoreError> {
        let data = self.inner.blobs.get(&Digest(wanted.sha256.clone())).await?;
        Ok(data.map(|data| ConfigChanged {
            name: wanted.name.clone(),
            version: wanted.version,
            sha256: wanted.sha256.clone(),
            data: data.to_vec(),
        }))
    }

    /// Records that `agent` of `namespace` holds `version` of configuration `name` at
    /// `delivery` (from a report or a `config.applied`), in memory; [`Configs::persist`]
    /// writes it. Names this center has no configuration of are ignored.
    pub async fn record(
        &self,
        namespace: &str,
        agent: &str,
        name: &str,
        version: ConfigVersion,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        self.load().await?;
        let config = (namespace.to_owned(), name.to_owned());
        if !self.inner.cache.lock().unwrap().contains_key(&config) {
            return Ok(());
        }
        let changed = self
            .inner
            .held
            .lock()
            .unwrap()
            .record(&config, agent, version, delivery);
        if changed {
            self.inner.dirtied.notify_one();
        }
        Ok(())
    }

    /// Writes the instances that changed, gathered over [`FLUSH_EVERY`] after the first,
    /// until `shutdown`; whatever changes after that is written by [`Configs::flush`].
    pub async fn persist(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.inner.dirtied.notified() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(FLUSH_EVERY) => {}
            }
            if let Err(error) = self.flush().await {
                warn!(%error, "writing configuration instances (kept, tried again)");
            }
        }
    }

    /// Writes every instance that changed since the last write, in one batch. A write that
    /// fails stays marked changed, for the next flush.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let _one = self.inner.flushing.lock().await;
        let batch = self.inner.held.lock().unwrap().take_dirty();
        let written = batch.len();
        let (failed, error) = batch.write(self.inner.kv.as_ref()).await;
        match error {
            None => Ok(written),
            Some(error) => {
                self.inner.held.lock().unwrap().redirty(failed);
                self.inner.dirtied.notify_one();
                Err(error)
            }
        }
    }

    /// Reads the record from the store (and refreshes the copy the link answers from).
    async fn read(&self, namespace: &str, name: &str) -> Result<(Arc<Record>, u64), ConfigError> {
        check_names(namespace, name)?;
        let Some(entry) = self.inner.kv.get(&key(namespace, name)).await? else {
            return Err(ConfigError::NotFound(format!(
                "no configuration {name} in namespace {namespace}: push one with `shoal config push {name} FILE`"
            )));
        };
        let record = Arc::new(decode(&entry.key, &entry.value)?);
        self.remember(namespace, name, record.clone(), entry.revision);
        Ok((record, entry.revision))
    }

    /// Reads the record, lets `step` make the new one, and writes it at the revision read;
    /// tries again from the read when another change came first.
    async fn change<T>(
        &self,
        namespace: &str,
        name: &str,
        mut step: impl FnMut(Option<&Record>) -> Result<(Record, T), ConfigError>,
    ) -> Result<(T, Arc<Record>, u64), ConfigError> {
        let key = key(namespace, name);
        let kv = self.inner.kv.as_ref();
        for _ in 0..CAS_TRIES {
            let entry = kv.get(&key).await?;
            let current = match &entry {
                Some(e) => Some(decode(&key, &e.value)?),
                None => None,
            };
            let (record, answer) = step(current.as_ref())?;
            // Nothing changed (a repeated push): no write, no release.
            if current.as_ref() == Some(&record) {
                let revision = entry.map_or(0, |e| e.revision);
                return Ok((answer, Arc::new(record), revision));
            }
            let value = Bytes::from(serde_json::to_vec(&record).expect("a record serializes"));
            let written = match &entry {
                Some(e) => kv.update(&key, value, e.revision).await,
                None => kv.create(&key, value).await,
            };
            match written {
                Ok(revision) => {
                    let record = Arc::new(record);
                    self.remember(namespace, name, record.clone(), revision);
                    let _ = self.inner.released.send(Released {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    });
                    return Ok((answer, record, revision));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ConfigError::Busy(format!("{namespace}/{name}")))
    }

    /// Loads every record into the link's copy, once.
    async fn load(&self) -> Result<(), StoreError> {
        self.inner
            .loaded
            .get_or_try_init(|| async {
                for entry in self.inner.kv.list(PREFIX).await? {
                    let Some((namespace, name)) = entry.key[PREFIX.len()..].split_once('/') else {
                        continue;
                    };
                    let record = Arc::new(decode(&entry.key, &entry.value)?);
                    self.remember(namespace, name, record, entry.revision);
                }
                *self.inner.held.lock().unwrap() = Held::load(self.inner.kv.as_ref()).await?;
                Ok::<(), StoreError>(())
            })
            .await
            .map(drop)
    }

    /// Keeps `record` at `revision` unless a newer one is kept already.
    fn remember(&self, namespace: &str, name: &str, record: Arc<Record>, revision: u64) {
        let mut cache = self.inner.cache.lock().unwrap();
        let slot = cache
            .entry((namespace.to_owned(), name.to_owned()))
            .or_insert_with(|| (record.clone(), 0));
        if slot.1 < revision {
            *slot = (record, revision);
        }
    }

    async fn content(&self, info: &ConfigVersionInfo) -> Result<String, ConfigError> {
        let data = self
            .inner
            .blobs
            .get(&Digest(info.sha256.clone()))
            .await?
            .ok_or_else(|| {
                ConfigError::NotFound(format!(
                    "the content of {} version {} ({}) is missing from the store",
                    info.name, info.version, info.sha256
                ))
            })?;
        String::from_utf8(data.to_vec()).map_err(|_| {
            ConfigError::Invalid(format!(
                "the content of {} version {} is not UTF-8",
                info.name, info.version
            ))
        })
    }
}

/// When a push repeats what is released already: the version it is, after moving the gray
/// release to the push's target when that is what changed.
fn repeated(record: &mut Record, sha256: &str, gray: Option<&GrayTarget>) -> Option<ConfigVersion> {
    let same = |v: ConfigVersion| record.version(v).is_some_and(|i| i.sha256 == sha256);
    match gray {
        None if record.gray.is_none() => record.stable.filter(|&v| same(v)),
        None => None,
        Some(target) => {
            let version = record
                .gray
                .as_ref()
                .map(|g| g.version)
                .filter(|&v| same(v))?;
            record.gray = Some(GrayRelease {
                version,
                target: target.clone(),
            });
            Some(version)
        }
    }
}

fn rollback_target(
    record: &Record,
    namespace: &str,
    name: &str,
    to: Option<ConfigVersion>,
) -> Result<ConfigVersion, ConfigError> {
    if let Some(to) = to {
        return record
            .version(to)
            .map(|_| to)
            .ok_or_else(|| no_version(namespace, name, to));
    }
    record.previous.last().copied().ok_or_else(|| {
        ConfigError::NoRollback(format!(
            "configuration {namespace}/{name} has no earlier stable version to roll back to: name one with --to V"
        ))
    })
}

fn pushed(
    record: &Record,
    namespace: &str,
    name: &str,
    version: ConfigVersion,
    revision: u64,
) -> ConfigPushed {
    ConfigPushed {
        version: record
            .version(version)
            .cloned()
            .expect("the version just written is in the record"),
        release: record.view(namespace, name, revision),
    }
}

fn existing<'a>(
    current: Option<&'a Record>,
    namespace: &str,
    name: &str,
) -> Result<&'a Record, ConfigError> {
    current.ok_or_else(|| {
        ConfigError::NotFound(format!("no configuration {name} in namespace {namespace}"))
    })
}

fn no_version(namespace: &str, name: &str, version: ConfigVersion) -> ConfigError {
    ConfigError::NotFound(format!(
        "configuration {namespace}/{name} has no version {version}: `shoal config versions {name}` lists them"
    ))
}

fn check_names(namespace: &str, name: &str) -> Result<(), ConfigError> {
    crate::names::check("namespace", namespace).map_err(ConfigError::Invalid)?;
    crate::names::check("configuration", name).map_err(ConfigError::Invalid)
}

fn check_push(push: &ConfigPush) -> Result<(), ConfigError> {
    if push.content.is_empty() {
        return Err(ConfigError::Invalid(
            "the content is empty: a configuration has at least one byte".into(),
        ));
    }
    if push.content.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            size: push.content.len(),
        });
    }
    if push.message.as_ref().is_some_and(|m| m.len() > MAX_MESSAGE) {
        return Err(ConfigError::Invalid(format!(
            "the message is longer than {MAX_MESSAGE} bytes"
        )));
    }
    match &push.gray {
        Some(GrayTarget::Ids(ids)) if ids.is_empty() => {
            Err(ConfigError::Invalid("gray: --ids names no agent".into()))
        }
        Some(GrayTarget::Ids(ids)) => ids.iter().try_for_each(|id| {
            crate::names::check("gray: agent id", id).map_err(ConfigError::Invalid)
        }),
        Some(GrayTarget::Label { key, .. }) if key.is_empty() => Err(ConfigError::Invalid(
            "gray: --label has an empty key (write K=V)".into(),
        )),
        Some(GrayTarget::Percent(p)) if !(1..=100).contains(p) => Err(ConfigError::Invalid(
            format!("gray: --percent {p} is not 1 to 100"),
        )),
        _ => Ok(()),
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{PREFIX}{namespace}/{name}")
}

fn decode(key: &str, value: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Backend {
        doing: format!("reading the configuration {key}"),
        source: Box::new(e),
    })
}
