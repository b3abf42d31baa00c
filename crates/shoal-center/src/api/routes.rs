//! routes.rs: the handlers of `/api/v1`, each with its OpenAPI description.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use serde::Deserialize;
use shoal_api::agent::SHA256_HEADER;
use shoal_api::center::{
    AuditEntry, CommandRequest, CommandView, FleetLogLine, FleetLogsRequest, PackageInfo, Role,
    TokenCreated, TokenInfo, TokenRequest,
};
use shoal_api::fleet::{AgentInfo, ServiceEndpoints};
use shoal_pkg::Sha256;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, Auth, Doc, JsonBody};
use crate::Center;

/// The API's routes, and its document at `/api/v1/openapi.json`.
pub fn router(center: Center) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(Doc::openapi())
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_agents))
        .routes(routes!(revoke_agent))
        .routes(routes!(list_packages, push_package))
        .routes(routes!(list_commands, run_command))
        .routes(routes!(show_command))
        .routes(routes!(fleet_logs))
        .routes(routes!(audit))
        .merge(super::config::routes())
        .routes(routes!(service_endpoints))
        .route_layer(axum::middleware::from_fn_with_state(
            center.clone(),
            super::auth::audit_denied,
        ))
        .split_for_parts();
    let doc = serde_json::to_vec(&doc).expect("the OpenAPI document serializes");
    let upload_limit = center.limits.max_upload;
    Router::new()
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || async move {
                ([(header::CONTENT_TYPE, "application/json")], doc.clone())
            }),
        )
        .merge(api)
        .layer(axum::extract::DefaultBodyLimit::max(
            usize::try_from(upload_limit).unwrap_or(usize::MAX),
        ))
        .with_state(center)
}

type Answer<T> = Result<Json<T>, ApiError>;

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenInfo>), (status = 401), (status = 403)))]
async fn list_tokens(State(center): State<Center>, auth: Auth) -> Answer<Vec<TokenInfo>> {
    let by = auth.at_least(Role::Admin)?;
    Ok(Json(center.tokens.list(by).await?))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenRequest,
    responses((status = 200, body = TokenCreated), (status = 400), (status = 401), (status = 403),
        (status = 415), (status = 422)))]
async fn create_token(
    State(center): State<Center>,
    auth: Auth,
    JsonBody(request): JsonBody<TokenRequest>,
) -> Answer<TokenCreated> {
    let by = auth.at_least(Role::Admin)?.clone();
    let created = center
        .clone()
        .detached(async move {
            let created = center.tokens.create(&request, &by, &center.pin).await;
            let target = created
                .as_ref()
                .map(|c| c.info.id.clone())
                .unwrap_or_default();
            center
                .audit(&by, "token.create", vec![target], &created)
                .await?;
            Ok::<_, ApiError>(created?)
        })
        .await?;
    Ok(Json(created))
}

#[utoipa::path(post, path = "/api/v1/tokens/{id}/revoke", tag = "tokens",
    params(("id" = String, Path, description = "the token's id")),
    responses((status = 200, body = TokenInfo), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "a token cannot revoke itself")))]
