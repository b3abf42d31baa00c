//! Where everything lives in the agent's data directory (see the crate documentation).

use std::io;
use std::path::{Path, PathBuf};

use shoal_pkg::manifest::Name;

/// The name of the link in [`DataDir::center`] to the version in force.
pub(crate) const CENTER_LINK: &str = "config.toml";

/// The agent's data directory and the paths inside it. Names are [`Name`]s, which hold only
/// lowercase letters, digits, `-` and `_`, so a path built from one never leaves its parent.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`, created (with its top-level directories) if missing,
    /// and made private to its owner (0700): it holds programs' environments, their output
    /// and their data.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<DataDir> {
        use std::os::unix::fs::PermissionsExt;
        let dir = DataDir { root: root.into() };
        for sub in ["apps", "logs", "backups", "run"] {
            std::fs::create_dir_all(dir.root.join(sub))?;
        }
        std::fs::set_permissions(&dir.root, std::fs::Permissions::from_mode(0o700))?;
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn database(&self) -> PathBuf {
        self.root.join("agent.db")
    }

    pub fn token(&self) -> PathBuf {
        self.root.join("agent.token")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("agent.sock")
    }

    /// The programs socket, which the agent's programs reach it through (`SHOAL_AGENT`).
    pub fn programs_socket(&self) -> PathBuf {
        self.root.join("programs.sock")
    }

    /// `incoming/`, where uploads are written before they are installed (on the versions'
    /// filesystem, so an install never copies across filesystems).
    pub fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }

    /// `apps/NAME`.
    pub fn app(&self, name: &Name) -> PathBuf {
        self.root.join("apps").join(name.as_str())
    }

    /// `apps/NAME/center`: where a service's center layer lives, one file per version.
    pub fn center(&self, name: &Name) -> PathBuf {
        self.app(name).join("center")
    }

    /// `apps/NAME/center/config.toml`: the link to the center layer's version in force, the
    /// path `SHOAL_CENTER_CONFIG` names.
    pub fn center_config(&self, name: &Name) -> PathBuf {
        self.center(name).join(CENTER_LINK)
    }

    /// The variables that tell a program (or a hook) of app `name` how to reach its agent
    /// and its center layer.
    pub fn program_env(&self, name: &Name) -> [(&'static str, String); 2] {
        use shoal_api::program::env;
        [
            (
                env::AGENT,
                format!("unix:{}", self.programs_socket().display()),
            ),
            (
                env::CENTER_CONFIG,
                self.center_config(name).display().to_string(),
            ),
        ]
    }

    /// `apps/NAME/versions`.
    pub fn versions(&self, name: &Name) -> PathBuf {
        self.app(name).join("versions")
    }

    /// `apps/NAME/versions/VERSION`.
    pub fn version(&self, name: &Name, version: &shoal_pkg::manifest::Version) -> PathBuf {
        self.versions(name).join(version.to_string())
    }

    /// `apps/NAME/current`, the symlink to the running version.
    pub fn current(&self, name: &Name) -> PathBuf {
        self.app(name).join("current")
    }

    /// `apps/NAME/data`, kept across versions.
    pub fn data(&self, name: &Name) -> PathBuf {
        self.app(name).join("data")
    }

    /// `logs/NAME`.
    pub fn logs(&self, name: &Name) -> PathBuf {
        self.root.join("logs").join(name.as_str())
    }

    /// `backups/NAME`.
    pub fn backups(&self, name: &Name) -> PathBuf {
        self.root.join("backups").join(name.as_str())
    }

    /// `run/supervise.lock`, held by the one supervisor of this data directory.
    pub fn run_lock(&self) -> PathBuf {
        self.runs().join("supervise.lock")
    }

    /// `run/NAME`, for the FIFOs of a running program.
    pub fn run(&self, name: &Name) -> PathBuf {
        self.runs().join(name.as_str())
    }

    /// `run/`: a directory [`DataDir::run`] for each program that has run.
    pub fn runs(&self) -> PathBuf {
        self.root.join("run")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let root = std::env::temp_dir().join(format!("shoal-agent-layout-{}", std::process::id()));
        let dir = DataDir::create(&root).unwrap();
        let name = Name::new("web-1").unwrap();
        let version: shoal_pkg::manifest::Version = "1.10.0".parse().unwrap();
        assert_eq!(
            dir.version(&name, &version),
            root.join("apps/web-1/versions/1.10.0")
        );
        assert_eq!(dir.current(&name), root.join("apps/web-1/current"));
        assert_eq!(dir.logs(&name), root.join("logs/web-1"));
        for sub in ["apps", "logs", "backups", "run"] {
            assert!(root.join(sub).is_dir());
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
