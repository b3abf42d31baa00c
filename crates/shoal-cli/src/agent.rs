//! The agent and the commands that talk to it: `shoal agent` runs one on a data directory;
//! `shoal install`, `ps`, `start`, `stop`, `restart`, `reload`, `logs`, `versions`,
//! `rollback`, `backup`, `backups` and `cron` ask it over its local API. Each finds the agent
//! through `--data-dir DIR` (the agent's own flag) or `SHOAL_DATA_DIR`. Tables for people,
//! `--json` for scripts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use shoal_agent::api::AgentClient;
use shoal_agent::link::LinkOptions;
use shoal_agent::{Config, Options, Programs};
use shoal_api::agent::{
    ActionDone, AppAction, AppStatus, BackupCreated, BackupInfo, InstallReport, JobStatus,
    LogStream, Restored, RollbackRequest, RunRecord, VersionInfo, SHA256_HEADER,
};
use shoal_api::token::TokenText;
use tokio_util::sync::CancellationToken;

use crate::out::{errln, out, outln};

/// Where the agent keeps its data, for every agent command.
#[derive(Args, Debug, Clone)]
pub struct DataDirArg {
    /// The agent's data directory (else $SHOAL_DATA_DIR).
    #[arg(long, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDirArg {
    fn get(&self) -> anyhow::Result<&Path> {
        match &self.data_dir {
            Some(dir) => Ok(dir),
            None => bail!(
                "which agent? pass --data-dir DIR (the directory `shoal agent --data-dir DIR` \
                 uses) or set SHOAL_DATA_DIR"
            ),
        }
    }

    fn client(&self) -> anyhow::Result<AgentClient> {
        Ok(AgentClient::open(self.get()?)?)
    }
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Also serve the API on this loopback address (the Unix socket DIR/agent.sock always).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Stop every program when the agent stops (by default they keep running, and the next
    /// agent adopts them).
    #[arg(long)]
    stop_on_exit: bool,
    /// The center's agents' port to link to (HOST:PORT); without it the agent works alone.
    #[arg(long, value_name = "HOST:PORT")]
    center: Option<String>,
    /// The join token, made on the center with `shoal token create --role join`; needed on
    /// the first start only (the agent keeps its certificate in DIR/link/).
    #[arg(long, value_name = "TOKEN", requires = "center")]
    join: Option<String>,
    /// A label the center selects agents by (repeatable).
    #[arg(long = "label", value_name = "K=V", requires = "center", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The namespace to join (a join token scoped to one decides it instead).
    #[arg(long, value_name = "NS", requires = "center")]
    namespace: Option<String>,
    /// The host name or IP address others reach this machine's services at: the host of the
    /// endpoints the agent reports for the ports its services declare (`[run] ports`). By
    /// default, the local address of the agent's link to the center.
    #[arg(long, value_name = "HOST", value_parser = parse_advertise)]
    advertise: Option<String>,
}

/// `--advertise`: an IP address, or a DNS name (letters, digits, `-`, `.`), without a port.
fn parse_advertise(text: &str) -> Result<String, String> {
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(bare.to_owned());
    }
    let name = !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if name {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is neither an IP address nor a host name: give the host only, like \
             10.0.0.5 or web1.example.com, without a port"
        ))
    }
}

/// `K=V` as a label.
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?}: a label is written KEY=VALUE")),
    }
}

/// The link options of `shoal agent`'s flags, or `None` without `--center`.
fn link_options(args: &AgentArgs) -> anyhow::Result<Option<LinkOptions>> {
    let Some(center) = &args.center else {
        return Ok(None);
    };
    center
        .parse::<shoal_rpc::Addr>()
        .ok()
        .filter(|a| matches!(a, shoal_rpc::Addr::Tcp(_)))
        .ok_or_else(|| {
            anyhow::anyhow!("--center {center}: expected HOST:PORT of the center's agents' port")
        })?;
    let join = match &args.join {
        Some(text) => Some(
            text.parse::<TokenText>()
                .map_err(|e| anyhow::anyhow!("--join: {e}"))?,
        ),
        None => None,
    };
    let mut options = LinkOptions::new(center.clone());
    options.join = join;
    options.labels = args.labels.iter().cloned().collect();
    options.namespace.clone_from(&args.namespace);
    Ok(Some(options))
}

