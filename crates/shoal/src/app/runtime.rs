//! The running application: start-up in order, then one control loop that owns every change
//! of state (reload, close, re-execution, watchdog) so no two of them ever run at once.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
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

use super::handle::{Handle, Shared};
use super::setup::{Boxed, Setup, StateMap};
use super::{services, App, Running};
use crate::config::{Config, ConfigError};
use crate::control::admin::RuntimeMethodsLayer;
use crate::control::handover::{self, Inherited};
use crate::control::systemd::Notifier;
use crate::control::{self, Action, Command, Exit};
use crate::events::{CallEventsLayer, Event, EventKind, Events};
use crate::hooks::DynHooks;
use crate::live::ConfigCell;
use crate::logging::{self, LogHandle, SinkError, Sinks};
use crate::metrics::MetricsLayer;
use crate::status::{trace_of, Recorder, ReloadRecord, ServiceState};
use crate::timer::{TimerFailure, Timers};
use crate::workers::process::Role;
use crate::workers::run::Launcher;
use crate::workers::{Board, WorkerGroup};
use crate::{monitor, watchdog, BoxError};

/// Starts `app`. `inherited` is set when the application is the process (signals, systemd,
/// handover), holding what a predecessor handed over, if anything.
pub(super) async fn start(app: App, inherited: Option<Inherited>) -> Result<Running, Exit> {
    let process = inherited.is_some();
    let mut inherited = inherited.unwrap_or_default();
    let App {
        name,
        version,
        hooks,
        setup,
        invocation,
        args_error: _,
        clock,
        zone,
    } = app;
    let inv = invocation.unwrap_or_default();
    match inv.action {
        Action::Help => {
            print!("{}", control::usage(&name));
            return Err(Exit::Closed);
        }
        Action::Version => {
            println!("{name} {version}");
            return Err(Exit::Closed);
        }
        Action::Run | Action::Check => {}
    }
    // Only a process can be a worker: the variables come from its parent.
    let role = match process {
        true => Role::from_env(&inv.env).map_err(|e| {
            eprintln!("{name}: {e}");
            Exit::BadConfig
        })?,
        false => Role::App,
    };
    let config = Config::load(inv.config.as_deref(), inv.env.clone()).map_err(|e| {
        eprintln!("{name}: {e}");
        Exit::BadConfig
    })?;
    let logging = if process && inv.action == Action::Run {
        logging::init(&role.log_config(&config.runtime().log), &name).map_err(|e| {
            eprintln!("{name}: {}", sink_failed(&config, &e));
            Exit::Failed
        })?
    } else {
        None
    };
    // Before the setup, whose code may describe or record metrics already.
    if crate::metrics::install().is_none() {
        warn!("{}", crate::metrics::FOREIGN);
    }

    let (commands, command_rx) = mpsc::unbounded_channel();
    let cell = Arc::new(ConfigCell::new(config.clone()));
    let stats = Stats::new();
    let handle = Handle {
        shared: Arc::new(Shared {
            name: name.clone(),
            version,
            started_at: Utc::now(),
            started: Instant::now(),
            cell: cell.clone(),
            recorder: Recorder::new(),
            commands,
            closing: CancellationToken::new(),
            heartbeat_ms: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            stats: stats.clone(),
            hooks: hooks.clone(),
            timers: OnceLock::new(),
            services: OnceLock::new(),
            rpc_addr: OnceLock::new(),
            metrics_addr: OnceLock::new(),
            monitor_addr: watch::Sender::new(None),
            state: OnceLock::new(),
            workers: Arc::new(Board::default()),
        }),
    };

    // Declarations, then services in dependency order.
    let mut decl = Setup {
        handle: handle.clone(),
        cell,
        services: Vec::new(),
        timers: Vec::new(),
        state: StateMap::default(),
        wraps: Vec::new(),
        events: Events::default(),
        workers: Vec::new(),
    };
    if let Some(setup) = setup {
        setup(&mut decl).map_err(|e| setup_failed(&name, &config, "setup", e))?;
    }
    let registered: Vec<(String, Vec<String>)> = decl
        .services
        .iter()
        .map(|s| (s.name.clone(), s.requires.clone()))
        .collect();
    let order = services::resolve(&registered, config.runtime().services.enabled.as_deref())
        .map_err(|e| {
            eprintln!("{name}: {}: {e}", origin(&config));
            Exit::BadConfig
        })?;
    let mut built = Vec::new();
    let mut names = Vec::new();
    for index in order {
        let factory = decl.services[index].factory.take().expect("built once");
        let service_name = decl.services[index].name.clone();
        let service = factory(&mut decl)
            .map_err(|e| setup_failed(&name, &config, &format!("service {service_name}"), e))?;
        built.push(Boxed(service));
        names.push(service_name);
    }
    if let Some(group) = decl
        .workers
        .iter()
        .find(|g| g.kind == crate::WorkerKind::Process)
        .filter(|_| !process || inv.exe.is_none())
    {
        eprintln!(
            "{name}: worker group {} runs processes, which needs the application run as a \
             process of its own (App::run): App::start runs inside the caller's process",
            group.name
        );
        return Err(Exit::BadConfig);
    }
    let group_sizes = group_sizes(&decl.workers, &config).map_err(|e| {
        eprintln!("{name}: {e}");
        Exit::BadConfig
    })?;
    if inv.action == Action::Check {
        println!("{name}: configuration {} is valid", origin(&config));
        return Err(Exit::Closed);
    }
    let _ = handle.shared.services.set(names);
    let _ = handle.shared.state.set(decl.state.clone());
    if let Role::GroupWorker {
        group,
        index,
        count,
    } = &role
    {
        let groups = std::mem::take(&mut decl.workers);
        let worker = GroupWorker {
            group: group.clone(),
            index: *index,
            count: *count,
            logging: logging.clone(),
            role: role.clone(),
        };
        return group_worker(handle, groups, worker, inherited, inv, command_rx);
    }
    let events = Arc::new(std::mem::take(&mut decl.events));
    if let Err(e) = events
        .emit(&Event::Startup)
        .and_then(|()| events.emit(&Event::ConfigLoaded(&config)))
    {
        handle.record_error("startup hook", e.to_string(), trace_of(e.as_ref()));
        return Err(Exit::Failed);
    }
    let mut timers = Timers::new(clock.clone(), zone);
    for timer in std::mem::take(&mut decl.timers) {
        timers.add(timer);
    }
    let _ = handle.shared.timers.set(timers.clone());

    // Listeners: inherited from the process this one replaces, or bound.
    let rt = config.runtime().clone();
    let mut sockets = Sockets::default();
    let mut serving = Vec::new();
    let metrics_layer = MetricsLayer::new();
    let mut rpc_addr = None;
    let mut master_rpc = None;
    if let Some(addr) = &rt.rpc.listen {
        let mut builder = Server::builder()
            .max_message(rt.rpc.max_message)
            .max_in_flight(rt.rpc.max_in_flight)
            .blocking_threads(rt.rpc.blocking_threads)
            .layer(StatsLayer::with_stats(stats.clone()))
            .layer(metrics_layer.clone());
        if events.has(EventKind::BeforeCall) || events.has(EventKind::AfterCall) {
            builder = builder.layer(CallEventsLayer {
                events: events.clone(),
            });
        }
        for wrap in std::mem::take(&mut decl.wraps) {
            builder = wrap(builder);
        }
        // Inside the application's layers and call hooks, so an access policy covers
        // shoal.status too.
        builder = builder.layer(RuntimeMethodsLayer {
            handle: handle.clone(),
            control: false,
        });
        builder = with_state(builder.layer(CatchPanicLayer::new()), &decl.state);
        for service in built {
            builder = builder.service(service);
        }
        let server = builder.build().map_err(|e| {
            eprintln!("{name}: {e}");
            Exit::BadConfig
        })?;
        let must_inherit = matches!(role, Role::RpcWorker { .. });
        let listener = listen("rpc", addr, must_inherit, &mut inherited, &mut sockets)
            .await
            .map_err(|e| bind_failed(&handle, e))?;
        rpc_addr = Some(listener.local_addr());
        let _ = handle
            .shared
            .rpc_addr
            .set(listener.local_addr().to_string());
        if rt.rpc.processes > 0 && role == Role::App && process {
            // Process mode: the workers serve it; this process only hands it to them.
            let fd = listener
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| bind_failed(&handle, format!("cannot keep the rpc listener: {e}")))?;
            master_rpc = Some(fd);
        } else {
            if rt.rpc.processes > 0 && !process {
                warn!("rpc.processes applies to an application run as a process; serving here");
            }
            serving.push((server, listener));
        }
    } else if !built.is_empty() {
        warn!(app = %name, "services are declared but rpc.listen is not set: not serving RPC");
    }
    let mut admin_path = None;
    // Workers are controlled through their parent.
    if let Some(path) = rt.admin.listen.as_ref().filter(|_| !role.is_worker()) {
        let server = Server::builder()
            .layer(StatsLayer::with_stats(stats.clone()))
            .layer(metrics_layer.clone())
            .layer(RuntimeMethodsLayer {
                handle: handle.clone(),
                control: true,
            })
            .build()
            .map_err(|e| bind_failed(&handle, e.to_string()))?;
        let listener = listen(
            "admin",
            &Addr::Unix(path.clone()),
            false,
            &mut inherited,
            &mut sockets,
        )
        .await;
        // A failure here leaves no socket file of this process behind.
        let listener = listener
            .and_then(|l| owner_only(path).map(|()| l))
            .map_err(|e| {
                sockets.remove_bound_files();
                bind_failed(&handle, e)
            })?;
        admin_path = Some(path.clone());
        serving.push((server, listener));
    }
    let mut exporter = None;
    let mut metrics_addr = None;
    // The master serves the exporter (with its own figures; each worker has its own).
    if let Some(host_port) = rt.metrics.listen.as_ref().filter(|_| !role.is_worker()) {
        let listener = listen(
            "metrics",
            &Addr::Tcp(host_port.clone()),
            false,
            &mut inherited,
            &mut sockets,
        )
        .await
        .and_then(tokio_listener)
        .map_err(|e| {
            sockets.remove_bound_files();
            bind_failed(&handle, e)
        })?;
        metrics_addr = listener.local_addr().ok();
        if let Some(addr) = metrics_addr {
            let _ = handle.shared.metrics_addr.set(addr.to_string());
        }
        exporter = Some(listener);
    }

    if let Err(e) = hooks.on_start(&handle).await {
        handle.record_error("on_start", e.to_string(), trace_of(e.as_ref()));
        sockets.remove_bound_files();
        return Err(Exit::Failed);
    }

    // Workers: the groups, and in process mode the RPC worker processes, each of which
    // says when it serves.
    let launcher = Launcher::new(
        handle.clone(),
        inv.exe.clone().filter(|_| process),
        inv.args.clone(),
        rt.control.handover_timeout,
    );
    if !role.is_worker() {
        for (group, count) in decl.workers.iter().zip(group_sizes) {
            launcher.start_group(group, count);
        }
    }
    if let Some(fd) = master_rpc {
        info!(
            processes = rt.rpc.processes,
            "process mode: starting the RPC workers"
        );
        if let Err(e) = launcher.start_rpc(fd, rt.rpc.processes).await {
            handle.record_error("rpc workers", e.clone(), e);
            handle.shared.closing.cancel();
            launcher.tracker.close();
            if tokio::time::timeout(rt.shutdown.grace, launcher.tracker.wait())
                .await
                .is_err()
            {
                launcher.abort().await;
            }
            sockets.remove_bound_files();
            return Err(Exit::Failed);
        }
    }
    launcher.tracker.close();

    // Serve, tick, watch.
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
    if let Some(listener) = exporter {
        servers.spawn(crate::metrics::serve(listener, accept_stop.clone()));
    }
    servers.close();
    let timers_stop = CancellationToken::new();
    // A process-mode RPC worker serves; timers, the run loop, the watchdog and the summary
    // are its parent's.
    let timers_task = (!timers.is_empty() && !role.is_worker()).then(|| {
        let reporter = handle.clone();
        tokio::spawn(timers.run(
            timers_stop.clone(),
            Arc::new(move |failure: TimerFailure| {
                reporter.record_error(
                    &format!("timer {}", failure.timer),
                    failure.message,
                    failure.trace,
                );
            }),
        ))
    });
    let closing = handle.shared.closing.clone();
    let notifier = if process && !role.is_worker() {
        Notifier::from_env(&inv.env, inherited.predecessor()).map(Arc::new)
    } else {
        None
    };
    let changed = Arc::new(Notify::new());
    let (fired, fired_rx) = mpsc::unbounded_channel();
    let background = TaskTracker::new();
    if !role.is_worker() {
        background.spawn(watchdog::watch(
            handle.clone(),
            notifier.clone(),
            fired,
            changed.clone(),
            closing.clone(),
        ));
        background.spawn(watchdog::summarize(
            handle.clone(),
            clock,
            zone,
            changed.clone(),
            closing.clone(),
        ));
    }
    let run_task = {
        let hooks = hooks.clone();
        let app = handle.clone();
        let worker = role.is_worker();
        tokio::spawn(async move {
            if worker {
                app.closing().await;
                return Ok(());
            }
            hooks.run(app).await
        })
    };
    let signals_stop = CancellationToken::new();
    if process {
        match control::signal::forward(
            handle.shared.commands.clone(),
            signals_stop.clone(),
            !role.is_worker(),
        ) {
            Ok(forward) => drop(tokio::spawn(forward)),
            Err(e) => warn!(error = %e, "cannot install signal handlers"),
        }
    }

    // Ready.
    events.notify(&Event::ServicesStarted);
    handle.shared.recorder.set_state(ServiceState::Running);
    match inherited.predecessor() {
        Some(from) if !role.is_worker() => {
            info!(from, "took over the listeners from the previous process")
        }
        _ => {}
    }
    // systemd learns the new main pid before the old process may exit.
    if let Some(notifier) = &notifier {
        match inherited.predecessor() {
            Some(_) => notifier.send(&format!("MAINPID={}\nREADY=1", std::process::id())),
            None => notifier.send("READY=1"),
        }
    }
    inherited.signal_ready();
    // The watchdog counts from here, not from before a slow on_start.
    handle.reset_watchdog();
    info!(
        app = %name,
        rpc = ?rpc_addr,
        admin = ?admin_path,
        metrics = ?metrics_addr,
        pid = std::process::id(),
        "ready"
    );
    // After ready, so that the first snapshot says "running"; a worker's parent publishes.
    if !role.is_worker() {
        background.spawn(monitor::publish(
            handle.clone(),
            changed.clone(),
            closing.clone(),
        ));
    }
    background.close();

    let runtime = Runtime {
        handle: handle.clone(),
        hooks,
        events,
        exe: inv.exe.clone(),
        args: inv.args.clone(),
        env: inv.env.clone(),
        sockets,
        handed_over: false,
        accept_stop,
        timers_stop,
        servers,
        timers_task,
        run_task: Some(run_task),
        background,
        notifier,
        logging,
        changed,
        signals_stop,
        registered,
        role,
        launcher,
    };
    let done = tokio::spawn(runtime.control(command_rx, fired_rx));
    Ok(Running {
        handle,
        rpc_addr,
        admin_path,
        metrics_addr,
        done,
    })
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

