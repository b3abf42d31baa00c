//! The monitor feed: the `shoal.status` snapshot published every `monitor.every` on a ZeroMQ
//! PUB socket bound at `monitor.publish`, so a dashboard or `shoal monitor ADDR` can watch a
//! service without calling it.
//!
//! # Wire format
//!
//! The socket is a ZeroMQ PUB socket speaking ZMTP 3.0 with the `NULL` security mechanism (the
//! default), so a subscriber in any language needs only a ZeroMQ SUB socket (libzmq and its
//! bindings, the `zeromq` crate, JeroMQ, ...):
//!
//! 1. connect it to the endpoint `monitor.publish` names (`tcp://HOST:PORT` or `ipc://PATH`);
//! 2. subscribe to the prefix `shoal.status` (the feed sends nothing else, so `""` works too);
//! 3. receive messages of exactly two frames:
//!    - frame 1, the topic: the 12 ASCII bytes `shoal.status`;
//!    - frame 2, the snapshot: [`Status`] encoded as `monitor.format` says, either a
//!      MessagePack map with string keys (`"msgpack"`, the default; exactly the value the
//!      `shoal.status` RPC method returns) or a UTF-8 JSON object with the same keys
//!      (`"json"`). A decoder that accepts both can tell them apart by the first byte: `{`
//!      (0x7b) is JSON, a MessagePack map starts with 0x80–0x8f, 0xde or 0xdf;
//! 4. decode frame 2 as a map. Its keys: `name`, `version` (strings), `pid` (integer),
//!    `state` (`"running"`, `"reloading"` or `"closing"`), `started_at` (RFC 3339, UTC),
//!    `uptime_secs`, `config_file`, `rpc_addr`, `monitor_addr` (where this feed is bound),
//!    `last_reload` (`{at, ok, error}`), `last_error` (`{at, origin, message, trace}`),
//!    `errors` (a count), `last_summary` (`{at, text}`), `last_heartbeat`, `config` (the
//!    effective configuration, secrets shown as `"<redacted>"`, by key name and inside
//!    values such as a URL's password; see `shoal::config`), `services` (names), `methods`
//!    (`[{method, calls, errors, p50_us, p99_us}]`) and `timers` (`[{name, schedule, runs,
//!    failures, skipped, last_run, last_duration_ms, next_run, last_error}]`). An absent value
//!    is nil (`null`). Keys may be added in later versions: ignore those you do not know.
//!
//! With pyzmq and msgpack:
//!
//! ```text
//! sub = zmq.Context().socket(zmq.SUB)
//! sub.connect("tcp://127.0.0.1:5558")
//! sub.setsockopt(zmq.SUBSCRIBE, b"shoal.status")
//! topic, payload = sub.recv_multipart()
//! status = json.loads(payload) if payload[:1] == b"{" else msgpack.unpackb(payload)
//! ```
//!
//! # When snapshots go out
//!
//! One as soon as the socket is bound after the application is ready, then one every
//! `monitor.every`, and a last one with state `"closing"` when the application closes (the
//! socket then waits up to a second, within `shutdown.grace`, until it is written to every
//! subscriber). PUB semantics apply: a subscriber receives what is sent after its
//! subscription reached the publisher, and a subscriber that does not keep up loses snapshots;
//! it never slows the application down.
//!
//! # Binding and reloads
//!
//! A malformed endpoint is a configuration error (exit 2 at start; a reload is rejected).
//! Binding happens here, in the background: when it fails (typically the address is in use
//! because the process this one replaces after SIGUSR2 still holds it until it closes), a
//! warning is logged once and the bind is retried every second; the start never fails over
//! the monitor. A stale `ipc://` socket file nobody listens on is removed; a file at that path
//! that is not a socket (a typo like `ipc://app.toml`) is never removed: the bind fails with a
//! warning naming the path, logged once, and is retried every second like a busy address, so
//! it binds once the file is moved away or a reload names another path. At close the socket
//! file is removed only while it is still the socket this process bound. On reload a new
//! `every` or `format` applies at once, and a new `publish` closes the old socket (its port is
//! free again) before binding the new one. [`Status::monitor_addr`] and
//! [`Running::monitor_addr`](crate::Running::monitor_addr) say where the feed is bound, with
//! the real port when `publish` asked for port 0.
//!
//! # Limits
//!
//! Subscribers are untrusted network peers, and what they can make the process hold is
//! bounded: 64 connections at once, 10 seconds to complete the handshake, frames of at most
//! 1 KiB (a longer one ends the connection), 32 subscriptions per connection and 16 snapshots
//! queued per connection (a slower subscriber loses the oldest). A connection without any
//! subscription for 10 seconds (from the handshake on, or since its last cancellation) is
//! closed, and so is one that a snapshot takes more than 5 seconds to be written to (the
//! subscriber stopped reading and the socket buffers are full): neither keeps a place from a
//! real subscriber for long. The feed has no
//! authentication (ZMTP's `NULL` mechanism) and shows the redacted configuration: bind it to
//! loopback, a Unix socket or a trusted network. The socket is implemented in `zmtp.rs`
//! rather than with the `zeromq` crate, which believes the frame sizes peers announce (a
//! 9-byte header announcing 16 TiB aborts the process).

