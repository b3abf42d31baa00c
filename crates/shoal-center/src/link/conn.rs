//! The agents' port: the accept loop (TLS handshake, who the peer is) and the calls an
//! agent makes, answered per connection by [`Handler`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use shoal_api::config::{methods as config_methods, ConfigApplied};
use shoal_api::fleet::{
    codes as link_codes, methods, AgentId, AgentReport, DiscoverWatch, EnrollRequest, Enrolled,
    LogLine, LogsEnd, PackageChunk, PackageFetch, Renewal, Welcome,
};
use shoal_rpc::accept::AcceptFailures;
use shoal_rpc::conn::ConnConfig;
use shoal_rpc::{Args, Peer, Reply, Request, RpcError};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::util::BoxCloneSyncService;
use tracing::{debug, info, warn};

use super::config::Contents;
use super::registry::{self, Record};
use super::{refuse, Enrollment, JoinGrant, Links, Live};
use crate::pki::{self, PkiError};

/// Largest part of a package one `package.fetch` answers.
const CHUNK: usize = 1024 * 1024;
/// How long a connection without a certificate may stay open to enroll.
const ENROLL_WINDOW: Duration = Duration::from_secs(30);
/// How often an online agent's heartbeat time is written to the store when nothing else in
/// its report changed.
const PERSIST_EVERY: Duration = Duration::from_secs(60);
/// Bounds on what an agent reports about itself.
const MAX_LABELS: usize = 64;
const MAX_TEXT: usize = 256;
const MAX_CONFIGS: usize = 1024;
/// The most endpoints one report may name, all apps together.
const MAX_ENDPOINTS: usize = 1024;

