//! config.rs: the handlers of `/api/v1/configs`, central configuration: push (with an optional
//! gray release), versions, a version's content, diff, promote, rollback and status. Each
//! takes `?namespace=NS`: a token limited to a namespace works in its own (the default for
//! it) and is refused any other; other tokens default to `default`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use shoal_api::center::{
    ConfigContent, ConfigDiff, ConfigPush, ConfigPushed, ConfigRelease, ConfigRollback,
    ConfigStatus, ConfigVersionInfo, Role,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, Auth, JsonBody};
use crate::config::{ConfigError, DEFAULT_NAMESPACE};
use crate::tokens::Caller;
use crate::Center;

type Answer<T> = Result<Json<T>, ApiError>;

/// The configuration routes, for the API's router.
pub(super) fn routes() -> OpenApiRouter<Center> {
    OpenApiRouter::new()
        .routes(routes!(show_release))
        .routes(routes!(list_versions, push_config))
        .routes(routes!(show_version))
        .routes(routes!(diff_versions))
        .routes(routes!(promote))
        .routes(routes!(rollback))
        .routes(routes!(status))
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> ApiError {
        let status = match &e {
            ConfigError::Invalid(_) => StatusCode::BAD_REQUEST,
            ConfigError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ConfigError::NotFound(_) => StatusCode::NOT_FOUND,
            ConfigError::NoGray(_) | ConfigError::NoRollback(_) => StatusCode::CONFLICT,
            ConfigError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConfigError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct NamespaceQuery {
    /// The configuration's namespace: the token's own, else `default`, when absent.
    namespace: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct DiffQuery {
    /// The configuration's namespace: the token's own, else `default`, when absent.
    namespace: Option<String>,
    /// The version diffed from.
    from: u64,
    /// The version diffed to.
    to: u64,
}

#[utoipa::path(get, path = "/api/v1/configs/{name}", tag = "configs", params(
        ("name" = String, Path, description = "the configuration (and app) name"), NamespaceQuery),
    responses((status = 200, body = ConfigRelease), (status = 400), (status = 401),
        (status = 403), (status = 404)))]
async fn show_release(
    State(center): State<Center>,
    auth: Auth,
    Path(name): Path<String>,
    Query(query): Query<NamespaceQuery>,
) -> Answer<ConfigRelease> {
    let by = auth.at_least(Role::Viewer)?;
    let namespace = namespace(by, query.namespace)?;
    Ok(Json(center.configs.release(&namespace, &name).await?))
}

#[utoipa::path(get, path = "/api/v1/configs/{name}/versions", tag = "configs", params(
        ("name" = String, Path, description = "the configuration (and app) name"), NamespaceQuery),
    responses((status = 200, body = Vec<ConfigVersionInfo>, description = "newest first"),
        (status = 400), (status = 401), (status = 403), (status = 404)))]
async fn list_versions(
    State(center): State<Center>,
    auth: Auth,
    Path(name): Path<String>,
    Query(query): Query<NamespaceQuery>,
) -> Answer<Vec<ConfigVersionInfo>> {
    let by = auth.at_least(Role::Viewer)?;
    let namespace = namespace(by, query.namespace)?;
    Ok(Json(center.configs.versions(&namespace, &name).await?))
}

#[utoipa::path(post, path = "/api/v1/configs/{name}/versions", tag = "configs", params(
        ("name" = String, Path, description = "the configuration (and app) name"), NamespaceQuery),
    request_body = ConfigPush,
    responses((status = 200, body = ConfigPushed), (status = 400), (status = 401),
        (status = 403), (status = 413, description = "the content is over the limit"),
        (status = 415), (status = 422), (status = 503, description = "changed meanwhile, again and again")))]
async fn push_config(
    State(center): State<Center>,
    auth: Auth,
    Path(name): Path<String>,
    Query(query): Query<NamespaceQuery>,
    JsonBody(push): JsonBody<ConfigPush>,
) -> Answer<ConfigPushed> {
    let by = auth.at_least(Role::Operator)?;
    let namespace = namespace(by, query.namespace)?;
    let gray = push.gray.is_some();
    let pushed = center.configs.push(&namespace, &name, push, by).await;
    let target = match &pushed {
        Ok(p) => format!("{namespace}/{name} v{}", p.version.version),
        Err(_) => format!("{namespace}/{name}"),
    };
    let action = if gray {
        "config.push-gray"
    } else {
        "config.push"
    };
    center.audit(by, action, vec![target], &pushed).await?;
    Ok(Json(pushed?))
}

#[utoipa::path(get, path = "/api/v1/configs/{name}/versions/{version}", tag = "configs", params(
        ("name" = String, Path, description = "the configuration (and app) name"),
        ("version" = u64, Path, description = "the version number"), NamespaceQuery),
    responses((status = 200, body = ConfigContent), (status = 400), (status = 401),
        (status = 403), (status = 404)))]
