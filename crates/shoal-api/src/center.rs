//! center.rs: what the center's HTTP API (`/api/v1`) takes and answers, beside the registry's
//! and the commands' types in [`crate::fleet`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::LogQuery;
use crate::fleet::{Action, AgentId, CommandId, Selector, TargetResult};

/// What a token may do. `viewer < operator < admin`; a join token only enrolls agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Enrolls an agent; no API access.
    Join,
    /// Reads.
    Viewer,
    /// Runs commands and pushes packages.
    Operator,
    /// Manages tokens and revokes agents.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Join => "join",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRequest {
    pub role: Role,
    /// Limits the token to one namespace.
    pub namespace: Option<String>,
    /// How long the token is valid, in seconds; forever when absent.
    pub ttl_secs: Option<u64>,
    /// How many times a join token may be used; unlimited when absent.
    pub uses: Option<u32>,
}

/// A token as lists show it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub role: Role,
    pub namespace: Option<String>,
    pub created: DateTime<Utc>,
    pub expires: Option<DateTime<Utc>>,
    /// Uses left, for a join token given a count.
    pub uses_left: Option<u32>,
    pub revoked: bool,
}

/// The answer to creating a token: the only time its text is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    pub info: TokenInfo,
    /// `shoal_<id>_<secret>`, with `_<pin>` for a join token.
    pub token: String,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub seq: u64,
    pub time: DateTime<Utc>,
    /// The token's id (`-` for the center itself).
    pub token: String,
    pub role: Option<Role>,
    /// The namespace of the token that acted; `None` for a token of every namespace. A token
    /// limited to a namespace reads only that namespace's entries.
    #[serde(default)]
    pub namespace: Option<String>,
    /// What was asked: `token.create`, `package.push`, `command.restart`, ...
    pub action: String,
    /// What it was about: agent ids, a package, a token id.
    pub targets: Vec<String>,
    /// `ok`; `submitted` for a command stored, then its end (`ok`, the count of each status,
    /// or `interrupted: ...`); `denied: ...` for a role too low or another namespace; else the
    /// error.
    pub outcome: String,
}

/// A package version in the center's repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size: u64,
    pub pushed: DateTime<Utc>,
}

/// `POST /api/v1/commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandRequest {
    pub selector: Selector,
    pub action: Action,
    /// Targets worked on at once; all when absent.
    pub concurrency: Option<u32>,
    /// The deadline, in milliseconds: a target that has not answered by then is `offline`
    /// (not connected) or `error` (timed out).
    pub timeout_ms: Option<u64>,
}

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    Running,
    Done,
    /// The center stopped while it ran; the targets that had not answered are `interrupted`.
    Interrupted,
}

/// A command and its results, one per target (the target set frozen at submission).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandView {
    pub command: CommandId,
    pub action: Action,
    pub state: CommandState,
    pub submitted: DateTime<Utc>,
    /// The token that submitted it.
    pub token: String,
    pub results: std::collections::BTreeMap<AgentId, TargetResult>,
}

/// A line of `GET /api/v1/logs` (NDJSON), prefixed with its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetLogLine {
    pub agent: AgentId,
    pub line: String,
}

/// `POST /api/v1/logs`: one app's lines from every target, as NDJSON [`FleetLogLine`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetLogsRequest {
    pub selector: Selector,
    pub app: String,
    #[serde(default)]
    pub query: LogQuery,
}

/// Who a gray release reaches: agents by id, by one label, or a share of them. Membership by
/// share is `hash(agent, name, version) mod 10000 < percent * 100`, so raising the share of
/// one gray version never drops an agent that had it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GrayTarget {
    Ids(Vec<AgentId>),
    Label {
        key: String,
        value: String,
    },
    /// 1 to 100.
    Percent(u8),
}

/// `POST /api/v1/configs/{name}/versions`: a new version of a configuration, released to every
/// instance, or only to `gray`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigPush {
    /// UTF-8 text, not empty, at most 1 MiB (`shoal_api::config::MAX_CONFIG_BYTES`).
    pub content: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub gray: Option<GrayTarget>,
}

/// One immutable version of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigVersionInfo {
    pub name: String,
    pub namespace: String,
    pub version: u64,
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
    pub size: u64,
    pub message: String,
    /// The id of the token that pushed it (`-` for the center itself).
    pub pushed_by: String,
    pub pushed: DateTime<Utc>,
    /// The version whose content a rollback published again.
    #[serde(default)]
    pub rollback_of: Option<u64>,
}

/// A version with its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigContent {
    pub info: ConfigVersionInfo,
    pub content: String,
}

/// A gray release: `version` reaches `target`'s instances, the stable version the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrayRelease {
    pub version: u64,
    pub target: GrayTarget,
}

/// What a configuration's instances should run: the release pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigRelease {
    pub name: String,
    pub namespace: String,
    /// The version every instance outside a gray release gets; none before the first release
    /// to all.
    pub stable: Option<u64>,
    pub gray: Option<GrayRelease>,
    /// The newest version number.
    pub latest: u64,
    /// The store's revision of the pointer: it changes with every push, promote and rollback.
    pub revision: u64,
}

/// The answer to a push or a rollback: the version made and the release it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigPushed {
    pub version: ConfigVersionInfo,
    pub release: ConfigRelease,
}

/// `POST /api/v1/configs/{name}/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigRollback {
    /// The version whose content to publish again; the stable version before the current one
    /// when absent.
    #[serde(default)]
    pub to: Option<u64>,
}

/// `GET /api/v1/configs/{name}/diff`: a unified line diff from one version to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigDiff {
    pub name: String,
    pub namespace: String,
    pub from: u64,
    pub to: u64,
    /// `--- NAME vFROM` / `+++ NAME vTO` headers and `@@` hunks; empty when the contents are
    /// the same.
    pub diff: String,
}

/// Where one instance (an agent's app) stands against the version it should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InstanceState {
    /// The app runs the desired version.
    Applied,
    /// The desired version is on its way, or the app has not answered yet.
    Pending,
    /// The app refused the desired version and runs on with what it had.
    Rejected { reason: String },
    /// The agent is offline.
    Offline,
}

/// One instance of a configuration: app `name` on agent `agent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigInstance {
    pub agent: AgentId,
    pub hostname: String,
    /// The version the release gives it.
    pub desired: u64,
    /// The last version it applied.
    pub applied: Option<u64>,
    #[serde(flatten)]
    pub state: InstanceState,
}

/// `GET /api/v1/configs/{name}/status`: the release and every instance it reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigStatus {
    pub release: ConfigRelease,
    pub instances: Vec<ConfigInstance>,
}
