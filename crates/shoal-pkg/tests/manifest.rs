//! `shoal.toml` checking: the design's example parses to the values it says, every bad key is
//! refused with a message naming the file, the key and what is expected, and versions are
//! ordered as versions.

use std::time::Duration;

use proptest::prelude::*;
use shoal_pkg::manifest::{
    Command, ConfigFile, ConfigReload, HttpCheck, Kind, Manifest, ManifestExt, Name, Overlap,
    Restart, StopSignal, Version,
};

/// The example of DESIGN.md section 4, unchanged.
const DESIGN_EXAMPLE: &str = r#"
[package]
name = "calculate"
version = "1.3.0"          # semver, compared as versions, never as floats
kind = "service"           # or "crontab"

[run]
command = "bin/calculate"
args = ["--config", "calculate.toml"]
env = { RUST_LOG = "info" }
stop_signal = "TERM"
stop_timeout = "10s"
restart = "always"         # on-failure | never; exponential backoff with a cap, reset after stable uptime
start_after = ["cache"]    # start once those are healthy

[health]                   # any of: port probe, shoal.ping, HTTP GET; interval, timeout, failures, grace
port = 3000
ping = true

[hooks]                    # run inside the version directory
install = "pip install -r requirements.txt -t vendor"
verify = "bin/check"       # after start during an upgrade; failure = rollback

[logs]
max_size = "100MB"
keep = 10

[backup]
paths = ["data"]
every = "1d"
keep = 7

[[cron]]
name = "report"
schedule = "0 */5 * * * *"
command = "bin/report"
overlap = "forbid"
"#;

const SERVICE: &str = "[package]\nname = \"calc\"\nversion = \"1.0.0\"\nkind = \"service\"\n\
                       [run]\ncommand = \"bin/calc\"\n";

const CRONTAB: &str = "[package]\nname = \"reports\"\nversion = \"0.1.0\"\nkind = \"crontab\"\n\
                       [[cron]]\nname = \"daily\"\nschedule = \"0 0 3 * * *\"\ncommand = \"bin/daily\"\n";

fn parse(text: &str) -> Result<Manifest, String> {
    Manifest::parse(text, "shoal.toml").map_err(|e| e.to_string())
}

#[test]
fn a_manifest_crosses_processes_as_json_unchanged() {
    for text in [DESIGN_EXAMPLE, SERVICE, CRONTAB] {
        let manifest = parse(text).unwrap();
        let json = serde_json::to_string(&manifest).unwrap();
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, manifest, "{json}");
    }
    let json = serde_json::to_value(parse(DESIGN_EXAMPLE).unwrap()).unwrap();
    assert_eq!(json["run"]["stop_timeout"], "10s");
    assert_eq!(json["backup"]["every"], "1day");
    assert_eq!(json["package"]["version"], "1.3.0");
    assert_eq!(json["run"]["command"], "bin/calculate");

    // A name is checked on the way in too: names become directory names.
    let bad: Result<Name, _> = serde_json::from_str("\"../etc\"");
    let error = bad.unwrap_err().to_string();
    assert!(error.contains("\"../etc\" is not a valid name"), "{error}");
    let stop: Result<Manifest, _> =
        serde_json::from_str(&json.to_string().replace("\"10s\"", "\"soon\""));
    assert!(stop
        .unwrap_err()
        .to_string()
        .contains("\"soon\" is not a duration"));
}

