//! [`StartError`]: why [`crate::App::start`] returned no running application, with the exit
//! code the process ends with. The library prints nothing; `App::run` prints it once.

use std::fmt;

use crate::config::ConfigError;
use crate::control::Exit;
use crate::BoxError;

/// Why an application did not start: its name and the cause, from which [`StartError::exit`]
/// follows. Displayed as `APP: CAUSE`, the line `App::run` prints.
#[derive(Debug)]
pub struct StartError {
    app: String,
    cause: StartCause,
}

/// What ended the start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartCause {
    /// Not a failure: the command line asked for text instead of a service (`--help`,
    /// `--version`, or `--check` of a valid configuration). It is the command's output, for
    /// standard output; exit 0.
    Answered(String),
    /// The command line or the worker variables a parent set are malformed; exit 2.
    Arguments(String),
    /// The configuration file, an override or a section the setup read is invalid; exit 2.
    Config(ConfigError),
    /// A log sink cannot be set up (a file that cannot be opened, a syslog socket that is
    /// not there); exit 1.
    LogSinks(ConfigError),
    /// The application's declarations do not fit together or with the configuration (unknown
    /// or cyclic services, worker groups, RPC limits, process workers without a process);
    /// exit 2.
    Declarations(String),
    /// The setup function or a service's factory failed; exit 1.
    Setup {
        /// `setup` or `service NAME`.
        what: String,
        /// The configuration file, or `(default configuration)`.
        origin: String,
        source: BoxError,
    },
    /// A startup or config-loaded event hook, or `on_start`, failed; exit 1. Already
    /// recorded as the status's last error and logged.
    Hook {
        hook: &'static str,
        source: BoxError,
    },
    /// A listener could not be bound or kept; exit 1. Already recorded and logged.
    Listen(String),
    /// A process-mode RPC worker did not start; exit 1. Already recorded and logged.
    RpcWorkers(String),
}

impl StartError {
    pub(crate) fn new(app: &str, cause: StartCause) -> StartError {
        StartError {
            app: app.to_owned(),
            cause,
        }
    }

    /// The application's name.
    pub fn app(&self) -> &str {
        &self.app
    }

    pub fn cause(&self) -> &StartCause {
        &self.cause
    }

    /// The exit code the process ends with: [`Exit::Closed`] for an answer,
    /// [`Exit::BadConfig`] for what the configuration or command line got wrong (nothing was
    /// bound or started), [`Exit::Failed`] for the rest.
    pub fn exit(&self) -> Exit {
        match &self.cause {
            StartCause::Answered(_) => Exit::Closed,
            StartCause::Arguments(_) | StartCause::Config(_) | StartCause::Declarations(_) => {
                Exit::BadConfig
            }
            StartCause::LogSinks(_)
            | StartCause::Setup { .. }
            | StartCause::Hook { .. }
            | StartCause::Listen(_)
            | StartCause::RpcWorkers(_) => Exit::Failed,
        }
    }

    /// Whether the runtime already logged the cause (and recorded it in status): printing it
    /// again would say it twice.
    pub fn is_logged(&self) -> bool {
        matches!(
            self.cause,
            StartCause::Hook { .. } | StartCause::Listen(_) | StartCause::RpcWorkers(_)
        )
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.app, self.cause)
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

impl fmt::Display for StartCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartCause::Answered(text) => f.write_str(text.trim_end()),
            StartCause::Arguments(why) | StartCause::Declarations(why) => f.write_str(why),
            StartCause::Config(e) | StartCause::LogSinks(e) => write!(f, "{e}"),
            StartCause::Setup { what, origin, .. } => write!(f, "{what} failed ({origin})"),
            StartCause::Hook { hook, .. } => write!(f, "{hook} failed"),
            StartCause::Listen(why) | StartCause::RpcWorkers(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for StartCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartCause::Setup { source, .. } | StartCause::Hook { source, .. } => {
                Some(source.as_ref())
            }
            _ => None,
        }
    }
}