async fn revoke_token(
    State(center): State<Center>,
    auth: Auth,
    Path(id): Path<String>,
) -> Answer<TokenInfo> {
    let by = auth.at_least(Role::Admin)?.clone();
    let revoked = center
        .clone()
        .detached(async move {
            let revoked = center.tokens.revoke(&id, &by).await;
            center
                .audit(&by, "token.revoke", vec![id], &revoked)
                .await?;
            Ok::<_, ApiError>(revoked?)
        })
        .await?;
    Ok(Json(revoked))
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    responses((status = 200, body = Vec<AgentInfo>), (status = 401)))]
async fn list_agents(State(center): State<Center>, auth: Auth) -> Answer<Vec<AgentInfo>> {
    let by = auth.at_least(Role::Viewer)?;
    let agents = center.reach.agents().await.map_err(internal)?;
    Ok(Json(
        agents
            .into_iter()
            .filter(|a| by.reaches(&a.namespace))
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents",
    params(("id" = String, Path, description = "the agent's id")),
    responses((status = 200, body = AgentInfo), (status = 401), (status = 403), (status = 404)))]
async fn revoke_agent(
    State(center): State<Center>,
    auth: Auth,
    Path(id): Path<String>,
) -> Answer<AgentInfo> {
    let by = auth.at_least(Role::Admin)?;
    let agents = center.reach.agents().await.map_err(internal)?;
    let Some(agent) = agents
        .into_iter()
        .find(|a| a.id == id && by.reaches(&a.namespace))
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no agent {id}"),
        ));
    };
    let by = by.clone();
    center
        .clone()
        .detached(async move {
            let revoked = center.reach.revoke(&id).await;
            center
                .audit(&by, "agent.revoke", vec![id], &revoked)
                .await?;
            revoked.map_err(internal)
        })
        .await?;
    Ok(Json(AgentInfo {
        online: false,
        revoked: true,
        ..agent
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct PackageQuery {
    /// Only this package's versions.
    name: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/packages", tag = "packages", params(PackageQuery),
    responses((status = 200, body = Vec<PackageInfo>), (status = 401)))]
async fn list_packages(
    State(center): State<Center>,
    auth: Auth,
    Query(query): Query<PackageQuery>,
) -> Answer<Vec<PackageInfo>> {
    auth.at_least(Role::Viewer)?;
    Ok(Json(center.packages.list(query.name.as_deref()).await?))
}

#[utoipa::path(post, path = "/api/v1/packages", tag = "packages",
    params(("x-shoal-sha256" = Option<String>, Header,
        description = "the archive's sha256 (64 hex digits): an upload of another digest is refused before anything is kept")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "the package archive, NAME-VERSION.tar.gz"),
    responses((status = 200, body = PackageInfo),
        (status = 400, description = "the sha256 header is not a digest"), (status = 401),
        (status = 403, description = "a role below operator, or a token limited to a namespace: the repository is shared by every namespace"),
        (status = 409, description = "that version exists with other content"),
        (status = 413, description = "larger than the center takes"),
        (status = 422, description = "the archive breaks a rule, named in the error, or its sha256 is not the one sent")))]
async fn push_package(
    State(center): State<Center>,
    auth: Auth,
    headers: HeaderMap,
    body: Body,
) -> Answer<PackageInfo> {
    auth.at_least(Role::Operator)?;
    let by = auth.of_every_namespace("the package repository")?.clone();
    let (upload, claimed) = match receive_package(&center, &headers, body).await {
        Ok(received) => received,
        Err(refused) => {
            let outcome = Err::<(), _>(&refused.message);
            center
                .audit(&by, "package.push", Vec::new(), &outcome)
                .await?;
            return Err(refused);
        }
    };
    let pushed = center
        .clone()
        .detached(async move {
            let pushed = center.packages.push(upload.path(), claimed).await;
            let target = pushed
                .as_ref()
                .map(|p| format!("{} {}", p.name, p.version))
                .unwrap_or_default();
            center
                .audit(&by, "package.push", vec![target], &pushed)
                .await?;
            Ok::<_, ApiError>(pushed?)
        })
        .await?;
    Ok(Json(pushed))
}

/// The upload in `incoming/`, and the sha256 its sender says it has.
async fn receive_package(
    center: &Center,
    headers: &HeaderMap,
    body: Body,
) -> Result<(crate::upload::Upload, Option<Sha256>), ApiError> {
    let claimed = match headers.get(SHA256_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<Sha256>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("{SHA256_HEADER}: not a sha256 (64 hex digits)"),
                    )
                })?,
        ),
    };
    Ok((center.receive(body).await?, claimed))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ListQuery {
    /// How many, newest first (50 when absent).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/commands", tag = "commands", params(ListQuery),
    responses((status = 200, body = Vec<CommandView>), (status = 401)))]
async fn list_commands(
    State(center): State<Center>,
    auth: Auth,
    Query(query): Query<ListQuery>,
) -> Answer<Vec<CommandView>> {
    let by = auth.at_least(Role::Viewer)?;
    let limit = query.limit.unwrap_or(50).min(1000);
    Ok(Json(center.commands.list(by, limit).await?))
}

#[utoipa::path(post, path = "/api/v1/commands", tag = "commands", request_body = CommandRequest,
    responses((status = 200, body = CommandView, description = "the command, run to its end"),
        (status = 400), (status = 401), (status = 403), (status = 404), (status = 415),
        (status = 422), (status = 503, description = "the center is stopping")))]
