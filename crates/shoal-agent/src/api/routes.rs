//! The API's routes, each a thin call into the [`Agent`]. All under `/v1`:
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/apps` | every installed app with its state, pid, CPU, memory, health ([`AppStatus`]) |
//! | `POST /v1/install` | body: a package archive; header `x-shoal-sha256`: its sha256 ([`InstallReport`]) |
//! | `POST /v1/apps/{name}/{start,stop,restart,reload}` | change one app's process |
//! | `GET /v1/apps/{name}/versions` | installed versions, newest first, which is current |
//! | `POST /v1/apps/{name}/rollback` | body `{"to": "1.2.0"}` or `{}` for the previous version |
//! | `GET /v1/apps/{name}/logs?stream=&grep=&since=&follow=` | captured output, filtered in the agent |
//! | `GET/POST /v1/apps/{name}/backups` | list, or take one now |
//! | `POST /v1/apps/{name}/backups/{id}/restore` | restore one (a service is stopped, then started) |
//! | `GET /v1/cron` | every crontab job with its schedule, next and last run |
//! | `POST /v1/cron/{app}/{job}/run` | run a job now (overlap rules hold), answered when it ends |
//! | `GET /v1/cron/history?app=&job=&limit=` | an app's past runs: exit code, duration, output tail |

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_pkg::manifest::{Name, Version};
use shoal_pkg::Sha256;

use super::ApiError;
use crate::agent::{Agent, AgentError, InstallReport};
use crate::{backup, versions};

/// One app as `shoal ps` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub version: String,
    /// `service` or `crontab`.
    pub kind: String,
    /// The supervisor's state for a service (`running`, `backoff`, ...), `scheduled` for a
    /// crontab package.
    pub state: String,
    pub pid: Option<u32>,
    pub uptime_secs: Option<u64>,
    pub restarts: u64,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// `ok`, `failing (N): why`, or none without checks.
    pub health: Option<String>,
    pub last_exit: Option<String>,
}

/// An installed version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub current: bool,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RollbackRequest {
    pub to: Option<String>,
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> ApiError {
        let status = match &e {
            AgentError::NotFound(_) => StatusCode::NOT_FOUND,
            AgentError::Invalid(_) => StatusCode::BAD_REQUEST,
            AgentError::Conflict(_) => StatusCode::CONFLICT,
            AgentError::Failed(_) | AgentError::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The routes, served by [`super::serve`].
pub fn routes(agent: Agent) -> Router {
    Router::new()
        .route("/v1/apps", get(apps))
        .route("/v1/install", post(install))
        .route("/v1/apps/{name}/versions", get(app_versions))
        .route("/v1/apps/{name}/rollback", post(rollback))
        .route("/v1/apps/{name}/backups", get(backups).post(take_backup))
        .route("/v1/apps/{name}/backups/{id}/restore", post(restore))
        .route("/v1/apps/{name}/logs", get(super::logs::logs))
        .route("/v1/apps/{name}/{action}", post(act))
        .route("/v1/cron", get(cron_list))
        .route("/v1/cron/history", get(cron_history))
        .route("/v1/cron/{app}/{job}/run", post(cron_run))
        // Uploads are streamed to disk and bounded by the agent's own limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(agent)
}

pub(crate) fn name(text: &str) -> Result<Name, ApiError> {
    Name::new(text).map_err(|e| ApiError::bad_request(format!("app name {text:?}: {e}")))
}

fn job_name(text: &str) -> Result<Name, ApiError> {
    Name::new(text).map_err(|e| ApiError::bad_request(format!("cron job name {text:?}: {e}")))
}

async fn apps(State(agent): State<Agent>) -> Result<Json<Vec<AppStatus>>, ApiError> {
    // A pass over /proc and the manifests: off the executor.
    let apps = tokio::task::spawn_blocking(move || agent.apps())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(apps))
}

async fn install(
    State(agent): State<Agent>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<InstallReport>, ApiError> {
    let sha256: Sha256 = headers
        .get("x-shoal-sha256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::bad_request("send the archive's sha256 in the x-shoal-sha256 header")
        })?
        .parse()
        .map_err(|e| ApiError::bad_request(format!("x-shoal-sha256: {e}")))?;
    // The upload is streamed into the data directory (the versions' filesystem), never held
    // whole in memory, and goes when the install is over, whatever its outcome.
    let incoming = agent.data().root().join("incoming");
    std::fs::create_dir_all(&incoming).map_err(|e| ApiError::internal(e.to_string()))?;
    let (path, file) = tempfile_in(&incoming)?;
    let saved = save(body, file, agent.upload_limit()).await;
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    // Run to the end even if the client goes away: an install stopped halfway would leave
    // the app between versions.
    let worker = agent.clone();
    let done = tokio::spawn(async move {
        let result = worker
            .install_as(&path, &sha256, "the uploaded archive")
            .await;
        let _ = std::fs::remove_file(&path);
        result
    });
    let report = done.await.map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(report?))
}

/// Writes the request body to `file`, refusing more than `limit` bytes.
async fn save(body: axum::body::Body, file: std::fs::File, limit: u64) -> Result<(), ApiError> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::File::from_std(file);
    let mut stream = body.into_data_stream();
    let mut written: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the archive is larger than the {limit} bytes a package may have"),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("saving the upload: {e}")))?;
    }
    file.sync_all()
        .await
        .map_err(|e| ApiError::internal(format!("saving the upload: {e}")))
}

/// A new file in `dir` that no other request uses.
fn tempfile_in(dir: &std::path::Path) -> Result<(std::path::PathBuf, std::fs::File), ApiError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "upload-{}-{}.tar.gz",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    Ok((path, file))
}

async fn act(
    State(agent): State<Agent>,
    Path((app, action)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = name(&app)?;
    agent.manifest(&name)?;
    match action.as_str() {
        "start" | "stop" | "restart" | "reload" => agent.act(&name, &action).await?,
        other => {
            return Err(ApiError::not_found(format!(
                "no action {other:?}; use start, stop, restart or reload"
            )))
        }
    }
    Ok(Json(serde_json::json!({ "app": app, "done": action })))
}

async fn app_versions(
    State(agent): State<Agent>,
    Path(app): Path<String>,
) -> Result<Json<Vec<VersionInfo>>, ApiError> {
    let name = name(&app)?;
    agent.manifest(&name)?;
    let data = agent.data();
    let current = versions::current(data, &name).map_err(|e| ApiError::internal(e.to_string()))?;
    let list = versions::list(data, &name).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(
        list.into_iter()
            .map(|v| VersionInfo {
                current: Some(&v) == current.as_ref(),
                version: v.to_string(),
            })
            .collect(),
    ))
}

async fn rollback(
    State(agent): State<Agent>,
    Path(app): Path<String>,
    Json(request): Json<RollbackRequest>,
) -> Result<Json<InstallReport>, ApiError> {
    let name = name(&app)?;
    let to = match &request.to {
        Some(text) => Some(
            text.parse::<Version>()
                .map_err(|e| ApiError::bad_request(format!("version {text:?}: {e}")))?,
        ),
        None => None,
    };
    // Run to the end even if the client goes away.
    let report = tokio::spawn(async move { agent.rollback(&name, to.as_ref()).await })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(report))
}

async fn backups(
    State(agent): State<Agent>,
    Path(app): Path<String>,
) -> Result<Json<Vec<backup::BackupInfo>>, ApiError> {
    let name = name(&app)?;
    agent.manifest(&name)?;
    Ok(Json(
        backup::list(agent.data(), &name).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

async fn take_backup(
    State(agent): State<Agent>,
    Path(app): Path<String>,
) -> Result<Json<backup::Created>, ApiError> {
    let name = name(&app)?;
    let manifest = agent.manifest(&name)?;
    let Some(spec) = manifest.backup else {
        return Err(ApiError::bad_request(format!(
            "{name} has no [backup] in its shoal.toml: nothing says what to back up"
        )));
    };
    let data = agent.data().clone();
    let info = tokio::task::spawn_blocking(move || backup::create(&data, &name, &spec))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(info))
}

async fn restore(
    State(agent): State<Agent>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = name(&app)?;
    // Run to the end even if the client goes away: a service stopped for the restore must
    // be started again.
    let backup = id.clone();
    tokio::spawn(async move { agent.restore(&name, &backup).await })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(serde_json::json!({ "app": app, "restored": id })))
}

async fn cron_list(
    State(agent): State<Agent>,
) -> Result<Json<Vec<crate::cron::JobStatus>>, ApiError> {
    agent
        .cron()
        .list()
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    app: String,
    job: Option<String>,
    limit: Option<usize>,
}

async fn cron_history(
    State(agent): State<Agent>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<Vec<crate::cron::RunRecord>>, ApiError> {
    let app = name(&query.app)?;
    let job = query.job.as_deref().map(job_name).transpose()?;
    agent
        .cron()
        .history(&app, job.as_ref(), query.limit.unwrap_or(20).min(1000))
        .map(Json)
        .map_err(cron_error)
}

fn cron_error(e: crate::cron::CronError) -> ApiError {
    use crate::cron::CronError;
    match e {
        CronError::UnknownApp { .. }
        | CronError::UnknownJob { .. }
        | CronError::UnknownRun { .. } => ApiError::not_found(e.to_string()),
        CronError::AlreadyRunning { .. } | CronError::ShuttingDown => {
            ApiError::conflict(e.to_string())
        }
        other => ApiError::internal(other.to_string()),
    }
}

async fn cron_run(
    State(agent): State<Agent>,
    Path((app, job)): Path<(String, String)>,
) -> Result<Json<crate::cron::RunRecord>, ApiError> {
    let (app, job) = (name(&app)?, job_name(&job)?);
    let cron = agent.cron();
    let id = cron.run_now(&app, &job).map_err(cron_error)?;
    // Answered when the run is over (its timeout bounds the wait).
    cron.wait(id).await.map(Json).map_err(cron_error)
}
