//! The supervisor's table in the agent's state database: each program's spec, whether it
//! should run, and its running process (pid, start time, boot, group, FIFOs), so that the
//! next agent can adopt it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use shoal_pkg::manifest::{Command, Health, HttpCheck, Logs, Name, Restart, StopSignal, Version};

use super::process::{Outputs, Recorded};
use super::spec::ProgramSpec;
use super::status::{Exit, ProgramState};
use crate::{State, StateError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS supervised (
    name TEXT PRIMARY KEY,
    -- ProgramSpec as JSON (StoredSpec).
    spec TEXT NOT NULL,
    -- 'run': start it when the agent starts, restart it per its policy; otherwise the state
    -- it rests in until asked to start.
    goal TEXT NOT NULL CHECK (goal IN ('run', 'stopped', 'exited', 'failed')),
    restarts INTEGER NOT NULL DEFAULT 0,
    -- Exit as JSON, or NULL.
    last_exit TEXT,
    -- The running process, all NULL when none runs. Its group id is its pid.
    pid INTEGER,
    start_time INTEGER,
    boot_id TEXT,
    started_at_ms INTEGER,
    version TEXT,
    stdout_fifo TEXT,
    stderr_fifo TEXT
);
";

/// Whether a program should be running, or the state it rests in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    Run,
    Stopped,
    Exited,
    Failed,
}

impl Goal {
    fn as_str(self) -> &'static str {
        match self {
            Goal::Run => "run",
            Goal::Stopped => "stopped",
            Goal::Exited => "exited",
            Goal::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Goal {
        match text {
            "run" => Goal::Run,
            "exited" => Goal::Exited,
            "failed" => Goal::Failed,
            _ => Goal::Stopped,
        }
    }

    /// The state of a program at rest with this goal (starting, for [`Goal::Run`]).
    pub fn state(self) -> ProgramState {
        match self {
            Goal::Run => ProgramState::Starting,
            Goal::Stopped => ProgramState::Stopped,
            Goal::Exited => ProgramState::Exited,
            Goal::Failed => ProgramState::Failed,
        }
    }
}

/// One row, as read at open.
#[derive(Debug)]
pub(crate) struct Row {
    pub name: String,
    /// Err: the stored spec could not be read back (says why).
    pub spec: Result<ProgramSpec, String>,
    pub goal: Goal,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    pub process: Option<Recorded>,
}

#[derive(Debug, Clone)]
pub(crate) struct Store {
    state: State,
}

impl Store {
    pub fn open(state: State) -> Result<Store, StateError> {
        state.ensure(SCHEMA)?;
        // Parsed now, so that no start, exit or restart parses SQL.
        state.with(|c| {
            for sql in [PUT_SPEC, SET_GOAL, STARTED, ENDED, DELETE] {
                c.prepare_cached(sql)?;
            }
            Ok(())
        })?;
        Ok(Store { state })
    }

    pub fn load(&self) -> Result<Vec<Row>, StateError> {
        self.state.with(|c| {
            let mut stmt = c.prepare(
                "SELECT name, spec, goal, restarts, last_exit, pid, start_time, boot_id,
                        started_at_ms, version
                 FROM supervised ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| {
                let name: String = r.get(0)?;
                let spec: String = r.get(1)?;
                let goal: String = r.get(2)?;
                let last_exit: Option<String> = r.get(4)?;
                let pid: Option<i32> = r.get(5)?;
                let process = match pid {
                    Some(pid) => {
                        let version: String = r.get(9)?;
                        version.parse::<Version>().ok().map(|version| Recorded {
                            pid,
                            start_time: r.get::<_, i64>(6).map(|t| t as u64).unwrap_or(0),
                            boot_id: r.get(7).unwrap_or_default(),
                            started_at: UNIX_EPOCH
                                + Duration::from_millis(r.get::<_, i64>(8).unwrap_or(0) as u64),
                            version,
                        })
                    }
                    None => None,
                };
                Ok(Row {
                    spec: StoredSpec::decode(&name, &spec),
                    name,
                    goal: Goal::parse(&goal),
                    restarts: r.get(3)?,
                    last_exit: last_exit.and_then(|e| serde_json::from_str(&e).ok()),
                    process,
                })
            })?;
            rows.collect()
        })
    }

