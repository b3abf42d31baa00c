//! Start-up, in named phases: **load** (command line, role, configuration, logging),
//! **declare** (the setup, services in dependency order, worker groups, all checked before
//! anything is bound), then one function per role this process plays, each going through
//! **bind** (listeners, inherited or bound) and **launch** (`on_start`, workers, serving,
//! timers, background tasks, ready) before handing over to the control loop:
//! [`master`] (the application, or in process mode the master), [`rpc_worker`] (a
//! process-mode RPC worker) and [`group_worker`] (a process worker of a group).

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use chrono::Utc;
use shoal_rpc::middleware::{CatchPanicLayer, Stats, StatsLayer};
use shoal_rpc::{Addr, Listener, Server, ServerBuilder};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{info, warn};

use super::error::{StartCause, StartError};
use super::handle::{Handle, Shared};
use super::listen::{check_addr, listen, tokio_listener, Access, AddrProblem, Sockets};
use super::runtime::{self, origin, stop_signals, Runtime, Tasks};
use super::setup::{Boxed, Setup, StateMap};
use super::{services, App, Running, SetupFn};
use crate::config::{Config, ConfigError};
use crate::control::admin::RuntimeMethodsLayer;
use crate::control::agent::{self, AgentLink};
use crate::control::handover::Inherited;
use crate::control::systemd::Notifier;
use crate::control::{self, Action, Command, Exit, Invocation};
use crate::events::{CallEventsLayer, Event, EventKind, Events};
use crate::hooks::DynHooks;
use crate::live::ConfigCell;
use crate::logging::{self, LogHandle};
use crate::metrics::MetricsLayer;
use crate::status::{trace_of, Recorder, ReloadRecord, ServiceState};
use crate::timer::{Clock, TimerFailure, Timers, Zone};
use crate::workers::process::Role;
use crate::workers::run::Launcher;
use crate::workers::{Board, WorkerGroup};
use crate::{monitor, watchdog, BoxError};

/// Starts `app`. `inherited` is set when the application is the process (signals, systemd,
/// handover), holding what a predecessor handed over, if anything.
pub(super) async fn start(app: App, inherited: Option<Inherited>) -> Result<Running, StartError> {
    let mut loaded = load(app, inherited)?;
    let declared = declare(&mut loaded)?;
    if loaded.inv.action == Action::Check {
        let in_use =
            check_addresses(&loaded.config).map_err(|e| loaded.fail(StartCause::Config(e)))?;
        logging::check(&loaded.config.runtime().log).map_err(|e| {
            loaded.fail(StartCause::Config(runtime::sink_failed(&loaded.config, &e)))
        })?;
        let mut valid = format!(
            "{}: configuration {} is valid\n",
            loaded.name,
            origin(&loaded.config)
        );
        for note in in_use {
            valid.push_str(&format!(
                "note: {note} now; if that is this service, a re-execution (SIGUSR2) takes it \
                 over, else a start fails\n"
            ));
        }
        return Err(loaded.fail(StartCause::Answered(valid)));
    }
    match loaded.role.clone() {
        Role::App => master(loaded, declared).await,
        Role::RpcWorker { .. } => rpc_worker(loaded, declared).await,
        Role::GroupWorker {
            group,
            index,
            count,
        } => group_worker(loaded, declared, &group, index, count),
    }
}

/// `--check`'s look at the addresses the start would bind (`rpc.listen`, `admin.listen`,
/// `metrics.listen`): one that cannot be used is an error naming the key and the file; one
/// in use is returned, placed the same way, for the answer to mention.
fn check_addresses(config: &Config) -> Result<Vec<ConfigError>, ConfigError> {
    let rt = config.runtime();
    let addrs = [
        ("rpc.listen", rt.rpc.listen.clone()),
        ("admin.listen", rt.admin.listen.clone().map(Addr::Unix)),
        ("metrics.listen", rt.metrics.listen.clone().map(Addr::Tcp)),
    ];
    let mut in_use = Vec::new();
    for (key, addr) in addrs {
        let Some(addr) = addr else { continue };
        match check_addr(&addr) {
            Ok(()) => {}
            Err(AddrProblem::InUse(why)) => in_use.push(config.error_at(key, why)),
            Err(AddrProblem::Unusable(why)) => return Err(config.error_at(key, why)),
        }
    }
    Ok(in_use)
}

/// What the load phase found: the application as declared, how it was invoked, the role of
/// this process and its configuration.
struct Loaded {
    name: String,
    version: String,
    hooks: Arc<dyn DynHooks>,
    setup: Option<SetupFn>,
    clock: Arc<dyn Clock>,
    zone: Zone,
    inv: Invocation,
    /// Whether the application is the process (`App::run`), not inside a caller's.
    process: bool,
    inherited: Inherited,
    role: Role,
    config: Config,
    logging: Option<LogHandle>,
}

impl Loaded {
    fn fail(&self, cause: StartCause) -> StartError {
        StartError::new(&self.name, cause)
    }
}

