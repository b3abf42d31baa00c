//! Worker processes: which role a started binary plays (the application itself, a process
//! worker of a group, or a process-mode RPC worker), and the parent's side of starting one.

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use crate::config::{LogConfig, SinkKind};
use crate::control::handover::{self, Spawned};

const WORKER_VAR: &str = "SHOAL_WORKER";
const RPC_WORKER_VAR: &str = "SHOAL_RPC_WORKER";
const PARENT_VAR: &str = "SHOAL_WORKER_OF";

/// What this process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// The application (in process mode: the master).
    App,
    /// Worker `index` of `count` in process group `group`.
    GroupWorker {
        group: String,
        index: usize,
        count: usize,
    },
    /// Process-mode RPC worker `index` of `count`: serves the inherited RPC listener.
    RpcWorker { index: usize, count: usize },
}

impl Role {
    /// The role `env` gives, honoured only when the named parent is the real parent: a
    /// program a worker starts inherits the variables and must not take them for its own.
    pub(crate) fn from_env(env: &[(String, String)]) -> Result<Role, String> {
        let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let Some(parent) = var(PARENT_VAR).and_then(|v| v.parse::<i32>().ok()) else {
            return Ok(Role::App);
        };
        if nix::unistd::getppid().as_raw() != parent {
            return Ok(Role::App);
        }
        let bad = |name: &str, value: &str| format!("{name}={value} is not INDEX:COUNT");
        if let Some(value) = var(WORKER_VAR) {
            let mut parts = value.rsplitn(3, ':');
            let count = parts.next().and_then(|c| c.parse().ok());
            let index = parts.next().and_then(|i| i.parse().ok());
            let group = parts.next();
            return match (group, index, count) {
                (Some(group), Some(index), Some(count)) if index < count => Ok(Role::GroupWorker {
                    group: group.to_owned(),
                    index,
                    count,
                }),
                _ => Err(format!("{WORKER_VAR}={value} is not GROUP:INDEX:COUNT")),
            };
        }
        if let Some(value) = var(RPC_WORKER_VAR) {
            let (index, count) = value
                .split_once(':')
                .and_then(|(i, c)| Some((i.parse().ok()?, c.parse().ok()?)))
                .filter(|(i, c)| i < c)
                .ok_or_else(|| bad(RPC_WORKER_VAR, value))?;
            return Ok(Role::RpcWorker { index, count });
        }
        Ok(Role::App)
    }

    pub(crate) fn is_worker(&self) -> bool {
        !matches!(self, Role::App)
    }

    /// The logging this process does: a worker writes its own files (`app.log` becomes
    /// `app.rpc-1.log`, `app.sweeper-0.log`), so that no two processes rotate one file.
    pub(crate) fn log_config(&self, log: &LogConfig) -> LogConfig {
        let tag = match self {
            Role::App => return log.clone(),
            Role::GroupWorker { group, index, .. } => format!("{group}-{index}"),
            Role::RpcWorker { index, .. } => format!("rpc-{index}"),
        };
        let mut log = log.clone();
        for sink in &mut log.sinks {
            if let SinkKind::File(file) = &mut sink.kind {
                file.path = tagged(&file.path, &tag);
            }
        }
        log
    }
}

/// `dir/name.ext` as `dir/name.TAG.ext` (`dir/name.TAG` without an extension).
fn tagged(path: &Path, tag: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{tag}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{tag}"),
    };
    path.with_file_name(name)
}

/// Starts worker `index` of `count` in `group` (None: an RPC worker, handed `listeners`). The
/// worker runs the very binary this process runs (`/proc/self/exe`, even if a new build has
/// replaced the file since: a restarted worker never mixes versions with its siblings), shown
/// as `name` in process listings.
pub(crate) fn start(
    name: &Path,
    args: &[OsString],
    group: Option<&str>,
    index: usize,
    count: usize,
    listeners: &[(&str, BorrowedFd<'_>)],
) -> Result<Spawned, String> {
    let role = match group {
        Some(group) => (WORKER_VAR, format!("{group}:{index}:{count}")),
        None => (RPC_WORKER_VAR, format!("{index}:{count}")),
    };
    let env = [role, (PARENT_VAR, std::process::id().to_string())];
    let arg0 = name.as_os_str().to_owned();
    handover::spawn(
        Path::new("/proc/self/exe"),
        args,
        &env,
        listeners,
        Some(&arg0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn roles_are_taken_only_from_the_real_parent() {
        let parent = nix::unistd::getppid().as_raw().to_string();
        let worker = env(&[
            (WORKER_VAR, "feed:poll:1:3".into()),
            (PARENT_VAR, parent.clone()),
        ]);
        assert_eq!(
            Role::from_env(&worker).unwrap(),
            Role::GroupWorker {
                group: "feed:poll".into(),
                index: 1,
                count: 3
            }
        );
        let rpc = env(&[(RPC_WORKER_VAR, "0:2".into()), (PARENT_VAR, parent.clone())]);
        assert_eq!(
            Role::from_env(&rpc).unwrap(),
            Role::RpcWorker { index: 0, count: 2 }
        );
        let elsewhere = env(&[
            (RPC_WORKER_VAR, "0:2".into()),
            (PARENT_VAR, i32::MAX.to_string()),
        ]);
        assert_eq!(Role::from_env(&elsewhere).unwrap(), Role::App);
        let bad = env(&[(RPC_WORKER_VAR, "3:2".into()), (PARENT_VAR, parent)]);
        assert!(Role::from_env(&bad).unwrap_err().contains("INDEX:COUNT"));
    }

    #[test]
    fn workers_log_to_files_of_their_own() {
        assert_eq!(
            tagged(Path::new("logs/app.log"), "rpc-1"),
            PathBuf::from("logs/app.rpc-1.log")
        );
        assert_eq!(
            tagged(Path::new("/var/log/app"), "sweeper-0"),
            PathBuf::from("/var/log/app.sweeper-0")
        );
    }
}
