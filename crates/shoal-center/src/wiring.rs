//! wiring.rs: how the center's parts meet: commands reach agents through the link
//! ([`LinkReach`]), the link checks join tokens with the token store and serves packages from
//! the repository.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use shoal_api::agent::LogQuery;
use shoal_api::fleet::{AgentInfo, Exec, LogLine, TargetResult};
use shoal_store::StoreError;

use crate::commands::{Reach, ReachError};
use crate::link::{JoinAuthority, JoinGrant, JoinRefused, LinkError, Links, PackageSource};
use crate::packages::{PackageError, Packages};
use crate::tokens::{Refused, TokenError, Tokens};

/// How long an agent has to start a log query.
const LOGS_START: Duration = Duration::from_secs(10);

/// Commands reach agents over their links.
#[derive(Debug, Clone)]
pub struct LinkReach(pub Links);

#[async_trait]
impl Reach for LinkReach {
    async fn agents(&self) -> Result<Vec<AgentInfo>, ReachError> {
        self.0.agents().await.map_err(failed)
    }

    /// Waits for the agent to be online, sends the command, and sends it again when the link
    /// dropped before the answer (the agent runs a command id at most once, and answers a
    /// repeat with the first run's result), all before `deadline`.
    async fn exec(
        &self,
        agent: &str,
        exec: Exec,
        deadline: Instant,
    ) -> Result<TargetResult, ReachError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.0.wait_online(agent, left).await {
                return Err(ReachError::Offline);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.exec(agent, exec.clone(), left).await {
                Ok(result) => return Ok(result),
                Err(LinkError::Offline(_) | LinkError::Dropped(_)) => continue,
                Err(LinkError::Timeout { .. }) => return Err(ReachError::Timeout),
                Err(other) => return Err(ReachError::Failed(other.to_string())),
            }
        }
    }

    fn services(&self) -> crate::services::Services {
        self.0.services().clone()
    }

    async fn revoke(&self, agent: &str) -> Result<(), ReachError> {
        match self.0.revoke(agent).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ReachError::Failed(format!("no agent {agent}"))),
            Err(e) => Err(failed(e)),
        }
    }

    async fn logs(
        &self,
        agent: &str,
        app: &str,
        query: LogQuery,
    ) -> Result<BoxStream<'static, LogLine>, ReachError> {
        match self.0.logs(agent, app, query, LOGS_START).await {
            Ok(lines) => Ok(lines.boxed()),
            Err(LinkError::Offline(_)) => Err(ReachError::Offline),
            Err(LinkError::Timeout { .. }) => Err(ReachError::Timeout),
            Err(other) => Err(ReachError::Failed(other.to_string())),
        }
    }
}

fn failed(e: StoreError) -> ReachError {
    ReachError::Failed(e.to_string())
}

#[async_trait]
impl JoinAuthority for Tokens {
    async fn redeem(&self, credential: &str) -> Result<JoinGrant, JoinRefused> {
        match self.redeem_join(credential).await {
            Ok((token_id, namespace)) => Ok(JoinGrant {
                token_id,
                namespace,
            }),
            Err(TokenError::Refused(refused)) => Err(match refused {
                Refused::Expired => JoinRefused::Expired,
                Refused::Revoked => JoinRefused::Revoked,
                Refused::UsedUp => JoinRefused::UsedUp,
                Refused::Malformed | Refused::Unknown | Refused::NotJoin | Refused::JoinOnly => {
                    JoinRefused::Unknown
                }
            }),
            Err(other) => Err(JoinRefused::Unavailable(other.to_string())),
        }
    }
}

#[async_trait]
impl PackageSource for Packages {
    async fn fetch(&self, sha256: &str) -> Result<Option<Bytes>, StoreError> {
        match Packages::fetch(self, sha256).await {
            Ok(found) => Ok(found),
            Err(PackageError::Store(e)) => Err(e),
            Err(other) => Err(StoreError::Backend {
                doing: format!("reading package {sha256}"),
                source: other.into(),
            }),
        }
    }
}
