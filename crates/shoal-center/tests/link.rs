//! The agents' port over real TLS on 127.0.0.1: enrollment, `hello` and the registry, the
//! certificates it refuses, revocation, heartbeats, calls both ways, the endpoints registry
//! and `discover.watch`, and a malformed frame.
//! The agent here is a bare MessagePack-RPC peer written for the test, so that each rule of
//! the center is exercised on its own.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use shoal_api::agent::LogQuery;
use shoal_api::fleet::{
    codes, methods, Action, AgentReport, DiscoverWatch, EnrollRequest, Enrolled, Exec, LogLine,
    LogsEnd, LogsRequest, PackageChunk, PackageFetch, Refused, Renewal, ServiceEndpoint,
    ServiceEndpoints, TargetResult, TargetStatus, Welcome, CENTER_NAME,
};
use shoal_center::config::Configs;
use shoal_center::link::{
    self, JoinAuthority, JoinGrant, JoinRefused, LinkConfig, LinkDeps, LinkError, Links,
    PackageSource,
};
use shoal_center::pki::Pki;
use shoal_rpc::conn::ConnConfig;
use shoal_rpc::{Addr, Peer, Reply, Request, RpcError};
use shoal_store::{Kv, Sqlite, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const JOIN: &str = "shoal_tok1_s3cret";
const WAIT: Duration = Duration::from_secs(10);

/// Accepts one credential; counts every redeem.
#[derive(Default)]
struct TestJoin {
    redeemed: AtomicUsize,
}

#[async_trait]
impl JoinAuthority for TestJoin {
    async fn redeem(&self, credential: &str) -> Result<JoinGrant, JoinRefused> {
        self.redeemed.fetch_add(1, Ordering::SeqCst);
        if credential == JOIN {
            Ok(JoinGrant {
                token_id: "tok1".into(),
                namespace: None,
            })
        } else {
            Err(JoinRefused::Unknown)
        }
    }
}

#[derive(Default)]
struct TestPackages(HashMap<String, Bytes>);

#[async_trait]
impl PackageSource for TestPackages {
    async fn fetch(&self, sha256: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.0.get(sha256).cloned())
    }
}

/// A scratch directory removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "shoal-link-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A center's link served on 127.0.0.1.
struct Center {
    links: Links,
    pki: Arc<Pki>,
    store: Sqlite,
    join: Arc<TestJoin>,
    addr: String,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    _dir: Arc<Scratch>,
}

impl Center {
    async fn start(name: &str, heartbeat: Duration) -> Center {
        let dir = Arc::new(Scratch::new(name));
        let store = Sqlite::open(dir.0.join("store/center.db")).unwrap();
        let pki = Arc::new(Pki::load(&dir.0, vec![]).await.unwrap());
        Center::serve(dir, store, pki, heartbeat).await
    }

    async fn serve(dir: Arc<Scratch>, store: Sqlite, pki: Arc<Pki>, heartbeat: Duration) -> Center {
        let kv: Arc<dyn Kv> = Arc::new(store.clone());
        let join = Arc::new(TestJoin::default());
        let mut packages = TestPackages::default();
        packages
            .0
            .insert("ab".repeat(32), Bytes::from(vec![7u8; 2_500_000]));
        let deps = LinkDeps {
            kv: kv.clone(),
            pki: pki.clone(),
            join: join.clone(),
            packages: Arc::new(packages),
            configs: Configs::new(kv.clone(), Arc::new(store.clone())),
        };
        let config = LinkConfig {
            heartbeat,
            ..LinkConfig::default()
        };
        let links = Links::new(deps, config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        let served = tokio::spawn(link::serve(links.clone(), listener, stop.clone()));
        let served = tokio::spawn(async move { served.await.unwrap().unwrap() });
        Center {
            links,
            pki,
            store,
            join,
            addr,
            stop,
            served,
            _dir: dir,
        }
    }

    async fn stop(self) -> (Arc<Scratch>, Sqlite, Arc<Pki>) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.served)
            .await
            .unwrap()
            .unwrap();
        (self._dir, self.store, self.pki)
    }
}

