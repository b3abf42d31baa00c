//! `shoal config push|versions|show|diff|promote|rollback|status`: the center's configurations,
//! each one call of its API (`/api/v1/configs`), found through `--center URL`
//! (`SHOAL_CENTER`) with `--token` (`SHOAL_TOKEN`). `--namespace` picks the namespace; without
//! it a token limited to one works in its own, any other in `default`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use shoal_api::center::{
    ConfigPush, ConfigPushed, ConfigRelease, ConfigStatus, GrayTarget, InstanceState,
};
use shoal_api::config::MAX_CONFIG_BYTES;

use crate::agent::table;
use crate::fleet::{block_on, parse_label, CenterArgs};
use crate::out::{out, outln, write_bytes};

/// The configuration and where it is.
#[derive(Args, Debug)]
pub struct NameArgs {
    /// The configuration, named after the app it configures.
    name: String,
    /// Its namespace.
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    #[command(flatten)]
    center: CenterArgs,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").args(["ids", "label", "percent"])))]
pub struct PushArgs {
    #[command(flatten)]
    config: NameArgs,
    /// The content: UTF-8 text, not empty, at most 1 MiB.
    file: PathBuf,
    /// What changed and why, kept with the version.
    #[arg(long, value_name = "TEXT")]
    message: Option<String>,
    /// Release it only to the instances that --ids, --label or --percent name; the others
    /// keep the stable version until `shoal config promote`.
    #[arg(long, requires = "target")]
    gray: bool,
    /// The agents (ids, comma-separated) of a gray release.
    #[arg(long, value_name = "A,B", value_delimiter = ',', requires = "gray")]
    ids: Vec<String>,
    /// The agents with this label, of a gray release.
    #[arg(long, value_name = "K=V", value_parser = parse_label, requires = "gray")]
    label: Option<(String, String)>,
    /// This share of the agents (1 to 100), of a gray release: raising it keeps every agent
    /// that had it.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u8).range(1..=100), requires = "gray")]
    percent: Option<u8>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    config: NameArgs,
    /// The version to print; the stable one when absent.
    #[arg(long, value_name = "V")]
    version: Option<u64>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    #[command(flatten)]
    config: NameArgs,
    /// The version diffed from.
    v1: u64,
    /// The version diffed to.
    v2: u64,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    config: NameArgs,
    /// The version whose content to publish again; the stable version before the current
    /// one when absent.
    #[arg(long, value_name = "V")]
    to: Option<u64>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    config: NameArgs,
    #[arg(long)]
    json: bool,
}

pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let content = read_content(&args.file)?;
    let gray = match (args.ids.is_empty(), args.label, args.percent) {
        (false, _, _) => Some(GrayTarget::Ids(args.ids)),
        (_, Some((key, value)), _) => Some(GrayTarget::Label { key, value }),
        (_, _, Some(percent)) => Some(GrayTarget::Percent(percent)),
        _ => None,
    };
    let push = ConfigPush {
        content,
        message: args.message,
        gray,
    };
    let c = &args.config;
    let pushed = block_on(
        c.center
            .client()?
            .config_push(c.namespace.as_deref(), &c.name, &push),
    )?;
    out_pushed(&pushed, "pushed")?;
    Ok(ExitCode::SUCCESS)
}

