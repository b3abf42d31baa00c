//! The center's HTTP API on a real listener over the SQLite store, with a stand-in for the
//! agents' link: roles (401, 403) for every class of route, namespaces, tokens, the audit log,
//! the package repository, commands and their results, and the OpenAPI document.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{create_token, serve, Fleet};
use shoal_api::center::{
    AuditEntry, CommandRequest, CommandState, CommandView, PackageInfo, Role, TokenCreated,
    TokenInfo, TokenRequest,
};
use shoal_api::fleet::{
    Action, AgentInfo, Selector, ServiceEndpoint, ServiceEndpoints, TargetStatus,
};
use shoal_center::client::{CenterClient, ClientError};
use shoal_center::tokens::Caller;
use shoal_center::Limits;
use tokio_util::sync::CancellationToken;

fn status(result: Result<serde_json::Value, ClientError>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(ClientError::Api { status, .. }) => status,
        Err(other) => panic!("not an API answer: {other}"),
    }
}

fn ps_everywhere() -> CommandRequest {
    CommandRequest {
        selector: Selector {
            all: true,
            ..Selector::default()
        },
        action: Action::Ps,
        concurrency: None,
        timeout_ms: Some(10_000),
    }
}

fn three_agents() -> Arc<Fleet> {
    Fleet::with(&[
        ("a1", "prod", &[("role", "web")], true),
        ("a2", "prod", &[("role", "db")], true),
        ("b1", "staging", &[("role", "web")], true),
    ])
}

#[tokio::test]
async fn each_class_of_route_wants_a_token_and_a_high_enough_role() {
    let served = serve(three_agents(), Limits::default()).await;
    let viewer = served.token(Role::Viewer, None).await;
    let operator = served.token(Role::Operator, None).await;
    let nobody = served.client("shoal_nope_nope");
    let none = CenterClient::new(&served.url, "").unwrap();
    let as_viewer = served.client(&viewer);
    let as_operator = served.client(&operator);
    let as_admin = served.client(&served.admin);
    // Reads: viewer and up.
    for path in ["/api/v1/agents", "/api/v1/packages", "/api/v1/commands"] {
        assert_eq!(status(none.get(path).await), 401, "{path}");
        assert_eq!(status(nobody.get(path).await), 401, "{path}");
        assert_eq!(status(as_viewer.get(path).await), 200, "{path}");
    }
    // Commands: operator and up.
    let ps = ps_everywhere();
    assert_eq!(status(none.post("/api/v1/commands", &ps).await), 401);
    assert_eq!(status(as_viewer.post("/api/v1/commands", &ps).await), 403);
    assert_eq!(status(as_operator.post("/api/v1/commands", &ps).await), 200);
    // Tokens, audit and revoking agents: admin.
    let join = TokenRequest {
        role: Role::Join,
        namespace: None,
        ttl_secs: None,
        uses: Some(1),
    };
    for path in ["/api/v1/tokens", "/api/v1/audit"] {
        assert_eq!(status(none.get(path).await), 401, "{path}");
        assert_eq!(status(as_operator.get(path).await), 403, "{path}");
        assert_eq!(status(as_admin.get(path).await), 200, "{path}");
    }
    assert_eq!(status(as_operator.post("/api/v1/tokens", &join).await), 403);
    assert_eq!(
        status(as_operator.post("/api/v1/agents/a1/revoke", &()).await),
        403
    );
    assert_eq!(
        status(as_admin.post("/api/v1/agents/a1/revoke", &()).await),
        200
    );
    // Packages: pushing is the operator's.
    assert_eq!(
        status(
            as_viewer
                .post_bytes::<serde_json::Value>("/api/v1/packages", vec![1, 2, 3].into())
                .await
        ),
        403
    );
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_wants_a_token() {
    let served = serve(three_agents(), Limits::default()).await;
    let doc: serde_json::Value = reqwest_free_get(&served.url, "/api/v1/openapi.json").await;
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    // What the router serves: its paths, each probed with every method (405: not routed).
    let paths = router_paths(&shoal_center::api::router(served.center.clone()));
    assert!(
        paths.len() > 10,
        "the router's paths are not found: {paths:?}"
    );
    let mut routed = std::collections::BTreeSet::new();
    for path in &paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if probe(&served.url, method, &concrete(path)).await != 405 {
                routed.insert(format!("{method} {path}"));
            }
        }
    }
    // The document itself is the one route it does not describe.
    assert!(routed.remove("GET /api/v1/openapi.json"), "{routed:?}");
    assert_eq!(routed, documented);
    // Each is served, and refuses a request without a token.
    for route in documented {
        let (method, path) = route.split_once(' ').unwrap();
        assert_eq!(
            probe(&served.url, method, &concrete(path)).await,
            401,
            "{route}"
        );
    }
}

