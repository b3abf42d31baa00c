//! The history of crontab runs in the agent's SQLite state: the `cron_runs` table, written as
//! runs start, are skipped and end, and pruned to the newest rows of each job.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};
use serde::{Serialize, Serializer};
use shoal_pkg::manifest::Name;

use crate::state::{State, StateError};

/// The table this module owns. `id` is `AUTOINCREMENT` so that an id is never handed out
/// twice, even after the rows before it were pruned.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cron_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    app         TEXT NOT NULL,
    job         TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    started_at  INTEGER NOT NULL,   -- Unix milliseconds; a skip: its first tick
    duration_ms INTEGER,            -- NULL while running, or when unknown
    status      TEXT NOT NULL,      -- Outcome's tag
    code        INTEGER,            -- exit code, signal number, or ticks skipped
    blocked_by  INTEGER,            -- a skip: the run that was going
    message     TEXT,               -- why it failed to start or was interrupted
    output      TEXT NOT NULL DEFAULT '',
    pgid        INTEGER,            -- while running: the job's process group
    pid_start   INTEGER             -- and its leader's start time, to recognise it after a crash
);
CREATE INDEX IF NOT EXISTS cron_runs_by_job ON cron_runs (app, job, id);
";

/// A run's number in the history, unique in the agent's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A tick of the job's schedule.
    Schedule,
    /// [`Cron::run_now`](super::Cron::run_now), as `shoal cron run` asks.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
        }
    }
}

/// How a run ended, or that it has not yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    Running,
    /// The job's process exited by itself with this code (0 is success).
    Exited {
        code: i32,
    },
    /// The job's process was killed by this signal, not by the agent.
    Signaled {
        signal: i32,
    },
    /// Still going after the job's timeout: its process group was stopped.
    TimedOut,
    /// The program could not be started (missing, not executable, no such directory).
    FailedToStart {
        error: String,
    },
    /// Ticks that came while `blocked_by` was going and the job's overlap is `forbid`; a
    /// streak of them is one record, from its first tick to its last.
    Skipped {
        ticks: u32,
        blocked_by: RunId,
    },
    /// The agent stopped watching the run: it shut down, or was killed and restarted.
    Interrupted {
        reason: String,
    },
    /// Stopped on request ([`Cron::stop_runs`](super::Cron::stop_runs)).
    Stopped,
}

impl Outcome {
    /// Exited with code 0.
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Exited { code: 0 })
    }

    /// Still running.
    pub fn is_running(&self) -> bool {
        matches!(self, Outcome::Running)
    }

    fn tag(&self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Exited { .. } => "exited",
            Outcome::Signaled { .. } => "signaled",
            Outcome::TimedOut => "timed-out",
            Outcome::FailedToStart { .. } => "failed-to-start",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Interrupted { .. } => "interrupted",
            Outcome::Stopped => "stopped",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Running => f.write_str("running"),
            Outcome::Exited { code } => write!(f, "exit {code}"),
            Outcome::Signaled { signal } => match nix::sys::signal::Signal::try_from(*signal) {
                Ok(sig) => write!(f, "killed by {}", sig.as_str()),
                Err(_) => write!(f, "killed by signal {signal}"),
            },
            Outcome::TimedOut => f.write_str("timed out"),
            Outcome::FailedToStart { error } => write!(f, "failed to start: {error}"),
            Outcome::Skipped { ticks, blocked_by } => {
                let s = if *ticks == 1 { "" } else { "s" };
                write!(
                    f,
                    "skipped {ticks} tick{s}: run {blocked_by} was still going"
                )
            }
            Outcome::Interrupted { reason } => write!(f, "interrupted: {reason}"),
            Outcome::Stopped => f.write_str("stopped"),
        }
    }
}

/// One row of a job's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub app: Name,
    pub job: Name,
    pub trigger: Trigger,
    /// When the run started; for a skip, its first tick.
    pub started_at: DateTime<Utc>,
    /// How long it ran, until its whole process group was gone; for a skip, from the first
    /// tick to the last. `None` while running, or when the agent lost track of it.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Option<Duration>,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The job's process id (and process group), once started.
    pub pid: Option<u32>,
    /// The last bytes of stdout and stderr together, as UTF-8 (invalid bytes replaced).
    pub output: String,
}

