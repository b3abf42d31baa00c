//! `shoal config explain FILE...`: every effective value of a service's config, its files read
//! in order as the service reads them and the process environment's `SHOAL_…` overrides
//! applied, and the layer and file each one came from. The center's configurations
//! (`shoal config push`, `versions`, ...) are subcommands beside it, run by `config_cmd.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use shoal::config::{Config, Explained};

use crate::out::out;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print every effective value (secrets redacted) and its layer: file (and the file that
    /// included it), center (the version and the file `SHOAL_CENTER_CONFIG` names), environment
    /// VAR, or default.
    Explain {
        /// The service's TOML config files, in the order the service is given them
        /// (`--config base.toml --config local.toml`): a later file's keys win.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Store FILE as the next version of configuration NAME in the center and release it to
    /// app NAME on every agent of the namespace (with --gray, only to some).
    Push(crate::config_cmd::PushArgs),
    /// List the versions of configuration NAME, newest first, and which are released.
    Versions(crate::config_cmd::NameArgs),
    /// Print a version's content (the stable version without --version).
    Show(crate::config_cmd::ShowArgs),
    /// Show what changed from version V1 to version V2, as a unified diff.
    Diff(crate::config_cmd::DiffArgs),
    /// Release the gray version of NAME to every instance.
    Promote(crate::config_cmd::NameArgs),
    /// Publish an earlier version's content as a new version, released to every instance.
    Rollback(crate::config_cmd::RollbackArgs),
    /// For each instance of NAME: the desired and applied version and its state.
    Status(crate::config_cmd::StatusArgs),
}

/// Runs `cmd` with `env`, the process's environment (its `SHOAL_…` overrides).
pub fn run(cmd: ConfigCommand, env: Vec<(String, String)>) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Explain { files } => {
            let config = Config::load_files(&files, env)?;
            out!("{}", render(&config.explain()))?;
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Push(args) => crate::config_cmd::push(args),
        ConfigCommand::Versions(args) => crate::config_cmd::versions(args),
        ConfigCommand::Show(args) => crate::config_cmd::show(args),
        ConfigCommand::Diff(args) => crate::config_cmd::diff(args),
        ConfigCommand::Promote(args) => crate::config_cmd::promote(args),
        ConfigCommand::Rollback(args) => crate::config_cmd::rollback(args),
        ConfigCommand::Status(args) => crate::config_cmd::status(args),
    }
}

/// Values wider than this push their source right instead of widening every line.
const MAX_VALUE_WIDTH: usize = 40;

/// One line per key: `key = value  (file local.toml, line 3)`, keys and values in aligned
/// columns.
fn render(entries: &[Explained]) -> String {
    let rows: Vec<(&str, String, String)> = entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.to_string(), e.source.to_string()))
        .collect();
    let key_width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let value_width = rows
        .iter()
        .map(|r| r.1.chars().count())
        .filter(|&w| w <= MAX_VALUE_WIDTH)
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(key, value, source)| {
            format!("{key:<key_width$} = {value:<value_width$}  ({source})\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let config = Config::from_toml(
            "[rpc]\nlisten = \"127.0.0.1:7000\"\n",
            std::path::Path::new("hello.toml"),
            [("SHOAL_HELLO__GREETING".to_owned(), "Hi".to_owned())],
        )
        .unwrap();
        let text = render(&config.explain());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(
            &"hello.greeting           = \"Hi\"              (environment SHOAL_HELLO__GREETING)"
        ));
        assert!(lines
            .contains(&"rpc.listen               = \"127.0.0.1:7000\"  (file hello.toml, line 2)"));
        assert!(lines.contains(&"shutdown.grace           = \"10s\"             (default)"));
    }

    #[test]
    fn each_value_names_its_layer_and_file() {
        let dir = std::env::temp_dir().join(format!("shoal-explain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let base = write(
            "base.toml",
            "[hello]\ngreeting = \"Hello\"\ntoken = \"t0p\"\n",
        );
        let local = write(
            "local.toml",
            "include = [\"base.toml\"]\n[hello]\nname = \"local\"\n",
        );
        let last = write("last.toml", "[hello]\nport = 7\n");
        let center = write("v9.toml", "[hello]\nmood = \"calm\"\n");
        let link = dir.join("center.toml");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("v9.toml", &link).unwrap();
        let env = [
            ("SHOAL_RPC__LISTEN".to_owned(), "127.0.0.1:7000".to_owned()),
            ("SHOAL_CENTER_CONFIG".to_owned(), link.display().to_string()),
        ];
        let config = Config::load_files(&[local.clone(), last.clone()], env).unwrap();
        let text = render(&config.explain());
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let (base, local, last) = (base.display(), local.display(), last.display());
        let center = center.display();
        let expected = [
            format!("hello.greeting = \"Hello\" (file {base}, line 2, included from {local})"),
            format!("hello.mood = \"calm\" (center v9, file {center}, line 2)"),
            format!("hello.name = \"local\" (file {local}, line 3)"),
            format!("hello.port = 7 (file {last}, line 2)"),
            format!("hello.token = \"<redacted>\" (file {base}, line 3, included from {local})"),
            "rpc.listen = \"127.0.0.1:7000\" (environment SHOAL_RPC__LISTEN)".to_owned(),
            "shutdown.grace = \"10s\" (default)".to_owned(),
        ];
        for line in &expected {
            assert!(lines.contains(line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("t0p"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_password_inside_a_value_is_not_printed() {
        let config = Config::from_toml(
            "[db]\nurl = \"postgres://user:secretpw@h/db\"\n",
            std::path::Path::new("app.toml"),
            [(
                "SHOAL_CACHE__URL".to_owned(),
                "redis://:pw2@cache".to_owned(),
            )],
        )
        .unwrap();
        let text = render(&config.explain());
        assert!(
            text.contains("db.url") && text.contains("\"postgres://user:<redacted>@h/db\""),
            "{text}"
        );
        assert!(text.contains("\"redis://:<redacted>@cache\""), "{text}");
        assert!(
            !text.contains("secretpw") && !text.contains("pw2"),
            "{text}"
        );
    }
}
