//! The agent as a whole: the data directory, the state, the supervisor and the crontab
//! scheduler, and what changes them together: install, upgrade, rollback, start and stop.
//!
//! # Install and upgrade
//!
//! One install or rollback runs at a time. Installing `NAME-VERSION.tar.gz`:
//!
//! 1. the archive is checked whole (checksum first) and unpacked into
//!    `apps/NAME/versions/VERSION` (a hidden directory renamed into place: never half there);
//! 2. when NAME is installed and its manifest has `[backup]`, its data is backed up;
//! 3. the upgrade is written down (`upgrades` table: from, to, whether this install unpacked
//!    the new version);
//! 4. `hooks.install` runs in the new version directory (not for a rollback, whose target
//!    ran it when it was installed), the old version is stopped, `current` switched (an
//!    atomic rename), the new one started; the agent waits until it is healthy (its
//!    `[health]` checks, or running; at least its own grace and checks) and still so, the
//!    same process, [`Options::settle`] later, then runs `hooks.verify`;
//! 5. any failure from 4 on rolls back: the new version is stopped and removed, `current`
//!    points to the old again, the old is started, and the error says why and what runs now.
//!
//! Install, rollback and restore run to their end even when the caller goes away: they are
//! tasks of the agent's own, not of the caller. An agent killed in the middle comes back to
//! a consistent state: it kills the hook that was running and what that hook started (found
//! by their environment, see [`hooks::kill_left_over`]) and puts the written-down app back on its old version, removing a version that install
//! had unpacked. Never neither, never a half-prepared directory left installed. Old versions
//! beyond `keep_versions` are pruned, never the current or the previous.
//!
//! The methods take domain and `shoal-api` types and answer `shoal-api` types; they fail with
//! an [`AgentError`] whose kind a transport maps to its codes. Blocking work (SQLite, version
//! trees, `/proc`) runs through `spawn_blocking`, never on an async worker.
//!
//! # Closing
//!
//! [`Agent::close`] cancels what waits on time or on a reader (the backup timer, followed
//! logs), refuses new changes, lets an install, rollback or restore in progress finish or
//! roll back within [`Options::close_grace`], then ends the crontab runs and stops or leaves
//! the programs. Work still going after the grace is left as a crash would leave it: the next
//! agent puts the app back.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use shoal_api::agent::{
    AppAction, AppStatus, BackupCreated, BackupInfo, InstallOutcome, InstallReport, JobStatus,
    LogQuery, RunRecord, VersionInfo,
};
use shoal_pkg::manifest::{Kind, Manifest, ManifestExt, Name, Version};
use shoal_pkg::{Limits, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::central::CentralConfig;
use crate::cron::{Cron, CronError, CronOptions};
use crate::error::{failed, Aftermath, AgentError, Cause, ChangeFailed};
use crate::logs::Logs;
use crate::supervise::{ProgramSpec, Supervisor};
use crate::{backup, hooks, logs, to_api, versions, DataDir, State, StateError};

/// How often the agent looks for backups that fall due (each app's `[backup] every`, counted
/// from its newest backup on disk, so a restarted agent takes no extra one).
const BACKUP_CHECK: Duration = Duration::from_secs(60);

/// How long crontab runs going at close may take to finish before they are stopped.
const CRON_GRACE: Duration = Duration::from_secs(10);

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Versions kept per app (the current and the previous always are).
    pub keep_versions: usize,
    /// How long a started version may take to become healthy.
    pub health_timeout: Duration,
    /// How long a hook may run.
    pub hook_timeout: Duration,
    /// How long a started version must stay up, healthy and unrestarted, to pass.
    pub settle: Duration,
    /// What an archive may hold.
    pub limits: Limits,
    /// How long [`Agent::close`] waits for an install, rollback or restore in progress.
    pub close_grace: Duration,
    /// The host others reach this machine's services at (`shoal agent --advertise`): the
    /// host of the apps' endpoints. Without it, the local address of the link to the center.
    pub advertise: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            keep_versions: 5,
            health_timeout: Duration::from_secs(60),
            hook_timeout: Duration::from_secs(600),
            settle: Duration::from_secs(2),
            limits: Limits::default(),
            // systemd's default stop timeout: a service manager kills the agent after it
            // anyway, and the next agent puts back what was left half done.
            close_grace: Duration::from_secs(90),
            advertise: None,
        }
    }
}

/// What [`Agent::close`] does with the programs it supervises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Programs {
    /// Stop every program (`shoal up`, `shoal agent --stop-on-exit`).
    Stop,
    /// Leave them running for the next agent to adopt.
    KeepRunning,
}

/// The agent.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("data", &self.inner.data.root())
            .finish()
    }
}

struct Inner {
    data: DataDir,
    state: State,
    supervisor: Supervisor,
    cron: Cron,
    central: CentralConfig,
    options: Options,
    /// One install, rollback or restore at a time.
    changing: tokio::sync::Mutex<()>,
    /// Cancelled by [`Agent::close`]: timers and followed logs end, no change starts.
    closing: CancellationToken,
    /// Every task the agent starts: changes, the backup timer.
    tasks: TaskTracker,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS upgrades (
    app TEXT PRIMARY KEY,
    from_version TEXT,
    to_version TEXT NOT NULL,
    -- 1 when to_version was unpacked by this install (and goes if it does not stay), 0 for a
    -- rollback to a version installed before.
    fresh INTEGER NOT NULL,
    started_at INTEGER NOT NULL
);
";

impl Agent {
    /// Opens the agent of data directory `root`: the state, the programs still running from
    /// an earlier agent (adopted, not restarted), an upgrade that an earlier agent left half
    /// done (rolled back), every installed app as it was meant to be, and the backup timer.
    pub async fn open(root: &Path, options: Options) -> Result<Agent, AgentError> {
        let root = root.to_owned();
        let (data, state) = blocking(move || {
            let data = DataDir::create(&root).map_err(failed(format!(
                "creating the data directory {}",
                root.display()
            )))?;
            let state = State::open(&data.database())?;
            state.ensure(SCHEMA)?;
            migrate(&state)?;
            Ok((data, state))
        })
        .await?;
        let supervisor = Supervisor::open(data.clone(), state.clone())
            .await
            .map_err(failed("starting the supervisor"))?;
        let cron = Cron::open(data.clone(), state.clone(), CronOptions::default())
            .await
            .map_err(failed("starting the crontab scheduler"))?;
        let (closing, tasks) = (CancellationToken::new(), TaskTracker::new());
        let central = CentralConfig::open(
            data.clone(),
            state.clone(),
            supervisor.clone(),
            options.settle,
            tasks.clone(),
            closing.clone(),
        )
        .await?;
        let agent = Agent {
            inner: Arc::new(Inner {
                data,
                state,
                supervisor,
                cron,
                central,
                options,
                changing: tokio::sync::Mutex::new(()),
                closing,
                tasks,
            }),
        };
        agent.recover().await?;
        agent.load_installed().await?;
        agent.inner.central.resume().await?;
        agent.start_backup_timer();
        Ok(agent)
    }

