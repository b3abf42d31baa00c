//! What crosses between a center, its agents and its API's clients: the link's calls
//! (enrollment, hello, heartbeat, a command to run), the registry's records and a command's
//! results.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::{AppStatus, LogQuery};
use crate::config::ConfigHeld;

/// An agent's id, given by the center at enrollment; kept across reconnects.
pub type AgentId = String;

/// The name every center's server certificate carries and agents check it against: a center
/// is known by the certificate authority it chains to, not by the address an agent dials.
pub const CENTER_NAME: &str = "center.shoal";

/// A command's id, given by the center when it is submitted.
pub type CommandId = String;

/// `enroll`: the one call an agent without a certificate may make, on a TLS connection
/// whose server it checked against the pin in its join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The join token without its pin: `shoal_<id>_<secret>`.
    pub token: String,
    /// The agent's certificate signing request (PEM); its key never leaves the agent.
    pub csr_pem: String,
    pub hostname: String,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The answer to `enroll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub agent_id: AgentId,
    /// The agent's certificate then the agents' intermediate (PEM).
    pub certificate_pem: String,
    /// The center's root (PEM): what the agent trusts from now on.
    pub ca_pem: String,
    /// When the certificate ends; the agent renews it over the link at two thirds of its life.
    #[serde(default)]
    pub not_after: Option<DateTime<Utc>>,
}

/// The link's method names: calls from the agent to the center, then from the center to the
/// agent, then notifications.
pub mod methods {
    /// Agent → center, on a connection without a client certificate: [`super::EnrollRequest`]
    /// → [`super::Enrolled`].
    pub const ENROLL: &str = "enroll";
    /// Agent → center, first call on every link: [`super::AgentReport`] → [`super::Welcome`].
    pub const HELLO: &str = "hello";
    /// Agent → center: [`super::AgentReport`] → nil.
    pub const HEARTBEAT: &str = "heartbeat";
    /// Agent → center: [`super::PackageFetch`] → [`super::PackageChunk`].
    pub const PACKAGE_FETCH: &str = "package.fetch";
    /// Agent → center: [`super::Renewal`] → [`super::Enrolled`] (a new certificate for the
    /// same key holder and id).
    pub const RENEW: &str = "renew";
    /// Agent → center: [`super::DiscoverWatch`] → [`super::ServiceEndpoints`], a service of
    /// the agent's namespace (a long poll with `after`), for the agent to pass on to its
    /// programs.
    pub const DISCOVER_WATCH: &str = "discover.watch";
    /// Center → agent: [`super::Exec`] → [`super::TargetResult`].
    pub const EXEC: &str = "exec";
    /// Center → agent: [`super::LogsRequest`] → nil once the stream started; its lines come
    /// as `logs.line` notifications.
    pub const LOGS: &str = "logs";
    /// Center → agent notification: [`super::LogCredit`], more lines the center can take.
    pub const LOGS_CREDIT: &str = "logs.credit";
    /// Center → agent notification: [`super::LogsEnd`], stop that stream.
    pub const LOGS_STOP: &str = "logs.stop";
    /// Agent → center notification: [`super::LogLine`].
    pub const LOGS_LINE: &str = "logs.line";
    /// Agent → center notification: [`super::LogsEnd`], the stream ended by itself.
    pub const LOGS_END: &str = "logs.end";
    /// Center → agent notification, sent just before the center closes the link:
    /// [`super::Refused`].
    pub const REFUSED: &str = "link.refused";
}

/// Error codes of the link's calls (MessagePack-RPC application codes).
pub mod codes {
    /// The call is not allowed on this link (no certificate, revoked, no `hello` yet).
    pub const REFUSED: i64 = 1100;
    /// The join token was refused; the message says why.
    pub const JOIN_REFUSED: i64 = 1101;
    /// The package asked for is not in the center's repository.
    pub const NO_PACKAGE: i64 = 1102;
    /// A request's content is not acceptable (a bad CSR, too many labels).
    pub const INVALID: i64 = 1103;
}

/// The answer to `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub agent_id: AgentId,
    /// How often the center expects a heartbeat; three missed and the agent is offline.
    pub heartbeat_ms: u64,
}

/// Why the center closes a link (revoked, no certificate, a certificate it does not accept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub reason: String,
}

/// `renew`: a new certificate for the agent's (new) key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    pub csr_pem: String,
}

/// `package.fetch`: part of a package from the center's repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFetch {
    pub sha256: String,
    pub offset: u64,
}

/// One part of a package; the agent asks again from `offset + data.len()` until `total`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageChunk {
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub total: u64,
}

