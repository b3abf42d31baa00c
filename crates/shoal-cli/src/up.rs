//! `shoal up`: a working fleet of one machine, from a fresh clone. It starts an agent on a
//! local data directory, builds and installs two packages — `hello`, an RPC service built
//! with the SDK, and `greeter`, a crontab whose job calls it every five seconds — and shows
//! them in a live status table until Ctrl-C, which stops everything.
//!
//! Both packages run this very binary, named by its absolute path (a package's command may be
//! one): the service as `shoal example hello`, the job as `shoal call`. The data directory
//! (default `.shoal-up`, the agent's in `.shoal-up/data`) starts empty each time; a non-empty
//! directory that `shoal up` did not make, or one an agent runs on, is an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use shoal_agent::{Config, Programs};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// The agent's data directory, emptied first.
    #[arg(long, value_name = "DIR", default_value = ".shoal-up")]
    data_dir: PathBuf,
}

/// The file that marks a directory as `shoal up`'s, so that only such a directory (or an
/// empty one) is ever emptied.
const MARKER: &str = ".shoal-up";

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.data_dir;
    crate::agent::raise_fd_limit();
    let socket = dir.join("data").join("agent.sock");
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        bail!(
            "an agent already runs on {} (another shoal up?); stop it, or pass --data-dir for \
             another directory",
            dir.display()
        );
    }
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).is_file() {
            bail!(
                "{} is not empty and not a directory shoal up made (no {MARKER} in it); pass \
                 --data-dir with a new or empty directory",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "made by shoal up; emptied by the next shoal up\n",
    )?;
    let dir = dir.canonicalize()?;
    let port = free_port()?;
    let packages = build_packages(&dir.join("packages"), port)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Ctrl-C is ours from here on: during the installs too, everything started is stopped.
        let shutdown = crate::signal::shutdown();
        tokio::pin!(shutdown);
        let stop = tokio_util::sync::CancellationToken::new();
        let config = Config {
            at_exit: Programs::Stop,
            ..Config::new(dir.join("data"))
        };
        let running = shoal_agent::run(config, stop.clone()).await?;
        let agent = running.agent();
        let shown = async {
            for built in &packages {
                let report = agent.install(&built.archive, &built.sha256).await?;
                println!("installed {} {}", report.name, report.version);
            }
            println!(
                "agent on {} (try: shoal ps --data-dir {0}; shoal call 127.0.0.1:{port} greet \
                 '\"you\"'); Ctrl-C stops everything",
                dir.join("data").display()
            );
            let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
            loop {
                let apps = agent.apps().await?;
                let mut screen = String::new();
                if tty {
                    screen.push_str("\x1b[H\x1b[2J");
                }
                screen.push_str(&crate::agent::ps_table(&apps));
                let jobs = agent.cron_jobs().await?;
                screen.push('\n');
                screen.push_str(&crate::agent::cron_table(&jobs));
                screen.push_str(if tty {
                    "\nCtrl-C stops everything.\n"
                } else {
                    "\n"
                });
                print!("{screen}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        };
        // Whatever ends it (Ctrl-C, an error), everything started is stopped.
        let result = tokio::select! {
            _ = &mut shutdown => Ok(()),
            failed = shown => failed,
        };
        println!("stopping...");
        stop.cancel();
        running.stopped().await;
        println!("stopped");
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A loopback port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(listener.local_addr()?.port())
}

/// Writes and builds the two packages into `dir`.
fn build_packages(dir: &Path, port: u16) -> anyhow::Result<Vec<shoal_pkg::Built>> {
    let exe = std::env::current_exe().context("finding this binary to package it")?;
    let version = env!("CARGO_PKG_VERSION");
    let exe = exe.display();
    let hello = dir.join("hello");
    std::fs::create_dir_all(&hello)?;
    std::fs::write(
        hello.join("shoal.toml"),
        format!(
            "[package]\nname = \"hello\"\nversion = \"{version}\"\nkind = \"service\"\n\n\
             [run]\ncommand = \"{exe}\"\nargs = [\"example\", \"hello\", \"--config\", \"hello.toml\"]\n\
             restart = \"always\"\n\n[health]\nport = {port}\nping = true\ninterval = \"2s\"\n"
        ),
    )?;
    std::fs::write(
        hello.join("hello.toml"),
        format!("[rpc]\nlisten = \"127.0.0.1:{port}\"\n\n[hello]\ngreeting = \"Hello\"\n"),
    )?;
    let greeter = dir.join("greeter");
    std::fs::create_dir_all(&greeter)?;
    std::fs::write(
        greeter.join("shoal.toml"),
        format!(
            "[package]\nname = \"greeter\"\nversion = \"{version}\"\nkind = \"crontab\"\n\n\
             [[cron]]\nname = \"greet\"\nschedule = \"*/5 * * * * *\"\ncommand = \"{exe}\"\n\
             args = [\"call\", \"127.0.0.1:{port}\", \"greet\", \"\\\"cron\\\"\"]\n\
             overlap = \"forbid\"\ntimeout = \"10s\"\n"
        ),
    )?;
    let out = dir.join("built");
    std::fs::create_dir_all(&out)?;
    [hello, greeter]
        .iter()
        .map(|pkg| {
            shoal_pkg::build(pkg, &out).with_context(|| format!("building {}", pkg.display()))
        })
        .collect()
}

/// The SDK services `shoal example NAME` runs (what the packages of `shoal up` start).
#[derive(Args, Debug)]
pub struct ExampleArgs {
    /// `hello`: greet(name) answers "<greeting>, <name>", the greeting from `[hello]`.
    name: String,
    /// The service's own arguments (`--config FILE`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn example(args: ExampleArgs) -> anyhow::Result<ExitCode> {
    if args.name != "hello" {
        bail!("no example {:?}; the one there is: hello", args.name);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let exit = rt.block_on(hello::app().args(args.args, env).run());
    Ok(ExitCode::from(exit.code()))
}

/// The hello service: the SDK's `hello` example itself (its `main` goes unused here).
#[path = "../../shoal/examples/hello.rs"]
#[allow(dead_code)]
mod hello;