    /// Registers `spec` (stopped), or replaces the spec of a registered program.
    pub async fn put_spec(&self, spec: &ProgramSpec) -> Result<(), StateError> {
        let (name, json) = (spec.name.to_string(), StoredSpec::encode(spec));
        self.state
            .call(move |c| execute(c, PUT_SPEC, params![name, json]))
            .await?;
        Ok(())
    }

    pub async fn set_goal(&self, name: &Name, goal: Goal) -> Result<(), StateError> {
        let (name, goal) = (name.to_string(), goal.as_str());
        self.state
            .call(move |c| execute(c, SET_GOAL, params![name, goal]))
            .await?;
        Ok(())
    }

    /// Records a process that was just started, and how the one before it ended when that
    /// was not written yet (a restart writes both at once, after the spawn).
    pub async fn started(
        &self,
        name: &Name,
        process: &Recorded,
        outputs: &Outputs,
        restarts: u32,
        exit: Option<&Exit>,
    ) -> Result<(), StateError> {
        let exit = exit.map(|e| serde_json::to_string(e).unwrap_or_default());
        let started_at_ms = process
            .started_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let (name, pid, start_time, boot_id, version) = (
            name.to_string(),
            process.pid,
            process.start_time as i64,
            process.boot_id.clone(),
            process.version.to_string(),
        );
        let (stdout, stderr) = (
            outputs.stdout.fifo.display().to_string(),
            outputs.stderr.fifo.display().to_string(),
        );
        self.state
            .call(move |c| {
                execute(
                    c,
                    STARTED,
                    params![
                        name,
                        pid,
                        start_time,
                        boot_id,
                        started_at_ms,
                        version,
                        stdout,
                        stderr,
                        restarts,
                        exit,
                    ],
                )
            })
            .await?;
        Ok(())
    }

    /// Records that the program's process ended (`exit`, when known).
    pub async fn ended(&self, name: &Name, exit: Option<&Exit>) -> Result<(), StateError> {
        let exit = exit.map(|e| serde_json::to_string(e).unwrap_or_default());
        let name = name.to_string();
        self.state
            .call(move |c| execute(c, ENDED, params![name, exit]))
            .await?;
        Ok(())
    }

