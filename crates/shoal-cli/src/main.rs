//! The `shoal` command: one binary for calling services, explaining configurations, watching
//! monitor feeds, generating code from an IDL, serving the echo bench and generating load. It owns signals and exit codes;
//! the libraries take a shutdown future.
//!
//! This file and `signal.rs` are the only ones that touch the process itself: `main` reads
//! the arguments, the environment and this binary's path and hands them to the commands as
//! values, and turns their result into the exit status; `signal.rs` installs the signal
//! handlers.
//!
//! Exit status: 0 done, 2 an error (printed on stderr), or a command's own (`shoal call`).
//! A command whose standard output closes (`shoal ps | head -1`, `shoal logs -f APP | head
//! -1`) ends quietly with status 0, as a reader that stops reading had what it wanted; no
//! command panics on it (writes go through `out.rs`).

mod agent;
mod bench;
mod bench_etcd;
mod bench_sim;
mod call;
mod center;
mod config;
mod config_cmd;
mod demo;
mod fleet;
mod idl;
mod monitor;
mod new;
mod out;
mod pkg;
mod queue;
mod signal;
mod up;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shoal_api::agent::AppAction;

#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    version,
    about = "shoal: services, RPC and fleet operations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Call METHOD on the server at ADDR with JSON arguments and print the result as JSON.
    Call(call::CallArgs),
    /// Start the echo service on a free port, call it, load it for a second, stop it.
    Demo,
    /// The echo bench: a server to measure, and a load generator.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Configurations: a service's files explained, and the center's versions, releases and
    /// status.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Subscribe to a service's monitor feed (monitor.publish) and print each status snapshot.
    Monitor(monitor::MonitorArgs),
    /// Create a service crate (from a pysvrkit JSON IDL with --idl) that builds, runs and
    /// passes its test as written.
    New(new::NewArgs),
    /// A local fleet in a minute: an agent, an RPC service and a crontab installed, a live
    /// status table; Ctrl-C stops everything.
    Up(up::UpArgs),
    /// Run an SDK example service (what `shoal up` packages): `shoal example hello --config FILE`.
    #[command(hide = true)]
    Example(up::ExampleArgs),
    /// Run the agent on a data directory: supervise the installed packages' programs, run
    /// their crontabs, serve the local API (DIR/agent.sock, token in DIR/agent.token).
    Agent(agent::AgentArgs),
    /// Install or upgrade a package on the agent; a failed upgrade rolls back by itself.
    Install(agent::InstallArgs),
    /// The agent's apps: state, pid, uptime, restarts, CPU, memory, health.
    Ps(agent::PsArgs),
    /// Start an app (and keep it started across agent restarts).
    Start(agent::NameArgs),
    /// Stop an app: its stop signal, then SIGKILL to its process group after its timeout.
    Stop(agent::NameArgs),
    /// Stop then start an app.
    Restart(agent::NameArgs),
    /// Send an app SIGHUP.
    Reload(agent::NameArgs),
    /// An app's captured output (-f to follow, --grep, --since).
    Logs(agent::LogsArgs),
    /// An app's installed versions.
    Versions(agent::VersionsArgs),
    /// Go back to an app's previous version (or --to VERSION).
    Rollback(agent::RollbackArgs),
    /// Back up an app's [backup] paths now.
    Backup(agent::BackupArgs),
    /// An app's backups, newest first.
    Backups(agent::BackupArgs),
    /// Put an app's [backup] paths back as a backup holds them (a service is stopped first).
    Restore(agent::RestoreArgs),
    /// Crontab jobs: ls, run, history.
    #[command(subcommand)]
    Cron(agent::CronCommand),
    /// Code from a pysvrkit JSON IDL (svr.json): a Python client.
    #[command(subcommand)]
    Idl(idl::IdlCommand),
    /// Packages: build a directory into NAME-VERSION.tar.gz, inspect an archive.
    #[command(subcommand)]
    Pkg(pkg::Pkg),
    /// The durable fan-out queue: run it (--data-dir DIR), or topic, sub, pub, get, stats.
    Queue(queue::QueueArgs),
    /// Run the center: the agents' port, the registry, the HTTP API.
    Center(center::CenterArgs),
    /// The center's tokens: create, ls, revoke.
    Token(fleet::TokenArgs),
    /// The agents joined to the center, or `revoke ID`.
    Agents(fleet::AgentsArgs),
    /// Upload a package to the center's repository.
    Push(fleet::PushArgs),
    /// The center's packages and their versions.
    Packages(fleet::PackagesArgs),
    /// Run an action on many agents through the center, or show a past command, or their logs.
    Fleet(fleet::FleetArgs),
    /// The center's audit log.
    Audit(fleet::AuditArgs),
    /// A service's endpoints in the center's registry (what discovery hands clients).
    Endpoints(fleet::EndpointsArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Call(args) => call::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Demo => demo::run(),
        Command::Config(cmd) => config::run(cmd, environment()),
        Command::Monitor(args) => monitor::run(args),
        Command::New(args) => new::run(args),
        Command::Agent(args) => agent::run_agent(args),
        Command::Up(args) => std::env::current_exe()
            .context("finding this binary to package it")
            .and_then(|exe| up::run(args, &exe)),
        Command::Example(args) => up::example(args, environment()),
        Command::Install(args) => agent::install(args),
        Command::Ps(args) => agent::ps(args),
        Command::Start(args) => agent::act(AppAction::Start, args),
        Command::Stop(args) => agent::act(AppAction::Stop, args),
        Command::Restart(args) => agent::act(AppAction::Restart, args),
        Command::Reload(args) => agent::act(AppAction::Reload, args),
        Command::Logs(args) => agent::logs(args),
        Command::Versions(args) => agent::versions(args),
        Command::Rollback(args) => agent::rollback(args),
        Command::Backup(args) => agent::backup(args),
        Command::Backups(args) => agent::backups(args),
        Command::Restore(args) => agent::restore(args),
        Command::Cron(cmd) => agent::cron(cmd),
        Command::Idl(cmd) => idl::run(cmd),
        Command::Pkg(cmd) => pkg::run(cmd),
        Command::Queue(args) => queue::run(args),
        Command::Center(args) => center::run(args),
        Command::Token(args) => fleet::token(args),
        Command::Agents(args) => fleet::agents(args),
        Command::Push(args) => fleet::push(args),
        Command::Packages(args) => fleet::packages(args),
        Command::Fleet(args) => fleet::fleet(args),
        Command::Audit(args) => fleet::audit(args),
        Command::Endpoints(args) => fleet::endpoints(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if out::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            out::errln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The process's environment, for the SDK's `SHOAL_…` overrides. A variable that is not
/// Unicode is no override, so it is left out (`std::env::vars` would panic on it).
fn environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}