/// Serves the agents' port on `listener` until `shutdown` is cancelled, then closes every
/// link and returns once their tasks ended.
pub async fn serve(
    links: Links,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), PkiError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(links.pki().link_server_config()?);
    let tasks = TaskTracker::new();
    let open = Arc::new(tokio::sync::Semaphore::new(links.config().max_connections));
    let mut sweep = tokio::time::interval(links.config().heartbeat);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One task delivers release changes, in the order they were made.
    tasks.spawn(links.clone().deliver_releases(shutdown.clone()));
    let local = listener
        .local_addr()
        .map_or_else(|e| format!("(unknown: {e})"), |a| a.to_string());
    info!(addr = %local, "serving the agents' link");
    let mut failures = AcceptFailures::new(&local);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = sweep.tick() => links.sweep(),
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: pause instead of spinning, and
                        // log once per interval rather than every attempt.
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = failures.failed(&e) => {}
                        }
                        continue;
                    }
                };
                failures.accepted();
                let Ok(slot) = open.clone().try_acquire_owned() else {
                    failures.refused(addr, links.config().max_connections);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let link = Accepted {
                    links: links.clone(),
                    acceptor: acceptor.clone(),
                    tasks: tasks.clone(),
                    shutdown: shutdown.clone(),
                    addr: addr.to_string(),
                };
                tasks.spawn(async move {
                    link.run(stream).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Who is at the other end of a connection, from its client certificate.
#[derive(Debug, Clone)]
enum Identity {
    /// No certificate: may only enroll.
    Anonymous,
    Agent(String),
}

struct Accepted {
    links: Links,
    acceptor: tokio_rustls::TlsAcceptor,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    addr: String,
}

impl Accepted {
    async fn run(self, stream: TcpStream) {
        let timeout = self.links.config().handshake_timeout;
        let handshake = tokio::time::timeout(timeout, self.acceptor.accept(stream));
        let tls = tokio::select! {
            () = self.shutdown.cancelled() => return,
            done = handshake => match done {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    info!(addr = %self.addr, %error, "agents' port: TLS handshake refused");
                    return;
                }
                Err(_) => {
                    debug!(addr = %self.addr, "agents' port: TLS handshake timed out");
                    return;
                }
            },
        };
        let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
        let identity = match leaf {
            None => Identity::Anonymous,
            Some(cert) => match pki::agent_id_of(cert) {
                Some(id) => Identity::Agent(id),
                None => {
                    warn!(addr = %self.addr, "agents' port: a certificate without an agent id");
                    return;
                }
            },
        };
        let conn = self.links.inner.next.fetch_add(1, Ordering::Relaxed);
        let handler = Handler {
            links: self.links.clone(),
            conn,
            identity: identity.clone(),
        };
        let config = ConnConfig {
            goaway: false,
            ..ConnConfig::default()
        };
        let (r, w) = tokio::io::split(tls);
        let peer = shoal_rpc::conn::spawn(
            r,
            w,
            self.addr.clone(),
            BoxCloneSyncService::new(tower::service_fn(move |req| handler.clone().handle(req))),
            config,
            self.shutdown.clone(),
            &self.tasks,
        );
        self.watch(peer, identity, conn).await;
    }

    /// Closes a connection that overstays (no enrollment, no hello) and cleans up after it.
    async fn watch(&self, peer: Peer, identity: Identity, conn: u64) {
        match &identity {
            Identity::Agent(id) if self.links.is_revoked(id) => {
                info!(agent = %id, addr = %self.addr, "link refused: the agent is revoked");
                refuse(&peer, format!("agent {id} was revoked by the center"));
            }
            Identity::Agent(_) => {
                // Our calls to the agent then carry their deadline, and a dropped call
                // cancels its handler there.
                peer.negotiate(self.links.config().handshake_timeout).await;
            }
            Identity::Anonymous => {}
        }
        let window = match identity {
            Identity::Anonymous => ENROLL_WINDOW,
            Identity::Agent(_) => self.links.offline_after(),
        };
        tokio::select! {
            () = peer.closed() => {}
            () = tokio::time::sleep(window) => {
                let greeted = matches!(&identity, Identity::Agent(id)
                    if self.links.inner.live.lock().unwrap().get(id).is_some_and(|l| l.conn == conn));
                if !greeted {
                    refuse(&peer, "the link must start with `hello` (or `enroll`)".into());
                }
                peer.closed().await;
            }
        }
        if let Identity::Agent(id) = identity {
            self.links.gone(&id, conn);
        }
    }
}

/// Answers one connection's calls.
#[derive(Clone)]
struct Handler {
    links: Links,
    conn: u64,
    identity: Identity,
}

impl Handler {
    async fn handle(self, req: Request) -> Result<Reply, RpcError> {
        let Request {
            method,
            params,
            ctx,
        } = req;
        let id = match &self.identity {
            Identity::Anonymous if method == methods::ENROLL => {
                return self.enroll(Args::one(methods::ENROLL, params)?).await
            }
            Identity::Anonymous => {
                let reason = "this connection has no client certificate: only `enroll` is allowed";
                if let Some(peer) = ctx.peer() {
                    refuse(peer, reason.into());
                }
                return Err(RpcError::new(link_codes::REFUSED, reason));
            }
            Identity::Agent(id) => id.clone(),
        };
        match method.as_str() {
            methods::HELLO => {
                let peer = ctx.peer().cloned();
                self.hello(&id, Args::one(methods::HELLO, params)?, peer)
                    .await
            }
            methods::HEARTBEAT => {
                self.heartbeat(&id, Args::one(methods::HEARTBEAT, params)?)
                    .await
            }
            methods::PACKAGE_FETCH => self.fetch(Args::one(methods::PACKAGE_FETCH, params)?).await,
            methods::RENEW => self.renew(&id, Args::one(methods::RENEW, params)?),
            methods::DISCOVER_WATCH => {
                self.discover(&id, Args::one(methods::DISCOVER_WATCH, params)?)
                    .await
            }
            methods::LOGS_LINE => {
                self.line(&id, Args::one(methods::LOGS_LINE, params)?);
                Ok(Reply::none())
            }
            config_methods::CONFIG_APPLIED => {
                let applied: ConfigApplied = Args::one(config_methods::CONFIG_APPLIED, params)?;
                self.links.applied(&id, applied).await;
                Ok(Reply::none())
            }
            methods::LOGS_END => {
                let end: LogsEnd = Args::one(methods::LOGS_END, params)?;
                let mut streams = self.links.inner.streams.lock().unwrap();
                if streams.get(&end.stream).is_some_and(|s| s.agent == id) {
                    streams.remove(&end.stream);
                }
                Ok(Reply::none())
            }
            other => Err(RpcError::method_not_found(other)),
        }
    }

    async fn enroll(&self, req: EnrollRequest) -> Result<Reply, RpcError> {
        check_report(&req.hostname, &req.labels)?;
        let join = &self.links.inner.deps.join;
        let grant = match join.redeem(&req.token).await {
            Ok(grant) => grant,
            Err(reason) => {
                join.enrolled(Enrollment::Refused {
                    credential: &req.token,
                    hostname: &req.hostname,
                    reason: &reason,
                })
                .await;
                return Err(RpcError::new(link_codes::JOIN_REFUSED, reason.to_string()));
            }
        };
        let hostname = req.hostname.clone();
        match self.record_enrolled(req, &grant).await {
            Ok((id, reply)) => {
                join.enrolled(Enrollment::Joined {
                    grant: &grant,
                    agent: &id,
                    hostname: &hostname,
                })
                .await;
                Ok(reply)
            }
            Err(error) => {
                join.enrolled(Enrollment::Failed {
                    grant: &grant,
                    hostname: &hostname,
                    error: &error.to_string(),
                })
                .await;
                Err(error)
            }
        }
    }

    /// Issues the certificate of a new agent under `grant` and records it in the registry.
    async fn record_enrolled(
        &self,
        req: EnrollRequest,
        grant: &JoinGrant,
    ) -> Result<(AgentId, Reply), RpcError> {
        let deps = &self.links.inner.deps;
        let id = new_agent_id();
        let issued = deps
            .pki
            .issue_agent(&req.csr_pem, &id, self.links.config().agent_lifetime)
            .map_err(|e| RpcError::new(link_codes::INVALID, e.to_string()))?;
        let now = Utc::now();
        let record = Record {
            id: id.clone(),
            hostname: req.hostname,
            namespace: grant
                .namespace
                .clone()
                .or(req.namespace)
                .unwrap_or_else(|| "default".into()),
            labels: req.labels,
            revoked: false,
            last_heartbeat: None,
            version: String::new(),
            apps: Vec::new(),
            token_id: grant.token_id.clone(),
            enrolled_at: now,
        };
        registry::create(deps.kv.as_ref(), &record)
            .await
            .map_err(|e| RpcError::internal(format!("recording the agent: {e}")))?;
        info!(agent = %id, token = %record.token_id, namespace = %record.namespace, "agent enrolled");
        let reply = Reply::encode(&Enrolled {
            agent_id: id.clone(),
            certificate_pem: issued.chain_pem,
            ca_pem: deps.pki.root_pem().to_owned(),
            not_after: Some(issued.not_after.into()),
        })?;
        Ok((id, reply))
    }

    async fn hello(
        &self,
        id: &str,
        report: AgentReport,
        peer: Option<Peer>,
    ) -> Result<Reply, RpcError> {
        check_report(&report.hostname, &report.labels)?;
        check_configs(&report.configs)?;
        check_endpoints(&report)?;
        let peer = peer.ok_or_else(|| RpcError::internal("hello without a connection"))?;
        let kv = self.links.inner.deps.kv.as_ref();
        let now = Utc::now();
        let record = registry::update(kv, id, |r| r.apply(&report, now))
            .await
            .map_err(|e| RpcError::internal(format!("recording the agent: {e}")))?;
        let known = record.is_some();
        if !known || self.links.is_revoked(id) {
            let reason = if known {
                format!("agent {id} was revoked by the center")
            } else {
                format!("agent {id} is unknown to this center: join it again with a new token")
            };
            refuse(&peer, reason.clone());
            return Err(RpcError::new(link_codes::REFUSED, reason));
        }
        let namespace = record.map(|r| r.namespace).unwrap_or_default();
        let held = report.configs.clone();
        let old = self.links.inner.live.lock().unwrap().insert(
            id.to_owned(),
            Live {
                conn: self.conn,
                peer,
                namespace: namespace.clone(),
                last_seen: Instant::now(),
                last_heartbeat: now,
                report,
                persisted: Instant::now(),
            },
        );
        if let Some(old) = old.filter(|o| o.conn != self.conn) {
            old.peer.close();
        }
        info!(agent = %id, "agent online");
        self.links.changed();
        // Whatever was released while it was away, or was lost on its last link.
        self.links.record_held(id, &namespace, &held).await;
        let mut memo = Contents::default();
        self.links.deliver_configs(id, None, &mut memo).await;
        Reply::encode(&Welcome {
            agent_id: id.to_owned(),
            heartbeat_ms: u64::try_from(self.links.config().heartbeat.as_millis())
                .unwrap_or(u64::MAX),
        })
    }

    async fn heartbeat(&self, id: &str, report: AgentReport) -> Result<Reply, RpcError> {
        check_report(&report.hostname, &report.labels)?;
        check_configs(&report.configs)?;
        check_endpoints(&report)?;
        let now = Utc::now();
        let (persist, held_changed, moved, namespace) = {
            let mut live = self.links.inner.live.lock().unwrap();
            let Some(link) = live.get_mut(id).filter(|l| l.conn == self.conn) else {
                return Err(RpcError::new(
                    link_codes::REFUSED,
                    "say `hello` first: this link is not registered",
                ));
            };
            let persist = link.report != report || link.persisted.elapsed() >= PERSIST_EVERY;
            let held_changed = link.report.configs != report.configs;
            let moved = endpoints(&link.report).ne(endpoints(&report));
            link.last_seen = Instant::now();
            link.last_heartbeat = now;
            if persist {
                link.persisted = Instant::now();
            }
            link.report = report.clone();
            (persist, held_changed, moved, link.namespace.clone())
        };
        if moved {
            self.links.reindex();
        }
        if persist {
            let kv = self.links.inner.deps.kv.as_ref();
            if let Err(error) = registry::update(kv, id, |r| r.apply(&report, now)).await {
                warn!(agent = %id, %error, "recording a heartbeat failed");
            }
        }
        if held_changed {
            self.links
                .record_held(id, &namespace, &report.configs)
                .await;
        }
        // A version the report does not show was lost on the way: sent again now.
        let mut memo = Contents::default();
        self.links.deliver_configs(id, None, &mut memo).await;
        Reply::encode(&())
    }

    async fn fetch(&self, req: PackageFetch) -> Result<Reply, RpcError> {
        let hex = req.sha256.len() == 64
            && req
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(RpcError::new(
                link_codes::INVALID,
                "package.fetch: sha256 must be 64 lowercase hex digits",
            ));
        }
        let data = self
            .links
            .inner
            .deps
            .packages
            .fetch(&req.sha256)
            .await
            .map_err(|e| RpcError::internal(format!("reading package {}: {e}", req.sha256)))?
            .ok_or_else(|| {
                RpcError::new(
                    link_codes::NO_PACKAGE,
                    format!("package {} is not in the center's repository", req.sha256),
                )
            })?;
        let start = usize::try_from(req.offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(CHUNK).min(data.len());
        Reply::encode(&PackageChunk {
            data: data[start..end].to_vec(),
            total: data.len() as u64,
        })
    }

    /// A service of the agent's namespace, from the registry: the API's answer, over the link.
    async fn discover(&self, id: &str, req: DiscoverWatch) -> Result<Reply, RpcError> {
        shoal_api::manifest::Name::new(&req.service).map_err(|e| {
            RpcError::new(link_codes::INVALID, format!("discover.watch: service: {e}"))
        })?;
        let namespace = {
            let live = self.links.inner.live.lock().unwrap();
            live.get(id)
                .filter(|l| l.conn == self.conn)
                .map(|l| l.namespace.clone())
        };
        let namespace = namespace.ok_or_else(|| {
            RpcError::new(
                link_codes::REFUSED,
                "say `hello` first: this link is not registered",
            )
        })?;
        let services = self.links.services();
        let answer = match req.after {
            None => services.get(&namespace, &req.service),
            Some(after) => {
                let wait = Duration::from_millis(req.wait_ms);
                services.watch(&namespace, &req.service, after, wait).await
            }
        };
        Reply::encode(&answer)
    }

    fn renew(&self, id: &str, req: Renewal) -> Result<Reply, RpcError> {
        let pki = &self.links.inner.deps.pki;
        let issued = pki
            .issue_agent(&req.csr_pem, id, self.links.config().agent_lifetime)
            .map_err(|e| RpcError::new(link_codes::INVALID, e.to_string()))?;
        info!(agent = %id, "agent certificate renewed");
        Reply::encode(&Enrolled {
            agent_id: id.to_owned(),
            certificate_pem: issued.chain_pem,
            ca_pem: pki.root_pem().to_owned(),
            not_after: Some(issued.not_after.into()),
        })
    }

    fn line(&self, id: &str, line: LogLine) {
        let streams = self.links.inner.streams.lock().unwrap();
        let Some(sink) = streams.get(&line.stream).filter(|s| s.agent == id) else {
            return;
        };
        if sink.tx.try_send(line).is_err() {
            debug!(agent = %id, "log line beyond the stream's credit dropped");
        }
    }
}

impl Links {
    /// Agent `id`'s connection `conn` closed: it is offline unless a newer link replaced it.
    fn gone(&self, id: &str, conn: u64) {
        let removed = {
            let mut live = self.inner.live.lock().unwrap();
            let ours = live.get(id).is_some_and(|l| l.conn == conn);
            ours.then(|| live.remove(id)).flatten()
        };
        if removed.is_some() {
            self.inner
                .streams
                .lock()
                .unwrap()
                .retain(|_, sink| sink.agent != id);
            info!(agent = %id, "agent offline: its link closed");
            self.changed();
        }
    }
}

/// Every endpoint a report names, app by app.
fn endpoints(report: &AgentReport) -> impl Iterator<Item = (&str, &str)> {
    report.apps.iter().flat_map(|app| {
        app.endpoints
            .iter()
            .map(|e| (app.name.as_str(), e.as_str()))
    })
}

/// A report's endpoints: at most [`MAX_ENDPOINTS`], each `host:port` of at most
/// [`MAX_TEXT`] bytes, so what one agent reports cannot spoil a service's set for its clients.
fn check_endpoints(report: &AgentReport) -> Result<(), RpcError> {
    let mut count = 0;
    for (app, addr) in endpoints(report) {
        count += 1;
        let well_formed = addr.len() <= MAX_TEXT
            && addr.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && !host.contains(char::is_whitespace)
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
        if !well_formed {
            return Err(RpcError::new(
                link_codes::INVALID,
                format!("app {app}: the endpoint {addr:?} is not host:port"),
            ));
        }
    }
    if count > MAX_ENDPOINTS {
        return Err(RpcError::new(
            link_codes::INVALID,
            format!("{count} endpoints in one report; at most {MAX_ENDPOINTS}"),
        ));
    }
    Ok(())
}

fn check_report(
    hostname: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), RpcError> {
    let long = |s: &String| s.len() > MAX_TEXT;
    if hostname.len() > MAX_TEXT
        || labels.len() > MAX_LABELS
        || labels.keys().any(long)
        || labels.values().any(long)
    {
        return Err(RpcError::new(
            link_codes::INVALID,
            format!(
                "a hostname and each label key and value are at most {MAX_TEXT} bytes, and an agent has at most {MAX_LABELS} labels"
            ),
        ));
    }
    Ok(())
}

/// Bounds what a report says of the configurations an agent holds: it is compared with the
/// releases at every heartbeat.
fn check_configs(configs: &[shoal_api::config::ConfigHeld]) -> Result<(), RpcError> {
    let long = configs
        .iter()
        .any(|c| c.name.len() > MAX_TEXT || c.sha256.len() > MAX_TEXT);
    if configs.len() > MAX_CONFIGS || long {
        return Err(RpcError::new(
            link_codes::INVALID,
            format!(
                "a report lists at most {MAX_CONFIGS} configurations, each name and sha256 at most {MAX_TEXT} bytes"
            ),
        ));
    }
    Ok(())
}

/// A new agent id: 20 lowercase letters and digits.
fn new_agent_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..20)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}
