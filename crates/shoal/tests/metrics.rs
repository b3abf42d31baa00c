//! Metrics end to end in process: an application on loopback with `rpc.listen` and
//! `metrics.listen` on port 0 records per-method calls and its own metrics; `shoal.metrics`
//! answers them over RPC (as a snapshot and as text), the HTTP exporter serves the text that
//! `promtool check metrics` accepts, and hostile or wrong requests get 404, 405 or a closed
//! connection without harming the next one.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{config_args, no_env, wait_for, Scratch};
use shoal::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Snapshot,
    RPC_CALLS, RPC_CALL_DURATION,
};
use shoal::{codes, App, Client, Exit, RpcError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(10);

/// A label value with every character the text format escapes.
const AWKWARD: &str = "C:\\shapes \"big\"\nnext line";

#[shoal::service]
pub trait Shapes {
    /// The area of a `w` by `h` rectangle; negative sides are an error.
    async fn area(&self, w: f64, h: f64) -> Result<f64, RpcError>;
    #[shoal(notify)]
    async fn note(&self, text: String);
}

struct Drawer;

impl Shapes for Drawer {
    async fn area(&self, w: f64, h: f64) -> Result<f64, RpcError> {
        if w < 0.0 || h < 0.0 {
            return Err(RpcError::invalid_params("negative side"));
        }
        counter!("shapes_drawn_total", "kind" => "rectangle", "path" => AWKWARD).increment(1);
        histogram!("shapes_side_meters", "axis" => "w").record(w);
        histogram!("shapes_area").record(w * h);
        Ok(w * h)
    }

    async fn note(&self, _text: String) {}
}

fn app() -> App {
    App::new("shapes", "1.0.0").setup(|app| {
        describe_counter!("shapes_drawn_total", "Shapes drawn, by kind and path");
        describe_gauge!("shapes_canvas_fill_ratio", "How full the canvas is");
        describe_histogram!("shapes_side_meters", "Sides drawn, in meters");
        gauge!("shapes_canvas_fill_ratio", "canvas" => AWKWARD).set(0.75);
        // Named like one of `shapes_area`'s samples, which comes first: left out of the text.
        histogram!("shapes_area_sum").record(1.0);
        app.serve(ShapesServer::new(Drawer));
        Ok(())
    })
}

async fn start(dir: &Scratch, text: &str) -> Result<shoal::Running, shoal::StartError> {
    let file = dir.write("shapes.toml", text);
    app().args(config_args(&file), no_env()).start().await
}

const BOTH_ON_PORT_0: &str =
    "[rpc]\nlisten = \"127.0.0.1:0\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n";

#[tokio::test]
async fn calls_and_custom_metrics_are_answered_over_rpc_and_http() {
    let dir = Scratch::new("metrics");
    let running = start(&dir, BOTH_ON_PORT_0).await.unwrap();
    let client = Client::connect(&running.rpc_addr().unwrap().to_string())
        .await
        .unwrap();
    let shapes = ShapesClient::new(client.clone());
    for side in [1.0, 2.0, 3.0] {
        assert_eq!(shapes.area(side, 2.0).await.unwrap(), side * 2.0);
    }
    shapes.area(-1.0, 2.0).await.unwrap_err();
    shapes.note("one".into()).await.unwrap();
    shapes.note("two".into()).await.unwrap();
    // Notifications have no answer to wait for: wait until both are counted.
    let registry = shoal::metrics::global().expect("shoal's recorder is installed");
    let note_ok = [("method", "note"), ("outcome", "ok")];
    wait_for("both notifications counted", LIMIT, || {
        (registry.snapshot().counter(RPC_CALLS, &note_ok) == Some(2)).then_some(())
    })
    .await;

    // The snapshot over RPC: every call counted once, by outcome.
    let snapshot: Snapshot = client.call("shoal.metrics", &()).await.unwrap();
    let calls = |method: &str, outcome: &str| {
        snapshot.counter(RPC_CALLS, &[("method", method), ("outcome", outcome)])
    };
    assert_eq!(calls("area", "ok"), Some(3));
    assert_eq!(calls("area", "error"), Some(1));
    assert_eq!(calls("note", "ok"), Some(2));
    assert_eq!(calls("note", "error"), None);
    let durations = snapshot
        .histogram(RPC_CALL_DURATION, &[("method", "area")])
        .unwrap();
    assert_eq!(durations.count, 4);
    assert_eq!(durations.unit.as_deref(), Some("seconds"));
    assert!(durations.p50.is_some() && durations.p99.is_some());
    // The application's own metrics, labels as recorded.
    let drawn = [("kind", "rectangle"), ("path", AWKWARD)];
    assert_eq!(snapshot.counter("shapes_drawn_total", &drawn), Some(3));
    assert_eq!(
        snapshot.gauge("shapes_canvas_fill_ratio", &[("canvas", AWKWARD)]),
        Some(0.75)
    );
    let sides = snapshot
        .histogram("shapes_side_meters", &[("axis", "w")])
        .unwrap();
    assert_eq!((sides.count, sides.sum), (3, 6.0));
    let process = snapshot.process.expect("/proc/self is readable on Linux");
    assert!(process.resident_memory_bytes > 0 && process.open_fds > 0);

    // The text over RPC.
    let text: String = client.call("shoal.metrics", &["prometheus"]).await.unwrap();
    let escaped = r#"path="C:\\shapes \"big\"\nnext line""#;
    for line in [
        "shoal_rpc_calls_total{method=\"area\",outcome=\"error\"} 1\n".to_owned(),
        "shoal_rpc_calls_total{method=\"area\",outcome=\"ok\"} 3\n".to_owned(),
        "shoal_rpc_call_duration_seconds_count{method=\"area\"} 4\n".to_owned(),
        format!("shapes_drawn_total{{kind=\"rectangle\",{escaped}}} 3\n"),
        "# HELP shapes_drawn_total Shapes drawn, by kind and path\n".to_owned(),
        "shapes_side_meters_bucket{axis=\"w\",le=\"+Inf\"} 3\n".to_owned(),
        "# TYPE shapes_area histogram\n".to_owned(),
        "shapes_area_sum 12\n".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} in\n{text}");
    }
    assert!(!text.contains("# TYPE shapes_area_sum"), "{text}");

    // The same text over HTTP, which promtool accepts.
    let metrics = running.metrics_addr().expect("the exporter listens");
    let response = http(metrics, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        response
            .body
            .contains("shoal_rpc_calls_total{method=\"area\",outcome=\"ok\"} 3\n"),
        "{}",
        response.body
    );
    assert!(response
        .body
        .contains("# TYPE process_cpu_seconds_total counter\n"));
    promtool_accepts(&response.body).await;

    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
    // Closing stopped the exporter with the other listeners.
    assert!(TcpStream::connect(metrics).await.is_err());
}

