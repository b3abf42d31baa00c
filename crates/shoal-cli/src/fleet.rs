//! The center's client commands: `shoal token`, `shoal agents`, `shoal push`, `shoal packages`,
//! `shoal fleet ...` and `shoal audit`. Each is one call of the center's HTTP API, found through
//! `--center URL` (`SHOAL_CENTER`) with `--token` (`SHOAL_TOKEN`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use shoal_api::center::{
    AuditEntry, CommandRequest, CommandView, FleetLogLine, FleetLogsRequest, PackageInfo, Role,
    TokenCreated, TokenInfo, TokenRequest,
};
use shoal_api::fleet::{Action, AgentInfo, Selector, ServiceEndpoints, TargetStatus};
use shoal_center::client::CenterClient;

use crate::agent::table;
use crate::out::{outln, write_bytes};

/// Where the center is and the token to show it.
#[derive(Args, Debug, Clone)]
pub struct CenterArgs {
    /// The center's HTTP API: http://HOST:PORT.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "SHOAL_CENTER",
        default_value = "http://127.0.0.1:7441"
    )]
    center: String,
    /// The API token (shoal_<id>_<secret>); `shoal center` writes the first one to
    /// DIR/admin.token.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "SHOAL_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

impl CenterArgs {
    pub(crate) fn client(&self) -> anyhow::Result<CenterClient> {
        let token = self.token.as_deref().context(
            "no token: pass --token TOKEN or set SHOAL_TOKEN (the center's first admin token is in its DIR/admin.token)",
        )?;
        Ok(CenterClient::new(&self.center, token)?)
    }
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    center: CenterArgs,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token; its text is printed once, as the last line.
    Create {
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Limit the token to one namespace.
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        /// How long it is valid (90s, 10m, 24h, 30d); forever when absent.
        #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// How many agents a join token may enroll.
        #[arg(long, value_name = "N")]
        uses: Option<u32>,
    },
    /// List tokens (never their secrets).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Revoke token ID: refused from now on.
    Revoke { id: String },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum RoleArg {
    Join,
    Viewer,
    Operator,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Join => Role::Join,
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Operator => Role::Operator,
            RoleArg::Admin => Role::Admin,
        }
    }
}

pub fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let client = args.center.client()?;
    match args.command {
        TokenCommand::Create {
            role,
            namespace,
            ttl,
            uses,
        } => {
            let request = TokenRequest {
                role: role.into(),
                namespace,
                ttl_secs: ttl.map(|d| d.as_secs().max(1)),
                uses,
            };
            let created: TokenCreated = block_on(client.post("/api/v1/tokens", &request))?;
            outln!("id: {}", created.info.id)?;
            outln!("role: {}", created.info.role.name())?;
            if let Some(expires) = created.info.expires {
                outln!("expires: {}", expires.to_rfc3339())?;
            }
            outln!("{}", created.token)?;
        }
        TokenCommand::Ls { json } => {
            let tokens: Vec<TokenInfo> = block_on(client.get("/api/v1/tokens"))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&tokens)?)?;
            } else {
                out_tokens(&tokens)?;
            }
        }
        TokenCommand::Revoke { id } => {
            let info: TokenInfo =
                block_on(client.post(&format!("/api/v1/tokens/{}/revoke", path_part(&id)?), &()))?;
            outln!("revoked {}", info.id)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn out_tokens(tokens: &[TokenInfo]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.role.name().into(),
                t.namespace.clone().unwrap_or_else(|| "*".into()),
                t.expires.map_or_else(|| "never".into(), |e| e.to_rfc3339()),
                t.uses_left.map_or_else(|| "-".into(), |n| n.to_string()),
                if t.revoked { "revoked" } else { "valid" }.into(),
            ]
        })
        .collect();
    crate::out::out!(
        "{}",
        table(
            &["ID", "ROLE", "NAMESPACE", "EXPIRES", "USES", "STATE"],
            &rows
        )
    )
}

#[derive(Args, Debug)]
pub struct AgentsArgs {
    #[command(subcommand)]
    command: Option<AgentsCommand>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    center: CenterArgs,
}