pub fn versions(args: NameArgs) -> anyhow::Result<ExitCode> {
    let client = args.center.client()?;
    let namespace = args.namespace.as_deref();
    let (release, versions) = block_on(async {
        let release = client.config_release(namespace, &args.name).await?;
        let versions = client.config_versions(namespace, &args.name).await?;
        Ok::<_, shoal_center::client::ClientError>((release, versions))
    })?;
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let released = if release.stable == Some(v.version) {
                "stable".to_owned()
            } else if release
                .gray
                .as_ref()
                .is_some_and(|g| g.version == v.version)
            {
                "gray".to_owned()
            } else {
                "-".to_owned()
            };
            vec![
                v.version.to_string(),
                released,
                v.sha256.chars().take(12).collect(),
                v.size.to_string(),
                v.pushed.format("%Y-%m-%d %H:%M:%S").to_string(),
                v.pushed_by.clone(),
                if v.message.is_empty() {
                    "-".into()
                } else {
                    v.message.clone()
                },
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &["VERSION", "RELEASE", "SHA256", "BYTES", "PUSHED", "BY", "MESSAGE"],
            &rows
        )
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let c = &args.config;
    let shown = block_on(c.center.client()?.config_show(
        c.namespace.as_deref(),
        &c.name,
        args.version,
    ))?;
    write_bytes(shown.content.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let c = &args.config;
    let diff = block_on(c.center.client()?.config_diff(
        c.namespace.as_deref(),
        &c.name,
        args.v1,
        args.v2,
    ))?;
    write_bytes(diff.diff.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn promote(args: NameArgs) -> anyhow::Result<ExitCode> {
    let release = block_on(
        args.center
            .client()?
            .config_promote(args.namespace.as_deref(), &args.name),
    )?;
    outln!(
        "promoted {} version {} to every instance (namespace {})",
        release.name,
        release.stable.unwrap_or_default(),
        release.namespace
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let c = &args.config;
    let pushed = block_on(c.center.client()?.config_rollback(
        c.namespace.as_deref(),
        &c.name,
        args.to,
    ))?;
    out_pushed(&pushed, "rolled back")?;
    Ok(ExitCode::SUCCESS)
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let c = &args.config;
    let status = block_on(
        c.center
            .client()?
            .config_status(c.namespace.as_deref(), &c.name),
    )?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&status)?)?;
    } else {
        out_status(&status)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// FILE's content, refused here when the center would refuse it, naming the file.
fn read_content(file: &PathBuf) -> anyhow::Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if bytes.is_empty() {
        anyhow::bail!(
            "{} is empty: a configuration has at least one byte",
            file.display()
        );
    }
    if bytes.len() > MAX_CONFIG_BYTES {
        anyhow::bail!(
            "{} is {} bytes: a configuration is at most {MAX_CONFIG_BYTES} bytes",
            file.display(),
            bytes.len()
        );
    }
    String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{} is not UTF-8 text ({e})", file.display()))
}

fn out_pushed(pushed: &ConfigPushed, did: &str) -> anyhow::Result<()> {
    let v = &pushed.version;
    let from = v
        .rollback_of
        .map(|of| format!(" (the content of version {of})"))
        .unwrap_or_default();
    outln!(
        "{did} {} version {}{from}, sha256 {}",
        v.name,
        v.version,
        v.sha256
    )?;
    outln!("{}", released(&pushed.release))
}

/// One line saying who gets which version.
fn released(release: &ConfigRelease) -> String {
    let stable = match release.stable {
        Some(v) => format!("version {v} to every instance"),
        None => "nothing to every instance".into(),
    };
    match &release.gray {
        None => format!("release (namespace {}): {stable}", release.namespace),
        Some(gray) => format!(
            "release (namespace {}): version {} to {}, {stable} else",
            release.namespace,
            gray.version,
            target(&gray.target)
        ),
    }
}

fn target(target: &GrayTarget) -> String {
    match target {
        GrayTarget::Ids(ids) => format!("agents {}", ids.join(",")),
        GrayTarget::Label { key, value } => format!("label {key}={value}"),
        GrayTarget::Percent(p) => format!("{p}% of the agents"),
    }
}

fn out_status(status: &ConfigStatus) -> anyhow::Result<()> {
    outln!("{}: {}", status.release.name, released(&status.release))?;
    let rows: Vec<Vec<String>> = status
        .instances
        .iter()
        .map(|i| {
            let (state, reason) = match &i.state {
                InstanceState::Applied => ("applied", String::new()),
                InstanceState::Pending => ("pending", String::new()),
                InstanceState::Rejected { reason } => ("rejected", reason.clone()),
                InstanceState::Offline => ("offline", String::new()),
            };
            vec![
                i.agent.clone(),
                i.hostname.clone(),
                i.desired.to_string(),
                i.applied.map_or_else(|| "-".into(), |v| v.to_string()),
                state.into(),
                if reason.is_empty() {
                    "-".into()
                } else {
                    reason
                },
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &["AGENT", "HOSTNAME", "DESIRED", "APPLIED", "STATE", "REASON"],
            &rows
        )
    )
}
