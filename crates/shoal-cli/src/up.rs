//! `shoal up`: a working fleet of one machine, from a fresh clone. It starts a center and an
//! agent joined to it (each on its own part of a local data directory), builds two packages —
//! `hello`, an RPC service built with the SDK, and `greeter`, a crontab whose job calls it
//! every five seconds — pushes them to the center's repository, installs them on the agent,
//! and shows them in a live status table until Ctrl-C, which stops everything. It prints the
//! center's addresses and where its admin token is, so `shoal agents` and `shoal fleet ...`
//! work against it at once.
//!
//! Every way out stops everything: SIGINT, SIGTERM, SIGHUP (the terminal gone), an error and
//! standard output closing (`shoal up | head -3`: noticed even between two redraws, and
//! even when a reader that stopped reading has a write stuck). Each cancels the one
//! `CancellationToken` the agent's start and stop wait on; the agent stops the programs it
//! started and the crontab's runs before the process ends, so nothing it started outlives
//! it. The exit status is 2 after an error (printed on stderr), 0 otherwise.
//!
//! Both packages run this very binary, named by its absolute path (a package's command may be
//! one): the service as `shoal example hello`, the job as `shoal call`. The data directory
//! (default `.shoal-up`, the agent's in `.shoal-up/data`, the center's in `.shoal-up/center`)
//! starts empty each time; a non-empty
//! directory that `shoal up` did not make, or one an agent runs on, is an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use shoal_agent::{Agent, Config, Programs};
use shoal_api::center::{Role, TokenRequest};
use shoal_center::tokens::Caller;
use tokio_util::sync::CancellationToken;

use crate::out::out;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// The agent's data directory, emptied first.
    #[arg(long, value_name = "DIR", default_value = ".shoal-up")]
    data_dir: PathBuf,
}

/// The file that marks a directory as `shoal up`'s, so that only such a directory (or an
/// empty one) is ever emptied.
const MARKER: &str = ".shoal-up";

pub fn run(args: UpArgs, exe: &Path) -> anyhow::Result<ExitCode> {
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
    let packages = build_packages(&dir.join("packages"), exe, port)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The one cause everything stops for: the first of a signal, the output closing, or the
    // fleet's own end (an error).
    let shutdown = CancellationToken::new();
    let (watched, ran) = rt.block_on(async {
        tokio::join!(stop_causes(&shutdown), async {
            let ran = fleet(&dir, &packages, port, &shutdown).await;
            shutdown.cancel();
            ran
        })
    });
    // A write stuck behind a reader that stopped reading is left to end with the process.
    rt.shutdown_timeout(Duration::from_millis(100));
    ran?;
    watched?;
    Ok(ExitCode::SUCCESS)
}

/// Cancels `shutdown` on SIGINT, SIGTERM or SIGHUP, or when standard output's reader is
/// gone; returns once `shutdown` is cancelled, by them or by the fleet ending.
async fn stop_causes(shutdown: &CancellationToken) -> anyhow::Result<()> {
    let watched = tokio::select! {
        stop = crate::signal::stop() => stop
            .map(|signal| tracing::info!(%signal, "stopping everything"))
            .context("installing the handlers of SIGINT, SIGTERM and SIGHUP"),
        () = crate::out::closed() => {
            tracing::info!("standard output closed; stopping everything");
            Ok(())
        }
        () = shutdown.cancelled() => Ok(()),
    };
    shutdown.cancel();
    watched
}

/// The agent on `dir/data` with `packages` installed and shown, until `shutdown` fires or
/// something fails; then, whichever way it ended, every program, run and task the agent
/// started is stopped before this returns.
async fn fleet(
    dir: &Path,
    packages: &[shoal_pkg::Built],
    port: u16,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let center = start_center(&dir.join("center"), packages, shutdown).await?;
    let ran = agent_joined(dir, &center, packages, port, shutdown).await;
    shutdown.cancel();
    center.stopped().await;
    ran
}