/// Load: the command line's action, the role (only a process can be a worker: the variables
/// come from its parent), the configuration validated whole, then logging.
fn load(app: App, inherited: Option<Inherited>) -> Result<Loaded, StartError> {
    let App {
        name,
        version,
        hooks,
        setup,
        invocation,
        args_error,
        clock,
        zone,
    } = app;
    let fail = |cause| StartError::new(&name, cause);
    if let Some(why) = args_error {
        return Err(fail(StartCause::Arguments(why)));
    }
    let process = inherited.is_some();
    let inv = invocation.unwrap_or_default();
    match inv.action {
        Action::Help => return Err(fail(StartCause::Answered(control::usage(&name)))),
        Action::Version => {
            return Err(fail(StartCause::Answered(format!("{name} {version}\n"))));
        }
        Action::Run | Action::Check => {}
    }
    let role = match process {
        true => Role::from_env(&inv.env).map_err(|e| fail(StartCause::Arguments(e)))?,
        false => Role::App,
    };
    let config = Config::load_files(&inv.configs, inv.env.clone())
        .map_err(|e| fail(StartCause::Config(e)))?;
    let logging = match process && inv.action == Action::Run {
        true => logging::init(&role.log_config(&config.runtime().log), &name)
            .map_err(|e| fail(StartCause::LogSinks(runtime::sink_failed(&config, &e))))?,
        false => None,
    };
    // Before the setup, whose code may describe or record metrics already.
    if crate::metrics::install().is_none() {
        warn!("{}", crate::metrics::FOREIGN);
    }
    Ok(Loaded {
        name,
        version,
        hooks,
        setup,
        clock,
        zone,
        inv,
        process,
        inherited: inherited.unwrap_or_default(),
        role,
        config,
        logging,
    })
}

/// What the declare phase built: the handle every part holds, the declarations, and the
/// services in the order they start.
struct Declared {
    handle: Handle,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Timers, state, layers, event hooks and worker groups, services taken out.
    setup: Setup,
    services: Vec<Boxed>,
    /// Every service's name and requirements, to check `services.enabled` on reload.
    registered: Vec<(String, Vec<String>)>,
    /// The size of each of `setup.workers`.
    group_sizes: Vec<usize>,
}

/// Declare: runs the setup, builds the enabled services dependencies first, and checks the
/// worker groups against the configuration. Nothing is bound yet.
fn declare(loaded: &mut Loaded) -> Result<Declared, StartError> {
    let (handle, commands) = new_handle(loaded);
    let config = loaded.config.clone();
    let mut decl = Setup {
        handle: handle.clone(),
        cell: handle.shared.cell.clone(),
        services: Vec::new(),
        timers: Vec::new(),
        state: StateMap::default(),
        wraps: Vec::new(),
        events: Events::default(),
        workers: Vec::new(),
    };
    if let Some(setup) = loaded.setup.take() {
        setup(&mut decl).map_err(|e| loaded.fail(setup_failed(&config, "setup", e)))?;
    }
    let registered: Vec<(String, Vec<String>)> = decl
        .services
        .iter()
        .map(|s| (s.name.clone(), s.requires.clone()))
        .collect();
    let order = services::resolve(&registered, config.runtime().services.enabled.as_deref())
        .map_err(|e| {
            loaded.fail(StartCause::Declarations(format!(
                "{}: {e}",
                origin(&config)
            )))
        })?;
    let mut services = Vec::new();
    let mut names = Vec::new();
    for index in order {
        let factory = decl.services[index].factory.take().expect("built once");
        let name = decl.services[index].name.clone();
        let service = factory(&mut decl)
            .map_err(|e| loaded.fail(setup_failed(&config, &format!("service {name}"), e)))?;
        services.push(Boxed(service));
        names.push(name);
    }
    if let Some(group) = decl
        .workers
        .iter()
        .find(|g| g.kind == crate::WorkerKind::Process)
        .filter(|_| !loaded.process || loaded.inv.exe.is_none())
    {
        return Err(loaded.fail(StartCause::Declarations(format!(
            "worker group {} runs processes, which needs the application run as a process \
             of its own (App::run): App::start runs inside the caller's process",
            group.name
        ))));
    }
    let group_sizes = group_sizes(&decl.workers, &config)
        .map_err(|e| loaded.fail(StartCause::Declarations(e)))?;
    let _ = handle.shared.services.set(names);
    let _ = handle.shared.state.set(decl.state.clone());
    Ok(Declared {
        handle,
        commands,
        setup: decl,
        services,
        registered,
        group_sizes,
    })
}