async fn run_command(
    State(center): State<Center>,
    auth: Auth,
    JsonBody(request): JsonBody<CommandRequest>,
) -> Answer<CommandView> {
    let by = auth.at_least(Role::Operator)?;
    auth.reaches(request.selector.namespace.as_deref())?;
    // Audited by the commands themselves: when stored, and when ended.
    Ok(Json(center.commands.run(by, request).await?))
}

#[utoipa::path(get, path = "/api/v1/commands/{id}", tag = "commands",
    params(("id" = String, Path, description = "the command's id")),
    responses((status = 200, body = CommandView), (status = 401), (status = 404)))]
async fn show_command(
    State(center): State<Center>,
    auth: Auth,
    Path(id): Path<String>,
) -> Answer<CommandView> {
    let by = auth.at_least(Role::Viewer)?;
    Ok(Json(center.commands.get(by, &id).await?))
}

#[utoipa::path(post, path = "/api/v1/logs", tag = "logs", request_body = FleetLogsRequest,
    responses((status = 200, body = FleetLogLine, content_type = "application/x-ndjson",
        description = "one JSON line per log line, as they arrive"),
        (status = 400), (status = 401), (status = 403), (status = 415), (status = 422)))]
async fn fleet_logs(
    State(center): State<Center>,
    auth: Auth,
    JsonBody(request): JsonBody<FleetLogsRequest>,
) -> Result<Response, ApiError> {
    let by = auth.at_least(Role::Viewer)?;
    auth.reaches(request.selector.namespace.as_deref())?;
    let targets = center.commands.freeze(by, &request.selector).await?;
    let mut streams = Vec::new();
    for agent in targets {
        let lines = match center
            .reach
            .logs(&agent, &request.app, request.query.clone())
            .await
        {
            Ok(lines) => lines,
            Err(e) => futures_util::stream::once(async move {
                shoal_api::fleet::LogLine {
                    stream: 0,
                    line: format!("(no lines: {e})"),
                }
            })
            .boxed(),
        };
        streams.push(lines.map(move |l| FleetLogLine {
            agent: agent.clone(),
            line: l.line,
        }));
    }
    let body = futures_util::stream::select_all(streams).map(|line| {
        let mut text = serde_json::to_vec(&line).expect("a log line serializes");
        text.push(b'\n');
        Ok::<_, std::convert::Infallible>(text)
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct AuditQuery {
    /// The newest this many entries (100 when absent).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>,
        description = "oldest first; a token limited to a namespace reads that namespace's entries only"),
        (status = 401), (status = 403)))]
async fn audit(
    State(center): State<Center>,
    auth: Auth,
    Query(query): Query<AuditQuery>,
) -> Answer<Vec<AuditEntry>> {
    let by = auth.at_least(Role::Admin)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(center.audit.tail(by, limit).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct EndpointsQuery {
    /// The service's namespace: the token's own when absent (`default` for a token of every
    /// namespace).
    namespace: Option<String>,
    /// A revision the caller has: the answer comes once the set's revision differs from it,
    /// or when `wait` has passed (with the same revision). Without it, the answer is at once.
    after: Option<u64>,
    /// With `after`, how long to wait for a change, like `30s` (60s when absent, at most 5m).
    wait: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/services/{name}/endpoints", tag = "services",
    params(("name" = String, Path, description = "the service: the name of the package that declares its ports"),
        EndpointsQuery),
    responses((status = 200, body = ServiceEndpoints), (status = 400), (status = 401),
        (status = 403)))]
async fn service_endpoints(
    State(center): State<Center>,
    auth: Auth,
    Path(name): Path<String>,
    Query(query): Query<EndpointsQuery>,
) -> Answer<ServiceEndpoints> {
    let by = auth.at_least(Role::Viewer)?;
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    shoal_api::manifest::Name::new(&name).map_err(|e| bad(format!("service: {e}")))?;
    let namespace = query
        .namespace
        .or_else(|| by.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    if !by.reaches(&namespace) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "a token of namespace {} cannot see namespace {namespace}",
                by.namespace.as_deref().unwrap_or_default()
            ),
        ));
    }
    let Some(after) = query.after else {
        return Ok(Json(center.services.get(&namespace, &name)));
    };
    let wait = match &query.wait {
        None => crate::services::DEFAULT_WAIT,
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            bad(format!(
                "wait: {text:?} is not a duration like \"30s\": {e}"
            ))
        })?,
    };
    Ok(Json(
        center.services.watch(&namespace, &name, after, wait).await,
    ))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}
