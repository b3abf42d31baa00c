//! One agent's link to its center, kept up: connect with mutual TLS, `hello`, heartbeats
//! (and renewal of the certificate at two thirds of its life), serve the center's `exec`,
//! `logs` and `config.changed`, send `config.applied` as deliveries end; when the link drops,
//! connect again after a jittered, capped exponential backoff.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use shoal_api::config::{self, ConfigApplied, ConfigChanged};
use shoal_api::fleet::{
    methods, AgentReport, Enrolled, Exec, LogCredit, LogsEnd, LogsRequest, PackageChunk,
    PackageFetch, PackageRef, Refused, Renewal, Welcome, CENTER_NAME,
};
use shoal_rpc::conn::ConnConfig;
use shoal_rpc::{Addr, Args, ClientTls, Peer, Reply, Request, RpcError};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::center::CenterPeer;
use super::exec::{Fetch, FetchStream};
use super::host::Host;
use super::identity::{self, Identity};
use super::logs::Streams;
use super::{tls, LinkOptions};

/// What keeps one agent's link up.
pub(super) struct Session {
    pub host: Arc<dyn Host>,
    pub options: LinkOptions,
    pub identity: Arc<Mutex<Identity>>,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// Bumped each time the link said hello (tests and status wait on it).
    pub linked: tokio::sync::watch::Sender<u64>,
    /// Names the connection while it is up, for the programs' calls to the center.
    pub center: CenterPeer,
}

/// How one connection ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("hello: {0}")]
    Hello(String),
    #[error("the center refused the link: {0}")]
    Refused(String),
    #[error("the link closed")]
    Closed,
    #[error("a heartbeat failed: {0}")]
    Heartbeat(String),
    #[error("shutting down")]
    Shutdown,
}

impl Session {
    pub async fn run(self) {
        let (first, longest) = self.options.backoff;
        let mut pause = first;
        loop {
            let (greeted, ended) = self.once().await;
            if matches!(ended, Ended::Shutdown) {
                return;
            }
            if greeted {
                pause = first;
            }
            let center = self.options.center.clone();
            warn!(%center, error = %ended, retry_in = ?pause, "link to the center down");
            // Jitter: agents that lost one center at once do not all come back at once.
            let wait = pause.mul_f64(0.5 + fastrand::f64() / 2.0);
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            pause = (pause * 2).min(longest);
        }
    }

    /// One connection, from connect to close: whether it said hello, and why it ended.
    async fn once(&self) -> (bool, Ended) {
        let streams = Arc::new(Streams::default());
        let refused = Arc::new(Mutex::new(None));
        let (peer, local) = match self.connect(&streams, &refused).await {
            Ok(connected) => connected,
            Err(ended) => return (false, ended),
        };
        let timeout = self.options.call_timeout;
        // Before hello: an outcome from here on is sent, and an earlier one is in the report.
        let outcomes = self.host.config_outcomes();
        peer.negotiate(timeout).await;
        let hello = peer
            .call(methods::HELLO, &[self.report(local).await], timeout)
            .await;
        let ended = match hello.map(shoal_rpc::decode::from_value::<Welcome>) {
            Ok(Ok(welcome)) => {
                info!(agent = %welcome.agent_id, center = %self.options.center, "linked to the center");
                self.center.set(Some(peer.clone()));
                self.linked.send_modify(|n| *n += 1);
                let heartbeat = Duration::from_millis(welcome.heartbeat_ms.max(10));
                let ended = self.beat(&peer, heartbeat, local, outcomes).await;
                self.center.set(None);
                ended
            }
            Ok(Err(e)) => Ended::Hello(format!("the center's answer does not read: {e}")),
            Err(e) => Ended::Hello(e.to_string()),
        };
        peer.close();
        streams.stop_all();
        let greeted = !matches!(ended, Ended::Hello(_));
        let reason = refused.lock().unwrap().take();
        match reason {
            Some(reason) if !matches!(ended, Ended::Shutdown) => (greeted, Ended::Refused(reason)),
            _ => (greeted, ended),
        }
    }

