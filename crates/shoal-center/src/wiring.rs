//! wiring.rs: how the center's parts meet: commands reach agents through the link
//! ([`LinkReach`]), the link checks join tokens with the token store and writes each
//! enrollment to the audit log ([`Joins`]), and serves packages from the repository.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use shoal_api::agent::LogQuery;
use shoal_api::center::Role;
use shoal_api::fleet::{AgentInfo, Exec, LogLine, TargetResult};
use shoal_store::StoreError;

use crate::audit::{Actor, Audit, Outcome};
use crate::commands::{Reach, ReachError};
use crate::link::{
    Enrollment, JoinAuthority, JoinGrant, JoinRefused, LinkError, Links, PackageSource,
};
use crate::packages::{PackageError, Packages};
use crate::tokens::{self, Refused, TokenError, Tokens};

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

/// The center's join tokens as the link checks them, each enrollment written to the audit log
/// with the join token's id.
#[derive(Debug, Clone)]
pub struct Joins {
    pub tokens: Tokens,
    pub audit: Audit,
}

#[async_trait]
impl JoinAuthority for Joins {
    async fn redeem(&self, credential: &str) -> Result<JoinGrant, JoinRefused> {
        self.tokens.redeem(credential).await
    }

    /// A refusal is written only for a real join token (expired, revoked, used up): one this
    /// center does not know is as anonymous as a request without a token, and a flood of
    /// them must not grow the log.
    async fn enrolled(&self, enrollment: Enrollment<'_>) {
        let (actor, targets, outcome) = match enrollment {
            Enrollment::Joined {
                grant,
                agent,
                hostname,
            } => (
                joiner(grant),
                vec![agent.to_owned(), hostname.to_owned()],
                Outcome::Ok,
            ),
            Enrollment::Failed {
                grant,
                hostname,
                error,
            } => (
                joiner(grant),
                vec![hostname.to_owned()],
                Outcome::Failed(error.to_owned()),
            ),
            Enrollment::Refused {
                credential,
                hostname,
                reason,
            } => {
                let Some(actor) = self.refused_joiner(credential, reason).await else {
                    return;
                };
                let outcome = Outcome::Failed(format!("refused: {reason}"));
                (actor, vec![hostname.to_owned()], outcome)
            }
        };
        if let Err(error) = self
            .audit
            .record(actor, ENROLL_ACTION, targets, outcome)
            .await
        {
            tracing::warn!(%error, "writing an enrollment to the audit log");
        }
    }
}

/// The action an enrollment's audit entry names.
pub const ENROLL_ACTION: &str = "agent.enroll";

impl Joins {
    /// The join token a refusal is about, when it is one this center made.
    async fn refused_joiner(&self, credential: &str, reason: &JoinRefused) -> Option<Actor> {
        if !matches!(
            reason,
            JoinRefused::Expired | JoinRefused::Revoked | JoinRefused::UsedUp
        ) {
            return None;
        }
        let info = self.tokens.get(&tokens::id_of(credential)?).await.ok()?;
        Some(Actor {
            token: info.id,
            role: Some(info.role),
            namespace: info.namespace,
        })
    }
}

fn joiner(grant: &JoinGrant) -> Actor {
    Actor {
        token: grant.token_id.clone(),
        role: Some(Role::Join),
        namespace: grant.namespace.clone(),
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
