//! The link: agents dial the center's agents' port, MessagePack-RPC over TLS 1.3, and both
//! sides call each other on that one connection.
//!
//! A connection without a client certificate may only `enroll` (a join token and a CSR in,
//! a certificate out); anything else is refused and the connection closed. A connection with
//! one was verified by TLS to lead to the agents' intermediate; its SAN names the agent. A
//! revoked agent is told so (`link.refused`) and closed. The agent then says `hello` and
//! sends heartbeats; three missed and it is offline. The center calls the agent's `exec` and
//! `logs` through [`Links`], the handle the rest of the center holds, and delivers
//! configurations by itself (`config.rs`).
//!
//! The registry persists each agent under `agents/<id>` in the store's [`Kv`] (JSON); whether
//! it is online lives in memory only.

mod config;
mod conn;
mod logs;
mod registry;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use shoal_api::agent::LogQuery;
use shoal_api::fleet::{
    methods, AgentId, AgentInfo, AgentReport, Exec, LogsRequest, Refused, ServiceEndpoint,
    TargetResult,
};
use shoal_rpc::Peer;
use shoal_store::{Kv, StoreError};
use tokio::time::Instant;

use crate::config::Configs;
use crate::pki::Pki;
use crate::services::Services;

pub use conn::serve;
pub use logs::LogStream;

/// Default time between an agent's heartbeats.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Heartbeats an agent may miss before it is offline.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Checks join tokens; the center's token store implements it.
#[async_trait]
pub trait JoinAuthority: Send + Sync {
    /// Redeems one use of the join token `credential` (`shoal_<id>_<secret>`, no pin).
    async fn redeem(&self, credential: &str) -> Result<JoinGrant, JoinRefused>;

    /// Told how an enrollment ended, for the audit log; the center's writes it there. A
    /// stand-in may ignore it.
    async fn enrolled(&self, _enrollment: Enrollment<'_>) {}
}

/// How an enrollment ended.
#[derive(Debug, Clone, Copy)]
pub enum Enrollment<'a> {
    /// `hostname` is recorded as agent `agent`, under `grant`.
    Joined {
        grant: &'a JoinGrant,
        agent: &'a str,
        hostname: &'a str,
    },
    /// A use of the token was taken, but the agent could not be recorded.
    Failed {
        grant: &'a JoinGrant,
        hostname: &'a str,
        error: &'a str,
    },
    /// The token `credential` was refused.
    Refused {
        credential: &'a str,
        hostname: &'a str,
        reason: &'a JoinRefused,
    },
}

/// What a redeemed join token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGrant {
    pub token_id: String,
    /// The namespace the token is scoped to: the agent joins it, whatever it asked.
    pub namespace: Option<String>,
}

/// Why a join token is refused; shown to the agent, never carrying the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    #[error("the join token is unknown to this center: create one with `shoal token create --role join`")]
    Unknown,
    #[error("the join token has expired: create a new one with `shoal token create --role join`")]
    Expired,
    #[error("the join token was revoked: create a new one with `shoal token create --role join`")]
    Revoked,
    #[error("the join token has been used as many times as it allows: create a new one with `shoal token create --role join`")]
    UsedUp,
    #[error("the center cannot check join tokens now ({0}); try again")]
    Unavailable(String),
}

/// The package repository as the link serves it to agents; the center's repository
/// implements it.
#[async_trait]
pub trait PackageSource: Send + Sync {
    /// The archive whose sha256 is `sha256` (lowercase hex), if the repository has it.
    async fn fetch(&self, sha256: &str) -> Result<Option<Bytes>, StoreError>;
}

/// How the link runs.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Time between an agent's heartbeats; three missed and it is offline.
    pub heartbeat: Duration,
    /// How long an agent's certificate lasts.
    pub agent_lifetime: Duration,
    /// Connections the agents' port keeps open at once; past it new ones are closed.
    pub max_connections: usize,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            heartbeat: DEFAULT_HEARTBEAT,
            agent_lifetime: crate::pki::DEFAULT_AGENT_LIFETIME,
            max_connections: 20_000,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// What the link needs from the rest of the center.
#[derive(Clone)]
pub struct LinkDeps {
    pub kv: Arc<dyn Kv>,
    pub pki: Arc<Pki>,
    pub join: Arc<dyn JoinAuthority>,
    pub packages: Arc<dyn PackageSource>,
    /// The configurations the link delivers, and where it records what agents hold.
    pub configs: Configs,
}

impl std::fmt::Debug for LinkDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkDeps")
            .field("kv", &self.kv)
            .field("pki", &self.pki)
            .finish_non_exhaustive()
    }
}

