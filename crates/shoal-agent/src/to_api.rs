//! The agent's own values as the `shoal-api` types its methods answer with: the one place
//! that knows both, so the domain modules keep their types and the wire keeps its shape.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_api::agent as api;
use shoal_pkg::manifest::{Kind, Manifest};

use crate::backup::{BackupInfo, Created};
use crate::cron::{JobStatus, Outcome, RunRecord, Trigger};
use crate::supervise::{ProgramState, ProgramStatus};

/// An installed app: a service as its program runs (`program`, when the supervisor knows
/// it), a crontab package as scheduled; a healthy service's ports as endpoints at `host`.
pub(crate) fn app_status(
    manifest: &Manifest,
    program: Option<&ProgramStatus>,
    now: DateTime<Utc>,
    host: Option<&str>,
) -> api::AppStatus {
    let name = manifest.package.name.to_string();
    match (manifest.package.kind, program) {
        (Kind::Service, Some(p)) => api::AppStatus {
            name,
            version: p.version.to_string(),
            kind: api::AppKind::Service,
            state: app_state(p.state),
            pid: p.pid,
            uptime_secs: p.started_at.map(|t| (now - t).num_seconds().max(0) as u64),
            restarts: u64::from(p.restarts),
            cpu_percent: p.cpu_percent,
            rss_bytes: p.rss_bytes,
            health: p.health.as_ref().map(|h| {
                if h.ok {
                    api::Health::Ok
                } else {
                    api::Health::Failing {
                        failures: h.consecutive_failures,
                        reason: h.last_error.clone(),
                    }
                }
            }),
            last_exit: p
                .last_exit
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| p.error.clone()),
            endpoints: match (host, &manifest.run) {
                (Some(host), Some(run)) if p.is_healthy() => {
                    run.ports.iter().map(|&port| endpoint(host, port)).collect()
                }
                _ => Vec::new(),
            },
        },
        (kind, _) => {
            let (kind, state) = match kind {
                Kind::Service => (api::AppKind::Service, api::AppState::Unknown),
                Kind::Crontab => (api::AppKind::Crontab, api::AppState::Scheduled),
            };
            api::AppStatus::new(name, manifest.package.version.to_string(), kind, state)
        }
    }
}

/// `host:port`, with an IPv6 address in brackets.
pub(crate) fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn app_state(state: ProgramState) -> api::AppState {
    match state {
        ProgramState::Starting => api::AppState::Starting,
        ProgramState::Running => api::AppState::Running,
        ProgramState::Backoff => api::AppState::Backoff,
        ProgramState::Stopping => api::AppState::Stopping,
        ProgramState::Stopped => api::AppState::Stopped,
        ProgramState::Exited => api::AppState::Exited,
        ProgramState::Failed => api::AppState::Failed,
    }
}

pub(crate) fn backup_info(info: &BackupInfo) -> api::BackupInfo {
    api::BackupInfo {
        id: info.id.clone(),
        created_at: info.created_at,
        size: info.size,
        sha256: info.sha256.to_string(),
    }
}

pub(crate) fn backup_created(created: &Created) -> api::BackupCreated {
    api::BackupCreated {
        backup: backup_info(&created.backup),
        notes: created.notes.clone(),
        pruned: created.pruned.clone(),
    }
}

pub(crate) fn job_status(job: &JobStatus) -> api::JobStatus {
    api::JobStatus {
        app: job.app.to_string(),
        job: job.job.to_string(),
        schedule: job.schedule.clone(),
        command: job.command.clone(),
        overlap: job.overlap,
        timeout_ms: millis(job.timeout),
        next: job.next,
        running: job.running.iter().map(|id| id.0).collect(),
        last: job.last.as_ref().map(run_record),
    }
}

pub(crate) fn run_record(run: &RunRecord) -> api::RunRecord {
    api::RunRecord {
        id: run.id.0,
        app: run.app.to_string(),
        job: run.job.to_string(),
        trigger: match run.trigger {
            Trigger::Schedule => api::Trigger::Schedule,
            Trigger::Manual => api::Trigger::Manual,
        },
        started_at: run.started_at,
        duration_ms: run.duration.map(millis),
        status: match &run.outcome {
            Outcome::Running => api::RunStatus::Running,
            Outcome::Exited { code } => api::RunStatus::Exited { code: *code },
            Outcome::Signaled { signal } => api::RunStatus::Signaled { signal: *signal },
            Outcome::TimedOut => api::RunStatus::TimedOut,
            Outcome::FailedToStart { error } => api::RunStatus::FailedToStart {
                error: error.clone(),
            },
            Outcome::Skipped { ticks, blocked_by } => api::RunStatus::Skipped {
                ticks: *ticks,
                blocked_by: blocked_by.0,
            },
            Outcome::Interrupted { reason } => api::RunStatus::Interrupted {
                reason: reason.clone(),
            },
            Outcome::Stopped => api::RunStatus::Stopped,
        },
        pid: run.pid,
        output: run.output.clone(),
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use shoal_pkg::manifest::ManifestExt;

    use super::*;
    use crate::supervise::HealthStatus;

    fn program(state: ProgramState, health: Option<bool>) -> ProgramStatus {
        ProgramStatus {
            name: shoal_pkg::manifest::Name::new("web").unwrap(),
            version: shoal_pkg::manifest::Version::new(1, 0, 0),
            state,
            pid: Some(42),
            pgid: Some(42),
            started_at: Some(Utc::now()),
            since: Utc::now(),
            next_start: None,
            restarts: 0,
            last_exit: None,
            error: None,
            health: health.map(|ok| HealthStatus {
                ok,
                consecutive_failures: u32::from(!ok),
                last_error: None,
                checked_at: None,
            }),
            cpu_percent: None,
            rss_bytes: None,
        }
    }

    #[test]
    fn a_service_reports_its_ports_at_the_host_only_while_running_and_healthy() {
        let manifest = Manifest::parse(
            "[package]\nname = \"web\"\nversion = \"1.0.0\"\nkind = \"service\"\n\
             [run]\ncommand = \"bin/web\"\nports = [7000, 9100]\n",
            "shoal.toml",
        )
        .unwrap();
        let now = Utc::now();
        let endpoints = |state, health, host| {
            app_status(&manifest, Some(&program(state, health)), now, host).endpoints
        };
        let both = ["10.0.0.5:7000", "10.0.0.5:9100"];
        assert_eq!(
            endpoints(ProgramState::Running, None, Some("10.0.0.5")),
            both
        );
        assert_eq!(
            endpoints(ProgramState::Running, Some(true), Some("10.0.0.5")),
            both
        );
        assert_eq!(
            endpoints(ProgramState::Running, None, Some("::1")),
            ["[::1]:7000", "[::1]:9100"]
        );
        let none: [&str; 0] = [];
        // A failed check takes them away before the restart does.
        assert_eq!(
            endpoints(ProgramState::Running, Some(false), Some("10.0.0.5")),
            none
        );
        for state in [
            ProgramState::Starting,
            ProgramState::Stopping,
            ProgramState::Stopped,
            ProgramState::Backoff,
            ProgramState::Failed,
        ] {
            assert_eq!(endpoints(state, None, Some("10.0.0.5")), none, "{state}");
        }
        // No host known: no endpoints.
        assert_eq!(endpoints(ProgramState::Running, None, None), none);
    }
}
