//! Following the center's configuration through the agent that started this process: with
//! `SHOAL_AGENT=unix:PATH` in its environment, the application says which version of the
//! center's layer it started with, then asks the agent (a long poll, `agent.config.watch`)
//! for a version other than the one in force; when one comes, it reloads as SIGHUP does
//! (every layer read again, the whole configuration checked, swapped in at once or refused)
//! and tells the agent how that went (`agent.config.applied`: applied with the version now
//! in force, or rejected with the reason, the old configuration staying in force).
//!
//! The agent may be away (restarting, or not there at all): calls are tried again after a
//! pause, and the last outcome is told again on the next connection, so an acknowledgement
//! lost with the agent is not lost for the center.

use std::time::Duration;

use shoal_api::config::{ConfigApplied, ConfigVersion, Delivery};
use shoal_api::program::{methods, ConfigWatch, ConfigWatched};
use shoal_rpc::client::CallOptions;
use shoal_rpc::{Addr, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Handle;

/// How long the agent may hold a watch.
const WAIT: Duration = Duration::from_secs(30);
/// The first pause before calling an agent that did not answer again; it doubles while the
/// agent stays away.
const PAUSE_MIN: Duration = Duration::from_millis(100);
/// The longest pause before calling an agent that did not answer again.
const PAUSE_CAP: Duration = Duration::from_secs(5);

/// Where the agent is and which app this process is to it.
#[derive(Debug, Clone)]
pub(crate) struct AgentLink {
    pub addr: Addr,
    /// The app's name on the agent (`SHOAL_APP`), which names its configuration.
    pub app: String,
}

impl AgentLink {
    /// The agent named by `env` (`SHOAL_AGENT`), if any; `fallback` names the app when
    /// `SHOAL_APP` does not.
    pub(crate) fn from_env(env: &[(String, String)], fallback: &str) -> Option<AgentLink> {
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let raw = get(shoal_api::program::env::AGENT).filter(|v| !v.is_empty())?;
        let addr = match raw.parse::<Addr>() {
            Ok(addr @ Addr::Unix(_)) => addr,
            _ => {
                warn!(
                    value = raw,
                    "SHOAL_AGENT is not unix:PATH; the center's configuration is not followed"
                );
                return None;
            }
        };
        let app = get("SHOAL_APP").unwrap_or(fallback).to_owned();
        Some(AgentLink { addr, app })
    }
}

/// Follows the agent until `closing` is cancelled (see the module documentation).
pub(crate) async fn follow(handle: Handle, link: AgentLink, closing: CancellationToken) {
    let client = match Client::builder()
        .endpoint(link.addr.clone())
        .timeout(WAIT + Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            warn!(agent = %link.addr, %error, "the agent's socket cannot be used; the center's configuration is not followed");
            return;
        }
    };
    let mut follower = Follower {
        handle,
        client,
        app: link.app,
        told: None,
    };
    let mut pause = PAUSE_MIN;
    loop {
        let round = follower.round();
        let ended = tokio::select! {
            () = closing.cancelled() => return,
            ended = round => ended,
        };
        if ended.answered {
            // The agent was there: this is a new outage, not the old one going on.
            pause = PAUSE_MIN;
        }
        debug!(error = %ended.error, retry_in = ?pause, "the agent did not answer");
        tokio::select! {
            () = closing.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(PAUSE_CAP);
    }
}

/// How a [`Follower::round`] ended.
struct RoundEnd {
    /// Some call of the round was answered before one failed.
    answered: bool,
    error: shoal_rpc::Error,
}

struct Follower {
    handle: Handle,
    client: Client,
    app: String,
    /// The last outcome the agent has heard (or should have): said again after each failed
    /// call, in case the agent went away before it heard it.
    told: Option<ConfigApplied>,
}

impl Follower {
    /// Says the last outcome (or the version in force), then watches and applies until a call
    /// fails; answers why it did, and whether any call of the round was answered first.
    async fn round(&mut self) -> RoundEnd {
        let mut answered = false;
        let error = self.calls(&mut answered).await;
        RoundEnd { answered, error }
    }

    async fn calls(&mut self, answered: &mut bool) -> shoal_rpc::Error {
        let last = self.told.clone().or_else(|| self.in_force());
        if let Some(last) = last {
            if let Err(e) = self.tell(&last).await {
                return e;
            }
            *answered = true;
        }
        loop {
            let have = self.handle.config().center_version();
            let watch = ConfigWatch {
                app: self.app.clone(),
                have,
                wait_ms: WAIT.as_millis() as u64,
            };
            let watched: ConfigWatched = match self.call(methods::CONFIG_WATCH, &watch).await {
                Ok(watched) => watched,
                Err(e) => return e,
            };
            *answered = true;
            if watched.version == have {
                continue;
            }
            let outcome = self.apply(watched.version).await;
            if let Some(outcome) = outcome {
                if let Err(e) = self.tell(&outcome).await {
                    return e;
                }
            }
        }
    }

    /// Reloads for `wanted` and says how it went (nothing to say when no version came).
    async fn apply(&self, wanted: Option<ConfigVersion>) -> Option<ConfigApplied> {
        info!(version = ?wanted, "the agent has a new version of the center's configuration; reloading");
        match self.handle.reload().await {
            Ok(()) => self.in_force(),
            Err(reason) => Some(ConfigApplied {
                name: self.app.clone(),
                version: wanted?,
                delivery: Delivery::Rejected { reason },
            }),
        }
    }

    /// The version of the center's layer in force, as applied.
    fn in_force(&self) -> Option<ConfigApplied> {
        Some(ConfigApplied {
            name: self.app.clone(),
            version: self.handle.config().center_version()?,
            delivery: Delivery::Applied,
        })
    }

    async fn tell(&mut self, outcome: &ConfigApplied) -> Result<(), shoal_rpc::Error> {
        self.told = Some(outcome.clone());
        let () = self.call(methods::CONFIG_APPLIED, outcome).await?;
        Ok(())
    }

    async fn call<P, R>(&self, method: &str, arg: &P) -> Result<R, shoal_rpc::Error>
    where
        P: serde::Serialize,
        R: serde::de::DeserializeOwned + 'static,
    {
        let opts = CallOptions {
            timeout: Some(WAIT + Duration::from_secs(5)),
            ..CallOptions::default()
        };
        self.client.call_with(&opts, method, &[arg]).await
    }
}
