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
//!    the new version, the hook running now);
//! 4. `hooks.install` runs in the new version directory (not for a rollback, whose target
//!    ran it when it was installed), the old version is stopped, `current` switched (an
//!    atomic rename), the new one started; the agent waits until it is healthy (its
//!    `[health]` checks, or running; at least its own grace and checks) and still so, the
//!    same process, [`Options::settle`] later, then runs `hooks.verify`;
//! 5. any failure from 4 on rolls back: the new version is stopped and removed, `current`
//!    points to the old again, the old is started, and the error says why and what runs now.
//!
//! Install, rollback and restore run to their end even when the client that asked goes
//! away. An agent killed in the middle comes back to a consistent state: it kills the hook
//! that was running (recorded by pid and start time) and puts the written-down app back on
//! its old version, removing a version that install had unpacked. Never neither, never a
//! half-prepared directory left installed. Old versions beyond `keep_versions` are pruned,
//! never the current or the previous.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_pkg::manifest::{Kind, Manifest, ManifestExt, Name, Version};
use shoal_pkg::{Limits, Sha256};
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppStatus, Bound, Token};
use crate::cron::{Cron, CronOptions};
use crate::supervise::{ProgramSpec, ProgramStatus, Supervisor};
use crate::{backup, hooks, versions, DataDir, State, StateError};

/// How often the agent looks for backups that fall due (each app's `[backup] every`, counted
/// from its newest backup on disk, so a restarted agent takes no extra one).
const BACKUP_CHECK: Duration = Duration::from_secs(60);

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// A loopback address for the API besides the Unix socket.
    pub listen: Option<SocketAddr>,
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
}

impl Default for Options {
    fn default() -> Options {
        Options {
            listen: None,
            keep_versions: 5,
            health_timeout: Duration::from_secs(60),
            hook_timeout: Duration::from_secs(600),
            settle: Duration::from_secs(2),
            limits: Limits::default(),
        }
    }
}

/// What went wrong, said for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    State(#[from] StateError),
}

impl AgentError {
    fn failed(what: impl std::fmt::Display) -> AgentError {
        AgentError::Failed(what.to_string())
    }
}

/// The result of an install, upgrade or rollback.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InstallReport {
    pub name: String,
    /// The version now current.
    pub version: String,
    /// The version that was current before, if any.
    pub previous: Option<String>,
    /// `installed`, `upgraded`, `downgraded` or `rolled back`.
    pub outcome: String,
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
    options: Options,
    token: Token,
    /// One install or rollback at a time.
    changing: tokio::sync::Mutex<()>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS upgrades (
    app TEXT PRIMARY KEY,
    from_version TEXT,
    to_version TEXT NOT NULL,
    -- 1 when to_version was unpacked by this install (and goes if it does not stay), 0 for a
    -- rollback to a version installed before.
    fresh INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    -- The hook running now, if any: its process group and start time (clock ticks).
    hook_pid INTEGER,
    hook_start INTEGER
);
";

impl Agent {
    /// Opens the agent of data directory `root`: the state, the token, the programs still
    /// running from an earlier agent (adopted, not restarted), an upgrade that an earlier
    /// agent left half done (rolled back), and every installed app as it was meant to be.
    pub async fn open(root: &Path, options: Options) -> Result<Agent, AgentError> {
        let data = DataDir::create(root)
            .map_err(|e| AgentError::failed(format!("{}: {e}", root.display())))?;
        let state = State::open(&data.database())?;
        state.ensure(SCHEMA)?;
        migrate(&state)?;
        let token = Token::load_or_create(&data.token()).map_err(AgentError::failed)?;
        let supervisor = Supervisor::open(data.clone(), state.clone())
            .await
            .map_err(AgentError::failed)?;
        let cron = Cron::open(data.clone(), state.clone(), CronOptions::default())
            .await
            .map_err(AgentError::failed)?;
        let agent = Agent {
            inner: Arc::new(Inner {
                data,
                state,
                supervisor,
                cron,
                options,
                token,
                changing: tokio::sync::Mutex::new(()),
            }),
        };
        agent.recover().await?;
        agent.load_installed().await?;
        Ok(agent)
    }

