//! The services' endpoints: for each namespace and service name, the `host:port` endpoints
//! that online agents report for their running, healthy apps of that name. The link replaces
//! the whole picture whenever an agent's endpoints change or an agent comes or goes
//! ([`Services::update`]); the API and the link's callers read one service
//! ([`Services::get`]) or wait for it to differ from a revision they have
//! ([`Services::watch`], a long poll on a `watch` channel, no polling).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::fleet::{ServiceEndpoint, ServiceEndpoints};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a watch waits for a change when its caller does not say.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// The longest a watch waits: a longer wait is cut to it, so no caller holds a request open
/// for long.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// The registry of services' endpoints. Clones share it.
#[derive(Debug, Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sets: Mutex<Sets>,
    /// The revision of the last update that changed any set.
    changes: watch::Sender<u64>,
    /// Cancelled when the center stops: every watch answers what it has.
    closing: CancellationToken,
}

/// A namespace and a service name.
type Key = (String, String);

#[derive(Debug)]
struct Sets {
    /// Only sets with endpoints: an absent service is empty at revision 0.
    by_service: BTreeMap<Key, Set>,
    /// The revision the next changed set gets.
    next: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Set {
    endpoints: BTreeSet<ServiceEndpoint>,
    revision: u64,
}

impl Default for Services {
    fn default() -> Services {
        Services::new()
    }
}

impl Services {
    /// An empty registry. Its revisions start at the time now, in microseconds since 1970.
    pub fn new() -> Services {
        let origin = chrono::Utc::now().timestamp_micros().max(1) as u64;
        Services {
            inner: Arc::new(Inner {
                sets: Mutex::new(Sets {
                    by_service: BTreeMap::new(),
                    next: origin,
                }),
                changes: watch::Sender::new(0),
                closing: CancellationToken::new(),
            }),
        }
    }

    /// Replaces every set with `all`: each `(namespace, service, endpoint)` that online agents
    /// report now. Each set that differs from before gets a new revision, and waiting
    /// [`watch`](Self::watch)es see it.
    pub fn update(&self, all: impl IntoIterator<Item = (String, String, ServiceEndpoint)>) {
        let mut now: BTreeMap<Key, BTreeSet<ServiceEndpoint>> = BTreeMap::new();
        for (namespace, service, endpoint) in all {
            now.entry((namespace, service))
                .or_default()
                .insert(endpoint);
        }
        let mut sets = self.inner.sets.lock().unwrap();
        let revision = sets.next;
        let gone: Vec<Key> = sets
            .by_service
            .keys()
            .filter(|key| !now.contains_key(*key))
            .cloned()
            .collect();
        let mut changed = !gone.is_empty();
        for key in gone {
            sets.by_service.remove(&key);
        }
        for (key, endpoints) in now {
            if sets.by_service.get(&key).map(|s| &s.endpoints) != Some(&endpoints) {
                sets.by_service.insert(
                    key,
                    Set {
                        endpoints,
                        revision,
                    },
                );
                changed = true;
            }
        }
        if changed {
            sets.next += 1;
            drop(sets);
            self.inner.changes.send_replace(revision);
        }
    }

    /// Service `service` of `namespace` now.
    pub fn get(&self, namespace: &str, service: &str) -> ServiceEndpoints {
        let sets = self.inner.sets.lock().unwrap();
        let key = (namespace.to_owned(), service.to_owned());
        let (revision, endpoints) = match sets.by_service.get(&key) {
            Some(set) => (set.revision, set.endpoints.iter().cloned().collect()),
            None => (0, Vec::new()),
        };
        ServiceEndpoints {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            revision,
            endpoints,
        }
    }

    /// Ends every [`watch`](Self::watch), now and to come, with the set as it is: the center
    /// is stopping, and its HTTP API waits for the requests in progress.
    pub fn close(&self) {
        self.inner.closing.cancel();
    }

