//! Discovery end to end on loopback: a `shoal center` and three `shoal agent`s each run the
//! SDK's hello service on its own address (127.0.0.1 found from the link, 127.0.0.12 and
//! 127.0.0.13 given with `--advertise`); a `shoal_rpc::Client` following the service through
//! `CenterDiscover`, and another following it through one agent's programs socket
//! (`AgentDiscover`), call it without pause while one instance is stopped and another
//! started, and no call fails; the agent's `agent.discover.watch` answers the set, and a
//! long poll answers the change; an agent gone offline takes its endpoint out of the set; an
//! agent whose center is gone says it is not linked. An agent alone reports a health-checked
//! instance's endpoint at its `--advertise` host while the instance is healthy, and none once
//! it is stopped, and answers discovery with an error saying it has no center.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::fleet::{free_port, hello_package, Center};
use common::Agent;
use common::{wait_for, Scratch, SHOAL};
use shoal::discover::AgentDiscover;
use shoal_agent::programs::{NOT_LINKED, NO_CENTER};
use shoal_api::fleet::{DiscoverWatch, ServiceEndpoints};
use shoal_api::program::methods;
use shoal_center::client::{CenterClient, CenterDiscover};
use shoal_rpc::{Addr, Balance, Client};
use tokio_util::sync::CancellationToken;

/// What the discovery tests ask a center beyond the common commands.
impl Center {
    /// The hello service's endpoints by agent, as the center's API answers them.
    fn endpoints(&self, runtime: &tokio::runtime::Runtime) -> BTreeMap<String, String> {
        let client = CenterClient::new(&self.url, &self.token).unwrap();
        let answer: ServiceEndpoints = runtime
            .block_on(client.get("/api/v1/services/hello/endpoints"))
            .unwrap();
        answer
            .endpoints
            .into_iter()
            .map(|e| (e.agent, e.addr))
            .collect()
    }
}

/// A `shoal agent` whose programs listen on `host` and greet with `greeting`.
fn join_agent(data: &Path, center: &Center, join: &str, host: &str, advertise: bool) -> Agent {
    let port = PORT.get().unwrap();
    let mut command = Agent::center_command(data, &center.link);
    command
        .args(["--join", join])
        // The programs it starts inherit these: the SDK reads SHOAL_… overrides.
        .env("SHOAL_RPC__LISTEN", format!("{host}:{port}"))
        .env("SHOAL_HELLO__GREETING", host);
    if advertise {
        command.args(["--advertise", host]);
    }
    Agent::spawn(command, data)
}

/// An agent's programs socket.
fn programs(agent: &Agent) -> Addr {
    Addr::Unix(agent.data.join("programs.sock"))
}

/// `agent.discover.watch` for hello on the programs socket at `agent`.
async fn discover_watch(
    agent: &Addr,
    after: Option<u64>,
    wait_ms: u64,
) -> Result<ServiceEndpoints, shoal_rpc::Error> {
    let client = Client::builder()
        .endpoint(agent.clone())
        .timeout(std::time::Duration::from_millis(wait_ms) + std::time::Duration::from_secs(30))
        .build()?;
    let watch = DiscoverWatch {
        service: "hello".into(),
        after,
        wait_ms,
    };
    client.call(methods::DISCOVER_WATCH, &(watch,)).await
}

/// The error code of a failed call; `None` for an answer or an error without one.
fn code(answer: &Result<ServiceEndpoints, shoal_rpc::Error>) -> Option<i64> {
    match answer {
        Err(shoal_rpc::Error::Remote(e)) => e.code,
        _ => None,
    }
}

/// The port every instance listens on, each on its own loopback address.
static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();

/// What the calling loop saw.
#[derive(Debug, Default)]
struct Calls {
    ok: u64,
    failed: Vec<String>,
    /// Answers by greeting (the host of the instance that answered).
    by_host: BTreeMap<String, u64>,
    /// When each host last answered.
    last: BTreeMap<String, std::time::Instant>,
}

/// Calls `greet` until `stop`, one call at a time, counting what happens.
async fn call_until(client: Client, calls: Arc<Mutex<Calls>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let answer: Result<String, _> = client.call("greet", &("world",)).await;
        let mut calls = calls.lock().unwrap();
        match answer {
            Ok(text) => {
                calls.ok += 1;
                let host = text.split(',').next().unwrap_or_default().to_owned();
                *calls.by_host.entry(host.clone()).or_default() += 1;
                calls.last.insert(host, std::time::Instant::now());
            }
            Err(e) => calls.failed.push(e.to_string()),
        }
    }
}