#[test]
fn the_design_example_parses() {
    let m = parse(DESIGN_EXAMPLE).unwrap();
    assert_eq!(m.package.name.as_str(), "calculate");
    assert_eq!(m.package.version, Version::new(1, 3, 0));
    assert_eq!(m.package.kind, Kind::Service);
    assert_eq!(m.archive_name(), "calculate-1.3.0.tar.gz");

    let run = m.run.as_ref().unwrap();
    assert_eq!(
        run.command,
        Command {
            program: "bin/calculate".into(),
            args: vec!["--config".into(), "calculate.toml".into()],
        }
    );
    assert_eq!(run.env.get("RUST_LOG").map(String::as_str), Some("info"));
    assert_eq!(run.stop_signal, StopSignal::Term);
    assert_eq!(run.stop_signal.sig_name(), "SIGTERM");
    assert_eq!(run.stop_timeout, Duration::from_secs(10));
    assert_eq!(run.restart, Restart::Always);
    assert_eq!(run.start_after[0].as_str(), "cache");
    assert!(run.ports.is_empty());

    let health = m.health.as_ref().unwrap();
    assert_eq!(
        (health.port, health.ping, &health.http),
        (Some(3000), true, &None)
    );
    assert_eq!(health.interval, Duration::from_secs(10));
    assert_eq!(health.timeout, Duration::from_secs(2));
    assert_eq!(health.failures, 3);

    let install = m.hooks.install.as_ref().unwrap();
    assert_eq!(install.program, "pip");
    assert_eq!(
        install.args,
        ["install", "-r", "requirements.txt", "-t", "vendor"]
    );
    assert_eq!(m.hooks.verify.as_ref().unwrap().to_string(), "bin/check");

    assert_eq!((m.logs.max_size, m.logs.keep), (100_000_000, 10));
    let backup = m.backup.as_ref().unwrap();
    assert_eq!(backup.paths, ["data"]);
    assert_eq!(
        (backup.every, backup.keep),
        (Duration::from_secs(86_400), 7)
    );

    assert_eq!(m.cron.len(), 1);
    assert_eq!(m.cron[0].name.as_str(), "report");
    assert_eq!(m.cron[0].schedule, "0 */5 * * * *");
    assert_eq!(m.cron[0].command.program, "bin/report");
    assert_eq!(m.cron[0].overlap, Overlap::Forbid);
    assert_eq!(m.cron[0].timeout, Duration::from_secs(3600));
}

#[test]
fn defaults_fill_what_is_left_out() {
    let m = parse(SERVICE).unwrap();
    let run = m.run.unwrap();
    assert_eq!(run.command.args, Vec::<String>::new());
    assert_eq!(run.stop_signal, StopSignal::Term);
    assert_eq!(run.restart, Restart::Always);
    assert!(m.health.is_none() && m.backup.is_none() && m.cron.is_empty());
    assert!(m.hooks.install.is_none() && m.hooks.verify.is_none());
    assert_eq!((m.logs.max_size, m.logs.keep), (100_000_000, 10));
}

#[test]
fn a_crontab_needs_cron_jobs_and_no_run() {
    let m = parse(CRONTAB).unwrap();
    assert_eq!(m.package.kind, Kind::Crontab);
    assert!(m.run.is_none());
    assert_eq!(m.cron[0].schedule, "0 0 3 * * *");
}