    pub fn data(&self) -> &DataDir {
        &self.inner.data
    }

    /// The central configurations of the apps (the center's `config.changed`, the programs'
    /// acknowledgements).
    pub fn central(&self) -> &CentralConfig {
        &self.inner.central
    }

    /// The state database, for the parts of the agent beside its domain (the link's command
    /// table).
    pub(crate) fn state(&self) -> &State {
        &self.inner.state
    }

    /// Ends the agent (see the module documentation): timers and followed logs end, a change
    /// in progress finishes or rolls back within [`Options::close_grace`], crontab runs end,
    /// and the programs are stopped or left running as `programs` says.
    pub async fn close(self, programs: Programs) {
        self.inner.closing.cancel();
        self.inner.tasks.close();
        if !self.inner.tasks.is_empty() {
            tracing::info!(
                tasks = self.inner.tasks.len(),
                "closing: waiting for the work in progress"
            );
        }
        let grace = self.inner.options.close_grace;
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = %humantime::format_duration(grace),
                "closing with a change still in progress; the next agent puts the app back"
            );
        }
        self.inner.cron.shutdown(CRON_GRACE).await;
        let supervisor = self.inner.supervisor.clone();
        match programs {
            Programs::Stop => supervisor.shutdown().await,
            Programs::KeepRunning => supervisor.detach().await,
        }
    }

    /// Runs `work` as a task of the agent's own: it goes on to its end when the caller goes
    /// away, and [`close`](Self::close) waits for it. Refused once the agent is closing.
    async fn run_to_end<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, AgentError>> + Send + 'static,
    ) -> Result<T, AgentError> {
        if self.inner.closing.is_cancelled() {
            return Err(AgentError::conflict(
                "the agent is shutting down; ask again once it is back",
            ));
        }
        self.inner
            .tasks
            .spawn(work)
            .await
            .map_err(failed("an install, rollback or restore"))?
    }

    /// Takes the backups that fall due until the agent closes.
    fn start_backup_timer(&self) {
        let agent = self.clone();
        let closing = self.inner.closing.clone();
        self.inner.tasks.spawn(async move {
            loop {
                agent.backups_due().await;
                tokio::select! {
                    () = closing.cancelled() => return,
                    () = tokio::time::sleep(BACKUP_CHECK) => {}
                }
            }
        });
    }

    /// The installed apps' names.
    pub fn installed(&self) -> Result<Vec<Name>, AgentError> {
        let apps = self.inner.data.root().join("apps");
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&apps).map_err(failed(format!(
            "listing the installed apps in {}",
            apps.display()
        )))?;
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str().and_then(|n| Name::new(n).ok()) {
                if self.inner.data.current(&name).symlink_metadata().is_ok() {
                    names.push(name);
                }
            }
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(names)
    }

    /// The manifest of `name`'s current version.
    pub fn manifest(&self, name: &Name) -> Result<Manifest, AgentError> {
        let current = self.inner.data.current(name);
        if current.symlink_metadata().is_err() {
            return Err(not_installed(name));
        }
        let path = current.join(shoal_pkg::manifest::MANIFEST_FILE);
        Manifest::load(&path).map_err(failed(format!("reading {name}'s manifest")))
    }

    /// Installs or upgrades from `archive`, whose sha256 must be `sha256`.
    pub async fn install(
        &self,
        archive: &Path,
        sha256: &Sha256,
    ) -> Result<InstallReport, AgentError> {
        let (agent, archive, sha256) = (self.clone(), archive.to_owned(), *sha256);
        self.run_to_end(async move {
            let called = archive.display().to_string();
            agent.install_staged(&archive, &sha256, &called).await
        })
        .await
    }

    /// Installs or upgrades from an archive uploaded as `body` (streamed into `incoming/`,
    /// never held whole in memory, at most [`Limits::max_size`] bytes), whose sha256 must be
    /// `sha256`. The upload goes when the install is over, whatever its outcome.
    pub async fn install_upload<S, E>(
        &self,
        body: S,
        sha256: &Sha256,
    ) -> Result<InstallReport, AgentError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<Cause>,
    {
        let upload = Upload::receive(&self.inner.data, body, self.inner.options.limits).await?;
        let (agent, sha256) = (self.clone(), *sha256);
        self.run_to_end(async move {
            agent
                .install_staged(&upload.path, &sha256, "the uploaded archive")
                .await
        })
        .await
    }

    /// Checks, unpacks and installs `archive`, called `called` in errors (an upload is "the
    /// uploaded archive", not the agent's temporary file).
    async fn install_staged(
        &self,
        archive: &Path,
        sha256: &Sha256,
        called: &str,
    ) -> Result<InstallReport, AgentError> {
        let _one = self.inner.changing.lock().await;
        let data = self.inner.data.clone();
        let (archive_path, expected, limits) =
            (archive.to_owned(), *sha256, self.inner.options.limits);
        let staged =
            blocking(move || Ok(versions::stage(&data, &archive_path, &expected, &limits))).await?;
        let (manifest, dir) = staged.map_err(|e| self.stage_error(e, archive, called))?;
        let name = manifest.package.name.clone();
        let previous = versions::current(&self.inner.data, &name)
            .map_err(failed(format!("reading {name}'s current version")))?;
        let result = self
            .change(&manifest, &dir, previous.as_ref(), Target::Fresh)
            .await;
        let version = &manifest.package.version;
        let current = versions::current(&self.inner.data, &name).ok().flatten();
        if result.is_err() && current.as_ref() != Some(version) {
            // The refused version goes, so that a fixed build of it can be installed (unless
            // switching back failed and it is still current: then it stays, as it runs).
            let _ = blocking(move || Ok(std::fs::remove_dir_all(&dir))).await;
        }
        result.map(|()| InstallReport {
            name: name.to_string(),
            version: version.to_string(),
            previous: previous.as_ref().map(ToString::to_string),
            outcome: match previous {
                None => InstallOutcome::Installed,
                Some(p) if p < *version => InstallOutcome::Upgraded,
                Some(_) => InstallOutcome::Downgraded,
            },
        })
    }

    /// Why staging `archive` (called `called`) failed, by kind: a full disk is the agent's
    /// failure, a bad archive the caller's, an installed version a conflict.
    fn stage_error(&self, e: versions::StageError, archive: &Path, called: &str) -> AgentError {
        use versions::StageError;
        match e {
            StageError::AlreadyInstalled { name, version } => {
                let current = Name::new(&name)
                    .ok()
                    .and_then(|n| versions::current(&self.inner.data, &n).ok().flatten());
                AgentError::conflict(match current {
                    Some(current) if current.to_string() != version => format!(
                        "{name} {version} is installed already (current: {current}); `shoal \
                         rollback {name} --to {version}` switches to it, or build the change \
                         with a new version (shoal.toml package.version)"
                    ),
                    _ => format!(
                        "{name} {version} is installed and current; build the change with a \
                         new version (shoal.toml package.version)"
                    ),
                })
            }
            // The agent's own disk failing (full, most often): said as such, naming the path.
            StageError::Read {
                archive: path,
                source,
            }
            | StageError::Archive(shoal_pkg::ArchiveError::Open {
                archive: path,
                source,
            })
            | StageError::Archive(shoal_pkg::ArchiveError::Write { path, source }) => {
                io_failure(&format!("installing {called}"), &path, source)
            }
            StageError::Archive(e) => AgentError::invalid(called_as(e, archive, called)),
        }
    }

    /// Switches `name` back to version `to`, or to the newest installed version older than
    /// the current one.
    pub async fn rollback(
        &self,
        name: &Name,
        to: Option<&Version>,
    ) -> Result<InstallReport, AgentError> {
        let (agent, name, to) = (self.clone(), name.clone(), to.cloned());
        self.run_to_end(async move { agent.roll_back(&name, to.as_ref()).await })
            .await
    }

    async fn roll_back(
        &self,
        name: &Name,
        to: Option<&Version>,
    ) -> Result<InstallReport, AgentError> {
        let _one = self.inner.changing.lock().await;
        let current = versions::current(&self.inner.data, name)
            .map_err(failed(format!("reading {name}'s current version")))?
            .ok_or_else(|| not_installed(name))?;
        let installed = versions::list(&self.inner.data, name)
            .map_err(failed(format!("listing {name}'s versions")))?;
        let target = match to {
            Some(v) if installed.contains(v) => v.clone(),
            Some(v) => {
                return Err(AgentError::not_found(format!(
                    "{name} {v} is not installed; installed: {}",
                    list_text(&installed)
                )))
            }
            None => installed
                .iter()
                .find(|v| **v < current)
                .cloned()
                .ok_or_else(|| {
                    AgentError::conflict(format!(
                        "{name} has no version older than {current} to roll back to; installed: {}",
                        list_text(&installed)
                    ))
                })?,
        };
        if target == current {
            return Err(AgentError::conflict(format!(
                "{name} {current} is already current"
            )));
        }
        let dir = self.inner.data.version(name, &target);
        let manifest = Manifest::load(&dir.join(shoal_pkg::manifest::MANIFEST_FILE))
            .map_err(failed(format!("reading {name} {target}'s manifest")))?;
        self.change(&manifest, &dir, Some(&current), Target::Installed)
            .await?;
        Ok(InstallReport {
            name: name.to_string(),
            version: target.to_string(),
            previous: Some(current.to_string()),
            outcome: InstallOutcome::RolledBack,
        })
    }

    /// Makes `manifest` (unpacked in `dir`, by this install or before: `target`) the current
    /// version of its app, `previous` being the current one; rolls back on any failure.
    async fn change(
        &self,
        manifest: &Manifest,
        dir: &Path,
        previous: Option<&Version>,
        target: Target,
    ) -> Result<(), AgentError> {
        let name = &manifest.package.name;
        let version = &manifest.package.version;
        let data = &self.inner.data;
        let old_manifest = match previous {
            Some(_) => Some(self.manifest(name)?),
            None => None,
        };
        if let Some(backup) = old_manifest.as_ref().and_then(|m| m.backup.as_ref()) {
            let (data, app, backup) = (data.clone(), name.clone(), backup.clone());
            blocking(move || {
                backup::create(&data, &app, &backup)
                    .map_err(failed(format!("backing up {app} before the upgrade")))
            })
            .await?;
        }
        // Written down before anything of the new version runs: an agent killed from here on
        // finds it and puts the old version back (removing a version this install unpacked).
        let row = (
            name.to_string(),
            previous.map(ToString::to_string),
            version.to_string(),
        );
        self.inner
            .state
            .call(move |c| {
                c.execute(
                    "INSERT OR REPLACE INTO upgrades
                     (app, from_version, to_version, fresh, started_at)
                     VALUES (?1, ?2, ?3, ?4, strftime('%s', 'now'))",
                    rusqlite::params![row.0, row.1, row.2, target == Target::Fresh],
                )
            })
            .await?;
        // Whether the old version was stopped or `current` moved: only then is there
        // anything to put back.
        let mut touched = false;
        let done = self
            .apply(manifest, dir, old_manifest.as_ref(), target, &mut touched)
            .await;
        let mut settled = true;
        let outcome = match done {
            Ok(()) => Ok(()),
            Err(why) if !touched => Err(AgentError::Change(Box::new(ChangeFailed {
                app: name.clone(),
                version: version.clone(),
                aftermath: Aftermath::NothingChanged,
                source: why,
            }))),
            Err(why) => {
                self.deactivate(manifest).await;
                let aftermath = match (previous, &old_manifest) {
                    (Some(old), Some(old_manifest)) => {
                        let old_dir = data.version(name, old);
                        match switch(data, name, old).await {
                            Ok(()) => {
                                match self.activate(old_manifest, &old_dir, Verify::Skip).await {
                                    Ok(()) => Aftermath::RolledBack {
                                        app: name.clone(),
                                        to: old.clone(),
                                    },
                                    Err(e) => Aftermath::RolledBackFailing {
                                        app: name.clone(),
                                        to: old.clone(),
                                        error: e.chain(),
                                    },
                                }
                            }
                            Err(e) => {
                                // Left written down: the next agent tries again.
                                settled = false;
                                Aftermath::StuckBetween {
                                    to: old.clone(),
                                    error: e.to_string(),
                                }
                            }
                        }
                    }
                    _ => {
                        let current = data.current(name);
                        let _ = blocking(move || Ok(std::fs::remove_file(current))).await;
                        Aftermath::Removed { app: name.clone() }
                    }
                };
                Err(AgentError::Change(Box::new(ChangeFailed {
                    app: name.clone(),
                    version: version.clone(),
                    aftermath,
                    source: why,
                })))
            }
        };
        if settled {
            let app = name.to_string();
            self.inner
                .state
                .call(move |c| c.execute("DELETE FROM upgrades WHERE app = ?1", [app]))
                .await?;
        }
        outcome?;
        // A version received before this one was installed is delivered the way its
        // manifest says now.
        self.inner.central.redeliver(name).await?;
        let keep = self.inner.options.keep_versions;
        let (data, app, version, previous) = (
            data.clone(),
            name.clone(),
            version.clone(),
            previous.cloned(),
        );
        // A version tree can be large: removed off the executor.
        let pruned = blocking(move || {
            let protect = [&version, previous.as_ref().unwrap_or(&version)];
            versions::prune(&data, &app, keep, &protect)
                .map_err(failed(format!("pruning {app}'s old versions")))
        })
        .await;
        if let Err(error) = pruned {
            tracing::warn!(app = %name, error = %error.chain(), "old versions not pruned");
        }
        Ok(())
    }

    /// The steps of [`change`](Self::change) that can be undone: the install hook (for a
    /// version this install unpacked; a rollback's target ran it before), stopping the old
    /// version, switching `current`, starting the new one. `touched` says whether anything
    /// needs putting back.
    async fn apply(
        &self,
        manifest: &Manifest,
        dir: &Path,
        old_manifest: Option<&Manifest>,
        target: Target,
        touched: &mut bool,
    ) -> Result<(), AgentError> {
        let name = &manifest.package.name;
        let version = &manifest.package.version;
        if let (Target::Fresh, Some(hook)) = (target, &manifest.hooks.install) {
            self.hook(manifest, dir, Hook::Install, hook).await?;
        }
        *touched = true;
        if let Some(old) = old_manifest {
            self.deactivate(old).await;
        }
        switch(&self.inner.data, name, version)
            .await
            .map_err(failed(format!("switching {name} to {version}")))?;
        self.activate(manifest, dir, Verify::Run).await
    }

    /// Runs `which` hook of `manifest` in `dir`. Its environment names it (`SHOAL_HOOK`,
    /// beside `SHOAL_APP` and `SHOAL_DATA_DIR`), and so does every process it starts: an agent
    /// killed meanwhile finds them by that when it comes back and stops them
    /// ([`hooks::kill_left_over`]), however soon after the start it died.
    async fn hook(
        &self,
        manifest: &Manifest,
        dir: &Path,
        which: Hook,
        hook: &shoal_pkg::manifest::Command,
    ) -> Result<(), AgentError> {
        let name = &manifest.package.name;
        let what = format!(
            "the {} hook of {name} {}",
            which.as_str(),
            manifest.package.version
        );
        let mut env = self.env(manifest, dir);
        env.insert(hooks::HOOK_VAR.into(), which.as_str().into());
        let log = self.inner.data.logs(name).join("hooks.log");
        let timeout = self.inner.options.hook_timeout;
        Ok(hooks::run(&what, hook, dir, &env, timeout, &log).await?)
    }

    /// Starts `manifest`'s programs (or schedules its jobs), waits until healthy and stable,
    /// and runs its verify hook if `verify` says so.
    async fn activate(
        &self,
        manifest: &Manifest,
        dir: &Path,
        verify: Verify,
    ) -> Result<(), AgentError> {
        let name = &manifest.package.name;
        match manifest.package.kind {
            Kind::Service => {
                let spec = self.spec(manifest, dir)?;
                let supervisor = &self.inner.supervisor;
                supervisor
                    .add(spec)
                    .await
                    .map_err(failed(format!("registering {name}")))?;
                supervisor.start(name).await?;
                // A slow starter's own grace and checks count, not only the agent's limit.
                let checks = manifest
                    .health
                    .as_ref()
                    .map_or(Duration::ZERO, |h| h.grace + h.interval * h.failures);
                let timeout = self.inner.options.health_timeout.max(checks);
                supervisor.wait_healthy(name, timeout).await?;
                self.wait_stable(name).await?;
            }
            Kind::Crontab => {
                self.inner
                    .cron
                    .add(name.clone(), dir.to_owned(), manifest.cron.clone())
                    .map_err(failed(format!("scheduling {name}'s jobs")))?;
            }
        }
        if let (Verify::Run, Some(hook)) = (verify, &manifest.hooks.verify) {
            self.hook(manifest, dir, Hook::Verify, hook).await?;
        }
        Ok(())
    }

    /// Healthy is not enough: the program must still run the same process, not restarted,
    /// and healthy, [`Options::settle`] later (a program that crashes a second after it
    /// starts would otherwise pass an upgrade it fails).
    async fn wait_stable(&self, name: &Name) -> Result<(), AgentError> {
        // The published status, without the `/proc` figures: nothing here blocks.
        let look = |supervisor: &Supervisor| {
            supervisor
                .snapshot(name)
                .map(|p| (p.pid, p.restarts, p.is_healthy(), p.last_exit, p.error))
        };
        let supervisor = &self.inner.supervisor;
        let before = look(supervisor);
        tokio::time::sleep(self.inner.options.settle).await;
        let after = look(supervisor);
        match (before, after) {
            (Some((pid, restarts, true, _, _)), Some((now, again, true, _, _)))
                if pid == now && restarts == again =>
            {
                Ok(())
            }
            (_, Some((_, _, _, exit, error))) => Err(AgentError::Failed {
                doing: format!(
                    "it did not stay up for {} after it started",
                    humantime::format_duration(self.inner.options.settle)
                ),
                source: exit
                    .map(|e| e.to_string())
                    .or(error)
                    .unwrap_or_else(|| "its health check failed".into())
                    .into(),
            }),
            (_, None) => Err(AgentError::Failed {
                doing: format!("waiting for {name} to stay up"),
                source: format!("{name} is no longer supervised").into(),
            }),
        }
    }

    /// Stops `manifest`'s programs or jobs; failures are logged (the caller goes on).
    async fn deactivate(&self, manifest: &Manifest) {
        let name = &manifest.package.name;
        match manifest.package.kind {
            Kind::Service => {
                if let Err(e) = self.inner.supervisor.remove(name).await {
                    tracing::warn!(app = %name, error = %e, "stopping the old version");
                }
            }
            Kind::Crontab => {
                self.inner.cron.remove(name);
            }
        }
    }

    fn spec(&self, manifest: &Manifest, dir: &Path) -> Result<ProgramSpec, AgentError> {
        ProgramSpec::from_manifest(manifest, dir).ok_or_else(|| {
            AgentError::invalid(format!("{} has no [run] program", manifest.package.name))
        })
    }

    /// What a hook finds in its environment, as a program does (see [`crate::supervise`]).
    fn env(&self, manifest: &Manifest, dir: &Path) -> BTreeMap<String, String> {
        let name = &manifest.package.name;
        BTreeMap::from([
            ("SHOAL_APP".into(), name.to_string()),
            ("SHOAL_VERSION".into(), manifest.package.version.to_string()),
            ("SHOAL_APP_DIR".into(), dir.display().to_string()),
            (
                "SHOAL_APP_DATA".into(),
                self.inner.data.data(name).display().to_string(),
            ),
            (
                "SHOAL_DATA_DIR".into(),
                self.inner.data.root().display().to_string(),
            ),
        ])
        .into_iter()
        .chain(
            self.inner
                .data
                .program_env(name)
                .map(|(k, v)| (k.to_owned(), v)),
        )
        .collect()
    }

    /// Finishes what an agent killed in an upgrade left: the hook it was running is stopped,
    /// and an app whose upgrade was written down is put back on the version it came from. An
    /// app that cannot be put back is logged and left for the next start; the others go on.
    async fn recover(&self) -> Result<(), AgentError> {
        let pending: Vec<Interrupted> = self
            .inner
            .state
            .call(|c| {
                let mut stmt =
                    c.prepare("SELECT app, from_version, to_version, fresh FROM upgrades")?;
                let rows = stmt.query_map([], |r| {
                    Ok(Interrupted {
                        app: r.get(0)?,
                        from: r.get(1)?,
                        to: r.get(2)?,
                        fresh: r.get(3)?,
                    })
                })?;
                rows.collect()
            })
            .await?;
        for upgrade in pending {
            let Ok(name) = Name::new(&upgrade.app) else {
                continue;
            };
            let Interrupted { app, from, to, .. } = &upgrade;
            tracing::warn!(
                app,
                from,
                to,
                "an upgrade was interrupted; going back to where it came from"
            );
            // The hook the killed agent was running, if it still is, and what it started.
            let (root, hook_app) = (self.inner.data.root().to_owned(), app.clone());
            blocking(move || Ok(hooks::kill_left_over(&root, &hook_app))).await?;
            if let Ok(manifest) = self.manifest(&name) {
                self.deactivate(&manifest).await;
            }
            let back = match from.as_deref().map(str::parse::<Version>) {
                Some(Ok(from)) => switch(&self.inner.data, &name, &from).await,
                Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
                None => {
                    let current = self.inner.data.current(&name);
                    blocking(move || match std::fs::remove_file(current) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Ok(Err(e)),
                        _ => Ok(Ok(())),
                    })
                    .await?
                }
            };
            if let Err(e) = back {
                tracing::error!(app, from, error = %e, "cannot put the app back; will try again at the next start");
                continue;
            }
            // A version this install unpacked goes; a rollback's target was installed before
            // and stays.
            if let (true, Ok(to)) = (upgrade.fresh, to.parse::<Version>()) {
                let dir = self.inner.data.version(&name, &to);
                blocking(move || Ok(std::fs::remove_dir_all(dir)))
                    .await?
                    .ok();
            }
            let app = app.clone();
            self.inner
                .state
                .call(move |c| c.execute("DELETE FROM upgrades WHERE app = ?1", [app]))
                .await?;
        }
        // Uploads an earlier agent was installing from.
        let incoming = self.inner.data.incoming();
        blocking(move || Ok(std::fs::remove_dir_all(incoming)))
            .await?
            .ok();
        Ok(())
    }

    /// Registers every installed app with the supervisor or the scheduler. The supervisor
    /// remembers its programs (and whether each should run) and has adopted or started them
    /// already; a service it does not know (put back by [`recover`](Self::recover)) is added
    /// and started.
    async fn load_installed(&self) -> Result<(), AgentError> {
        let known: Vec<Name> = self
            .inner
            .supervisor
            .snapshots()
            .into_iter()
            .map(|p| p.name)
            .collect();
        // Every manifest read and parsed in one hand-off, off the executor.
        let agent = self.clone();
        let installed = blocking(move || {
            let loaded = agent.installed()?.into_iter().map(|name| {
                let manifest = agent.manifest(&name);
                let dir = agent.current_dir(&name);
                (name, manifest, dir)
            });
            Ok(loaded.collect::<Vec<_>>())
        })
        .await?;
        for (name, manifest, dir) in installed {
            let manifest = match manifest {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(app = %name, error = %e.chain(), "cannot load an installed app");
                    continue;
                }
            };
            let dir = dir?;
            match manifest.package.kind {
                Kind::Service => {
                    let supervisor = &self.inner.supervisor;
                    supervisor
                        .add(self.spec(&manifest, &dir)?)
                        .await
                        .map_err(failed(format!("registering {name}")))?;
                    if !known.contains(&name) {
                        if let Err(e) = supervisor.start(&name).await {
                            tracing::error!(app = %name, error = %e, "starting an installed app");
                        }
                    }
                }
                Kind::Crontab => {
                    self.inner
                        .cron
                        .add(name.clone(), dir, manifest.cron.clone())
                        .map_err(failed(format!("scheduling {name}'s jobs")))?;
                }
            }
        }
        Ok(())
    }

    /// Takes each backup that is due.
    async fn backups_due(&self) {
        let Ok(names) = self.installed() else { return };
        for name in names {
            let Some(spec) = self.manifest(&name).ok().and_then(|m| m.backup) else {
                continue;
            };
            let data = self.inner.data.clone();
            let app = name.clone();
            let taken = blocking(move || {
                backup::create_if_due(&data, &app, &spec, chrono::Utc::now())
                    .map_err(failed("taking a scheduled backup"))
            })
            .await;
            match taken {
                Ok(Some(created)) => {
                    tracing::info!(app = %name, backup = %created.backup.id, "backup taken");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(app = %name, error = %e.chain(), "scheduled backup failed")
                }
            }
        }
    }

    /// Restores backup `id` of `name`: a service is stopped first and started again after
    /// (also when the restore fails, which changes nothing). Runs to its end when the caller
    /// goes away.
    pub async fn restore(&self, name: &Name, id: &str) -> Result<(), AgentError> {
        let (agent, name, id) = (self.clone(), name.clone(), id.to_owned());
        self.run_to_end(async move { agent.restore_now(&name, &id).await })
            .await
    }

    async fn restore_now(&self, name: &Name, id: &str) -> Result<(), AgentError> {
        let _one = self.inner.changing.lock().await;
        let manifest = self.manifest(name)?;
        let Some(spec) = manifest.backup.clone() else {
            return Err(AgentError::invalid(format!(
                "{name} has no [backup] in its manifest: a restore writes only its [backup] paths"
            )));
        };
        let was_running = manifest.package.kind == Kind::Service
            && self
                .inner
                .supervisor
                .snapshot(name)
                .is_some_and(|p| !p.state.is_at_rest());
        let supervisor = &self.inner.supervisor;
        if was_running {
            supervisor
                .stop(name)
                .await
                .map_err(failed(format!("stopping {name} for the restore")))?;
        }
        let (data, app, backup_id) = (self.inner.data.clone(), name.clone(), id.to_owned());
        let limits = self.inner.options.limits;
        let restored =
            blocking(move || Ok(backup::restore(&data, &app, &spec, &backup_id, &limits))).await?;
        if was_running {
            supervisor
                .start(name)
                .await
                .map_err(failed(format!("starting {name} after the restore")))?;
        }
        restored.map_err(|e| match e {
            backup::BackupError::NotFound { .. } => AgentError::not_found(e),
            other => AgentError::Failed {
                doing: format!("restoring {name} from {id}"),
                source: other.into(),
            },
        })
    }

    /// Every installed app as `shoal ps` shows it (reads `/proc` off the executor); endpoints
    /// only with [`Options::advertise`].
    pub async fn apps(&self) -> Result<Vec<AppStatus>, AgentError> {
        self.apps_from(None).await
    }

    /// As [`apps`](Self::apps), with the endpoints at [`Options::advertise`], else at `link`
    /// (the local address of the agent's link to its center).
    pub async fn apps_from(
        &self,
        link: Option<std::net::IpAddr>,
    ) -> Result<Vec<AppStatus>, AgentError> {
        let agent = self.clone();
        let host = match &self.inner.options.advertise {
            Some(host) => Some(host.clone()),
            None => link.map(|ip| ip.to_string()),
        };
        blocking(move || agent.apps_now(host.as_deref())).await
    }

    /// Changes whenever a service becomes healthy or stops being healthy, and so whenever
    /// the endpoints [`apps_from`](Self::apps_from) reports change.
    pub fn serving(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.supervisor.serving()
    }

    fn apps_now(&self, host: Option<&str>) -> Result<Vec<AppStatus>, AgentError> {
        let mut programs: std::collections::HashMap<Name, _> = self
            .inner
            .supervisor
            .status()
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let now = chrono::Utc::now();
        let mut apps = Vec::new();
        for name in self.installed()? {
            let Ok(manifest) = self.manifest(&name) else {
                continue;
            };
            let program = programs.remove(&name);
            apps.push(to_api::app_status(&manifest, program.as_ref(), now, host));
        }
        Ok(apps)
    }

    /// `name`'s installed versions, newest first, and which is current.
    pub async fn versions(&self, name: &Name) -> Result<Vec<VersionInfo>, AgentError> {
        self.manifest(name)?;
        let data = &self.inner.data;
        let current = versions::current(data, name)
            .map_err(failed(format!("reading {name}'s current version")))?;
        let list =
            versions::list(data, name).map_err(failed(format!("listing {name}'s versions")))?;
        Ok(list
            .into_iter()
            .map(|v| VersionInfo {
                current: Some(&v) == current.as_ref(),
                version: v.to_string(),
            })
            .collect())
    }

    /// `name`'s backups, newest first.
    pub async fn backups(&self, name: &Name) -> Result<Vec<BackupInfo>, AgentError> {
        self.manifest(name)?;
        let (data, app) = (self.inner.data.clone(), name.clone());
        let list = blocking(move || {
            backup::list(&data, &app).map_err(failed(format!("listing {app}'s backups")))
        })
        .await?;
        Ok(list.iter().map(to_api::backup_info).collect())
    }

    /// Backs up `name`'s `[backup] paths` now.
    pub async fn backup_now(&self, name: &Name) -> Result<BackupCreated, AgentError> {
        let manifest = self.manifest(name)?;
        let Some(spec) = manifest.backup else {
            return Err(AgentError::invalid(format!(
                "{name} has no [backup] in its shoal.toml: nothing says what to back up"
            )));
        };
        let (data, app) = (self.inner.data.clone(), name.clone());
        let created = blocking(move || {
            backup::create(&data, &app, &spec).map_err(failed(format!("backing up {app}")))
        })
        .await?;
        Ok(to_api::backup_created(&created))
    }

    /// Every crontab job, with its next and last run.
    pub async fn cron_jobs(&self) -> Result<Vec<JobStatus>, AgentError> {
        let cron = self.inner.cron.clone();
        let jobs = blocking(move || cron.list().map_err(cron_error)).await?;
        Ok(jobs.iter().map(to_api::job_status).collect())
    }

    /// The newest `limit` runs of `app`'s jobs, or of its job `job`, newest first.
    pub async fn cron_history(
        &self,
        app: &Name,
        job: Option<&Name>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, AgentError> {
        let (cron, app, job) = (self.inner.cron.clone(), app.clone(), job.cloned());
        let runs =
            blocking(move || cron.history(&app, job.as_ref(), limit).map_err(cron_error)).await?;
        Ok(runs.iter().map(to_api::run_record).collect())
    }

    /// Runs `job` of `app` now (overlap rules hold) and answers when it has ended (its
    /// timeout bounds the wait).
    pub async fn cron_run(&self, app: &Name, job: &Name) -> Result<RunRecord, AgentError> {
        let cron = &self.inner.cron;
        let id = cron.run_now(app, job).await.map_err(cron_error)?;
        let record = cron.wait(id).await.map_err(cron_error)?;
        Ok(to_api::run_record(&record))
    }

    /// `name`'s captured output as `query` asks; a followed answer ends when the agent
    /// closes.
    pub async fn logs(&self, name: &Name, query: &LogQuery) -> Result<Logs, AgentError> {
        self.manifest(name)?;
        let query = logs::Query::parse(query, chrono::Utc::now())?;
        let closing = self.inner.closing.child_token();
        logs::read(self.inner.data.logs(name), query, closing).await
    }

    /// `apps/NAME/current` resolved to its version directory.
    pub fn current_dir(&self, name: &Name) -> Result<PathBuf, AgentError> {
        let version = versions::current(&self.inner.data, name)
            .map_err(failed(format!("reading {name}'s current version")))?
            .ok_or_else(|| not_installed(name))?;
        Ok(self.inner.data.version(name, &version))
    }

    /// Does `action` to service `name`; the supervisor remembers across agent restarts
    /// whether it should run. Waits for an install, rollback or restore of it to end first.
    pub async fn act(&self, name: &Name, action: AppAction) -> Result<(), AgentError> {
        let _one = self.inner.changing.lock().await;
        let manifest = self.manifest(name)?;
        if manifest.package.kind != Kind::Service {
            return Err(AgentError::invalid(format!(
                "{name} is a crontab package, with no process to {action}: its jobs run on their \
                 schedule (`shoal cron run {name} JOB` runs one now)"
            )));
        }
        let supervisor = &self.inner.supervisor;
        match action {
            AppAction::Start => supervisor.start(name).await,
            AppAction::Stop => supervisor.stop(name).await,
            AppAction::Restart => supervisor.restart(name).await,
            AppAction::Reload => {
                supervisor
                    .signal(name, crate::supervise::Signal::SIGHUP)
                    .await
            }
        }
        .map_err(AgentError::from)
    }
}

