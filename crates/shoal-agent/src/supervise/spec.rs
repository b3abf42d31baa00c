//! [`ProgramSpec`]: everything the supervisor needs to run one program, taken from a
//! service package's manifest and its version directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_pkg::manifest::{Command, Health, Logs, Manifest, Name, Restart, StopSignal, Version};

/// One supervised program: a service package's `[run]`, `[health]` and `[logs]`, with the
/// version directory it runs in.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramSpec {
    /// The package's name, which names the program everywhere (status, logs, `run/NAME`).
    pub name: Name,
    pub version: Version,
    /// The version directory (`apps/NAME/versions/VERSION`): the program's working
    /// directory, and where a relative `command` is found.
    pub dir: PathBuf,
    pub command: Command,
    /// Added to the agent's environment (see the module documentation for what else is set).
    pub env: BTreeMap<String, String>,
    /// Sent to the process group to stop the program.
    pub stop_signal: StopSignal,
    /// After `stop_signal`, how long until the whole process group gets SIGKILL.
    pub stop_timeout: Duration,
    /// How long a stop of a healthy program waits, once it is published as stopping (its
    /// endpoints withdrawn), before `stop_signal` is sent.
    pub shutdown_delay: Duration,
    pub restart: Restart,
    /// `None`: the process being alive is its health.
    pub health: Option<Health>,
    pub logs: Logs,
    /// Programs that must be healthy before this one is started.
    pub start_after: Vec<Name>,
}

impl ProgramSpec {
    /// The program of a service package unpacked in `dir`; `None` for a crontab package,
    /// which has no long-running program.
    pub fn from_manifest(manifest: &Manifest, dir: &Path) -> Option<ProgramSpec> {
        let run = manifest.run.as_ref()?;
        Some(ProgramSpec {
            name: manifest.package.name.clone(),
            version: manifest.package.version.clone(),
            dir: dir.to_owned(),
            command: run.command.clone(),
            env: run.env.clone(),
            stop_signal: run.stop_signal,
            stop_timeout: run.stop_timeout,
            shutdown_delay: run.shutdown_delay,
            restart: run.restart,
            health: manifest.health.clone(),
            logs: manifest.logs.clone(),
            start_after: run.start_after.clone(),
        })
    }

    /// What is executed: a relative path with a `/` is inside [`dir`](ProgramSpec::dir); an
    /// absolute path or a bare name (looked up on `PATH`) is used as it is.
    pub fn program(&self) -> PathBuf {
        self.command.program_in(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use shoal_pkg::manifest::ManifestExt;

    use super::*;

    #[test]
    fn a_service_manifest_gives_its_program_and_a_crontab_none() {
        let service = Manifest::parse(
            r#"
            [package]
            name = "calculate"
            version = "1.3.0"
            kind = "service"
            [run]
            command = "bin/calculate"
            args = ["--port", "3000"]
            restart = "on-failure"
            start_after = ["cache"]
            [health]
            port = 3000
            "#,
            "shoal.toml",
        )
        .unwrap();
        let dir = Path::new("/data/apps/calculate/versions/1.3.0");
        let spec = ProgramSpec::from_manifest(&service, dir).unwrap();
        assert_eq!(spec.name.as_str(), "calculate");
        assert_eq!(spec.program(), dir.join("bin/calculate"));
        assert_eq!(spec.command.args, ["--port", "3000"]);
        assert_eq!(spec.restart, Restart::OnFailure);
        assert_eq!(spec.start_after, [Name::new("cache").unwrap()]);
        assert_eq!(spec.health.unwrap().port, Some(3000));

        let crontab = Manifest::parse(
            r#"
            [package]
            name = "report"
            version = "1.0.0"
            kind = "crontab"
            [[cron]]
            name = "daily"
            schedule = "0 0 0 * * *"
            command = "bin/report"
            "#,
            "shoal.toml",
        )
        .unwrap();
        assert_eq!(ProgramSpec::from_manifest(&crontab, dir), None);
    }

    #[test]
    fn programs_resolve_against_the_version_directory_only_when_relative_paths() {
        let mut spec = ProgramSpec::from_manifest(
            &Manifest::parse(
                "[package]\nname = \"a\"\nversion = \"1.0.0\"\nkind = \"service\"\n\
                 [run]\ncommand = \"python3\"\n",
                "shoal.toml",
            )
            .unwrap(),
            Path::new("/v"),
        )
        .unwrap();
        for (program, expected) in [
            ("python3", "python3"),
            ("/usr/bin/env", "/usr/bin/env"),
            ("bin/app", "/v/bin/app"),
            ("./app", "/v/./app"),
        ] {
            spec.command.program = program.to_owned();
            assert_eq!(spec.program(), PathBuf::from(expected), "{program}");
        }
    }
}
