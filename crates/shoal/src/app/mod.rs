//! The application: [`App`] declares it, [`App::run`] runs it as a process (signals, exit
//! codes), [`App::start`] runs it inside a caller's runtime (tests, embedding) and returns a
//! [`Running`] to drive and await.
//!
//! Start: arguments → configuration (validated before anything is bound) → setup and
//! services (dependencies first) → listeners (inherited from a re-executed predecessor, or
//! bound) → `on_start` → serving, timers, watchdog, summary, run loop → ready (systemd
//! `READY=1`, the predecessor told to drain). Close: stop accepting, `on_close`, in-flight
//! calls, timers and the run loop finish within `shutdown.grace`, summary logged.

mod handle;
mod runtime;
mod services;
mod setup;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

pub use handle::Handle;
pub use setup::{ServiceEntry, Setup};
use shoal_rpc::Addr;
use tokio::task::JoinHandle;

use crate::control::handover::Inherited;
use crate::control::{self, Exit, Invocation};
use crate::hooks::{DynHooks, Hooks, NoHooks};
use crate::timer::{Clock, SystemClock, Zone};
use crate::BoxError;

type SetupFn = Box<dyn FnOnce(&mut Setup) -> Result<(), BoxError> + Send>;

/// An application: a name, a version, lifecycle hooks and a setup function that declares its
/// services, sections, timers and extensions.
///
/// ```no_run
/// use shoal::App;
///
/// #[shoal::service]
/// pub trait Hello {
///     async fn greet(&self, name: String) -> String;
/// }
///
/// struct Greeter;
///
/// impl Hello for Greeter {
///     async fn greet(&self, name: String) -> String {
///         format!("Hello, {name}")
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> shoal::Exit {
///     App::new("hello", env!("CARGO_PKG_VERSION"))
///         .setup(|app| {
///             app.serve(HelloServer::new(Greeter));
///             Ok(())
///         })
///         .run()
///         .await
/// }
/// ```
pub struct App {
    name: String,
    version: String,
    hooks: Arc<dyn DynHooks>,
    setup: Option<SetupFn>,
    invocation: Option<Invocation>,
    /// Why the arguments given to [`App::args`] were rejected; reported when it runs.
    args_error: Option<String>,
    clock: Arc<dyn Clock>,
    zone: Zone,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

impl App {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> App {
        App {
            name: name.into(),
            version: version.into(),
            hooks: Arc::new(NoHooks),
            setup: None,
            invocation: None,
            args_error: None,
            clock: Arc::new(SystemClock),
            zone: Zone::Local,
        }
    }

    /// The lifecycle hooks.
    pub fn hooks(mut self, hooks: impl Hooks) -> App {
        self.hooks = Arc::new(hooks);
        self
    }

    /// Declares services, sections, timers, state, layers and event hooks. It runs once, after
    /// the configuration is loaded; an error there stops the start (exit 2 when it is a
    /// configuration error, else 1).
    pub fn setup<F>(mut self, setup: F) -> App
    where
        F: FnOnce(&mut Setup) -> Result<(), BoxError> + Send + 'static,
    {
        self.setup = Some(Box::new(setup));
        self
    }

    /// Uses these arguments (after the program name) and environment instead of the
    /// process's: for tests and embedding. Arguments the command line would reject make
    /// `run` and `start` end with [`Exit::BadConfig`], saying why.
    pub fn args<A, E>(mut self, args: A, env: E) -> App
    where
        A: IntoIterator,
        A::Item: Into<OsString>,
        E: IntoIterator<Item = (String, String)>,
    {
        let args = args.into_iter().map(Into::into).collect();
        match Invocation::parse(args, env.into_iter().collect()) {
            Ok(inv) => self.invocation = Some(inv),
            Err(e) => self.args_error = Some(e),
        }
        self
    }

    /// Where timers and the summary read the time, and in which zone boundaries and cron
    /// fall (default: the system clock, local time).
    pub fn clock(mut self, clock: Arc<dyn Clock>, zone: Zone) -> App {
        self.clock = clock;
        self.zone = zone;
        self
    }

    /// Runs the application as the process: reads arguments and environment, handles signals,
    /// and returns how it ended (`fn main() -> shoal::Exit`). When waiting could hang (a
    /// second close signal, the grace period over, the watchdog) it ends the process at once
    /// with the documented code.
    pub async fn run(mut self) -> Exit {
        if let Some(e) = self.args_error.take() {
            eprintln!("{}: {e}", self.name);
            return Exit::BadConfig;
        }
        if self.invocation.is_none() {
            match Invocation::from_process() {
                Ok(inv) => self.invocation = Some(inv),
                Err(e) => {
                    eprintln!("{}: {e}", self.name);
                    return Exit::BadConfig;
                }
            }
        }
        if let Some(inv) = self.invocation.as_mut().filter(|inv| inv.exe.is_none()) {
            // Arguments from App::args: still this binary, which re-execution and worker
            // processes start again.
            inv.exe = control::executable();
        }
        let inherited = Inherited::from_env(
            &self
                .invocation
                .as_ref()
                .map(|inv| inv.env.clone())
                .unwrap_or_default(),
        );
        let running = match runtime::start(self, Some(inherited)).await {
            Ok(running) => running,
            Err(exit) => return exit,
        };
        let exit = running.wait().await;
        match exit {
            Exit::GraceExpired | Exit::Watchdog | Exit::Signal(_) => control::exit_now(exit),
            _ => exit,
        }
    }

    /// Starts the application inside the caller's runtime, without signal handlers or
    /// process exits; drive it through [`Running::handle`].
    pub async fn start(mut self) -> Result<Running, Exit> {
        if let Some(e) = self.args_error.take() {
            eprintln!("{}: {e}", self.name);
            return Err(Exit::BadConfig);
        }
        if self.invocation.is_none() {
            self.invocation = Some(Invocation::default());
        }
        runtime::start(self, None).await
    }
}

/// A started application.
#[derive(Debug)]
pub struct Running {
    handle: Handle,
    rpc_addr: Option<Addr>,
    admin_path: Option<PathBuf>,
    metrics_addr: Option<std::net::SocketAddr>,
    done: JoinHandle<Exit>,
}

impl Running {
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Where the RPC listener listens (the real port when `rpc.listen` asked for port 0).
    pub fn rpc_addr(&self) -> Option<&Addr> {
        self.rpc_addr.as_ref()
    }

    /// The admin socket's path, when `admin.listen` is set.
    pub fn admin_path(&self) -> Option<&std::path::Path> {
        self.admin_path.as_deref()
    }

    /// Where the Prometheus exporter listens (the real port when `metrics.listen` asked for
    /// port 0), when `metrics.listen` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Where the monitor feed is bound (`tcp://HOST:PORT` with the real port when
    /// `monitor.publish` asked for port 0, or `ipc://PATH`), waiting until it is; None when
    /// `monitor.publish` is unset or the application closes first. The bind is retried every
    /// second while it fails, so callers that cannot wait long put a timeout around this.
    pub async fn monitor_addr(&self) -> Option<String> {
        let shared = &self.handle.shared;
        let mut bound = shared.monitor_addr.subscribe();
        loop {
            if let Some(addr) = bound.borrow_and_update().clone() {
                return Some(addr);
            }
            if self.handle.is_closing() || self.handle.config().runtime().monitor.publish.is_none()
            {
                return None;
            }
            // The feed's task marks a change at every bind, close and reload.
            if bound.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Waits until the application has closed.
    pub async fn wait(self) -> Exit {
        self.done.await.unwrap_or(Exit::Failed)
    }
}
