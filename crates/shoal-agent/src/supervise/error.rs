//! [`SupervisorError`]: why a supervisor call failed, naming the program.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use shoal_pkg::manifest::Name;

use super::lock::LockError;
use crate::StateError;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no program named {name} is registered")]
    Unknown { name: Name },
    #[error("{name}: cannot start {}: {source}", program.display())]
    Spawn {
        name: Name,
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{name}: cannot capture its output: {source}")]
    Output {
        name: Name,
        #[source]
        source: io::Error,
    },
    #[error("{name} starts after {after}, which is not healthy: {reason}")]
    StartAfter {
        name: Name,
        after: Name,
        reason: String,
    },
    #[error("{name}: start_after goes round in a circle: {cycle}")]
    Cycle { name: Name, cycle: String },
    #[error("{name} is not healthy: {reason}")]
    NotHealthy { name: Name, reason: String },
    #[error("{name} is not running")]
    NotRunning { name: Name },
    #[error("{name}: cannot send {signal}: {source}")]
    Signal {
        name: Name,
        signal: Signal,
        #[source]
        source: Errno,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot start the output capture thread: {0}")]
    Capture(#[source] io::Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the supervisor has been shut down or detached")]
    Closed,
    /// Its start-up work on a blocking thread did not finish (the runtime is shutting down).
    #[error("opening the supervisor's state did not finish")]
    Opening(#[source] tokio::task::JoinError),
}