    pub fn data(&self) -> &DataDir {
        &self.inner.data
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.inner.supervisor
    }

    pub fn cron(&self) -> &Cron {
        &self.inner.cron
    }

    /// Serves the API, and takes the backups that fall due, until `shutdown` fires (see
    /// [`api`]).
    pub async fn serve(&self, shutdown: CancellationToken) -> std::io::Result<Bound> {
        let agent = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                agent.backups_due().await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(BACKUP_CHECK) => {}
                }
            }
        });
        api::serve(
            api::routes(self.clone()),
            self.inner.token.clone(),
            &self.inner.data.socket(),
            self.inner.options.listen,
            shutdown,
        )
        .await
    }

    /// Ends the agent: with `stop_services`, every program is stopped first; without, they
    /// keep running for the next agent to adopt.
    pub async fn close(self, stop_services: bool) {
        self.inner.cron.shutdown(Duration::from_secs(10)).await;
        if stop_services {
            self.inner.supervisor.clone().shutdown().await;
        } else {
            self.inner.supervisor.clone().detach().await;
        }
    }

    /// The installed apps' names.
    pub fn installed(&self) -> Result<Vec<Name>, AgentError> {
        let mut names = Vec::new();
        let apps =
            std::fs::read_dir(self.inner.data.root().join("apps")).map_err(AgentError::failed)?;
        for entry in apps.flatten() {
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
        let path = self
            .inner
            .data
            .current(name)
            .join(shoal_pkg::manifest::MANIFEST_FILE);
        if self.inner.data.current(name).symlink_metadata().is_err() {
            return Err(AgentError::NotFound(format!(
                "no app named {name} is installed; `shoal ps` lists them"
            )));
        }
        Manifest::load(&path).map_err(AgentError::failed)
    }

    /// Installs or upgrades from `archive`, whose sha256 must be `sha256`.
    pub async fn install(
        &self,
        archive: &Path,
        sha256: &Sha256,
    ) -> Result<InstallReport, AgentError> {
        self.install_as(archive, sha256, &archive.display().to_string())
            .await
    }

    /// As [`install`](Self::install), with the archive called `called` in errors (an upload
    /// is "the uploaded archive", not the agent's temporary file).
    pub async fn install_as(
        &self,
        archive: &Path,
        sha256: &Sha256,
        called: &str,
    ) -> Result<InstallReport, AgentError> {
        let _one = self.inner.changing.lock().await;
        let data = self.inner.data.clone();
        let (archive_path, expected, limits) =
            (archive.to_owned(), *sha256, self.inner.options.limits);
        let (manifest, dir) = tokio::task::spawn_blocking(move || {
            versions::stage(&data, &archive_path, &expected, &limits)
        })
        .await
        .map_err(AgentError::failed)?
        .map_err(|e| match e {
            versions::StageError::AlreadyInstalled { name, version } => {
                let current = Name::new(&name)
                    .ok()
                    .and_then(|n| versions::current(&self.inner.data, &n).ok().flatten());
                AgentError::Conflict(match current {
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
            other => AgentError::Invalid(
                other
                    .to_string()
                    .replace(&archive.display().to_string(), called),
            ),
        })?;
        let name = manifest.package.name.clone();
        let previous = versions::current(&self.inner.data, &name).map_err(AgentError::failed)?;
        let result = self.change(&manifest, &dir, previous.as_ref(), true).await;
        let version = &manifest.package.version;
        let current = versions::current(&self.inner.data, &name).ok().flatten();
        if result.is_err() && current.as_ref() != Some(version) {
            // The refused version goes, so that a fixed build of it can be installed (unless
            // switching back failed and it is still current: then it stays, as it runs).
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    /// Switches `name` back to version `to`, or to the newest installed version older than
    /// the current one.
    pub async fn rollback(
        &self,
        name: &Name,
        to: Option<&Version>,
    ) -> Result<InstallReport, AgentError> {
        let _one = self.inner.changing.lock().await;
        let current = versions::current(&self.inner.data, name)
            .map_err(AgentError::failed)?
            .ok_or_else(|| {
                AgentError::NotFound(format!(
                    "no app named {name} is installed; `shoal ps` lists them"
                ))
            })?;
        let installed = versions::list(&self.inner.data, name).map_err(AgentError::failed)?;
        let target = match to {
            Some(v) if installed.contains(v) => v.clone(),
            Some(v) => {
                return Err(AgentError::NotFound(format!(
                    "{name} {v} is not installed; installed: {}",
                    list_text(&installed)
                )))
            }
            None => installed
                .iter()
                .find(|v| **v < current)
                .cloned()
                .ok_or_else(|| {
                    AgentError::Conflict(format!(
                        "{name} has no version older than {current} to roll back to; installed: {}",
                        list_text(&installed)
                    ))
                })?,
        };
        if target == current {
            return Err(AgentError::Conflict(format!(
                "{name} {current} is already current"
            )));
        }
        let dir = self.inner.data.version(name, &target);
        let manifest = Manifest::load(&dir.join(shoal_pkg::manifest::MANIFEST_FILE))
            .map_err(AgentError::failed)?;
        let mut report = self.change(&manifest, &dir, Some(&current), false).await?;
        report.outcome = "rolled back".into();
        Ok(report)
    }

    /// Makes `manifest` (unpacked in `dir`; `fresh` when this install unpacked it) the current
    /// version of its app, `previous` being the current one; rolls back on any failure.
    async fn change(
        &self,
        manifest: &Manifest,
        dir: &Path,
        previous: Option<&Version>,
        fresh: bool,
    ) -> Result<InstallReport, AgentError> {
        let name = &manifest.package.name;
        let version = &manifest.package.version;
        let data = &self.inner.data;
        let old_manifest = match previous {
            Some(_) => Some(self.manifest(name)?),
            None => None,
        };
        if let Some(backup) = old_manifest.as_ref().and_then(|m| m.backup.as_ref()) {
            let (data, app, backup) = (data.clone(), name.clone(), backup.clone());
            tokio::task::spawn_blocking(move || backup::create(&data, &app, &backup))
                .await
                .map_err(AgentError::failed)?
                .map_err(|e| {
                    AgentError::failed(format!("backing up {name} before the upgrade: {e}"))
                })?;
        }
        // Written down before anything of the new version runs: an agent killed from here on
        // finds it and puts the old version back (removing a version this install unpacked).
        self.inner.state.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO upgrades
                 (app, from_version, to_version, fresh, started_at, hook_pid, hook_start)
                 VALUES (?1, ?2, ?3, ?4, strftime('%s', 'now'), NULL, NULL)",
                rusqlite::params![
                    name.as_str(),
                    previous.map(|v| v.to_string()),
                    version.to_string(),
                    fresh
                ],
            )
        })?;
        // Whether the old version was stopped or `current` moved: only then is there
        // anything to put back.
        let mut touched = false;
        let done = self
            .apply(manifest, dir, old_manifest.as_ref(), fresh, &mut touched)
            .await;
        let mut settled = true;
        let outcome = match done {
            Ok(()) => Ok(()),
            Err(why) if !touched => Err(AgentError::Failed(format!(
                "{name} {version}: {why}; nothing changed"
            ))),
            Err(why) => {
                self.deactivate(manifest).await;
                let back = match (previous, &old_manifest) {
                    (Some(old), Some(old_manifest)) => {
                        let old_dir = data.version(name, old);
                        match versions::switch(data, name, old) {
                            Ok(()) => match self.activate(old_manifest, &old_dir, false).await {
                                Ok(()) => format!("rolled back: {name} {old} runs again"),
                                Err(e) => {
                                    format!("rolled back to {name} {old}, which failed too: {e}")
                                }
                            },
                            Err(e) => {
                                // Left written down: the next agent tries again.
                                settled = false;
                                format!("could not switch back to {old}: {e}")
                            }
                        }
                    }
                    _ => {
                        let _ = std::fs::remove_file(data.current(name));
                        format!("{name} is not installed")
                    }
                };
                Err(AgentError::Failed(format!(
                    "{name} {version}: {why}; {back}"
                )))
            }
        };
        if settled {
            self.inner
                .state
                .with(|c| c.execute("DELETE FROM upgrades WHERE app = ?1", [name.as_str()]))?;
        }
        outcome?;
        let keep = self.inner.options.keep_versions;
        let _ = versions::prune(data, name, keep, &[version, previous.unwrap_or(version)]);
        Ok(InstallReport {
            name: name.to_string(),
            version: version.to_string(),
            previous: previous.map(|v| v.to_string()),
            outcome: match previous {
                None => "installed",
                Some(p) if p < version => "upgraded",
                Some(_) => "downgraded",
            }
            .into(),
        })
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
        fresh: bool,
        touched: &mut bool,
    ) -> Result<(), AgentError> {
        let name = &manifest.package.name;
        let version = &manifest.package.version;
        if let (true, Some(hook)) = (fresh, &manifest.hooks.install) {
            self.hook(manifest, dir, "install", hook).await?;
        }
        *touched = true;
        if let Some(old) = old_manifest {
            self.deactivate(old).await;
        }
        versions::switch(&self.inner.data, name, version)
            .map_err(|e| AgentError::failed(format!("switching {name} to {version}: {e}")))?;
        self.activate(manifest, dir, true).await
    }

    /// Runs hook `which` (`install` or `verify`) of `manifest` in `dir`, its process group
    /// written down with the upgrade so that an agent killed meanwhile stops it when it
    /// comes back.
    async fn hook(
        &self,
        manifest: &Manifest,
        dir: &Path,
        which: &str,
        hook: &shoal_pkg::manifest::Command,
    ) -> Result<(), AgentError> {
        let name = &manifest.package.name;
        let state = self.inner.state.clone();
        let app = name.to_string();
        let started = move |pid: u32| {
            let start = start_time(pid);
            let _ = state.with(|c| {
                c.execute(
                    "UPDATE upgrades SET hook_pid = ?2, hook_start = ?3 WHERE app = ?1",
                    rusqlite::params![app, pid, start.map(|t| t as i64)],
                )
            });
        };
        hooks::run(
            &format!("the {which} hook of {name} {}", manifest.package.version),
            hook,
            dir,
            &self.env(manifest, dir),
            self.inner.options.hook_timeout,
            &self.inner.data.logs(name).join("hooks.log"),
            &started,
        )
        .await
        .map_err(AgentError::failed)
    }

    /// Starts `manifest`'s programs (or schedules its jobs), waits until healthy and stable,
    /// and with `verify` runs its verify hook.
    async fn activate(
        &self,
        manifest: &Manifest,
        dir: &Path,
        verify: bool,
    ) -> Result<(), AgentError> {
        let name = &manifest.package.name;
        match manifest.package.kind {
            Kind::Service => {
                let spec = self.spec(manifest, dir)?;
                let supervisor = &self.inner.supervisor;
                supervisor.add(spec).await.map_err(AgentError::failed)?;
                supervisor.start(name).await.map_err(AgentError::failed)?;
                // A slow starter's own grace and checks count, not only the agent's limit.
                let checks = manifest
                    .health
                    .as_ref()
                    .map_or(Duration::ZERO, |h| h.grace + h.interval * h.failures);
                let timeout = self.inner.options.health_timeout.max(checks);
                supervisor
                    .wait_healthy(name, timeout)
                    .await
                    .map_err(AgentError::failed)?;
                self.wait_stable(name).await?;
            }
            Kind::Crontab => {
                self.inner
                    .cron
                    .add(name.clone(), dir.to_owned(), manifest.cron.clone())
                    .map_err(AgentError::failed)?;
            }
        }
        if let (true, Some(hook)) = (verify, &manifest.hooks.verify) {
            self.hook(manifest, dir, "verify", hook).await?;
        }
        Ok(())
    }

    /// Healthy is not enough: the program must still run the same process, not restarted,
    /// and healthy, [`Options::settle`] later (a program that crashes a second after it
    /// starts would otherwise pass an upgrade it fails).
    async fn wait_stable(&self, name: &Name) -> Result<(), AgentError> {
        let look = |supervisor: &Supervisor| {
            supervisor
                .status()
                .into_iter()
                .find(|p| p.name == *name)
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
            (_, Some((_, _, _, exit, error))) => Err(AgentError::Failed(format!(
                "it did not stay up for {} after it started ({})",
                humantime::format_duration(self.inner.options.settle),
                exit.map(|e| e.to_string())
                    .or(error)
                    .unwrap_or_else(|| "its health check failed".into())
            ))),
            (_, None) => Err(AgentError::failed(format!(
                "{name} is no longer supervised"
            ))),
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
            AgentError::Invalid(format!("{} has no [run] program", manifest.package.name))
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
    }

    /// Finishes what an agent killed in an upgrade left: the hook it was running is stopped,
    /// and an app whose upgrade was written down is put back on the version it came from. An
    /// app that cannot be put back is logged and left for the next start; the others go on.
    async fn recover(&self) -> Result<(), AgentError> {
        type Pending = (
            String,
            Option<String>,
            String,
            bool,
            Option<i64>,
            Option<i64>,
        );
        let pending: Vec<Pending> = self.inner.state.with(|c| {
            let mut stmt = c.prepare(
                "SELECT app, from_version, to_version, fresh, hook_pid, hook_start FROM upgrades",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?;
            rows.collect()
        })?;
        for (app, from, to, fresh, hook_pid, hook_start) in pending {
            let Ok(name) = Name::new(&app) else { continue };
            tracing::warn!(
                app,
                from,
                to,
                "an upgrade was interrupted; going back to where it came from"
            );
            // The hook the killed agent was running, if it still is (same pid, same start).
            if let (Some(pid), Some(start)) = (hook_pid, hook_start) {
                let pid = u32::try_from(pid).unwrap_or(0);
                if pid > 1 && start_time(pid) == Some(start as u64) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if let Ok(manifest) = self.manifest(&name) {
                self.deactivate(&manifest).await;
            }
            let back = match from.as_deref().map(str::parse::<Version>) {
                Some(Ok(from)) => versions::switch(&self.inner.data, &name, &from),
                Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
                None => match std::fs::remove_file(self.inner.data.current(&name)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            if let Err(e) = back {
                tracing::error!(app, from, error = %e, "cannot put the app back; will try again at the next start");
                continue;
            }
            // A version this install unpacked goes; a rollback's target was installed before
            // and stays.
            if let (true, Ok(to)) = (fresh, to.parse::<Version>()) {
                let _ = std::fs::remove_dir_all(self.inner.data.version(&name, &to));
            }
            self.inner
                .state
                .with(|c| c.execute("DELETE FROM upgrades WHERE app = ?1", [app.as_str()]))?;
        }
        // Uploads an earlier agent was installing from.
        let _ = std::fs::remove_dir_all(self.inner.data.root().join("incoming"));
        Ok(())
    }

    /// Registers every installed app with the supervisor or the scheduler. The supervisor
    /// remembers its programs (and whether each should run) and has adopted or started them
    /// already; a service it does not know (put back by [`recover`](Self::recover)) is added
    /// and started.
    async fn load_installed(&self) -> Result<(), AgentError> {
        let known: Vec<String> = self
            .inner
            .supervisor
            .status()
            .into_iter()
            .map(|p| p.name.to_string())
            .collect();
        for name in self.installed()? {
            let manifest = match self.manifest(&name) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(app = %name, error = %e, "cannot load an installed app");
                    continue;
                }
            };
            let dir = self.current_dir(&name)?;
            match manifest.package.kind {
                Kind::Service => {
                    let supervisor = &self.inner.supervisor;
                    supervisor
                        .add(self.spec(&manifest, &dir)?)
                        .await
                        .map_err(AgentError::failed)?;
                    if !known.iter().any(|k| k == name.as_str()) {
                        if let Err(e) = supervisor.start(&name).await {
                            tracing::error!(app = %name, error = %e, "starting an installed app");
                        }
                    }
                }
                Kind::Crontab => {
                    self.inner
                        .cron
                        .add(name.clone(), dir, manifest.cron.clone())
                        .map_err(AgentError::failed)?;
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
            let taken = tokio::task::spawn_blocking(move || {
                backup::create_if_due(&data, &app, &spec, chrono::Utc::now())
            })
            .await;
            match taken {
                Ok(Ok(Some(created))) => {
                    tracing::info!(app = %name, backup = %created.backup.id, "backup taken");
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::error!(app = %name, error = %e, "scheduled backup failed"),
                Err(e) => tracing::error!(app = %name, error = %e, "scheduled backup failed"),
            }
        }
    }

    /// Restores backup `id` of `name`: a service is stopped first and started again after
    /// (also when the restore fails, which changes nothing).
    pub async fn restore(&self, name: &Name, id: &str) -> Result<(), AgentError> {
        let _one = self.inner.changing.lock().await;
        let manifest = self.manifest(name)?;
        let Some(spec) = manifest.backup.clone() else {
            return Err(AgentError::Invalid(format!(
                "{name} has no [backup] in its manifest: a restore writes only its [backup] paths"
            )));
        };
        let was_running = manifest.package.kind == Kind::Service
            && self
                .inner
                .supervisor
                .status()
                .iter()
                .any(|p| p.name == *name && !p.state.is_at_rest());
        if was_running {
            self.inner
                .supervisor
                .stop(name)
                .await
                .map_err(AgentError::failed)?;
        }
        let (data, app, backup_id) = (self.inner.data.clone(), name.clone(), id.to_owned());
        let limits = self.inner.options.limits;
        let restored = tokio::task::spawn_blocking(move || {
            backup::restore(&data, &app, &spec, &backup_id, &limits)
        })
        .await
        .map_err(AgentError::failed)?;
        if was_running {
            self.inner
                .supervisor
                .start(name)
                .await
                .map_err(AgentError::failed)?;
        }
        restored.map_err(|e| match e {
            backup::BackupError::NotFound { .. } => AgentError::NotFound(e.to_string()),
            other => AgentError::Failed(other.to_string()),
        })
    }

    /// Every installed app as `shoal ps` shows it.
    pub fn apps(&self) -> Result<Vec<AppStatus>, AgentError> {
        let mut programs: std::collections::HashMap<String, ProgramStatus> = self
            .inner
            .supervisor
            .status()
            .into_iter()
            .map(|p| (p.name.to_string(), p))
            .collect();
        let now = chrono::Utc::now();
        let mut apps = Vec::new();
        for name in self.installed()? {
            let Ok(manifest) = self.manifest(&name) else {
                continue;
            };
            let version = manifest.package.version.to_string();
            let app = match (manifest.package.kind, programs.remove(name.as_str())) {
                (Kind::Service, Some(p)) => AppStatus {
                    name: name.to_string(),
                    version: p.version.to_string(),
                    kind: "service".into(),
                    state: p.state.to_string(),
                    pid: p.pid,
                    uptime_secs: p.started_at.map(|t| (now - t).num_seconds().max(0) as u64),
                    restarts: u64::from(p.restarts),
                    cpu_percent: p.cpu_percent,
                    rss_bytes: p.rss_bytes,
                    health: p.health.map(|h| {
                        if h.ok {
                            "ok".to_owned()
                        } else {
                            format!(
                                "failing ({}): {}",
                                h.consecutive_failures,
                                h.last_error.unwrap_or_default()
                            )
                        }
                    }),
                    last_exit: p.last_exit.map(|e| e.to_string()).or(p.error),
                },
                (kind, _) => AppStatus {
                    name: name.to_string(),
                    version,
                    kind: match kind {
                        Kind::Service => "service",
                        Kind::Crontab => "crontab",
                    }
                    .into(),
                    state: match kind {
                        Kind::Service => "unknown",
                        Kind::Crontab => "scheduled",
                    }
                    .into(),
                    pid: None,
                    uptime_secs: None,
                    restarts: 0,
                    cpu_percent: None,
                    rss_bytes: None,
                    health: None,
                    last_exit: None,
                },
            };
            apps.push(app);
        }
        Ok(apps)
    }

    /// `apps/NAME/current` resolved to its version directory.
    pub fn current_dir(&self, name: &Name) -> Result<PathBuf, AgentError> {
        let version = versions::current(&self.inner.data, name)
            .map_err(AgentError::failed)?
            .ok_or_else(|| AgentError::NotFound(format!("no app named {name} is installed")))?;
        Ok(self.inner.data.version(name, &version))
    }

    /// `start`, `stop`, `restart` or `reload` (SIGHUP) service `name`; the supervisor
    /// remembers across agent restarts whether it should run. Waits for an install, rollback
    /// or restore of it to end first.
    pub async fn act(&self, name: &Name, action: &str) -> Result<(), AgentError> {
        let _one = self.inner.changing.lock().await;
        let manifest = self.manifest(name)?;
        if manifest.package.kind != Kind::Service {
            return Err(AgentError::Invalid(format!(
                "{name} is a crontab package, with no process to {action}: its jobs run on their \
                 schedule (`shoal cron run {name} JOB` runs one now)"
            )));
        }
        let supervisor = &self.inner.supervisor;
        match action {
            "start" => supervisor.start(name).await,
            "stop" => supervisor.stop(name).await,
            "restart" => supervisor.restart(name).await,
            "reload" => {
                supervisor
                    .signal(name, crate::supervise::Signal::SIGHUP)
                    .await
            }
            other => {
                return Err(AgentError::Invalid(format!(
                    "no action {other:?}; use start, stop, restart or reload"
                )))
            }
        }
        .map_err(AgentError::failed)
    }

    /// The most bytes an uploaded archive may have.
    pub fn upload_limit(&self) -> u64 {
        self.inner.options.limits.max_size
    }
}

/// When process `pid` started (clock ticks after boot): with the pid, what tells it from a
/// later process that got the same pid. `None` when there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).ok()?);
    crate::supervise::sys::stat(pid)
        .ok()
        .map(|stat| stat.start_time)
}

/// Adds the `upgrades` columns a database made by an earlier agent lacks.
fn migrate(state: &State) -> Result<(), StateError> {
    let columns: Vec<String> = state.with(|c| {
        let mut stmt = c.prepare("SELECT name FROM pragma_table_info('upgrades')")?;
        let names = stmt.query_map([], |r| r.get(0))?;
        names.collect()
    })?;
    for (column, definition) in [
        ("fresh", "fresh INTEGER NOT NULL DEFAULT 1"),
        ("hook_pid", "hook_pid INTEGER"),
        ("hook_start", "hook_start INTEGER"),
    ] {
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
