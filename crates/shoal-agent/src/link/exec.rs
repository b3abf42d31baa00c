//! `exec`: the center's commands, each run at most once by its id. The id is written down
//! (`link_commands`, in the agent's state) before the action starts and its result after it
//! ends; the same id again (a link that dropped and came back) gets the recorded result, waits
//! for the run still going, or hears that an earlier agent was stopped in the middle of it:
//! it never runs twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use rusqlite::OptionalExtension;
use serde::Serialize;
use shoal_api::agent::AppAction;
use shoal_api::fleet::{Action, Exec, PackageRef, TargetResult, TargetStatus};
use shoal_api::manifest::{Name, Version};
use shoal_pkg::Sha256;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::{chain, Agent, AgentError, StateError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS link_commands (
    id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    -- The TargetResult as JSON once the command ended; NULL while it runs (or if the agent
    -- stopped in the middle of it).
    result TEXT
);
";
/// Commands remembered, the newest kept.
const KEEP: i64 = 10_000;

/// Fetches a package's bytes from the center, part by part.
pub trait Fetch: Send + Sync + 'static {
    /// The parts of the package `package` names; an error ends the stream.
    fn fetch(&self, package: &PackageRef) -> FetchStream;
}

/// What [`Fetch::fetch`] answers.
pub type FetchStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, crate::Cause>> + Send + 'static>>;

/// The commands this agent ran or runs.
#[derive(Clone)]
pub struct Commands {
    agent: Agent,
    running: Arc<Mutex<HashMap<String, watch::Receiver<Option<TargetResult>>>>>,
    /// Held from looking an id up to starting its run, so that the same id twice at once
    /// starts it once and the other waits for it.
    claiming: Arc<tokio::sync::Mutex<()>>,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands").finish_non_exhaustive()
    }
}

/// Whether a command id is new.
enum Seen {
    New,
    Done(TargetResult),
    /// Started by an earlier agent that stopped before it ended.
    Interrupted,
}

impl Commands {
    /// The command table of `agent`'s state; runs go on `tasks`.
    pub async fn open(agent: Agent, tasks: TaskTracker) -> Result<Commands, StateError> {
        agent.state().call(|c| c.execute_batch(SCHEMA)).await?;
        Ok(Commands {
            agent,
            running: Arc::default(),
            claiming: Arc::default(),
            tasks,
        })
    }

    /// Runs `exec` unless its id was seen before; answers its result either way.
    pub async fn exec(&self, exec: Exec, fetch: Arc<dyn Fetch>) -> TargetResult {
        let id = exec.command.clone();
        let claimed = self.claiming.lock().await;
        let running = self.running.lock().unwrap().get(&id).cloned();
        let mut rx = match running {
            Some(rx) => rx,
            None => match self.claim(&id).await {
                Err(e) => return failure(format!("recording command {id}: {e}"), None),
                Ok(Seen::Done(result)) => return result,
                Ok(Seen::Interrupted) => return interrupted(&id),
                Ok(Seen::New) => self.start(exec, fetch),
            },
        };
        drop(claimed);
        let result = match rx.wait_for(Option::is_some).await {
            Ok(result) => result.clone().expect("waited for it"),
            Err(_) => failure(format!("command {id} ended without a result"), None),
        };
        result
    }

    /// Writes `id` down as started, unless it was before.
    async fn claim(&self, id: &str) -> Result<Seen, StateError> {
        let id = id.to_owned();
        let now = chrono::Utc::now().timestamp();
        self.agent
            .state()
            .call_transaction(move |tx| {
                let known: Option<Option<String>> = tx
                    .query_row(
                        "SELECT result FROM link_commands WHERE id = ?1",
                        [&id],
                        |row| row.get(0),
                    )
                    .optional()?;
                match known {
                    Some(Some(json)) => Ok(serde_json::from_str(&json)
                        .map(Seen::Done)
                        .unwrap_or(Seen::Interrupted)),
                    Some(None) => Ok(Seen::Interrupted),
                    None => {
                        tx.execute(
                            "INSERT INTO link_commands (id, started_at) VALUES (?1, ?2)",
                            rusqlite::params![id, now],
                        )?;
                        tx.execute(
                            "DELETE FROM link_commands WHERE rowid <= \
                             (SELECT MAX(rowid) FROM link_commands) - ?1",
                            [KEEP],
                        )?;
                        Ok(Seen::New)
                    }
                }
            })
            .await
    }

    /// Runs a claimed command on its own task, so that a dropped link does not cut it short.
    fn start(&self, exec: Exec, fetch: Arc<dyn Fetch>) -> watch::Receiver<Option<TargetResult>> {
        let (tx, rx) = watch::channel(None);
        let id = exec.command.clone();
        self.running.lock().unwrap().insert(id.clone(), rx.clone());
        let this = self.clone();
        self.tasks.spawn(async move {
            let started = Instant::now();
            let mut result = run(&this.agent, &exec, fetch.as_ref()).await;
            result.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(0));
            let json = serde_json::to_string(&result).expect("a result serializes");
            let key = id.clone();
            let saved = this
                .agent
                .state()
                .call(move |c| {
                    c.execute(
                        "UPDATE link_commands SET result = ?2 WHERE id = ?1",
                        rusqlite::params![key, json],
                    )
                })
                .await;
            if let Err(error) = saved {
                tracing::warn!(command = %id, %error, "recording a command's result failed");
            }
            let _ = tx.send(Some(result));
            this.running.lock().unwrap().remove(&id);
        });
        rx
    }
}