/// Why a call to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Not connected: nothing was sent.
    #[error("agent {0} is offline")]
    Offline(AgentId),
    /// The link dropped after the call was sent: the agent may have run it. Sending the
    /// same command id again once it is back is safe (it runs a command id at most once).
    #[error("the link to agent {0} dropped before it answered")]
    Dropped(AgentId),
    /// No answer within the time given.
    #[error("agent {agent} did not answer within {after:?}")]
    Timeout { agent: AgentId, after: Duration },
    /// The agent answered with an error.
    #[error("agent {agent}: {message}")]
    Failed { agent: AgentId, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The center's handle on its agents: the registry, and calls over their links. Clones share
/// it.
#[derive(Clone)]
pub struct Links {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("online", &self.inner.live.lock().unwrap().len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    deps: LinkDeps,
    config: LinkConfig,
    /// Agents with a link that said hello, by id.
    live: Mutex<HashMap<AgentId, Live>>,
    /// Revoked agents (persisted in their records; kept here for the check at each connect).
    revoked: Mutex<HashSet<AgentId>>,
    /// Log streams open, by stream id.
    streams: Mutex<HashMap<u64, logs::Sink>>,
    /// Connection numbers and stream ids.
    next: AtomicU64,
    /// Bumped whenever an agent comes online or goes offline.
    changes: tokio::sync::watch::Sender<u64>,
    /// The online agents' endpoints by service, rebuilt whenever they change.
    services: Services,
}

/// One agent's live link.
struct Live {
    conn: u64,
    peer: Peer,
    /// The namespace its record says.
    namespace: String,
    last_seen: Instant,
    last_heartbeat: DateTime<Utc>,
    report: AgentReport,
    /// When the record's heartbeat time was last written to the store.
    persisted: Instant,
}

impl Links {
    /// The registry of `deps.kv`, its revoked agents loaded.
    pub async fn new(deps: LinkDeps, config: LinkConfig) -> Result<Links, StoreError> {
        let revoked = registry::load_all(deps.kv.as_ref())
            .await?
            .into_iter()
            .filter(|r| r.revoked)
            .map(|r| r.id)
            .collect();
        Ok(Links {
            inner: Arc::new(Inner {
                deps,
                config,
                live: Mutex::new(HashMap::new()),
                revoked: Mutex::new(revoked),
                streams: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
                changes: tokio::sync::watch::channel(0).0,
                services: Services::new(),
            }),
        })
    }

    pub fn config(&self) -> &LinkConfig {
        &self.inner.config
    }

    pub fn pki(&self) -> &Arc<Pki> {
        &self.inner.deps.pki
    }

    /// Whether agent `id` has a link that said hello and missed fewer than three heartbeats.
    pub fn is_online(&self, id: &str) -> bool {
        let live = self.inner.live.lock().unwrap();
        live.get(id).is_some_and(|l| self.fresh(l))
    }

    /// Every agent the registry knows, with its online state and latest report.
    pub async fn agents(&self) -> Result<Vec<AgentInfo>, StoreError> {
        let records = registry::load_all(self.inner.deps.kv.as_ref()).await?;
        let live = self.inner.live.lock().unwrap();
        Ok(records
            .into_iter()
            .map(|record| {
                let link = live.get(&record.id).filter(|l| self.fresh(l));
                record.info(link.map(|l| (l.last_heartbeat, &l.report)))
            })
            .collect())
    }

    /// One agent, as [`Links::agents`] shows it.
    pub async fn agent(&self, id: &str) -> Result<Option<AgentInfo>, StoreError> {
        let Some((record, _)) = registry::load(self.inner.deps.kv.as_ref(), id).await? else {
            return Ok(None);
        };
        let live = self.inner.live.lock().unwrap();
        let link = live.get(id).filter(|l| self.fresh(l));
        Ok(Some(
            record.info(link.map(|l| (l.last_heartbeat, &l.report))),
        ))
    }

    /// Waits until agent `id` is online, at most `timeout`; whether it is.
    pub async fn wait_online(&self, id: &str, timeout: Duration) -> bool {
        let mut changes = self.inner.changes.subscribe();
        let until = Instant::now() + timeout;
        loop {
            if self.is_online(id) {
                return true;
            }
            if tokio::time::timeout_at(until, changes.changed())
                .await
                .is_err()
            {
                return self.is_online(id);
            }
        }
    }

    /// The services' endpoints, as the online agents report them.
    pub fn services(&self) -> &Services {
        &self.inner.services
    }

    /// A receiver that changes whenever an agent comes online or goes offline.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Revokes agent `id`: refused from now on (persisted), and its live link closed at once.
    /// False when the registry does not know it.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        // Refused by the check at connect from this point on, even before the store answers.
        self.inner.revoked.lock().unwrap().insert(id.to_owned());
        let known = registry::set_revoked(self.inner.deps.kv.as_ref(), id).await?;
        let live = self.inner.live.lock().unwrap().remove(id);
        if let Some(live) = live {
            refuse(&live.peer, format!("agent {id} was revoked by the center"));
            self.changed();
        }
        if !known {
            self.inner.revoked.lock().unwrap().remove(id);
        }
        Ok(known)
    }

    /// Runs `exec` on agent `agent`, waiting at most `timeout` for its answer.
    pub async fn exec(
        &self,
        agent: &str,
        exec: Exec,
        timeout: Duration,
    ) -> Result<TargetResult, LinkError> {
        let peer = self.peer(agent)?;
        let value = peer
            .call(methods::EXEC, &[&exec], timeout)
            .await
            .map_err(|e| call_error(agent, timeout, e))?;
        shoal_rpc::decode::from_value(value).map_err(|e| LinkError::Failed {
            agent: agent.to_owned(),
            message: format!("its answer to exec is not a result: {e}"),
        })
    }

    /// Starts a log query of `app` on agent `agent`: its lines as they come. Dropping the
    /// stream stops it on the agent.
    pub async fn logs(
        &self,
        agent: &str,
        app: &str,
        query: LogQuery,
        timeout: Duration,
    ) -> Result<LogStream, LinkError> {
        let peer = self.peer(agent)?;
        let stream = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (sink, lines) = logs::channel(agent);
        self.inner.streams.lock().unwrap().insert(stream, sink);
        let stop = logs::StopGuard::new(self.clone(), peer.clone(), stream);
        let request = LogsRequest {
            stream,
            app: app.to_owned(),
            query,
        };
        peer.call(methods::LOGS, &[&request], timeout)
            .await
            .map_err(|e| call_error(agent, timeout, e))?;
        Ok(LogStream::new(lines, stop))
    }

    fn peer(&self, agent: &str) -> Result<Peer, LinkError> {
        let live = self.inner.live.lock().unwrap();
        match live.get(agent) {
            Some(l) if self.fresh(l) => Ok(l.peer.clone()),
            _ => Err(LinkError::Offline(agent.to_owned())),
        }
    }

    fn fresh(&self, live: &Live) -> bool {
        !live.peer.is_closed() && live.last_seen.elapsed() < self.offline_after()
    }

    fn offline_after(&self) -> Duration {
        self.inner.config.heartbeat * MISSED_HEARTBEATS
    }

    fn changed(&self) {
        self.inner.changes.send_modify(|n| *n += 1);
        self.reindex();
    }

    /// Rebuilds the services' endpoints from the online agents' reports.
    fn reindex(&self) {
        let all: Vec<_> = {
            let live = self.inner.live.lock().unwrap();
            live.iter()
                .filter(|(_, l)| self.fresh(l))
                .flat_map(|(id, l)| {
                    l.report.apps.iter().flat_map(move |app| {
                        app.endpoints.iter().map(move |addr| {
                            let endpoint = ServiceEndpoint {
                                agent: id.clone(),
                                addr: addr.clone(),
                            };
                            (l.namespace.clone(), app.name.clone(), endpoint)
                        })
                    })
                })
                .collect()
        };
        self.inner.services.update(all);
    }

    fn is_revoked(&self, id: &str) -> bool {
        self.inner.revoked.lock().unwrap().contains(id)
    }

    /// Closes the links that missed three heartbeats (their agents reconnect when they can).
    fn sweep(&self) {
        let stale: Vec<Live> = {
            let mut live = self.inner.live.lock().unwrap();
            let ids: Vec<AgentId> = live
                .iter()
                .filter(|(_, l)| !self.fresh(l))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| live.remove(id)).collect()
        };
        for live in &stale {
            tracing::info!(conn = live.conn, "link closed: three heartbeats missed");
            live.peer.close();
        }
        if !stale.is_empty() {
            self.changed();
        }
    }
}

/// Tells the agent why, then closes its link (the notification is flushed first).
fn refuse(peer: &Peer, reason: String) {
    let _ = peer.notify(methods::REFUSED, &[Refused { reason }]);
    peer.close();
}

fn call_error(agent: &str, timeout: Duration, e: shoal_rpc::Error) -> LinkError {
    let agent = agent.to_owned();
    match e {
        shoal_rpc::Error::DeadlineExceeded(_) => LinkError::Timeout {
            agent,
            after: timeout,
        },
        shoal_rpc::Error::NotSent { .. } => LinkError::Offline(agent),
        shoal_rpc::Error::Closed { .. } => LinkError::Dropped(agent),
        shoal_rpc::Error::Remote(remote) => LinkError::Failed {
            agent,
            message: remote.message,
        },
        other => LinkError::Failed {
            agent,
            message: other.to_string(),
        },
    }
}
