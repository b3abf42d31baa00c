//! The one error of loading and reading config: where the bad value came from (file, line,
//! column, or environment variable), which key, and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Source;

/// A config that cannot be used. Displays as one lowercase line, like
///
/// ```text
/// hello.toml:3: key `rpc.listen`: expected host:port or unix:PATH, got "nowhere"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(Box<Detail>);

/// Boxed: errors travel through `Result`s on every path, and most of those are `Ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Detail {
    file: Option<PathBuf>,
    line: Option<usize>,
    column: Option<usize>,
    env: Option<String>,
    key: Option<String>,
    message: String,
}

impl ConfigError {
    /// The config file at fault: the one the bad value came from, else the last file given
    /// (also for errors from the environment), when there is one.
    pub fn file(&self) -> Option<&Path> {
        self.0.file.as_deref()
    }

    /// The key at fault, when the error is about one.
    pub fn key(&self) -> Option<&str> {
        self.0.key.as_deref()
    }

    /// The file line (1-based) at fault, when the bad value came from the file.
    pub fn line(&self) -> Option<usize> {
        self.0.line
    }

    /// The column (1-based) of a TOML syntax error.
    pub fn column(&self) -> Option<usize> {
        self.0.column
    }

    /// The environment variable at fault, when the bad value came from the environment.
    pub fn env_var(&self) -> Option<&str> {
        self.0.env.as_deref()
    }

    /// What is wrong, without the place: `expected a duration like "10s", got "soon"`.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub(super) fn unreadable(path: &Path, error: &std::io::Error) -> ConfigError {
        ConfigError(Box::new(Detail {
            file: Some(path.to_owned()),
            line: None,
            column: None,
            env: None,
            key: None,
            message: format!("cannot read: {error}"),
        }))
    }

    pub(super) fn not_a_file(path: &Path, kind: &str) -> ConfigError {
        ConfigError(Box::new(Detail {
            file: Some(path.to_owned()),
            line: None,
            column: None,
            env: None,
            key: None,
            message: format!(
                "is {kind}, not a regular file; give the path of a TOML configuration file"
            ),
        }))
    }

    pub(super) fn syntax(path: &Path, line: usize, column: usize, message: &str) -> ConfigError {
        // toml_edit's messages run over several lines ("invalid table header\nexpected ...").
        let message = message.trim().lines().collect::<Vec<_>>().join("; ");
        ConfigError(Box::new(Detail {
            file: Some(path.to_owned()),
            line: Some(line),
            column: Some(column),
            env: None,
            key: None,
            message: format!("TOML syntax: {message}"),
        }))
    }

    pub(super) fn env(
        file: Option<&Path>,
        var: &str,
        key: Option<String>,
        message: String,
    ) -> Self {
        ConfigError(Box::new(Detail {
            file: file.map(Path::to_owned),
            line: None,
            column: None,
            env: Some(var.to_owned()),
            key,
            message,
        }))
    }

    /// An error about the value at `key`, which came from `source`: placed in the file that
    /// source names, else in `file`.
    pub(super) fn at(
        file: Option<&Path>,
        source: Option<&Source>,
        key: &str,
        message: String,
    ) -> ConfigError {
        let (file, line, env) = match source {
            Some(Source::File { path, line, .. } | Source::Center { path, line, .. }) => {
                (Some(path.as_path()), Some(*line), None)
            }
            Some(Source::Env { var }) => (file, None, Some(var.clone())),
            Some(Source::Default) | None => (file, None, None),
        };
        ConfigError(Box::new(Detail {
            file: file.map(Path::to_owned),
            line,
            column: None,
            env,
            key: Some(key.to_owned()),
            // Messages quote the bad value: a password inside it is not repeated.
            message: super::redact::in_text(&message)
                .unwrap_or(message)
                .lines()
                .collect::<Vec<_>>()
                .join("; "),
        }))
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.env, &self.file) {
            (Some(var), _) => write!(f, "env {var}: ")?,
            (None, Some(file)) => {
                write!(f, "{}", file.display())?;
                if let Some(line) = self.line {
                    write!(f, ":{line}")?;
                }
                if let Some(column) = self.column {
                    write!(f, ":{column}")?;
                }
                f.write_str(": ")?;
            }
            (None, None) => {}
        }
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}
