//! Central configuration on the agent: the version of each app's configuration the center
//! released for it, kept in the state (`central_configs`), handed to the app, and how the app
//! took it, which the link reports to the center.
//!
//! # What is kept
//!
//! Per app, one row: the newest version received (number, sha256, content), its delivery
//! (`pending`, `applied`, `rejected` with the app's reason) and the newest version the app
//! applied. The row is what every `hello` and heartbeat reports ([`CentralConfig::held`]),
//! and it survives an agent restart, which delivers nothing again.
//!
//! # Receiving a version ([`CentralConfig::receive`])
//!
//! Empty content, content larger than [`MAX_CONFIG_BYTES`] or content whose sha256 is not the
//! one sent is never stored nor applied: it is logged with the app and the version, and the
//! report does not change, so the center sends it again. A version whose number and sha256
//! are those held already is a no-op (never applied twice). Any other version, older numbers
//! included, is the version in force: stored as pending, then delivered by the app's own
//! task, in order.
//!
//! # Delivery
//!
//! - An app whose manifest has no `[config]` is a service built with the SDK: the version is
//!   written to `apps/NAME/center/vVERSION.toml` and the link `apps/NAME/center/config.toml`
//!   (which the program's `SHOAL_CENTER_CONFIG` names) switched to it. A running service
//!   learns of it through the programs socket (`agent.config.watch`), reloads, and answers
//!   `agent.config.applied` ([`CentralConfig::acknowledge`]); one not running reads it when
//!   it starts and answers then. A rejected version's link goes back to the version the
//!   service last applied (or away, if none), so a restart starts with what ran. A service
//!   that exits with the SDK's code for a bad configuration (2) at a start while the version
//!   is pending has it rejected the same way, and the supervisor's next start runs the old
//!   one.
//! - An app with `[config]` gets the content written at `path` (below `apps/NAME/data`);
//!   a running program is then sent its `reload_signal` (or restarted, without one) and is
//!   acknowledged applied once it still runs, the same process, healthy,
//!   [`crate::Options::settle`] later; rejected with how it ended otherwise. One not running stays pending: it reads
//!   the file when it starts.
//!
//! An app not installed yet is offered its center file; once it is installed (or changes
//! version) a version still pending is delivered again the way its manifest then says, and
//! an agent that opens delivers again what it left pending. Deliveries of one app run in its
//! own task, in order, and take turns with its acknowledgements.
//!
//! Every outcome is recorded, then sent to the center as `config.applied` when a link is up
//! ([`CentralConfig::outcomes`]); one sent while the link is down is repaired by the next
//! report.

mod files;

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::OptionalExtension;
use sha2::Digest as _;
use shoal_api::config::{
    ConfigApplied, ConfigChanged, ConfigHeld, ConfigVersion, Delivery, MAX_CONFIG_BYTES,
};
use shoal_pkg::manifest::{ConfigFile, ConfigReload, Manifest, ManifestExt, Name};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::supervise::{Exit, ProgramState, Supervisor};
use crate::{DataDir, State, StateError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS central_configs (
    app TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    data BLOB NOT NULL,
    -- pending, applied or rejected
    state TEXT NOT NULL,
    reason TEXT,
    -- The newest version the app applied, whose center file is kept for its restarts.
    applied_version INTEGER
);
";

/// How long a program restarted for a new configuration may take to be healthy.
const RESTART_HEALTHY: Duration = Duration::from_secs(60);

/// The longest an `agent.config.watch` is held.
pub const MAX_WATCH: Duration = Duration::from_secs(60);

/// How a received version was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Stored as the version in force; its delivery goes on in the app's task.
    Accepted,
    /// The version held already: nothing done.
    Known,
    /// Not stored: the reason (empty, too large, a sha256 that does not match, a bad name).
    Refused(String),
}

/// The agent's central configurations; clones share them.
#[derive(Clone)]
pub struct CentralConfig {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CentralConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CentralConfig").finish_non_exhaustive()
    }
}

