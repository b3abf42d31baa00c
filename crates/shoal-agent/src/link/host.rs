//! What the link needs from the agent it links ([`Host`]): the apps and the configurations
//! held for `hello` and the heartbeats, a command run to its result, an app's log lines, a
//! configuration version to take and the outcomes to send back. [`AgentHost`] is the real
//! agent; a load generator can link a host of its own (`shoal bench center-sim`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use shoal_api::agent::{AppStatus, LogQuery};
use shoal_api::config::{ConfigApplied, ConfigChanged, ConfigHeld};
use shoal_api::fleet::{Exec, TargetResult};
use shoal_api::manifest::Name;

use super::exec::{Commands, Fetch};
use crate::logs::Logs;
use crate::{Agent, AgentError};

/// The side of an agent its link serves.
pub trait Host: Send + Sync + 'static {
    /// Where the link keeps its identity (`DIR/link/identity.json`).
    fn data_dir(&self) -> &Path;
    /// The apps, as `hello` and each heartbeat report them; their endpoints at `link` (the
    /// local address of the link) unless the host has an address of its own.
    fn apps(&self, link: Option<IpAddr>) -> BoxFuture<'_, Result<Vec<AppStatus>, AgentError>>;
    /// Changes whenever the apps' endpoints may have changed, so the link reports them at
    /// once instead of at the next heartbeat; `None`: only heartbeats report.
    fn serving(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Runs the center's command (at most once per command id) and answers its result.
    fn exec(&self, exec: Exec, fetch: Arc<dyn Fetch>) -> BoxFuture<'_, TargetResult>;
    /// The lines of app `name` that pass `query` (and, with follow, those to come).
    fn logs<'a>(
        &'a self,
        name: &'a Name,
        query: &'a LogQuery,
    ) -> BoxFuture<'a, Result<Logs, AgentError>>;
    /// The configurations held, as `hello` and each heartbeat report them (none by default).
    fn configs(&self) -> BoxFuture<'_, Vec<ConfigHeld>> {
        Box::pin(async { Vec::new() })
    }
    /// Takes the center's `config.changed` (dropped by default). Returns once it is stored;
    /// the delivery goes on without the caller.
    fn config_changed(&self, changed: ConfigChanged) -> BoxFuture<'_, ()> {
        drop(changed);
        Box::pin(async {})
    }
    /// The outcomes of deliveries to come, for `config.applied` (none by default).
    fn config_outcomes(&self) -> Option<tokio::sync::broadcast::Receiver<ConfigApplied>> {
        None
    }
}

/// The real agent as the link's host: its apps, its command table, its logs.
#[derive(Debug)]
pub struct AgentHost {
    agent: Agent,
    commands: Commands,
    dir: PathBuf,
}

impl AgentHost {
    pub fn new(agent: Agent, commands: Commands) -> AgentHost {
        let dir = agent.data().root().to_owned();
        AgentHost {
            agent,
            commands,
            dir,
        }
    }
}

impl Host for AgentHost {
    fn data_dir(&self) -> &Path {
        &self.dir
    }

    fn apps(&self, link: Option<IpAddr>) -> BoxFuture<'_, Result<Vec<AppStatus>, AgentError>> {
        Box::pin(self.agent.apps_from(link))
    }

    fn serving(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.agent.serving())
    }

    fn exec(&self, exec: Exec, fetch: Arc<dyn Fetch>) -> BoxFuture<'_, TargetResult> {
        Box::pin(self.commands.exec(exec, fetch))
    }

    fn logs<'a>(
        &'a self,
        name: &'a Name,
        query: &'a LogQuery,
    ) -> BoxFuture<'a, Result<Logs, AgentError>> {
        Box::pin(self.agent.logs(name, query))
    }

    fn configs(&self) -> BoxFuture<'_, Vec<ConfigHeld>> {
        Box::pin(async {
            self.agent.central().held().await.unwrap_or_else(|error| {
                tracing::warn!(%error, "reading the configurations held failed; reporting none");
                Vec::new()
            })
        })
    }

    fn config_changed(&self, changed: ConfigChanged) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (app, version) = (changed.name.clone(), changed.version);
            if let Err(error) = self.agent.central().receive(changed).await {
                tracing::warn!(%app, version, %error, "storing a configuration version failed; the center sends it again");
            }
        })
    }

    fn config_outcomes(&self) -> Option<tokio::sync::broadcast::Receiver<ConfigApplied>> {
        Some(self.agent.central().outcomes())
    }
}