/// A center on `dir` with `packages` in its repository; its API on 127.0.0.1:7441 when that is
/// free (so `shoal agents` finds it without `--center`), else on another port.
async fn start_center(
    dir: &Path,
    packages: &[shoal_pkg::Built],
    shutdown: &CancellationToken,
) -> anyhow::Result<shoal_center::Running> {
    let mut config = shoal_center::Config::new(dir);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let center = match shoal_center::run(config.clone(), shutdown.clone()).await {
        // The default port is taken (another center, another shoal up): any free one.
        Err(shoal_center::StartError::Bind { addr, .. }) if addr == config.http => {
            config.http = SocketAddr::from(([127, 0, 0, 1], 0));
            shoal_center::run(config, shutdown.clone()).await
        }
        other => other,
    }
    .context("starting the center")?;
    for built in packages {
        center
            .center
            .packages
            .push(&built.archive, Some(built.sha256))
            .await
            .with_context(|| format!("pushing {}", built.archive.display()))?;
    }
    Ok(center)
}

/// The agent on `dir/data`, joined to `center`, with `packages` installed and shown, until
/// `shutdown` fires or something fails; then, whichever way it ended, every program, run and
/// task the agent started is stopped before this returns.
async fn agent_joined(
    dir: &Path,
    center: &shoal_center::Running,
    packages: &[shoal_pkg::Built],
    port: u16,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let data = dir.join("data");
    let join = center
        .center
        .tokens
        .create(
            &TokenRequest {
                role: Role::Join,
                namespace: None,
                ttl_secs: Some(600),
                uses: Some(1),
            },
            &Caller::center(),
            &center.pin,
        )
        .await
        .context("making the agent's join token")?;
    let config = Config {
        at_exit: Programs::Stop,
        ..Config::new(&data)
    };
    let mut link = shoal_agent::link::LinkOptions::new(center.listen.to_string());
    link.join = Some(
        join.token
            .parse()
            .context("the join token the center made")?,
    );
    let config = Config {
        link: Some(link),
        ..config
    };
    let running = shoal_agent::run(config, shutdown.clone()).await?;
    let agent = running.agent();
    // From here on programs may run: every way out goes through the close below.
    let shown = async {
        for built in packages {
            let report = agent.install(&built.archive, &built.sha256).await?;
            write(format!("installed {} {}\n", report.name, report.version)).await?;
        }
        write(format!(
            "agent on {} (try: shoal ps --data-dir {0}; shoal call 127.0.0.1:{port} greet \
             '\"you\"'); Ctrl-C stops everything\n{}",
            data.display(),
            center_lines(center),
        ))
        .await?;
        show(agent).await
    };
    let result = tokio::select! {
        failed = shown => failed,
        () = shutdown.cancelled() => Ok(()),
    };
    shutdown.cancel();
    // The output may be what ended it, or be stuck: these lines are for whoever still
    // reads, and never hold up the stop.
    let _ = tokio::time::timeout(SAY_WITHIN, write("stopping...\n".into())).await;
    running.stopped().await;
    let _ = tokio::time::timeout(SAY_WITHIN, write("stopped\n".into())).await;
    result
}

/// Where the center is and how to reach it.
fn center_lines(center: &shoal_center::Running) -> String {
    format!(
        "center: agents' port {}, API http://{}; its admin token is in {}\n  \
         export SHOAL_CENTER=http://{} SHOAL_TOKEN=$(cat {})  # then: shoal agents; shoal fleet ps --all\n",
        center.listen,
        center.http,
        center.admin_token_file.display(),
        center.http,
        center.admin_token_file.display(),
    )
}

/// How long a line about stopping may take to write before the stop goes on without it.
const SAY_WITHIN: Duration = Duration::from_millis(200);

/// Writes `text` to standard output from a blocking thread: a reader that stops reading
/// (a full pipe) then holds up that thread alone, and a signal still stops everything.
async fn write(text: String) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || out!("{text}")).await?
}

/// Redraws the apps and crontab tables every second, until a write or a read fails.
async fn show(agent: &Agent) -> anyhow::Result<()> {
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
        write(screen).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(listener.local_addr()?.port())
}

/// Writes and builds the two packages into `dir`.
fn build_packages(dir: &Path, exe: &Path, port: u16) -> anyhow::Result<Vec<shoal_pkg::Built>> {
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

/// Runs the example with `env`, the process's environment (its `SHOAL_…` overrides).
pub fn example(args: ExampleArgs, env: Vec<(String, String)>) -> anyhow::Result<ExitCode> {
    if args.name != "hello" {
        bail!("no example {:?}; the one there is: hello", args.name);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exit = rt.block_on(hello::app().args(args.args, env).run());
    Ok(ExitCode::from(exit.code()))
}

/// The hello service: the SDK's `hello` example itself (its `main` goes unused here).
#[path = "../../shoal/examples/hello.rs"]
#[allow(dead_code)]
mod hello;
