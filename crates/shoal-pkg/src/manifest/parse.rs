//! Checking `shoal.toml`: the TOML is walked by hand rather than through serde so that every
//! error names its key and says what is expected, and unknown keys are refused with the keys
//! that the table does take.

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::time::Duration;

use toml::{Table, Value};

use super::units::{parse_duration, parse_size};
use super::{
    Backup, Command, ConfigFile, ConfigReload, CronJob, Health, Hooks, HttpCheck, Kind, Logs,
    Manifest, ManifestError, Name, Overlap, Package, Restart, Run, StopSignal, Version,
};

/// Defaults, written as a manifest would write them (the crate docs list the same).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_SHUTDOWN_DELAY: Duration = Duration::from_secs(600);
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const HEALTH_FAILURES: u32 = 3;
const HEALTH_GRACE: Duration = Duration::from_secs(30);
const BACKUP_EVERY: Duration = Duration::from_secs(86_400);
const BACKUP_KEEP: u32 = 7;
const CRON_TIMEOUT: Duration = Duration::from_secs(3_600);

/// Characters that mean something to a shell; a hook string holding one is refused because
/// hooks are not run by a shell.
const SHELL_CHARS: &[char] = &['\'', '"', '\\', '|', '&', ';', '<', '>', '$', '`', '*', '?'];

pub(super) fn manifest(text: &str, file: &str) -> Result<Manifest, ManifestError> {
    let root: Table = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        let message = e.message().trim_end().replace('\n', "; ");
        ManifestError::whole(
            file,
            format!("not valid TOML{}: {message}", at.unwrap_or_default()),
        )
    })?;
    let top = Section::root(file, &root);
    top.allow(&[
        "package", "run", "health", "hooks", "logs", "backup", "cron", "config",
    ])?;

    let package = package(&top.table("package")?.ok_or_else(|| {
        top.error(
            "package",
            "missing: every manifest starts with [package] (name, version, kind)",
        )
    })?)?;
    let run = top.table("run")?.map(|s| run(&s, &package)).transpose()?;
    let health = top.table("health")?.map(|s| health(&s)).transpose()?;
    let hooks = match top.table("hooks")? {
        Some(s) => hooks(&s)?,
        None => Hooks::default(),
    };
    let logs = match top.table("logs")? {
        Some(s) => logs(&s)?,
        None => Logs::default(),
    };
    let backup = top.table("backup")?.map(|s| backup(&s)).transpose()?;
    let cron = cron_jobs(&top)?;
    let config = top.table("config")?.map(|s| config(&s)).transpose()?;

    match package.kind {
        Kind::Service if run.is_none() => {
            return Err(top.error(
                "run",
                "missing: a service needs [run] with the command to start \
                 (or set package.kind = \"crontab\" for a package of [[cron]] jobs only)",
            ))
        }
        Kind::Crontab if run.is_some() => {
            return Err(top.error(
                "run",
                "a crontab package runs only its [[cron]] jobs: remove [run], \
                 or set package.kind = \"service\"",
            ))
        }
        Kind::Crontab if health.is_some() => {
            return Err(top.error(
                "health",
                "a crontab package has no long-running program to check: remove [health]",
            ))
        }
        Kind::Crontab if config.is_some() => {
            return Err(top.error(
                "config",
                "a crontab package has no long-running program to reload: remove [config]",
            ))
        }
        Kind::Crontab if cron.is_empty() => {
            return Err(top.error(
                "cron",
                "missing: a crontab package needs at least one [[cron]] job \
                 (name, schedule, command)",
            ))
        }
        _ => {}
    }
    Ok(Manifest {
        package,
        run,
        health,
        hooks,
        logs,
        backup,
        cron,
        config,
    })
}

fn package(s: &Section<'_>) -> Result<Package, ManifestError> {
    s.allow(&["name", "version", "kind"])?;
    let name = s.required("name", "the package's name, like name = \"calculate\"")?;
    let name = s.name("name", name)?;
    let version = s.required("version", "a semantic version, like version = \"1.3.0\"")?;
    let version = match version {
        Value::String(v) => Version::parse(v.trim()).map_err(|e| {
            s.error(
                "version",
                &format!(
                    "{v:?} is not a semantic version (MAJOR.MINOR.PATCH, like \"1.3.0\"): {e}"
                ),
            )
        })?,
        other => {
            return Err(s.error(
                "version",
                &format!(
                    "expected a string like \"1.3.0\", found {}",
                    describe(other)
                ),
            ))
        }
    };
    let kind = match s.one_of("kind", &["service", "crontab"])? {
        Some("crontab") => Kind::Crontab,
        Some(_) => Kind::Service,
        None => {
            return Err(s.error("kind", "missing: expected \"service\" or \"crontab\""));
        }
    };
    Ok(Package {
        name,
        version,
        kind,
    })
}

