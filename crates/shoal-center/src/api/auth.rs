//! auth.rs: who a request is (its bearer token), whether its role and namespace are enough,
//! and [`audit_denied`], the layer that writes every 403 to the audit log.

use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use shoal_api::center::Role;

use super::ApiError;
use crate::audit::Outcome;
use crate::tokens::Caller;
use crate::Center;

/// The caller of a request, from its `Authorization: Bearer` token; 401 without a valid one.
#[derive(Debug, Clone)]
pub struct Auth(pub Caller);

impl Auth {
    /// 403 unless the caller's role is `role` or above.
    pub fn at_least(&self, role: Role) -> Result<&Caller, ApiError> {
        if self.0.role >= role {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this needs the {} role; the token has {}",
                    role.name(),
                    self.0.role.name()
                ),
            ))
        }
    }
}

impl Auth {
    /// 403 unless the caller may act in `namespace` (`None`: whatever the caller's is).
    pub fn reaches(&self, namespace: Option<&str>) -> Result<&Caller, ApiError> {
        match (namespace, &self.0.namespace) {
            (Some(asked), Some(own)) if asked != own => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this token is limited to namespace {own}, not {asked}"),
            )),
            _ => Ok(&self.0),
        }
    }

    /// 403 for a token limited to a namespace: `what` changes something every namespace
    /// shares.
    pub fn of_every_namespace(&self, what: &str) -> Result<&Caller, ApiError> {
        match &self.0.namespace {
            Some(own) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{what} is shared by every namespace: this needs a token of no namespace, \
                     and this one is limited to namespace {own}"
                ),
            )),
            None => Ok(&self.0),
        }
    }
}

/// Where [`Auth`] leaves the caller it found, for [`audit_denied`].
#[derive(Debug, Clone, Default)]
struct Seen(Arc<OnceLock<Caller>>);

/// What a 403 answer said, put on the response by [`ApiError`] for [`audit_denied`].
#[derive(Debug, Clone)]
pub(super) struct Denial(pub String);

/// Writes an audit entry for each request answered 403: one whose token is valid but whose
/// role or namespace is not enough. A 401 is not written: requests without a valid token
/// must not grow the log.
pub async fn audit_denied(
    State(center): State<Center>,
    mut request: Request,
    next: Next,
) -> Response {
    let seen = Seen::default();
    request.extensions_mut().insert(seen.clone());
    let action = format!("{} {}", request.method(), request.uri().path());
    let response = next.run(request).await;
    if response.status() != StatusCode::FORBIDDEN {
        return response;
    }
    let (Some(caller), Some(Denial(why))) = (seen.0.get(), response.extensions().get::<Denial>())
    else {
        return response;
    };
    let outcome = Outcome::Denied(why.clone());
    if let Err(error) = center
        .record(caller.into(), &action, Vec::new(), outcome)
        .await
    {
        tracing::warn!(%error, %action, "writing a denied request to the audit log");
    }
    response
}

impl FromRequestParts<Center> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, center: &Center) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "no token: send Authorization: Bearer TOKEN (--token or SHOAL_TOKEN)",
                )
            })?;
        let caller = center
            .tokens
            .authenticate(presented.trim())
            .await
            .map_err(|e| match e {
                crate::tokens::TokenError::Refused(r) => {
                    ApiError::new(StatusCode::UNAUTHORIZED, r.to_string())
                }
                other => ApiError::from(other),
            })?;
        if let Some(seen) = parts.extensions.get::<Seen>() {
            let _ = seen.0.set(caller.clone());
        }
        Ok(Auth(caller))
    }
}