async fn show_version(
    State(center): State<Center>,
    auth: Auth,
    Path((name, version)): Path<(String, u64)>,
    Query(query): Query<NamespaceQuery>,
) -> Answer<ConfigContent> {
    let by = auth.at_least(Role::Viewer)?;
    let namespace = namespace(by, query.namespace)?;
    Ok(Json(
        center
            .configs
            .show(&namespace, &name, Some(version))
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/configs/{name}/diff", tag = "configs", params(
        ("name" = String, Path, description = "the configuration (and app) name"), DiffQuery),
    responses((status = 200, body = ConfigDiff), (status = 400), (status = 401), (status = 403),
        (status = 404)))]
async fn diff_versions(
    State(center): State<Center>,
    auth: Auth,
    Path(name): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Answer<ConfigDiff> {
    let by = auth.at_least(Role::Viewer)?;
    let namespace = namespace(by, query.namespace)?;
    let diff = center
        .configs
        .diff(&namespace, &name, query.from, query.to)
        .await?;
    Ok(Json(diff))
}

#[utoipa::path(post, path = "/api/v1/configs/{name}/promote", tag = "configs", params(
        ("name" = String, Path, description = "the configuration (and app) name"), NamespaceQuery),
    responses((status = 200, body = ConfigRelease), (status = 400), (status = 401),
        (status = 403), (status = 404), (status = 409, description = "no gray release"),
        (status = 503, description = "changed meanwhile, again and again")))]
async fn promote(
    State(center): State<Center>,
    auth: Auth,
    Path(name): Path<String>,
    Query(query): Query<NamespaceQuery>,
) -> Answer<ConfigRelease> {
    let by = auth.at_least(Role::Operator)?;
    let namespace = namespace(by, query.namespace)?;
    let promoted = center.configs.promote(&namespace, &name).await;
    let target = match &promoted {
        Ok(r) => format!("{namespace}/{name} v{}", r.stable.unwrap_or_default()),
        Err(_) => format!("{namespace}/{name}"),
    };
    center
        .audit(by, "config.promote", vec![target], &promoted)
        .await?;
    Ok(Json(promoted?))
}

#[utoipa::path(post, path = "/api/v1/configs/{name}/rollback", tag = "configs", params(
        ("name" = String, Path, description = "the configuration (and app) name"), NamespaceQuery),
    request_body = ConfigRollback,
    responses((status = 200, body = ConfigPushed), (status = 400), (status = 401),
        (status = 403), (status = 404), (status = 409, description = "nothing to roll back to"),
        (status = 415), (status = 422),
        (status = 503, description = "changed meanwhile, again and again")))]
async fn rollback(
    State(center): State<Center>,
    auth: Auth,
    Path(name): Path<String>,
    Query(query): Query<NamespaceQuery>,
    JsonBody(request): JsonBody<ConfigRollback>,
) -> Answer<ConfigPushed> {
    let by = auth.at_least(Role::Operator)?;
    let namespace = namespace(by, query.namespace)?;
    let rolled = center
        .configs
        .rollback(&namespace, &name, request.to, by)
        .await;
    let target = match &rolled {
        Ok(p) => format!(
            "{namespace}/{name} v{} (content of v{})",
            p.version.version,
            p.version.rollback_of.unwrap_or_default()
        ),
        Err(_) => format!("{namespace}/{name}"),
    };
    center
        .audit(by, "config.rollback", vec![target], &rolled)
        .await?;
    Ok(Json(rolled?))
}

#[utoipa::path(get, path = "/api/v1/configs/{name}/status", tag = "configs", params(
        ("name" = String, Path, description = "the configuration (and app) name"), NamespaceQuery),
    responses((status = 200, body = ConfigStatus), (status = 400), (status = 401),
        (status = 403), (status = 404)))]
async fn status(
    State(center): State<Center>,
    auth: Auth,
    Path(name): Path<String>,
    Query(query): Query<NamespaceQuery>,
) -> Answer<ConfigStatus> {
    let by = auth.at_least(Role::Viewer)?;
    let namespace = namespace(by, query.namespace)?;
    let agents = center
        .reach
        .agents()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(
        center.configs.status(&namespace, &name, &agents).await?,
    ))
}

/// The namespace a request works in: the one asked if the token reaches it, else the token's
/// own, else `default`.
fn namespace(by: &Caller, asked: Option<String>) -> Result<String, ApiError> {
    match (asked, &by.namespace) {
        (Some(asked), _) if by.reaches(&asked) => Ok(asked),
        (Some(asked), Some(own)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this token is limited to namespace {own}, not {asked}"),
        )),
        (None, Some(own)) => Ok(own.clone()),
        (_, None) => Ok(DEFAULT_NAMESPACE.into()),
    }
}
