//! The servers a client calls right now and its picker over them, replaced whole when
//! discovery brings a new endpoint set: a server that stays keeps its connection, health and
//! calls in flight; one that leaves is drained; one that joins starts unconnected.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::balance::{Admission, Load, Now, Pick, Picker};
use crate::conn::Peer;
use crate::endpoint::{EndpointConfig, EndpointStatus, RouteKey};
use crate::endpoints::EndpointSet;
use crate::error::Error;
use crate::transport::Addr;

/// The client's current members, and what its calls wait on before the first set arrives.
#[derive(Debug)]
pub(super) struct Pool {
    state: watch::Sender<State>,
    /// Routes `hashring` calls without a key; drawn once, so they stay on one server across
    /// sets.
    own_key: RouteKey,
    pinned: Option<RouteKey>,
}

#[derive(Debug, Default)]
struct State {
    members: Option<Members>,
    /// Why the source has no set for us yet, while that is so.
    error: Option<String>,
}

/// The endpoints of one set, in the picker's order, and the picker over them.
#[derive(Debug)]
struct Members {
    picker: Picker,
    endpoints: Vec<Endpoint>,
}

/// One server and the state of our connection to it, shared by every set that lists it.
#[derive(Debug, Clone)]
pub(super) struct Endpoint(Arc<EndpointState>);

#[derive(Debug)]
pub(super) struct EndpointState {
    pub(super) addr: Addr,
    peer: Mutex<Option<Peer>>,
    pub(super) connecting: tokio::sync::Mutex<()>,
    pub(super) load: Load,
    /// No set lists this server any more: no connection is made to it again.
    retired: AtomicBool,
}

/// The outcome of asking for an endpoint.
pub(super) enum Picked {
    One(Endpoint, Pick),
    /// Every candidate has been tried.
    Exhausted,
    /// No endpoint set has arrived yet.
    NoSet,
}

/// What a new set changed.
#[derive(Debug, Default)]
pub(super) struct Changed {
    pub(super) added: Vec<String>,
    pub(super) removed: Vec<String>,
}

impl Pool {
    /// A pool waiting for its first set.
    pub(super) fn new(pinned: Option<RouteKey>) -> Pool {
        Pool {
            state: watch::Sender::new(State::default()),
            own_key: RouteKey::Int(fastrand::u64(..)),
            pinned,
        }
    }

    /// Takes `set` in place of the current one, keeping the endpoints both list. A set that
    /// cannot be balanced (or routed by the pinned key) is refused and the current one stays.
    pub(super) fn replace(&self, set: EndpointSet) -> Result<Changed, Error> {
        if set.endpoints.is_empty() {
            return Err(Error::Config(
                "an endpoint set needs at least one endpoint".into(),
            ));
        }
        let (picker, configs) = Picker::new(set.balance, set.endpoints, self.own_key.clone())?;
        if let Some(key) = &self.pinned {
            picker.check_key(key)?;
        }
        let mut changed = Changed::default();
        let mut retired = Vec::new();
        self.state.send_modify(|state| {
            let old = state
                .members
                .take()
                .map(|m| m.endpoints)
                .unwrap_or_default();
            let endpoints = configs
                .iter()
                .map(
                    |config| match old.iter().find(|ep| ep.addr == config.addr) {
                        Some(ep) => ep.clone(),
                        None => {
                            changed.added.push(config.addr.to_string());
                            Endpoint::new(config)
                        }
                    },
                )
                .collect();
            retired = old
                .into_iter()
                .filter(|ep| !configs.iter().any(|c| c.addr == ep.addr))
                .collect();
            state.members = Some(Members { picker, endpoints });
            state.error = None;
        });
        // Only now: no pick can find them any more.
        for ep in retired {
            changed.removed.push(ep.addr.to_string());
            ep.retire();
        }
        Ok(changed)
    }

    /// Remembers why the source gave no set, for calls made before the first one.
    pub(super) fn report(&self, error: &Error) {
        self.state.send_if_modified(|state| {
            if state.members.is_some() {
                return false;
            }
            state.error = Some(error.to_string());
            true
        });
    }

    /// The endpoint for the next attempt of a call, never one in `tried`.
    pub(super) fn pick(
        &self,
        key: Option<&RouteKey>,
        tried: &[Endpoint],
        now: &Now,
    ) -> Result<Picked, Error> {
        let state = self.state.borrow();
        let Some(members) = &state.members else {
            return Ok(Picked::NoSet);
        };
        let eps = &members.endpoints;
        // Positions in this set: an earlier attempt may have used another one.
        let tried: Vec<usize> = if tried.is_empty() {
            Vec::new()
        } else {
            (0..eps.len())
                .filter(|&i| tried.iter().any(|t| Arc::ptr_eq(&t.0, &eps[i].0)))
                .collect()
        };
        Ok(match members.picker.pick(eps, key, &tried, now)? {
            Some(pick) => Picked::One(eps[pick.index].clone(), pick),
            None => Picked::Exhausted,
        })
    }

