//! `shoal center`: runs the center on a data directory until SIGINT or SIGTERM, through
//! `shoal_center::run`. The first start prints the admin token once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::out::out;

#[derive(Args, Debug)]
pub struct CenterArgs {
    /// Holds the store, the certificate authority and admin.token.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The agents' port (mutual TLS).
    #[arg(long, value_name = "ADDR", default_value = shoal_center::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The HTTP API (loopback only).
    #[arg(long, value_name = "ADDR", default_value = shoal_center::DEFAULT_HTTP)]
    http: SocketAddr,
    /// A name or address agents dial the center by, beyond this host's own (repeat).
    #[arg(long = "name", value_name = "NAME")]
    names: Vec<String>,
    /// How often agents send a heartbeat; three missed and an agent is offline.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat: std::time::Duration,
}

pub fn run(args: CenterArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut config = shoal_center::Config::new(&args.data_dir);
        config.listen = args.listen;
        config.http = args.http;
        config.names = args.names;
        config.link.heartbeat = args.heartbeat;
        // The handlers first: a SIGTERM as soon as the lines below are out stops it cleanly.
        let mut signals = crate::signal::Signals::new().context("installing signal handlers")?;
        let shutdown = CancellationToken::new();
        let running = shoal_center::run(config, shutdown.clone())
            .await
            .with_context(|| format!("starting the center on {}", args.data_dir.display()))?;
        // A server goes on when nobody reads its output: these lines are best effort (the
        // token is in its file whatever becomes of them).
        let mut said = format!(
            "agents' port: {}\nHTTP API: http://{}\nadmin token: in {}\n",
            running.listen,
            running.http,
            running.admin_token_file.display()
        );
        if let Some(token) = &running.admin_token {
            said.push_str(&format!(
                "the first admin token (shown once, kept in that file):\n{token}\n"
            ));
        }
        let _ = out!("{said}");
        signals.recv().await;
        shutdown.cancel();
        running.stopped().await;
        Ok(ExitCode::SUCCESS)
    })
}