#[tokio::test]
async fn the_exporter_answers_only_get_metrics_and_survives_bad_requests() {
    let dir = Scratch::new("metrics-http");
    let running = start(&dir, BOTH_ON_PORT_0).await.unwrap();
    let addr = running.metrics_addr().unwrap();

    let response = http(addr, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(response.status, 404, "{response:?}");
    let response = http(
        addr,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 405, "{response:?}");
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
    let response = http(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((response.status, response.body.as_str()), (200, ""));
    // A query string does not change the path.
    let response = http(addr, "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(response.status, 200, "{response:?}");

    // Not HTTP, and headers past the bound: each closes only its own connection, answered
    // with an error at most.
    let oversized = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    for request in ["\x16\x03\x01 not http at all\r\n\r\n", oversized.as_str()] {
        let mut bystander = TcpStream::connect(addr).await.unwrap();
        let reply = exchange(addr, request.as_bytes()).await;
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
            "{:?}",
            &reply[..reply.len().min(200)]
        );
        // A connection opened before is still served, and so is a new one.
        bystander
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(LIMIT, bystander.read_to_end(&mut answer))
            .await
            .expect("the bystander is answered")
            .unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        let response = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(response.status, 200);
    }

    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn shoal_metrics_rejects_unknown_arguments() {
    let dir = Scratch::new("metrics-args");
    let running = start(&dir, "[rpc]\nlisten = \"127.0.0.1:0\"\n")
        .await
        .unwrap();
    assert_eq!(running.metrics_addr(), None);
    let client = Client::connect(&running.rpc_addr().unwrap().to_string())
        .await
        .unwrap();
    for params in [vec!["json"], vec!["prometheus", "prometheus"]] {
        match client.call::<_, String>("shoal.metrics", &params).await {
            Err(shoal::Error::Remote(e)) => assert_eq!(e.code, Some(codes::INVALID_PARAMS)),
            other => panic!("{params:?}: {other:?}"),
        }
    }
    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}

#[tokio::test]
async fn a_metrics_port_in_use_fails_the_start() {
    let dir = Scratch::new("metrics-busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let socket = dir.join("rpc.sock");
    let text = format!(
        "[rpc]\nlisten = \"unix:{}\"\n\n[metrics]\nlisten = \"{}\"\n",
        socket.display(),
        taken.local_addr().unwrap()
    );
    let error = start(&dir, &text).await.unwrap_err();
    assert_eq!(error.exit(), Exit::Failed);
    let taken = taken.local_addr().unwrap().to_string();
    assert!(error.to_string().contains(&taken), "{error}");
    // The RPC socket bound before it is not left behind.
    assert!(!socket.exists());
}

/// Pipes `text` to `promtool check metrics`, which must accept it; without promtool, says so
/// and returns, or fails under `SHOAL_REQUIRE_TOOLS=1` (see [`common::skip`]; CI installs it).
async fn promtool_accepts(text: &str) {
    let spawned = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            common::skip(&format!("the promtool check: cannot run promtool ({e})"));
            return;
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .expect("promtool finishes")
        .unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}\n{}{}\n--- the text:\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` on a new connection and parses the answer (the exporter closes each
/// connection after one answer).
async fn http(addr: SocketAddr, request: &str) -> Response {
    let raw = exchange(addr, request.as_bytes()).await;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Writes `request` and reads until the server closes the connection, within [`LIMIT`].
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close before reading all of an oversized request.
    let _ = stream.write_all(request).await;
    let mut reply = Vec::new();
    let read = tokio::time::timeout(LIMIT, async {
        let mut buf = [0_u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&reply).into_owned()
}