    /// Service `service` of `namespace` as soon as its revision is not `after`, or as it is
    /// once `wait` (at most [`MAX_WAIT`]) has passed or the registry is closed.
    pub async fn watch(
        &self,
        namespace: &str,
        service: &str,
        after: u64,
        wait: Duration,
    ) -> ServiceEndpoints {
        // Subscribed before the first look, so a change between the two is not missed.
        let mut changes = self.inner.changes.subscribe();
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        loop {
            let now = self.get(namespace, service);
            if now.revision != after {
                return now;
            }
            let changed = tokio::select! {
                () = self.inner.closing.cancelled() => false,
                // The sender lives as long as `self`: an error cannot come.
                c = tokio::time::timeout_at(deadline, changes.changed()) => matches!(c, Ok(Ok(()))),
            };
            if !changed {
                return self.get(namespace, service);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(agent: &str, addr: &str) -> ServiceEndpoint {
        ServiceEndpoint {
            agent: agent.into(),
            addr: addr.into(),
        }
    }

    fn entry(
        ns: &str,
        service: &str,
        agent: &str,
        addr: &str,
    ) -> (String, String, ServiceEndpoint) {
        (ns.into(), service.into(), at(agent, addr))
    }

    #[test]
    fn each_set_gets_a_new_revision_only_when_it_changes() {
        let services = Services::new();
        assert_eq!(services.get("default", "web").revision, 0);
        services.update([
            entry("default", "web", "b", "10.0.0.2:7000"),
            entry("default", "web", "a", "10.0.0.1:7000"),
            entry("default", "db", "a", "10.0.0.1:5432"),
            entry("other", "web", "c", "10.0.1.1:7000"),
        ]);
        let web = services.get("default", "web");
        assert_ne!(web.revision, 0);
        assert_eq!(
            web.endpoints,
            [at("a", "10.0.0.1:7000"), at("b", "10.0.0.2:7000")],
            "sorted, and only this namespace's"
        );
        let db = services.get("default", "db").revision;

        // `web` loses one endpoint: only it changes.
        services.update([
            entry("default", "web", "a", "10.0.0.1:7000"),
            entry("default", "db", "a", "10.0.0.1:5432"),
            entry("other", "web", "c", "10.0.1.1:7000"),
        ]);
        let after = services.get("default", "web");
        assert!(after.revision > web.revision);
        assert_eq!(after.endpoints, [at("a", "10.0.0.1:7000")]);
        assert_eq!(services.get("default", "db").revision, db);

        // The same picture again changes nothing.
        services.update([
            entry("default", "web", "a", "10.0.0.1:7000"),
            entry("default", "db", "a", "10.0.0.1:5432"),
            entry("other", "web", "c", "10.0.1.1:7000"),
        ]);
        assert_eq!(services.get("default", "web").revision, after.revision);

        // Gone altogether: empty at revision 0.
        services.update([entry("default", "db", "a", "10.0.0.1:5432")]);
        let empty = services.get("default", "web");
        assert_eq!((empty.revision, empty.endpoints.len()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_answers_at_once_when_behind_on_a_change_or_at_its_wait() {
        let services = Services::new();
        services.update([entry("default", "web", "a", "10.0.0.1:7000")]);
        let first = services.get("default", "web");

        // Behind: at once.
        let now = services
            .watch("default", "web", 0, Duration::from_secs(60))
            .await;
        assert_eq!(now, first);

        // Up to date: waits for a change of this service, not of another.
        let waiting = {
            let services = services.clone();
            let after = first.revision;
            tokio::spawn(async move {
                services
                    .watch("default", "web", after, Duration::from_secs(60))
                    .await
            })
        };
        tokio::task::yield_now().await;
        services.update([
            entry("default", "web", "a", "10.0.0.1:7000"),
            entry("default", "db", "a", "10.0.0.1:5432"),
        ]);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "another service's change answered");
        services.update([
            entry("default", "web", "a", "10.0.0.1:7000"),
            entry("default", "web", "b", "10.0.0.2:7000"),
            entry("default", "db", "a", "10.0.0.1:5432"),
        ]);
        let changed = waiting.await.unwrap();
        assert_eq!(changed.endpoints.len(), 2);
        assert!(changed.revision > first.revision);

        // Nothing changes: the same revision once the wait is over.
        let start = Instant::now();
        let same = services
            .watch("default", "web", changed.revision, Duration::from_secs(30))
            .await;
        assert_eq!(same, changed);
        assert!(start.elapsed() >= Duration::from_secs(30));
    }
}
