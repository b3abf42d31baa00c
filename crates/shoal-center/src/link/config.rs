//! Central configuration on the link: `config.changed` to the agents a release reaches, again
//! on any `hello` or `heartbeat` whose report does not hold the version the agent should have
//! (a lost push is repaired within one heartbeat; an agent that was away catches up on its
//! `hello`), never when it does, whatever the state it reports; and `config.applied`, and
//! every report's configurations, recorded for `config status`.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_api::config::{methods, ConfigApplied, ConfigChanged, ConfigHeld, ConfigVersion};
use shoal_rpc::Peer;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Links;
use crate::config::{Member, Released, Wanted};

/// What delivery needs of one live agent, taken from its link at one moment.
struct Snapshot {
    peer: Peer,
    namespace: String,
    labels: std::collections::BTreeMap<String, String>,
    apps: Vec<String>,
    held: Vec<ConfigHeld>,
}

/// The `config.changed` of each version sent during one pass, read from the store once.
#[derive(Default)]
pub(super) struct Contents(HashMap<(String, ConfigVersion), Option<Arc<ConfigChanged>>>);

impl Links {
    /// Sends agent `id` a `config.changed` for each of its apps (only `only` when given)
    /// whose reported version is not the one the release gives it.
    pub(super) async fn deliver_configs(&self, id: &str, only: Option<&str>, memo: &mut Contents) {
        let Some(agent) = self.snapshot(id) else {
            return;
        };
        let configs = &self.inner.deps.configs;
        let member = Member {
            id,
            labels: &agent.labels,
        };
        let apps = agent
            .apps
            .iter()
            .map(String::as_str)
            .filter(|app| only.is_none_or(|only| only == *app));
        let wanted = match configs.desired(&agent.namespace, member, apps).await {
            Ok(wanted) => wanted,
            Err(error) => {
                warn!(agent = %id, %error, "reading the configurations an agent should hold");
                return;
            }
        };
        for wanted in wanted {
            let received = agent
                .held
                .iter()
                .any(|h| h.name == wanted.name && h.version == wanted.version);
            if received {
                continue;
            }
            let Some(changed) = self.content(&wanted, memo).await else {
                continue;
            };
            debug!(agent = %id, config = %wanted.name, version = wanted.version, "config.changed");
            if agent
                .peer
                .notify(methods::CONFIG_CHANGED, &[changed.as_ref()])
                .is_err()
            {
                // The link closed: the agent's next hello brings it.
                return;
            }
        }
    }

    /// Delivers each release change as it is made, until `shutdown`.
    pub(super) async fn deliver_releases(self, shutdown: CancellationToken) {
        let mut releases = self.inner.deps.configs.subscribe();
        loop {
            let released = tokio::select! {
                () = shutdown.cancelled() => return,
                released = releases.recv() => released,
            };
            if matches!(released, Err(RecvError::Closed)) {
                return;
            }
            self.deliver_release(released).await;
        }
    }

    /// Delivers one release change to every live agent of its namespace; after missed
    /// changes, every configuration to every live agent.
    async fn deliver_release(&self, released: Result<Released, RecvError>) {
        let (namespace, only) = match &released {
            Ok(r) => (Some(r.namespace.as_str()), Some(r.name.as_str())),
            Err(RecvError::Lagged(missed)) => {
                warn!(
                    missed,
                    "release changes came faster than the link took them: checking every agent"
                );
                (None, None)
            }
            Err(RecvError::Closed) => return,
        };
        let ids: Vec<String> = {
            let live = self.inner.live.lock().unwrap();
            live.iter()
                .filter(|(_, l)| self.fresh(l))
                .filter(|(_, l)| namespace.is_none_or(|ns| ns == l.namespace))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let mut memo = Contents::default();
        for id in ids {
            self.deliver_configs(&id, only, &mut memo).await;
        }
    }

    /// Records what agent `id` of `namespace` reports it holds.
    pub(super) async fn record_held(&self, id: &str, namespace: &str, held: &[ConfigHeld]) {
        for h in held {
            self.record_config(id, namespace, &h.name, h.version, &h.delivery)
                .await;
        }
    }

    /// `config.applied` from agent `id`: recorded. Its live report is left as it was, so the
    /// next report that says the same is recorded too, before its heartbeat is answered.
    pub(super) async fn applied(&self, id: &str, applied: ConfigApplied) {
        let namespace = {
            let live = self.inner.live.lock().unwrap();
            let Some(link) = live.get(id) else {
                return;
            };
            link.namespace.clone()
        };
        self.record_config(
            id,
            &namespace,
            &applied.name,
            applied.version,
            &applied.delivery,
        )
        .await;
    }

    async fn record_config(
        &self,
        id: &str,
        namespace: &str,
        name: &str,
        version: ConfigVersion,
        delivery: &shoal_api::config::Delivery,
    ) {
        if crate::names::check("configuration", name).is_err() {
            debug!(agent = %id, "a configuration report with a name that is not a name, ignored");
            return;
        }
        let configs = &self.inner.deps.configs;
        if let Err(error) = configs.record(namespace, id, name, version, delivery).await {
            warn!(agent = %id, config = %name, %error, "recording a configuration's state");
        }
    }

    fn snapshot(&self, id: &str) -> Option<Snapshot> {
        let live = self.inner.live.lock().unwrap();
        let link = live.get(id).filter(|l| self.fresh(l))?;
        Some(Snapshot {
            peer: link.peer.clone(),
            namespace: link.namespace.clone(),
            labels: link.report.labels.clone(),
            apps: link.report.apps.iter().map(|a| a.name.clone()).collect(),
            held: link.report.configs.clone(),
        })
    }

    async fn content(&self, wanted: &Wanted, memo: &mut Contents) -> Option<Arc<ConfigChanged>> {
        let slot = (wanted.name.clone(), wanted.version);
        if let Some(found) = memo.0.get(&slot) {
            return found.clone();
        }
        let found = match self.inner.deps.configs.changed(wanted).await {
            Ok(Some(changed)) => Some(Arc::new(changed)),
            Ok(None) => {
                warn!(config = %wanted.name, version = wanted.version, sha256 = %wanted.sha256,
                    "a configuration's content is missing from the store");
                None
            }
            Err(error) => {
                warn!(config = %wanted.name, %error, "reading a configuration's content");
                None
            }
        };
        memo.0.insert(slot, found.clone());
        found
    }
}
