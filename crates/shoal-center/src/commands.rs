//! commands.rs: commands to many agents. A selector is frozen into a target set when the
//! command is submitted and stored as `commands/<id>` with a pending result per target; each
//! target runs under a concurrency limit and the command's deadline; a target not connected by
//! the deadline is `offline`, never skipped. After a restart, a command that was running is
//! `interrupted` for the targets that had not answered: the center never sends it again (and an
//! agent runs a command id at most once anyway).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures_util::stream::BoxStream;
use shoal_api::agent::LogQuery;
use shoal_api::center::{CommandRequest, CommandState, CommandView, Role};
use shoal_api::fleet::{
    Action, AgentId, AgentInfo, CommandId, Exec, LogLine, PackageRef, Selector, TargetResult,
    TargetStatus,
};
use shoal_store::{Kv, StoreError};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{Actor, Audit, Outcome};
use crate::packages::{PackageError, Packages};
use crate::tokens::Caller;

const PREFIX: &str = "commands/";
/// A command's deadline when the request gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest deadline a command may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How commands reach agents: the link, or a test's stand-in.
#[async_trait]
pub trait Reach: Send + Sync + std::fmt::Debug {
    /// Every agent the registry knows.
    async fn agents(&self) -> Result<Vec<AgentInfo>, ReachError>;
    /// Runs `exec` on `agent`, waiting for it to connect until `deadline`.
    async fn exec(
        &self,
        agent: &str,
        exec: Exec,
        deadline: Instant,
    ) -> Result<TargetResult, ReachError>;
    /// Closes `agent`'s link at once and refuses it from now on.
    async fn revoke(&self, agent: &str) -> Result<(), ReachError>;
    /// `agent`'s lines of an app's log; dropping the stream stops it on the agent.
    async fn logs(
        &self,
        agent: &str,
        app: &str,
        query: LogQuery,
    ) -> Result<BoxStream<'static, LogLine>, ReachError>;
    /// The services' endpoints the agents report. A stand-in that links no agents has an
    /// empty registry of its own.
    fn services(&self) -> crate::services::Services {
        crate::services::Services::new()
    }
}

/// Why a target could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error("not connected")]
    Offline,
    #[error("no answer before the deadline")]
    Timeout,
    #[error("{0}")]
    Failed(String),
}