    pub async fn delete(&self, name: &Name) -> Result<(), StateError> {
        let name = name.to_string();
        self.state
            .call(move |c| execute(c, DELETE, params![name]))
            .await?;
        Ok(())
    }
}

const PUT_SPEC: &str = "INSERT INTO supervised (name, spec, goal) VALUES (?1, ?2, 'stopped')
    ON CONFLICT (name) DO UPDATE SET spec = excluded.spec";
const SET_GOAL: &str = "UPDATE supervised SET goal = ?2 WHERE name = ?1";
const STARTED: &str = "UPDATE supervised SET pid = ?2, start_time = ?3, boot_id = ?4,
        started_at_ms = ?5, version = ?6, stdout_fifo = ?7, stderr_fifo = ?8, restarts = ?9,
        last_exit = coalesce(?10, last_exit)
    WHERE name = ?1";
const ENDED: &str = "UPDATE supervised SET pid = NULL, start_time = NULL, boot_id = NULL,
        started_at_ms = NULL, version = NULL, stdout_fifo = NULL, stderr_fifo = NULL,
        last_exit = coalesce(?2, last_exit)
    WHERE name = ?1";
const DELETE: &str = "DELETE FROM supervised WHERE name = ?1";

/// Runs one of the store's statements, each parsed once per connection and kept (rusqlite's
/// statement cache, which holds 16; [`Store::open`] parses them all): a program's start and
/// exit write without parsing SQL, which also keeps SQLite's parser out of a restart's code.
fn execute(c: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

/// [`ProgramSpec`] as stored: the manifest types serialize for people (durations as
/// `"10s"`) and have no way back, so the spec is stored in a form of its own.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSpec {
    version: String,
    dir: PathBuf,
    program: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    stop_signal: String,
    stop_timeout_ms: u64,
    /// Absent in a spec stored before it existed.
    #[serde(default)]
    shutdown_delay_ms: u64,
    restart: String,
    health: Option<StoredHealth>,
    log_max_size: u64,
    log_keep: u32,
    start_after: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredHealth {
    port: Option<u16>,
    ping: bool,
    http_path: Option<String>,
    http_url: Option<String>,
    interval_ms: u64,
    timeout_ms: u64,
    failures: u32,
    grace_ms: u64,
}

impl StoredSpec {
    fn encode(spec: &ProgramSpec) -> String {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let stored = StoredSpec {
            version: spec.version.to_string(),
            dir: spec.dir.clone(),
            program: spec.command.program.clone(),
            args: spec.command.args.clone(),
            env: spec.env.clone(),
            stop_signal: spec.stop_signal.name().to_owned(),
            stop_timeout_ms: ms(spec.stop_timeout),
            shutdown_delay_ms: ms(spec.shutdown_delay),
            restart: spec.restart.as_str().to_owned(),
            health: spec.health.as_ref().map(|h| StoredHealth {
                port: h.port,
                ping: h.ping,
                http_path: match &h.http {
                    Some(HttpCheck::Path(p)) => Some(p.clone()),
                    _ => None,
                },
                http_url: match &h.http {
                    Some(HttpCheck::Url(u)) => Some(u.clone()),
                    _ => None,
                },
                interval_ms: ms(h.interval),
                timeout_ms: ms(h.timeout),
                failures: h.failures,
                grace_ms: ms(h.grace),
            }),
            log_max_size: spec.logs.max_size,
            log_keep: spec.logs.keep,
            start_after: spec
                .start_after
                .iter()
                .map(|n| n.as_str().to_owned())
                .collect(),
        };
        serde_json::to_string(&stored).expect("plain data serializes")
    }

    fn decode(name: &str, json: &str) -> Result<ProgramSpec, String> {
        let s: StoredSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let stop_signal = StopSignal::ALL
            .into_iter()
            .find(|sig| sig.name() == s.stop_signal)
            .ok_or_else(|| format!("unknown stop signal {:?}", s.stop_signal))?;
        let restart = [Restart::Always, Restart::OnFailure, Restart::Never]
            .into_iter()
            .find(|r| r.as_str() == s.restart)
            .ok_or_else(|| format!("unknown restart policy {:?}", s.restart))?;
        Ok(ProgramSpec {
            name: Name::new(name)?,
            version: s.version.parse().map_err(|e| format!("version: {e}"))?,
            dir: s.dir,
            command: Command {
                program: s.program,
                args: s.args,
            },
            env: s.env,
            stop_signal,
            stop_timeout: Duration::from_millis(s.stop_timeout_ms),
            shutdown_delay: Duration::from_millis(s.shutdown_delay_ms),
            restart,
            health: s.health.map(|h| Health {
                port: h.port,
                ping: h.ping,
                http: match (h.http_path, h.http_url) {
                    (Some(p), _) => Some(HttpCheck::Path(p)),
                    (None, Some(u)) => Some(HttpCheck::Url(u)),
                    (None, None) => None,
                },
                interval: Duration::from_millis(h.interval_ms),
                timeout: Duration::from_millis(h.timeout_ms),
                failures: h.failures,
                grace: Duration::from_millis(h.grace_ms),
            }),
            logs: Logs {
                max_size: s.log_max_size,
                keep: s.log_keep,
            },
            start_after: s
                .start_after
                .iter()
                .map(|n| Name::new(n))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_reads_back_as_it_was_stored() {
        let spec = ProgramSpec {
            name: Name::new("web").unwrap(),
            version: "1.10.0-rc.1".parse().unwrap(),
            dir: PathBuf::from("/data/apps/web/versions/1.10.0-rc.1"),
            command: Command {
                program: "bin/web".into(),
                args: vec!["--port".into(), "8080".into()],
            },
            env: BTreeMap::from([("RUST_LOG".into(), "info".into())]),
            stop_signal: StopSignal::Quit,
            stop_timeout: Duration::from_millis(1500),
            shutdown_delay: Duration::from_millis(700),
            restart: Restart::OnFailure,
            health: Some(Health {
                port: Some(8080),
                ping: true,
                http: Some(HttpCheck::Url("http://127.0.0.1:8080/healthz".into())),
                interval: Duration::from_secs(5),
                timeout: Duration::from_millis(250),
                failures: 4,
                grace: Duration::from_secs(20),
            }),
            logs: Logs {
                max_size: 1 << 20,
                keep: 3,
            },
            start_after: vec![Name::new("cache").unwrap()],
        };
        let json = StoredSpec::encode(&spec);
        assert_eq!(StoredSpec::decode("web", &json), Ok(spec.clone()));

        let mut plain = spec;
        plain.health = None;
        plain.start_after.clear();
        let json = StoredSpec::encode(&plain);
        assert_eq!(StoredSpec::decode("web", &json), Ok(plain));
        assert!(StoredSpec::decode("web", "{}").is_err());
    }
}