/// The version a change switches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Unpacked by this install: its install hook runs, and it goes if it does not stay.
    Fresh,
    /// Installed before (a rollback's): its install hook ran then, and it stays.
    Installed,
}

/// Whether a started version's verify hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// A new version: it must pass.
    Run,
    /// The old version put back after a failure: getting it running is all there is to do.
    Skip,
}

/// `e` with `archive` called `called` (an upload is "the uploaded archive", not the agent's
/// temporary file).
fn called_as(e: shoal_pkg::ArchiveError, archive: &Path, called: &str) -> shoal_pkg::ArchiveError {
    use shoal_pkg::ArchiveError as E;
    let rename = |path: PathBuf| {
        if path == archive {
            PathBuf::from(called)
        } else {
            path
        }
    };
    match e {
        E::Checksum {
            archive,
            expected,
            actual,
        } => E::Checksum {
            archive: rename(archive),
            expected,
            actual,
        },
        E::Changed { archive, actual } => E::Changed {
            archive: rename(archive),
            actual,
        },
        E::Read { archive, source } => E::Read {
            archive: rename(archive),
            source,
        },
        E::Rejected {
            archive,
            path,
            rule,
        } => E::Rejected {
            archive: rename(archive),
            path,
            rule,
        },
        E::NoManifest { archive } => E::NoManifest {
            archive: rename(archive),
        },
        E::Manifest { archive, source } => E::Manifest {
            archive: rename(archive),
            source,
        },
        other => other,
    }
}