/// What the test agent saw from the center.
#[derive(Default)]
struct Seen {
    execs: AtomicUsize,
    refused: Mutex<Option<String>>,
    stopped: Mutex<Vec<u64>>,
    stop_came: tokio::sync::Notify,
}

/// A bare agent: one connection, a handler that records what the center asks.
struct TestAgent {
    peer: Peer,
    seen: Arc<Seen>,
    tasks: TaskTracker,
}

impl TestAgent {
    /// Connects with `identity` (key PEM, chain PEM) or none; trusts the center's root.
    async fn connect(center: &Center, identity: Option<(&str, &str)>) -> Result<TestAgent, String> {
        let tls = common::link_tls(center.pki.root_pem(), identity);
        let (r, w) = shoal_rpc::transport::connect(&Addr::Tcp(center.addr.clone()), Some(&tls))
            .await
            .map_err(|e| e.to_string())?;
        let seen = Arc::new(Seen::default());
        let tasks = TaskTracker::new();
        let handler = {
            let (seen, tasks) = (seen.clone(), tasks.clone());
            tower::service_fn(move |req: Request| {
                let (seen, tasks) = (seen.clone(), tasks.clone());
                async move { answer(req, &seen, &tasks) }
            })
        };
        let peer = shoal_rpc::conn::spawn(
            r,
            w,
            center.addr.clone(),
            tower::util::BoxCloneSyncService::new(handler),
            ConnConfig::default(),
            CancellationToken::new(),
            &tasks,
        );
        Ok(TestAgent { peer, seen, tasks })
    }

    async fn hello(&self) -> Result<Welcome, shoal_rpc::Error> {
        let value = self
            .peer
            .call(methods::HELLO, &[report()], Duration::from_secs(5))
            .await?;
        Ok(decode(value).unwrap())
    }

    async fn closed(&self) {
        tokio::time::timeout(WAIT, self.peer.closed())
            .await
            .expect("the center closes the link");
    }

    async fn close(self) {
        self.peer.close();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn answer(req: Request, seen: &Seen, tasks: &TaskTracker) -> Result<Reply, RpcError> {
    let arg = req.params.into_iter().next().unwrap_or(rmpv::Value::Nil);
    match req.method.as_str() {
        methods::EXEC => {
            let exec: Exec = decode(arg).unwrap();
            seen.execs.fetch_add(1, Ordering::SeqCst);
            Reply::encode(&TargetResult {
                status: TargetStatus::Ok,
                message: format!("ran {}", exec.command),
                detail: None,
                duration_ms: Some(1),
            })
        }
        methods::LOGS => {
            let request: LogsRequest = decode(arg).unwrap();
            let peer = req.ctx.peer().unwrap().clone();
            tasks.spawn(async move {
                for n in 0..3 {
                    let line = LogLine {
                        stream: request.stream,
                        line: format!("line {n}"),
                    };
                    peer.notify(methods::LOGS_LINE, &[line]).unwrap();
                }
            });
            Reply::encode(&())
        }
        methods::LOGS_STOP => {
            let end: LogsEnd = decode(arg).unwrap();
            seen.stopped.lock().unwrap().push(end.stream);
            seen.stop_came.notify_one();
            Ok(Reply::none())
        }
        methods::REFUSED => {
            let refused: Refused = decode(arg).unwrap();
            *seen.refused.lock().unwrap() = Some(refused.reason);
            Ok(Reply::none())
        }
        other => Err(RpcError::method_not_found(other)),
    }
}

/// A value as `T`, as the link reads its values.
fn decode<T: serde::de::DeserializeOwned>(value: rmpv::Value) -> Result<T, String> {
    shoal_rpc::decode::from_value(value)
}

fn report() -> AgentReport {
    AgentReport {
        hostname: "test-host".into(),
        version: "0.1.0".into(),
        labels: [("role".to_owned(), "web".to_owned())].into(),
        apps: vec![],
        configs: vec![],
    }
}

/// A key and a certificate request for it.
fn key_and_csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key.serialize_pem(), csr)
}