/// The application's shared state, before any declaration, and the receiving end of its
/// commands.
fn new_handle(loaded: &Loaded) -> (Handle, mpsc::UnboundedReceiver<Command>) {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let handle = Handle {
        shared: Arc::new(Shared {
            name: loaded.name.clone(),
            version: loaded.version.clone(),
            started_at: Utc::now(),
            started: Instant::now(),
            cell: Arc::new(ConfigCell::new(loaded.config.clone())),
            recorder: Recorder::new(),
            commands,
            closing: CancellationToken::new(),
            heartbeat_ms: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            stats: Stats::new(),
            hooks: loaded.hooks.clone(),
            timers: OnceLock::new(),
            services: OnceLock::new(),
            rpc_addr: OnceLock::new(),
            metrics_addr: OnceLock::new(),
            monitor_addr: watch::Sender::new(None),
            state: OnceLock::new(),
            workers: Arc::new(Board::default()),
        }),
    };
    (handle, command_rx)
}

/// The application, or in process mode the master: binds every listener (in process mode
/// keeping the RPC one for its workers), runs `on_start`, starts the worker groups and the
/// RPC workers, serves, and runs the timers, the run loop, the watchdog, the summary and the
/// monitor feed.
async fn master(mut loaded: Loaded, mut declared: Declared) -> Result<Running, StartError> {
    let events = startup_events(&loaded, &mut declared)?;
    let timers = declare_timers(&loaded, &mut declared);
    let bound = bind_master(&mut loaded, &mut declared, &events).await?;
    launch_master(loaded, declared, events, timers, bound).await
}

/// What the master's bind phase holds: listeners to serve, in process mode the RPC listener
/// for the workers, the exporter's, and where they all are.
struct Bound {
    sockets: Sockets,
    serving: Vec<(Server, Listener)>,
    admin: Option<Admin>,
    master_rpc: Option<OwnedFd>,
    exporter: Option<tokio::net::TcpListener>,
    addrs: Addrs,
}

/// The master's bind phase: the RPC listener (kept for the workers in process mode), the
/// admin socket and the exporter.
async fn bind_master(
    loaded: &mut Loaded,
    declared: &mut Declared,
    events: &Arc<Events>,
) -> Result<Bound, StartError> {
    let handle = declared.handle.clone();
    let rt = loaded.config.runtime().clone();
    let mut sockets = Sockets::default();
    let mut serving = Vec::new();
    let mut master_rpc = None;
    let metrics_layer = MetricsLayer::new();
    let rpc = bind_rpc(loaded, declared, events, &metrics_layer, &mut sockets).await?;
    let rpc_addr = rpc.as_ref().map(|(_, listener)| listener.local_addr());
    if let Some((server, listener)) = rpc {
        if rt.rpc.processes > 0 && loaded.process {
            // Process mode: the workers serve it; this process only hands it to them.
            let fd = listener.as_fd().try_clone_to_owned().map_err(|e| {
                bind_failed(
                    loaded,
                    &handle,
                    "rpc.listen",
                    format!("cannot keep the rpc listener: {e}"),
                )
            })?;
            master_rpc = Some(fd);
        } else {
            if rt.rpc.processes > 0 {
                warn!("rpc.processes applies to an application run as a process; serving here");
            }
            serving.push((server, listener));
        }
    }
    let admin_path = rt.admin.listen.clone();
    let admin = match &admin_path {
        Some(path) => {
            let (server, listener) =
                bind_admin(loaded, &handle, &metrics_layer, path, &mut sockets).await?;
            Some(Admin {
                server,
                listener,
                path: path.clone(),
            })
        }
        None => None,
    };
    let exporter = match &rt.metrics.listen {
        Some(host_port) => Some(bind_metrics(loaded, &handle, host_port, &mut sockets).await?),
        None => None,
    };
    let addrs = Addrs {
        rpc: rpc_addr,
        admin: admin_path,
        metrics: exporter.as_ref().and_then(|l| l.local_addr().ok()),
    };
    Ok(Bound {
        sockets,
        serving,
        admin,
        master_rpc,
        exporter,
        addrs,
    })
}