#[test]
fn other_forms_that_are_accepted() {
    let ok = |extra: &str| {
        let text = format!("{SERVICE}{extra}");
        parse(&text).unwrap_or_else(|e| panic!("{extra:?}: {e}"))
    };
    let m = ok("stop_signal = \"SIGINT\"\nrestart = \"on-failure\"\n");
    assert_eq!(m.run.as_ref().unwrap().stop_signal, StopSignal::Int);
    assert_eq!(m.run.as_ref().unwrap().restart, Restart::OnFailure);
    let m = ok("[health]\nport = 8080\nhttp = \"/healthz\"\ninterval = \"5s\"\ntimeout = \"5s\"\n");
    assert_eq!(
        m.health.unwrap().http,
        Some(HttpCheck::Path("/healthz".into()))
    );
    let m = ok("[health]\nhttp = \"http://127.0.0.1:9000/up\"\n");
    assert_eq!(
        m.health.unwrap().http,
        Some(HttpCheck::Url("http://127.0.0.1:9000/up".into()))
    );
    let m = ok("[hooks]\ninstall = [\"sh\", \"-c\", \"make && make install\"]\n");
    assert_eq!(
        m.hooks.install.unwrap().args,
        ["-c", "make && make install"]
    );
    let m = ok("[logs]\nmax_size = \"1.5 GiB\"\nkeep = 0\n");
    assert_eq!(m.logs.max_size, 3 << 29);
    let m = ok(
        "[[cron]]\nname = \"a\"\nschedule = \"*/10 * * * * *\"\ncommand = \"/usr/bin/true\"\n\
                overlap = \"allow\"\ntimeout = \"30s\"\nargs = [\"-v\"]\n",
    );
    assert_eq!(m.cron[0].overlap, Overlap::Allow);
    assert_eq!(m.cron[0].timeout, Duration::from_secs(30));
    let m = ok("[backup]\npaths = [\"data\", \"./state/db\"]\n");
    assert_eq!(m.backup.unwrap().keep, 7);
    let m = ok("[config]\npath = \"etc/app.conf\"\nreload_signal = \"SIGUSR1\"\n");
    assert_eq!(
        m.config.unwrap(),
        ConfigFile {
            path: "etc/app.conf".into(),
            reload: ConfigReload::Signal(StopSignal::Usr1)
        }
    );
    let m = ok("[config]\npath = \"app.conf\"\nreload_signal = \"HUP\"\n");
    assert_eq!(
        m.config.unwrap().reload,
        ConfigReload::Signal(StopSignal::Hup)
    );
    // No signal: the program reads its file at start, and is restarted for a new one.
    let m = ok("[config]\npath = \"app.conf\"\n");
    assert_eq!(m.config.unwrap().reload, ConfigReload::Restart);
}

#[test]
fn a_service_declares_the_ports_it_listens_on_and_a_shutdown_delay() {
    let m = parse(&format!(
        "{SERVICE}ports = [7000, 9100]\nshutdown_delay = \"2s\"\n"
    ))
    .unwrap();
    assert_eq!(m.run.as_ref().unwrap().ports, [7000, 9100]);
    assert_eq!(
        m.run.as_ref().unwrap().shutdown_delay,
        Duration::from_secs(2)
    );
    assert_eq!(
        parse(SERVICE).unwrap().run.unwrap().shutdown_delay,
        Duration::ZERO
    );
    // A manifest from before ports crosses processes as having none.
    let mut json = serde_json::to_value(parse(SERVICE).unwrap()).unwrap();
    json["run"].as_object_mut().unwrap().remove("ports");
    json["run"]
        .as_object_mut()
        .unwrap()
        .remove("shutdown_delay");
    let back: Manifest = serde_json::from_value(json).unwrap();
    assert!(back.run.unwrap().ports.is_empty());
    // Only a service has [run], so only a service declares ports.
    assert_eq!(
        parse(&format!(
            "{CRONTAB}[run]\ncommand = \"x\"\nports = [7000]\n"
        ))
        .unwrap_err(),
        "shoal.toml: run: a crontab package runs only its [[cron]] jobs: remove [run], or set \
         package.kind = \"service\""
    );
}