/// Enrolls through the port; (agent id, key PEM, chain PEM).
async fn enroll(center: &Center) -> (String, String, String) {
    let (key, csr) = key_and_csr();
    let agent = TestAgent::connect(center, None).await.unwrap();
    let request = EnrollRequest {
        token: JOIN.into(),
        csr_pem: csr,
        hostname: "test-host".into(),
        namespace: None,
        labels: Default::default(),
    };
    let value = agent
        .peer
        .call(methods::ENROLL, &[request], Duration::from_secs(5))
        .await
        .unwrap();
    let enrolled: Enrolled = decode(value).unwrap();
    assert_eq!(enrolled.ca_pem, center.pki.root_pem());
    agent.close().await;
    (enrolled.agent_id, key, enrolled.certificate_pem)
}

/// Waits until `check` holds, at most [`WAIT`], waking on every change of the registry.
async fn until(links: &Links, check: impl Fn() -> bool) {
    let mut changes = links.changes();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        tokio::time::timeout_at(deadline, changes.changed())
            .await
            .expect("the condition within the deadline")
            .unwrap();
    }
}

#[tokio::test]
async fn an_agent_enrolls_says_hello_and_keeps_its_id_when_it_comes_back() {
    let center = Center::start("enroll", Duration::from_secs(5)).await;
    let (id, key, chain) = enroll(&center).await;
    assert_eq!(id.len(), 20);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    let agents = center.links.agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert!(!agents[0].online);

    let agent = TestAgent::connect(&center, Some((&key, &chain)))
        .await
        .unwrap();
    assert_eq!(agent.hello().await.unwrap().agent_id, id);
    assert!(center.links.is_online(&id));
    let info = center.links.agent(&id).await.unwrap().unwrap();
    assert_eq!((info.hostname.as_str(), info.online), ("test-host", true));
    assert_eq!(info.labels.get("role").map(String::as_str), Some("web"));

    agent.close().await;
    until(&center.links, || !center.links.is_online(&id)).await;

    // The same certificate again: the same agent, not a new one.
    let again = TestAgent::connect(&center, Some((&key, &chain)))
        .await
        .unwrap();
    assert_eq!(again.hello().await.unwrap().agent_id, id);
    let agents = center.links.agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert!(agents[0].online);
    again.close().await;
    center.stop().await;
}

#[tokio::test]
async fn a_refused_join_token_says_why_and_issues_nothing() {
    let center = Center::start("badtoken", Duration::from_secs(5)).await;
    let agent = TestAgent::connect(&center, None).await.unwrap();
    let (_, csr) = key_and_csr();
    let request = EnrollRequest {
        token: "shoal_tok1_wrong".into(),
        csr_pem: csr,
        hostname: "h".into(),
        namespace: None,
        labels: Default::default(),
    };
    let err = agent
        .peer
        .call(methods::ENROLL, &[request], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::JOIN_REFUSED));
    assert!(err.to_string().contains("unknown"), "{err}");
    assert!(center.links.agents().await.unwrap().is_empty());
    agent.close().await;

    // Without a certificate, nothing but enroll: refused with a reason, then closed.
    let anonymous = TestAgent::connect(&center, None).await.unwrap();
    assert!(anonymous.hello().await.is_err());
    anonymous.closed().await;
    let reason = anonymous.seen.refused.lock().unwrap().clone().unwrap();
    assert!(reason.contains("only `enroll`"), "{reason}");
    anonymous.close().await;
    center.stop().await;
}

