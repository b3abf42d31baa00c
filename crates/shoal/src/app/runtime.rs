//! The control loop of a started application: one loop that owns every change of state
//! (reload, close, re-execution, watchdog) so no two of them ever run at once. Reload goes
//! through the start-up path's checks; close is bounded by `shutdown.grace`.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{info, warn};

use super::handle::Handle;
use super::listen::Sockets;
use super::services;
use crate::config::{Config, ConfigError};
use crate::control::handover;
use crate::control::systemd::Notifier;
use crate::control::{Command, Exit};
use crate::events::{Event, Events};
use crate::hooks::DynHooks;
use crate::logging::{LogHandle, SinkError, Sinks};
use crate::status::{trace_of, ReloadRecord, ServiceState};
use crate::workers::process::Role;
use crate::workers::run::Launcher;
use crate::{watchdog, BoxError};

/// Re-reads the configuration and puts it in force, with its log sinks, for a worker process.
/// It blocks (reading the file, opening files and sockets): call it off the executor.
pub(super) fn reload_config(
    handle: &Handle,
    env: &[(String, String)],
    logging: Option<&LogHandle>,
    role: &Role,
) -> Result<(), String> {
    let cell = &handle.shared.cell;
    let old = cell.snapshot();
    let config = Config::load_files(old.config.files(), env.to_vec()).map_err(|e| e.to_string())?;
    let snapshot = cell.prepare(config).map_err(|e| e.to_string())?;
    let sinks = prepare_sinks(logging, role, &old.config, &snapshot.config)?;
    cell.install(snapshot);
    if let (Some(logging), Some(sinks)) = (logging, sinks) {
        logging.install(sinks);
    }
    Ok(())
}

/// How long reading the configuration files on reload may take: a file on a hung network
/// mount must not stop the control loop, which also closes the process.
pub(super) const READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads every layer of the configuration again (every file, and what each includes) off
/// the executor, giving up after [`READ_LIMIT`]; a read that never ends is left to its
/// blocking thread, and the reload is rejected.
pub(super) async fn load_bounded(
    files: &[PathBuf],
    env: &[(String, String)],
) -> Result<Config, String> {
    let (owned, env) = (files.to_vec(), env.to_vec());
    let read = tokio::task::spawn_blocking(move || Config::load_files(&owned, env));
    match tokio::time::timeout(READ_LIMIT, read).await {
        Ok(Ok(loaded)) => loaded.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("reading the configuration failed: {e}")),
        Err(_) => Err(format!(
            "{}: reading the configuration took longer than {}; the files were not read",
            crate::config::file_names(files),
            humantime::format_duration(READ_LIMIT)
        )),
    }
}

/// The log sinks `new` asks for when its `[log]` differs from `old`'s, built but not yet in
/// force. Blocks (it opens files and resolves syslog hosts).
fn prepare_sinks(
    logging: Option<&LogHandle>,
    role: &Role,
    old: &Config,
    new: &Config,
) -> Result<Option<Sinks>, String> {
    match logging {
        Some(logging) if old.runtime().log != new.runtime().log => logging
            .prepare(&role.log_config(&new.runtime().log))
            .map(Some)
            .map_err(|e| sink_failed(new, &e).to_string()),
        _ => Ok(None),
    }
}

/// A log sink that cannot be set up, placed in the file like a config error.
pub(super) fn sink_failed(config: &Config, error: &SinkError) -> ConfigError {
    config.error_at(error.key(), error.message())
}

/// How long the last log mail may take at close.
pub(super) const LAST_MAIL: std::time::Duration = std::time::Duration::from_secs(10);

/// The tasks the launch phase started, and the tokens that stop them.
pub(super) struct Tasks {
    /// Stops the servers accepting.
    pub(super) accept_stop: CancellationToken,
    pub(super) timers_stop: CancellationToken,
    pub(super) servers: TaskTracker,
    pub(super) timers_task: Option<JoinHandle<()>>,
    pub(super) run_task: Option<JoinHandle<Result<(), BoxError>>>,
    /// The watchdog, the summary and the monitor feed.
    pub(super) background: TaskTracker,
    pub(super) signals_stop: CancellationToken,
    pub(super) signals_task: Option<JoinHandle<()>>,
}

/// Everything the control loop owns.
pub(super) struct Runtime {
    pub(super) handle: Handle,
    pub(super) hooks: Arc<dyn DynHooks>,
    pub(super) events: Arc<Events>,
    pub(super) exe: Option<PathBuf>,
    pub(super) args: Vec<std::ffi::OsString>,
    pub(super) env: Vec<(String, String)>,
    pub(super) sockets: Sockets,
    pub(super) handed_over: bool,
    pub(super) tasks: Tasks,
    pub(super) notifier: Option<Arc<Notifier>>,
    pub(super) logging: Option<LogHandle>,
    pub(super) changed: Arc<Notify>,
    /// Every service's name and requirements, to check `services.enabled` on reload.
    pub(super) registered: Vec<(String, Vec<String>)>,
    pub(super) role: Role,
    /// The workers' supervisors.
    pub(super) launcher: Launcher,
}

