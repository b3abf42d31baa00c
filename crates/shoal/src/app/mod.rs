//! The application: [`App`] declares it, [`App::run`] runs it as a process (signals, exit
//! codes), [`App::start`] runs it inside a caller's runtime (tests, embedding) and returns a
//! [`Running`] to drive and await.
//!
//! Start (`start.rs`), in phases: load (arguments, role, configuration validated whole,
//! logging) → declare (setup, services dependencies first, worker groups) → bind (listeners,
//! inherited from a re-executed predecessor or a parent, or bound) → launch (`on_start`,
//! workers, serving, timers, watchdog, summary, run loop, then ready: systemd `READY=1`, the
//! predecessor told to drain). A start that ends early is a [`StartError`], printed only by
//! [`App::run`]. Close (`runtime.rs`): stop accepting, `on_close`, in-flight calls, timers
//! and the run loop finish within `shutdown.grace`, summary logged.

mod error;
mod handle;
mod listen;
mod runtime;
mod services;
mod setup;
mod start;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

pub use error::{StartCause, StartError};
pub use handle::Handle;
pub use setup::{ServiceEntry, Setup};
use shoal_rpc::Addr;
use tokio::task::JoinHandle;

use crate::control::handover::Inherited;
use crate::control::{self, Exit, Invocation};
use crate::hooks::{DynHooks, Hooks, NoHooks};
use crate::status::trace_of;
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
    /// `start` return a [`StartError`] with [`Exit::BadConfig`] saying why, which `run`
    /// prints.
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
    ///
    /// This is the one place the runtime prints: `--help`, `--version` and `--check` answer
    /// on standard output, and a start that fails says why on standard error in one line
    /// (unless the cause was already logged).
    pub async fn run(mut self) -> Exit {
        if self.invocation.is_none() && self.args_error.is_none() {
            match Invocation::from_process() {
                Ok(inv) => self.invocation = Some(inv),
                Err(e) => self.args_error = Some(e),
            }
        }
        if let Some(inv) = self.invocation.as_mut().filter(|inv| inv.exe.is_none()) {
            // Arguments from App::args: still this binary, which re-execution and worker
            // processes start again.
            inv.exe = control::executable();
        }
        let env = self
            .invocation
            .as_ref()
            .map(|inv| inv.env.clone())
            .unwrap_or_default();
        let running = match start::start(self, Some(Inherited::from_env(&env))).await {
            Ok(running) => running,
            Err(e) => {
                print_start_error(&e);
                return e.exit();
            }
        };
        let exit = running.wait().await;
        match exit {
            Exit::GraceExpired | Exit::Watchdog | Exit::Signal(_) => control::exit_now(exit),
            _ => exit,
        }
    }

    /// Starts the application inside the caller's runtime, without signal handlers or
    /// process exits; drive it through [`Running::handle`]. It prints nothing: a start that
    /// ends early returns a [`StartError`] with its exit code and cause (or, for `--help`,
    /// `--version` and `--check` given through [`App::args`], the text to show).
    pub async fn start(mut self) -> Result<Running, StartError> {
        if self.invocation.is_none() {
            self.invocation = Some(Invocation::default());
        }
        start::start(self, None).await
    }
}

/// Prints why the start ended, once: an answer on standard output, a failure on standard
/// error with its causes, one per line. A closed output is not worth a panic: the exit code
/// still says how it went.
fn print_start_error(error: &StartError) {
    use std::io::Write as _;
    match error.cause() {
        StartCause::Answered(text) => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
        _ if error.is_logged() => {}
        _ => {
            let mut text = error.to_string();
            if let Some(source) = std::error::Error::source(error) {
                text.push_str(": ");
                text.push_str(&trace_of(source));
            }
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
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