fn run(s: &Section<'_>, package: &Package) -> Result<Run, ManifestError> {
    s.allow(&[
        "command",
        "args",
        "env",
        "stop_signal",
        "stop_timeout",
        "restart",
        "start_after",
        "ports",
        "shutdown_delay",
    ])?;
    let command = command(s)?;
    let mut env = BTreeMap::new();
    if let Some(table) = s.table("env")? {
        for (key, value) in table.table {
            let at = format!("env.{key}");
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(s.error(
                    &at,
                    "an environment variable's name is not empty and has no '=' or NUL",
                ));
            }
            let Value::String(value) = value else {
                return Err(s.error(
                    &at,
                    &format!(
                        "expected a string (environment values are text: {key} = \"...\"), found {}",
                        describe(value)
                    ),
                ));
            };
            if value.contains('\0') {
                return Err(s.error(&at, "contains a NUL character"));
            }
            env.insert(key.clone(), value.clone());
        }
    }
    let names: Vec<&str> = StopSignal::ALL.iter().map(|s| s.name()).collect();
    let stop_signal = match s.string("stop_signal")? {
        None => StopSignal::Term,
        Some(text) => {
            let bare = text.strip_prefix("SIG").unwrap_or(text);
            *StopSignal::ALL
                .iter()
                .find(|sig| sig.name() == bare)
                .ok_or_else(|| {
                    s.error(
                        "stop_signal",
                        &format!("{text:?} is not one of {}", names.join(", ")),
                    )
                })?
        }
    };
    let stop_timeout = s.duration("stop_timeout")?.unwrap_or(STOP_TIMEOUT);
    let shutdown_delay = s.duration("shutdown_delay")?.unwrap_or(Duration::ZERO);
    if shutdown_delay > MAX_SHUTDOWN_DELAY {
        return Err(s.error(
            "shutdown_delay",
            &format!(
                "{} is longer than the {} a stop may wait before its signal",
                super::units::format_duration(shutdown_delay),
                super::units::format_duration(MAX_SHUTDOWN_DELAY)
            ),
        ));
    }
    let restart = match s.one_of("restart", &["always", "on-failure", "never"])? {
        None | Some("always") => Restart::Always,
        Some("on-failure") => Restart::OnFailure,
        Some(_) => Restart::Never,
    };
    let mut start_after = Vec::new();
    for (i, name) in s
        .strings("start_after")?
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let at = format!("start_after[{i}]");
        let name = Name::new(name).map_err(|e| s.error(&at, &e))?;
        if name == package.name {
            return Err(s.error(&at, "a package cannot start after itself"));
        }
        start_after.push(name);
    }
    Ok(Run {
        command,
        env,
        stop_signal,
        stop_timeout,
        shutdown_delay,
        restart,
        start_after,
        ports: ports(s)?,
    })
}

/// `run.ports`: the TCP ports the service listens on, each 1 to 65535, no two alike.
fn ports(s: &Section<'_>) -> Result<Vec<u16>, ManifestError> {
    let items = match s.get("ports") {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(s.error(
                "ports",
                &format!(
                    "expected an array of port numbers, like ports = [7000], found {}",
                    describe(other)
                ),
            ))
        }
    };
    let mut ports: Vec<u16> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("ports[{i}]");
        let port = match item {
            Value::Integer(n) if (1..=i64::from(u16::MAX)).contains(n) => *n as u16,
            other => {
                return Err(s.error(
                    &at,
                    &format!(
                        "expected a TCP port from 1 to 65535, found {}",
                        describe(other)
                    ),
                ))
            }
        };
        if ports.contains(&port) {
            return Err(s.error(&at, &format!("port {port} is listed twice")));
        }
        ports.push(port);
    }
    Ok(ports)
}