struct Inner {
    data: DataDir,
    state: State,
    supervisor: Supervisor,
    settle: Duration,
    tasks: TaskTracker,
    closing: CancellationToken,
    apps: Mutex<HashMap<Name, Slot>>,
    /// The version each app's link named when the agent opened, read off the executor.
    links: Mutex<HashMap<Name, Option<ConfigVersion>>>,
    outcomes: broadcast::Sender<ConfigApplied>,
}

/// One app's delivery: the version its center link names (what a watch compares with), and
/// the queue of its task.
struct Slot {
    offered: watch::Sender<Option<ConfigVersion>>,
    /// Bumped for each version to deliver; the app's task delivers the row then held.
    wanted: watch::Sender<u64>,
    /// Held by a delivery and by an acknowledgement: a rejection's link moving back never
    /// crosses a newer version's link moving forward.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// One row of `central_configs`.
#[derive(Debug, Clone)]
struct Row {
    version: ConfigVersion,
    data: Vec<u8>,
    delivery: Delivery,
    applied_version: Option<ConfigVersion>,
}

impl CentralConfig {
    /// Opens the table in `state`; deliveries run on `tasks` until `closing`.
    pub(crate) async fn open(
        data: DataDir,
        state: State,
        supervisor: Supervisor,
        settle: Duration,
        tasks: TaskTracker,
        closing: CancellationToken,
    ) -> Result<CentralConfig, StateError> {
        state.call(|c| c.execute_batch(SCHEMA)).await?;
        let apps: Vec<String> = state
            .call(|c| {
                let mut stmt = c.prepare("SELECT app FROM central_configs")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect()
            })
            .await?;
        let root = data.clone();
        let links = tokio::task::spawn_blocking(move || {
            apps.iter()
                .filter_map(|a| Name::new(a).ok())
                .map(|app| {
                    let version = files::pointed(&root.center(&app));
                    (app, version)
                })
                .collect::<HashMap<_, _>>()
        })
        .await
        .unwrap_or_default();
        Ok(CentralConfig {
            inner: Arc::new(Inner {
                data,
                state,
                supervisor,
                settle,
                tasks,
                closing,
                apps: Mutex::default(),
                links: Mutex::new(links),
                outcomes: broadcast::channel(1024).0,
            }),
        })
    }

    /// Every configuration held, as `hello` and each heartbeat report them.
    pub async fn held(&self) -> Result<Vec<ConfigHeld>, StateError> {
        self.inner
            .state
            .call(|c| {
                let mut stmt = c.prepare(
                    "SELECT app, version, sha256, state, reason FROM central_configs ORDER BY app",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(ConfigHeld {
                        name: r.get(0)?,
                        version: r.get::<_, i64>(1)? as u64,
                        sha256: r.get(2)?,
                        delivery: delivery(&r.get::<_, String>(3)?, r.get(4)?),
                    })
                })?;
                rows.collect()
            })
            .await
    }

    /// The outcomes to come, for the link to send as `config.applied`.
    pub fn outcomes(&self) -> broadcast::Receiver<ConfigApplied> {
        self.inner.outcomes.subscribe()
    }