/// Every path `router` routes, as its `Debug` shows them (`RouteId(N): "/path"`): the
/// router itself, not a list kept beside it.
fn router_paths(router: &axum::Router) -> std::collections::BTreeSet<String> {
    let shown = format!("{router:?}");
    shown
        .split("RouteId(")
        .skip(1)
        .filter_map(|rest| rest.split_once("): \"")?.1.split_once('"'))
        .map(|(path, _)| path.to_owned())
        .filter(|path| path.starts_with("/api/"))
        .collect()
}

/// `path` with each `{parameter}` filled in.
fn concrete(path: &str) -> String {
    path.replace("{version}", "1")
        .replace("{id}", "x")
        .replace("{name}", "x")
}

/// The status of `METHOD path` with no token and an empty body.
async fn probe(url: &str, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3));
    status
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: not an HTTP answer: {text}"))
}

/// GET without a token, as a browser or schemathesis would.
async fn reqwest_free_get(url: &str, path: &str) -> serde_json::Value {
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8(answer).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..80.min(text.len())]
    );
    let body = text.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn a_namespaced_token_sees_and_acts_on_its_namespace_only() {
    let fleet = three_agents();
    let served = serve(fleet.clone(), Limits::default()).await;
    let staging = served.client(&served.token(Role::Operator, Some("staging")).await);
    let agents: Vec<AgentInfo> = staging.get("/api/v1/agents").await.unwrap();
    assert_eq!(
        agents.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["b1"]
    );
    let view: CommandView = staging
        .post("/api/v1/commands", &ps_everywhere())
        .await
        .unwrap();
    assert_eq!(view.results.keys().collect::<Vec<_>>(), ["b1"]);
    assert_eq!(fleet.ran_on(), ["b1"]);
    let mut elsewhere = ps_everywhere();
    elsewhere.selector.namespace = Some("prod".into());
    assert_eq!(
        status(staging.post("/api/v1/commands", &elsewhere).await),
        403
    );
    // A command on prod agents is not shown to it.
    let admin = served.client(&served.admin);
    let prod: CommandView = admin.post("/api/v1/commands", &elsewhere).await.unwrap();
    let path = format!("/api/v1/commands/{}", prod.command);
    assert_eq!(status(staging.get(&path).await), 404);
    assert_eq!(status(admin.get(&path).await), 200);
}