#[test]
fn a_client_following_a_service_through_the_center_never_fails_while_instances_move() {
    let hosts = ["127.0.0.1", "127.0.0.12", "127.0.0.13"];
    let port = *PORT.get_or_init(|| free_port(&hosts));
    let dir = Scratch::new("discovery");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let center = Center::start(&dir.0.join("center"));
    let join = center.join_token(3);
    // The first agent's endpoint host is the local address of its link (127.0.0.1); the
    // others say theirs.
    let members: Vec<Agent> = hosts
        .iter()
        .enumerate()
        .map(|(n, host)| {
            join_agent(
                &dir.0.join(format!("agent{n}")),
                &center,
                &join,
                host,
                n > 0,
            )
        })
        .collect();
    let ids: Vec<String> = members.iter().map(Agent::id).collect();
    let at = |n: usize| (ids[n].clone(), format!("{}:{port}", hosts[n]));

    // Without [health]: each instance listens on its own address, and a check asks
    // 127.0.0.1 only.
    let archive = hello_package(&dir.0, port, "");
    center.ok(&["push", archive.to_str().unwrap()]);
    center.fleet(&["install", "hello", "--all"]);
    wait_for("three endpoints", || {
        (center.endpoints(&runtime) == BTreeMap::from([at(0), at(1), at(2)])).then_some(())
    });
    center.fleet(&["stop", "hello", "--ids", &ids[2]]);
    wait_for("the stopped instance gone from the set", || {
        (center.endpoints(&runtime) == BTreeMap::from([at(0), at(1)])).then_some(())
    });

    let calls = Arc::new(Mutex::new(Calls::default()));
    let stop = CancellationToken::new();
    // The CLI shows the same set.
    let shown: ServiceEndpoints =
        serde_json::from_str(&center.ok(&["endpoints", "hello", "--json"])).unwrap();
    assert_eq!(shown.endpoints.len(), 2);
    assert_eq!(shown.namespace, "default");

    // Through the third agent's programs socket: the same set, and a long poll that holds
    // while nothing changes.
    let programs = programs(&members[2]);
    let first = runtime
        .block_on(discover_watch(&programs, None, 0))
        .unwrap();
    let listed = |answer: &ServiceEndpoints| -> BTreeMap<String, String> {
        answer
            .endpoints
            .iter()
            .map(|e| (e.agent.clone(), e.addr.clone()))
            .collect()
    };
    assert_eq!(listed(&first), BTreeMap::from([at(0), at(1)]));
    let held = runtime
        .block_on(discover_watch(&programs, Some(first.revision), 300))
        .unwrap();
    assert_eq!(held.revision, first.revision);
    let long_poll = runtime.spawn({
        let programs = programs.clone();
        async move { discover_watch(&programs, Some(first.revision), 300_000).await }
    });

    let hello = CenterDiscover::new(&center.url, &center.token, "hello")
        .unwrap()
        .balance(Balance::RoundRobin);
    let client = runtime
        .block_on(Client::builder().discover(&hello).connect())
        .unwrap();
    let caller = runtime.spawn(call_until(client, calls.clone(), stop.clone()));
    // A program of the fleet follows the service through its agent alone.
    let through_agent = Arc::new(Mutex::new(Calls::default()));
    let hello_here = AgentDiscover::at(programs.clone(), "hello");
    let client = runtime
        .block_on(Client::builder().discover(&hello_here).connect())
        .unwrap();
    let agent_caller = runtime.spawn(call_until(client, through_agent.clone(), stop.clone()));
    let count = |calls: &Mutex<Calls>, host: &str| {
        calls
            .lock()
            .unwrap()
            .by_host
            .get(host)
            .copied()
            .unwrap_or(0)
    };
    let answered_by = |host: &str| count(&calls, host);
    let answered_here = |host: &str| count(&through_agent, host);
    wait_for("calls answered by both instances", || {
        (answered_by(hosts[0]) > 20
            && answered_by(hosts[1]) > 20
            && answered_here(hosts[0]) > 20
            && answered_here(hosts[1]) > 20)
            .then_some(())
    });

    // One instance stops, another starts, while the calls go on.
    let stop_asked = std::time::Instant::now();
    center.fleet(&["stop", "hello", "--ids", &ids[0]]);
    let stop_done = stop_asked.elapsed();
    let changed = runtime.block_on(long_poll).unwrap().unwrap();
    assert_ne!(changed.revision, first.revision);
    assert!(
        !listed(&changed).contains_key(&ids[0]),
        "the long poll answered a set with the stopped instance: {changed:?}"
    );
    center.fleet(&["start", "hello", "--ids", &ids[2]]);
    wait_for("the set to follow", || {
        (center.endpoints(&runtime) == BTreeMap::from([at(1), at(2)])).then_some(())
    });
    let (before, before_here) = (answered_by(hosts[2]), answered_here(hosts[2]));
    wait_for("calls answered by the started instance", || {
        (answered_by(hosts[2]) > before + 20 && answered_here(hosts[2]) > before_here + 20)
            .then_some(())
    });
    let (stopped, stopped_here) = (answered_by(hosts[0]), answered_here(hosts[0]));
    let (later, later_here) = (answered_by(hosts[1]), answered_here(hosts[1]));
    wait_for("more calls after the move", || {
        (answered_by(hosts[1]) > later + 20 && answered_here(hosts[1]) > later_here + 20)
            .then_some(())
    });
    assert_eq!(
        answered_by(hosts[0]),
        stopped,
        "a call reached the stopped instance"
    );
    assert_eq!(
        answered_here(hosts[0]),
        stopped_here,
        "a call through the agent reached the stopped instance"
    );

    // An agent gone offline takes its endpoints out of the set, though its program (which
    // outlives the agent) still answers.
    let mut members = members;
    members[1].child.kill().unwrap();
    members[1].child.wait().unwrap();
    wait_for("the offline agent's endpoint gone", || {
        (center.endpoints(&runtime) == BTreeMap::from([at(2)])).then_some(())
    });
    let last = answered_by(hosts[2]);
    wait_for("calls answered by the one instance left", || {
        (answered_by(hosts[2]) > last + 20).then_some(())
    });
    let last_here = answered_here(hosts[2]);
    wait_for(
        "calls through the agent answered by the one instance left",
        || (answered_here(hosts[2]) > last_here + 20).then_some(()),
    );

    stop.cancel();
    runtime.block_on(caller).unwrap();
    runtime.block_on(agent_caller).unwrap();
    for (how, calls) in [("the center", &calls), ("the agent", &through_agent)] {
        let calls = calls.lock().unwrap();
        assert!(
            calls.failed.is_empty(),
            "through {how}: {} of {} calls failed, the first: {:?}",
            calls.failed.len(),
            calls.ok + calls.failed.len() as u64,
            &calls.failed[..calls.failed.len().min(3)]
        );
        eprintln!(
            "calls through {how}: {} ok, by instance {:?}",
            calls.ok, calls.by_host
        );
    }
    let calls = calls.lock().unwrap();
    eprintln!(
        "the stopped instance's last call came {:?} after the stop was asked (shutdown_delay \
         300ms; the stop command took {stop_done:?})",
        calls.last[hosts[0]].duration_since(stop_asked)
    );

    // With its center gone, an agent says it is not linked.
    let center_at = center.link.clone();
    drop(center);
    let refused = wait_for("the agent to say it is not linked", || {
        let answer = runtime.block_on(discover_watch(&programs, None, 0));
        (code(&answer) == Some(NOT_LINKED)).then_some(answer)
    });
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains(&format!("not linked to its center at {center_at}")),
        "{message}"
    );
    drop(members);
}

