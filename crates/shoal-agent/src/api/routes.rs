//! The API's routes, each a thin call into the [`Agent`]: the path and query read into
//! `shoal-api` types, the answer written as JSON. All under `/v1`:
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/apps` | every installed app with its state, pid, CPU, memory, health ([`AppStatus`]) |
//! | `POST /v1/install` | body: a package archive; header `x-shoal-sha256`: its sha256 ([`InstallReport`]) |
//! | `POST /v1/apps/{name}/{start,stop,restart,reload}` | change one app's process ([`ActionDone`]) |
//! | `GET /v1/apps/{name}/versions` | installed versions, newest first, which is current ([`VersionInfo`]) |
//! | `POST /v1/apps/{name}/rollback` | body [`RollbackRequest`]: `{"to": "1.2.0"}` or `{}` for the previous version |
//! | `GET /v1/apps/{name}/logs?stream=&grep=&since=&follow=&lines=` | captured output ([`LogQuery`]), as text |
//! | `GET/POST /v1/apps/{name}/backups` | list ([`BackupInfo`]), or take one now ([`BackupCreated`]) |
//! | `POST /v1/apps/{name}/backups/{id}/restore` | restore one (a service is stopped, then started; [`Restored`]) |
//! | `GET /v1/cron` | every crontab job with its schedule, next and last run ([`JobStatus`]) |
//! | `POST /v1/cron/{app}/{job}/run` | run a job now (overlap rules hold), answered when it ends ([`RunRecord`]) |
//! | `GET /v1/cron/history?app=&job=&limit=` | an app's past runs: exit code, duration, output tail |

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use serde::Deserialize;
use shoal_api::agent::{
    ActionDone, AppAction, AppStatus, BackupCreated, BackupInfo, InstallReport, JobStatus,
    LogQuery, Restored, RollbackRequest, RunRecord, VersionInfo, SHA256_HEADER,
};
use shoal_pkg::manifest::{Name, Version};
use shoal_pkg::Sha256;

use super::ApiError;
use crate::{Agent, AgentError, ErrorKind};

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> ApiError {
        let status = match e.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.chain())
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
        .route("/v1/apps/{name}/logs", get(logs))
        .route("/v1/apps/{name}/{action}", post(act))
        .route("/v1/cron", get(cron_list))
        .route("/v1/cron/history", get(cron_history))
        .route("/v1/cron/{app}/{job}/run", post(cron_run))
        // Uploads are streamed to disk and bounded by the agent's own limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(agent)
}

fn name(text: &str) -> Result<Name, ApiError> {
    Name::new(text).map_err(|e| ApiError::bad_request(format!("app name {text:?}: {e}")))
}

fn job_name(text: &str) -> Result<Name, ApiError> {
    Name::new(text).map_err(|e| ApiError::bad_request(format!("cron job name {text:?}: {e}")))
}

async fn apps(State(agent): State<Agent>) -> Result<Json<Vec<AppStatus>>, ApiError> {
    Ok(Json(agent.apps().await?))
}

async fn install(
    State(agent): State<Agent>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<InstallReport>, ApiError> {
    let sha256: Sha256 = headers
        .get(SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "send the archive's sha256 in the {SHA256_HEADER} header"
            ))
        })?
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{SHA256_HEADER}: {e}")))?;
    let report = agent
        .install_upload(body.into_data_stream(), &sha256)
        .await?;
    Ok(Json(report))
}

async fn act(
    State(agent): State<Agent>,
    Path((app, action)): Path<(String, String)>,
) -> Result<Json<ActionDone>, ApiError> {
    let name = name(&app)?;
    agent.manifest(&name)?;
    let action: AppAction = action
        .parse()
        .map_err(|e: shoal_api::agent::UnknownAction| ApiError::not_found(e.to_string()))?;
    agent.act(&name, action).await?;
    Ok(Json(ActionDone { app, done: action }))
}

async fn app_versions(
    State(agent): State<Agent>,
    Path(app): Path<String>,
) -> Result<Json<Vec<VersionInfo>>, ApiError> {
    Ok(Json(agent.versions(&name(&app)?).await?))
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
    Ok(Json(agent.rollback(&name, to.as_ref()).await?))
}

async fn backups(
    State(agent): State<Agent>,
    Path(app): Path<String>,
) -> Result<Json<Vec<BackupInfo>>, ApiError> {
    Ok(Json(agent.backups(&name(&app)?).await?))
}

async fn take_backup(
    State(agent): State<Agent>,
    Path(app): Path<String>,
) -> Result<Json<BackupCreated>, ApiError> {
    Ok(Json(agent.backup_now(&name(&app)?).await?))
}

async fn restore(
    State(agent): State<Agent>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Restored>, ApiError> {
    agent.restore(&name(&app)?, &id).await?;
    Ok(Json(Restored { app, restored: id }))
}

/// The lines as text, each with its newline; followed, the lines written next as they come.
async fn logs(
    State(agent): State<Agent>,
    Path(app): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let logs = agent.logs(&name(&app)?, &query).await?;
    let first = text(logs.lines);
    let Some(follow) = logs.follow else {
        return Ok(Response::new(Body::from(first)));
    };
    let first = futures_util::stream::once(async move { first });
    let next = follow.into_stream().map(text);
    let chunks = first
        .chain(next)
        .map(|chunk| Ok::<_, std::io::Error>(Bytes::from(chunk)));
    Ok(Response::new(Body::from_stream(chunks)))
}

fn text(lines: Vec<String>) -> String {
    let mut text = String::new();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

async fn cron_list(State(agent): State<Agent>) -> Result<Json<Vec<JobStatus>>, ApiError> {
    Ok(Json(agent.cron_jobs().await?))
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
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let app = name(&query.app)?;
    let job = query.job.as_deref().map(job_name).transpose()?;
    let limit = query.limit.unwrap_or(20).min(1000);
    Ok(Json(agent.cron_history(&app, job.as_ref(), limit).await?))
}

async fn cron_run(
    State(agent): State<Agent>,
    Path((app, job)): Path<(String, String)>,
) -> Result<Json<RunRecord>, ApiError> {
    let (app, job) = (name(&app)?, job_name(&job)?);
    Ok(Json(agent.cron_run(&app, &job).await?))
}