/// Runs this process as a worker of a process group: no listener, timer or hook, only the
/// worker, until it ends or a close signal (its parent's SIGTERM) stops it; SIGHUP re-reads
/// the configuration.
/// Who a process worker is, and its logging.
struct GroupWorker {
    group: String,
    index: usize,
    count: usize,
    logging: Option<LogHandle>,
    role: Role,
}

fn group_worker(
    handle: Handle,
    groups: Vec<WorkerGroup>,
    worker: GroupWorker,
    mut inherited: Inherited,
    inv: control::Invocation,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> Result<Running, Exit> {
    let name = handle.name().to_owned();
    let GroupWorker {
        group,
        index,
        count,
        logging,
        role,
    } = worker;
    let Some(decl) = groups.into_iter().find(|g| g.name == group) else {
        eprintln!("{name}: this binary declares no worker group {group}");
        return Err(Exit::BadConfig);
    };
    let signals_stop = CancellationToken::new();
    match control::signal::forward(handle.shared.commands.clone(), signals_stop.clone(), false) {
        Ok(forward) => drop(tokio::spawn(forward)),
        Err(e) => warn!(error = %e, "cannot install signal handlers"),
    }
    handle.shared.recorder.set_state(ServiceState::Running);
    inherited.signal_ready();
    info!(
        group,
        index,
        pid = std::process::id(),
        "worker process runs"
    );
    let app = handle.clone();
    let env = inv.env;
    let done = tokio::spawn(async move {
        let body = {
            let app = app.clone();
            tokio::spawn(async move {
                crate::workers::run::as_group_worker(app, &decl, index, count).await
            })
        };
        let mut body = AbortOnDropHandle::new(body);
        loop {
            tokio::select! {
                exit = &mut body => {
                    signals_stop.cancel();
                    return exit.unwrap_or(Exit::Failed);
                }
                command = commands.recv() => match command {
                    Some(Command::Reload(reply)) => {
                        // Reading the file and opening log sinks block: off the executor.
                        let result = {
                            let (app, env, logging, role) =
                                (app.clone(), env.clone(), logging.clone(), role.clone());
                            tokio::task::spawn_blocking(move || {
                                reload_config(&app, &env, logging.as_ref(), &role)
                            })
                        }
                        .await
                        .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
                        app.shared.recorder.reload(ReloadRecord {
                            at: Utc::now(),
                            ok: result.is_ok(),
                            error: result.as_ref().err().cloned(),
                        });
                        match &result {
                            Ok(()) => info!("configuration reloaded"),
                            Err(e) => app.record_error("reload", e.clone(), e.clone()),
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    }
                    Some(Command::Restart(reply)) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Err("a worker process is restarted by its parent".into()));
                        }
                    }
                    Some(Command::Close { .. }) | None => break,
                },
            }
        }
        app.shared.recorder.set_state(ServiceState::Closing);
        app.shared.closing.cancel();
        let grace = app.config().runtime().shutdown.grace;
        let exit = match tokio::time::timeout(grace, &mut body).await {
            Ok(exit) => exit.unwrap_or(Exit::Failed),
            Err(_) => Exit::GraceExpired,
        };
        signals_stop.cancel();
        if let Some(logging) = logging {
            let _ = tokio::task::spawn_blocking(move || logging.close(LAST_MAIL)).await;
        }
        exit
    });
    Ok(Running {
        handle,
        rpc_addr: None,
        admin_path: None,
        metrics_addr: None,
        done,
    })
}