fn health(s: &Section<'_>) -> Result<Health, ManifestError> {
    s.allow(&[
        "port", "ping", "http", "interval", "timeout", "failures", "grace",
    ])?;
    let port = s.integer("port", 1, u16::MAX.into())?.map(|p| p as u16);
    let ping = s.bool("ping")?.unwrap_or(false);
    let http = match s.string("http")? {
        None => None,
        Some(path) if path.starts_with('/') => Some(HttpCheck::Path(path.to_owned())),
        Some(url)
            if url.strip_prefix("http://").is_some_and(|rest| {
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                !host.is_empty() && !host.contains(char::is_whitespace)
            }) =>
        {
            Some(HttpCheck::Url(url.to_owned()))
        }
        Some(other) => {
            return Err(s.error(
                "http",
                &format!(
                    "{other:?} is neither a path like \"/healthz\" (asked on health.port) nor \
                     an http:// URL"
                ),
            ))
        }
    };
    if port.is_none() && !ping && http.is_none() {
        return Err(s.error(
            "",
            "no check: set port (a TCP connection), ping = true with port (shoal.ping), or http",
        ));
    }
    if ping && port.is_none() {
        return Err(s.error("ping", "shoal.ping is called on health.port: set port too"));
    }
    if matches!(http, Some(HttpCheck::Path(_))) && port.is_none() {
        return Err(s.error(
            "http",
            "a path is asked on 127.0.0.1 at health.port: set port too, or give a full http:// URL",
        ));
    }
    let interval = s.positive_duration("interval")?.unwrap_or(HEALTH_INTERVAL);
    let timeout = s.positive_duration("timeout")?.unwrap_or(HEALTH_TIMEOUT);
    if timeout > interval {
        return Err(s.error(
            "timeout",
            &format!(
                "{} is longer than health.interval ({}): a check must end before the next starts",
                super::units::format_duration(timeout),
                super::units::format_duration(interval)
            ),
        ));
    }
    let failures = s
        .integer("failures", 1, u32::MAX.into())?
        .map_or(HEALTH_FAILURES, |n| n as u32);
    let grace = s.duration("grace")?.unwrap_or(HEALTH_GRACE);
    Ok(Health {
        port,
        ping,
        http,
        interval,
        timeout,
        failures,
        grace,
    })
}

fn hooks(s: &Section<'_>) -> Result<Hooks, ManifestError> {
    s.allow(&["install", "verify"])?;
    Ok(Hooks {
        install: hook(s, "install")?,
        verify: hook(s, "verify")?,
    })
}

/// A hook: an array of words, or a string split at whitespace (see [`Hooks`]).
fn hook(s: &Section<'_>, key: &str) -> Result<Option<Command>, ManifestError> {
    let words: Vec<String> = match s.get(key) {
        None => return Ok(None),
        Some(Value::String(text)) => {
            if let Some(c) = text.chars().find(|c| SHELL_CHARS.contains(c)) {
                return Err(s.error(
                    key,
                    &format!(
                        "{text:?} contains {c:?}, which needs a shell, and hooks run without \
                         one: put the steps in a script and name it here, or write the \
                         arguments as an array"
                    ),
                ));
            }
            text.split_whitespace().map(str::to_owned).collect()
        }
        Some(Value::Array(_)) => s
            .strings(key)?
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        Some(other) => {
            return Err(s.error(
                key,
                &format!(
                    "expected a program and its arguments, as a string or an array of strings, \
                     found {}",
                    describe(other)
                ),
            ))
        }
    };
    let mut words = words.into_iter();
    let Some(program) = words.next() else {
        return Err(s.error(key, "empty: name the program to run"));
    };
    check_program(s, key, &program)?;
    let args: Vec<String> = words.collect();
    if args.iter().any(|a| a.contains('\0')) {
        return Err(s.error(key, "an argument contains a NUL character"));
    }
    Ok(Some(Command { program, args }))
}

fn logs(s: &Section<'_>) -> Result<Logs, ManifestError> {
    s.allow(&["max_size", "keep"])?;
    let defaults = Logs::default();
    let max_size = match s.get("max_size") {
        None => defaults.max_size,
        Some(Value::String(text)) => match parse_size(text) {
            Ok(0) => return Err(s.error("max_size", "must be more than 0 bytes")),
            Ok(n) => n,
            Err(e) => return Err(s.error("max_size", &format!("{text:?}: {e}"))),
        },
        Some(Value::Integer(n)) if *n > 0 => *n as u64,
        Some(other) => {
            return Err(s.error(
                "max_size",
                &format!("expected a size like \"100MB\", found {}", describe(other)),
            ))
        }
    };
    let keep = s
        .integer("keep", 0, u32::MAX.into())?
        .map_or(defaults.keep, |n| n as u32);
    Ok(Logs { max_size, keep })
}

