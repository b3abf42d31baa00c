//! Central configuration end to end: a center as `run` starts it on loopback, and stand-in
//! agents that enroll and speak the real link (TLS, `hello`, `heartbeat`, `config.changed`,
//! `config.applied`), each heartbeat sent by the test so every delivery is checked at a known
//! point: a push reaches the app with the right sha256 and data, a lost push comes back with
//! the next heartbeat and an agent that was away gets it on its `hello`, a report holding the
//! desired version gets nothing; gray releases by ids, label and percentage reach only their
//! members; promote; rollback; `status` (applied, pending, rejected with the reason, offline,
//! and after a restart); promote and rollback racing; namespaces.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use shoal_api::agent::{AppKind, AppState, AppStatus};
use shoal_api::center::{ConfigPush, ConfigStatus, GrayTarget, InstanceState, Role};
use shoal_api::config::{
    methods as config_methods, ConfigApplied, ConfigChanged, ConfigHeld, Delivery,
};
use shoal_api::fleet::{methods, AgentReport, EnrollRequest, Enrolled};
use shoal_api::token::TokenText;
use shoal_center::client::{CenterClient, ClientError};
use shoal_center::link::LinkConfig;
use shoal_rpc::conn::ConnConfig;
use shoal_rpc::{Addr, Peer, Reply, Request, RpcError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(10);
const APP: &str = "shop";

/// A center started by `run` in a scratch directory.
struct Center {
    dir: std::path::PathBuf,
    link: String,
    url: String,
    admin: String,
    root_pem: String,
    stop: CancellationToken,
    stopped: tokio::task::JoinHandle<()>,
}

impl Center {
    async fn start(name: &str) -> Center {
        let dir = std::env::temp_dir().join(format!(
            "shoal-config-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        Center::start_in(dir).await
    }

    async fn start_in(dir: std::path::PathBuf) -> Center {
        let mut config = shoal_center::Config::new(&dir);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.http = "127.0.0.1:0".parse().unwrap();
        // Heartbeats are the test's to send; a long interval keeps the sweep out of the way.
        config.link = LinkConfig {
            heartbeat: Duration::from_secs(30),
            ..LinkConfig::default()
        };
        let stop = CancellationToken::new();
        let running = shoal_center::run(config, stop.clone()).await.unwrap();
        let admin = match &running.admin_token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(&running.admin_token_file)
                .unwrap()
                .trim()
                .to_owned(),
        };
        Center {
            link: running.listen.to_string(),
            url: format!("http://{}", running.http),
            admin,
            root_pem: std::fs::read_to_string(dir.join("pki/root.pem")).unwrap(),
            dir,
            stop,
            stopped: tokio::spawn(running.stopped()),
        }
    }

    /// Stops it; its directory stays for [`Center::start_in`].
    async fn stop(self) -> std::path::PathBuf {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.stopped)
            .await
            .unwrap()
            .unwrap();
        self.dir
    }

    fn client(&self, token: &str) -> CenterClient {
        CenterClient::new(&self.url, token).unwrap()
    }

    fn admin(&self) -> CenterClient {
        self.client(&self.admin)
    }

    async fn token(&self, role: Role, namespace: Option<&str>) -> String {
        common::create_token(&self.admin(), role, namespace).await
    }

    async fn push(&self, content: &str, gray: Option<GrayTarget>) -> u64 {
        let push = ConfigPush {
            content: content.into(),
            message: Some("test".into()),
            gray,
        };
        let pushed = self.admin().config_push(None, APP, &push).await.unwrap();
        pushed.version.version
    }

    async fn status(&self) -> ConfigStatus {
        self.admin().config_status(None, APP).await.unwrap()
    }
}

/// An enrolled agent's identity.
#[derive(Clone)]
struct Identity {
    id: String,
    key: String,
    chain: String,
}

/// A stand-in agent on one link: it reports what the test says it holds, and hands every
/// `config.changed` to the test.
struct StandIn {
    id: String,
    identity: Identity,
    peer: Peer,
    report: AgentReport,
    changed: mpsc::UnboundedReceiver<ConfigChanged>,
    tasks: TaskTracker,
}

impl StandIn {
    /// Enrolls with a join token of `namespace`, then connects and says hello.
    async fn join(center: &Center, namespace: Option<&str>, labels: &[(&str, &str)]) -> StandIn {
        let identity = enroll(center, namespace).await;
        StandIn::connect(center, &identity, labels, Vec::new()).await
    }

    async fn connect(
        center: &Center,
        identity: &Identity,
        labels: &[(&str, &str)],
        configs: Vec<ConfigHeld>,
    ) -> StandIn {
        let (tx, changed) = mpsc::unbounded_channel();
        let tasks = TaskTracker::new();
        let peer = dial(center, Some(identity), tx, &tasks).await;
        let report = AgentReport {
            hostname: format!("host-{}", &identity.id[..6]),
            version: "0.1.0".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            apps: vec![app(APP)],
            configs,
        };
        let agent = StandIn {
            id: identity.id.clone(),
            identity: identity.clone(),
            peer,
            report,
            changed,
            tasks,
        };
        agent.call(methods::HELLO).await;
        agent
    }

    async fn call(&self, method: &str) {
        self.peer
            .call(method, &[&self.report], WAIT)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
    }

    /// A heartbeat; whatever the center sends because of it has arrived when this returns
    /// (the center sends it before it answers, on the same connection).
    async fn heartbeat(&self) {
        self.call(methods::HEARTBEAT).await;
    }

    async fn next_changed(&mut self) -> ConfigChanged {
        tokio::time::timeout(WAIT, self.changed.recv())
            .await
            .expect("a config.changed within the deadline")
            .unwrap()
    }

    /// Nothing was sent (checked after a heartbeat, whose answer follows anything it caused).
    fn nothing_sent(&mut self) {
        if let Ok(changed) = self.changed.try_recv() {
            panic!("{} got version {} again", self.id, changed.version);
        }
    }

    /// Takes `changed` as the agent's: reports it at `delivery` from now on, and says so with
    /// `config.applied` unless it is pending.
    fn hold(&mut self, changed: &ConfigChanged, delivery: Delivery) {
        self.report.configs.retain(|h| h.name != changed.name);
        self.report.configs.push(ConfigHeld {
            name: changed.name.clone(),
            version: changed.version,
            sha256: changed.sha256.clone(),
            delivery: delivery.clone(),
        });
        if delivery != Delivery::Pending {
            let applied = ConfigApplied {
                name: changed.name.clone(),
                version: changed.version,
                delivery,
            };
            self.peer
                .notify(config_methods::CONFIG_APPLIED, &[applied])
                .unwrap();
        }
    }

    async fn close(self) {
        self.peer.close();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn app(name: &str) -> AppStatus {
    AppStatus {
        pid: Some(1),
        uptime_secs: Some(1),
        ..AppStatus::new(
            name.into(),
            "1.0.0".into(),
            AppKind::Service,
            AppState::Running,
        )
    }
}

/// A TLS link to the center, as `identity` or anonymous.
async fn dial(
    center: &Center,
    identity: Option<&Identity>,
    changed: mpsc::UnboundedSender<ConfigChanged>,
    tasks: &TaskTracker,
) -> Peer {
    let tls = common::link_tls(
        &center.root_pem,
        identity.map(|i| (i.key.as_str(), i.chain.as_str())),
    );
    let (r, w) = shoal_rpc::transport::connect(&Addr::Tcp(center.link.clone()), Some(&tls))
        .await
        .unwrap();
    let handler = tower::service_fn(move |req: Request| {
        let changed = changed.clone();
        async move { answer(req, &changed) }
    });
    shoal_rpc::conn::spawn(
        r,
        w,
        center.link.clone(),
        tower::util::BoxCloneSyncService::new(handler),
        ConnConfig::default(),
        CancellationToken::new(),
        tasks,
    )
}

fn answer(req: Request, changed: &mpsc::UnboundedSender<ConfigChanged>) -> Result<Reply, RpcError> {
    let arg = req.params.into_iter().next().unwrap_or(rmpv::Value::Nil);
    match req.method.as_str() {
        config_methods::CONFIG_CHANGED => {
            let _ = changed.send(shoal_rpc::decode::from_value(arg).unwrap());
            Ok(Reply::none())
        }
        methods::REFUSED => Ok(Reply::none()),
        other => Err(RpcError::method_not_found(other)),
    }
}

/// Enrolls a new agent with a join token of `namespace`.
async fn enroll(center: &Center, namespace: Option<&str>) -> Identity {
    let join = center.token(Role::Join, namespace).await;
    let join: TokenText = join.parse().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let tasks = TaskTracker::new();
    let peer = dial(center, None, mpsc::unbounded_channel().0, &tasks).await;
    let request = EnrollRequest {
        token: join.credential(),
        csr_pem: csr,
        hostname: "stand-in".into(),
        namespace: None,
        labels: BTreeMap::new(),
    };
    let value = peer.call(methods::ENROLL, &[request], WAIT).await.unwrap();
    let enrolled: Enrolled = shoal_rpc::decode::from_value(value).unwrap();
    peer.close();
    tasks.close();
    tasks.wait().await;
    Identity {
        id: enrolled.agent_id,
        key: key.serialize_pem(),
        chain: enrolled.certificate_pem,
    }
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn state_of(status: &ConfigStatus, agent: &str) -> (u64, Option<u64>, InstanceState) {
    let instance = status
        .instances
        .iter()
        .find(|i| i.agent == agent)
        .unwrap_or_else(|| panic!("no instance on {agent} in {status:?}"));
    (instance.desired, instance.applied, instance.state.clone())
}

/// Waits until `check` holds of the status, at most [`WAIT`]: for what the center learns
/// by itself, such as a link that closed.
async fn until_status(center: &Center, check: impl Fn(&ConfigStatus) -> bool) -> ConfigStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = center.status().await;
        if check(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never came: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_push_reaches_the_app_and_a_lost_one_comes_back_with_the_next_heartbeat() {
    let center = Center::start("push").await;
    let mut agent = StandIn::join(&center, None, &[]).await;
    let content = "[shop]\ngreeting = \"hello\"\n";
    assert_eq!(center.push(content, None).await, 1);

    let first = agent.next_changed().await;
    assert_eq!((first.name.as_str(), first.version), (APP, 1));
    assert_eq!(first.sha256, sha256(content));
    assert_eq!(first.data, content.as_bytes());

    // The stand-in drops it, as a lost push: its next heartbeat brings it again.
    agent.heartbeat().await;
    let again = agent.next_changed().await;
    assert_eq!(again, first);

    // Received (pending): never sent again, heartbeat after heartbeat.
    agent.hold(&again, Delivery::Pending);
    for _ in 0..3 {
        agent.heartbeat().await;
        agent.nothing_sent();
    }
    let status = center.status().await;
    assert_eq!(
        state_of(&status, &agent.id),
        (1, None, InstanceState::Pending)
    );

    // The report that follows `config.applied` is recorded before the heartbeat is answered.
    agent.hold(&again, Delivery::Applied);
    agent.heartbeat().await;
    agent.nothing_sent();
    let status = center.status().await;
    assert_eq!(
        state_of(&status, &agent.id),
        (1, Some(1), InstanceState::Applied)
    );

    // Away during a push: the hello brings it.
    let identity = agent.identity.clone();
    let held = agent.report.configs.clone();
    agent.close().await;
    until_status(&center, |s| {
        state_of(s, &identity.id).2 == InstanceState::Offline
    })
    .await;
    let second = "[shop]\ngreeting = \"hi\"\n";
    assert_eq!(center.push(second, None).await, 2);
    let mut back = StandIn::connect(&center, &identity, &[], held).await;
    let caught_up = back.next_changed().await;
    assert_eq!(
        (caught_up.version, caught_up.data.as_slice()),
        (2, second.as_bytes())
    );
    back.close().await;
    let dir = center.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn status_says_applied_rejected_pending_and_offline_and_survives_a_restart() {
    let center = Center::start("status").await;
    let mut good = StandIn::join(&center, None, &[]).await;
    let mut bad = StandIn::join(&center, None, &[]).await;
    center.push("[shop]\nport = 1\n", None).await;
    let v1 = good.next_changed().await;
    good.hold(&v1, Delivery::Applied);
    good.heartbeat().await;
    let v1 = bad.next_changed().await;
    bad.hold(&v1, Delivery::Applied);
    bad.heartbeat().await;

    center.push("[shop]\nport = \"x\"\n", None).await;
    let v2 = good.next_changed().await;
    good.hold(&v2, Delivery::Applied);
    good.heartbeat().await;
    let v2 = bad.next_changed().await;
    let reason = "shop.port: invalid type: string \"x\", expected u16";
    bad.hold(
        &v2,
        Delivery::Rejected {
            reason: reason.into(),
        },
    );
    bad.heartbeat().await;
    bad.nothing_sent();
    let status = center.status().await;
    assert_eq!(
        state_of(&status, &good.id),
        (2, Some(2), InstanceState::Applied)
    );
    assert_eq!(
        state_of(&status, &bad.id),
        (
            2,
            Some(1),
            InstanceState::Rejected {
                reason: reason.into()
            }
        )
    );

    // A new version: pending until each says otherwise.
    center.push("[shop]\nport = 3\n", None).await;
    let status = center.status().await;
    assert_eq!(
        state_of(&status, &good.id),
        (3, Some(2), InstanceState::Pending)
    );
    let v3 = good.next_changed().await;
    good.hold(&v3, Delivery::Applied);
    good.heartbeat().await;

    let bad_id = bad.id.clone();
    bad.close().await;
    until_status(&center, |s| {
        state_of(s, &bad_id).2 == InstanceState::Offline
    })
    .await;
    let status = center.status().await;
    assert_eq!(
        state_of(&status, &bad_id),
        (3, Some(1), InstanceState::Offline)
    );

    // After a restart the center still knows what each applied.
    let good_id = good.id.clone();
    good.close().await;
    let dir = center.stop().await;
    let center = Center::start_in(dir).await;
    let status = center.status().await;
    assert_eq!(state_of(&status, &good_id).1, Some(3));
    assert_eq!(state_of(&status, &bad_id).1, Some(1));
    let dir = center.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn gray_releases_reach_only_their_members_then_promote_and_rollback_reach_all() {
    let center = Center::start("gray").await;
    let mut agents = Vec::new();
    for role in ["web", "web", "db", "db", "batch"] {
        agents.push(StandIn::join(&center, None, &[("role", role)]).await);
    }
    center.push("stable = 1\n", None).await;
    for agent in &mut agents {
        let v1 = agent.next_changed().await;
        agent.hold(&v1, Delivery::Applied);
        agent.heartbeat().await;
    }

    // By ids: the first agent only.
    let first = agents[0].id.clone();
    let v2 = center
        .push("gray = 2\n", Some(GrayTarget::Ids(vec![first.clone()])))
        .await;
    check_gray(&mut agents, v2, 1, |agent| agent.id == first).await;

    // By label: the web agents.
    let label = GrayTarget::Label {
        key: "role".into(),
        value: "web".into(),
    };
    let v3 = center.push("gray = 3\n", Some(label)).await;
    check_gray(&mut agents, v3, 1, |agent| {
        agent.report.labels.get("role").map(String::as_str) == Some("web")
    })
    .await;

    // By percentage: exactly the members the formula names.
    let v4 = center
        .push("gray = 4\n", Some(GrayTarget::Percent(50)))
        .await;
    check_gray(&mut agents, v4, 1, |agent| {
        shoal_center::config::percent_slot(&agent.id, APP, v4) < 5000
    })
    .await;

    // Promote: everyone else gets version 4.
    let release = center.admin().config_promote(None, APP).await.unwrap();
    assert_eq!((release.stable, release.gray), (Some(v4), None));
    check_gray(&mut agents, v4, v4, |_| true).await;

    // Rollback: a new version with the previous stable content, everywhere.
    let rolled = center
        .admin()
        .config_rollback(None, APP, None)
        .await
        .unwrap();
    assert_eq!(
        (rolled.version.version, rolled.version.rollback_of),
        (5, Some(1))
    );
    for agent in &mut agents {
        let v5 = agent.next_changed().await;
        assert_eq!(
            (v5.version, v5.data.as_slice()),
            (5, b"stable = 1\n".as_slice())
        );
        agent.hold(&v5, Delivery::Applied);
        agent.heartbeat().await;
        agent.nothing_sent();
    }
    let status = center.status().await;
    assert!(status
        .instances
        .iter()
        .all(|i| (i.desired, i.state.clone()) == (5, InstanceState::Applied)));
    for agent in agents {
        agent.close().await;
    }
    let dir = center.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// After a gray release of `version` over stable version `stable`: the members `member` names
/// get `version`, the others `stable` (those that held a gray version left behind included);
/// an agent that holds what it should gets nothing, not even after a heartbeat.
async fn check_gray(
    agents: &mut [StandIn],
    version: u64,
    stable: u64,
    member: impl Fn(&StandIn) -> bool,
) {
    for agent in agents.iter_mut() {
        let desired = if member(agent) { version } else { stable };
        if agent.report.configs[0].version != desired {
            let changed = agent.next_changed().await;
            assert_eq!(changed.version, desired, "{}", agent.id);
            agent.hold(&changed, Delivery::Applied);
        }
        agent.heartbeat().await;
        agent.nothing_sent();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_and_rollback_racing_leave_one_consistent_release() {
    let center = Center::start("race").await;
    let admin = center.admin();
    center.push("base\n", None).await;
    for round in 0..5u64 {
        center.push(&format!("stable = {round}\n"), None).await;
        let gray = center
            .push(&format!("gray = {round}\n"), Some(GrayTarget::Percent(10)))
            .await;
        let before = admin.config_release(None, APP).await.unwrap();
        let mut racers = tokio::task::JoinSet::new();
        for n in 0..8 {
            let admin = admin.clone();
            racers.spawn(async move {
                if n % 2 == 0 {
                    admin
                        .config_promote(None, APP)
                        .await
                        .map(|r| (true, r.stable))
                } else {
                    admin
                        .config_rollback(None, APP, None)
                        .await
                        .map(|p| (false, Some(p.version.version)))
                }
            });
        }
        let (mut promoted, mut rolled) = (0, 0);
        while let Some(done) = racers.join_next().await {
            match done.unwrap() {
                Ok((true, stable)) => {
                    assert_eq!(stable, Some(gray));
                    promoted += 1;
                }
                Ok((false, _)) => rolled += 1,
                Err(ClientError::Api { status: 409, .. }) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert!(
            promoted <= 1,
            "the gray version was promoted {promoted} times"
        );
        assert_eq!(
            rolled, 4,
            "every rollback has a stable version to go back to"
        );
        let after = admin.config_release(None, APP).await.unwrap();
        assert_eq!(after.gray, None);
        assert_eq!(after.latest, before.latest + rolled);
        assert_eq!(after.stable, Some(after.latest));
        let versions = admin.config_versions(None, APP).await.unwrap();
        let numbers: Vec<u64> = versions.iter().map(|v| v.version).collect();
        let expected: Vec<u64> = (1..=after.latest).rev().collect();
        assert_eq!(
            numbers, expected,
            "versions are numbered without a gap or a repeat"
        );
    }
    let dir = center.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_namespace_token_sees_and_changes_only_its_namespace() {
    let center = Center::start("ns").await;
    center.push("in default\n", None).await;
    let blue = center.client(&center.token(Role::Operator, Some("blue")).await);
    let viewer = center.client(&center.token(Role::Viewer, None).await);

    // Its own namespace by default: the default namespace's configuration is not there.
    let err = blue.config_versions(None, APP).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 404, .. }), "{err}");
    let err = blue
        .config_versions(Some("default"), APP)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 403, .. }), "{err}");
    let push = ConfigPush {
        content: "in blue\n".into(),
        message: None,
        gray: None,
    };
    let err = blue
        .config_push(Some("default"), APP, &push)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 403, .. }), "{err}");
    let pushed = blue.config_push(None, APP, &push).await.unwrap();
    assert_eq!(
        (pushed.release.namespace.as_str(), pushed.version.version),
        ("blue", 1)
    );

    // A blue agent gets blue's; a default agent keeps default's.
    let mut blue_agent = StandIn::join(&center, Some("blue"), &[]).await;
    let mut default_agent = StandIn::join(&center, None, &[]).await;
    assert_eq!(blue_agent.next_changed().await.data, b"in blue\n");
    assert_eq!(default_agent.next_changed().await.data, b"in default\n");
    let blue_status = blue.config_status(None, APP).await.unwrap();
    let ids: Vec<&str> = blue_status
        .instances
        .iter()
        .map(|i| i.agent.as_str())
        .collect();
    assert_eq!(ids, [blue_agent.id.as_str()]);

    // A viewer reads every namespace and changes none; every change is in the audit log.
    let shown = viewer.config_show(Some("blue"), APP, None).await.unwrap();
    assert_eq!(shown.content, "in blue\n");
    let err = viewer.config_push(None, APP, &push).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 403, .. }), "{err}");
    let audit: Vec<shoal_api::center::AuditEntry> =
        center.admin().get("/api/v1/audit").await.unwrap();
    let pushes: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e.action == "config.push")
        .map(|e| (e.targets[0].as_str(), e.outcome.as_str()))
        .collect();
    assert!(pushes.contains(&("default/shop v1", "ok")), "{pushes:?}");
    assert!(pushes.contains(&("blue/shop v1", "ok")), "{pushes:?}");
    blue_agent.close().await;
    default_agent.close().await;
    let dir = center.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn bad_pushes_are_refused_naming_what_is_wrong_and_diff_shows_the_change() {
    let center = Center::start("bad").await;
    let admin = center.admin();
    let refused = |content: &str, gray: Option<GrayTarget>| ConfigPush {
        content: content.into(),
        message: None,
        gray,
    };
    for (push, status, says) in [
        (refused("", None), 400, "empty"),
        (
            refused(&"x".repeat(shoal_api::config::MAX_CONFIG_BYTES + 1), None),
            413,
            "at most",
        ),
        (
            refused("a", Some(GrayTarget::Percent(0))),
            400,
            "--percent 0",
        ),
        (refused("a", Some(GrayTarget::Ids(vec![]))), 400, "--ids"),
    ] {
        match admin.config_push(None, APP, &push).await {
            Err(ClientError::Api {
                status: got,
                message,
            }) => {
                assert_eq!(got, status, "{message}");
                assert!(message.contains(says), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    let err = admin.config_promote(None, APP).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 404, .. }), "{err}");
    center.push("a = 1\nb = 2\nc = 3\n", None).await;
    // The same content again makes no version.
    assert_eq!(center.push("a = 1\nb = 2\nc = 3\n", None).await, 1);
    center.push("a = 1\nb = 20\nc = 3\n", None).await;
    let diff = admin.config_diff(None, APP, 1, 2).await.unwrap();
    assert_eq!(
        diff.diff,
        "--- shop v1\n+++ shop v2\n@@ -1,3 +1,3 @@\n a = 1\n-b = 2\n+b = 20\n c = 3\n"
    );
    let err = admin.config_rollback(None, APP, Some(9)).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 404, .. }), "{err}");
    let err = admin.config_promote(None, APP).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 409, .. }), "{err}");
    let dir = center.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_gray_content_pushed_again_with_a_larger_share_keeps_its_version_and_members() {
    let center = Center::start("share").await;
    let mut agents = Vec::new();
    for _ in 0..6 {
        agents.push(StandIn::join(&center, None, &[]).await);
    }
    center.push("stable\n", None).await;
    for agent in &mut agents {
        let v1 = agent.next_changed().await;
        agent.hold(&v1, Delivery::Applied);
        agent.heartbeat().await;
    }
    let gray = center.push("gray\n", Some(GrayTarget::Percent(20))).await;
    check_gray(&mut agents, gray, 1, |a| {
        shoal_center::config::percent_slot(&a.id, APP, gray) < 2000
    })
    .await;
    let had: Vec<bool> = agents
        .iter()
        .map(|a| a.report.configs[0].version == gray)
        .collect();
    // The same content with a larger share: the same version, reaching more agents.
    assert_eq!(
        center.push("gray\n", Some(GrayTarget::Percent(70))).await,
        gray
    );
    let release = center.admin().config_release(None, APP).await.unwrap();
    assert_eq!(release.gray.unwrap().target, GrayTarget::Percent(70));
    assert_eq!(release.latest, gray, "no new version");
    check_gray(&mut agents, gray, 1, |a| {
        shoal_center::config::percent_slot(&a.id, APP, gray) < 7000
    })
    .await;
    for (agent, had) in agents.iter().zip(had) {
        assert!(
            !had || agent.report.configs[0].version == gray,
            "{} dropped",
            agent.id
        );
    }
    for agent in agents {
        agent.close().await;
    }
    let dir = center.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