impl Runtime {
    pub(super) async fn control(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut fired: mpsc::UnboundedReceiver<String>,
    ) -> Exit {
        let mut run_task = self.tasks.run_task.take().expect("spawned at start");
        let mut run_ended = false;
        let exit = loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Reload(reply)) => {
                        let result = self.reload().await;
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    }
                    Some(Command::Close { .. }) | None => break Exit::Closed,
                    Some(Command::Restart(reply)) if self.role.is_worker() => {
                        let e = "a worker process does not re-execute itself: ask its parent".to_string();
                        warn!("{e}");
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(e));
                        }
                    }
                    Some(Command::Restart(reply)) => match self.hand_over().await {
                        Ok(pid) => {
                            if let Some(reply) = reply {
                                let _ = reply.send(Ok(pid));
                            }
                            break Exit::Closed;
                        }
                        Err(e) => {
                            self.handle.record_error("restart", e.clone(), e.clone());
                            if let Some(reply) = reply {
                                let _ = reply.send(Err(e));
                            }
                        }
                    },
                },
                ended = &mut run_task => {
                    run_ended = true;
                    let exit = self.run_ended(ended);
                    info!(?exit, "the run loop ended; closing");
                    break exit;
                }
                Some(reason) = fired.recv() => {
                    self.handle.record_error("watchdog", reason.clone(), reason);
                    self.stop_everything().await;
                    self.send_last_mail().await;
                    return Exit::Watchdog;
                }
            }
        };
        let run_task = (!run_ended).then_some(run_task);
        self.close(exit, run_task, &mut commands).await
    }

    fn run_ended(&self, ended: Result<Result<(), BoxError>, tokio::task::JoinError>) -> Exit {
        match ended {
            Ok(Ok(())) => Exit::Closed,
            Ok(Err(e)) => {
                self.handle
                    .record_error("run", e.to_string(), trace_of(e.as_ref()));
                Exit::Failed
            }
            Err(e) => {
                self.handle.record_error(
                    "run",
                    format!("the run loop panicked: {e}"),
                    e.to_string(),
                );
                Exit::Failed
            }
        }
    }

    /// Re-reads the configuration through the startup path and puts it in force whole, or
    /// keeps the old one and says why.
    async fn reload(&self) -> Result<(), String> {
        let shared = self.handle.shared.clone();
        shared.recorder.set_state(ServiceState::Reloading);
        if let Some(n) = &self.notifier {
            n.send("RELOADING=1");
        }
        let old = shared.cell.snapshot();
        let result = self.apply_reload(&old.config).await;
        shared.recorder.reload(ReloadRecord {
            at: Utc::now(),
            ok: result.is_ok(),
            error: result.as_ref().err().cloned(),
        });
        match &result {
            Ok(()) => info!(files = ?old.config.files(), "configuration reloaded"),
            Err(e) => self.handle.record_error(
                "reload",
                format!("{e}; the previous configuration stays in force"),
                e.clone(),
            ),
        }
        shared.recorder.set_state(ServiceState::Running);
        if let Some(n) = &self.notifier {
            n.send("READY=1");
        }
        result
    }

    async fn apply_reload(&self, old: &Config) -> Result<(), String> {
        let shared = &self.handle.shared;
        let config = load_bounded(old.files(), &self.env).await?;
        let snapshot = shared.cell.prepare(config).map_err(|e| e.to_string())?;
        let new = snapshot.config.clone();
        services::resolve(&self.registered, new.runtime().services.enabled.as_deref())
            .map_err(|e| format!("{}: {e}", origin(&new)))?;
        // Opening files and resolving syslog hosts block: off the executor.
        let (logging, role, was) = (self.logging.clone(), self.role.clone(), old.clone());
        let now = new.clone();
        let sinks =
            tokio::task::spawn_blocking(move || prepare_sinks(logging.as_ref(), &role, &was, &now))
                .await
                .map_err(|e| format!("preparing the log sinks failed: {e}"))??;
        self.events
            .emit(&Event::ConfigLoaded(&new))
            .map_err(|e| format!("a config hook rejected the configuration: {e}"))?;
        // Last, so a hook that applies what it reads never applies a rejected configuration.
        self.hooks
            .on_reload(&new)
            .await
            .map_err(|e| format!("on_reload rejected the configuration: {e}"))?;
        shared.cell.install(snapshot);
        let (was, now) = (old.runtime(), new.runtime());
        if let (Some(logging), Some(sinks)) = (&self.logging, sinks) {
            logging.install(sinks);
        }
        for (key, differs) in [
            ("rpc", was.rpc != now.rpc),
            ("admin.listen", was.admin != now.admin),
            ("services.enabled", was.services != now.services),
            ("workers", was.workers != now.workers),
            ("metrics.listen", was.metrics != now.metrics),
        ] {
            if differs {
                warn!(key, "changed; it takes effect when the process restarts (SIGUSR2 re-executes without downtime)");
            }
        }
        self.changed.notify_waiters();
        self.events.notify(&Event::Reload(&new));
        // Worker processes read the same file again themselves.
        self.launcher.reload_processes();
        Ok(())
    }

    /// Starts the binary again with the listeners and waits until it serves.
    async fn hand_over(&mut self) -> Result<u32, String> {
        let exe = self
            .exe
            .clone()
            .ok_or("re-execution needs the binary's path, which is unknown here")?;
        if self.sockets.fds.is_empty() {
            warn!("no listener to hand over; the new process binds its own");
        }
        let fds: Vec<(&str, std::os::fd::BorrowedFd<'_>)> = self
            .sockets
            .fds
            .iter()
            .map(|(name, fd)| (name.as_str(), fd.as_fd()))
            .collect();
        let timeout = self.handle.config().runtime().control.handover_timeout;
        let pid = handover::start_successor(&exe, &self.args, &fds, timeout).await?;
        self.handed_over = true;
        info!(pid, "the new process serves; closing this one");
        Ok(pid)
    }

    /// Closes gracefully: stop accepting, `on_close`, then in-flight calls, timers and the run
    /// loop finish within the grace period.
    async fn close(
        mut self,
        mut exit: Exit,
        run_task: Option<JoinHandle<Result<(), BoxError>>>,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Exit {
        let shared = self.handle.shared.clone();
        shared.recorder.set_state(ServiceState::Closing);
        // The listening sockets stop taking connections now: only the servers held them
        // besides these copies (after a handover the new process has its own).
        self.sockets.fds.clear();
        if let Some(n) = &self.notifier {
            // After a handover the unit goes on in the new process: nothing more to say.
            if !self.handed_over {
                n.send("STOPPING=1");
            }
        }
        let grace = self.handle.config().runtime().shutdown.grace;
        info!(grace = %humantime::format_duration(grace), "closing");
        self.events.notify(&Event::Close);
        self.tasks.accept_stop.cancel();
        self.tasks.timers_stop.cancel();
        shared.closing.cancel();
        let deadline = Instant::now() + grace;
        let hooks = self.hooks.clone();
        let servers = self.tasks.servers.clone();
        let background = self.tasks.background.clone();
        let workers = self.launcher.tracker.clone();
        let timers_task = self.tasks.timers_task.take();
        // Past the grace period this future is dropped: the tasks it waits on stop with it
        // instead of running on unobserved.
        let timers_task = timers_task.map(AbortOnDropHandle::new);
        let run_task = run_task.map(AbortOnDropHandle::new);
        let drain = async move {
            hooks.on_close().await;
            servers.wait().await;
            if let Some(task) = timers_task {
                let _ = task.await;
            }
            let ended = match run_task {
                Some(task) => Some(task.await),
                None => None,
            };
            background.wait().await;
            workers.wait().await;
            ended
        };
        tokio::pin!(drain);
        let finished = loop {
            tokio::select! {
                ended = &mut drain => break Some(ended),
                _ = tokio::time::sleep_until(deadline) => break None,
                command = commands.recv() => match command {
                    Some(Command::Reload(Some(reply))) => {
                        let _ = reply.send(Err("the application is closing".into()));
                    }
                    Some(Command::Restart(Some(reply))) => {
                        let _ = reply.send(Err("the application is closing".into()));
                    }
                    Some(_) => {}
                    None => {}
                },
            }
        };
        match finished {
            Some(ended) => {
                if let Some(ended) = ended {
                    let run_exit = self.run_ended(ended);
                    if exit == Exit::Closed {
                        exit = run_exit;
                    }
                }
            }
            None => {
                warn!(
                    grace = %humantime::format_duration(grace),
                    "the grace period ran out with work in progress"
                );
                // Task workers are dropped and worker processes killed, not left behind.
                self.launcher.abort().await;
                exit = Exit::GraceExpired;
            }
        }
        watchdog::log_summary(&self.handle);
        self.finish().await;
        info!(?exit, code = exit.code(), "closed");
        self.send_last_mail().await;
        exit
    }

    /// Mails the error lines still pending, waiting a bounded time: the process ends next.
    async fn send_last_mail(&self) {
        if let Some(logging) = self.logging.clone() {
            let _ = tokio::task::spawn_blocking(move || logging.close(LAST_MAIL)).await;
        }
    }

    async fn stop_everything(&mut self) {
        self.handle.shared.closing.cancel();
        self.tasks.accept_stop.cancel();
        self.tasks.timers_stop.cancel();
        self.finish().await;
    }

    /// Stops taking signals and removes the socket files this process owns.
    async fn finish(&mut self) {
        let signals = self.tasks.signals_task.take();
        stop_signals(self.tasks.signals_stop.clone(), signals).await;
        // A worker's socket files are its parent's: siblings, or a successor's workers,
        // still serve on them.
        if !self.handed_over && !self.role.is_worker() {
            self.sockets.remove_files();
        }
    }
}

/// Stops forwarding signals and waits for the task that did.
pub(super) async fn stop_signals(stop: CancellationToken, task: Option<JoinHandle<()>>) {
    stop.cancel();
    if let Some(task) = task {
        let _ = task.await;
    }
}

/// The configuration files, for messages.
pub(super) fn origin(config: &Config) -> String {
    crate::config::file_names(config.files())
}
