//! `shoal bench etcd-watch`: the peer half of `bench/config-push.sh`. N watchers on one etcd
//! key (each its own connection to etcd's HTTP gateway, `POST /v3/watch`), then P puts of
//! that key, one after the other: for each put, the time from sending it until the last
//! watcher has read the new value. Prints one line per put, in milliseconds.
//!
//! Bare HTTP/1.1 over tokio's TCP, with no JSON decoding on the watchers' side: a watcher
//! looks for the base64 of the value it waits for in what it reads, so its cost per
//! notification is a copy and a search, not a parse that would slow the peer's figure.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use crate::out::outln;

#[derive(Args, Debug)]
pub struct EtcdWatchArgs {
    /// etcd's client address, host:port (its HTTP gateway answers there).
    #[arg(long)]
    endpoint: String,
    /// How many watchers, each on its own connection.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// How many puts to time.
    #[arg(long, default_value_t = 20)]
    puts: usize,
    /// The pause after one put was seen by every watcher before the next.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pause: Duration,
}

const KEY: &str = "shoal-bench/config";
/// How long any one step (a connection, a watch starting, a put reaching everyone) may take.
const STEP: Duration = Duration::from_secs(60);

pub fn run(args: EtcdWatchArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for ms in rt.block_on(measure(args))? {
        outln!("{ms:.3}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The value of put `i`: its base64 is what the watchers look for.
fn value(i: usize) -> String {
    format!("shoal-bench-value-{i:08}")
}

/// Every put's time to the last watcher, in milliseconds.
async fn measure(args: EtcdWatchArgs) -> anyhow::Result<Vec<f64>> {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(args.watchers);
    let endpoint: Arc<str> = args.endpoint.as_str().into();
    let mut watchers = JoinSet::new();
    for _ in 0..args.watchers {
        let (endpoint, seen, ready) = (endpoint.clone(), seen_tx.clone(), ready_tx.clone());
        watchers.spawn(watch(endpoint, args.puts, ready, seen));
    }
    drop((seen_tx, ready_tx));
    for started in 0..args.watchers {
        if timeout(STEP, ready_rx.recv()).await?.is_none() {
            let failure = first_failure(&mut watchers).await;
            bail!(
                "only {started} of {} watches started: {failure}",
                args.watchers
            );
        }
    }

    let mut put = connect(&endpoint).await?;
    let mut times = Vec::with_capacity(args.puts);
    for i in 0..args.puts {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            base64(KEY.as_bytes()),
            base64(value(i).as_bytes())
        );
        let sent = Instant::now();
        put.write_all(request("/v3/kv/put", &endpoint, &body).as_bytes())
            .await?;
        let mut last = sent;
        for _ in 0..args.watchers {
            let (put_index, at) = timeout(STEP, seen_rx.recv())
                .await
                .with_context(|| format!("put {i} did not reach every watcher in {STEP:?}"))?
                .context("a watcher ended before every put reached it")?;
            if put_index != i {
                bail!("a watcher saw put {put_index} while put {i} was timed");
            }
            last = last.max(at);
        }
        read_response(&mut put).await?;
        times.push((last - sent).as_secs_f64() * 1000.0);
        tokio::time::sleep(args.pause).await;
    }
    watchers.abort_all();
    Ok(times)
}

async fn first_failure(watchers: &mut JoinSet<anyhow::Result<()>>) -> String {
    while let Some(ended) = watchers.join_next().await {
        match ended {
            Ok(Err(e)) => return format!("{e:#}"),
            Err(e) => return e.to_string(),
            Ok(Ok(())) => {}
        }
    }
    "no watcher said why".into()
}

/// One watcher: opens the watch, says it is ready once etcd confirmed it, then reports each
/// put's value as it arrives, in order.
async fn watch(
    endpoint: Arc<str>,
    puts: usize,
    ready: mpsc::Sender<()>,
    seen: mpsc::UnboundedSender<(usize, Instant)>,
) -> anyhow::Result<()> {
    let mut conn = connect(&endpoint).await?;
    let body = format!(
        r#"{{"create_request":{{"key":"{}"}}}}"#,
        base64(KEY.as_bytes())
    );
    conn.write_all(request("/v3/watch", &endpoint, &body).as_bytes())
        .await?;
    let mut buf = Vec::with_capacity(4096);
    let created = b"\"created\":true";
    read_until(&mut conn, &mut buf, created).await?;
    ready.send(()).await.ok();
    for i in 0..puts {
        let wanted = base64(value(i).as_bytes());
        read_until(&mut conn, &mut buf, wanted.as_bytes()).await?;
        if seen.send((i, Instant::now())).is_err() {
            break;
        }
    }
    Ok(())
}

/// Reads until `buf` holds `needle`, then drops everything up to its end.
async fn read_until(conn: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> anyhow::Result<()> {
    loop {
        if let Some(at) = buf.windows(needle.len()).position(|w| w == needle) {
            buf.drain(..at + needle.len());
            return Ok(());
        }
        // Keep only what could be the start of the needle.
        let keep = buf.len().saturating_sub(needle.len());
        buf.drain(..keep);
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!(
                "etcd closed a watch connection: {}",
                String::from_utf8_lossy(buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connect(endpoint: &str) -> anyhow::Result<TcpStream> {
    let conn = timeout(STEP, TcpStream::connect(endpoint))
        .await?
        .with_context(|| format!("connecting to etcd at {endpoint}"))?;
    conn.set_nodelay(true)?;
    Ok(conn)
}

fn request(path: &str, host: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one HTTP response with a `Content-Length` body; refuses any status but 200.
async fn read_response(conn: &mut TcpStream) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("etcd closed the put connection");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        bail!("etcd refused a put: {}", head.lines().next().unwrap_or(""));
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .context("etcd answered a put without a Content-Length")?;
    let mut have = buf.len() - head_end;
    while have < length {
        let mut chunk = [0u8; 1024];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("etcd closed the put connection mid-answer");
        }
        have += n;
    }
    Ok(())
}

/// Standard base64 with padding, as etcd's gateway takes keys and values.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"shoal-bench/config"), "c2hvYWwtYmVuY2gvY29uZmln");
    }
}