/// Does what `exec` asks through the agent's domain methods.
async fn run(agent: &Agent, exec: &Exec, fetch: &dyn Fetch) -> TargetResult {
    let answer = match &exec.action {
        Action::Install { name, .. } => match &exec.package {
            Some(package) => install(agent, name, package, fetch).await,
            None => Err(AgentError::invalid(format!(
                "install {name}: the center sent no package to fetch"
            ))),
        },
        Action::Rollback { name, to } => rollback(agent, name, to.as_deref()).await,
        Action::Start { name } => act(agent, name, AppAction::Start).await,
        Action::Stop { name } => act(agent, name, AppAction::Stop).await,
        Action::Restart { name } => act(agent, name, AppAction::Restart).await,
        Action::Reload { name } => act(agent, name, AppAction::Reload).await,
        Action::Backup { name } => match app(name) {
            Ok(n) => detail(agent.backup_now(&n).await, |b| {
                format!("backup {}", b.backup.id)
            }),
            Err(e) => Err(e),
        },
        Action::Backups { name } => match app(name) {
            Ok(n) => detail(agent.backups(&n).await, |b| format!("{} backups", b.len())),
            Err(e) => Err(e),
        },
        Action::CronRun { name, job } => match (app(name), app(job)) {
            (Ok(n), Ok(j)) => detail(agent.cron_run(&n, &j).await, |_| {
                format!("ran {name} {job}")
            }),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Action::Ps => detail(agent.apps().await, |apps| format!("{} apps", apps.len())),
    };
    match answer {
        Ok((message, detail)) => TargetResult {
            status: TargetStatus::Ok,
            message,
            detail,
            duration_ms: None,
        },
        Err(e) => failure(chain(&e), None),
    }
}

type Answer = Result<(String, Option<serde_json::Value>), AgentError>;

fn detail<T: Serialize>(done: Result<T, AgentError>, message: impl FnOnce(&T) -> String) -> Answer {
    let value = done?;
    Ok((message(&value), serde_json::to_value(&value).ok()))
}

fn app(name: &str) -> Result<Name, AgentError> {
    Name::new(name).map_err(AgentError::invalid)
}

async fn act(agent: &Agent, name: &str, action: AppAction) -> Answer {
    agent.act(&app(name)?, action).await?;
    Ok((format!("{name}: {action} done"), None))
}

async fn rollback(agent: &Agent, name: &str, to: Option<&str>) -> Answer {
    let to = match to {
        Some(v) => Some(
            Version::parse(v)
                .map_err(|e| AgentError::invalid(format!("rollback {name} --to {v}: {e}")))?,
        ),
        None => None,
    };
    detail(agent.rollback(&app(name)?, to.as_ref()).await, |r| {
        format!("{} rolled back to {}", r.name, r.version)
    })
}

async fn install(agent: &Agent, name: &str, package: &PackageRef, fetch: &dyn Fetch) -> Answer {
    if package.name != name {
        return Err(AgentError::invalid(format!(
            "install {name}: the center sent package {} instead",
            package.name
        )));
    }
    let sha256: Sha256 = package
        .sha256
        .parse()
        .map_err(|e| AgentError::invalid(format!("install {name}: the package's sha256: {e}")))?;
    let parts = sized(fetch.fetch(package), package.size);
    // Named here: the agent's own errors speak of "the uploaded archive", whichever it was.
    let installed = agent
        .install_upload(parts, &sha256)
        .await
        .map_err(|e| AgentError::Failed {
            doing: format!(
                "installing {} {} from the center",
                package.name, package.version
            ),
            source: Box::new(e),
        });
    detail(installed, |r| {
        format!("{} {} {}", r.name, r.version, r.outcome)
    })
}

/// The parts of a download, failing as soon as it runs past `size` (the fetcher refuses a
/// package whose length is not `size`; the install checks the sha256 before anything is
/// unpacked).
fn sized(parts: FetchStream, size: u64) -> FetchStream {
    use futures_util::StreamExt;
    let mut got = 0u64;
    Box::pin(parts.map(move |part| {
        let part = part?;
        got += part.len() as u64;
        if got > size {
            return Err(
                format!("the package is larger than the {size} bytes the center said").into(),
            );
        }
        Ok(part)
    }))
}

fn interrupted(id: &str) -> TargetResult {
    TargetResult {
        status: TargetStatus::Interrupted,
        message: format!(
            "command {id} was started by an earlier run of this agent, which stopped before it \
             ended; it is not run again"
        ),
        detail: None,
        duration_ms: None,
    }
}

fn failure(message: String, detail: Option<serde_json::Value>) -> TargetResult {
    TargetResult {
        status: TargetStatus::Error,
        message,
        detail,
        duration_ms: None,
    }
}
