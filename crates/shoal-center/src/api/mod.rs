//! The center's HTTP/JSON API under `/api/v1`, the one way in for the CLI and every other
//! client: a transport over [`Center`](crate::Center). The OpenAPI 3.1 document at
//! `/api/v1/openapi.json` is made from the handlers themselves (utoipa), so a route cannot be
//! left out of it. Every request but the document's carries `Authorization: Bearer TOKEN`;
//! each handler asks for the role it needs; every mutating request lands in the audit log, and
//! so does every request refused with 403 (`auth::audit_denied`).
//!
//! Errors are `{"error": "..."}` with a 4xx or 5xx status.

mod auth;
mod config;
mod routes;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shoal_api::agent::ErrorBody;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa::Modify;

pub use auth::Auth;
pub use routes::router;

/// An API error: its status and the message sent as `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "an API request failed");
        }
        let denial =
            (self.status == StatusCode::FORBIDDEN).then(|| auth::Denial(self.message.clone()));
        let body = ErrorBody {
            error: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(denial) = denial {
            response.extensions_mut().insert(denial);
        }
        response
    }
}

impl From<crate::tokens::TokenError> for ApiError {
    fn from(e: crate::tokens::TokenError) -> ApiError {
        use crate::tokens::TokenError as E;
        let status = match &e {
            E::Refused(_) => StatusCode::UNAUTHORIZED,
            E::Invalid(_) => StatusCode::BAD_REQUEST,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Own => StatusCode::CONFLICT,
            E::Store(_) | E::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<crate::packages::PackageError> for ApiError {
    fn from(e: crate::packages::PackageError) -> ApiError {
        use crate::packages::PackageError as E;
        let status = match &e {
            E::Refused(_) | E::Mismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::Immutable { .. } => StatusCode::CONFLICT,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Damaged { .. } | E::Store(_) | E::Io { .. } | E::Corrupt(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<crate::commands::CommandError> for ApiError {
    fn from(e: crate::commands::CommandError) -> ApiError {
        use crate::commands::CommandError as E;
        let status = match &e {
            E::Invalid(_) | E::NoTargets => StatusCode::BAD_REQUEST,
            E::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            E::Forbidden { .. } => StatusCode::FORBIDDEN,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Package(inner) => return ApiError::from_package(inner, e.to_string()),
            E::Reach(_) | E::Store(_) | E::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<shoal_store::StoreError> for ApiError {
    fn from(e: shoal_store::StoreError) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl ApiError {
    fn from_package(e: &crate::packages::PackageError, message: String) -> ApiError {
        use crate::packages::PackageError as E;
        let status = match e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, message)
    }
}

/// A JSON request body whose refusals (415 without the JSON content type, 400 for bad JSON,
/// 422 for JSON of another shape) are `{"error": ...}` like every other error.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        }
    }
}

/// Adds the bearer scheme every route but the document's uses.
#[derive(Debug)]
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "shoal center", description = "The fleet's API: agents, packages, commands, logs, configurations, tokens, audit."),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
struct Doc;
