//! Health checks that fail get a program restarted: a port that stops accepting, an HTTP
//! endpoint that answers 500, a `shoal.ping` that stops answering. The endpoints are served
//! by the test, so it decides when they fail; the program is `sleep`.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use shoal_agent::ProgramState;
use shoal_pkg::manifest::{Health, HttpCheck};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common::{n, status_of, tcp_health, wait_for, Env};

#[tokio::test]
async fn a_port_that_stops_accepting_gets_the_program_restarted() {
    let env = Env::new("health-tcp");
    let supervisor = env.supervisor().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut spec = env.spec("tcp", "exec sleep 600");
    spec.health = Some(tcp_health(port, 2));
    supervisor.add(spec).await.unwrap();
    supervisor.start(&n("tcp")).await.unwrap();
    supervisor
        .wait_healthy(&n("tcp"), Duration::from_secs(10))
        .await
        .unwrap();
    let first = status_of(&supervisor, "tcp");
    assert_eq!(first.state, ProgramState::Running);
    assert!(first.health.as_ref().unwrap().ok);

    drop(listener);
    let restarted = wait_for(&supervisor, "tcp", "restarted", |s| s.restarts >= 1).await;
    assert_ne!(restarted.pid, first.pid);
    let error = restarted.error.unwrap();
    assert!(
        error.starts_with("health check failed 2 times in a row: connect to 127.0.0.1:"),
        "{error}"
    );
    assert!(error.contains("refused"), "{error}");
    // It goes on failing, and the status says so.
    let e = supervisor
        .wait_healthy(&n("tcp"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("tcp is not healthy: not after 300ms: "),
        "{e}"
    );
    supervisor.shutdown().await;
}

#[tokio::test]
async fn an_http_endpoint_answering_500_gets_the_program_restarted() {
    let env = Env::new("health-http");
    let supervisor = env.supervisor().await;
    let status = Arc::new(AtomicU16::new(200));
    let port = serve_http(status.clone()).await;
    // One by path on the port, one by URL; a redirect counts as healthy.
    let mut by_path = env.spec("by-path", "exec sleep 600");
    by_path.health = Some(Health {
        http: Some(HttpCheck::Path("/healthz".into())),
        ..tcp_health(port, 2)
    });
    let mut by_url = env.spec("by-url", "exec sleep 600");
    by_url.health = Some(Health {
        port: None,
        http: Some(HttpCheck::Url(format!("http://localhost:{port}/healthz"))),
        ..tcp_health(port, 2)
    });
    supervisor.add(by_path).await.unwrap();
    supervisor.add(by_url).await.unwrap();
    for name in ["by-path", "by-url"] {
        supervisor.start(&n(name)).await.unwrap();
        supervisor
            .wait_healthy(&n(name), Duration::from_secs(10))
            .await
            .unwrap();
    }
    status.store(302, Ordering::Relaxed);
    let checked = status_of(&supervisor, "by-path").health.unwrap().checked_at;
    wait_for(&supervisor, "by-path", "checked again", |s| {
        s.health.as_ref().unwrap().checked_at > checked
    })
    .await;
    assert!(status_of(&supervisor, "by-path").is_healthy());

    status.store(500, Ordering::Relaxed);
    for name in ["by-path", "by-url"] {
        let restarted = wait_for(&supervisor, name, "restarted", |s| s.restarts >= 1).await;
        let last_error = restarted.health.unwrap().last_error.unwrap();
        assert!(
            last_error.ends_with("/healthz: status 500 Internal Server Error"),
            "{last_error}"
        );
    }
    supervisor.shutdown().await;
}

#[tokio::test]
async fn a_shoal_ping_that_stops_answering_gets_the_program_restarted() {
    let env = Env::new("health-ping");
    let supervisor = env.supervisor().await;
    let listener = shoal::rpc::Listener::bind(&"127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port: u16 = listener
        .local_addr()
        .to_string()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let server = shoal::rpc::Server::builder().build().unwrap();
    let stop = CancellationToken::new();
    let serving = tokio::spawn({
        let stop = stop.clone();
        async move { server.serve(listener, stop.cancelled_owned()).await }
    });
    // A port that accepts connections but never answers: TCP would pass, ping does not.
    let mute = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ping = |port| Health {
        ping: true,
        timeout: Duration::from_millis(200),
        ..tcp_health(port, 2)
    };
    let mut pinged = env.spec("pinged", "exec sleep 600");
    pinged.health = Some(ping(port));
    let mut muted = env.spec("muted", "exec sleep 600");
    muted.health = Some(ping(mute.local_addr().unwrap().port()));
    supervisor.add(pinged).await.unwrap();
    supervisor.add(muted).await.unwrap();
    supervisor.start(&n("pinged")).await.unwrap();
    supervisor.start(&n("muted")).await.unwrap();
    supervisor
        .wait_healthy(&n("pinged"), Duration::from_secs(10))
        .await
        .unwrap();
    let restarted = wait_for(&supervisor, "muted", "restarted", |s| s.restarts >= 1).await;
    assert_eq!(
        restarted.health.unwrap().last_error.as_deref(),
        Some("no answer within 200ms")
    );

    let first = status_of(&supervisor, "pinged");
    stop.cancel();
    serving.await.unwrap().unwrap();
    let restarted = wait_for(&supervisor, "pinged", "restarted", |s| s.restarts >= 1).await;
    assert_ne!(restarted.pid, first.pid);
    let last_error = restarted.health.unwrap().last_error.unwrap();
    assert!(
        last_error.starts_with("shoal.ping on 127.0.0.1:"),
        "{last_error}"
    );
    supervisor.shutdown().await;
}

/// Serves HTTP on an ephemeral port, answering every request with `status`.
async fn serve_http(status: Arc<AtomicU16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let status = status.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let code = status.load(Ordering::Relaxed);
                    async move {
                        hyper::Response::builder()
                            .status(code)
                            .header("location", "/elsewhere")
                            .body(Full::new(Bytes::from_static(b"hi")))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}