fn backup(s: &Section<'_>) -> Result<Backup, ManifestError> {
    s.allow(&["paths", "every", "keep"])?;
    let Some(list) = s.strings("paths")? else {
        return Err(s.error(
            "paths",
            "missing: the paths to back up, like paths = [\"data\"]",
        ));
    };
    if list.is_empty() {
        return Err(s.error("paths", "empty: name at least one path to back up"));
    }
    let mut paths = Vec::with_capacity(list.len());
    for (i, path) in list.into_iter().enumerate() {
        if let Err(why) = relative_inside(path).and_then(|()| not_the_agents(path)) {
            return Err(s.error(&format!("paths[{i}]"), &format!("{path:?} {why}")));
        }
        paths.push(path.to_owned());
    }
    let every = s.positive_duration("every")?.unwrap_or(BACKUP_EVERY);
    let keep = s
        .integer("keep", 1, u32::MAX.into())?
        .map_or(BACKUP_KEEP, |n| n as u32);
    Ok(Backup { paths, every, keep })
}

fn config(s: &Section<'_>) -> Result<ConfigFile, ManifestError> {
    s.allow(&["path", "reload_signal"])?;
    let Some(path) = s.string("path")? else {
        return Err(s.error(
            "path",
            "missing: where the agent writes the configuration, relative to the app's data \
             directory, like path = \"app.conf\"",
        ));
    };
    if let Err(why) = relative_inside(path) {
        return Err(s.error(
            "path",
            &format!("{path:?} {why}; write it relative to the app's data directory"),
        ));
    }
    // No signal named means the program reads its file only at start: it is restarted.
    let reload = match s.string("reload_signal")? {
        None => ConfigReload::Restart,
        Some(text) => ConfigReload::Signal(reload_signal(s, text)?),
    };
    Ok(ConfigFile {
        path: path.to_owned(),
        reload,
    })
}

/// `config.reload_signal`: any signal the agent sends but KILL, with or without `SIG`.
fn reload_signal(s: &Section<'_>, text: &str) -> Result<StopSignal, ManifestError> {
    let bare = text.strip_prefix("SIG").unwrap_or(text);
    let allowed = || {
        StopSignal::ALL
            .iter()
            .filter(|sig| **sig != StopSignal::Kill)
    };
    allowed()
        .find(|sig| sig.name() == bare)
        .copied()
        .ok_or_else(|| {
            let names: Vec<&str> = allowed().map(|sig| sig.name()).collect();
            s.error(
                "reload_signal",
                &format!(
                    "{text:?} is not one of {}; leave reload_signal out to have the program \
                 restarted instead",
                    names.join(", ")
                ),
            )
        })
}

fn cron_jobs(top: &Section<'_>) -> Result<Vec<CronJob>, ManifestError> {
    let tables = match top.get("cron") {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(top.error(
                "cron",
                &format!(
                    "expected [[cron]] tables (one per job), found {}",
                    describe(other)
                ),
            ))
        }
    };
    let mut jobs: Vec<CronJob> = Vec::with_capacity(tables.len());
    for (i, item) in tables.iter().enumerate() {
        let at = format!("cron[{i}]");
        let Value::Table(table) = item else {
            return Err(top.error(&at, &format!("expected a table, found {}", describe(item))));
        };
        let s = Section::nested(top.file, at, table);
        let job = cron_job(&s)?;
        if jobs.iter().any(|j| j.name == job.name) {
            return Err(s.error(
                "name",
                &format!("{:?} names two [[cron]] jobs", job.name.as_str()),
            ));
        }
        jobs.push(job);
    }
    Ok(jobs)
}