pub fn run_agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let dir = args.data.get()?.to_owned();
    let link = link_options(&args)?;
    raise_fd_limit();
    // While this is the process's only thread (see the function).
    let sized = shoal_agent::DataDir::create(&dir)
        .and_then(|data| shoal_agent::supervise::size_descriptor_table(&data));
    if let Err(e) = sized {
        tracing::debug!(error = %e, "descriptor table not sized for the programs");
    }
    let config = Config {
        link,
        data_dir: dir.clone(),
        options: Options {
            advertise: args.advertise.clone(),
            ..Options::default()
        },
        listen: args.listen,
        at_exit: if args.stop_on_exit {
            Programs::Stop
        } else {
            Programs::KeepRunning
        },
    };
    runtime()?.block_on(async {
        // The handlers first: a SIGTERM that comes while the programs start is kept until
        // start-up is over, then stops the agent as any other would, rather than killing it
        // with the default action and leaving its programs behind.
        let mut signals = crate::signal::Signals::new().context("installing signal handlers")?;
        let stop = CancellationToken::new();
        let running = shoal_agent::run(config, stop.clone()).await?;
        errln!(
            "shoal agent: data {}, API unix:{}{}",
            dir.display(),
            running.agent().data().socket().display(),
            running
                .bound()
                .tcp
                .map(|a| format!(" and http://{a}"))
                .unwrap_or_default()
        );
        if let Some(link) = running.link() {
            errln!(
                "shoal agent: linked to its center as agent {}",
                link.agent_id()
            );
        }
        // Start-up is over (the programs that should run were started): from here the
        // agent keeps resident only the code it runs. Beside waiting for the signal, which
        // must be watched from the start.
        let trim = async {
            let trimmed =
                tokio::task::spawn_blocking(|| shoal_agent::resident::trim_code(&laid_out_code()))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|trimmed| trimmed);
            match trimmed {
                Ok(trimmed) => tracing::debug!(
                    mapped = trimmed.mapped,
                    kept = trimmed.kept,
                    "code pages trimmed"
                ),
                Err(e) => tracing::debug!(error = %e, "code pages not trimmed"),
            }
        };
        tokio::join!(trim, signals.recv());
        stop.cancel();
        running.stopped().await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// The code of the functions the agent runs once its start-up is over, which a release build
/// lays out together (`agent.layout` up to `@mapped-end`, `crates/shoal/layout.rs`), and the
/// read-only data from the laid-out jump tables to the end of `.rodata`: the constants a
/// restart reads are scattered over it. None where the build did not lay out.
fn laid_out_code() -> Vec<&'static [u8]> {
    #[cfg(shoal_layout)]
    #[allow(unsafe_code)]
    {
        unsafe extern "C" {
            static __shoal_text_layout_start: u8;
            static __shoal_text_layout_mapped_end: u8;
            static __shoal_rodata_layout_start: u8;
            static __shoal_rodata_end: u8;
        }
        let between = |start: *const u8, end: *const u8| {
            // SAFETY: each pair of symbols bounds one run of the same loadable segment,
            // mapped readable while the process runs: the code pair one output section, the
            // read-only pair `.rodata.layout` and the `.rodata` that follows it (the linker
            // script inserts one before and marks the end of the other).
            unsafe { std::slice::from_raw_parts(start, end as usize - start as usize) }
        };
        vec![
            between(
                &raw const __shoal_text_layout_start,
                &raw const __shoal_text_layout_mapped_end,
            ),
            between(
                &raw const __shoal_rodata_layout_start,
                &raw const __shoal_rodata_end,
            ),
        ]
    }
    #[cfg(not(shoal_layout))]
    {
        Vec::new()
    }
}

/// Raises this process's soft limit on open files to its hard limit: the agent holds about
/// five descriptors per program, so the usual soft limit of 1024 runs out near 200 programs.
/// Programs inherit the raised limit.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Output as JSON instead of a table.
#[derive(Args, Debug, Clone)]
pub struct JsonArg {
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// A package built by `shoal pkg build`; its sha256 is read from FILE.sha256 beside it.
    file: PathBuf,
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    out: JsonArg,
}

pub fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let client = args.data.client()?;
    let sha256 = crate::pkg::written_sha256(&args.file)?
        .with_context(|| {
            format!(
                "{}.sha256: the package's checksum file is missing; `shoal pkg build` writes it beside the archive",
                args.file.display()
            )
        })?
        .to_string();
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let report: InstallReport = runtime()?.block_on(client.post_bytes(
        "/v1/install",
        &[(SHA256_HEADER, sha256.as_str())],
        bytes.into(),
    ))?;
    if args.out.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        match &report.previous {
            Some(previous) => outln!(
                "{} {}: {} from {previous}",
                report.name,
                report.version,
                report.outcome
            )?,
            None => outln!("{} {}: {}", report.name, report.version, report.outcome)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    out: JsonArg,
}

