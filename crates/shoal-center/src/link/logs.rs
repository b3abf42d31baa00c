//! A fleet log stream from one agent: lines arrive as `logs.line` notifications, at most
//! the credit the center gave ([`INITIAL_LOG_CREDIT`], topped up as the reader takes them),
//! so the center buffers a bounded number per stream. Dropping the stream sends `logs.stop`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use shoal_api::fleet::{methods, LogCredit, LogLine, LogsEnd, INITIAL_LOG_CREDIT};
use shoal_rpc::Peer;
use tokio::sync::mpsc;

use super::Links;

/// Where the link puts one stream's lines.
pub(super) struct Sink {
    /// The agent the stream is from: lines from another agent's link are not taken.
    pub agent: String,
    pub tx: mpsc::Sender<LogLine>,
}

pub(super) fn channel(agent: &str) -> (Sink, mpsc::Receiver<LogLine>) {
    // The agent never has more than its credit outstanding: a full channel means it broke
    // the rule, and its extra lines are dropped.
    let (tx, rx) = mpsc::channel(INITIAL_LOG_CREDIT as usize);
    (
        Sink {
            agent: agent.to_owned(),
            tx,
        },
        rx,
    )
}

/// Takes the stream out of the table and stops it on the agent when dropped.
pub(super) struct StopGuard {
    links: Links,
    peer: Peer,
    stream: u64,
}

impl StopGuard {
    pub fn new(links: Links, peer: Peer, stream: u64) -> Self {
        StopGuard {
            links,
            peer,
            stream,
        }
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        let open = self
            .links
            .inner
            .streams
            .lock()
            .unwrap()
            .remove(&self.stream);
        if open.is_some() {
            let _ = self.peer.notify(
                methods::LOGS_STOP,
                &[LogsEnd {
                    stream: self.stream,
                }],
            );
        }
    }
}

/// The lines of one agent's log stream, until it ends (the query was not followed, the app
/// or the link went away) or is dropped.
pub struct LogStream {
    lines: mpsc::Receiver<LogLine>,
    stop: StopGuard,
    /// Lines taken since the last credit sent.
    taken: u32,
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStream")
            .field("stream", &self.stop.stream)
            .finish_non_exhaustive()
    }
}

impl LogStream {
    pub(super) fn new(lines: mpsc::Receiver<LogLine>, stop: StopGuard) -> Self {
        LogStream {
            lines,
            stop,
            taken: 0,
        }
    }

    /// The stream's id, as the agent's notifications name it.
    pub fn id(&self) -> u64 {
        self.stop.stream
    }
}

impl Stream for LogStream {
    type Item = LogLine;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LogLine>> {
        let polled = self.lines.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &polled {
            self.taken += 1;
            if self.taken >= INITIAL_LOG_CREDIT / 2 {
                let credit = LogCredit {
                    stream: self.stop.stream,
                    lines: self.taken,
                };
                self.taken = 0;
                let _ = self.stop.peer.notify(methods::LOGS_CREDIT, &[credit]);
            }
        }
        polled
    }
}