#[tokio::test]
async fn a_service_s_endpoints_are_read_by_namespace_and_long_polled_until_they_change() {
    let fleet = three_agents();
    let served = serve(fleet.clone(), Limits::default()).await;
    let endpoint = |agent: &str, addr: &str| ServiceEndpoint {
        agent: agent.into(),
        addr: addr.into(),
    };
    let entry =
        |ns: &str, agent: &str, addr: &str| (ns.into(), "web".into(), endpoint(agent, addr));
    fleet.services.update([
        entry("prod", "a1", "10.0.0.1:7000"),
        entry("staging", "b1", "10.0.1.1:7000"),
    ]);
    let viewer = served.client(&served.token(Role::Viewer, None).await);
    let staging = served.client(&served.token(Role::Viewer, Some("staging")).await);

    let prod: ServiceEndpoints = viewer
        .get("/api/v1/services/web/endpoints?namespace=prod")
        .await
        .unwrap();
    assert_eq!(prod.endpoints, [endpoint("a1", "10.0.0.1:7000")]);
    // A namespaced token reads its own namespace by default, and no other.
    let own: ServiceEndpoints = staging.get("/api/v1/services/web/endpoints").await.unwrap();
    assert_eq!(
        (own.namespace.as_str(), own.endpoints.as_slice()),
        ("staging", &[endpoint("b1", "10.0.1.1:7000")][..])
    );
    let path = "/api/v1/services/web/endpoints?namespace=prod";
    assert_eq!(status(staging.get(path).await), 403);
    // Unknown: empty at revision 0. Bad input: 400 naming what.
    let none: ServiceEndpoints = viewer.get("/api/v1/services/db/endpoints").await.unwrap();
    assert_eq!((none.revision, none.endpoints.len()), (0, 0));
    for (bad, named) in [
        ("/api/v1/services/Web!/endpoints", "service: \"Web!\""),
        (
            "/api/v1/services/web/endpoints?after=1&wait=soon",
            "wait: \"soon\"",
        ),
    ] {
        match viewer.get::<serde_json::Value>(bad).await {
            Err(ClientError::Api {
                status: 400,
                message,
            }) => {
                assert!(message.starts_with(named), "{message}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }

    // A long poll at the current revision answers when the set changes.
    let polled = {
        let viewer = viewer.clone();
        let path = format!(
            "/api/v1/services/web/endpoints?namespace=prod&after={}&wait=1m",
            prod.revision
        );
        tokio::spawn(async move { viewer.get::<ServiceEndpoints>(&path).await })
    };
    fleet.services.update([
        entry("prod", "a1", "10.0.0.1:7000"),
        entry("prod", "a2", "10.0.0.2:7000"),
        entry("staging", "b1", "10.0.1.1:7000"),
    ]);
    let changed = tokio::time::timeout(Duration::from_secs(20), polled)
        .await
        .expect("the long poll answered")
        .unwrap()
        .unwrap();
    assert_eq!(changed.endpoints.len(), 2);
    assert!(changed.revision > prod.revision);
    // Nothing changes: the same revision once the wait is over.
    let path = format!(
        "/api/v1/services/web/endpoints?namespace=prod&after={}&wait=10ms",
        changed.revision
    );
    let same: ServiceEndpoints = viewer.get(&path).await.unwrap();
    assert_eq!(same, changed);
}

#[tokio::test]
async fn center_discover_yields_each_new_set_and_keeps_going_after_errors() {
    use futures_util::StreamExt as _;
    use shoal_center::client::CenterDiscover;
    use shoal_rpc::{Balance, Discover as _};

    let fleet = three_agents();
    let served = serve(fleet.clone(), Limits::default()).await;
    let viewer = served.token(Role::Viewer, None).await;
    let entry = |agent: &str, addr: &str| {
        let endpoint = ServiceEndpoint {
            agent: agent.into(),
            addr: addr.into(),
        };
        ("prod".to_owned(), "web".to_owned(), endpoint)
    };
    let discover = CenterDiscover::new(&served.url, &viewer, "web")
        .unwrap()
        .namespace("prod")
        .balance(Balance::HashRing);
    let mut sets = Box::pin(discover.watch());
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), sets.next())
            .await
            .expect("the stream said something in time")
            .expect("the stream goes on")
    };
    let addrs = |set: shoal_rpc::EndpointSet| -> Vec<String> {
        assert_eq!(set.balance, Balance::HashRing);
        set.endpoints.iter().map(|e| e.addr.to_string()).collect()
    };
    // Nothing yet: an error, then the set once there is one.
    let none = next().await.unwrap_err().to_string();
    assert!(none.contains("has no endpoints"), "{none}");
    fleet.services.update([entry("a1", "127.0.0.1:7001")]);
    assert_eq!(addrs(next().await.unwrap()), ["127.0.0.1:7001"]);
    fleet
        .services
        .update([entry("a1", "127.0.0.1:7001"), entry("a2", "127.0.0.1:7002")]);
    assert_eq!(
        addrs(next().await.unwrap()),
        ["127.0.0.1:7001", "127.0.0.1:7002"]
    );

    // A token the center refuses: an error per try, and the stream goes on.
    let refused = CenterDiscover::new(&served.url, "shoal_nope_nope", "web").unwrap();
    let mut refused = Box::pin(refused.watch());
    for _ in 0..2 {
        let error = tokio::time::timeout(Duration::from_secs(20), refused.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("discovering service web through the center"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_command_freezes_its_targets_and_reports_offline_ones_at_the_deadline() {
    let fleet = Fleet::with(&[
        ("a1", "default", &[("role", "web")], true),
        ("a2", "default", &[("role", "web")], false),
        ("a3", "default", &[("role", "db")], true),
    ]);
    let served = serve(fleet.clone(), Limits::default()).await;
    let admin = served.client(&served.admin);
    let request = CommandRequest {
        selector: Selector {
            labels: BTreeMap::from([("role".into(), "web".into())]),
            ..Selector::default()
        },
        action: Action::Restart {
            name: "hello".into(),
        },
        concurrency: Some(1),
        timeout_ms: Some(300),
    };
    let view: CommandView = admin.post("/api/v1/commands", &request).await.unwrap();
    assert_eq!(view.state, CommandState::Done);
    assert_eq!(view.results["a1"].status, TargetStatus::Ok);
    assert_eq!(view.results["a2"].status, TargetStatus::Offline);
    assert!(!view.results.contains_key("a3"));
    assert_eq!(fleet.ran_on(), ["a1"]);
    let shown: CommandView = admin
        .get(&format!("/api/v1/commands/{}", view.command))
        .await
        .unwrap();
    assert_eq!(shown, view);
    // Nothing selected is refused, not run everywhere.
    let mut nothing = request.clone();
    nothing.selector = Selector::default();
    assert_eq!(status(admin.post("/api/v1/commands", &nothing).await), 400);
}

#[tokio::test]
async fn a_command_running_when_the_center_stopped_is_interrupted_for_the_unanswered() {
    let fleet = Fleet::with(&[("a1", "default", &[], true), ("a2", "default", &[], false)]);
    let served = serve(fleet.clone(), Limits::default()).await;
    let center = served.center.clone();
    let mut request = ps_everywhere();
    request.timeout_ms = Some(3_600_000);
    let running =
        tokio::spawn(async move { center.commands.run(&Caller::center(), request).await });
    let admin = served.client(&served.admin);
    let started = wait_for(|| async {
        let list: Vec<CommandView> = admin.get("/api/v1/commands").await.ok()?;
        let view = list.into_iter().next()?;
        (view.results["a1"].status == TargetStatus::Ok).then_some(view)
    })
    .await;
    // The center stops while a2 has not answered.
    served.center.close().await;
    assert!(matches!(
        running.await.unwrap(),
        Err(shoal_center::commands::CommandError::Stopped)
    ));
    assert_eq!(
        command_audit(&admin, &started.command).await,
        [("command.ps".into(), "submitted".into())]
    );
    // Its next start marks it interrupted, and audits how it ended.
    assert_eq!(served.center.commands.recover().await.unwrap(), 1);
    let after: CommandView = admin
        .get(&format!("/api/v1/commands/{}", started.command))
        .await
        .unwrap();
    assert_eq!(after.state, CommandState::Interrupted);
    assert_eq!(after.results["a1"].status, TargetStatus::Ok);
    assert_eq!(after.results["a2"].status, TargetStatus::Interrupted);
    assert_eq!(fleet.ran_on(), ["a1"]);
    assert_eq!(
        command_audit(&admin, &started.command).await,
        [
            ("command.ps".into(), "submitted".into()),
            (
                "command.ps".into(),
                "interrupted: 1 interrupted, 1 ok".into()
            )
        ]
    );
    assert_eq!(served.center.commands.recover().await.unwrap(), 0);
}

/// The (action, outcome) of each audit entry about command `id`, oldest first; each names
/// the command first, then its targets.
async fn command_audit(admin: &CenterClient, id: &str) -> Vec<(String, String)> {
    let audit: Vec<AuditEntry> = admin.get("/api/v1/audit").await.unwrap();
    audit
        .into_iter()
        .filter(|e| e.targets.first().map(String::as_str) == Some(id))
        .map(|e| (e.action, e.outcome))
        .collect()
}

async fn wait_for<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "the condition did not come true within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn tokens_are_shown_once_stored_hashed_and_refused_once_revoked_or_expired() {
    let served = serve(three_agents(), Limits::default()).await;
    let admin = served.client(&served.admin);
    let viewer = served.token(Role::Viewer, None).await;
    let as_viewer = served.client(&viewer);
    assert_eq!(status(as_viewer.get("/api/v1/agents").await), 200);
    let tokens: Vec<TokenInfo> = admin.get("/api/v1/tokens").await.unwrap();
    let listed = serde_json::to_string(&tokens).unwrap();
    let secret = viewer.split('_').nth(2).unwrap();
    assert!(!listed.contains(secret), "a secret in the list");
    let id = viewer.split('_').nth(1).unwrap();
    let _: TokenInfo = admin
        .post(&format!("/api/v1/tokens/{id}/revoke"), &())
        .await
        .unwrap();
    assert_eq!(status(as_viewer.get("/api/v1/agents").await), 401);
    // Expiry: a token of one second is refused once the second has passed.
    let short: TokenCreated = admin
        .post(
            "/api/v1/tokens",
            &TokenRequest {
                role: Role::Viewer,
                namespace: None,
                ttl_secs: Some(1),
                uses: None,
            },
        )
        .await
        .unwrap();
    let as_short = served.client(&short.token);
    wait_for(|| async { (status(as_short.get("/api/v1/agents").await) == 401).then_some(()) })
        .await;
    // A join token does not open the API, and carries the pin.
    let join: TokenCreated = admin
        .post(
            "/api/v1/tokens",
            &TokenRequest {
                role: Role::Join,
                namespace: None,
                ttl_secs: None,
                uses: Some(2),
            },
        )
        .await
        .unwrap();
    assert!(join.token.ends_with("_0f0f"), "{}", join.token);
    assert_eq!(
        status(served.client(&join.token).get("/api/v1/agents").await),
        401
    );
    // The audit log has every mutating request, and no secret.
    let audit: Vec<AuditEntry> = admin.get("/api/v1/audit").await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "token.create",
            "token.revoke",
            "token.create",
            "token.create"
        ]
    );
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains(secret));
    assert!(!text.contains(join.token.split('_').nth(2).unwrap()));
}

#[tokio::test]
async fn of_ten_joins_racing_for_the_last_use_exactly_one_wins() {
    let served = serve(three_agents(), Limits::default()).await;
    let join = served
        .center
        .tokens
        .create(
            &TokenRequest {
                role: Role::Join,
                namespace: Some("edge".into()),
                ttl_secs: None,
                uses: Some(1),
            },
            &Caller::center(),
            "0f0f",
        )
        .await
        .unwrap();
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (tokens, text) = (served.center.tokens.clone(), join.token.clone());
        racing.spawn(async move { tokens.redeem_join(&text).await });
    }
    let mut won = Vec::new();
    let mut refused = 0;
    while let Some(outcome) = racing.join_next().await {
        match outcome.unwrap() {
            Ok(grant) => won.push(grant),
            Err(e) => {
                assert!(e.to_string().contains("no uses left"), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(won.len(), 1);
    assert_eq!(won[0].1.as_deref(), Some("edge"));
    assert_eq!(refused, 9);
}

#[tokio::test]
async fn packages_are_checked_before_they_are_kept_and_oversized_ones_get_413() {
    let served = serve(
        three_agents(),
        Limits {
            max_upload: 64 * 1024,
        },
    )
    .await;
    let operator = served.client(&served.token(Role::Operator, None).await);
    let archive = build_package(&served.dir, "hello", "1.0.0");
    let data = std::fs::read(&archive).unwrap();
    let pushed: PackageInfo = operator
        .post_bytes("/api/v1/packages", data.clone().into())
        .await
        .unwrap();
    assert_eq!(
        (pushed.name.as_str(), pushed.version.as_str()),
        ("hello", "1.0.0")
    );
    // Again, the same: fine. Garbage: refused with what is wrong.
    let again: PackageInfo = operator
        .post_bytes("/api/v1/packages", data.into())
        .await
        .unwrap();
    assert_eq!(again.sha256, pushed.sha256);
    match operator
        .post_bytes::<PackageInfo>("/api/v1/packages", b"not gzip at all".to_vec().into())
        .await
    {
        Err(ClientError::Api {
            status: 422,
            message,
        }) => {
            assert!(message.contains("refused"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let big = vec![7u8; 100 * 1024];
    match operator
        .post_bytes::<PackageInfo>("/api/v1/packages", big.into())
        .await
    {
        Err(ClientError::Api { status: 413, .. }) => {}
        other => panic!("{other:?}"),
    }
    let outcomes = push_outcomes(&served).await;
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(outcomes[2].starts_with("the package is refused: "));
    assert!(
        outcomes[3].starts_with("the upload is larger than the 65536 bytes"),
        "{outcomes:?}"
    );
    let listed: Vec<PackageInfo> = operator.get("/api/v1/packages?name=hello").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        std::fs::read_dir(served.dir.join("incoming"))
            .unwrap()
            .count(),
        0
    );
}

fn build_package(dir: &Path, name: &str, version: &str) -> PathBuf {
    let src = dir.join(format!("src-{name}-{version}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("shoal.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"{version}\"\nkind = \"crontab\"\n\n\
             [[cron]]\nname = \"yearly\"\nschedule = \"0 0 0 1 1 *\"\ncommand = \"/bin/true\"\n"
        ),
    )
    .unwrap();
    shoal_pkg::build(&src, dir).unwrap().archive
}

#[tokio::test]
async fn a_command_runs_to_its_end_and_is_audited_when_its_caller_goes_away() {
    let fleet = Fleet::with(&[("a1", "default", &[], true), ("a2", "default", &[], false)]);
    let served = serve(fleet.clone(), Limits::default()).await;
    let admin = served.client(&served.admin);
    let mut request = ps_everywhere();
    request.timeout_ms = Some(500);
    let caller = {
        let admin = admin.clone();
        tokio::spawn(async move {
            admin
                .post::<_, CommandView>("/api/v1/commands", &request)
                .await
        })
    };
    let started = wait_for(|| async {
        let list: Vec<CommandView> = admin.get("/api/v1/commands").await.ok()?;
        list.into_iter().next()
    })
    .await;
    caller.abort();
    let done = wait_for(|| async {
        let view: CommandView = admin
            .get(&format!("/api/v1/commands/{}", started.command))
            .await
            .ok()?;
        (view.state == CommandState::Done).then_some(view)
    })
    .await;
    assert_eq!(done.results["a1"].status, TargetStatus::Ok);
    assert_eq!(done.results["a2"].status, TargetStatus::Offline);
    // Audited when it was stored, with its targets, and when it ended.
    let audit: Vec<AuditEntry> = admin.get("/api/v1/audit").await.unwrap();
    let entries: Vec<&AuditEntry> = audit.iter().filter(|e| e.action == "command.ps").collect();
    let admin_id = served.admin.split('_').nth(1).unwrap();
    for (entry, outcome) in entries.iter().zip(["submitted", "1 offline, 1 ok"]) {
        assert_eq!(entry.outcome, outcome);
        assert_eq!(entry.targets, [done.command.as_str(), "a1", "a2"]);
        assert_eq!(
            (entry.token.as_str(), entry.role, entry.namespace.as_deref()),
            (admin_id, Some(Role::Admin), None)
        );
    }
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries[0].time <= entries[1].time);
}

#[tokio::test]
async fn refusals_are_audited_403s_as_denied_and_401s_not_at_all() {
    let served = serve(three_agents(), Limits::default()).await;
    let admin = served.client(&served.admin);
    let viewer = served.token(Role::Viewer, None).await;
    let staging = served.token(Role::Operator, Some("staging")).await;
    let operator = served.client(&served.token(Role::Operator, None).await);
    let before: Vec<AuditEntry> = admin.get("/api/v1/audit").await.unwrap();
    // Without a valid token: 401, and nothing written, however many.
    for token in ["", "shoal_nope_nope", "garbage"] {
        let anonymous = served.client(token);
        for _ in 0..3 {
            assert_eq!(
                status(anonymous.post("/api/v1/commands", &ps_everywhere()).await),
                401
            );
            assert_eq!(status(anonymous.get("/api/v1/audit").await), 401);
        }
    }
    // A role too low, another namespace: 403, written as denied.
    let as_viewer = served.client(&viewer);
    assert_eq!(
        status(as_viewer.post("/api/v1/commands", &ps_everywhere()).await),
        403
    );
    let mut prod = ps_everywhere();
    prod.selector.namespace = Some("prod".into());
    let as_staging = served.client(&staging);
    assert_eq!(
        status(as_staging.post("/api/v1/commands", &prod).await),
        403
    );
    assert_eq!(status(as_staging.get("/api/v1/tokens").await), 403);
    // Refused before it is stored: written with the refusal.
    let mut nothing = ps_everywhere();
    nothing.selector = Selector::default();
    assert_eq!(
        status(operator.post("/api/v1/commands", &nothing).await),
        400
    );

    let audit: Vec<AuditEntry> = admin.get("/api/v1/audit").await.unwrap();
    let new: Vec<(&str, Option<&str>, &str, &str)> = audit[before.len()..]
        .iter()
        .map(|e| {
            (
                e.token.as_str(),
                e.namespace.as_deref(),
                e.action.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect();
    let id = |token: &str| token.split('_').nth(1).unwrap().to_owned();
    let (viewer_id, staging_id) = (id(&viewer), id(&staging));
    let operator_id = audit.last().unwrap().token.clone();
    assert_eq!(
        new,
        [
            (
                viewer_id.as_str(),
                None,
                "POST /api/v1/commands",
                "denied: this needs the operator role; the token has viewer"
            ),
            (
                staging_id.as_str(),
                Some("staging"),
                "POST /api/v1/commands",
                "denied: this token is limited to namespace staging, not prod"
            ),
            (
                staging_id.as_str(),
                Some("staging"),
                "GET /api/v1/tokens",
                "denied: this needs the admin role; the token has operator"
            ),
            (
                operator_id.as_str(),
                None,
                "command.ps",
                "name the targets: ids, labels, or all"
            ),
        ]
    );
}

#[tokio::test]
async fn a_namespaced_token_even_an_admin_reads_only_its_namespace_s_audit_entries() {
    let served = serve(three_agents(), Limits::default()).await;
    let admin = served.client(&served.admin);
    let staging_admin = served.client(&served.token(Role::Admin, Some("staging")).await);
    let staging_operator = served.client(&create_token(&staging_admin, Role::Operator, None).await);
    let _: CommandView = staging_operator
        .post("/api/v1/commands", &ps_everywhere())
        .await
        .unwrap();
    let _: CommandView = admin
        .post("/api/v1/commands", &ps_everywhere())
        .await
        .unwrap();

    let everything: Vec<AuditEntry> = admin.get("/api/v1/audit").await.unwrap();
    let mine: Vec<AuditEntry> = staging_admin.get("/api/v1/audit").await.unwrap();
    let staging: Vec<AuditEntry> = everything
        .iter()
        .filter(|e| e.namespace.as_deref() == Some("staging"))
        .cloned()
        .collect();
    // The staging admin's token.create, and the staging operator's command twice.
    let actions: Vec<(&str, &str)> = mine
        .iter()
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("token.create", "ok"),
            ("command.ps", "submitted"),
            ("command.ps", "ok")
        ]
    );
    assert_eq!(mine, staging);
    assert!(everything.len() > mine.len());
    assert!(everything.iter().any(|e| e.namespace.is_none()));
    // The newest of its own, with a limit.
    let newest: Vec<AuditEntry> = staging_admin.get("/api/v1/audit?limit=1").await.unwrap();
    assert_eq!(newest, mine[2..]);
}

#[tokio::test]
async fn the_package_repository_is_read_by_every_namespace_and_pushed_to_by_none() {
    let served = serve(three_agents(), Limits::default()).await;
    let archive = build_package(&served.dir, "hello", "1.0.0");
    let data = std::fs::read(&archive).unwrap();
    let sha256 = sha256_of(&data);
    let operator = served.client(&served.token(Role::Operator, None).await);
    operator
        .push_package(data.clone().into(), &sha256)
        .await
        .unwrap();
    for role in [Role::Operator, Role::Admin] {
        let namespaced = served.client(&served.token(role, Some("staging")).await);
        match namespaced.push_package(data.clone().into(), &sha256).await {
            Err(ClientError::Api {
                status: 403,
                message,
            }) => assert_eq!(
                message,
                "the package repository is shared by every namespace: this needs a token of \
                 no namespace, and this one is limited to namespace staging"
            ),
            other => panic!("{role:?}: {other:?}"),
        }
    }
    let viewer = served.client(&served.token(Role::Viewer, Some("staging")).await);
    let listed: Vec<PackageInfo> = viewer.get("/api/v1/packages").await.unwrap();
    assert_eq!(listed.len(), 1);
    let audit: Vec<AuditEntry> = served
        .client(&served.admin)
        .get("/api/v1/audit")
        .await
        .unwrap();
    let denied = audit
        .iter()
        .filter(|e| e.action == "POST /api/v1/packages" && e.outcome.starts_with("denied: "))
        .count();
    assert_eq!(denied, 2);
}

#[tokio::test]
async fn a_push_is_checked_against_the_sha256_its_sender_sent_before_anything_is_kept() {
    let served = serve(three_agents(), Limits::default()).await;
    let operator = served.client(&served.token(Role::Operator, None).await);
    let archive = build_package(&served.dir, "hello", "2.0.0");
    let data = std::fs::read(&archive).unwrap();
    let right = sha256_of(&data);
    let wrong = sha256_of(b"another archive");
    match operator.push_package(data.clone().into(), &wrong).await {
        Err(ClientError::Api {
            status: 422,
            message,
        }) => {
            assert!(message.contains(&format!("sha256 is {right}")), "{message}");
            assert!(message.contains(&format!("not the {wrong}")), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match operator.push_package(data.clone().into(), "0123").await {
        Err(ClientError::Api {
            status: 400,
            message,
        }) => assert!(message.starts_with("x-shoal-sha256: "), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_nothing_kept(&served, &operator).await;
    let pushed = operator.push_package(data.into(), &right).await.unwrap();
    assert_eq!(pushed.sha256, right);
    let outcomes = push_outcomes(&served).await;
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(outcomes[0].contains(&wrong), "{outcomes:?}");
    assert!(outcomes[1].starts_with("x-shoal-sha256: "), "{outcomes:?}");
    assert_eq!(outcomes[2], "ok");
}

#[tokio::test]
async fn a_hostile_package_is_refused_with_the_rule_and_the_entry_named() {
    let served = serve(three_agents(), Limits::default()).await;
    let operator = served.client(&served.token(Role::Operator, None).await);
    for (entry, rule) in [
        ("../evil", "'..' in the path"),
        ("bin/../../evil", "'..' in the path"),
        ("/etc/evil", "absolute path"),
    ] {
        let data = hostile_package(entry);
        match operator
            .push_package(data.clone().into(), &sha256_of(&data))
            .await
        {
            Err(ClientError::Api {
                status: 422,
                message,
            }) => {
                assert!(
                    message.contains(&format!("{entry}: {rule}")),
                    "{entry}: {message}"
                );
            }
            other => panic!("{entry}: {other:?}"),
        }
    }
    assert_nothing_kept(&served, &operator).await;
    let outcomes = push_outcomes(&served).await;
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| o.starts_with("the package is refused: ")));
}

/// The repository lists nothing, and nothing is left in `incoming/`.
async fn assert_nothing_kept(served: &common::Served, client: &CenterClient) {
    let listed: Vec<PackageInfo> = client.get("/api/v1/packages").await.unwrap();
    assert_eq!(listed, []);
    let incoming = std::fs::read_dir(served.dir.join("incoming")).unwrap();
    assert_eq!(incoming.count(), 0);
}

/// The outcome of every `package.push` in the audit log, oldest first.
async fn push_outcomes(served: &common::Served) -> Vec<String> {
    let audit: Vec<AuditEntry> = served
        .client(&served.admin)
        .get("/api/v1/audit")
        .await
        .unwrap();
    audit
        .into_iter()
        .filter(|e| e.action == "package.push")
        .map(|e| e.outcome)
        .collect()
}

fn sha256_of(data: &[u8]) -> String {
    shoal_pkg::Sha256::of_reader(data).unwrap().to_string()
}

/// A .tar.gz with a good manifest and one file at `path`, written into the tar header as it
/// is: the tar crate's own builder refuses such paths.
fn hostile_package(path: &str) -> Vec<u8> {
    use std::io::Write as _;
    let manifest = "[package]\nname = \"evil\"\nversion = \"1.0.0\"\nkind = \"crontab\"\n\n\
                    [[cron]]\nname = \"yearly\"\nschedule = \"0 0 0 1 1 *\"\ncommand = \"/bin/true\"\n";
    let mut tar = Vec::new();
    for (name, data) in [("shoal.toml", manifest.as_bytes()), (path, b"x".as_slice())] {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_enrollment_is_audited_with_its_join_token_and_unknown_tokens_are_not() {
    let dir = scratch("enroll");
    let shutdown = CancellationToken::new();
    let running = start_center(&dir, &shutdown).await;
    let admin = CenterClient::new(
        &format!("http://{}", running.http),
        running.admin_token.as_deref().unwrap(),
    )
    .unwrap();
    let once = join_token(&admin, Some(1)).await;
    let revoked = join_token(&admin, None).await;
    let _: TokenInfo = admin
        .post(&format!("/api/v1/tokens/{}/revoke", revoked.info.id), &())
        .await
        .unwrap();
    let root = std::fs::read_to_string(dir.join("pki/root.pem")).unwrap();
    let agent = enroll(running.listen, &root, &once.token).await.unwrap();
    for (token, refused) in [
        (once.token.as_str(), "used as many times as it allows"),
        (revoked.token.as_str(), "was revoked"),
        ("shoal_nope_nope_0f0f", "unknown to this center"),
    ] {
        let error = enroll(running.listen, &root, token).await.unwrap_err();
        assert!(error.contains(refused), "{error}");
    }
    let audit: Vec<AuditEntry> = admin.get("/api/v1/audit").await.unwrap();
    let enrollments: Vec<(&str, Option<Role>, &[String], &str)> = audit
        .iter()
        .filter(|e| e.action == "agent.enroll")
        .map(|e| {
            (
                e.token.as_str(),
                e.role,
                e.targets.as_slice(),
                e.outcome.as_str(),
            )
        })
        .collect();
    let host = ["audit-host".to_owned()];
    assert_eq!(
        enrollments,
        [
            (
                once.info.id.as_str(),
                Some(Role::Join),
                &[agent, "audit-host".to_owned()][..],
                "ok"
            ),
            (
                once.info.id.as_str(),
                Some(Role::Join),
                &host[..],
                "refused: the join token has been used as many times as it allows: create a new \
                 one with `shoal token create --role join`"
            ),
            (
                revoked.info.id.as_str(),
                Some(Role::Join),
                &host[..],
                "refused: the join token was revoked: create a new one with `shoal token create \
                 --role join`"
            ),
        ]
    );
    shutdown.cancel();
    running.stopped().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_writes_the_admin_token_0600_and_a_restart_shows_none() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = scratch("admin-token");
    let shutdown = CancellationToken::new();
    let first = start_center(&dir, &shutdown).await;
    let token = first
        .admin_token
        .clone()
        .expect("the first start makes one");
    let file = dir.join("admin.token");
    assert_eq!(first.admin_token_file, file);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("{token}\n")
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    shutdown.cancel();
    first.stopped().await;

    let shutdown = CancellationToken::new();
    let again = start_center(&dir, &shutdown).await;
    assert_eq!(again.admin_token, None);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("{token}\n")
    );
    // The token still opens the API.
    let admin = CenterClient::new(&format!("http://{}", again.http), &token).unwrap();
    let tokens: Vec<TokenInfo> = admin.get("/api/v1/tokens").await.unwrap();
    assert_eq!(tokens.len(), 1);
    shutdown.cancel();
    again.stopped().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh scratch directory for a center, removed first if a run before left it.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-center-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A center as `shoal center` starts it, on ephemeral ports of 127.0.0.1.
async fn start_center(dir: &Path, shutdown: &CancellationToken) -> shoal_center::Running {
    let mut config = shoal_center::Config::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.http = "127.0.0.1:0".parse().unwrap();
    shoal_center::run(config, shutdown.clone()).await.unwrap()
}

async fn join_token(admin: &CenterClient, uses: Option<u32>) -> TokenCreated {
    let request = TokenRequest {
        role: Role::Join,
        namespace: None,
        ttl_secs: None,
        uses,
    };
    admin.post("/api/v1/tokens", &request).await.unwrap()
}

/// Enrolls through the agents' port at `addr` as `audit-host` with the join token `token`:
/// the agent's id, or the refusal.
async fn enroll(addr: std::net::SocketAddr, root_pem: &str, token: &str) -> Result<String, String> {
    use shoal_api::fleet::{methods, EnrollRequest, Enrolled};
    use shoal_rpc::{Addr, Reply, Request, RpcError};
    let credential = token
        .parse::<shoal_api::token::TokenText>()
        .unwrap()
        .credential();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let tls = common::link_tls(root_pem, None);
    let (r, w) = shoal_rpc::transport::connect(&Addr::Tcp(addr.to_string()), Some(&tls))
        .await
        .map_err(|e| e.to_string())?;
    let tasks = tokio_util::task::TaskTracker::new();
    let nothing = tower::service_fn(|req: Request| async move {
        Err::<Reply, _>(RpcError::method_not_found(&req.method))
    });
    let peer = shoal_rpc::conn::spawn(
        r,
        w,
        addr.to_string(),
        tower::util::BoxCloneSyncService::new(nothing),
        shoal_rpc::conn::ConnConfig::default(),
        CancellationToken::new(),
        &tasks,
    );
    let request = EnrollRequest {
        token: credential,
        csr_pem: csr,
        hostname: "audit-host".into(),
        namespace: None,
        labels: Default::default(),
    };
    let answer = peer
        .call(methods::ENROLL, &[request], Duration::from_secs(10))
        .await;
    peer.close();
    tasks.close();
    tasks.wait().await;
    let enrolled: Enrolled =
        shoal_rpc::decode::from_value(answer.map_err(|e| e.to_string())?).unwrap();
    Ok(enrolled.agent_id)
}
