//! `shoal queue`: run the durable fan-out queue (`--data-dir DIR`), or talk to one found
//! through `--queue ADDR` or `SHOAL_QUEUE`: topics, subscriptions, publish, get, stats.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use shoal_queue::{Client, Config, EngineKind, TlsFiles};
use shoal_rpc::{Addr, ClientTls};

use crate::out::{errln, outln};

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: Option<QueueCommand>,
    /// Run the queue on this data directory (without a subcommand).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Run the queue on JetStream at this NATS server instead of a data directory (a shoal
    /// built with the `nats` feature; the server should run with `sync_interval: always`).
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    nats: Option<String>,
    /// Where the queue listens: host:port or unix:PATH. Any address but loopback or a Unix
    /// socket needs --tls-cert, --tls-key and --token-file. The default port is clear of the
    /// center's (7440 for agents, 7441 for its HTTP API).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7450")]
    listen: String,
    /// PEM certificate chain to serve TLS with.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

/// How a command finds and reaches the queue.
#[derive(Args, Debug)]
struct ClientArgs {
    /// The queue's address: host:port or unix:PATH.
    #[arg(long, global = true, value_name = "ADDR", env = "SHOAL_QUEUE")]
    queue: Option<String>,
    /// A file (mode 0600) holding the queue's token: sent by clients, required by a server
    /// on a non-loopback address.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "SHOAL_QUEUE_TOKEN_FILE"
    )]
    token_file: Option<PathBuf>,
    /// PEM certificate to trust for a queue serving TLS.
    #[arg(long, global = true, value_name = "FILE", env = "SHOAL_QUEUE_CA")]
    ca: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum QueueCommand {
    /// Topics: create.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Durable subscriptions: add, rm.
    #[command(subcommand)]
    Sub(SubCommand),
    /// Publish DATA, or with `-` one message per line of standard input; prints the sequence
    /// numbers once the messages are on disk.
    Pub { topic: String, data: String },
    /// Print messages for a subscription, one per line (SEQ, a tab, the data).
    Get(GetArgs),
    /// Bytes, first and last sequence per topic; lag, unacknowledged and redelivered per
    /// subscription.
    Stats {
        topic: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create TOPIC (again with the same --max-bytes: no change).
    Create {
        topic: String,
        /// Bytes the topic may hold on disk (1048576, 512MiB, 2G); the queue's default, 1 GiB.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_bytes: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum SubCommand {
    /// Register SUB on TOPIC: it gets every message published from now on, connected or not.
    Add { topic: String, sub: String },
    /// Unregister SUB, releasing what only it still held.
    Rm { topic: String, sub: String },
}

#[derive(Args, Debug)]
struct GetArgs {
    topic: String,
    sub: String,
    /// At most N messages.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    max: u32,
    /// Wait up to DUR for a message when there is none.
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Acknowledge what was printed.
    #[arg(long)]
    ack: bool,
    /// One JSON object per line: {"seq", "data", "redelivered"}.
    #[arg(long)]
    json: bool,
}

/// Messages per publish call when reading standard input.
const PUBLISH_BATCH: usize = 1000;

pub fn run(args: QueueArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.command {
        None => runtime.block_on(serve(args)),
        Some(command) => runtime.block_on(client_command(command, &args.client)),
    }
}

async fn serve(args: QueueArgs) -> anyhow::Result<ExitCode> {
    let (data_dir, kind) = match (args.data_dir, args.nats) {
        (Some(dir), None) => (dir, EngineKind::File),
        (None, Some(url)) => (PathBuf::from(&url), EngineKind::Nats { url }),
        _ => bail!(
            "give --data-dir DIR (or --nats URL) to run the queue, or a subcommand (shoal queue --help)"
        ),
    };
    let listen: Addr = args
        .listen
        .parse()
        .with_context(|| format!("--listen {}", args.listen))?;
    let mut config = Config::new(&data_dir, listen);
    config.kind = kind;
    config.token_file = args.client.token_file;
    config.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let queue = shoal_queue::Queue::bind(config)
        .await
        .with_context(|| format!("starting the queue on {}", data_dir.display()))?;
    errln!(
        "shoal queue: data {}, listening on {}",
        data_dir.display(),
        queue.local_addr()
    );
    queue
        .serve(crate::signal::shutdown())
        .await
        .context("serving the queue")?;
    Ok(ExitCode::SUCCESS)
}

async fn client_command(command: QueueCommand, args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let client = connect(args).await?;
    match command {
        QueueCommand::Topic(TopicCommand::Create { topic, max_bytes }) => {
            client.create_topic(&topic, max_bytes).await?;
        }
        QueueCommand::Sub(SubCommand::Add { topic, sub }) => client.register(&topic, &sub).await?,
        QueueCommand::Sub(SubCommand::Rm { topic, sub }) => client.unregister(&topic, &sub).await?,
        QueueCommand::Pub { topic, data } if data == "-" => {
            let lines = tokio::task::spawn_blocking(|| {
                std::io::stdin()
                    .lock()
                    .lines()
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?
            .context("reading messages from standard input")?;
            for batch in lines.chunks(PUBLISH_BATCH) {
                let seqs = client.publish(&topic, batch.iter().cloned()).await?;
                print_seqs(&seqs)?;
            }
        }
        QueueCommand::Pub { topic, data } => {
            let seqs = client.publish(&topic, [data]).await?;
            print_seqs(&seqs)?;
        }
        QueueCommand::Get(get) => {
            let messages = client
                .fetch(&get.topic, &get.sub, get.max, get.wait)
                .await?;
            for m in &messages {
                let data = String::from_utf8_lossy(&m.data);
                if get.json {
                    let line = serde_json::json!({
                        "seq": m.seq,
                        "data": data,
                        "redelivered": m.redelivered,
                    });
                    outln!("{line}")?;
                } else {
                    outln!("{}\t{data}", m.seq)?;
                }
            }
            if get.ack && !messages.is_empty() {
                let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
                client.ack(&get.topic, &get.sub, &seqs).await?;
            }
        }
        QueueCommand::Stats { topic, json } => {
            let stats = client.stats(topic.as_deref()).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&stats)?)?;
            } else {
                print_stats(&stats)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let Some(queue) = &args.queue else {
        bail!("which queue? give --queue ADDR or set SHOAL_QUEUE (host:port or unix:PATH)");
    };
    let addr: Addr = queue.parse().with_context(|| format!("--queue {queue}"))?;
    let token = args
        .token_file
        .as_deref()
        .map(shoal_queue::server::read_token)
        .transpose()?;
    let tls = match &args.ca {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("--ca {}", path.display()))?;
            Some(ClientTls::from_ca_pem(&pem).with_context(|| format!("--ca {}", path.display()))?)
        }
        None => None,
    };
    Client::connect_with(&addr, tls, token)
        .await
        .with_context(|| format!("connecting to the queue at {addr}"))
}

fn print_seqs(seqs: &[u64]) -> anyhow::Result<()> {
    for seq in seqs {
        outln!("{seq}")?;
    }
    Ok(())
}

fn print_stats(stats: &[shoal_queue::TopicStats]) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for t in stats {
        rows.push(vec![
            t.topic.clone(),
            String::new(),
            t.bytes.to_string(),
            t.max_bytes.to_string(),
            t.first_seq.to_string(),
            t.last_seq.to_string(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        for s in &t.subs {
            rows.push(vec![
                t.topic.clone(),
                s.name.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                s.lag.to_string(),
                s.unacked.to_string(),
                s.redelivered.to_string(),
            ]);
        }
    }
    let header = [
        "TOPIC",
        "SUB",
        "BYTES",
        "MAX",
        "FIRST",
        "LAST",
        "LAG",
        "UNACKED",
        "REDELIVERED",
    ];
    crate::out::out!("{}", crate::agent::table(&header, &rows))
}

/// `1048576`, `64KiB`, `512MiB`, `2G`.
fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let unit = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1u64,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: expected a size like 1048576, 64KiB, 512MiB or 2G"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{text:?}: expected a size like 1048576, 64KiB, 512MiB or 2G"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_read_with_or_without_units() {
        for (text, expected) in [
            ("1048576", 1 << 20),
            ("64KiB", 64 << 10),
            ("512 MiB", 512 << 20),
            ("2G", 2 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
        for bad in ["", "ten", "5 parsecs", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
