//! [`AgentError`], what the agent's methods fail with: a kind a transport maps to its own
//! codes (not found, conflict, invalid, failed), and the error that caused it kept as its
//! source.

use std::error::Error as StdError;
use std::fmt;

use shoal_pkg::manifest::{Name, Version};

use crate::hooks::HookError;
use crate::{StateError, SupervisorError};

/// Any error kept as a cause.
pub type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No such app, version, backup, cron job or run.
    #[error(transparent)]
    NotFound(Cause),
    /// The request clashes with what is there: a version installed already, the agent
    /// shutting down, a cron job already running.
    #[error(transparent)]
    Conflict(Cause),
    /// The request itself is wrong: a name, version, pattern or duration that does not read,
    /// an action a package cannot take.
    #[error(transparent)]
    Invalid(Cause),
    /// The agent could not do it: `doing` says what it was doing, the source why.
    #[error("{doing}")]
    Failed {
        doing: String,
        #[source]
        source: Cause,
    },
    /// An install, upgrade or rollback failed, and what runs now.
    #[error(transparent)]
    Change(Box<ChangeFailed>),
    /// A hook failed: which, how, and the end of its output.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The supervisor refused or failed: a program that did not start or become healthy.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// The agent's database.
    #[error(transparent)]
    State(#[from] StateError),
}

/// An install, upgrade or rollback of `app` to `version` failed; the source says why,
/// `aftermath` what runs now.
#[derive(Debug, thiserror::Error)]
#[error("{app} {version}: {aftermath}")]
pub struct ChangeFailed {
    pub app: Name,
    pub version: Version,
    pub aftermath: Aftermath,
    #[source]
    pub source: AgentError,
}

/// The kinds of [`AgentError`], for a transport to map to its codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Conflict,
    Invalid,
    Failed,
}

impl AgentError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            AgentError::NotFound(_) => ErrorKind::NotFound,
            AgentError::Conflict(_) => ErrorKind::Conflict,
            AgentError::Invalid(_) => ErrorKind::Invalid,
            AgentError::Supervisor(SupervisorError::Unknown { .. }) => ErrorKind::NotFound,
            AgentError::Failed { .. }
            | AgentError::Change(_)
            | AgentError::Hook(_)
            | AgentError::Supervisor(_)
            | AgentError::State(_) => ErrorKind::Failed,
        }
    }

    /// This error and its sources in one line of text, `what: why: why`, for a person.
    pub fn chain(&self) -> String {
        chain(self)
    }

    pub(crate) fn not_found(what: impl Into<Cause>) -> AgentError {
        AgentError::NotFound(what.into())
    }

    pub(crate) fn conflict(what: impl Into<Cause>) -> AgentError {
        AgentError::Conflict(what.into())
    }

    pub(crate) fn invalid(what: impl Into<Cause>) -> AgentError {
        AgentError::Invalid(what.into())
    }
}

/// A `map_err` that keeps `source` as the cause of failing at `doing`.
pub(crate) fn failed<E: Into<Cause>>(doing: impl Into<String>) -> impl FnOnce(E) -> AgentError {
    let doing = doing.into();
    move |source| AgentError::Failed {
        doing,
        source: source.into(),
    }
}

/// What runs after a failed install, upgrade or rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aftermath {
    /// It failed before the old version was stopped or `current` moved.
    NothingChanged,
    /// The old version runs again.
    RolledBack { app: Name, to: Version },
    /// The old version is current again but failed to start or to become healthy.
    RolledBackFailing {
        app: Name,
        to: Version,
        error: String,
    },
    /// `current` could not be put back; the upgrade stays written down, and the next agent
    /// start tries again.
    StuckBetween { to: Version, error: String },
    /// Nothing was installed before: the app is gone.
    Removed { app: Name },
}

impl fmt::Display for Aftermath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aftermath::NothingChanged => f.write_str("nothing changed"),
            Aftermath::RolledBack { app, to } => write!(f, "rolled back: {app} {to} runs again"),
            Aftermath::RolledBackFailing { app, to, error } => {
                write!(f, "rolled back to {app} {to}, which failed too ({error})")
            }
            Aftermath::StuckBetween { to, error } => write!(
                f,
                "could not switch back to {to} ({error}); the agent tries again when it next starts"
            ),
            Aftermath::Removed { app } => write!(f, "{app} is not installed"),
        }
    }
}

/// `error` and its sources, `: `-joined. A source whose text its error already ends with
/// (`{path}: {source}` messages) is said once.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut next = error.source();
    while let Some(source) = next {
        let said = source.to_string();
        if !last.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        last = said;
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_says_each_cause_once() {
        let io = std::io::Error::other("no space left on device");
        let e = failed("saving the upload")(io);
        assert_eq!(e.chain(), "saving the upload: no space left on device");
        assert_eq!(e.kind(), ErrorKind::Failed);

        #[derive(Debug, thiserror::Error)]
        #[error("/data/x: {source}")]
        struct Repeats {
            source: std::io::Error,
        }
        let e = failed("unpacking")(Repeats {
            source: std::io::Error::other("disk full"),
        });
        assert_eq!(e.chain(), "unpacking: /data/x: disk full");

        let e = AgentError::Change(Box::new(ChangeFailed {
            app: Name::new("web").unwrap(),
            version: "2.0.0".parse().unwrap(),
            aftermath: Aftermath::RolledBack {
                app: Name::new("web").unwrap(),
                to: "1.0.0".parse().unwrap(),
            },
            source: AgentError::invalid("web has no [run] program"),
        }));
        assert_eq!(
            e.chain(),
            "web 2.0.0: rolled back: web 1.0.0 runs again: web has no [run] program"
        );
    }
}
