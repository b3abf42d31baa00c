//! One health check of a program, as its manifest's `[health]` asks: `shoal.ping` on the
//! port, an HTTP GET, or (with only a port) a TCP connection. Each check opens its own
//! connection and drops it, holding nothing between checks.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::Empty;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use shoal::rpc::codec::{self, Message};
use shoal_pkg::manifest::{Health, HttpCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest `shoal.ping` answer read.
const MAX_PING_ANSWER: usize = 64 * 1024;

/// Runs every check `health` sets, within `health.timeout`; Err says what failed.
pub(crate) async fn check(health: &Health) -> Result<(), String> {
    let checks = async {
        if health.ping {
            ping(port(health)?).await?;
        }
        if let Some(http) = &health.http {
            http_get(http, health.port).await?;
        }
        if !health.ping && health.http.is_none() {
            let port = port(health)?;
            TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
        }
        Ok(())
    };
    match tokio::time::timeout(health.timeout, checks).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}", humanize(health.timeout))),
    }
}

fn port(health: &Health) -> Result<u16, String> {
    health
        .port
        .ok_or_else(|| "health.port is not set".to_owned())
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Calls `shoal.ping` on 127.0.0.1:`port`: healthy when it answers without an error.
async fn ping(port: u16) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("shoal.ping on 127.0.0.1:{port}: {what}: {e}")
    };
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| fail("connect", &e))?;
    let mut buf = BytesMut::new();
    codec::encode_request(&mut buf, 1, "shoal.ping", &[(); 0], None)
        .map_err(|e| fail("encode", &e))?;
    stream.write_all(&buf).await.map_err(|e| fail("send", &e))?;
    buf.clear();
    let mut decoder = codec::Decoder::new(MAX_PING_ANSWER);
    loop {
        match decoder.decode(&mut buf).map_err(|e| fail("answer", &e))? {
            Some(Message::Response { error, .. }) if error.is_nil() => return Ok(()),
            Some(Message::Response { error, .. }) => {
                return Err(format!(
                    "shoal.ping on 127.0.0.1:{port} answered an error: {error}"
                ))
            }
            // A request or notification from the server is not the answer: keep reading.
            Some(_) => continue,
            None => {}
        }
        let read = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| fail("read", &e))?;
        if read == 0 {
            return Err(format!(
                "shoal.ping on 127.0.0.1:{port}: connection closed without an answer"
            ));
        }
    }
}

/// GETs the path on 127.0.0.1:`port`, or the URL: healthy on 2xx or 3xx.
async fn http_get(check: &HttpCheck, port: Option<u16>) -> Result<(), String> {
    let (host, port, path) = match check {
        HttpCheck::Path(path) => (
            "127.0.0.1".to_owned(),
            port.ok_or_else(|| "health.port is not set".to_owned())?,
            path.clone(),
        ),
        HttpCheck::Url(url) => {
            let uri: Uri = url.parse().map_err(|e| format!("GET {url}: {e}"))?;
            let host = uri
                .host()
                .ok_or_else(|| format!("GET {url}: no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let path = uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
            (host, uri.port_u16().unwrap_or(80), path)
        }
    };
    let target = format!("http://{host}:{port}{path}");
    let fail = |e: &dyn std::fmt::Display| format!("GET {target}: {e}");
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
    let request = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, host_header(&host, port))
        .header(hyper::header::CONNECTION, "close")
        .header(hyper::header::USER_AGENT, "shoal-agent")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(&e))?;
    // The connection is driven here, beside the request, rather than in a task of its own:
    // it ends with this check.
    let mut conn = std::pin::pin!(conn);
    let mut response = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        biased;
        response = &mut response => response,
        ended = &mut conn => match ended {
            // Closed after answering (Connection: close): the answer is in the sender.
            Ok(()) => response.await,
            Err(e) => return Err(fail(&e)),
        },
    }
    .map_err(|e| fail(&e))?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(fail(&format!("status {status}")))
    }
}

fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