fn cron_job(s: &Section<'_>) -> Result<CronJob, ManifestError> {
    s.allow(&["name", "schedule", "command", "args", "overlap", "timeout"])?;
    let name = s.required("name", "the job's name, like name = \"report\"")?;
    let name = s.name("name", name)?;
    let schedule = match s.get("schedule") {
        None => {
            return Err(s.error(
                "schedule",
                "missing: six fields, seconds first, like schedule = \"0 */5 * * * *\"",
            ))
        }
        Some(Value::String(text)) => {
            let fields: Vec<&str> = text.split_whitespace().collect();
            let normal = fields.join(" ");
            if fields.len() != 6 {
                return Err(s.error(
                    "schedule",
                    &format!(
                        "{text:?} has {} fields; expected six, seconds first: \
                         SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK, like \"0 */5 * * * *\"",
                        fields.len()
                    ),
                ));
            }
            croner::Cron::new(&normal)
                .with_seconds_required()
                .parse()
                .map_err(|e| {
                    s.error(
                        "schedule",
                        &format!(
                            "{text:?} is not a valid schedule (SEC MIN HOUR DAY-OF-MONTH MONTH \
                             DAY-OF-WEEK): {e}"
                        ),
                    )
                })?;
            normal
        }
        Some(other) => {
            return Err(s.error(
                "schedule",
                &format!(
                    "expected a string like \"0 */5 * * * *\", found {}",
                    describe(other)
                ),
            ))
        }
    };
    let command = command(s)?;
    let overlap = match s.one_of("overlap", &["forbid", "allow"])? {
        None | Some("forbid") => Overlap::Forbid,
        Some(_) => Overlap::Allow,
    };
    let timeout = s.positive_duration("timeout")?.unwrap_or(CRON_TIMEOUT);
    Ok(CronJob {
        name,
        schedule,
        command,
        overlap,
        timeout,
    })
}

/// `command` and `args` of `[run]` or a `[[cron]]` job: argv, never a shell string.
fn command(s: &Section<'_>) -> Result<Command, ManifestError> {
    let program = match s.required("command", "the program to run, like command = \"bin/NAME\"")? {
        Value::String(p) => p.clone(),
        other => {
            return Err(s.error(
                "command",
                &format!(
                    "expected the program as a string (its arguments go in args), found {}",
                    describe(other)
                ),
            ))
        }
    };
    check_program(s, "command", &program)?;
    if program.contains(char::is_whitespace) {
        return Err(s.error(
            "command",
            &format!(
                "{program:?} contains whitespace: commands run without a shell, so name only \
                 the program here and put its arguments in args = [...]"
            ),
        ));
    }
    let args: Vec<String> = s
        .strings("args")?
        .unwrap_or_default()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if args.iter().any(|a| a.contains('\0')) {
        return Err(s.error("args", "an argument contains a NUL character"));
    }
    Ok(Command { program, args })
}

fn check_program(s: &Section<'_>, key: &str, program: &str) -> Result<(), ManifestError> {
    if program.is_empty() {
        return Err(s.error(key, "empty: name the program to run"));
    }
    if program.contains('\0') {
        return Err(s.error(key, "contains a NUL character"));
    }
    if !program.starts_with('/')
        && Path::new(program)
            .components()
            .any(|c| c == Component::ParentDir)
    {
        return Err(s.error(
            key,
            &format!(
                "{program:?} leaves the package with '..': name a program inside it \
                 (\"bin/NAME\"), an absolute path, or a name found on PATH"
            ),
        ));
    }
    Ok(())
}

/// Why `path` is not a relative path that stays below its base, if it is not.
fn relative_inside(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.contains('\0') {
        return Err("is empty or contains NUL");
    }
    for component in Path::new(path).components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("leaves the app's directory with '..'"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("is absolute: paths are relative to the app's directory")
            }
        }
    }
    Ok(())
}

/// Why a backup path is the agent's own (the versions, `current`, the whole app directory,
/// a hidden name), which a restore must never replace.
fn not_the_agents(path: &str) -> Result<(), &'static str> {
    let first = Path::new(path).components().find_map(|c| match c {
        Component::Normal(name) => name.to_str(),
        _ => None,
    });
    match first {
        None => Err("is the whole app directory, with the agent's versions; name what to back up, like \"data\""),
        Some("versions" | "current") => Err("is the agent's: backups hold the app's data, like \"data\""),
        Some(name) if name.starts_with('.') => Err("is hidden: the agent keeps its work files there"),
        Some(_) => Ok(()),
    }
}

/// "an integer (3)", "an array": what a value is, for "found ..." in errors.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("the string {s:?}"),
        Value::Integer(n) => format!("the integer {n}"),
        Value::Float(x) => format!("the number {x}"),
        Value::Boolean(b) => format!("{b}"),
        Value::Datetime(d) => format!("the date {d}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
}

/// One TOML table and its dotted path (`run`, `cron[1]`), for reading keys with errors that
/// name them.
struct Section<'a> {
    file: &'a str,
    path: String,
    table: &'a Table,
}

