//! The Prometheus exporter on `metrics.listen`: HTTP/1.1, `GET /metrics` answered with the
//! text, other paths 404, other methods 405. Requests are hostile until read: headers are
//! bounded in size and time, each connection answers one request within a deadline, and
//! connections beyond a few dozen at once are closed unanswered. A failed accept (out of file
//! descriptors, say) pauses the loop for 100 ms and is warned about once a minute at most.

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::render::CONTENT_TYPE as PROMETHEUS;

/// How long a client has to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may last, request and answer together.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are closed as they come.
const MAX_CONNECTIONS: usize = 64;
/// The most bytes of a request kept in memory (hyper's floor is 8 KiB); larger headers close
/// the connection.
const MAX_REQUEST: usize = 16 * 1024;
/// The pause after a failed accept (out of file descriptors, say): the failure lasts, and
/// retrying at once would spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// At most one warning about failed accepts this often; it counts the failures since the
/// last one, so that a lasting failure does not flood the log sinks.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(60);

/// Serves the metrics on `listener` until `shutdown` is cancelled, then stops accepting and
/// returns once the connections in progress have answered.
pub(crate) async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let connections = TaskTracker::new();
    let mut accept_failures = AcceptFailures::default();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) if connections.len() < MAX_CONNECTIONS => {
                connections.spawn(connection(stream, peer.to_string(), shutdown.clone()));
            }
            Ok((_, peer)) => debug!(%peer, "metrics: too many connections; closing this one"),
            Err(e) => {
                if let Some(failures) = accept_failures.failed(Instant::now()) {
                    warn!(
                        addr = %local,
                        error = %e,
                        failures,
                        "metrics: accept failed; retrying after a pause"
                    );
                }
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
    }
    drop(listener);
    info!(addr = %local, "metrics: stopped accepting");
    connections.close();
    connections.wait().await;
}

/// Failed accepts, and when the last warning about them was logged.
#[derive(Debug, Default)]
pub(super) struct AcceptFailures {
    last_warned: Option<Instant>,
    unreported: u64,
}

impl AcceptFailures {
    /// Counts a failure at `now`. When a warning is due (the first failure, then one
    /// [`ACCEPT_WARN_EVERY`] after the last warning), the failures it reports: this one and
    /// those left unreported since.
    pub(super) fn failed(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        if self
            .last_warned
            .is_some_and(|last| now.duration_since(last) < ACCEPT_WARN_EVERY)
        {
            return None;
        }
        self.last_warned = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// One connection: one request, then it closes (no keep-alive, so no idle connections).
async fn connection(stream: TcpStream, peer: String, shutdown: CancellationToken) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST)
        .keep_alive(false);
    let conn = builder.serve_connection(TokioIo::new(stream), service_fn(answer));
    tokio::pin!(conn);
    let served = tokio::time::timeout(CONNECTION_TIMEOUT, async {
        tokio::select! {
            served = conn.as_mut() => served,
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
        }
    })
    .await;
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(%peer, error = %e, "metrics: connection closed"),
        Err(_) => debug!(%peer, "metrics: connection took too long; closed"),
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n".into(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    Ok(match super::collect().await {
        Ok(snapshot) => {
            let mut response = Response::new(Full::new(Bytes::from(snapshot.to_prometheus())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS));
            response
        }
        Err(why) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    })
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