    /// Takes `config.changed` (see the module documentation).
    pub async fn receive(&self, changed: ConfigChanged) -> Result<Received, StateError> {
        let ConfigChanged {
            name,
            version,
            sha256,
            data,
        } = changed;
        let app = match check(&name, &sha256, &data) {
            Ok(app) => app,
            Err(why) => {
                warn!(app = %name, version, reason = %why, "a configuration version refused; not applied");
                return Ok(Received::Refused(why));
            }
        };
        let sha256 = sha256.to_ascii_lowercase();
        let key = app.to_string();
        let (v, s) = (version as i64, sha256.clone());
        let stored = self
            .inner
            .state
            .call_transaction(move |tx| {
                let held: Option<(i64, String)> = tx
                    .query_row(
                        "SELECT version, sha256 FROM central_configs WHERE app = ?1",
                        [&key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if held.as_ref() == Some(&(v, s.clone())) {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO central_configs (app, version, sha256, data, state, reason)
                     VALUES (?1, ?2, ?3, ?4, 'pending', NULL)
                     ON CONFLICT (app) DO UPDATE SET version = ?2, sha256 = ?3, data = ?4,
                       state = 'pending', reason = NULL",
                    rusqlite::params![key, v, s, data],
                )?;
                Ok(true)
            })
            .await?;
        if !stored {
            return Ok(Received::Known);
        }
        info!(app = %app, version, "a configuration version received");
        self.slot(&app).wanted.send_modify(|n| *n += 1);
        Ok(Received::Accepted)
    }

    /// Takes an app's `agent.config.applied`: recorded and sent on when it is about the
    /// version held and says something new; otherwise ignored.
    pub async fn acknowledge(&self, ack: ConfigApplied) -> Result<(), StateError> {
        let Ok(app) = Name::new(&ack.name) else {
            return Ok(());
        };
        let slot = self.slot(&app);
        let _turn = slot.turn.lock().await;
        let Some(row) = self.row(&app).await? else {
            return Ok(());
        };
        if row.version != ack.version || row.delivery == ack.delivery {
            return Ok(());
        }
        if matches!(ack.delivery, Delivery::Rejected { .. }) {
            // A restart starts with what ran, not with the version refused.
            let (dir, back) = (self.center_dir(&app), row.applied_version);
            let _ = blocking(move || files::point(&dir, back)).await;
            slot.offered.send_replace(back);
        }
        self.record(&app, ack.version, ack.delivery).await
    }

    /// Waits until the version app `app` should run differs from `have`, at most `wait`
    /// (and [`MAX_WATCH`]); answers the version it should run.
    pub async fn watch(
        &self,
        app: &Name,
        have: Option<ConfigVersion>,
        wait: Duration,
    ) -> Option<ConfigVersion> {
        let mut offered = self.slot(app).offered.subscribe();
        let changed = offered.wait_for(|v| *v != have);
        tokio::select! {
            _ = changed => {}
            () = tokio::time::sleep(wait.min(MAX_WATCH)) => {}
            () = self.inner.closing.cancelled() => {}
        }
        let now = *offered.borrow();
        now
    }

    /// Whether the agent is closing (a watch then answers at once).
    pub fn is_closing(&self) -> bool {
        self.inner.closing.is_cancelled()
    }

    /// The process group of app `app`'s program, while it runs.
    pub fn program_group(&self, app: &Name) -> Option<u32> {
        self.inner.supervisor.snapshot(app)?.pgid
    }

    /// The slot of `app`, made (with its task) on first use.
    fn slot(&self, app: &Name) -> SlotRef {
        let mut apps = self.inner.apps.lock().unwrap();
        let slot = apps.entry(app.clone()).or_insert_with(|| {
            // An app without a slot has no row yet, so no link: `open` made the others.
            let offered = self.inner.links.lock().unwrap().remove(app).flatten();
            let slot = Slot {
                offered: watch::Sender::new(offered),
                wanted: watch::Sender::new(0),
                turn: Arc::default(),
            };
            let (this, name, wanted) = (self.clone(), app.clone(), slot.wanted.subscribe());
            self.inner.tasks.spawn(this.deliveries(name, wanted));
            slot
        });
        SlotRef {
            offered: slot.offered.clone(),
            wanted: slot.wanted.clone(),
            turn: slot.turn.clone(),
        }
    }

    /// Delivers `app`'s version again if it is still pending (the app was just installed or
    /// changed version, and its manifest may say another way).
    pub(crate) async fn redeliver(&self, app: &Name) -> Result<(), StateError> {
        if let Some(row) = self.row(app).await? {
            if row.delivery == Delivery::Pending {
                self.slot(app).wanted.send_modify(|n| *n += 1);
            }
        }
        Ok(())
    }

    /// Delivers again what an earlier agent left pending (it may have stopped before the
    /// file was written): called once the installed apps are registered.
    pub(crate) async fn resume(&self) -> Result<(), StateError> {
        for held in self.held().await? {
            if held.delivery == Delivery::Pending {
                if let Ok(app) = Name::new(&held.name) {
                    self.slot(&app).wanted.send_modify(|n| *n += 1);
                }
            }
        }
        Ok(())
    }

    /// The app's task: delivers the version held each time one is wanted, one at a time;
    /// a file written for a program that was not running is judged once it has started, and
    /// a service that cannot start with its new version has it rejected.
    async fn deliveries(self, app: Name, mut wanted: watch::Receiver<u64>) {
        let mut waiting = Next::Done;
        loop {
            let started = async {
                match waiting {
                    Next::Done => std::future::pending().await,
                    Next::AtStart(version) => self.started(&app, version).await,
                    Next::ServiceStart(version) => self.refused_at_start(&app, version).await,
                }
            };
            let next = tokio::select! {
                () = self.inner.closing.cancelled() => return,
                changed = wanted.changed() => match changed {
                    Ok(()) => self.deliver(&app).await,
                    Err(_) => return,
                },
                judged = started => judged.map(|()| Next::Done),
            };
            waiting = next.unwrap_or_else(|error| {
                warn!(app = %app, %error, "delivering a configuration failed; it stays pending");
                Next::Done
            });
        }
    }

    /// Waits until program `app` runs healthy, then judges `version`'s file like a reload.
    async fn started(&self, app: &Name, version: ConfigVersion) -> Result<(), StateError> {
        let Some(mut status) = self.inner.supervisor.watch_status(app) else {
            return std::future::pending().await;
        };
        let from = chrono::Utc::now();
        if status
            .wait_for(|s| s.is_healthy() || ended_since(s, from))
            .await
            .is_err()
        {
            return std::future::pending().await;
        }
        let outcome = self.judge(app, None, "its start").await;
        self.record(app, version, outcome).await
    }

    /// After a restart: the new process, once it is healthy or has ended (at most
    /// [`RESTART_HEALTHY`]), as `(pid, restarts)` for [`judge`](Self::judge).
    async fn restarted(&self, app: &Name) -> Option<(Option<u32>, u32)> {
        let mut status = self.inner.supervisor.watch_status(app)?;
        let from = chrono::Utc::now();
        let started = {
            let now = status.borrow_and_update();
            (now.pid, now.restarts)
        };
        let settled = status.wait_for(|s| s.is_healthy() || ended_since(s, from));
        let _ = tokio::time::timeout(RESTART_HEALTHY, settled).await;
        Some(started)
    }

    /// Waits for service `app` to exit with the SDK's code for a bad configuration (2) while
    /// `version` is pending, then rejects it and points its link back at the version last
    /// applied, which the supervisor's next start runs.
    async fn refused_at_start(&self, app: &Name, version: ConfigVersion) -> Result<(), StateError> {
        let Some(mut status) = self.inner.supervisor.watch_status(app) else {
            return std::future::pending().await;
        };
        let from = chrono::Utc::now();
        let refused =
            status.wait_for(|s| ended_since(s, from) && s.last_exit == Some(Exit::Code(2)));
        if refused.await.is_err() {
            return std::future::pending().await;
        }
        match self.row(app).await? {
            Some(row) if row.version == version && row.delivery == Delivery::Pending => {
                let reason = "the service exited with code 2 (a configuration its checks refuse) \
                              at its start with this version; its stderr log says why"
                    .to_owned();
                self.acknowledge(ConfigApplied {
                    name: app.to_string(),
                    version,
                    delivery: Delivery::Rejected { reason },
                })
                .await
            }
            _ => Ok(()),
        }
    }

    async fn deliver(&self, app: &Name) -> Result<Next, StateError> {
        let turn = self.slot(app).turn;
        let _turn = turn.lock().await;
        let Some(row) = self.row(app).await? else {
            return Ok(Next::Done);
        };
        if row.delivery != Delivery::Pending {
            return Ok(Next::Done);
        }
        let manifest = self.manifest(app).await;
        match manifest.and_then(|m| m.config) {
            Some(file) => self.deliver_file(app, &row, &file).await,
            None => {
                let (dir, data, keep) =
                    (self.center_dir(app), row.data.clone(), row.applied_version);
                let version = row.version;
                match blocking(move || files::offer(&dir, version, &data, keep)).await {
                    Ok(()) => {
                        self.slot(app).offered.send_replace(Some(version));
                        Ok(Next::ServiceStart(version))
                    }
                    Err(e) => {
                        let reason = format!("writing the center's configuration: {e}");
                        self.record(app, version, Delivery::Rejected { reason })
                            .await?;
                        Ok(Next::Done)
                    }
                }
            }
        }
    }

    /// Writes a program's `[config]` file, then signals or restarts it and judges it.
    async fn deliver_file(
        &self,
        app: &Name,
        row: &Row,
        file: &ConfigFile,
    ) -> Result<Next, StateError> {
        let (data_dir, path, data) = (
            self.inner.data.data(app),
            file.path.clone(),
            row.data.clone(),
        );
        let written = blocking(move || {
            let target = files::program_file(&data_dir, &path)?;
            files::write_atomic(&target, &data)
        })
        .await;
        if let Err(e) = written {
            let reason = format!("writing {}: {e}", file.path);
            self.record(app, row.version, Delivery::Rejected { reason })
                .await?;
            return Ok(Next::Done);
        }
        let running = self
            .inner
            .supervisor
            .snapshot(app)
            .is_some_and(|p| p.state == ProgramState::Running && p.pid.is_some());
        if !running {
            info!(app = %app, version = row.version, "configuration written; the program reads it when it starts");
            return Ok(Next::AtStart(row.version));
        }
        let outcome = self.reload_program(app, file.reload).await;
        self.record(app, row.version, outcome).await?;
        Ok(Next::Done)
    }

    /// Tells a running program of its new file and judges it.
    async fn reload_program(&self, app: &Name, reload: ConfigReload) -> Delivery {
        let supervisor = &self.inner.supervisor;
        let told = match reload {
            ConfigReload::Signal(signal) => {
                let before = supervisor.snapshot(app).map(|p| (p.pid, p.restarts));
                let signal = crate::supervise::Signal::from_str(&signal.sig_name())
                    .unwrap_or(crate::supervise::Signal::SIGHUP);
                supervisor
                    .signal(app, signal)
                    .await
                    .map(|()| before)
                    .map_err(|e| e.to_string())
            }
            ConfigReload::Restart => match supervisor.restart(app).await {
                Ok(()) => Ok(self.restarted(app).await),
                Err(e) => Err(e.to_string()),
            },
        };
        match told {
            Ok(before) => self.judge(app, before, &reload.to_string()).await,
            Err(e) => Delivery::Rejected {
                reason: format!("{reload} failed: {e}"),
            },
        }
    }

    /// Whether program `app` still runs healthy [`Inner::settle`] from now, the same process
    /// (`before`: its pid and restarts when it was told; else the one running now): applied,
    /// or rejected with how it ended after `after_what`.
    async fn judge(
        &self,
        app: &Name,
        before: Option<(Option<u32>, u32)>,
        after_what: &str,
    ) -> Delivery {
        let supervisor = &self.inner.supervisor;
        let before = before.or_else(|| supervisor.snapshot(app).map(|p| (p.pid, p.restarts)));
        tokio::select! {
            () = tokio::time::sleep(self.inner.settle) => {}
            () = self.inner.closing.cancelled() => {}
        }
        let Some(after) = supervisor.snapshot(app) else {
            return Delivery::Rejected {
                reason: format!("{app} is no longer supervised"),
            };
        };
        let same = before == Some((after.pid, after.restarts));
        if same && after.pid.is_some() && after.is_healthy() {
            return Delivery::Applied;
        }
        let how = match (after.last_exit, after.error) {
            (Some(exit), _) => exit.to_string(),
            (None, Some(error)) => error,
            (None, None) => "not running and healthy".to_owned(),
        };
        Delivery::Rejected {
            reason: format!("{how} after {after_what}"),
        }
    }

    /// Writes `version`'s delivery down and sends it on, if `version` is still the one held.
    async fn record(
        &self,
        app: &Name,
        version: ConfigVersion,
        delivery: Delivery,
    ) -> Result<(), StateError> {
        let (key, v) = (app.to_string(), version as i64);
        let (state, reason) = match &delivery {
            Delivery::Pending => ("pending", None),
            Delivery::Applied => ("applied", None),
            Delivery::Rejected { reason } => ("rejected", Some(reason.clone())),
        };
        let changed = self
            .inner
            .state
            .call(move |c| {
                c.execute(
                    "UPDATE central_configs SET state = ?3, reason = ?4,
                       applied_version = CASE WHEN ?3 = 'applied' THEN ?2 ELSE applied_version END
                     WHERE app = ?1 AND version = ?2",
                    rusqlite::params![key, v, state, reason],
                )
            })
            .await?;
        if changed == 0 {
            return Ok(());
        }
        match &delivery {
            Delivery::Rejected { reason } => {
                warn!(app = %app, version, %reason, "configuration rejected; the old one stays in force")
            }
            _ => info!(app = %app, version, state, "configuration delivery"),
        }
        let _ = self.inner.outcomes.send(ConfigApplied {
            name: app.to_string(),
            version,
            delivery,
        });
        Ok(())
    }

    async fn row(&self, app: &Name) -> Result<Option<Row>, StateError> {
        let key = app.to_string();
        self.inner
            .state
            .call(move |c| {
                c.query_row(
                    "SELECT version, data, state, reason, applied_version
                     FROM central_configs WHERE app = ?1",
                    [key],
                    |r| {
                        Ok(Row {
                            version: r.get::<_, i64>(0)? as u64,
                            data: r.get(1)?,
                            delivery: delivery(&r.get::<_, String>(2)?, r.get(3)?),
                            applied_version: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                        })
                    },
                )
                .optional()
            })
            .await
    }

    /// The manifest of `app`'s current version, if it is installed.
    async fn manifest(&self, app: &Name) -> Option<Manifest> {
        let path = self
            .inner
            .data
            .current(app)
            .join(shoal_pkg::manifest::MANIFEST_FILE);
        blocking(move || Manifest::load(&path).map_err(std::io::Error::other))
            .await
            .ok()
    }

    fn center_dir(&self, app: &Name) -> std::path::PathBuf {
        self.inner.data.center(app)
    }
}

/// What an app's task does after a delivery.
#[derive(Debug, Clone, Copy)]
enum Next {
    Done,
    /// The file of this version waits for the program to start.
    AtStart(ConfigVersion),
    /// An SDK service takes this version itself, unless a start with it fails.
    ServiceStart(ConfigVersion),
}

/// What a slot lends out.
struct SlotRef {
    offered: watch::Sender<Option<ConfigVersion>>,
    wanted: watch::Sender<u64>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// Whether the program's process ended (waiting to start again, or given up) after `from`.
fn ended_since(status: &crate::ProgramStatus, from: chrono::DateTime<chrono::Utc>) -> bool {
    status.since >= from && matches!(status.state, ProgramState::Backoff | ProgramState::Failed)
}

/// The app `changed` is for, if it may be applied at all: a valid name, content neither
/// empty nor larger than [`MAX_CONFIG_BYTES`], and the sha256 it was sent with; else why not.
pub fn verify(changed: &ConfigChanged) -> Result<Name, String> {
    check(&changed.name, &changed.sha256, &changed.data)
}

/// The app a version is for, if the version may be applied at all.
fn check(name: &str, sha256: &str, data: &[u8]) -> Result<Name, String> {
    let app = Name::new(name).map_err(|e| format!("the app's name: {e}"))?;
    if data.is_empty() {
        return Err("its content is empty".into());
    }
    if data.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "its content has {} bytes, more than the {MAX_CONFIG_BYTES} allowed",
            data.len()
        ));
    }
    let actual = hex(&sha2::Sha256::digest(data));
    if !actual.eq_ignore_ascii_case(sha256) {
        return Err(format!(
            "its content's sha256 is {actual}, not the {sha256} sent with it"
        ));
    }
    Ok(app)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn delivery(state: &str, reason: Option<String>) -> Delivery {
    match state {
        "applied" => Delivery::Applied,
        "rejected" => Delivery::Rejected {
            reason: reason.unwrap_or_default(),
        },
        _ => Delivery::Pending,
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}