impl<'a> Section<'a> {
    fn root(file: &'a str, table: &'a Table) -> Section<'a> {
        Section::nested(file, String::new(), table)
    }

    fn nested(file: &'a str, path: String, table: &'a Table) -> Section<'a> {
        Section { file, path, table }
    }

    /// The error for `key` of this table (`""` for the table itself).
    fn error(&self, key: &str, message: &str) -> ManifestError {
        let key = match (self.path.is_empty(), key.is_empty()) {
            (true, _) => key.to_owned(),
            (false, true) => self.path.clone(),
            (false, false) => format!("{}.{key}", self.path),
        };
        ManifestError {
            file: self.file.to_owned(),
            key,
            message: message.to_owned(),
        }
    }

    /// Refuses any key not in `known`, naming those that are.
    fn allow(&self, known: &[&str]) -> Result<(), ManifestError> {
        let Some(unknown) = self.table.keys().find(|k| !known.contains(&k.as_str())) else {
            return Ok(());
        };
        let hint = known
            .iter()
            .find(|k| edit_distance(k, unknown) <= 2)
            .map(|k| format!(" (did you mean {k}?)"))
            .unwrap_or_default();
        let table = if self.path.is_empty() {
            "the manifest's top level takes".to_owned()
        } else {
            format!(
                "[{}] takes",
                self.path.split('[').next().unwrap_or(&self.path)
            )
        };
        Err(self.error(
            unknown,
            &format!("unknown key{hint}; {table} {}", known.join(", ")),
        ))
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.table.get(key)
    }

    fn required(&self, key: &str, expected: &str) -> Result<&'a Value, ManifestError> {
        self.get(key)
            .ok_or_else(|| self.error(key, &format!("missing: {expected}")))
    }

    fn table(&self, key: &str) -> Result<Option<Section<'a>>, ManifestError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Table(table)) => {
                let path = if self.path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{}.{key}", self.path)
                };
                Ok(Some(Section::nested(self.file, path, table)))
            }
            Some(other) => Err(self.error(
                key,
                &format!("expected a table ([{key}]), found {}", describe(other)),
            )),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, ManifestError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(
                key,
                &format!("expected a string, found {}", describe(other)),
            )),
        }
    }

    fn one_of(
        &self,
        key: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, ManifestError> {
        let not_one = |found: String| {
            self.error(
                key,
                &format!("{found} is not one of {}", choices.join(", ")),
            )
        };
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => choices
                .iter()
                .find(|c| **c == s.as_str())
                .map(|c| Some(*c))
                .ok_or_else(|| not_one(format!("{s:?}"))),
            Some(other) => Err(not_one(describe(other))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ManifestError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(
                key,
                &format!("expected true or false, found {}", describe(other)),
            )),
        }
    }

    fn integer(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ManifestError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Integer(n)) if (min..=max).contains(n) => Ok(Some(*n)),
            Some(other) => Err(self.error(
                key,
                &format!(
                    "expected an integer from {min} to {max}, found {}",
                    describe(other)
                ),
            )),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>, ManifestError> {
        let expected = |found: &Value| {
            self.error(
                key,
                &format!("expected an array of strings, found {}", describe(found)),
            )
        };
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(self.error(
                        key,
                        &format!(
                            "expected only strings in the array, found {}",
                            describe(other)
                        ),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(expected(other)),
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>, ManifestError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => parse_duration(text).map(Some).map_err(|e| {
                self.error(
                    key,
                    &format!("{text:?} is not a duration like \"10s\", \"5m\" or \"1d\": {e}"),
                )
            }),
            Some(other) => Err(self.error(
                key,
                &format!(
                    "expected a duration as a string, like \"10s\", found {}",
                    describe(other)
                ),
            )),
        }
    }

    fn positive_duration(&self, key: &str) -> Result<Option<Duration>, ManifestError> {
        match self.duration(key)? {
            Some(d) if d.is_zero() => Err(self.error(key, "must be longer than 0s")),
            d => Ok(d),
        }
    }

    fn name(&self, key: &str, value: &Value) -> Result<Name, ManifestError> {
        match value {
            Value::String(s) => Name::new(s).map_err(|e| self.error(key, &e)),
            other => Err(self.error(
                key,
                &format!("expected a string, found {}", describe(other)),
            )),
        }
    }
}

/// Levenshtein distance, for "did you mean" on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}