#[derive(Subcommand, Debug)]
enum AgentsCommand {
    /// Close agent ID's link at once and refuse it from now on.
    Revoke { id: String },
}

pub fn agents(args: AgentsArgs) -> anyhow::Result<ExitCode> {
    let client = args.center.client()?;
    if let Some(AgentsCommand::Revoke { id }) = args.command {
        let agent: AgentInfo =
            block_on(client.post(&format!("/api/v1/agents/{}/revoke", path_part(&id)?), &()))?;
        outln!("revoked {} ({})", agent.id, agent.hostname)?;
        return Ok(ExitCode::SUCCESS);
    }
    let agents: Vec<AgentInfo> = block_on(client.get("/api/v1/agents"))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&agents)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = agents.iter().map(agent_row).collect();
    crate::out::out!(
        "{}",
        table(
            &[
                "ID",
                "HOSTNAME",
                "NAMESPACE",
                "LABELS",
                "ONLINE",
                "HEARTBEAT",
                "VERSION",
                "APPS"
            ],
            &rows
        )
    )?;
    Ok(ExitCode::SUCCESS)
}

fn agent_row(a: &AgentInfo) -> Vec<String> {
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let apps: Vec<String> = a
        .apps
        .iter()
        .map(|app| {
            let health = app
                .health
                .as_ref()
                .map_or_else(String::new, |h| format!(" {h}"));
            format!("{} {} {}{health}", app.name, app.version, app.state)
        })
        .collect();
    vec![
        a.id.clone(),
        a.hostname.clone(),
        a.namespace.clone(),
        or_dash(labels.join(",")),
        if a.revoked {
            "revoked".into()
        } else if a.online {
            "yes".into()
        } else {
            "no".into()
        },
        a.last_heartbeat
            .map_or_else(|| "-".into(), |t| t.format("%H:%M:%S").to_string()),
        a.version.clone(),
        or_dash(apps.join("; ")),
    ]
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The package archive, NAME-VERSION.tar.gz (`shoal pkg build` makes one). Its sha256 is
    /// sent with it, and checked first against FILE.sha256 when that is beside it.
    file: PathBuf,
    #[command(flatten)]
    center: CenterArgs,
}

pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let client = args.center.client()?;
    let data =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let sha256 = crate::pkg::checked_sha256(&args.file, &data)?;
    let info: PackageInfo = block_on(client.push_package(data.into(), &sha256.to_string()))?;
    outln!(
        "pushed {} {} sha256 {}",
        info.name,
        info.version,
        info.sha256
    )?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct PackagesArgs {
    /// Only this package's versions.
    name: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    center: CenterArgs,
}

pub fn packages(args: PackagesArgs) -> anyhow::Result<ExitCode> {
    let client = args.center.client()?;
    let path = match &args.name {
        Some(name) => format!("/api/v1/packages?name={}", path_part(name)?),
        None => "/api/v1/packages".into(),
    };
    let packages: Vec<PackageInfo> = block_on(client.get(&path))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&packages)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = packages
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.version.clone(),
                shoal_pkg::format_size(p.size),
                p.sha256.clone(),
            ]
        })
        .collect();
    crate::out::out!("{}", table(&["NAME", "VERSION", "SIZE", "SHA256"], &rows))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct EndpointsArgs {
    /// The service: the name of the package that declares its ports.
    service: String,
    /// Its namespace, when not the token's own.
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    center: CenterArgs,
}

pub fn endpoints(args: EndpointsArgs) -> anyhow::Result<ExitCode> {
    let client = args.center.client()?;
    let mut path = format!("/api/v1/services/{}/endpoints", path_part(&args.service)?);
    if let Some(namespace) = &args.namespace {
        path.push_str(&format!("?namespace={}", path_part(namespace)?));
    }
    let answer: ServiceEndpoints = block_on(client.get(&path))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&answer)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = answer
        .endpoints
        .iter()
        .map(|e| vec![e.agent.clone(), e.addr.clone()])
        .collect();
    crate::out::out!("{}", table(&["AGENT", "ADDR"], &rows))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The newest N entries.
    #[arg(long, value_name = "N", default_value_t = 100)]
    limit: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    center: CenterArgs,
}

