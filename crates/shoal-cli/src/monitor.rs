//! `shoal monitor ADDR`: subscribes to a service's monitor feed (its `monitor.publish`) and
//! prints each status snapshot, as a short text block or, with `--json`, one JSON object per
//! line. Snapshots in either of the feed's formats are read; a malformed message is reported
//! on stderr and skipped.
//!
//! The SUB socket is the `zeromq` crate's, which allocates whatever frame size the publisher
//! announces: a hostile publisher can abort this command (not a service), so point it at
//! services you run.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context as _};
use clap::Args;
use shoal::config::MonitorAddr;
use shoal::monitor::TOPIC;
use shoal_api::status::Status;
use zeromq::{Socket, SocketOptions, SocketRecv, SubSocket};

use crate::out::{errln, out};

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// The feed's endpoint, as the service's monitor.publish says: tcp://HOST:PORT or
    /// ipc://PATH.
    addr: String,
    /// Print each snapshot as one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Exit (0) after this many snapshots.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Exit (2) when the next snapshot takes longer than this to arrive (10s, 1m); default:
    /// wait for ever, reconnecting when the service restarts.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
}

pub fn run(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    let addr: MonitorAddr = args.addr.parse().map_err(|why: String| {
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        anyhow!(
            "invalid address {:?}: expected a ZeroMQ endpoint tcp://HOST:PORT or ipc://PATH{why}",
            args.addr
        )
    })?;
    let endpoint = addr.to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let within = |what: &'static str| {
            let endpoint = endpoint.clone();
            move |_| match args.timeout {
                Some(t) => anyhow!(
                    "no {what} from {endpoint} within {}",
                    humantime::format_duration(t)
                ),
                None => anyhow!("no {what} from {endpoint}"),
            }
        };
        let mut options = SocketOptions::default();
        // The command's own --timeout bounds the wait, if anything does.
        options.no_connect_timeout();
        let mut sub = SubSocket::with_options(options);
        deadline(args.timeout, sub.connect(&endpoint))
            .await
            .map_err(within("snapshot"))?
            .with_context(|| format!("cannot connect to {endpoint}"))?;
        sub.subscribe(TOPIC).await?;
        let mut printed = 0;
        loop {
            // A feed that sends nothing more still ends when the reader goes.
            let received = tokio::select! {
                received = deadline(args.timeout, sub.recv()) => received,
                () = crate::out::closed() => return Err(crate::out::Closed.into()),
            }
            .map_err(within("snapshot"))?;
            let frames = match received {
                Ok(message) => message.into_vec(),
                Err(e) => {
                    errln!("warning: {endpoint}: {e}; reconnecting");
                    continue;
                }
            };
            let snapshot = match decode(&frames) {
                Ok(snapshot) => snapshot,
                Err(why) => {
                    errln!("warning: {endpoint}: skipped a malformed message: {why}");
                    continue;
                }
            };
            let shown = if args.json {
                Ok(format!("{snapshot}\n"))
            } else {
                serde_json::from_value::<Status>(snapshot).map(|status| render(&status))
            };
            match shown {
                // A closed pipe (`| head`) ends the command quietly, in `main`.
                Ok(text) => out!("{text}")?,
                Err(e) => {
                    errln!("warning: {endpoint}: skipped a snapshot that is not a status: {e}");
                    continue;
                }
            }
            printed += 1;
            if args.count == Some(printed) {
                return Ok(ExitCode::SUCCESS);
            }
        }
    })
}

/// `future`, bounded by `limit` when there is one.
async fn deadline<F: std::future::Future>(
    limit: Option<Duration>,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, future).await,
        None => Ok(future.await),
    }
}