/// The master's launch phase: `on_start`, the workers, serving, the timers, the run loop,
/// the watchdog and the summary; then ready, the monitor feed, and the control loop.
async fn launch_master(
    mut loaded: Loaded,
    declared: Declared,
    events: Arc<Events>,
    timers: Timers,
    bound: Bound,
) -> Result<Running, StartError> {
    let handle = declared.handle.clone();
    let Bound {
        sockets,
        serving,
        admin,
        master_rpc,
        exporter,
        addrs,
    } = bound;
    call_on_start(&loaded, &handle, &sockets).await?;
    let launcher = launcher(&loaded, &handle);
    for (group, count) in declared.setup.workers.iter().zip(&declared.group_sizes) {
        launcher.start_group(group, *count);
    }
    if let Some(fd) = master_rpc {
        start_rpc_workers(&loaded, &handle, &launcher, fd, &sockets).await?;
    }
    launcher.tracker.close();
    let (accept_stop, servers) = serve(serving, admin, exporter);
    let timers_stop = CancellationToken::new();
    let timers_task = (!timers.is_empty()).then(|| run_timers(&handle, timers, &timers_stop));
    let notifier = loaded
        .process
        .then(|| Notifier::from_env(&loaded.inv.env, loaded.inherited.predecessor()))
        .flatten()
        .map(Arc::new);
    let changed = Arc::new(Notify::new());
    let background = TaskTracker::new();
    let fired_rx = watch_and_summarize(&loaded, &handle, &background, &notifier, &changed);
    let run_task = tokio::spawn({
        let (hooks, app) = (loaded.hooks.clone(), handle.clone());
        async move { hooks.run(app).await }
    });
    let (signals_stop, signals_task) = forward_signals(&loaded, &handle, true);
    if let Some(from) = loaded.inherited.predecessor() {
        info!(from, "took over the listeners from the previous process");
    }
    ready(&mut loaded, &handle, &events, notifier.as_deref());
    info!(
        app = %loaded.name,
        rpc = ?addrs.rpc,
        admin = ?addrs.admin,
        metrics = ?addrs.metrics,
        pid = std::process::id(),
        "ready"
    );
    // After ready, so that the first snapshot says "running".
    background.spawn(monitor::publish(
        handle.clone(),
        changed.clone(),
        handle.shared.closing.clone(),
    ));
    if let Some(link) = AgentLink::from_env(&loaded.inv.env, &loaded.name) {
        background.spawn(agent::follow(
            handle.clone(),
            link,
            handle.shared.closing.clone(),
        ));
    }
    background.close();

    let tasks = Tasks {
        accept_stop,
        timers_stop,
        servers,
        timers_task,
        run_task: Some(run_task),
        background,
        signals_stop,
        signals_task,
    };
    let launched = Launched {
        events,
        sockets,
        tasks,
        notifier,
        changed,
        launcher,
        fired: fired_rx,
        addrs,
    };
    Ok(control_loop(loaded, declared, launched))
}

/// A process-mode RPC worker: serves the RPC listener its parent handed over and runs
/// `on_start` and `on_close`; timers, the run loop, the watchdog, the summary and the monitor
/// feed are its parent's, and it is controlled through its parent.
async fn rpc_worker(mut loaded: Loaded, mut declared: Declared) -> Result<Running, StartError> {
    let handle = declared.handle.clone();
    let events = startup_events(&loaded, &mut declared)?;
    // In the worker's status too, though only the parent runs them.
    declare_timers(&loaded, &mut declared);
    let mut sockets = Sockets::default();
    let metrics_layer = MetricsLayer::new();
    let serving: Vec<_> = bind_rpc(
        &mut loaded,
        &mut declared,
        &events,
        &metrics_layer,
        &mut sockets,
    )
    .await?
    .into_iter()
    .collect();
    let addrs = Addrs {
        rpc: serving.first().map(|(_, listener)| listener.local_addr()),
        admin: None,
        metrics: None,
    };
    call_on_start(&loaded, &handle, &sockets).await?;
    let launcher = launcher(&loaded, &handle);
    launcher.tracker.close();
    let (accept_stop, servers) = serve(serving, None, None);
    let run_task = tokio::spawn({
        let app = handle.clone();
        async move {
            app.closing().await;
            Ok(())
        }
    });
    let (signals_stop, signals_task) = forward_signals(&loaded, &handle, false);
    ready(&mut loaded, &handle, &events, None);
    info!(app = %loaded.name, rpc = ?addrs.rpc, pid = std::process::id(), "ready");
    let background = TaskTracker::new();
    background.close();
    let tasks = Tasks {
        accept_stop,
        timers_stop: CancellationToken::new(),
        servers,
        timers_task: None,
        run_task: Some(run_task),
        background,
        signals_stop,
        signals_task,
    };
    // Nothing fires a watchdog here: the parent's watches.
    let (_, fired) = mpsc::unbounded_channel();
    let launched = Launched {
        events,
        sockets,
        tasks,
        notifier: None,
        changed: Arc::new(Notify::new()),
        launcher,
        fired,
        addrs,
    };
    Ok(control_loop(loaded, declared, launched))
}

/// A process worker of a group: no listener, timer or hook, only the worker, until it ends or
/// a close signal (its parent's SIGTERM) stops it; SIGHUP re-reads the configuration.
fn group_worker(
    mut loaded: Loaded,
    declared: Declared,
    group: &str,
    index: usize,
    count: usize,
) -> Result<Running, StartError> {
    let Declared {
        handle,
        commands,
        setup,
        ..
    } = declared;
    let Some(decl) = setup.workers.into_iter().find(|g| g.name == group) else {
        return Err(loaded.fail(StartCause::Arguments(format!(
            "this binary declares no worker group {group}"
        ))));
    };
    let (signals_stop, signals_task) = forward_signals(&loaded, &handle, false);
    handle.shared.recorder.set_state(ServiceState::Running);
    loaded.inherited.signal_ready();
    info!(
        group,
        index,
        pid = std::process::id(),
        "worker process runs"
    );
    let body = tokio::spawn({
        let app = handle.clone();
        async move { crate::workers::run::as_group_worker(app, &decl, index, count).await }
    });
    let control = GroupWorkerControl {
        app: handle.clone(),
        commands,
        env: loaded.inv.env,
        logging: loaded.logging,
        role: loaded.role,
        signals_stop,
        signals_task,
    };
    let done = tokio::spawn(control.run(AbortOnDropHandle::new(body)));
    Ok(Running {
        handle,
        rpc_addr: None,
        admin_path: None,
        metrics_addr: None,
        done,
    })
}