/// Which hook of a package runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// `hooks.install`, in a freshly unpacked version before it is switched to.
    Install,
    /// `hooks.verify`, once the new version is healthy.
    Verify,
}

impl Hook {
    fn as_str(self) -> &'static str {
        match self {
            Hook::Install => "install",
            Hook::Verify => "verify",
        }
    }
}

/// A row of the `upgrades` table: an upgrade an agent did not finish.
struct Interrupted {
    app: String,
    from: Option<String>,
    to: String,
    fresh: bool,
}

/// An upload being received or installed, in `incoming/`; removed when dropped.
struct Upload {
    path: PathBuf,
}

impl Upload {
    /// Streams `body` into a new file of `incoming/`, refusing more than `limits.max_size`
    /// bytes; a full disk is said as such, naming the file.
    async fn receive<S, E>(
        data: &DataDir,
        mut body: S,
        limits: Limits,
    ) -> Result<Upload, AgentError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<Cause>,
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::AsyncWriteExt as _;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let incoming = data.incoming();
        let saving = "receiving the uploaded archive";
        tokio::fs::create_dir_all(&incoming)
            .await
            .map_err(|e| io_failure(saving, &incoming, e))?;
        let upload = Upload {
            path: incoming.join(format!(
                "upload-{}-{}.tar.gz",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )),
        };
        let path = upload.path.clone();
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_failure(saving, &path, e))?;
        let mut written: u64 = 0;
        // A write that fails (a full disk) stops the writing, not the reading: the rest of
        // the body, within the size limit, is read and dropped so the client, still sending,
        // gets the answer instead of a connection reset under its upload.
        let mut failed = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| AgentError::invalid(ReadingUpload(e.into())))?;
            written += chunk.len() as u64;
            if written > limits.max_size {
                return Err(failed.unwrap_or_else(|| {
                    AgentError::invalid(format!(
                        "the archive is larger than the {} a package may have",
                        shoal_pkg::format_size(limits.max_size)
                    ))
                }));
            }
            if failed.is_none() {
                if let Err(e) = file.write_all(&chunk).await {
                    failed = Some(io_failure(saving, &path, e));
                }
            }
        }
        if let Some(failure) = failed {
            return Err(failure);
        }
        // A write's error can surface only at the next call on the file: flushed and
        // synced, every byte is on disk or the error is here.
        file.flush()
            .await
            .map_err(|e| io_failure(saving, &path, e))?;
        file.sync_all()
            .await
            .map_err(|e| io_failure(saving, &path, e))?;
        let on_disk = file
            .metadata()
            .await
            .map_err(|e| io_failure(saving, &path, e))?
            .len();
        if on_disk != written {
            return Err(AgentError::Failed {
                doing: saving.into(),
                source: format!(
                    "{}: {on_disk} bytes written of the {written} received",
                    path.display()
                )
                .into(),
            });
        }
        Ok(upload)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The client's upload could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the upload")]