/// A feed message (the topic, then a MessagePack or JSON map) as JSON, or why it is not one.
fn decode(frames: &[impl AsRef<[u8]>]) -> Result<serde_json::Value, String> {
    let [topic, payload] = frames else {
        return Err(format!(
            "{} frames, expected 2 (topic, snapshot)",
            frames.len()
        ));
    };
    if topic.as_ref() != TOPIC.as_bytes() {
        return Err(format!(
            "topic {:?}, expected {TOPIC:?}",
            String::from_utf8_lossy(topic.as_ref())
        ));
    }
    let payload = payload.as_ref();
    let value: serde_json::Value = if payload.first() == Some(&b'{') {
        serde_json::from_slice(payload).map_err(|e| format!("bad JSON: {e}"))?
    } else {
        rmp_serde::from_slice(payload).map_err(|e| format!("bad MessagePack: {e}"))?
    };
    if !value.is_object() {
        return Err("the snapshot is not a map".into());
    }
    Ok(value)
}

/// A snapshot as text: a header line, then one indented line per detail.
fn render(status: &Status) -> String {
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    let uptime = humantime::format_duration(Duration::from_secs(status.uptime_secs));
    let mut text = format!(
        "{now} {} {} pid {} {} up {uptime}, {} errors\n",
        status.name, status.version, status.pid, status.state, status.errors
    );
    let mut line = |s: String| {
        text.push_str("  ");
        text.push_str(&s);
        text.push('\n');
    };
    if let Some(e) = &status.last_error {
        line(format!(
            "last error {}: {}: {}",
            e.at.format("%Y-%m-%dT%H:%M:%SZ"),
            e.origin,
            e.message
        ));
    }
    if let Some(r) = &status.last_reload {
        let at = r.at.format("%Y-%m-%dT%H:%M:%SZ");
        match &r.error {
            None => line(format!("last reload {at}: ok")),
            Some(e) => line(format!("last reload {at}: rejected: {e}")),
        }
    }
    for m in &status.methods {
        line(format!(
            "method {}: {} calls, {} errors, p50 {}, p99 {}",
            m.method,
            m.calls,
            m.errors,
            micros(m.p50_us),
            micros(m.p99_us)
        ));
    }
    for t in &status.timers {
        let mut s = format!(
            "timer {} ({}): {} runs, {} failures, {} skipped",
            t.name, t.schedule, t.runs, t.failures, t.skipped
        );
        if let Some(next) = t.next_run {
            s.push_str(&format!(", next {}", next.format("%Y-%m-%dT%H:%M:%SZ")));
        }
        line(s);
    }
    if let Some(summary) = &status.last_summary {
        line(format!("summary: {}", summary.text));
    }
    text
}

fn micros(us: u64) -> String {
    humantime::format_duration(Duration::from_micros(us)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_takes_either_format_and_names_what_is_wrong() {
        let json = br#"{"name":"x","pid":1}"#.to_vec();
        let msgpack = rmp_serde::to_vec_named(&serde_json::json!({"name": "x", "pid": 1})).unwrap();
        for payload in [json, msgpack] {
            let value = decode(&[TOPIC.as_bytes(), &payload]).unwrap();
            assert_eq!(value, serde_json::json!({"name": "x", "pid": 1}));
        }
        let cases: [(&[&[u8]], &str); 7] = [
            (&[b"shoal.status"], "1 frames, expected 2 (topic, snapshot)"),
            (
                &[b"shoal.status", b"{}", b"{}"],
                "3 frames, expected 2 (topic, snapshot)",
            ),
            (
                &[b"shoal.statusx", b"{}"],
                "topic \"shoal.statusx\", expected \"shoal.status\"",
            ),
            (
                &[b"shoal.status", b"{"],
                "bad JSON: EOF while parsing an object at line 1 column 1",
            ),
            (
                &[b"shoal.status", b"\x93\x01\x02\x03"],
                "the snapshot is not a map",
            ),
            (&[b"shoal.status", b""], "bad MessagePack"),
            // A map with an integer key is not a status.
            (&[b"shoal.status", b"\x81\x01\x02"], "bad MessagePack"),
        ];
        for (frames, expected) in cases {
            let error = decode(frames).unwrap_err();
            assert!(error.starts_with(expected), "{error} for {frames:?}");
        }
    }
}