/// A group worker's control loop: reloads until a close or the worker's end, then the close
/// within the grace period.
struct GroupWorkerControl {
    app: Handle,
    commands: mpsc::UnboundedReceiver<Command>,
    env: Vec<(String, String)>,
    logging: Option<LogHandle>,
    role: Role,
    signals_stop: CancellationToken,
    signals_task: Option<JoinHandle<()>>,
}

impl GroupWorkerControl {
    async fn run(mut self, mut body: AbortOnDropHandle<Exit>) -> Exit {
        let exit = loop {
            tokio::select! {
                exit = &mut body => break Some(exit.unwrap_or(Exit::Failed)),
                command = self.commands.recv() => match command {
                    Some(Command::Reload(reply)) => {
                        let result = reload_group_worker(
                            &self.app,
                            &self.env,
                            self.logging.as_ref(),
                            &self.role,
                        )
                        .await;
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    }
                    Some(Command::Restart(reply)) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Err("a worker process is restarted by its parent".into()));
                        }
                    }
                    Some(Command::Close { .. }) | None => break None,
                },
            }
        };
        let exit = match exit {
            // The worker ended on its own.
            Some(exit) => exit,
            None => {
                self.app.shared.recorder.set_state(ServiceState::Closing);
                self.app.shared.closing.cancel();
                let grace = self.app.config().runtime().shutdown.grace;
                match tokio::time::timeout(grace, &mut body).await {
                    Ok(exit) => exit.unwrap_or(Exit::Failed),
                    Err(_) => Exit::GraceExpired,
                }
            }
        };
        stop_signals(self.signals_stop, self.signals_task).await;
        if let Some(logging) = self.logging {
            let _ = tokio::task::spawn_blocking(move || logging.close(runtime::LAST_MAIL)).await;
        }
        exit
    }
}

/// A group worker's reload: the file read again, with its log sinks, off the executor (both
/// block), and the outcome recorded.
async fn reload_group_worker(
    app: &Handle,
    env: &[(String, String)],
    logging: Option<&LogHandle>,
    role: &Role,
) -> Result<(), String> {
    let reload = {
        let (app, env, logging, role) = (app.clone(), env.to_vec(), logging.cloned(), role.clone());
        tokio::task::spawn_blocking(move || {
            runtime::reload_config(&app, &env, logging.as_ref(), &role)
        })
    };
    // Bounded, like the master's: a close must not wait behind a file that never ends.
    let result = match tokio::time::timeout(runtime::READ_LIMIT, reload).await {
        Ok(done) => done.unwrap_or_else(|e| Err(format!("the reload failed: {e}"))),
        Err(_) => Err(format!(
            "the reload took longer than {}; the previous configuration stays in force",
            humantime::format_duration(runtime::READ_LIMIT)
        )),
    };
    app.shared.recorder.reload(ReloadRecord {
        at: Utc::now(),
        ok: result.is_ok(),
        error: result.as_ref().err().cloned(),
    });
    match &result {
        Ok(()) => info!("configuration reloaded"),
        Err(e) => app.record_error("reload", e.clone(), e.clone()),
    }
    result
}

/// Runs the startup and config-loaded event hooks; their events outlive the start.
fn startup_events(loaded: &Loaded, declared: &mut Declared) -> Result<Arc<Events>, StartError> {
    let events = Arc::new(std::mem::take(&mut declared.setup.events));
    if let Err(e) = events
        .emit(&Event::Startup)
        .and_then(|()| events.emit(&Event::ConfigLoaded(&loaded.config)))
    {
        declared
            .handle
            .record_error("startup hook", e.to_string(), trace_of(e.as_ref()));
        return Err(loaded.fail(StartCause::Hook {
            hook: "startup hook",
            source: e,
        }));
    }
    Ok(events)
}

/// The declared timers, which status lists from now on.
fn declare_timers(loaded: &Loaded, declared: &mut Declared) -> Timers {
    let mut timers = Timers::new(loaded.clock.clone(), loaded.zone);
    for timer in std::mem::take(&mut declared.setup.timers) {
        timers.add(timer);
    }
    let _ = declared.handle.shared.timers.set(timers.clone());
    timers
}