struct ReadingUpload(#[source] Cause);

/// No space left on the filesystem that holds `path`.
#[derive(Debug, thiserror::Error)]
#[error(
    "the disk is full: no space left on the filesystem of {}; free some there (old \
     backups, versions or logs) and try again",
    path.display()
)]
pub struct DiskFull {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl DiskFull {
    /// `error` as a [`DiskFull`] at `path`, when that is what it says.
    pub fn from_io(path: &Path, error: std::io::Error) -> Result<DiskFull, std::io::Error> {
        if error.kind() == std::io::ErrorKind::StorageFull
            || error.kind() == std::io::ErrorKind::QuotaExceeded
        {
            Ok(DiskFull {
                path: path.to_owned(),
                source: error,
            })
        } else {
            Err(error)
        }
    }
}

/// `error` at `path` while `doing`: a full disk said as such, anything else naming the path.
fn io_failure(doing: &str, path: &Path, error: std::io::Error) -> AgentError {
    let source: Cause = match DiskFull::from_io(path, error) {
        Ok(full) => Box::new(full),
        Err(other) => Box::new(PathError {
            path: path.to_owned(),
            source: other,
        }),
    };
    AgentError::Failed {
        doing: doing.into(),
        source,
    }
}

/// An IO error at a path.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
struct PathError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// A crontab error by kind.
fn cron_error(e: CronError) -> AgentError {
    match e {
        CronError::UnknownApp { .. }
        | CronError::UnknownJob { .. }
        | CronError::UnknownRun { .. } => AgentError::not_found(e),
        CronError::AlreadyRunning { .. } | CronError::ShuttingDown => AgentError::conflict(e),
        CronError::State(e) => AgentError::State(e),
        other => AgentError::Failed {
            doing: "running a crontab job".into(),
            source: other.into(),
        },
    }
}

fn not_installed(name: &Name) -> AgentError {
    AgentError::not_found(format!(
        "no app named {name} is installed; `shoal ps` lists them"
    ))
}

/// Runs `work` on a blocking thread: SQLite statements, version trees, `/proc` reads, never
/// on an async worker.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(failed("a blocking task of the agent"))?
}

/// [`versions::switch`] (a rename and an fsync) off the executor.
async fn switch(data: &DataDir, name: &Name, version: &Version) -> std::io::Result<()> {
    let (data, name, version) = (data.clone(), name.clone(), version.clone());
    match tokio::task::spawn_blocking(move || versions::switch(&data, &name, &version)).await {
        Ok(switched) => switched,
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// Adds the `upgrades` columns a database made by an earlier agent lacks.
fn migrate(state: &State) -> Result<(), StateError> {
    let columns: Vec<String> = state.with(|c| {
        let mut stmt = c.prepare("SELECT name FROM pragma_table_info('upgrades')")?;
        let names = stmt.query_map([], |r| r.get(0))?;
        names.collect()
    })?;
    for (column, definition) in [("fresh", "fresh INTEGER NOT NULL DEFAULT 1")] {
        if !columns.iter().any(|c| c == column) {
            state.with(|c| {
                c.execute(&format!("ALTER TABLE upgrades ADD COLUMN {definition}"), [])
            })?;
        }
    }
    Ok(())
}

fn list_text(versions: &[Version]) -> String {
    versions
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
