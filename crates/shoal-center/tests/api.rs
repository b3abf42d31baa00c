//! The center's HTTP API on a real listener over the SQLite store, with a stand-in for the
//! agents' link: roles (401, 403) for every class of route, namespaces, tokens, the audit log,
//! the package repository, commands and their results, and the OpenAPI document.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{serve, Fleet};
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
    let paths = doc["paths"].as_object().expect("paths");
    let mut routes = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            routes.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    routes.sort();
    let expected = [
        "GET /api/v1/agents",
        "GET /api/v1/audit",
        "GET /api/v1/commands",
        "GET /api/v1/commands/{id}",
        "GET /api/v1/configs/{name}",
        "GET /api/v1/configs/{name}/diff",
        "GET /api/v1/configs/{name}/status",
        "GET /api/v1/configs/{name}/versions",
        "GET /api/v1/configs/{name}/versions/{version}",
        "GET /api/v1/packages",
        "GET /api/v1/services/{name}/endpoints",
        "GET /api/v1/tokens",
        "POST /api/v1/agents/{id}/revoke",
        "POST /api/v1/commands",
        "POST /api/v1/configs/{name}/promote",
        "POST /api/v1/configs/{name}/rollback",
        "POST /api/v1/configs/{name}/versions",
        "POST /api/v1/logs",
        "POST /api/v1/packages",
        "POST /api/v1/tokens",
        "POST /api/v1/tokens/{id}/revoke",
    ];
    assert_eq!(routes, expected);
    // Each is served, and refuses a request without a token.
    let none = CenterClient::new(&served.url, "").unwrap();
    for route in routes {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{id}", "x")
            .replace("{name}", "x")
            .replace("{version}", "1");
        let answer = match method {
            "GET" => none.get::<serde_json::Value>(&path).await,
            _ => none.post::<_, serde_json::Value>(&path, &()).await,
        };
        assert_eq!(status(answer), 401, "{route}");
    }
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
    // The center "stops" while a2 has not answered: the command's task is dropped.
    let running =
        tokio::spawn(async move { center.commands.run(&Caller::center(), request).await });
    let admin = served.client(&served.admin);
    let started = wait_for(|| async {
        let list: Vec<CommandView> = admin.get("/api/v1/commands").await.ok()?;
        let view = list.into_iter().next()?;
        (view.results["a1"].status == TargetStatus::Ok).then_some(view)
    })
    .await;
    running.abort();
    let _ = running.await;
    assert_eq!(served.center.commands.recover().await.unwrap(), 1);
    let after: CommandView = admin
        .get(&format!("/api/v1/commands/{}", started.command))
        .await
        .unwrap();
    assert_eq!(after.state, CommandState::Interrupted);
    assert_eq!(after.results["a1"].status, TargetStatus::Ok);
    assert_eq!(after.results["a2"].status, TargetStatus::Interrupted);
    assert_eq!(fleet.ran_on(), ["a1"]);
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
async fn a_command_runs_to_its_end_when_its_caller_goes_away() {
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
}