    /// The usual case of a notification, taken without cloning a handle: the endpoint picked
    /// for `key` is in service and its connection open, and `send` runs on that connection,
    /// under the set's and the connection's locks. `None`, with nothing sent, when it is not
    /// that case or when `send` found the connection closed: the caller takes the general
    /// path, which picks again, reconnects and retries.
    pub(super) fn send_open(
        &self,
        key: Option<&RouteKey>,
        send: impl FnOnce(&Peer) -> Result<(), Error>,
    ) -> Option<Result<(), Error>> {
        let state = self.state.borrow();
        let members = state.members.as_ref()?;
        let pick = members
            .picker
            .pick(&members.endpoints, key, &[], &Now::default())
            .ok()??;
        let ep = &members.endpoints[pick.index];
        if pick.admission != Admission::Normal {
            if pick.admission == Admission::Probe {
                // Given back: the general path's pick may take the probe.
                ep.load.health.lock().release_probe();
            }
            return None;
        }
        let sent = {
            let slot = ep.peer.lock().unwrap();
            let peer = slot
                .as_ref()
                .filter(|p| !p.is_closed() && !p.is_draining())?;
            send(peer)
        };
        // The connection's lock is let go first: `status` takes the health's, then this one.
        match sent {
            Err(e) if e.never_sent() => None,
            Err(e) => Some(Err(e)),
            Ok(()) => {
                // As the general path: queued on an open connection is a sign of life, which
                // ends an ejection a concurrent failure may have begun since the pick.
                ep.load.health.ok();
                Some(Ok(()))
            }
        }
    }

    /// Waits until the first set arrives, failing when the source reports an error first or
    /// `deadline` passes (`timeout` is how long the caller gave, for the message).
    pub(super) async fn first_set(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), Error> {
        let mut rx = self.state.subscribe();
        let waited = tokio::time::timeout_at(
            deadline,
            rx.wait_for(|s| s.members.is_some() || s.error.is_some()),
        )
        .await;
        let state = match waited {
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "no endpoint set yet: discovery gave none within {timeout:?}"
                )))
            }
            // Only when the sender is gone, and this pool holds it.
            Ok(Err(_)) => return Err(Error::Unavailable("the client is closed".into())),
            Ok(Ok(state)) => state,
        };
        match (&state.members, &state.error) {
            (None, Some(error)) => Err(Error::Unavailable(format!("no endpoint set yet: {error}"))),
            _ => Ok(()),
        }
    }

    /// The endpoints of the current set, in its order (empty before the first set).
    pub(super) fn endpoints(&self) -> Vec<Endpoint> {
        self.state
            .borrow()
            .members
            .as_ref()
            .map(|m| m.endpoints.clone())
            .unwrap_or_default()
    }

    pub(super) fn status(&self) -> Vec<EndpointStatus> {
        self.endpoints().iter().map(Endpoint::status).collect()
    }

    /// The error for a call that found every candidate out.
    pub(super) fn unavailable(&self) -> Error {
        let addrs: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| e.addr.to_string())
            .collect();
        Error::Unavailable(format!(
            "all endpoints failed or are backing off: {}",
            addrs.join(", ")
        ))
    }
}

impl Endpoint {
    fn new(config: &EndpointConfig) -> Self {
        Endpoint(Arc::new(EndpointState {
            addr: config.addr.clone(),
            peer: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            load: Load::default(),
            retired: AtomicBool::new(false),
        }))
    }

    /// The connection new calls may use: open, and not draining (a server going away still
    /// answers the calls made on it, but takes no new ones).
    pub(super) fn open_peer(&self) -> Option<Peer> {
        self.peer
            .lock()
            .unwrap()
            .as_ref()
            .filter(|p| !p.is_closed() && !p.is_draining())
            .cloned()
    }

    pub(super) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Keeps `peer` as this endpoint's connection, unless the endpoint was retired meanwhile:
    /// then it is drained at once, and closes when the calls made on it are answered.
    pub(super) fn keep(&self, peer: &Peer) {
        let mut slot = self.peer.lock().unwrap();
        if self.is_retired() {
            peer.drain();
        } else {
            *slot = Some(peer.clone());
        }
    }