/// Bind: the RPC server with its layers, on `rpc.listen` (a process-mode RPC worker takes the
/// listener its parent handed over); None when `rpc.listen` is unset.
async fn bind_rpc(
    loaded: &mut Loaded,
    declared: &mut Declared,
    events: &Arc<Events>,
    metrics_layer: &MetricsLayer,
    sockets: &mut Sockets,
) -> Result<Option<(Server, Listener)>, StartError> {
    let rt = loaded.config.runtime().clone();
    let handle = declared.handle.clone();
    let Some(addr) = &rt.rpc.listen else {
        if !declared.services.is_empty() {
            warn!(app = %loaded.name, "services are declared but rpc.listen is not set: not serving RPC");
        }
        return Ok(None);
    };
    let mut builder = Server::builder()
        .max_message(rt.rpc.max_message)
        .max_in_flight(rt.rpc.max_in_flight)
        .max_unsent(rt.rpc.max_unsent)
        .max_values(rt.rpc.max_values)
        .stall_timeout(Some(rt.rpc.stall_timeout))
        .idle_timeout(Some(rt.rpc.idle_timeout))
        .max_connections(rt.rpc.max_connections)
        .blocking_threads(rt.rpc.blocking_threads)
        .layer(StatsLayer::with_stats(handle.shared.stats.clone()))
        .layer(metrics_layer.clone());
    if events.has(EventKind::BeforeCall) || events.has(EventKind::AfterCall) {
        builder = builder.layer(CallEventsLayer {
            events: events.clone(),
        });
    }
    for wrap in std::mem::take(&mut declared.setup.wraps) {
        builder = wrap(builder);
    }
    // Inside the application's layers and call hooks, so an access policy covers
    // shoal.status too.
    builder = builder.layer(RuntimeMethodsLayer {
        handle: handle.clone(),
        control: false,
    });
    builder = with_state(builder.layer(CatchPanicLayer::new()), &declared.setup.state);
    for service in std::mem::take(&mut declared.services) {
        builder = builder.service(service);
    }
    let server = builder
        .build()
        .map_err(|e| loaded.fail(StartCause::Declarations(e.to_string())))?;
    let must_inherit = matches!(loaded.role, Role::RpcWorker { .. });
    let listener = listen(
        "rpc",
        addr,
        Access::Open,
        must_inherit,
        &mut loaded.inherited,
        sockets,
    )
    .await
    .map_err(|e| bind_failed(loaded, &handle, "rpc.listen", e))?;
    let _ = handle
        .shared
        .rpc_addr
        .set(listener.local_addr().to_string());
    Ok(Some((server, listener)))
}

/// Bind: the admin socket (`admin.listen`), which alone answers the control methods, open to
/// its owner only from the moment it exists.
async fn bind_admin(
    loaded: &mut Loaded,
    handle: &Handle,
    metrics_layer: &MetricsLayer,
    path: &std::path::Path,
    sockets: &mut Sockets,
) -> Result<(Server, tokio::net::UnixListener), StartError> {
    let server = Server::builder()
        .layer(StatsLayer::with_stats(handle.shared.stats.clone()))
        .layer(metrics_layer.clone())
        .layer(RuntimeMethodsLayer {
            handle: handle.clone(),
            control: true,
        })
        .build()
        .map_err(|e| bind_failed(loaded, handle, "admin.listen", e.to_string()))?;
    let addr = Addr::Unix(path.to_owned());
    let listener = listen(
        "admin",
        &addr,
        Access::OwnerOnly,
        false,
        &mut loaded.inherited,
        sockets,
    )
    .await;
    // A failure here leaves no socket file of this process behind.
    let listener = listener
        .and_then(|l| unix_listener(&l, path))
        .map_err(|e| {
            sockets.remove_bound_files();
            bind_failed(loaded, handle, "admin.listen", e)
        })?;
    Ok((server, listener))
}

/// Bind: the Prometheus exporter's listener (`metrics.listen`), the master's own figures.
async fn bind_metrics(
    loaded: &mut Loaded,
    handle: &Handle,
    host_port: &str,
    sockets: &mut Sockets,
) -> Result<tokio::net::TcpListener, StartError> {
    let addr = Addr::Tcp(host_port.to_owned());
    let listener = listen(
        "metrics",
        &addr,
        Access::Open,
        false,
        &mut loaded.inherited,
        sockets,
    )
    .await
    .and_then(tokio_listener)
    .map_err(|e| {
        sockets.remove_bound_files();
        bind_failed(loaded, handle, "metrics.listen", e)
    })?;
    if let Ok(addr) = listener.local_addr() {
        let _ = handle.shared.metrics_addr.set(addr.to_string());
    }
    Ok(listener)
}

/// Launch: `on_start`, after every listener is bound; a failure removes the socket files
/// this process bound.
async fn call_on_start(
    loaded: &Loaded,
    handle: &Handle,
    sockets: &Sockets,
) -> Result<(), StartError> {
    if let Err(e) = loaded.hooks.on_start(handle).await {
        handle.record_error("on_start", e.to_string(), trace_of(e.as_ref()));
        sockets.remove_bound_files();
        return Err(loaded.fail(StartCause::Hook {
            hook: "on_start",
            source: e,
        }));
    }
    Ok(())
}

