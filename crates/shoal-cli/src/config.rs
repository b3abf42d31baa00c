//! `shoal config explain FILE`: every effective value of a service's config, with the process
//! environment's `SHOAL_…` overrides applied, and where each one came from.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use shoal::config::{Config, Explained};

use crate::out::out;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print every effective value (secrets redacted) and its source: file:line, env VAR, or
    /// default.
    Explain {
        /// The service's TOML config file.
        file: PathBuf,
    },
}

/// Runs `cmd` with `env`, the process's environment (its `SHOAL_…` overrides).
pub fn run(cmd: ConfigCommand, env: Vec<(String, String)>) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Explain { file } => {
            let config = Config::load(Some(&file), env)?;
            out!("{}", render(&config.explain()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Values wider than this push their comment right instead of widening every line.
const MAX_VALUE_WIDTH: usize = 40;

/// One line per key: `key = value   # source`, keys and values in aligned columns.
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
            format!("{key:<key_width$} = {value:<value_width$}   # {source}\n")
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
            &"hello.greeting           = \"Hi\"               # env SHOAL_HELLO__GREETING"
        ));
        assert!(lines.contains(&"rpc.listen               = \"127.0.0.1:7000\"   # hello.toml:2"));
        assert!(lines.contains(&"shutdown.grace           = \"10s\"              # default"));
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