/// Each case: a manifest and the whole error it gives.
#[test]
fn bad_keys_are_named_with_what_is_expected() {
    let check = |text: &str, expected: &str| {
        assert_eq!(parse(text).unwrap_err(), expected, "for:\n{text}");
    };
    let service = |extra: &str| format!("{SERVICE}{extra}");
    let package = |name: &str, version: &str, kind: &str| {
        format!("[package]\nname = {name}\nversion = {version}\nkind = {kind}\n[run]\ncommand = \"x\"\n")
    };

    check(
        &service("restart = \"sometimes\"\n"),
        r#"shoal.toml: run.restart: "sometimes" is not one of always, on-failure, never"#,
    );
    check(
        &service("comand = \"x\"\n"),
        "shoal.toml: run.comand: unknown key (did you mean command?); [run] takes command, \
         args, env, stop_signal, stop_timeout, restart, start_after, ports, shutdown_delay",
    );
    check(
        &format!("{SERVICE}[deploy]\nx = 1\n"),
        "shoal.toml: deploy: unknown key; the manifest's top level takes package, run, health, \
         hooks, logs, backup, cron, config",
    );
    check(
        &package("\"Calc App\"", "\"1.0.0\"", "\"service\""),
        "shoal.toml: package.name: \"Calc App\" is not a valid name: use 1 to 64 lowercase \
         letters, digits, '-' and '_', starting with a letter or a digit",
    );
    check(
        &package("\"../etc\"", "\"1.0.0\"", "\"service\""),
        "shoal.toml: package.name: \"../etc\" is not a valid name: use 1 to 64 lowercase \
         letters, digits, '-' and '_', starting with a letter or a digit",
    );
    check(
        &package("\"calc\"", "\"1.3\"", "\"service\""),
        "shoal.toml: package.version: \"1.3\" is not a semantic version (MAJOR.MINOR.PATCH, \
         like \"1.3.0\"): unexpected end of input while parsing minor version number",
    );
    check(
        &package("\"calc\"", "1.3", "\"service\""),
        "shoal.toml: package.version: expected a string like \"1.3.0\", found the number 1.3",
    );
    check(
        &package("\"calc\"", "\"1.0.0\"", "\"daemon\""),
        "shoal.toml: package.kind: \"daemon\" is not one of service, crontab",
    );
    check(
        "[package]\nname = \"calc\"\nversion = \"1.0.0\"\n",
        "shoal.toml: package.kind: missing: expected \"service\" or \"crontab\"",
    );
    check(
        "[run]\ncommand = \"x\"\n",
        "shoal.toml: package: missing: every manifest starts with [package] (name, version, kind)",
    );
    check(
        "[package]\nname = \"calc\"\nversion = \"1.0.0\"\nkind = \"service\"\n",
        "shoal.toml: run: missing: a service needs [run] with the command to start (or set \
         package.kind = \"crontab\" for a package of [[cron]] jobs only)",
    );
    check(
        &format!("{CRONTAB}[run]\ncommand = \"x\"\n"),
        "shoal.toml: run: a crontab package runs only its [[cron]] jobs: remove [run], or set \
         package.kind = \"service\"",
    );
    check(
        "[package]\nname = \"r\"\nversion = \"1.0.0\"\nkind = \"crontab\"\n",
        "shoal.toml: cron: missing: a crontab package needs at least one [[cron]] job (name, \
         schedule, command)",
    );
    check(
        "[package]\nname = \"calc\"\nversion = \"1.0.0\"\nkind = \"service\"\n[run]\n\
         command = \"bin/calc --port 3000\"\n",
        "shoal.toml: run.command: \"bin/calc --port 3000\" contains whitespace: commands run \
         without a shell, so name only the program here and put its arguments in args = [...]",
    );
    check(
        "[package]\nname = \"calc\"\nversion = \"1.0.0\"\nkind = \"service\"\n[run]\n\
         command = [\"bin/calc\"]\n",
        "shoal.toml: run.command: expected the program as a string (its arguments go in args), \
         found an array",
    );
    check(
        "[package]\nname = \"calc\"\nversion = \"1.0.0\"\nkind = \"service\"\n[run]\n\
         command = \"../other/bin/x\"\n",
        "shoal.toml: run.command: \"../other/bin/x\" leaves the package with '..': name a \
         program inside it (\"bin/NAME\"), an absolute path, or a name found on PATH",
    );
    check(
        &service("args = \"--verbose\"\n"),
        "shoal.toml: run.args: expected an array of strings, found the string \"--verbose\"",
    );
    check(
        &service("args = [\"-p\", 3000]\n"),
        "shoal.toml: run.args: expected only strings in the array, found the integer 3000",
    );
    check(
        &service("env = { PORT = 3000 }\n"),
        "shoal.toml: run.env.PORT: expected a string (environment values are text: PORT = \
         \"...\"), found the integer 3000",
    );
    check(
        &service("stop_signal = \"STOP\"\n"),
        "shoal.toml: run.stop_signal: \"STOP\" is not one of TERM, INT, QUIT, HUP, USR1, USR2, \
         WINCH, KILL",
    );
    check(
        &service("stop_timeout = \"soon\"\n"),
        "shoal.toml: run.stop_timeout: \"soon\" is not a duration like \"10s\", \"5m\" or \
         \"1d\": expected number at 0",
    );
    check(
        &service("stop_timeout = 10\n"),
        "shoal.toml: run.stop_timeout: expected a duration as a string, like \"10s\", found the \
         integer 10",
    );
    check(
        &service("start_after = [\"calc\"]\n"),
        "shoal.toml: run.start_after[0]: a package cannot start after itself",
    );
    check(
        &service("shutdown_delay = \"11m\"\n"),
        "shoal.toml: run.shutdown_delay: 11m is longer than the 10m a stop may wait before its \
         signal",
    );
    check(
        &service("ports = 7000\n"),
        "shoal.toml: run.ports: expected an array of port numbers, like ports = [7000], found \
         the integer 7000",
    );
    check(
        &service("ports = [7000, 0]\n"),
        "shoal.toml: run.ports[1]: expected a TCP port from 1 to 65535, found the integer 0",
    );
    check(
        &service("ports = [\"7000\"]\n"),
        "shoal.toml: run.ports[0]: expected a TCP port from 1 to 65535, found the string \"7000\"",
    );
    check(
        &service("ports = [70000]\n"),
        "shoal.toml: run.ports[0]: expected a TCP port from 1 to 65535, found the integer 70000",
    );
    check(
        &service("ports = [7000, 7001, 7000]\n"),
        "shoal.toml: run.ports[2]: port 7000 is listed twice",
    );
    check(
        &service("[health]\ninterval = \"5s\"\n"),
        "shoal.toml: health: no check: set port (a TCP connection), ping = true with port \
         (shoal.ping), or http",
    );
    check(
        &service("[health]\nping = true\n"),
        "shoal.toml: health.ping: shoal.ping is called on health.port: set port too",
    );
    check(
        &service("[health]\nport = 70000\n"),
        "shoal.toml: health.port: expected an integer from 1 to 65535, found the integer 70000",
    );
    check(
        &service("[health]\nhttp = \"/up\"\n"),
        "shoal.toml: health.http: a path is asked on 127.0.0.1 at health.port: set port too, or \
         give a full http:// URL",
    );
    check(
        &service("[health]\nhttp = \"https://x/up\"\n"),
        "shoal.toml: health.http: \"https://x/up\" is neither a path like \"/healthz\" (asked on \
         health.port) nor an http:// URL",
    );
    check(
        &service("[health]\nport = 1\ninterval = \"1s\"\ntimeout = \"2s\"\n"),
        "shoal.toml: health.timeout: 2s is longer than health.interval (1s): a check must end \
         before the next starts",
    );
    check(
        &service("[health]\nport = 1\nfailures = 0\n"),
        "shoal.toml: health.failures: expected an integer from 1 to 4294967295, found the \
         integer 0",
    );
    check(
        &service("[health]\nport = 1\ninterval = \"0s\"\n"),
        "shoal.toml: health.interval: must be longer than 0s",
    );
    check(
        &service("[hooks]\ninstall = \"make && make install\"\n"),
        "shoal.toml: hooks.install: \"make && make install\" contains '&', which needs a shell, \
         and hooks run without one: put the steps in a script and name it here, or write the \
         arguments as an array",
    );
    check(
        &service("[hooks]\nverify = \"\"\n"),
        "shoal.toml: hooks.verify: empty: name the program to run",
    );
    check(
        &service("[hooks]\nverify = 1\n"),
        "shoal.toml: hooks.verify: expected a program and its arguments, as a string or an \
         array of strings, found the integer 1",
    );
    check(
        &service("[logs]\nmax_size = \"100M\"\n"),
        "shoal.toml: logs.max_size: \"100M\": unknown unit \"m\": use B, KB, MB, GB, TB (powers \
         of 1000) or KiB, MiB, GiB, TiB (powers of 1024)",
    );
    check(
        &service("[backup]\nevery = \"1d\"\n"),
        "shoal.toml: backup.paths: missing: the paths to back up, like paths = [\"data\"]",
    );
    check(
        &service("[backup]\npaths = [\"/var/lib/x\"]\n"),
        "shoal.toml: backup.paths[0]: \"/var/lib/x\" is absolute: paths are relative to the \
         app's directory",
    );
    check(
        &service("[backup]\npaths = [\"data/../../x\"]\n"),
        "shoal.toml: backup.paths[0]: \"data/../../x\" leaves the app's directory with '..'",
    );
    check(
        &service("[backup]\npaths = [\"data\", \"./versions\"]\n"),
        "shoal.toml: backup.paths[1]: \"./versions\" is the agent's: backups hold the app's data, \
         like \"data\"",
    );
    check(
        &service("[backup]\npaths = [\"current/x\"]\n"),
        "shoal.toml: backup.paths[0]: \"current/x\" is the agent's: backups hold the app's data, \
         like \"data\"",
    );
    check(
        &service("[backup]\npaths = [\".\"]\n"),
        "shoal.toml: backup.paths[0]: \".\" is the whole app directory, with the agent's versions; \
         name what to back up, like \"data\"",
    );
    check(
        &service("[config]\nreload_signal = \"HUP\"\n"),
        "shoal.toml: config.path: missing: where the agent writes the configuration, relative \
         to the app's data directory, like path = \"app.conf\"",
    );
    check(
        &service("[config]\npath = \"../app.conf\"\nreload_signal = \"HUP\"\n"),
        "shoal.toml: config.path: \"../app.conf\" leaves the app's directory with '..'; write \
         it relative to the app's data directory",
    );
    check(
        &service("[config]\npath = \"app.conf\"\nreload_signal = \"KILL\"\n"),
        "shoal.toml: config.reload_signal: \"KILL\" is not one of TERM, INT, QUIT, HUP, USR1, \
         USR2, WINCH; leave reload_signal out to have the program restarted instead",
    );
    check(
        &service("[config]\npath = \"app.conf\"\nreload_signal = \"restart\"\n"),
        "shoal.toml: config.reload_signal: \"restart\" is not one of TERM, INT, QUIT, HUP, \
         USR1, USR2, WINCH; leave reload_signal out to have the program restarted instead",
    );
    check(
        &service("[config]\npath = \"app.conf\"\nreload = \"HUP\"\n"),
        "shoal.toml: config.reload: unknown key; [config] takes path, reload_signal",
    );
    check(
        &service("[config]\npath = \"app.conf\"\nreload_signal = \"HUP\"\nmode = 1\n"),
        "shoal.toml: config.mode: unknown key; [config] takes path, reload_signal",
    );
    check(
        &service("[backup]\npaths = [\".restore-x\"]\n"),
        "shoal.toml: backup.paths[0]: \".restore-x\" is hidden: the agent keeps its work files there",
    );
    check(
        &format!(
            "{CRONTAB}[[cron]]\nname = \"daily\"\nschedule = \"0 0 4 * * *\"\ncommand = \"x\"\n"
        ),
        "shoal.toml: cron[1].name: \"daily\" names two [[cron]] jobs",
    );
    check(
        "[package]\nname = \"r\"\nversion = \"1.0.0\"\nkind = \"crontab\"\n[[cron]]\nname = \"a\"\n\
         schedule = \"*/5 * * * *\"\ncommand = \"x\"\n",
        "shoal.toml: cron[0].schedule: \"*/5 * * * *\" has 5 fields; expected six, seconds \
         first: SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK, like \"0 */5 * * * *\"",
    );
    check(
        "[package]\nname = \"r\"\nversion = \"1.0.0\"\nkind = \"crontab\"\n[[cron]]\nname = \"a\"\n\
         schedule = \"0 0 25 * * *\"\ncommand = \"x\"\n",
        "shoal.toml: cron[0].schedule: \"0 0 25 * * *\" is not a valid schedule (SEC MIN HOUR \
         DAY-OF-MONTH MONTH DAY-OF-WEEK): Component error: Number out of bounds.",
    );
    check(
        "[package]\nname = \"r\"\nversion = \"1.0.0\"\nkind = \"crontab\"\n[[cron]]\nname = \"a\"\n\
         schedule = \"0 0 3 * * *\"\ncommand = \"x\"\noverlap = \"queue\"\n",
        "shoal.toml: cron[0].overlap: \"queue\" is not one of forbid, allow",
    );
    check(
        "[package]\nname = \"r\"\nversion = \"1.0.0\"\nkind = \"crontab\"\n[[cron]]\nname = \"a\"\n\
         schedule = \"0 0 3 * * *\"\ncommand = \"x\"\nretries = 3\n",
        "shoal.toml: cron[0].retries: unknown key; [cron] takes name, schedule, command, args, \
         overlap, timeout",
    );
    check(
        &format!("{CRONTAB}[cron]\n"),
        "shoal.toml: not valid TOML at line 9, column 1: invalid table header; duplicate key \
         `cron` in document root",
    );
    check(
        "[package\nname = 1\n",
        "shoal.toml: not valid TOML at line 1, column 9: invalid table header; expected `.`, `]`",
    );
}

