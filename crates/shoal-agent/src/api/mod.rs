//! The agent's local HTTP API, a transport over [`Agent`](crate::Agent): JSON over HTTP/1.1
//! on a Unix socket in the data directory (mode 0600) and, when asked, on a loopback TCP
//! port; every request carries the token of `agent.token` as `Authorization: Bearer TOKEN`
//! (see [`Token`]). What it answers and takes are `shoal_api::agent`'s types. The CLI is its
//! client ([`AgentClient`]). The agent's domain never imports this module.
//!
//! Errors are JSON `{"error": "what went wrong and what to do"}` ([`ErrorBody`]) with a 4xx or
//! 5xx status.

mod client;
mod routes;
mod token;

use std::net::SocketAddr;
use std::path::Path;

use axum::extract::{Request, State as AxumState};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use shoal_api::agent::ErrorBody;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use client::{AgentClient, ClientError};
pub use routes::routes;
pub use token::Token;

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

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Refuses a request without the token.
async fn authorize(AxumState(token): AxumState<Token>, request: Request, next: Next) -> Response {
    let allowed = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| token.accepts(v));
    if !allowed {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <contents of agent.token>",
        )
        .into_response();
    }
    next.run(request).await
}

/// Where the API listens once [`serve`] has bound.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The TCP address, when one was asked for (its real port when 0 was given).
    pub tcp: Option<SocketAddr>,
}

/// Serves `routes` behind the token on the Unix socket `socket` (replacing a stale socket
/// file, made 0600) and, with `tcp`, on that loopback address, until `shutdown` fires; then
/// answers what it has begun and ends. Binds before it returns, so a caller knows the API is
/// up; serving runs on tasks of `tasks`, which end once every connection has.
pub async fn serve(
    routes: Router,
    token: Token,
    socket: &Path,
    tcp: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<Bound> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(addr) = tcp {
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the agent's API listens on loopback only, not {addr}; use 127.0.0.1"),
            ));
        }
    }
    let app = routes.layer(axum::middleware::from_fn_with_state(token, authorize));
    // A socket file left by an agent that was killed: nobody accepts on it any more.
    if socket.exists() && std::os::unix::net::UnixStream::connect(socket).is_err() {
        std::fs::remove_file(socket)?;
    }
    let unix = tokio::net::UnixListener::bind(socket)
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind {}: {e}", socket.display())))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let mut bound = Bound { tcp: None };
    if let Some(addr) = tcp {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
        bound.tcp = Some(listener.local_addr()?);
        let app = app.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }
    tasks.spawn(async move {
        let _ = axum::serve(unix, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(bound)
}
