//! The `shoal` command: one binary for calling services, explaining configurations, watching
//! monitor feeds, generating code from an IDL, serving the echo bench and generating load. It owns signals and exit codes;
//! the libraries take a shutdown future.

mod bench;
mod call;
mod config;
mod demo;
mod idl;
mod monitor;
mod new;
mod pkg;
mod signal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// A service's config: every effective value and where it came from.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Subscribe to a service's monitor feed (monitor.publish) and print each status snapshot.
    Monitor(monitor::MonitorArgs),
    /// Create a service crate (from a pysvrkit JSON IDL with --idl) that builds, runs and
    /// passes its test as written.
    New(new::NewArgs),
    /// Code from a pysvrkit JSON IDL (svr.json): a Python client.
    #[command(subcommand)]
    Idl(idl::IdlCommand),
    /// Packages: build a directory into NAME-VERSION.tar.gz, inspect an archive.
    #[command(subcommand)]
    Pkg(pkg::Pkg),
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
        Command::Config(cmd) => config::run(cmd),
        Command::Monitor(args) => monitor::run(args),
        Command::New(args) => new::run(args),
        Command::Idl(cmd) => idl::run(cmd),
        Command::Pkg(cmd) => pkg::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