#[test]
fn an_agent_reports_a_service_s_endpoint_at_its_advertised_host_only_while_it_is_healthy() {
    let dir = Scratch::new("discovery-alone");
    let port = free_port(&["127.0.0.1"]);
    let data = dir.0.join("agent");
    std::fs::create_dir_all(&data).unwrap();
    // No center: only --advertise gives the endpoints a host.
    let child = Command::new(SHOAL)
        .args(["agent", "--advertise", "127.0.0.1", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Agent {
        child,
        data: data.clone(),
    };
    wait_for("the agent to answer", || {
        common::shoal(&data, &["ps"]).status.success().then_some(())
    });
    let health = format!("\n[health]\nport = {port}\nping = true\ninterval = \"2s\"\n");
    let archive = hello_package(&dir.0, port, &health);
    // The install returns once the new version passed its health check.
    common::shoal_ok(&data, &["install", archive.to_str().unwrap()]);
    let hello = |data: &Path| -> shoal_api::agent::AppStatus {
        let apps: Vec<shoal_api::agent::AppStatus> =
            serde_json::from_str(&common::shoal_ok(data, &["ps", "--json"])).unwrap();
        apps.into_iter().find(|a| a.name == "hello").unwrap()
    };
    let running = wait_for("hello healthy", || {
        let app = hello(&data);
        (app.health == Some(shoal_api::agent::Health::Ok)).then_some(app)
    });
    assert_eq!(running.endpoints, [format!("127.0.0.1:{port}")]);
    // Discovery goes through the center, which this agent has not.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let programs = Addr::Unix(data.join("programs.sock"));
    let answer = runtime.block_on(discover_watch(&programs, None, 0));
    assert_eq!(code(&answer), Some(NO_CENTER), "{answer:?}");
    let message = answer.unwrap_err().to_string();
    assert!(message.contains("this agent has no center"), "{message}");

    common::shoal_ok(&data, &["stop", "hello"]);
    let stopped = hello(&data);
    assert_eq!(stopped.state, shoal_api::agent::AppState::Stopped);
    assert!(stopped.endpoints.is_empty(), "{stopped:?}");
}