/// Lines an agent may send on a new log stream before the center's first `logs.credit`.
pub const INITIAL_LOG_CREDIT: u32 = 256;

/// `logs.credit`: the center can take `lines` more lines of `stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCredit {
    pub stream: u64,
    pub lines: u32,
}

/// `logs.stop` and `logs.end`: a log stream is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsEnd {
    pub stream: u64,
}

/// `hello`: the agent's first call on every link, and `heartbeat`'s payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    pub hostname: String,
    /// The agent's own version (shoal's).
    pub version: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub apps: Vec<AppStatus>,
    /// The configurations the center released to this agent: the newest version of each and
    /// how its app took it.
    #[serde(default)]
    pub configs: Vec<ConfigHeld>,
}

/// What a command asks each of its targets to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Install `name` at `version` (the newest when absent) from the center's repository.
    Install {
        name: String,
        version: Option<String>,
    },
    Rollback {
        name: String,
        to: Option<String>,
    },
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    Restart {
        name: String,
    },
    Reload {
        name: String,
    },
    Backup {
        name: String,
    },
    Backups {
        name: String,
    },
    CronRun {
        name: String,
        job: String,
    },
    Ps,
}

/// `exec`: one command for one agent, which runs a command id at most once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub command: CommandId,
    #[serde(flatten)]
    pub action: Action,
    /// For an install: the package to fetch, as the center's repository knows it.
    pub package: Option<PackageRef>,
}

/// A package in the center's repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackageRef {
    pub name: String,
    pub version: String,
    /// sha256 of the archive, lowercase hex: the agent checks it before unpacking.
    pub sha256: String,
    pub size: u64,
}

/// How one target's part of a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    Ok,
    Error,
    /// Not connected when the command's deadline came.
    Offline,
    /// The center stopped before this target answered; the command was not sent again.
    Interrupted,
    /// Not answered yet.
    Pending,
}

impl TargetStatus {
    /// The status as it is written on the wire: `ok`, `error`, `offline`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            TargetStatus::Ok => "ok",
            TargetStatus::Error => "error",
            TargetStatus::Offline => "offline",
            TargetStatus::Interrupted => "interrupted",
            TargetStatus::Pending => "pending",
        }
    }
}

/// One target's result of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetResult {
    pub status: TargetStatus,
    /// One line for a table: what was done, or the error.
    pub message: String,
    /// The agent's typed answer (an install report, a list of backups, `ps`'s apps), as
    /// JSON, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    pub duration_ms: Option<u64>,
}

/// Which agents a command or query reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<AgentId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ids: Vec<AgentId>,
    /// Every label given must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub namespace: Option<String>,
    /// Every agent (of the namespace, when one is given); required when nothing else selects.
    #[serde(default)]
    pub all: bool,
}

/// An agent as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentInfo {
    pub id: AgentId,
    pub hostname: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub online: bool,
    pub revoked: bool,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub version: String,
    pub apps: Vec<AppStatus>,
}

/// One endpoint of a service in the registry: where one agent's instance answers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceEndpoint {
    /// The agent whose app serves it.
    pub agent: AgentId,
    /// `host:port`, as the agent reports it.
    pub addr: String,
}

/// A service's endpoints in one namespace, as the registry holds them now: every endpoint
/// that an online agent reports for an app of that name while it is running and healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceEndpoints {
    pub service: String,
    pub namespace: String,
    /// Changes whenever the set does; 0 for a set that is empty and has been since the
    /// center started. Revisions never repeat within one center's life and start near the
    /// time the center started (in microseconds since 1970), so a revision from an earlier
    /// center is not mistaken for a current one.
    pub revision: u64,
    /// Sorted by agent, then address.
    pub endpoints: Vec<ServiceEndpoint>,
}

/// `discover.watch`: a service's endpoints in the agent's namespace, at once without `after`;
/// with it, once the set's revision differs from `after`, or as it is after `wait_ms` (the
/// center cuts it to 5 minutes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoverWatch {
    pub service: String,
    #[serde(default)]
    pub after: Option<u64>,
    #[serde(default)]
    pub wait_ms: u64,
}

/// `logs`: a fleet log query sent to one agent; lines come back as `logs.line`
/// notifications until the agent is told `logs.stop` or the query ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    /// Names this stream in the notifications.
    pub stream: u64,
    pub app: String,
    /// Nested, not flattened: the query has a `stream` of its own (stdout or stderr).
    pub query: LogQuery,
}

/// One line of a fleet log stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub stream: u64,
    pub line: String,
}
