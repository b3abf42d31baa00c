//! `shoal pkg build DIR` and `shoal pkg inspect FILE`: packing a package directory into its
//! archive and checksum, and showing what an archive holds after the agent's checks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use shoal_pkg::manifest::{Command, Health, HttpCheck, Manifest};
use shoal_pkg::{format_size, Inspection, Limits, Sha256};

use crate::out::{out, outln};

/// The sha256 written in `FILE.sha256` beside the archive `file` (as `shoal pkg build` writes
/// it), or `None` when there is no such file.
pub(crate) fn written_sha256(file: &Path) -> anyhow::Result<Option<Sha256>> {
    let sums = PathBuf::from(format!("{}.sha256", file.display()));
    let text = match std::fs::read_to_string(&sums) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", sums.display())),
    };
    let word = text
        .split_whitespace()
        .next()
        .with_context(|| format!("{}: empty", sums.display()))?;
    let sha256 = word
        .parse()
        .with_context(|| format!("{}: the first word", sums.display()))?;
    Ok(Some(sha256))
}

/// The sha256 of `data`, the archive `file`'s bytes; when `FILE.sha256` is there, it must
/// say the same.
pub(crate) fn checked_sha256(file: &Path, data: &[u8]) -> anyhow::Result<Sha256> {
    let actual = Sha256::of_reader(data).with_context(|| format!("hashing {}", file.display()))?;
    match written_sha256(file)? {
        Some(written) if written != actual => anyhow::bail!(
            "{}: its sha256 is {actual}, but {}.sha256 says {written}: the archive changed \
             after `shoal pkg build`, or the checksum file is another archive's",
            file.display(),
            file.display()
        ),
        _ => Ok(actual),
    }
}