/// The workers' supervisors; only a process knows the binary to start process workers from.
fn launcher(loaded: &Loaded, handle: &Handle) -> Launcher {
    Launcher::new(
        handle.clone(),
        loaded.inv.exe.clone().filter(|_| loaded.process),
        loaded.inv.args.clone(),
        loaded.config.runtime().control.handover_timeout,
    )
}

/// Launch, in process mode: the RPC worker processes on the kept listener, each of which says
/// when it serves. A failure stops those started, within the grace period.
async fn start_rpc_workers(
    loaded: &Loaded,
    handle: &Handle,
    launcher: &Launcher,
    listener: OwnedFd,
    sockets: &Sockets,
) -> Result<(), StartError> {
    let rt = loaded.config.runtime();
    info!(
        processes = rt.rpc.processes,
        "process mode: starting the RPC workers"
    );
    let Err(e) = launcher.start_rpc(listener, rt.rpc.processes).await else {
        return Ok(());
    };
    handle.record_error("rpc workers", e.clone(), e.clone());
    handle.shared.closing.cancel();
    launcher.tracker.close();
    if tokio::time::timeout(rt.shutdown.grace, launcher.tracker.wait())
        .await
        .is_err()
    {
        launcher.abort().await;
    }
    sockets.remove_bound_files();
    Err(loaded.fail(StartCause::RpcWorkers(e)))
}

/// The admin socket's server and listener, served by `control::admin::serve`.
struct Admin {
    server: Server,
    listener: tokio::net::UnixListener,
    path: PathBuf,
}

/// The admin listener as the tokio listener `control::admin::serve` accepts on (it reads
/// each caller's credentials): a duplicate of its socket, which `listen` has already kept a
/// copy of for handing over.
fn unix_listener(
    listener: &Listener,
    path: &std::path::Path,
) -> Result<tokio::net::UnixListener, String> {
    let fail = |e: std::io::Error| format!("cannot serve the admin socket {}: {e}", path.display());
    let fd = listener.as_fd().try_clone_to_owned().map_err(fail)?;
    let std_listener = std::os::unix::net::UnixListener::from(fd);
    std_listener.set_nonblocking(true).map_err(fail)?;
    tokio::net::UnixListener::from_std(std_listener).map_err(fail)
}

/// Launch: a task per server until `accept_stop` fires, the admin socket's and the
/// exporter's.
fn serve(
    serving: Vec<(Server, Listener)>,
    admin: Option<Admin>,
    exporter: Option<tokio::net::TcpListener>,
) -> (CancellationToken, TaskTracker) {
    let accept_stop = CancellationToken::new();
    let servers = TaskTracker::new();
    for (server, listener) in serving {
        let stop = accept_stop.clone();
        servers.spawn(async move {
            if let Err(e) = server.serve(listener, stop.cancelled_owned()).await {
                warn!(error = %e, "server stopped");
            }
        });
    }
    if let Some(Admin {
        server,
        listener,
        path,
    }) = admin
    {
        let stop = accept_stop.clone().cancelled_owned();
        servers.spawn(control::admin::serve(server, listener, path, stop));
    }
    if let Some(listener) = exporter {
        servers.spawn(crate::metrics::serve(listener, accept_stop.clone()));
    }
    servers.close();
    (accept_stop, servers)
}

/// Launch: the timers until `stop` fires, each failure recorded.
fn run_timers(handle: &Handle, timers: Timers, stop: &CancellationToken) -> JoinHandle<()> {
    let reporter = handle.clone();
    tokio::spawn(timers.run(
        stop.clone(),
        Arc::new(move |failure: TimerFailure| {
            reporter.record_error(
                &format!("timer {}", failure.timer),
                failure.message,
                failure.trace,
            );
        }),
    ))
}

/// Launch: the watchdog, whose verdicts come out of the returned channel, and the periodic
/// summary; both follow reloads through `changed`.
fn watch_and_summarize(
    loaded: &Loaded,
    handle: &Handle,
    background: &TaskTracker,
    notifier: &Option<Arc<Notifier>>,
    changed: &Arc<Notify>,
) -> mpsc::UnboundedReceiver<String> {
    let (fired, fired_rx) = mpsc::unbounded_channel();
    background.spawn(watchdog::watch(
        handle.clone(),
        notifier.clone(),
        fired,
        changed.clone(),
        handle.shared.closing.clone(),
    ));
    background.spawn(watchdog::summarize(
        handle.clone(),
        loaded.clock.clone(),
        loaded.zone,
        changed.clone(),
        handle.shared.closing.clone(),
    ));
    fired_rx
}

/// Launch: signals become commands, when the application is the process; the task ends when
/// the returned token is cancelled.
fn forward_signals(
    loaded: &Loaded,
    handle: &Handle,
    second_exits: bool,
) -> (CancellationToken, Option<JoinHandle<()>>) {
    let stop = CancellationToken::new();
    if !loaded.process {
        return (stop, None);
    }
    match control::signal::forward(handle.shared.commands.clone(), stop.clone(), second_exits) {
        Ok(forward) => (stop, Some(tokio::spawn(forward))),
        Err(e) => {
            warn!(error = %e, "cannot install signal handlers");
            (stop, None)
        }
    }
}