pub fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let client = args.center.client()?;
    let entries: Vec<AuditEntry> =
        block_on(client.get(&format!("/api/v1/audit?limit={}", args.limit)))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&entries)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.token.clone(),
                e.role.map_or("-", Role::name).into(),
                e.action.clone(),
                or_dash(e.targets.join(",")),
                e.outcome.clone(),
            ]
        })
        .collect();
    crate::out::out!(
        "{}",
        table(
            &["SEQ", "TIME", "TOKEN", "ROLE", "ACTION", "TARGETS", "OUTCOME"],
            &rows
        )
    )?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct FleetArgs {
    #[command(subcommand)]
    command: FleetCommand,
    #[command(flatten)]
    center: CenterArgs,
}

/// Which agents: frozen into a target set when the command is submitted.
#[derive(Args, Debug, Clone)]
struct Targets {
    /// These agents (comma-separated ids).
    #[arg(long, global = true, value_name = "A,B", value_delimiter = ',')]
    ids: Vec<String>,
    /// Not these agents.
    #[arg(long, global = true, value_name = "C", value_delimiter = ',')]
    not_ids: Vec<String>,
    /// Agents with this label (repeat: all must match).
    #[arg(long = "label", global = true, value_name = "K=V", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Agents of this namespace.
    #[arg(long, global = true, value_name = "NS")]
    namespace: Option<String>,
    /// Every agent (of --namespace, when given).
    #[arg(long, global = true)]
    all: bool,
}

impl Targets {
    fn selector(&self) -> Selector {
        Selector {
            ids: self.ids.clone(),
            not_ids: self.not_ids.clone(),
            labels: self.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            namespace: self.namespace.clone(),
            all: self.all,
        }
    }
}