    /// A connection to the center, and the local address it leaves from (where the center's
    /// network reaches this machine: the host of the apps' endpoints without `--advertise`).
    async fn connect(
        &self,
        streams: &Arc<Streams>,
        refused: &Arc<Mutex<Option<String>>>,
    ) -> Result<(Peer, IpAddr), Ended> {
        let config = tls::link_config(&self.identity.lock().unwrap()).map_err(Ended::Connect)?;
        let tls = ClientTls {
            config,
            server_name: Some(CENTER_NAME.to_owned()),
        };
        let addr = Addr::Tcp(self.options.center.clone());
        let connect = async {
            let stream = tokio::net::TcpStream::connect(self.options.center.as_str())
                .await
                .map_err(|e| format!("connect to {addr}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().map_err(|e| e.to_string())?.ip();
            let halves = shoal_rpc::transport::tls_connect(stream, &addr, &tls)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((halves, local))
        };
        let ((r, w), local) = tokio::select! {
            () = self.shutdown.cancelled() => return Err(Ended::Shutdown),
            c = connect => c.map_err(Ended::Connect)?,
        };
        let handler = Handler {
            host: self.host.clone(),
            streams: streams.clone(),
            refused: refused.clone(),
            tasks: self.tasks.clone(),
            call_timeout: self.options.call_timeout,
        };
        let peer = shoal_rpc::conn::spawn(
            r,
            w,
            self.options.center.clone(),
            tower::util::BoxCloneSyncService::new(tower::service_fn(move |req| {
                handler.clone().handle(req)
            })),
            ConnConfig::default(),
            self.shutdown.child_token(),
            &self.tasks,
        );
        Ok((peer, local))
    }

    /// Heartbeats until the link or the agent ends: every `every`, and at once when an app
    /// becomes healthy or stops being healthy, so its endpoints reach the center without
    /// waiting for the next beat (a stopping service leaves them as its stop begins). Sends
    /// each configuration delivery's outcome as it comes (one lost, or missed by a lagging
    /// receiver, is in the next report anyway).
    async fn beat(
        &self,
        peer: &Peer,
        every: Duration,
        local: IpAddr,
        mut outcomes: Option<broadcast::Receiver<ConfigApplied>>,
    ) -> Ended {
        let mut renewed = false;
        let mut serving = self.host.serving();
        let mut next = tokio::time::Instant::now() + every;
        loop {
            let outcome = async {
                match outcomes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.shutdown.cancelled() => return Ended::Shutdown,
                () = peer.closed() => return Ended::Closed,
                outcome = outcome => {
                    match outcome {
                        Ok(applied) => {
                            let _ = peer.notify(config::methods::CONFIG_APPLIED, &[applied]);
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => outcomes = None,
                    }
                    continue;
                }
                () = tokio::time::sleep_until(next) => {}
                () = changed(&mut serving) => {}
            }
            next = tokio::time::Instant::now() + every;
            let report = self.report(local).await;
            if let Err(e) = peer
                .call(methods::HEARTBEAT, &[report], self.options.call_timeout)
                .await
            {
                return Ended::Heartbeat(e.to_string());
            }
            let due = self.identity.lock().unwrap().renew_at();
            if !renewed && due.is_some_and(|at| at <= chrono::Utc::now()) {
                renewed = true;
                if let Err(error) = self.renew(peer).await {
                    warn!(%error, "renewing the agent's certificate failed; next link tries again");
                }
            }
        }
    }

    /// A new key and certificate over the live link, stored for the next connection.
    async fn renew(&self, peer: &Peer) -> Result<(), String> {
        let host = hostname();
        let (key_pem, csr_pem) =
            tokio::task::spawn_blocking(move || identity::new_key_and_csr(&host))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        let answer = peer
            .call(
                methods::RENEW,
                &[Renewal { csr_pem }],
                self.options.call_timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        let enrolled: Enrolled =
            shoal_rpc::decode::from_value(answer).map_err(|e| e.to_string())?;
        let mut next = self.identity.lock().unwrap().clone();
        next.key_pem = key_pem;
        next.cert_pem = enrolled.certificate_pem;
        next.issued_at = chrono::Utc::now();
        next.not_after = enrolled.not_after;
        let (dir, stored) = (self.host.data_dir().to_owned(), next.clone());
        tokio::task::spawn_blocking(move || identity::store(&dir, &stored))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        *self.identity.lock().unwrap() = next;
        info!("agent certificate renewed");
        Ok(())
    }

    async fn report(&self, local: IpAddr) -> AgentReport {
        AgentReport {
            hostname: hostname(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            labels: self.options.labels.clone(),
            apps: self.host.apps(Some(local)).await.unwrap_or_default(),
            configs: self.host.configs().await,
        }
    }
}

/// Waits for `serving` to change; forever without one, or once its sender is gone.
async fn changed(serving: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match serving {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *serving = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The host's name, as the center shows it.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Answers the center's calls on one connection.
#[derive(Clone)]
struct Handler {
    host: Arc<dyn Host>,
    streams: Arc<Streams>,
    refused: Arc<Mutex<Option<String>>>,
    tasks: TaskTracker,
    call_timeout: Duration,
}

impl Handler {
    async fn handle(self, req: Request) -> Result<Reply, RpcError> {
        let Request {
            method,
            params,
            ctx,
        } = req;
        let peer = ctx.peer().cloned();
        match method.as_str() {
            methods::EXEC => {
                let exec: Exec = Args::one(methods::EXEC, params)?;
                let peer = peer.ok_or_else(|| RpcError::internal("exec without a connection"))?;
                let fetch = Arc::new(PeerFetch {
                    peer,
                    timeout: self.call_timeout,
                });
                Reply::encode(&self.host.exec(exec, fetch).await)
            }
            methods::LOGS => {
                let req: LogsRequest = Args::one(methods::LOGS, params)?;
                let peer = peer.ok_or_else(|| RpcError::internal("logs without a connection"))?;
                self.streams
                    .start(self.host.as_ref(), req, peer, &self.tasks)
                    .await
                    .map_err(|e| RpcError::new(1000, e.chain()))?;
                Reply::encode(&())
            }
            methods::LOGS_CREDIT => {
                self.streams
                    .credit(Args::one::<LogCredit>(methods::LOGS_CREDIT, params)?);
                Ok(Reply::none())
            }
            methods::LOGS_STOP => {
                self.streams
                    .stop(Args::one::<LogsEnd>(methods::LOGS_STOP, params)?.stream);
                Ok(Reply::none())
            }
            config::methods::CONFIG_CHANGED => {
                let changed: ConfigChanged = Args::one(config::methods::CONFIG_CHANGED, params)?;
                self.host.config_changed(changed).await;
                Ok(Reply::none())
            }
            methods::REFUSED => {
                let refused: Refused = Args::one(methods::REFUSED, params)?;
                *self.refused.lock().unwrap() = Some(refused.reason);
                Ok(Reply::none())
            }
            other => Err(RpcError::method_not_found(other)),
        }
    }
}

/// Downloads a package over the link that asked for its install, a part per call.
struct PeerFetch {
    peer: Peer,
    timeout: Duration,
}

impl Fetch for PeerFetch {
    fn fetch(&self, package: &PackageRef) -> FetchStream {
        let (peer, timeout) = (self.peer.clone(), self.timeout);
        let (sha256, size) = (package.sha256.clone(), package.size);
        Box::pin(futures_util::stream::try_unfold(0u64, move |offset| {
            let (peer, sha256) = (peer.clone(), sha256.clone());
            async move {
                if offset >= size {
                    return Ok(None);
                }
                let request = PackageFetch { sha256, offset };
                let answer = peer
                    .call(methods::PACKAGE_FETCH, &[request], timeout)
                    .await
                    .map_err(|e| format!("fetching the package from the center: {e}"))?;
                let chunk: PackageChunk = shoal_rpc::decode::from_value(answer)
                    .map_err(|e| format!("the center's package part does not read: {e}"))?;
                if chunk.total != size || chunk.data.is_empty() {
                    return Err(format!(
                        "the center has {} bytes of the package, not the {size} its reference says",
                        chunk.total
                    )
                    .into());
                }
                let next = offset + chunk.data.len() as u64;
                Ok(Some((Bytes::from(chunk.data), next)))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    //! The configuration part of the link against a stand-in center on an in-memory
    //! connection: each heartbeat carries what the host holds, an outcome goes out as
    //! `config.applied`, and the center's `config.changed` reaches the host.

    use std::path::{Path, PathBuf};

    use futures_util::future::BoxFuture;
    use shoal_api::agent::{AppStatus, LogQuery};
    use shoal_api::config::{ConfigHeld, Delivery};
    use shoal_api::fleet::{TargetResult, TargetStatus};
    use shoal_api::manifest::Name;
    use tokio::sync::mpsc;

    use super::*;
    use crate::logs::Logs;
    use crate::AgentError;

    struct Stand {
        dir: PathBuf,
        changed: mpsc::UnboundedSender<ConfigChanged>,
        outcomes: broadcast::Sender<ConfigApplied>,
    }

    fn held() -> ConfigHeld {
        ConfigHeld {
            name: "shop".into(),
            version: 4,
            sha256: "ab".into(),
            delivery: Delivery::Pending,
        }
    }

    impl Host for Stand {
        fn data_dir(&self) -> &Path {
            &self.dir
        }
        fn apps(&self, _: Option<IpAddr>) -> BoxFuture<'_, Result<Vec<AppStatus>, AgentError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn exec(
            &self,
            _: Exec,
            _: Arc<dyn super::super::exec::Fetch>,
        ) -> BoxFuture<'_, TargetResult> {
            Box::pin(async {
                TargetResult {
                    status: TargetStatus::Error,
                    message: "no commands here".into(),
                    detail: None,
                    duration_ms: None,
                }
            })
        }
        fn logs<'a>(
            &'a self,
            _: &'a Name,
            _: &'a LogQuery,
        ) -> BoxFuture<'a, Result<Logs, AgentError>> {
            Box::pin(async { Err(AgentError::invalid("no logs here")) })
        }
        fn configs(&self) -> BoxFuture<'_, Vec<ConfigHeld>> {
            Box::pin(async { vec![held()] })
        }
        fn config_changed(&self, changed: ConfigChanged) -> BoxFuture<'_, ()> {
            let _ = self.changed.send(changed);
            Box::pin(async {})
        }
        fn config_outcomes(&self) -> Option<broadcast::Receiver<ConfigApplied>> {
            Some(self.outcomes.subscribe())
        }
    }

    /// What the stand-in center heard.
    enum Heard {
        Report(AgentReport),
        Applied(ConfigApplied),
    }

    #[tokio::test]
    async fn reports_carry_what_is_held_and_outcomes_and_versions_cross_the_link() {
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
        let host = Arc::new(Stand {
            dir: std::env::temp_dir(),
            changed: changed_tx,
            outcomes: broadcast::channel(8).0,
        });
        let ((ar, aw), (cr, cw)) = shoal_rpc::transport::memory_pair();
        let (heard_tx, mut heard) = mpsc::unbounded_channel();
        let center = shoal_rpc::conn::spawn(
            cr,
            cw,
            "agent",
            tower::util::BoxCloneSyncService::new(tower::service_fn(move |req: Request| {
                let heard = heard_tx.clone();
                async move {
                    match req.method.as_str() {
                        methods::HEARTBEAT => {
                            let _ = heard
                                .send(Heard::Report(Args::one(methods::HEARTBEAT, req.params)?));
                            Reply::encode(&())
                        }
                        config::methods::CONFIG_APPLIED => {
                            let applied = Args::one(config::methods::CONFIG_APPLIED, req.params)?;
                            let _ = heard.send(Heard::Applied(applied));
                            Ok(Reply::none())
                        }
                        other => Err(RpcError::method_not_found(other)),
                    }
                }
            })),
            ConnConfig::default(),
            stop.child_token(),
            &tasks,
        );
        let handler = Handler {
            host: host.clone(),
            streams: Arc::default(),
            refused: Arc::default(),
            tasks: tasks.clone(),
            call_timeout: Duration::from_secs(10),
        };
        let agent = shoal_rpc::conn::spawn(
            ar,
            aw,
            "center",
            tower::util::BoxCloneSyncService::new(tower::service_fn(move |req| {
                handler.clone().handle(req)
            })),
            ConnConfig::default(),
            stop.child_token(),
            &tasks,
        );
        let session = Session {
            host: host.clone(),
            options: LinkOptions::new("center"),
            identity: Arc::new(Mutex::new(Identity {
                agent_id: "a1".into(),
                center: "center".into(),
                key_pem: String::new(),
                cert_pem: String::new(),
                ca_pem: String::new(),
                issued_at: chrono::Utc::now(),
                not_after: None,
            })),
            tasks: tasks.clone(),
            shutdown: stop.clone(),
            linked: tokio::sync::watch::Sender::new(0),
            center: CenterPeer::none(),
        };
        let outcomes = host.config_outcomes();
        let beating = tokio::spawn(async move {
            session
                .beat(
                    &agent,
                    Duration::from_millis(10),
                    IpAddr::from([127, 0, 0, 1]),
                    outcomes,
                )
                .await
        });

        match heard.recv().await.unwrap() {
            Heard::Report(report) => assert_eq!(report.configs, [held()]),
            Heard::Applied(_) => panic!("an outcome before any was sent"),
        }
        let applied = ConfigApplied {
            name: "shop".into(),
            version: 4,
            delivery: Delivery::Applied,
        };
        host.outcomes.send(applied.clone()).unwrap();
        loop {
            match heard.recv().await.unwrap() {
                Heard::Applied(got) => break assert_eq!(got, applied),
                Heard::Report(_) => {}
            }
        }
        let version = ConfigChanged {
            name: "shop".into(),
            version: 5,
            sha256: "cd".into(),
            data: b"a = 1\n".to_vec(),
        };
        center
            .notify(
                config::methods::CONFIG_CHANGED,
                std::slice::from_ref(&version),
            )
            .unwrap();
        assert_eq!(changed_rx.recv().await.unwrap(), version);

        // Cancelled, the beat ends (seeing the shutdown or its connection closing first).
        stop.cancel();
        let ended = beating.await.unwrap();
        assert!(matches!(ended, Ended::Shutdown | Ended::Closed), "{ended}");
        tasks.close();
        tasks.wait().await;
    }
}
