//! The local API's transport: the token is required on the Unix socket and on TCP, answers
//! and errors travel as JSON, a stale socket file is replaced, and TCP is loopback only.

mod common;

use axum::routing::get;
use axum::Router;
use common::Scratch;
use shoal_agent::api::{serve, AgentClient, ApiError, ClientError, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn routes() -> Router {
    Router::new()
        .route(
            "/v1/hello",
            get(|| async { axum::Json(serde_json::json!({"hello": "agent"})) }),
        )
        .route(
            "/v1/missing",
            get(|| async { Err::<(), _>(ApiError::not_found("no app named nope; see shoal ps")) }),
        )
}

/// A raw HTTP/1.1 request on TCP, for what a client without the token sees.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn the_token_is_required_and_errors_are_json() {
    let dir = Scratch::new("api");
    let token = Token::load_or_create(&dir.0.join("agent.token")).unwrap();
    // A socket file left behind by a killed agent.
    drop(std::os::unix::net::UnixListener::bind(dir.0.join("agent.sock")).unwrap());
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let bound = serve(
        routes(),
        token.clone(),
        &dir.0.join("agent.sock"),
        Some("127.0.0.1:0".parse().unwrap()),
        stop.clone(),
        &tasks,
    )
    .await
    .unwrap();

    let client = AgentClient::open(&dir.0).unwrap();
    let hello: serde_json::Value = client.get("/v1/hello").await.unwrap();
    assert_eq!(hello["hello"], "agent");
    match client.get::<serde_json::Value>("/v1/missing").await {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(
                (status, message.as_str()),
                (404, "no app named nope; see shoal ps")
            );
        }
        other => panic!("{other:?}"),
    }

    let tcp = bound.tcp.unwrap();
    let refused = raw(
        tcp,
        "GET /v1/hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("missing or wrong token"), "{refused}");
    let wrong = raw(
        tcp,
        "GET /v1/hello HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer 0000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let allowed = raw(
        tcp,
        &format!(
            "GET /v1/hello HTTP/1.1\r\nHost: a\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            token.header()
        ),
    )
    .await;
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    // Shut down, the servers end.
    stop.cancel();
    tasks.close();
    tokio::time::timeout(std::time::Duration::from_secs(10), tasks.wait())
        .await
        .expect("the API's tasks end after the shutdown");
}

#[tokio::test]
async fn tcp_is_loopback_only_and_a_missing_agent_says_what_to_do() {
    let dir = Scratch::new("api-refuse");
    let token = Token::load_or_create(&dir.0.join("agent.token")).unwrap();
    let e = serve(
        routes(),
        token,
        &dir.0.join("agent.sock"),
        Some("0.0.0.0:0".parse().unwrap()),
        CancellationToken::new(),
        &TaskTracker::new(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("loopback only"), "{e}");

    let empty = Scratch::new("api-empty");
    let e = AgentClient::open(&empty.0).unwrap_err().to_string();
    assert!(e.contains("shoal agent --data-dir"), "{e}");
    // A token but no agent behind the socket.
    let client = AgentClient::open(&dir.0).unwrap();
    let e = client
        .get::<serde_json::Value>("/v1/hello")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no agent answers on"), "{e}");
}