/// A certificate the port must not take: the handshake or the first call fails, and no agent
/// comes online.
async fn check_refused(center: &Center, key: &str, chain: &str, what: &str) {
    let before = center.join.redeemed.load(Ordering::SeqCst);
    match TestAgent::connect(center, Some((key, chain))).await {
        Err(_) => {}
        Ok(agent) => {
            let hello = agent.hello().await;
            assert!(hello.is_err(), "{what}: hello answered {hello:?}");
            agent.close().await;
        }
    }
    assert!(
        center
            .links
            .agents()
            .await
            .unwrap()
            .iter()
            .all(|a| !a.online),
        "{what}: an agent came online"
    );
    assert_eq!(center.join.redeemed.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn certificates_from_elsewhere_expired_or_of_a_center_are_refused() {
    let center = Center::start("refuse", Duration::from_secs(5)).await;
    let (id, _, _) = enroll(&center).await;

    // Another authority's agent certificate, for the same id.
    let other = Scratch::new("other-ca");
    let other_pki = Pki::load(&other.0, vec![]).await.unwrap();
    let (key, csr) = key_and_csr();
    let foreign = other_pki
        .issue_agent(&csr, &id, Duration::from_secs(3600))
        .unwrap();
    check_refused(&center, &key, &foreign.chain_pem, "another CA").await;

    // This center's own authority, but expired.
    let (key, csr) = key_and_csr();
    let past = SystemTime::now() - Duration::from_secs(7200);
    let expired = center
        .pki
        .issue_agent_between(&csr, &id, past, past + Duration::from_secs(3600))
        .unwrap();
    check_refused(&center, &key, &expired.chain_pem, "expired").await;

    // A center's certificate (client auth too) shown as an agent's.
    let (key, csr) = key_and_csr();
    let as_center = center
        .pki
        .issue_center(&csr, "other-center", Duration::from_secs(3600))
        .unwrap();
    check_refused(
        &center,
        &key,
        &as_center.chain_pem,
        "a center's certificate",
    )
    .await;
    center.stop().await;
}

#[tokio::test]
async fn revoking_closes_the_link_at_once_and_refuses_it_after_a_restart() {
    let center = Center::start("revoke", Duration::from_secs(5)).await;
    let (id, key, chain) = enroll(&center).await;
    let agent = TestAgent::connect(&center, Some((&key, &chain)))
        .await
        .unwrap();
    agent.hello().await.unwrap();

    assert!(center.links.revoke(&id).await.unwrap());
    agent.closed().await;
    let reason = agent.seen.refused.lock().unwrap().clone().unwrap();
    assert!(reason.contains("revoked"), "{reason}");
    assert!(!center.links.is_online(&id));
    agent.close().await;

    let again = TestAgent::connect(&center, Some((&key, &chain)))
        .await
        .unwrap();
    assert!(again.hello().await.is_err());
    again.closed().await;
    again.close().await;

    // A new center process on the same store still refuses it.
    let heartbeat = center.links.config().heartbeat;
    let (dir, store, pki) = center.stop().await;
    let center = Center::serve(dir, store, pki, heartbeat).await;
    let after = TestAgent::connect(&center, Some((&key, &chain)))
        .await
        .unwrap();
    assert!(after.hello().await.is_err());
    after.closed().await;
    assert!(after
        .seen
        .refused
        .lock()
        .unwrap()
        .as_deref()
        .unwrap()
        .contains("revoked"));
    after.close().await;
    let info = center.links.agent(&id).await.unwrap().unwrap();
    assert!(info.revoked && !info.online);
    center.stop().await;
}

#[tokio::test]
async fn an_agent_is_offline_after_three_missed_heartbeats() {
    let heartbeat = Duration::from_millis(150);
    let center = Center::start("heartbeat", heartbeat).await;
    let (id, key, chain) = enroll(&center).await;
    let agent = TestAgent::connect(&center, Some((&key, &chain)))
        .await
        .unwrap();
    agent.hello().await.unwrap();
    let since = tokio::time::Instant::now();

    // Heartbeats keep it online well past three intervals.
    let mut beat = tokio::time::interval(heartbeat / 2);
    while since.elapsed() < heartbeat * 6 {
        beat.tick().await;
        agent
            .peer
            .call(methods::HEARTBEAT, &[report()], Duration::from_secs(5))
            .await
            .unwrap();
        assert!(center.links.is_online(&id));
    }

    // Then silence: offline, not before three intervals.
    let silent = tokio::time::Instant::now();
    until(&center.links, || !center.links.is_online(&id)).await;
    assert!(silent.elapsed() >= heartbeat * 2, "{:?}", silent.elapsed());
    let info = center.links.agent(&id).await.unwrap().unwrap();
    assert!(!info.online && info.last_heartbeat.is_some());
    // The silent link is closed; the agent comes back with the same id.
    agent.closed().await;
    agent.close().await;
    let back = TestAgent::connect(&center, Some((&key, &chain)))
        .await
        .unwrap();
    assert_eq!(back.hello().await.unwrap().agent_id, id);
    back.close().await;
    center.stop().await;
}

#[tokio::test]
async fn calls_go_both_ways_exec_logs_and_packages() {
    let center = Center::start("calls", Duration::from_secs(5)).await;
    let (id, key, chain) = enroll(&center).await;
    let agent = TestAgent::connect(&center, Some((&key, &chain)))
        .await
        .unwrap();
    agent.hello().await.unwrap();

    let exec = Exec {
        command: "c1".into(),
        action: Action::Ps,
        package: None,
    };
    let result = center
        .links
        .exec(&id, exec.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(result.message, "ran c1");
    let offline = center
        .links
        .exec("nobody", exec, Duration::from_secs(5))
        .await;
    assert!(matches!(offline, Err(LinkError::Offline(_))), "{offline:?}");

    // A package in parts.
    let sha = "ab".repeat(32);
    let mut got = Vec::new();
    loop {
        let request = PackageFetch {
            sha256: sha.clone(),
            offset: got.len() as u64,
        };
        let value = agent
            .peer
            .call(methods::PACKAGE_FETCH, &[request], Duration::from_secs(5))
            .await
            .unwrap();
        let chunk: PackageChunk = decode(value).unwrap();
        assert!(!chunk.data.is_empty());
        got.extend_from_slice(&chunk.data);
        if got.len() as u64 == chunk.total {
            break;
        }
    }
    assert_eq!(got, vec![7u8; 2_500_000]);
    let missing = PackageFetch {
        sha256: "cd".repeat(32),
        offset: 0,
    };
    let err = agent
        .peer
        .call(methods::PACKAGE_FETCH, &[missing], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::NO_PACKAGE));

    // Logs: the lines come, and dropping the stream stops it on the agent.
    let mut stream = center
        .links
        .logs(&id, "hello", LogQuery::default(), Duration::from_secs(5))
        .await
        .unwrap();
    let stream_id = stream.id();
    for n in 0..3 {
        let line = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(line.line, format!("line {n}"));
    }
    drop(stream);
    tokio::time::timeout(WAIT, agent.seen.stop_came.notified())
        .await
        .expect("logs.stop comes");
    assert_eq!(*agent.seen.stopped.lock().unwrap(), vec![stream_id]);
    assert_eq!(agent.seen.execs.load(Ordering::SeqCst), 1);
    agent.close().await;
    center.stop().await;
}

#[tokio::test]
async fn renewal_gives_a_certificate_for_a_new_key_and_the_same_id() {
    let center = Center::start("renew", Duration::from_secs(5)).await;
    let (id, key, chain) = enroll(&center).await;
    let agent = TestAgent::connect(&center, Some((&key, &chain)))
        .await
        .unwrap();
    agent.hello().await.unwrap();
    let (new_key, csr) = key_and_csr();
    let value = agent
        .peer
        .call(
            methods::RENEW,
            &[Renewal { csr_pem: csr }],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let renewed: Enrolled = decode(value).unwrap();
    assert_eq!(renewed.agent_id, id);
    assert_ne!(renewed.certificate_pem, chain);
    agent.close().await;

    let again = TestAgent::connect(&center, Some((&new_key, &renewed.certificate_pem)))
        .await
        .unwrap();
    assert_eq!(again.hello().await.unwrap().agent_id, id);
    again.close().await;

    // A request that is not a CSR is refused, naming what is expected.
    let agent = TestAgent::connect(&center, Some((&new_key, &renewed.certificate_pem)))
        .await
        .unwrap();
    agent.hello().await.unwrap();
    let bad = Renewal {
        csr_pem: "not a request".into(),
    };
    let err = agent
        .peer
        .call(methods::RENEW, &[bad], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::INVALID));
    assert!(
        err.to_string().contains("certificate signing request"),
        "{err}"
    );
    agent.close().await;
    center.stop().await;
}

#[tokio::test]
async fn a_malformed_frame_closes_only_its_own_connection() {
    let center = Center::start("malformed", Duration::from_secs(5)).await;
    let (id, key, chain) = enroll(&center).await;
    let agent = TestAgent::connect(&center, Some((&key, &chain)))
        .await
        .unwrap();
    agent.hello().await.unwrap();

    // A TLS connection that sends bytes no MessagePack message starts with.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(center.pki.root_pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&center.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(CENTER_NAME).unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(&[0xc1; 64]).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the malformed connection stays open");

    // The agent's link is untouched.
    assert!(center.links.is_online(&id));
    let exec = Exec {
        command: "after".into(),
        action: Action::Ps,
        package: None,
    };
    let result = center
        .links
        .exec(&id, exec, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(result.status, TargetStatus::Ok);
    agent.close().await;
    center.stop().await;
}

/// The report of an agent running `web`, healthy, at `addrs`.
fn serving(addrs: &[&str]) -> AgentReport {
    use shoal_api::agent::{AppKind, AppState, AppStatus};
    let web = AppStatus {
        pid: Some(42),
        uptime_secs: Some(1),
        endpoints: addrs.iter().map(|a| (*a).to_owned()).collect(),
        ..AppStatus::new(
            "web".into(),
            "1.0.0".into(),
            AppKind::Service,
            AppState::Running,
        )
    };
    AgentReport {
        apps: vec![web],
        ..report()
    }
}

#[tokio::test]
async fn an_agent_s_endpoints_reach_the_registry_and_discover_watch_answers_when_they_change() {
    let center = Center::start("discover", Duration::from_secs(5)).await;
    let (id, key, chain) = enroll(&center).await;
    let agent = TestAgent::connect(&center, Some((&key, &chain)))
        .await
        .unwrap();
    let watch = |after: Option<u64>| DiscoverWatch {
        service: "web".into(),
        after,
        wait_ms: 20_000,
    };
    // Before hello: refused.
    let early = agent
        .peer
        .call(methods::DISCOVER_WATCH, &[watch(None)], WAIT)
        .await
        .unwrap_err();
    assert_eq!(early.code(), Some(codes::REFUSED), "{early}");
    agent.hello().await.unwrap();
    let call = |req: DiscoverWatch| {
        let peer = agent.peer.clone();
        async move {
            let value = peer
                .call(methods::DISCOVER_WATCH, &[req], WAIT * 3)
                .await
                .unwrap();
            decode::<ServiceEndpoints>(value).unwrap()
        }
    };
    let empty = call(watch(None)).await;
    assert_eq!((empty.revision, empty.namespace.as_str()), (0, "default"));
    assert!(empty.endpoints.is_empty());

    // A long poll from revision 0 answers once a heartbeat brings an endpoint.
    let polled = tokio::spawn(call(watch(Some(0))));
    agent
        .peer
        .call(methods::HEARTBEAT, &[serving(&["10.0.0.5:7000"])], WAIT)
        .await
        .unwrap();
    let found = tokio::time::timeout(WAIT, polled).await.unwrap().unwrap();
    assert_eq!(
        found.endpoints,
        [ServiceEndpoint {
            agent: id.clone(),
            addr: "10.0.0.5:7000".into()
        }]
    );
    assert_eq!(center.links.services().get("default", "web"), found);
    // The same report again changes nothing; the agent going away empties the set.
    agent
        .peer
        .call(methods::HEARTBEAT, &[serving(&["10.0.0.5:7000"])], WAIT)
        .await
        .unwrap();
    assert_eq!(center.links.services().get("default", "web"), found);
    let bad = agent
        .peer
        .call(
            methods::DISCOVER_WATCH,
            &[DiscoverWatch {
                service: "../web".into(),
                after: None,
                wait_ms: 0,
            }],
            WAIT,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("discover.watch: service:"), "{bad}");
    // A malformed endpoint is refused, and the set stays as it was.
    let refused = agent
        .peer
        .call(methods::HEARTBEAT, &[serving(&["no port here"])], WAIT)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("is not host:port"), "{refused}");
    assert_eq!(center.links.services().get("default", "web"), found);
    agent.close().await;
    let gone = center
        .links
        .services()
        .watch("default", "web", found.revision, WAIT)
        .await;
    assert_eq!((gone.revision, gone.endpoints.len()), (0, 0));
    center.stop().await;
}
