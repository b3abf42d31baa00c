//! The per-machine agent: installs packages into a data directory, supervises the programs
//! of service packages, captures their output, health-checks them, and runs the jobs of
//! crontab packages; its own state lives in SQLite beside them.
//!
//! # The data directory
//!
//! ```text
//! DATA/
//!   agent.db                     the agent's state (SQLite, WAL)
//!   agent.token                  the local API's token, mode 0600
//!   agent.sock                   the local API's Unix socket
//!   programs.sock                the programs socket (SHOAL_AGENT), mode 0600
//!   apps/NAME/versions/VERSION/  an unpacked package, never changed after install
//!   apps/NAME/current            -> versions/VERSION, switched atomically (rename of a symlink)
//!   apps/NAME/data/              the app's data, kept across versions
//!   apps/NAME/center/            the center's configuration of an SDK service: vN.toml, and
//!                                config.toml -> vN.toml, the version it should run
//!   logs/NAME/                   stdout.log, stderr.log and their rotated, compressed files
//!   backups/NAME/                backups of the app's [backup] paths
//!   run/NAME/                    the FIFOs a running program writes its output into
//!   run/supervise.lock           held by the agent that supervises the programs
//!   link/identity.json           with a center: id, own key, certificate, root; mode 0600
//!   link/agent.id                the id the center gave this agent
//! ```
//!
//! [`DataDir`] names every path; [`State`] opens the database.
//!
//! # Modules
//!
//! The domain: [`Agent`] (`agent.rs`; its methods take and answer `shoal-api` types and fail
//! with an [`AgentError`]), `layout.rs` ([`DataDir`]), `state.rs` ([`State`], the SQLite
//! database each part keeps its own tables in), [`versions`], [`hooks`], [`backup`],
//! [`cron`], [`logs`], [`supervise`] (the programs of service packages, their processes,
//! restarts, health checks and output: [`Supervisor`]) and [`central`] (the center's
//! configuration of each app, kept and delivered with proof). The transport: [`api`], the
//! local HTTP API over the agent, which nothing in the domain imports, [`link`], the link to
//! a center (enrollment, commands at most once per id, log streams, configuration versions),
//! and [`programs`], the socket the agent's programs reach it through. [`run`] puts them
//! together.
//!
//! # Central configuration
//!
//! How an app takes the center's configuration is the manifest's choice: without `[config]`
//! the app is a service built with the SDK, which reads the version as its center layer
//! (`SHOAL_CENTER_CONFIG`), is told of a new one on the programs socket (`SHOAL_AGENT`),
//! reloads through its own checks and acknowledges applied or rejected; with `[config]`
//! (`path`, and `reload_signal` or, without it, a restart) the agent writes the file itself,
//! signals or restarts the program and
//! judges it as an upgrade is judged (still running and healthy, the same process, after
//! the settle time). [`central`] has the details; `config.applied` carries the outcome to
//! the center, and every report carries each app's newest version and where it stands.

mod agent;
pub mod api;
pub mod backup;
pub mod central;
pub mod cron;
mod error;
pub mod hooks;
mod layout;
pub mod link;
pub mod logs;
pub mod programs;
pub mod resident;
mod run;
mod state;
pub mod supervise;
mod to_api;
pub mod versions;

pub use agent::{Agent, DiskFull, Options, Programs};
pub use error::{chain, Aftermath, AgentError, Cause, ChangeFailed, ErrorKind};
pub use layout::DataDir;
pub use run::{run, Config, RunError, Running};
pub use state::{State, StateError};
pub use supervise::{ProgramSpec, ProgramState, ProgramStatus, Supervisor, SupervisorError};