    /// Lets go of the server: calls in flight on its connection are answered, then it closes.
    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        if let Some(peer) = self.peer.lock().unwrap().take() {
            peer.drain();
        }
    }

    fn status(&self) -> EndpointStatus {
        let health = self.load.health.lock();
        EndpointStatus {
            addr: self.addr.clone(),
            connected: self.open_peer().is_some(),
            ejected: health.retry_at().is_some(),
            failures: health.failures(),
            in_flight: self.load.in_flight.load(Ordering::Relaxed),
        }
    }
}

impl Deref for Endpoint {
    type Target = EndpointState;

    fn deref(&self) -> &EndpointState {
        &self.0
    }
}

impl AsRef<Load> for Endpoint {
    fn as_ref(&self) -> &Load {
        &self.0.load
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Balance;

    fn set(balance: Balance, addrs: &[&str]) -> EndpointSet {
        EndpointSet {
            balance,
            endpoints: addrs
                .iter()
                .map(|a| EndpointConfig::new(a.parse().unwrap()))
                .collect(),
        }
    }

    fn addrs(pool: &Pool) -> Vec<String> {
        pool.endpoints()
            .iter()
            .map(|e| e.addr.to_string())
            .collect()
    }

    #[test]
    fn a_new_set_keeps_the_servers_that_stay_and_retires_the_others() {
        let pool = Pool::new(None);
        pool.replace(set(Balance::HashRing, &["a:1", "b:1", "c:1"]))
            .unwrap();
        let old = pool.endpoints();
        let changed = pool
            .replace(set(Balance::HashRing, &["b:1", "d:1", "a:1"]))
            .unwrap();
        assert_eq!(changed.added, ["d:1"]);
        assert_eq!(changed.removed, ["c:1"]);
        let new = pool.endpoints();
        assert_eq!(addrs(&pool), ["b:1", "d:1", "a:1"]);
        assert!(
            Arc::ptr_eq(&new[0].0, &old[1].0),
            "b:1 is the same endpoint"
        );
        assert!(
            Arc::ptr_eq(&new[2].0, &old[0].0),
            "a:1 is the same endpoint"
        );
        assert!(old[2].is_retired(), "c:1 is retired");
        assert!(!new.iter().any(Endpoint::is_retired));
    }

    #[test]
    fn a_set_that_cannot_be_balanced_is_refused_and_the_last_one_stays() {
        let pool = Pool::new(Some(RouteKey::from("user:1")));
        let err = pool.replace(set(Balance::RoundRobin, &[])).unwrap_err();
        assert!(err.to_string().contains("at least one endpoint"), "{err}");
        pool.replace(set(Balance::RoundRobin, &["a:1"])).unwrap();
        let kept = pool.endpoints();

        let err = pool
            .replace(set(Balance::RoundRobin, &["a:1", "a:1"]))
            .unwrap_err();
        assert!(err.to_string().contains("a:1 is listed twice"), "{err}");
        // A text key pinned at build time cannot route shard calls.
        let mut shard = set(Balance::Shard { count: 1 }, &["b:1"]);
        shard.endpoints[0].shard = Some((0, 0));
        let err = pool.replace(shard).unwrap_err();
        assert!(err.to_string().contains("integer key"), "{err}");

        assert_eq!(addrs(&pool), ["a:1"]);
        assert!(Arc::ptr_eq(&pool.endpoints()[0].0, &kept[0].0));
        assert!(!kept[0].is_retired());
    }

    #[tokio::test]
    async fn calls_before_the_first_set_wait_for_it_or_fail_with_the_sources_error() {
        let pool = Pool::new(None);
        let soon = Instant::now() + Duration::from_secs(10);
        assert!(matches!(
            pool.pick(None, &[], &Now::default()),
            Ok(Picked::NoSet)
        ));
        pool.report(&Error::Config(
            "clients.toml:3: endpoint[0].weight: bad".into(),
        ));
        let err = pool.first_set(soon, Duration::from_secs(10)).await;
        let err = err.unwrap_err().to_string();
        assert!(err.contains("no endpoint set yet: clients.toml:3"), "{err}");

        pool.replace(set(Balance::RoundRobin, &["a:1"])).unwrap();
        pool.first_set(soon, Duration::from_secs(10)).await.unwrap();
        // Once there is a set, a later error does not hide it.
        pool.report(&Error::Config("clients.toml:1: broken".into()));
        pool.first_set(soon, Duration::from_secs(10)).await.unwrap();
        assert!(matches!(
            pool.pick(None, &[], &Now::default()),
            Ok(Picked::One(..))
        ));
    }
}