pub fn ps(args: PsArgs) -> anyhow::Result<ExitCode> {
    let client = args.data.client()?;
    let apps: Vec<AppStatus> = runtime()?.block_on(client.get("/v1/apps"))?;
    if args.out.json {
        outln!("{}", serde_json::to_string_pretty(&apps)?)?;
    } else {
        out!("{}", ps_table(&apps))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `shoal ps` as a table.
pub fn ps_table(apps: &[AppStatus]) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.version.clone(),
                a.state.to_string(),
                a.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                a.uptime_secs
                    .map(|s| {
                        humantime::format_duration(std::time::Duration::from_secs(s)).to_string()
                    })
                    .unwrap_or_else(|| "-".into()),
                a.restarts.to_string(),
                a.cpu_percent
                    .map(|c| format!("{c:.1}%"))
                    .unwrap_or_else(|| "-".into()),
                a.rss_bytes
                    .map(shoal_pkg::format_size)
                    .unwrap_or_else(|| "-".into()),
                a.health
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "VERSION", "STATE", "PID", "UPTIME", "RESTARTS", "CPU", "MEM", "HEALTH",
        ],
        &rows,
    )
}

/// Columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

#[derive(Args, Debug)]
pub struct NameArgs {
    /// The app's name.
    name: String,
    #[command(flatten)]
    data: DataDirArg,
}

/// `start`, `stop`, `restart` or `reload` NAME.
pub fn act(action: AppAction, args: NameArgs) -> anyhow::Result<ExitCode> {
    let client = args.data.client()?;
    let done: ActionDone = runtime()?.block_on(client.post(
        &format!("/v1/apps/{}/{action}", percent_encode(&args.name)),
        &serde_json::json!({}),
    ))?;
    outln!("{}: {} done", args.name, done.done)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The app's name.
    name: String,
    /// Keep printing what it writes next.
    #[arg(short, long)]
    follow: bool,
    /// Only lines matching this regular expression (matched in the agent).
    #[arg(long, value_name = "REGEX")]
    grep: Option<String>,
    /// Only lines captured within this long: 90s, 10m, 2h.
    #[arg(long, value_name = "DUR")]
    since: Option<String>,
    /// stdout, stderr or both.
    #[arg(long, default_value = "both")]
    stream: LogStream,
    /// How many of the last lines.
    #[arg(long, default_value_t = 200)]
    tail: usize,
    #[command(flatten)]
    data: DataDirArg,
}

pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = args.data.client()?;
    let mut query = vec![
        ("stream", args.stream.as_str().to_owned()),
        ("lines", args.tail.to_string()),
    ];
    if let Some(grep) = &args.grep {
        query.push(("grep", grep.clone()));
    }
    if let Some(since) = &args.since {
        query.push(("since", since.clone()));
    }
    if args.follow {
        query.push(("follow", "true".into()));
    }
    let query: String = query
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let path = format!("/v1/apps/{}/logs?{query}", percent_encode(&args.name));
    runtime()?.block_on(async {
        // The first failed write ends the command: what follows would not be seen.
        let mut unwritten = None;
        let write_failed = tokio_util::sync::CancellationToken::new();
        let streaming = client.stream(&path, |chunk| {
            if unwritten.is_none() {
                if let Err(e) = crate::out::write_bytes(chunk) {
                    unwritten = Some(e);
                    write_failed.cancel();
                }
            }
        });
        // A followed log that writes nothing more still ends when the reader goes
        // (`shoal logs -f APP | head -1`).
        let ended = tokio::select! {
            done = streaming => done.map_err(anyhow::Error::from),
            () = write_failed.cancelled() => Ok(()),
            () = crate::out::closed() => Err(crate::out::Closed.into()),
            () = crate::signal::shutdown() => Ok(()),
        };
        unwritten.map_or(ended, Err)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A path segment or query value with everything but unreserved characters percent-encoded:
/// a name the agent refuses gets its own answer, not one about the URL.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Args, Debug)]
pub struct VersionsArgs {
    name: String,
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    out: JsonArg,
}

pub fn versions(args: VersionsArgs) -> anyhow::Result<ExitCode> {
    let client = args.data.client()?;
    let list: Vec<VersionInfo> = runtime()?
        .block_on(client.get(&format!("/v1/apps/{}/versions", percent_encode(&args.name))))?;
    if args.out.json {
        outln!("{}", serde_json::to_string_pretty(&list)?)?;
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|v| {
                vec![
                    v.version.clone(),
                    if v.current {
                        "current".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        out!("{}", table(&["VERSION", ""], &rows))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    name: String,
    /// The version to go back to (default: the newest older than the current one).
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    out: JsonArg,
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let client = args.data.client()?;
    let report: InstallReport = runtime()?.block_on(client.post(
        &format!("/v1/apps/{}/rollback", percent_encode(&args.name)),
        &RollbackRequest { to: args.to },
    ))?;
    if args.out.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        outln!(
            "{} {}: rolled back from {}",
            report.name,
            report.version,
            report.previous.as_deref().unwrap_or("-")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    name: String,
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    out: JsonArg,
}

pub fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let client = args.data.client()?;
    let created: BackupCreated = runtime()?.block_on(client.post(
        &format!("/v1/apps/{}/backups", percent_encode(&args.name)),
        &serde_json::json!({}),
    ))?;
    if args.out.json {
        outln!("{}", serde_json::to_string_pretty(&created)?)?;
    } else {
        outln!(
            "{}: backed up to {} ({})",
            args.name,
            created.backup.id,
            shoal_pkg::format_size(created.backup.size)
        )?;
        for note in &created.notes {
            outln!("  note: {note}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn backups(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let client = args.data.client()?;
    let list: Vec<BackupInfo> = runtime()?
        .block_on(client.get(&format!("/v1/apps/{}/backups", percent_encode(&args.name))))?;
    if args.out.json {
        outln!("{}", serde_json::to_string_pretty(&list)?)?;
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|b| {
                vec![
                    b.id.clone(),
                    b.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    shoal_pkg::format_size(b.size),
                ]
            })
            .collect();
        out!("{}", table(&["BACKUP", "CREATED", "SIZE"], &rows))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    name: String,
    /// The backup, as `shoal backups NAME` lists it.
    backup: String,
    #[command(flatten)]
    data: DataDirArg,
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let client = args.data.client()?;
    let restored: Restored = runtime()?.block_on(client.post(
        &format!(
            "/v1/apps/{}/backups/{}/restore",
            percent_encode(&args.name),
            percent_encode(&args.backup)
        ),
        &serde_json::json!({}),
    ))?;
    outln!("{}: restored {}", restored.app, restored.restored)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum CronCommand {
    /// Every crontab job: schedule, next run, last run.
    Ls {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Run a job now (overlap = "forbid" still holds).
    Run {
        app: String,
        job: String,
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        out: JsonArg,
    },
    /// An app's past runs: start, duration, exit code, the tail of their output.
    History {
        app: String,
        job: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        out: JsonArg,
    },
}

pub fn cron(cmd: CronCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CronCommand::Ls { data, out } => {
            let client = data.client()?;
            let jobs: Vec<JobStatus> = runtime()?.block_on(client.get("/v1/cron"))?;
            if out.json {
                outln!("{}", serde_json::to_string_pretty(&jobs)?)?;
            } else {
                out!("{}", cron_table(&jobs))?;
            }
        }
        CronCommand::Run {
            app,
            job,
            data,
            out,
        } => {
            let client = data.client()?;
            let run: RunRecord = runtime()?.block_on(client.post(
                &format!(
                    "/v1/cron/{}/{}/run",
                    percent_encode(&app),
                    percent_encode(&job)
                ),
                &serde_json::json!({}),
            ))?;
            if out.json {
                outln!("{}", serde_json::to_string_pretty(&run)?)?;
            } else {
                outln!("{app}/{job}: run {}: {}", run.id, run.status)?;
                if !run.output.is_empty() {
                    outln!("{}", run.output)?;
                }
            }
        }
        CronCommand::History {
            app,
            job,
            limit,
            data,
            out,
        } => {
            let client = data.client()?;
            let mut query = format!("limit={limit}&app={}", percent_encode(&app));
            if let Some(job) = job {
                query.push_str(&format!("&job={}", percent_encode(&job)));
            }
            let runs: Vec<RunRecord> =
                runtime()?.block_on(client.get(&format!("/v1/cron/history?{query}")))?;
            if out.json {
                outln!("{}", serde_json::to_string_pretty(&runs)?)?;
            } else {
                out!("{}", runs_table(&runs))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Crontab jobs as a table.
pub fn cron_table(jobs: &[JobStatus]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                format!("{}/{}", j.app, j.job),
                j.schedule.clone(),
                j.next.map_or_else(|| "-".into(), time),
                if j.running.is_empty() {
                    String::new()
                } else {
                    "running".into()
                },
                match &j.last {
                    None => "-".into(),
                    Some(last) => format!("{} at {}", last.status, time(last.started_at)),
                },
            ]
        })
        .collect();
    table(&["JOB", "SCHEDULE", "NEXT", "NOW", "LAST"], &rows)
}

/// Past runs as a table; the output's last line shown.
pub fn runs_table(runs: &[RunRecord]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                format!("{}/{}", r.app, r.job),
                time(r.started_at),
                r.duration_ms
                    .map(|ms| {
                        humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
                    })
                    .unwrap_or_else(|| "-".into()),
                r.status.to_string(),
                r.output
                    .lines()
                    .last()
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect(),
            ]
        })
        .collect();
    table(
        &[
            "RUN",
            "JOB",
            "STARTED",
            "TOOK",
            "OUTCOME",
            "OUTPUT (LAST LINE)",
        ],
        &rows,
    )
}

/// A time for a table cell, as the agent's JSON has it (RFC 3339, UTC).
fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
