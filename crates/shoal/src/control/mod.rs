//! Control: how the outside world drives a running application. Signals, admin RPC methods
//! and [`crate::Handle`] calls all become one `Command` that the runtime loop matches on.
//! This module is the only part of the crate that reads the process's arguments and
//! environment, installs signal handlers, or ends the process.
//!
//! | signal | action |
//! |---|---|
//! | SIGHUP | reload the configuration |
//! | SIGTERM, SIGINT | close gracefully; a second one exits at once |
//! | SIGUSR2 | re-execute the binary at the same path, handing over the listening sockets |

pub(crate) mod admin;
pub(crate) mod agent;
pub(crate) mod handover;
pub(crate) mod signal;
pub(crate) mod systemd;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitCode, Termination};

use tokio::sync::oneshot;

/// How an application ended: the process exit code, documented for supervisors.
///
/// | code | meaning |
/// |---|---|
/// | 0 | closed cleanly (also after handing over to a re-executed binary) |
/// | 1 | failed: `on_start`, the run loop or setup returned an error |
/// | 2 | bad configuration or command line; nothing was bound or started |
/// | 3 | the grace period ran out while closing, with work still in progress |
/// | 4 | watchdog: no `heartbeat()` within `watchdog.timeout` |
/// | 128 + N | a second close signal N arrived while closing (130 for SIGINT, 143 for SIGTERM) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Closed,
    Failed,
    BadConfig,
    GraceExpired,
    Watchdog,
    Signal(i32),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Closed => 0,
            Exit::Failed => 1,
            Exit::BadConfig => 2,
            Exit::GraceExpired => 3,
            Exit::Watchdog => 4,
            Exit::Signal(n) => u8::try_from(128 + n).unwrap_or(255),
        }
    }
}

impl Termination for Exit {
    fn report(self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

/// Something the application is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Re-read and apply the configuration; the answer says why it was rejected.
    Reload(Option<oneshot::Sender<Result<(), String>>>),
    /// Close gracefully; `signal` is set when a signal asked, so a second one can exit at once.
    Close { signal: Option<i32> },
    /// Re-execute the binary and hand the listeners over; answers with the new pid.
    Restart(Option<oneshot::Sender<Result<u32, String>>>),
}

/// Ends the process at once with `exit`, for the cases where waiting is the problem (a second
/// close signal, an expired grace period, a stuck application the watchdog caught).
pub(crate) fn exit_now(exit: Exit) -> ! {
    std::process::exit(i32::from(exit.code()))
}

/// What the process was started with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Invocation {
    /// The binary to re-execute: resolved at start, so a new build placed at the same path is
    /// what SIGUSR2 runs.
    pub exe: Option<PathBuf>,
    /// Arguments after the program name, passed unchanged to a re-executed binary.
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// The configuration files, in the order given: a later file's keys win.
    pub configs: Vec<PathBuf>,
    pub action: Action,
}

/// What the command line asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Action {
    #[default]
    Run,
    /// `--check`: load and validate the configuration, then exit.
    Check,
    Help,
    Version,
}

impl Invocation {
    /// The real process's arguments and environment.
    pub(crate) fn from_process() -> Result<Invocation, String> {
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let mut inv = Invocation::parse(args, env)?;
        inv.exe = executable();
        Ok(inv)
    }

    /// Parses `--config FILE`, repeated for layers (or `-c FILE`, or else `SHOAL_CONFIG`),
    /// `--check`, `--help` and `--version`.
    pub(crate) fn parse(
        args: Vec<OsString>,
        env: Vec<(String, String)>,
    ) -> Result<Invocation, String> {
        let mut configs = Vec::new();
        let mut action = Action::Run;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let text = arg.to_string_lossy();
            match text.as_ref() {
                "--config" | "-c" => match it.next() {
                    Some(path) => configs.push(PathBuf::from(path)),
                    None => return Err(format!("{text} needs a file: {text} FILE")),
                },
                "--check" => action = Action::Check,
                "--help" | "-h" => action = Action::Help,
                "--version" | "-V" => action = Action::Version,
                other => match other.strip_prefix("--config=") {
                    Some(path) => configs.push(PathBuf::from(path)),
                    None => {
                        return Err(format!(
                            "unknown argument `{other}`; expected --config FILE, --check, --help or --version"
                        ))
                    }
                },
            }
        }
        if configs.is_empty() {
            configs.extend(
                env.iter()
                    .find(|(k, _)| k == "SHOAL_CONFIG")
                    .map(|(_, v)| PathBuf::from(v)),
            );
        }
        Ok(Invocation {
            exe: None,
            args,
            env,
            configs,
            action,
        })
    }
}

