//! auth.rs: who a request is (its bearer token) and whether its role is enough.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use shoal_api::center::Role;

use super::ApiError;
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
        Ok(Auth(caller))
    }
}