#[test]
fn load_names_the_path() {
    let dir = std::env::temp_dir().join(format!("shoal-pkg-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shoal.toml");
    std::fs::write(&path, format!("{SERVICE}restart = \"sometimes\"\n")).unwrap();
    let err = Manifest::load(&path).unwrap_err();
    assert_eq!(err.file, path.display().to_string());
    assert_eq!(err.key, "run.restart");
    let missing = Manifest::load(&dir.join("nope.toml"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.toml: cannot read: "), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn versions_are_ordered_as_versions_not_as_numbers() {
    let v = |s: &str| Version::parse(s).unwrap();
    assert!(v("1.10.0") > v("1.9.0"));
    assert!(v("1.9.10") > v("1.9.9"));
    assert!(v("2.0.0") > v("1.99.99"));
    assert!(v("1.0.0-rc.1") < v("1.0.0"));
    assert!(v("1.0.0-alpha") < v("1.0.0-beta"));
    assert!(v("1.0.0-rc.2") < v("1.0.0-rc.10"));
}

proptest! {
    /// Release versions order exactly as their (major, minor, patch) numbers do.
    #[test]
    fn version_order_is_numeric(
        a in (0u64..200, 0u64..200, 0u64..200),
        b in (0u64..200, 0u64..200, 0u64..200),
    ) {
        let parse = |(x, y, z): (u64, u64, u64)| {
            Manifest::parse(
                &CRONTAB.replace("0.1.0", &format!("{x}.{y}.{z}")),
                "shoal.toml",
            )
            .unwrap()
            .package
            .version
        };
        prop_assert_eq!(parse(a).cmp(&parse(b)), a.cmp(&b));
    }
}

#[test]
fn programs_resolve_against_the_package_directory() {
    use shoal_pkg::manifest::Command;
    let dir = std::path::Path::new("/data/apps/web/versions/1.0.0");
    let command = |program: &str| Command {
        program: program.into(),
        args: vec![],
    };
    assert_eq!(command("bin/web").program_in(dir), dir.join("bin/web"));
    assert_eq!(
        command("/usr/bin/python3").program_in(dir),
        std::path::Path::new("/usr/bin/python3")
    );
    assert_eq!(
        command("python3").program_in(dir),
        std::path::Path::new("python3")
    );
}