#[derive(Subcommand, Debug)]
pub enum Pkg {
    /// Check DIR/shoal.toml and pack DIR into NAME-VERSION.tar.gz and
    /// NAME-VERSION.tar.gz.sha256; the same tree always gives the same bytes.
    Build {
        /// The package directory, with shoal.toml at its root.
        dir: PathBuf,
        /// Where to write the archive and its checksum; created if missing.
        #[arg(
            short = 'o',
            long = "out-dir",
            value_name = "OUTDIR",
            default_value = "."
        )]
        out_dir: PathBuf,
    },
    /// Check an archive as the agent would (paths, links, limits, manifest) and print its
    /// name, version, kind, sha256, file count, size and manifest.
    Inspect {
        /// A NAME-VERSION.tar.gz.
        file: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: Pkg) -> anyhow::Result<ExitCode> {
    match cmd {
        Pkg::Build { dir, out_dir } => {
            let built = shoal_pkg::build(&dir, &out_dir)
                .with_context(|| format!("cannot build a package from {}", dir.display()))?;
            let package = &built.manifest.package;
            outln!(
                "built {} {} ({}): {} files, {}",
                package.name,
                package.version,
                package.kind,
                built.files,
                format_size(built.size)
            )?;
            outln!("archive:  {}", shown(&out_dir, &built.archive))?;
            outln!("sha256:   {}", built.sha256)?;
            outln!("checksum: {}", shown(&out_dir, &built.checksum_file))?;
        }
        Pkg::Inspect { file, json } => {
            let inspection = shoal_pkg::inspect(&file, &Limits::default())?;
            if json {
                outln!("{}", render_json(&inspection)?)?;
            } else {
                out!("{}", render(&inspection))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `file` (written into `out_dir`) under the directory the user named, for shorter lines.
fn shown(out_dir: &Path, file: &Path) -> String {
    match file.file_name() {
        Some(name) => out_dir.join(name).display().to_string(),
        None => file.display().to_string(),
    }
}

/// The inspection with name, version and kind at the top for scripts.
fn render_json(inspection: &Inspection) -> anyhow::Result<String> {
    let package = &inspection.manifest.package;
    let mut value = serde_json::to_value(inspection)?;
    let object = value
        .as_object_mut()
        .context("an inspection is a JSON object")?;
    object.insert("name".into(), package.name.as_str().into());
    object.insert("version".into(), package.version.to_string().into());
    object.insert("kind".into(), package.kind.as_str().into());
    Ok(serde_json::to_string_pretty(&value)?)
}

/// `key:     value` lines; a value of several lines has its later lines indented.
fn render(inspection: &Inspection) -> String {
    let m = &inspection.manifest;
    let mut rows: Vec<(&str, Vec<String>)> = vec![
        ("name", vec![m.package.name.to_string()]),
        ("version", vec![m.package.version.to_string()]),
        ("kind", vec![m.package.kind.to_string()]),
        ("sha256", vec![inspection.sha256.to_string()]),
        ("files", vec![inspection.files.to_string()]),
        (
            "size",
            vec![format!(
                "{} ({} bytes; {} compressed)",
                format_size(inspection.size),
                inspection.size,
                format_size(inspection.archive_size)
            )],
        ),
    ];
    rows.extend(summary(m));
    let mut out = String::new();
    for (key, lines) in rows {
        for (i, line) in lines.iter().enumerate() {
            let label = if i == 0 {
                format!("{key}:")
            } else {
                String::new()
            };
            out.push_str(&format!("{label:<10}{line}\n"));
        }
    }
    out
}

/// The manifest's sections, one row each, in file order.
fn summary(m: &Manifest) -> Vec<(&'static str, Vec<String>)> {
    let duration = |d| humantime::format_duration(d).to_string();
    let mut rows = Vec::new();
    if let Some(run) = &m.run {
        let mut lines = vec![
            argv(&run.command),
            format!(
                "restart {}; stop with {}, then SIGKILL after {}",
                run.restart,
                run.stop_signal.sig_name(),
                duration(run.stop_timeout)
            ),
        ];
        if !run.env.is_empty() {
            let env: Vec<String> = run.env.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            lines.push(format!("env {}", env.join(" ")));
        }
        if !run.start_after.is_empty() {
            let names: Vec<&str> = run.start_after.iter().map(|n| n.as_str()).collect();
            lines.push(format!("start after {}", names.join(", ")));
        }
        rows.push(("run", lines));
    }
    if let Some(health) = &m.health {
        rows.push(("health", vec![health_line(health, &duration)]));
    }
    let hooks: Vec<String> = [("install", &m.hooks.install), ("verify", &m.hooks.verify)]
        .into_iter()
        .filter_map(|(name, hook)| Some(format!("{name}: {}", argv(hook.as_ref()?))))
        .collect();
    if !hooks.is_empty() {
        rows.push(("hooks", hooks));
    }
    rows.push((
        "logs",
        vec![format!(
            "rotate at {}, keep {}",
            format_size(m.logs.max_size),
            m.logs.keep
        )],
    ));
    if let Some(backup) = &m.backup {
        rows.push((
            "backup",
            vec![format!(
                "{} every {}, keep {}",
                backup.paths.join(", "),
                duration(backup.every),
                backup.keep
            )],
        ));
    }
    let jobs: Vec<String> = m
        .cron
        .iter()
        .map(|job| {
            format!(
                "{} \"{}\" {} (overlap {}, timeout {})",
                job.name,
                job.schedule,
                argv(&job.command),
                job.overlap,
                duration(job.timeout)
            )
        })
        .collect();
    if !jobs.is_empty() {
        rows.push(("cron", jobs));
    }
    rows
}

fn health_line(health: &Health, duration: &dyn Fn(std::time::Duration) -> String) -> String {
    let mut checks = Vec::new();
    match (health.port, health.ping) {
        (Some(port), true) => checks.push(format!("shoal.ping on port {port}")),
        (Some(port), false) if health.http.is_none() => checks.push(format!("TCP port {port}")),
        _ => {}
    }
    match (&health.http, health.port) {
        (Some(HttpCheck::Path(path)), Some(port)) => {
            checks.push(format!("GET http://127.0.0.1:{port}{path}"))
        }
        (Some(http), _) => checks.push(format!("GET {http}")),
        (None, _) => {}
    }
    format!(
        "{}; every {}, timeout {}, restart after {} failures, grace {}",
        checks.join(", "),
        duration(health.interval),
        duration(health.timeout),
        health.failures,
        duration(health.grace)
    )
}

/// A command as words, each quoted when it would not read back as one word.
fn argv(command: &Command) -> String {
    std::iter::once(&command.program)
        .chain(&command.args)
        .map(|word| {
            if word.is_empty() || word.contains(|c: char| c.is_whitespace() || c == '"') {
                format!("{word:?}")
            } else {
                word.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