mod zmtp;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::zmtp::Publisher;
use crate::config::{MonitorAddr, MonitorFormat};
use crate::status::Status;
use crate::Handle;

/// The first frame of every message the feed sends.
pub const TOPIC: &str = "shoal.status";

/// How long a failed bind waits before the next try.
const RETRY: Duration = Duration::from_secs(1);
/// How long subscribers have to receive what was sent before a socket closes.
const LINGER: Duration = Duration::from_secs(1);

/// Encodes `status` as frame 2 of the feed's messages.
pub(crate) fn encode(status: &Status, format: MonitorFormat) -> Result<Vec<u8>, String> {
    match format {
        MonitorFormat::Msgpack => shoal_rpc::codec::to_msgpack(status).map_err(|e| e.to_string()),
        MonitorFormat::Json => serde_json::to_vec(status).map_err(|e| e.to_string()),
    }
}

/// Publishes snapshots while `monitor.publish` is set, following reloads (`changed`), until
/// `stop`; then sends the closing snapshot and closes the socket.
pub(crate) async fn publish(handle: Handle, changed: Arc<Notify>, stop: CancellationToken) {
    let bound = &handle.shared.monitor_addr;
    // The socket and the configured address it was bound for.
    let mut feed: Option<(MonitorAddr, Publisher)> = None;
    // The address a failed bind was reported for, so that it is reported once.
    let mut warned: Option<MonitorAddr> = None;
    let mut last_sent: Option<Instant> = None;
    loop {
        // Registered before the configuration is read, so a reload in between is not missed.
        let changed = changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let config = handle.config().runtime().monitor.clone();
        if feed
            .as_ref()
            .is_some_and(|(addr, _)| config.publish.as_ref() != Some(addr))
        {
            // Closed before the new one binds: the old port does not leak (Tiny's did).
            if let Some((_, old)) = feed.take() {
                info!(endpoint = old.endpoint(), "monitor feed closed");
                old.close(LINGER).await;
            }
            bound.send_replace(None);
        }
        if let (None, Some(addr)) = (&feed, &config.publish) {
            match Publisher::bind(addr).await {
                Ok(publisher) => {
                    info!(
                        endpoint = publisher.endpoint(),
                        every = %humantime::format_duration(config.every),
                        format = config.format.as_str(),
                        "monitor feed publishing"
                    );
                    bound.send_replace(Some(publisher.endpoint().to_owned()));
                    feed = Some((addr.clone(), publisher));
                    warned = None;
                    last_sent = None;
                }
                Err(error) => {
                    if warned.as_ref() != Some(addr) {
                        warn!(
                            endpoint = %addr,
                            %error,
                            "monitor.publish: cannot bind; retrying every second"
                        );
                        warned = Some(addr.clone());
                    }
                }
            }
        }
        let wake = match &feed {
            Some(_) => Some(last_sent.map_or_else(Instant::now, |t| t + config.every)),
            None => config.publish.as_ref().map(|_| Instant::now() + RETRY),
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = changed => {
                // Wakes `Running::monitor_addr` callers to read the configuration again.
                bound.send_modify(|_| {});
            }
            _ = sleep_until(wake) => {
                if let Some((_, publisher)) = &feed {
                    send(publisher, &handle.status(), config.format);
                    last_sent = Some(Instant::now());
                }
            }
        }
    }
    if let Some((_, publisher)) = feed {
        let config = handle.config().runtime().clone();
        send(&publisher, &handle.status(), config.monitor.format);
        publisher.close(LINGER.min(config.shutdown.grace / 2)).await;
    }
    bound.send_replace(None);
}

fn send(publisher: &Publisher, status: &Status, format: MonitorFormat) {
    match encode(status, format) {
        Ok(payload) => publisher.send(&[TOPIC.as_bytes(), &payload]),
        Err(error) => warn!(%error, "monitor: cannot encode the status snapshot"),
    }
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}