/// How a command runs.
#[derive(Args, Debug, Clone)]
struct Running {
    /// Targets worked on at once.
    #[arg(long, global = true, value_name = "N")]
    concurrency: Option<u32>,
    /// The deadline; a target not connected by then is reported offline.
    #[arg(long, global = true, value_name = "DUR", default_value = "60s",
        value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// {"command": ID, "results": {"AGENT_ID": {"status": ..., ...}}}
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum FleetCommand {
    /// Install NAME at VERSION (the newest pushed by default) from the center's repository.
    Install {
        name: String,
        version: Option<String>,
        #[command(flatten)]
        targets: Targets,
        #[command(flatten)]
        run: Running,
    },
    /// Go back to the previous version of NAME, or to --to V.
    Rollback {
        name: String,
        #[arg(long, value_name = "V")]
        to: Option<String>,
        #[command(flatten)]
        targets: Targets,
        #[command(flatten)]
        run: Running,
    },
    Start(NamedArgs),
    Stop(NamedArgs),
    Restart(NamedArgs),
    Reload(NamedArgs),
    /// Take a backup of NAME's data.
    Backup(NamedArgs),
    /// List NAME's backups.
    Backups(NamedArgs),
    /// Run cron job JOB of crontab NAME now.
    CronRun {
        name: String,
        job: String,
        #[command(flatten)]
        targets: Targets,
        #[command(flatten)]
        run: Running,
    },
    /// What each target runs.
    Ps {
        #[command(flatten)]
        targets: Targets,
        #[command(flatten)]
        run: Running,
    },
    /// A past command and its results.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// NAME's log lines from every target as they arrive, each prefixed with its agent.
    Logs(FleetLogsArgs),
}

#[derive(Args, Debug)]
struct NamedArgs {
    name: String,
    #[command(flatten)]
    targets: Targets,
    #[command(flatten)]
    run: Running,
}

#[derive(Args, Debug)]
struct FleetLogsArgs {
    name: String,
    /// Only lines matching this regular expression (matched on each agent).
    #[arg(long, value_name = "RE")]
    grep: Option<String>,
    /// Only lines from within this long (90s, 10m, 2h).
    #[arg(long, value_name = "DUR")]
    since: Option<String>,
    /// The last N lines of each target.
    #[arg(long, value_name = "N", default_value_t = 200)]
    tail: usize,
    /// Keep following.
    #[arg(short, long)]
    follow: bool,
    #[command(flatten)]
    targets: Targets,
}

pub fn fleet(args: FleetArgs) -> anyhow::Result<ExitCode> {
    let client = args.center.client()?;
    let (action, targets, run) = match args.command {
        FleetCommand::Show { id, json } => {
            let view: CommandView =
                block_on(client.get(&format!("/api/v1/commands/{}", path_part(&id)?)))?;
            return print_command(&view, json);
        }
        FleetCommand::Logs(logs) => return fleet_logs(&client, logs),
        FleetCommand::Install {
            name,
            version,
            targets,
            run,
        } => (Action::Install { name, version }, targets, run),
        FleetCommand::Rollback {
            name,
            to,
            targets,
            run,
        } => (Action::Rollback { name, to }, targets, run),
        FleetCommand::Start(n) => (Action::Start { name: n.name }, n.targets, n.run),
        FleetCommand::Stop(n) => (Action::Stop { name: n.name }, n.targets, n.run),
        FleetCommand::Restart(n) => (Action::Restart { name: n.name }, n.targets, n.run),
        FleetCommand::Reload(n) => (Action::Reload { name: n.name }, n.targets, n.run),
        FleetCommand::Backup(n) => (Action::Backup { name: n.name }, n.targets, n.run),
        FleetCommand::Backups(n) => (Action::Backups { name: n.name }, n.targets, n.run),
        FleetCommand::CronRun {
            name,
            job,
            targets,
            run,
        } => (Action::CronRun { name, job }, targets, run),
        FleetCommand::Ps { targets, run } => (Action::Ps, targets, run),
    };
    let request = CommandRequest {
        selector: targets.selector(),
        action,
        concurrency: run.concurrency,
        timeout_ms: Some(u64::try_from(run.timeout.as_millis()).unwrap_or(u64::MAX)),
    };
    let view: CommandView = block_on(client.post("/api/v1/commands", &request))?;
    print_command(&view, run.json)
}

/// One row per target; exit status 1 unless every target is ok.
fn print_command(view: &CommandView, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(view)?)?;
    } else {
        outln!("command {}", view.command)?;
        let rows: Vec<Vec<String>> = view
            .results
            .iter()
            .map(|(agent, r)| {
                vec![
                    agent.clone(),
                    r.status.as_str().into(),
                    r.duration_ms
                        .map_or_else(|| "-".into(), |ms| format!("{ms}ms")),
                    r.message.clone(),
                ]
            })
            .collect();
        crate::out::out!("{}", table(&["AGENT", "STATUS", "TOOK", "MESSAGE"], &rows))?;
    }
    let all_ok = view.results.values().all(|r| r.status == TargetStatus::Ok);
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn fleet_logs(client: &CenterClient, args: FleetLogsArgs) -> anyhow::Result<ExitCode> {
    let request = FleetLogsRequest {
        selector: args.targets.selector(),
        app: args.name,
        query: shoal_api::agent::LogQuery {
            grep: args.grep,
            since: args.since,
            follow: args.follow,
            lines: args.tail,
            ..Default::default()
        },
    };
    let mut failure = None;
    block_on(async {
        let lines = client.stream_lines("/api/v1/logs", &request, |line| {
            let Ok(line) = serde_json::from_slice::<FleetLogLine>(line) else {
                return true;
            };
            match write_bytes(format!("{}: {}\n", line.agent, line.line).as_bytes()) {
                Ok(()) => true,
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        });
        // The output closing ends the stream (and so every agent's) even while no line comes.
        tokio::select! {
            done = lines => done.map_err(anyhow::Error::from),
            () = crate::out::closed() => Err(anyhow::Error::new(crate::out::Closed)),
        }
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

pub(crate) fn parse_label(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not K=V"))?;
    if k.is_empty() {
        return Err(format!("{text:?} has an empty key"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// A name put in a URL path or query: ids and names are letters, digits, `-`, `_`, `.`.
fn path_part(name: &str) -> anyhow::Result<&str> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(name)
    } else {
        anyhow::bail!("{name:?} is not an id or a name: letters, digits, '-', '_' and '.' only")
    }
}

fn or_dash(text: String) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for one call")
        .block_on(future)
}