/// Ready: status says running, systemd learns it (and the new main pid before the old process
/// may exit), a predecessor or parent is told, and the watchdog counts from here, not from
/// before a slow `on_start`.
fn ready(loaded: &mut Loaded, handle: &Handle, events: &Events, notifier: Option<&Notifier>) {
    events.notify(&Event::ServicesStarted);
    handle.shared.recorder.set_state(ServiceState::Running);
    if let Some(notifier) = notifier {
        match loaded.inherited.predecessor() {
            Some(_) => notifier.send(&format!("MAINPID={}\nREADY=1", std::process::id())),
            None => notifier.send("READY=1"),
        }
    }
    loaded.inherited.signal_ready();
    handle.reset_watchdog();
}

/// Where a started application listens, for [`Running`] and the log.
struct Addrs {
    rpc: Option<Addr>,
    admin: Option<PathBuf>,
    metrics: Option<SocketAddr>,
}

/// What the launch phase started, for the control loop to own.
struct Launched {
    events: Arc<Events>,
    sockets: Sockets,
    tasks: Tasks,
    notifier: Option<Arc<Notifier>>,
    /// Woken at every reload, for the tasks that follow the configuration.
    changed: Arc<Notify>,
    launcher: Launcher,
    /// The watchdog's verdicts.
    fired: mpsc::UnboundedReceiver<String>,
    addrs: Addrs,
}

/// Hands the started application to its control loop, which owns it from here.
fn control_loop(loaded: Loaded, declared: Declared, launched: Launched) -> Running {
    let handle = declared.handle;
    let runtime = Runtime {
        handle: handle.clone(),
        hooks: loaded.hooks,
        events: launched.events,
        exe: loaded.inv.exe,
        args: loaded.inv.args,
        env: loaded.inv.env,
        sockets: launched.sockets,
        handed_over: false,
        tasks: launched.tasks,
        notifier: launched.notifier,
        logging: loaded.logging,
        changed: launched.changed,
        registered: declared.registered,
        role: loaded.role,
        launcher: launched.launcher,
    };
    let done = tokio::spawn(runtime.control(declared.commands, launched.fired));
    Running {
        handle,
        rpc_addr: launched.addrs.rpc,
        admin_path: launched.addrs.admin,
        metrics_addr: launched.addrs.metrics,
        done,
    }
}

/// The size of each declared worker group: `[workers] NAME = COUNT`, else the declared one.
fn group_sizes(groups: &[WorkerGroup], config: &Config) -> Result<Vec<usize>, String> {
    for (i, group) in groups.iter().enumerate() {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if group.name.is_empty() || !group.name.chars().all(allowed) {
            return Err(format!(
                "worker group name {:?}: use ASCII letters, digits, '_' or '-'",
                group.name
            ));
        }
        if group.name == crate::workers::run::RPC_GROUP {
            return Err(format!(
                "worker group name {:?} is taken by process mode's RPC workers; choose another",
                group.name
            ));
        }
        if groups[..i].iter().any(|g| g.name == group.name) {
            return Err(format!("worker group {} is declared twice", group.name));
        }
    }
    let configured = &config.runtime().workers;
    if let Some((unknown, _)) = configured
        .counts
        .iter()
        .find(|(name, _)| !groups.iter().any(|g| &g.name == name))
    {
        let declared: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let known = match declared.is_empty() {
            true => "the application declares no worker group".to_string(),
            false => format!("the groups are {}", declared.join(", ")),
        };
        return Err(config
            .error_at(
                &format!("workers.{unknown}"),
                format!("no worker group {unknown} is declared; {known}"),
            )
            .to_string());
    }
    Ok(groups
        .iter()
        .map(|g| configured.count(&g.name).unwrap_or(g.count))
        .collect())
}

fn with_state(mut builder: ServerBuilder, state: &StateMap) -> ServerBuilder {
    for value in state.values.values() {
        builder = builder.state_any(value.clone());
    }
    builder
}

/// A failed setup function or service factory: a configuration error it returned (a section
/// that does not parse) is one, anything else a failure.
fn setup_failed(config: &Config, what: &str, error: BoxError) -> StartCause {
    match error.downcast::<ConfigError>() {
        Ok(error) => StartCause::Config(*error),
        Err(source) => StartCause::Setup {
            what: what.to_owned(),
            origin: origin(config),
            source,
        },
    }
}

/// A listener that cannot be bound or kept, placed at its key in the file: recorded (and
/// logged) as the status's last error.
fn bind_failed(loaded: &Loaded, handle: &Handle, key: &str, error: String) -> StartError {
    let error = loaded.config.error_at(key, error).to_string();
    handle.record_error("listen", error.clone(), error.clone());
    loaded.fail(StartCause::Listen(error))
}