/// What submitting a command fails with (each target's own failure is in its result).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Invalid(String),
    #[error("a token of namespace {own} cannot act on namespace {asked}")]
    Forbidden { own: String, asked: String },
    #[error("no agent matches the selector")]
    NoTargets,
    #[error("no command {0}")]
    NotFound(String),
    #[error("the center is stopping; the command's unanswered targets are marked interrupted at its next start")]
    Stopped,
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("the registry: {0}")]
    Reach(#[from] ReachError),
    #[error("the command store: {0}")]
    Store(#[from] StoreError),
    #[error("a stored command is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The commands.
#[derive(Debug, Clone)]
pub struct Commands {
    kv: Arc<dyn Kv>,
    reach: Arc<dyn Reach>,
    packages: Packages,
    /// The commands running: each its own task, so a caller that goes away does not cut one
    /// short; [`Commands::close`] stops them (the next start marks them interrupted).
    tasks: TaskTracker,
    stop: CancellationToken,
    audit: Audit,
}

/// A command as stored under `commands/<id>`; each target's result is a key of its own,
/// `results/<id>/<agent>`, so a result is one small write however many targets there are.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Header {
    command: CommandId,
    action: Action,
    state: CommandState,
    submitted: chrono::DateTime<Utc>,
    token: String,
    /// The submitting token's role and namespace, for the audit entry of the command's end.
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    namespace: Option<String>,
    targets: Vec<AgentId>,
}

impl Header {
    /// The submitter, as the command's audit entries name it.
    fn actor(&self) -> Actor {
        Actor {
            token: self.token.clone(),
            role: self.role,
            namespace: self.namespace.clone(),
        }
    }

    /// The command's id, then its targets.
    fn audit_targets(&self) -> Vec<String> {
        std::iter::once(self.command.clone())
            .chain(self.targets.iter().cloned())
            .collect()
    }
}

impl Commands {
    pub fn new(
        kv: Arc<dyn Kv>,
        reach: Arc<dyn Reach>,
        packages: Packages,
        audit: Audit,
    ) -> Commands {
        Commands {
            kv,
            reach,
            packages,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            audit,
        }
    }

    /// Stops the commands running and waits for their tasks; what they had not stored yet is
    /// marked interrupted at the next start.
    pub async fn close(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Marks every command left running by a center that stopped as interrupted, for the
    /// targets that had not answered, and audits how each ended. Returns how many there were.
    pub async fn recover(&self) -> Result<usize, CommandError> {
        let mut count = 0;
        for entry in self.kv.list(PREFIX).await? {
            let header: Header = serde_json::from_slice(&entry.value)?;
            if header.state != CommandState::Running {
                continue;
            }
            let view = self.view(header.clone()).await?;
            let mut interrupted = false;
            for (target, result) in &view.results {
                if result.status == TargetStatus::Pending {
                    let stopped = failed(
                        TargetStatus::Interrupted,
                        "the center stopped before this target answered",
                        None,
                    );
                    self.store_result(&header.command, target, &stopped).await?;
                    interrupted = true;
                }
            }
            // Every target had answered: it ended, only its end was not stored.
            let state = if interrupted {
                CommandState::Interrupted
            } else {
                CommandState::Done
            };
            self.finish(header, state).await?;
            count += 1;
        }
        Ok(count)
    }

    /// Freezes the target set, stores the command and runs it to its end, in a task of its
    /// own: the caller going away does not cut it short. The audit log gets an entry when the
    /// command is stored (`submitted`, with its id and targets) and another when it ends; a
    /// request refused before that gets one entry with the refusal.
    pub async fn run(
        &self,
        by: &Caller,
        request: CommandRequest,
    ) -> Result<CommandView, CommandError> {
        let (commands, by) = (self.clone(), by.clone());
        match self
            .tasks
            .spawn(async move { commands.submit_and_run(&by, request).await })
            .await
        {
            Ok(ran) => ran,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled with the runtime: the center is stopping.
            Err(_) => Err(CommandError::Stopped),
        }
    }

    async fn submit_and_run(
        &self,
        by: &Caller,
        request: CommandRequest,
    ) -> Result<CommandView, CommandError> {
        let action = audit_action(&request.action);
        let (header, exec, deadline, concurrency) = match self.submit(by, request).await {
            Ok(submitted) => submitted,
            Err(refused) => {
                let outcome = Outcome::Failed(refused.to_string());
                self.write_audit(by.into(), &action, Vec::new(), outcome)
                    .await;
                return Err(refused);
            }
        };
        let ran = tokio::select! {
            ran = self.fan_out(header.targets.clone(), exec, concurrency, deadline) => ran,
            // Left running in the store: the next start marks it interrupted and audits that.
            () = self.stop.cancelled() => return Err(CommandError::Stopped),
        };
        if let Err(failed) = ran {
            let outcome = Outcome::Failed(failed.to_string());
            self.write_audit(header.actor(), &action, header.audit_targets(), outcome)
                .await;
            return Err(failed);
        }
        self.finish(header, CommandState::Done).await
    }

    /// Validates the request, freezes its targets, audits it as submitted and stores it.
    async fn submit(
        &self,
        by: &Caller,
        request: CommandRequest,
    ) -> Result<(Header, Exec, Instant, usize), CommandError> {
        let timeout = check_timeout(request.timeout_ms)?;
        let deadline = Instant::now() + timeout;
        let package = self.package_for(&request.action).await?;
        let targets = self.freeze(by, &request.selector).await?;
        let header = Header {
            command: new_id(),
            action: request.action.clone(),
            state: CommandState::Running,
            submitted: Utc::now(),
            token: by.token.clone(),
            role: Some(by.role),
            namespace: by.namespace.clone(),
            targets,
        };
        // The entry first: a center killed between the two leaves an entry for a command
        // never stored, never a command that ran without one.
        self.audit
            .record(
                header.actor(),
                &audit_action(&header.action),
                header.audit_targets(),
                Outcome::Submitted,
            )
            .await?;
        self.kv
            .create(&key(&header.command), encode(&header)?)
            .await?;
        let exec = Exec {
            command: header.command.clone(),
            action: request.action,
            package,
        };
        let concurrency = request
            .concurrency
            .map_or(header.targets.len(), |n| n.max(1) as usize);
        Ok((header, exec, deadline, concurrency))
    }

    /// Audits how the command ended, then stores its `state`: a center killed between the two
    /// audits it again at its next start, rather than never.
    async fn finish(
        &self,
        mut header: Header,
        state: CommandState,
    ) -> Result<CommandView, CommandError> {
        header.state = state;
        let view = self.view(header.clone()).await?;
        let action = audit_action(&header.action);
        self.write_audit(
            header.actor(),
            &action,
            header.audit_targets(),
            Outcome::Ended(ending(&view)),
        )
        .await;
        self.kv.put(&key(&header.command), encode(&header)?).await?;
        Ok(view)
    }

    /// Writes an entry; a store that fails here has failed the command's own writes too, so
    /// it is logged rather than returned.
    async fn write_audit(&self, by: Actor, action: &str, targets: Vec<String>, outcome: Outcome) {
        if let Err(error) = self.audit.record(by, action, targets, outcome).await {
            tracing::warn!(%error, action, "writing a command's audit entry");
        }
    }

    /// A past or running command.
    pub async fn get(&self, by: &Caller, id: &str) -> Result<CommandView, CommandError> {
        let entry = self
            .kv
            .get(&key(id))
            .await?
            .ok_or_else(|| CommandError::NotFound(id.to_owned()))?;
        let header: Header = serde_json::from_slice(&entry.value)?;
        if by.namespace.is_some() && !self.visible(by, &header).await? {
            return Err(CommandError::NotFound(id.to_owned()));
        }
        self.view(header).await
    }

    /// The newest `limit` commands `by` may see, newest first.
    pub async fn list(&self, by: &Caller, limit: usize) -> Result<Vec<CommandView>, CommandError> {
        let mut views = Vec::new();
        for entry in self.kv.list(PREFIX).await?.into_iter().rev() {
            if views.len() == limit {
                break;
            }
            let header: Header = serde_json::from_slice(&entry.value)?;
            if by.namespace.is_none() || self.visible(by, &header).await? {
                views.push(self.view(header).await?);
            }
        }
        Ok(views)
    }

    /// The command with its results so far; a target without one is pending.
    async fn view(&self, header: Header) -> Result<CommandView, CommandError> {
        let prefix = results_prefix(&header.command);
        let mut results: std::collections::BTreeMap<AgentId, TargetResult> = header
            .targets
            .iter()
            .map(|id| (id.clone(), pending()))
            .collect();
        for entry in self.kv.list(&prefix).await? {
            let target = entry.key[prefix.len()..].to_owned();
            results.insert(target, serde_json::from_slice(&entry.value)?);
        }
        Ok(CommandView {
            command: header.command,
            action: header.action,
            state: header.state,
            submitted: header.submitted,
            token: header.token,
            results,
        })
    }

    async fn store_result(
        &self,
        command: &str,
        target: &str,
        result: &TargetResult,
    ) -> Result<(), CommandError> {
        let value = Bytes::from(serde_json::to_vec(result)?);
        self.kv
            .put(&format!("{}{target}", results_prefix(command)), value)
            .await?;
        Ok(())
    }

    /// Whether every target of `header` is in `by`'s namespace.
    async fn visible(&self, by: &Caller, header: &Header) -> Result<bool, CommandError> {
        let agents = self.reach.agents().await?;
        Ok(header.targets.iter().all(|id| {
            agents
                .iter()
                .find(|a| &a.id == id)
                .is_some_and(|a| by.reaches(&a.namespace))
        }))
    }

    async fn package_for(&self, action: &Action) -> Result<Option<PackageRef>, CommandError> {
        match action {
            Action::Install { name, version } => {
                Ok(Some(self.packages.resolve(name, version.as_deref()).await?))
            }
            _ => Ok(None),
        }
    }

    /// The agents `selector` names now, within `by`'s namespace.
    pub(crate) async fn freeze(
        &self,
        by: &Caller,
        selector: &Selector,
    ) -> Result<Vec<AgentId>, CommandError> {
        if let (Some(own), Some(asked)) = (&by.namespace, &selector.namespace) {
            if own != asked {
                return Err(CommandError::Forbidden {
                    own: own.clone(),
                    asked: asked.clone(),
                });
            }
        }
        if !selector.all && selector.ids.is_empty() && selector.labels.is_empty() {
            return Err(CommandError::Invalid(
                "name the targets: ids, labels, or all".into(),
            ));
        }
        let agents = self.reach.agents().await?;
        for id in &selector.ids {
            if !agents.iter().any(|a| &a.id == id) {
                return Err(CommandError::Invalid(format!("no agent {id}")));
            }
        }
        let targets: Vec<AgentId> = agents
            .iter()
            .filter(|a| !a.revoked && by.reaches(&a.namespace) && selects(selector, a))
            .map(|a| a.id.clone())
            .collect();
        if targets.is_empty() {
            return Err(CommandError::NoTargets);
        }
        Ok(targets)
    }

    /// Runs `exec` on every target, at most `concurrency` at once, storing each result as it
    /// comes.
    async fn fan_out(
        &self,
        targets: Vec<AgentId>,
        exec: Exec,
        concurrency: usize,
        deadline: Instant,
    ) -> Result<(), CommandError> {
        let limit = Arc::new(Semaphore::new(concurrency));
        let mut running = JoinSet::new();
        for target in targets {
            let (commands, exec, limit) = (self.clone(), exec.clone(), limit.clone());
            running.spawn(async move {
                let command = exec.command.clone();
                let result =
                    reach_one(commands.reach.as_ref(), &target, exec, &limit, deadline).await;
                commands.store_result(&command, &target, &result).await
            });
        }
        while let Some(done) = running.join_next().await {
            done.expect("a target's task does not panic")?;
        }
        Ok(())
    }
}

/// One target's part: a place under the concurrency limit, then the agent's answer, both
/// before the deadline.
async fn reach_one(
    reach: &dyn Reach,
    target: &str,
    exec: Exec,
    limit: &Semaphore,
    deadline: Instant,
) -> TargetResult {
    let Ok(permit) = tokio::time::timeout_at(deadline.into(), limit.acquire()).await else {
        return failed(TargetStatus::Error, "not started before the deadline", None);
    };
    let _permit = permit.expect("the semaphore is never closed");
    let started = Instant::now();
    match reach.exec(target, exec, deadline).await {
        Ok(result) => result,
        Err(ReachError::Offline) => failed(TargetStatus::Offline, "offline at the deadline", None),
        Err(e) => failed(TargetStatus::Error, &e.to_string(), Some(started.elapsed())),
    }
}

/// Whether agent `a` is one `selector` names (namespace checked by the caller too).
pub fn selects(selector: &Selector, a: &AgentInfo) -> bool {
    if selector.not_ids.contains(&a.id) {
        return false;
    }
    if selector
        .namespace
        .as_ref()
        .is_some_and(|ns| ns != &a.namespace)
    {
        return false;
    }
    if !selector.ids.is_empty() && !selector.ids.contains(&a.id) {
        return false;
    }
    selector
        .labels
        .iter()
        .all(|(k, v)| a.labels.get(k) == Some(v))
}

/// The action an audit entry names a command by: `command.install`, `command.ps`, ...
pub fn audit_action(action: &Action) -> String {
    let word = match action {
        Action::Install { .. } => "install",
        Action::Rollback { .. } => "rollback",
        Action::Start { .. } => "start",
        Action::Stop { .. } => "stop",
        Action::Restart { .. } => "restart",
        Action::Reload { .. } => "reload",
        Action::Backup { .. } => "backup",
        Action::Backups { .. } => "backups",
        Action::CronRun { .. } => "cron-run",
        Action::Ps => "ps",
    };
    format!("command.{word}")
}

/// How a command ended, as its audit entry says it: `ok` when every target is, else the
/// count of each status (`interrupted: ...` first when the center stopped meanwhile).
fn ending(view: &CommandView) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for result in view.results.values() {
        *counts.entry(result.status.as_str()).or_insert(0usize) += 1;
    }
    let ok = counts.keys().all(|status| *status == "ok");
    let line = counts
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect::<Vec<_>>()
        .join(", ");
    match view.state {
        CommandState::Interrupted => format!("interrupted: {line}"),
        _ if ok => "ok".to_owned(),
        _ => line,
    }
}

fn check_timeout(ms: Option<u64>) -> Result<Duration, CommandError> {
    let timeout = ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(CommandError::Invalid(format!(
            "the timeout must be above 0 and at most {}",
            humantime::format_duration(MAX_TIMEOUT)
        )));
    }
    Ok(timeout)
}

fn pending() -> TargetResult {
    failed(TargetStatus::Pending, "", None)
}

fn failed(status: TargetStatus, message: &str, took: Option<Duration>) -> TargetResult {
    TargetResult {
        status,
        message: message.to_owned(),
        detail: None,
        duration_ms: took.map(|d| d.as_millis() as u64),
    }
}

/// Ids sort by submission time: milliseconds in hex, then randomness.
fn new_id() -> CommandId {
    format!(
        "{:011x}{}",
        Utc::now().timestamp_millis(),
        crate::tokens::random_word(5)
    )
}

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

fn results_prefix(id: &str) -> String {
    format!("results/{id}/")
}

fn encode(header: &Header) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(header).map(Bytes::from)
}
