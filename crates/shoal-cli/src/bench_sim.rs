//! `shoal bench center-sim`: many simulated agents in one process, each with the real link
//! (its own enrollment with the join token, key pair, certificate and mutual-TLS connection,
//! `hello`, heartbeats, `exec`), joined to one center in a staggered way, so that the center's
//! cost per agent can be measured from outside (`bench/center-sim.sh`, `bench/config-push.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures_util::future::BoxFuture;
use shoal_agent::link::{self, Fetch, Host, Link, LinkOptions};
use shoal_agent::logs::Logs;
use shoal_agent::AgentError;
use shoal_api::agent::{AppKind, AppState, AppStatus, LogQuery};
use shoal_api::config::{ConfigApplied, ConfigChanged, ConfigHeld, Delivery};
use shoal_api::fleet::{Action, Exec, TargetResult, TargetStatus};
use shoal_api::manifest::Name;
use shoal_api::token::TokenText;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::out::{errln, outln};

#[derive(Args, Debug)]
pub struct CenterSimArgs {
    /// The center's agents' port, host:port.
    #[arg(long)]
    center: String,
    /// A join token with at least as many uses as agents.
    #[arg(long)]
    join: TokenText,
    /// How many agents to simulate.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Each agent's identity goes to DIR/agent-I/link/.
    #[arg(long)]
    data_dir: PathBuf,
    /// The pause between one agent's start and the next.
    #[arg(long, default_value = "2ms", value_parser = humantime::parse_duration)]
    stagger: Duration,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// An app each agent reports running (repeatable): the center sends configuration NAME
    /// only to agents listing app NAME.
    #[arg(long = "app", value_name = "NAME", value_parser = Name::new)]
    apps: Vec<Name>,
}

/// A simulated agent: it reports the apps `--app` names as running (no process behind them);
/// it answers `ps` with them, every other action and every log request with an error. A
/// configuration version is checked as the agent checks it and applied at once, as if its app
/// took it: reported and acknowledged.
struct SimHost {
    dir: PathBuf,
    apps: Arc<[AppStatus]>,
    configs: Mutex<BTreeMap<String, ConfigHeld>>,
    outcomes: broadcast::Sender<ConfigApplied>,
}

const SIMULATED: &str = "simulated agent";

impl Host for SimHost {
    fn data_dir(&self) -> &Path {
        &self.dir
    }

    fn apps(
        &self,
        _link: Option<std::net::IpAddr>,
    ) -> BoxFuture<'_, Result<Vec<AppStatus>, AgentError>> {
        let apps = self.apps.to_vec();
        Box::pin(async move { Ok(apps) })
    }

    fn exec(&self, exec: Exec, _fetch: Arc<dyn Fetch>) -> BoxFuture<'_, TargetResult> {
        Box::pin(async move {
            let (status, message, detail) = match exec.action {
                Action::Ps => (
                    TargetStatus::Ok,
                    format!("{} apps", self.apps.len()),
                    serde_json::to_value(&self.apps[..]).ok(),
                ),
                _ => (TargetStatus::Error, SIMULATED.to_owned(), None),
            };
            TargetResult {
                status,
                message,
                detail,
                duration_ms: Some(0),
            }
        })
    }

    fn logs<'a>(
        &'a self,
        _name: &'a Name,
        _query: &'a LogQuery,
    ) -> BoxFuture<'a, Result<Logs, AgentError>> {
        Box::pin(async { Err(AgentError::Invalid(SIMULATED.into())) })
    }

    fn configs(&self) -> BoxFuture<'_, Vec<ConfigHeld>> {
        let held = self.configs.lock().unwrap().values().cloned().collect();
        Box::pin(async move { held })
    }

    fn config_changed(&self, changed: ConfigChanged) -> BoxFuture<'_, ()> {
        if shoal_agent::central::verify(&changed).is_ok() {
            let held = ConfigHeld {
                name: changed.name.clone(),
                version: changed.version,
                sha256: changed.sha256.to_ascii_lowercase(),
                delivery: Delivery::Applied,
            };
            let known = self
                .configs
                .lock()
                .unwrap()
                .insert(changed.name.clone(), held.clone());
            if known.as_ref() != Some(&held) {
                let _ = self.outcomes.send(ConfigApplied {
                    name: changed.name,
                    version: changed.version,
                    delivery: Delivery::Applied,
                });
            }
        }
        Box::pin(async {})
    }

    fn config_outcomes(&self) -> Option<broadcast::Receiver<ConfigApplied>> {
        Some(self.outcomes.subscribe())
    }
}

pub fn run(args: CenterSimArgs) -> anyhow::Result<ExitCode> {
    crate::agent::raise_fd_limit();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    rt.enable_all().build()?.block_on(simulate(args))?;
    Ok(ExitCode::SUCCESS)
}

/// Starts the agents, says when all are linked, then keeps them until SIGINT or SIGTERM.
async fn simulate(args: CenterSimArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let started = Instant::now();
    let apps: Arc<[AppStatus]> = args.apps.iter().map(simulated_app).collect();
    let mut starting = JoinSet::new();
    for i in 0..args.agents {
        let at = started + args.stagger * u32::try_from(i).unwrap_or(u32::MAX);
        let dir = args.data_dir.join(format!("agent-{i}"));
        let mut options = LinkOptions::new(args.center.clone());
        options.join = Some(args.join.clone());
        options.labels.insert("sim".into(), i.to_string());
        let (apps, tasks, shutdown) = (apps.clone(), tasks.clone(), shutdown.clone());
        starting.spawn(async move {
            tokio::time::sleep_until(at).await;
            start_one(dir, apps, options, tasks, shutdown).await
        });
    }
    let links = tokio::select! {
        links = online(starting, args.agents, started) => links?,
        () = crate::signal::shutdown() => {
            shutdown.cancel();
            tasks.close();
            tasks.wait().await;
            return Ok(());
        }
    };
    outln!(
        "all {} agents online in {:.2} s",
        args.agents,
        started.elapsed().as_secs_f64()
    )?;
    crate::signal::shutdown().await;
    shutdown.cancel();
    for link in links {
        link.wait().await;
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Enrolls (the first time) and links one agent; answers once its link said hello.
async fn start_one(
    dir: PathBuf,
    apps: Arc<[AppStatus]>,
    options: LinkOptions,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<Link> {
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let host = Arc::new(SimHost {
        dir: dir.clone(),
        apps,
        configs: Mutex::default(),
        outcomes: broadcast::channel(64).0,
    });
    let center = link::CenterPeer::new(&options.center, options.call_timeout);
    let link = link::start_with(host, tasks, options, center, shutdown)
        .await
        .with_context(|| format!("starting the link of {}", dir.display()))?;
    let mut linked = link.linked();
    linked
        .wait_for(|n| *n > 0)
        .await
        .context("the link ended before it said hello")?;
    Ok(link)
}

/// Gathers the links as they come up, reporting progress every 10%.
async fn online(
    mut starting: JoinSet<anyhow::Result<Link>>,
    total: usize,
    started: Instant,
) -> anyhow::Result<Vec<Link>> {
    let mut links = Vec::with_capacity(total);
    let step = (total / 10).max(1);
    while let Some(joined) = starting.join_next().await {
        links.push(joined.context("an agent's start panicked")??);
        if links.len() % step == 0 {
            errln!(
                "{}/{total} online after {:.1} s",
                links.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(links)
}

/// A running service named `name`, as a simulated agent reports it.
fn simulated_app(name: &Name) -> AppStatus {
    AppStatus::new(
        name.to_string(),
        "0.0.0".into(),
        AppKind::Service,
        AppState::Running,
    )
}