/// Re-reads the configuration and puts it in force, with its log sinks, for a worker process.
/// It blocks (reading the file, opening files and sockets): call it off the executor.
fn reload_config(
    handle: &Handle,
    env: &[(String, String)],
    logging: Option<&LogHandle>,
    role: &Role,
) -> Result<(), String> {
    let cell = &handle.shared.cell;
    let old = cell.snapshot();
    let config = Config::load(old.config.path(), env.to_vec()).map_err(|e| e.to_string())?;
    let snapshot = cell.prepare(config).map_err(|e| e.to_string())?;
    let sinks = prepare_sinks(logging, role, &old.config, &snapshot.config)?;
    cell.install(snapshot);
    if let (Some(logging), Some(sinks)) = (logging, sinks) {
        logging.install(sinks);
    }
    Ok(())
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

/// The listening sockets, kept for handing over and for removing Unix socket files at exit.
#[derive(Debug, Default)]
struct Sockets {
    /// Duplicates of the listeners' descriptors, by name.
    fds: Vec<(String, OwnedFd)>,
    /// Unix socket files, and whether this process bound them (rather than inherited them).
    files: Vec<(PathBuf, bool)>,
}

impl Sockets {
    /// At the end of a process that did not hand its sockets over.
    fn remove_files(&self) {
        for (path, _) in &self.files {
            let _ = std::fs::remove_file(path);
        }
    }

    /// When the start failed: a predecessor may still serve on the inherited ones.
    fn remove_bound_files(&self) {
        for (path, _) in self.files.iter().filter(|(_, bound)| *bound) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds `addr`, or takes the listener a predecessor handed over under `name`.
/// A process-mode RPC worker (`must_inherit`) serves on what its parent handed it, wherever
/// the configuration file says now, or not at all.
async fn listen(
    name: &str,
    addr: &Addr,
    must_inherit: bool,
    inherited: &mut Inherited,
    sockets: &mut Sockets,
) -> Result<Listener, String> {
    let mut listener = None;
    let fd = inherited.take(name);
    if must_inherit && fd.is_none() {
        return Err(format!(
            "the parent process handed over no {name} listener (SHOAL_HANDOVER_FDS)"
        ));
    }
    if let Some(fd) = fd {
        match Listener::from_fd(fd) {
            Ok(l) if must_inherit || same_place(&l.local_addr(), addr) => listener = Some(l),
            Err(e) if must_inherit => {
                return Err(format!("the inherited {name} listener is unusable: {e}"))
            }
            Ok(l) => warn!(
                configured = %addr,
                inherited = %l.local_addr(),
                "the inherited {name} listener is not where the configuration says; binding anew"
            ),
            Err(e) => warn!(error = %e, "the inherited {name} listener is unusable; binding anew"),
        }
    }
    let inherited_one = listener.is_some();
    let mut listener = match listener {
        Some(l) => l,
        None => Listener::bind(addr).await.map_err(|e| e.to_string())?,
    };
    // The runtime removes socket files itself: not after handing them over, and, when it
    // fails to start, only those it bound (a predecessor still serves on inherited ones).
    listener.leave_socket_file();
    if let Addr::Unix(path) = addr {
        sockets.files.push((path.clone(), !inherited_one));
    }
    let fd = listener
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot keep the {name} listener for handover: {e}"))?;
    sockets.fds.push((name.to_owned(), fd));
    Ok(listener)
}

/// Whether an inherited listener serves the configured address (port 0 matches any port).
fn same_place(actual: &Addr, configured: &Addr) -> bool {
    match (actual, configured) {
        (Addr::Unix(a), Addr::Unix(b)) => a == b,
        (Addr::Tcp(a), Addr::Tcp(b)) => {
            match (
                a.parse::<std::net::SocketAddr>(),
                b.parse::<std::net::SocketAddr>(),
            ) {
                (Ok(a), Ok(b)) => a.ip() == b.ip() && (b.port() == 0 || a.port() == b.port()),
                // A host name: trust the predecessor, which bound the same configuration.
                _ => true,
            }
        }
        _ => false,
    }
}

/// The metrics listener as the tokio listener hyper serves on: a duplicate of its socket,
/// which `listen` has already kept a copy of for handing over.
fn tokio_listener(listener: Listener) -> Result<tokio::net::TcpListener, String> {
    let local = listener.local_addr();
    let fail = |e: std::io::Error| format!("cannot serve the metrics on {local}: {e}");
    let fd = listener.as_fd().try_clone_to_owned().map_err(fail)?;
    let std_listener = std::net::TcpListener::from(fd);
    std_listener.set_nonblocking(true).map_err(fail)?;
    tokio::net::TcpListener::from_std(std_listener).map_err(fail)
}

fn owner_only(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {} to its owner: {e}", path.display()))
}

fn with_state(mut builder: ServerBuilder, state: &StateMap) -> ServerBuilder {
    for value in state.values.values() {
        builder = builder.state_any(value.clone());
    }
    builder
}

fn origin(config: &Config) -> String {
    config
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(default configuration)".into())
}

fn setup_failed(name: &str, config: &Config, what: &str, error: BoxError) -> Exit {
    if error.downcast_ref::<ConfigError>().is_some() {
        eprintln!("{name}: {error}");
        Exit::BadConfig
    } else {
        eprintln!(
            "{name}: {what} failed ({}): {}",
            origin(config),
            trace_of(error.as_ref())
        );
        Exit::Failed
    }
}

/// A log sink that cannot be set up, placed in the file like a config error.
fn sink_failed(config: &Config, error: &SinkError) -> ConfigError {
    config.error_at(error.key(), error.message())
}

fn bind_failed(handle: &Handle, error: String) -> Exit {
    handle.record_error("listen", error.clone(), error);
    Exit::Failed
}

/// How long the last log mail may take at close.
const LAST_MAIL: std::time::Duration = std::time::Duration::from_secs(10);

/// Everything the control loop owns.
struct Runtime {
    handle: Handle,
    hooks: Arc<dyn DynHooks>,
    events: Arc<Events>,
    exe: Option<PathBuf>,
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    sockets: Sockets,
    handed_over: bool,
    accept_stop: CancellationToken,
    timers_stop: CancellationToken,
    servers: TaskTracker,
    timers_task: Option<JoinHandle<()>>,
    run_task: Option<JoinHandle<Result<(), BoxError>>>,
    background: TaskTracker,
    notifier: Option<Arc<Notifier>>,
    logging: Option<LogHandle>,
    changed: Arc<Notify>,
    signals_stop: CancellationToken,
    /// Every service's name and requirements, to check `services.enabled` on reload.
    registered: Vec<(String, Vec<String>)>,
    role: Role,
    /// The workers' supervisors.
    launcher: Launcher,
}

impl Runtime {
    async fn control(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut fired: mpsc::UnboundedReceiver<String>,
    ) -> Exit {
        let mut run_task = self.run_task.take().expect("spawned at start");
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
                    self.stop_everything();
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
            Ok(()) => info!(file = ?old.config.path(), "configuration reloaded"),
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
        let config = Config::load(old.path(), self.env.clone()).map_err(|e| e.to_string())?;
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
        self.accept_stop.cancel();
        self.timers_stop.cancel();
        shared.closing.cancel();
        let deadline = Instant::now() + grace;
        let hooks = self.hooks.clone();
        let servers = self.servers.clone();
        let background = self.background.clone();
        let workers = self.launcher.tracker.clone();
        let timers_task = self.timers_task.take();
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
        self.finish();
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

    fn stop_everything(&self) {
        self.handle.shared.closing.cancel();
        self.accept_stop.cancel();
        self.timers_stop.cancel();
        self.finish();
    }

    fn finish(&self) {
        self.signals_stop.cancel();
        // A worker's socket files are its parent's: siblings, or a successor's workers,
        // still serve on them.
        if !self.handed_over && !self.role.is_worker() {
            self.sockets.remove_files();
        }
    }
}