fn millis<S: Serializer>(duration: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(d) => s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

/// A run the database says is going, found when the agent starts.
#[derive(Debug)]
pub(super) struct Leftover {
    pub id: RunId,
    pub pgid: Option<i32>,
    pub pid_start: Option<u64>,
}

/// Records a new run as going and prunes the job's history to `keep` rows.
pub(super) fn insert_running(
    state: &State,
    app: &Name,
    job: &Name,
    trigger: Trigger,
    started_at: DateTime<Utc>,
    keep: u32,
) -> Result<RunId, StateError> {
    state.transaction(|tx| {
        tx.execute(
            "INSERT INTO cron_runs (app, job, trigger, started_at, status)
             VALUES (?1, ?2, ?3, ?4, 'running')",
            params![
                app.as_str(),
                job.as_str(),
                trigger.as_str(),
                started_at.timestamp_millis()
            ],
        )?;
        let id = RunId(tx.last_insert_rowid());
        prune(tx, app, job, keep)?;
        Ok(id)
    })
}

/// Notes the process group of a run that started.
pub(super) fn set_process(
    state: &State,
    id: RunId,
    pgid: i32,
    pid_start: Option<u64>,
) -> Result<(), StateError> {
    state.with(|c| {
        c.execute(
            "UPDATE cron_runs SET pgid = ?2, pid_start = ?3 WHERE id = ?1",
            params![id.0, pgid, pid_start.and_then(|t| i64::try_from(t).ok())],
        )
    })?;
    Ok(())
}

/// Records how a run ended.
pub(super) fn finish(
    state: &State,
    id: RunId,
    outcome: &Outcome,
    duration: Option<Duration>,
    output: &str,
) -> Result<(), StateError> {
    let (code, blocked_by, message) = columns(outcome);
    state.with(|c| {
        c.execute(
            "UPDATE cron_runs
             SET status = ?2, code = ?3, blocked_by = ?4, message = ?5, duration_ms = ?6,
                 output = ?7
             WHERE id = ?1",
            params![
                id.0,
                outcome.tag(),
                code,
                blocked_by,
                message,
                duration.map(duration_ms),
                output
            ],
        )
    })?;
    Ok(())
}

/// Records a tick skipped because `blocked_by` was going: one more tick on the job's latest
/// row if that is a skip for the same run, else a new row (and the history pruned).
pub(super) fn record_skip(
    state: &State,
    app: &Name,
    job: &Name,
    tick: DateTime<Utc>,
    blocked_by: RunId,
    keep: u32,
) -> Result<(), StateError> {
    state.transaction(|tx| {
        let latest: Option<(i64, String, Option<i64>, i64)> = tx
            .query_row(
                "SELECT id, status, blocked_by, started_at FROM cron_runs
                 WHERE app = ?1 AND job = ?2 ORDER BY id DESC LIMIT 1",
                params![app.as_str(), job.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        if let Some((id, status, Some(blocker), first)) = latest {
            if status == "skipped" && blocker == blocked_by.0 {
                tx.execute(
                    "UPDATE cron_runs SET code = code + 1, duration_ms = ?2 WHERE id = ?1",
                    params![id, (tick.timestamp_millis() - first).max(0)],
                )?;
                return Ok(());
            }
        }
        tx.execute(
            "INSERT INTO cron_runs
                 (app, job, trigger, started_at, duration_ms, status, code, blocked_by)
             VALUES (?1, ?2, 'schedule', ?3, 0, 'skipped', 1, ?4)",
            params![
                app.as_str(),
                job.as_str(),
                tick.timestamp_millis(),
                blocked_by.0
            ],
        )?;
        prune(tx, app, job, keep)
    })
}

/// The runs the database says are going: when the agent starts, runs a previous agent was
/// watching.
pub(super) fn leftovers(state: &State) -> Result<Vec<Leftover>, StateError> {
    state.with(|c| {
        let mut stmt =
            c.prepare("SELECT id, pgid, pid_start FROM cron_runs WHERE status = 'running'")?;
        let rows = stmt.query_map([], |r| {
            Ok(Leftover {
                id: RunId(r.get(0)?),
                pgid: r.get(1)?,
                pid_start: r
                    .get::<_, Option<i64>>(2)?
                    .and_then(|t| u64::try_from(t).ok()),
            })
        })?;
        rows.collect()
    })
}

/// Records the [`leftovers`] as interrupted by an agent restart, once what was left of them
/// is stopped (so that an agent dying meanwhile still finds them next time).
pub(super) fn recover(state: &State) -> Result<(), StateError> {
    state.with(|c| {
        c.execute(
            "UPDATE cron_runs SET status = 'interrupted', message = ?1 WHERE status = 'running'",
            params![RESTARTED],
        )
    })?;
    Ok(())
}

/// Why a run left `running` by [`recover`] ended.
pub(super) const RESTARTED: &str = "agent restarted";

/// The newest `limit` records of an app's jobs (or one job), newest first.
pub(super) fn history(
    state: &State,
    app: &Name,
    job: Option<&Name>,
    limit: usize,
) -> Result<Vec<RunRecord>, StateError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    state.with(|c| {
        let mut stmt = c.prepare(&format!(
            "SELECT {COLUMNS} FROM cron_runs
             WHERE app = ?1 AND (?2 IS NULL OR job = ?2)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![app.as_str(), job.map(Name::as_str), limit], record)?;
        rows.collect()
    })
}

/// One record.
pub(super) fn get(state: &State, id: RunId) -> Result<Option<RunRecord>, StateError> {
    state.with(|c| {
        c.query_row(
            &format!("SELECT {COLUMNS} FROM cron_runs WHERE id = ?1"),
            params![id.0],
            record,
        )
        .optional()
    })
}

/// The job's newest record that is not a run still going.
pub(super) fn last(state: &State, app: &Name, job: &Name) -> Result<Option<RunRecord>, StateError> {
    state.with(|c| {
        c.query_row(
            &format!(
                "SELECT {COLUMNS} FROM cron_runs
                 WHERE app = ?1 AND job = ?2 AND status <> 'running'
                 ORDER BY id DESC LIMIT 1"
            ),
            params![app.as_str(), job.as_str()],
            record,
        )
        .optional()
    })
}

const COLUMNS: &str =
    "id, app, job, trigger, started_at, duration_ms, status, code, blocked_by, message, output, pgid";

fn record(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let text = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let name = |i: usize| -> rusqlite::Result<Name> {
        Name::new(&text(i)?).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
        })
    };
    let trigger = match text(3)?.as_str() {
        "manual" => Trigger::Manual,
        _ => Trigger::Schedule,
    };
    let started_ms: i64 = r.get(4)?;
    let duration: Option<i64> = r.get(5)?;
    let code: Option<i64> = r.get(7)?;
    let code = code.and_then(|c| i32::try_from(c).ok()).unwrap_or(-1);
    let blocked_by: Option<i64> = r.get(8)?;
    let message: Option<String> = r.get(9)?;
    let message = message.unwrap_or_default();
    let outcome = match text(6)?.as_str() {
        "running" => Outcome::Running,
        "exited" => Outcome::Exited { code },
        "signaled" => Outcome::Signaled { signal: code },
        "timed-out" => Outcome::TimedOut,
        "failed-to-start" => Outcome::FailedToStart { error: message },
        "skipped" => Outcome::Skipped {
            ticks: u32::try_from(code).unwrap_or(0),
            blocked_by: RunId(blocked_by.unwrap_or(0)),
        },
        "stopped" => Outcome::Stopped,
        _ => Outcome::Interrupted { reason: message },
    };
    let pgid: Option<i64> = r.get(11)?;
    Ok(RunRecord {
        id: RunId(r.get(0)?),
        app: name(1)?,
        job: name(2)?,
        trigger,
        started_at: DateTime::from_timestamp_millis(started_ms).unwrap_or_default(),
        duration: duration.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        outcome,
        pid: pgid.and_then(|p| u32::try_from(p).ok()),
        output: r.get(10)?,
    })
}

/// The columns an outcome is stored in: code, blocked_by, message.
fn columns(outcome: &Outcome) -> (Option<i64>, Option<i64>, Option<&str>) {
    match outcome {
        Outcome::Exited { code } => (Some((*code).into()), None, None),
        Outcome::Signaled { signal } => (Some((*signal).into()), None, None),
        Outcome::FailedToStart { error } => (None, None, Some(error)),
        Outcome::Skipped { ticks, blocked_by } => (Some((*ticks).into()), Some(blocked_by.0), None),
        Outcome::Interrupted { reason } => (None, None, Some(reason)),
        Outcome::Running | Outcome::TimedOut | Outcome::Stopped => (None, None, None),
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Keeps the job's newest `keep` rows; rows of runs still going are never removed, so that
/// their end can be recorded.
fn prune(
    tx: &rusqlite::Transaction<'_>,
    app: &Name,
    job: &Name,
    keep: u32,
) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM cron_runs
         WHERE app = ?1 AND job = ?2 AND status <> 'running' AND id <= (
             SELECT id FROM cron_runs WHERE app = ?1 AND job = ?2
             ORDER BY id DESC LIMIT 1 OFFSET ?3)",
        params![app.as_str(), job.as_str(), keep],
    )?;
    Ok(())
}