/// The agent that started this process, as `SHOAL_AGENT` names it (empty when unset): read
/// here so that this module stays the crate's one reader of the environment.
pub(crate) fn agent_from_env() -> String {
    std::env::var(shoal_api::program::env::AGENT).unwrap_or_default()
}

/// The path the binary was started by: argv[0] when it names a path (so a deploy that swaps a
/// symlink is followed), else what the kernel says the executable is.
pub(crate) fn executable() -> Option<PathBuf> {
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    match argv0 {
        Some(path) if path.components().count() > 1 => match std::env::current_dir() {
            Ok(cwd) => Some(cwd.join(path)),
            Err(_) => std::env::current_exe().ok(),
        },
        _ => std::env::current_exe().ok(),
    }
}

/// The usage text for `--help`.
pub(crate) fn usage(name: &str) -> String {
    format!(
        "{name}: a shoal service\n\n\
         usage: {name} [--config FILE]... [--check]\n\n  \
         -c, --config FILE  read the configuration from FILE (repeat it: later files win)\n  \
         --check            validate the configuration and exit (0 valid, 2 invalid)\n  \
         -h, --help         print this help\n  \
         -V, --version      print the version\n\n\
         signals: HUP reloads, TERM/INT close gracefully (a second exits at once), USR2 re-executes\n\
         environment: SHOAL_CONFIG=FILE is read when no --config is given (else the defaults);\n\
         SHOAL_SECTION__KEY=VALUE overrides section.key of the configuration\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Invocation, String> {
        Invocation::parse(
            args.iter().map(OsString::from).collect(),
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn command_lines() {
        let files = |names: &[&str]| names.iter().map(PathBuf::from).collect::<Vec<_>>();
        let inv = parse(&["--config", "a.toml"], &[]).unwrap();
        assert_eq!(inv.configs, files(&["a.toml"]));
        assert_eq!(inv.action, Action::Run);
        assert_eq!(
            parse(&["--config=b.toml", "--check"], &[]).unwrap().configs,
            files(&["b.toml"])
        );
        assert_eq!(parse(&["--check"], &[]).unwrap().action, Action::Check);
        assert_eq!(
            parse(&[], &[("SHOAL_CONFIG", "env.toml")]).unwrap().configs,
            files(&["env.toml"])
        );
        assert_eq!(
            parse(&["-c", "x.toml"], &[("SHOAL_CONFIG", "env.toml")])
                .unwrap()
                .configs,
            files(&["x.toml"])
        );
        assert_eq!(
            parse(
                &[
                    "--config",
                    "base.toml",
                    "-c",
                    "mid.toml",
                    "--config=local.toml"
                ],
                &[]
            )
            .unwrap()
            .configs,
            files(&["base.toml", "mid.toml", "local.toml"])
        );
        assert!(parse(&["--config"], &[])
            .unwrap_err()
            .contains("needs a file"));
        assert!(parse(&["--frobnicate"], &[])
            .unwrap_err()
            .contains("unknown argument `--frobnicate`"));
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        let table = [
            (Exit::Closed, 0),
            (Exit::Failed, 1),
            (Exit::BadConfig, 2),
            (Exit::GraceExpired, 3),
            (Exit::Watchdog, 4),
            (Exit::Signal(2), 130),
            (Exit::Signal(15), 143),
        ];
        for (exit, code) in table {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }
}
