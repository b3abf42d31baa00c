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
/// it), a crontab package as scheduled.
pub(crate) fn app_status(
    manifest: &Manifest,
    program: Option<&ProgramStatus>,
    now: DateTime<Utc>,
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
        },
        (kind, _) => api::AppStatus {
            name,
            version: manifest.package.version.to_string(),
            kind: match kind {
                Kind::Service => api::AppKind::Service,
                Kind::Crontab => api::AppKind::Crontab,
            },
            state: match kind {
                Kind::Service => api::AppState::Unknown,
                Kind::Crontab => api::AppState::Scheduled,
            },
            pid: None,
            uptime_secs: None,
            restarts: 0,
            cpu_percent: None,
            rss_bytes: None,
            health: None,
            last_exit: None,
        },
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
