//! `logs`: an app's captured lines sent to the center as `logs.line` notifications, one
//! credit each ([`INITIAL_LOG_CREDIT`] to start, `logs.credit` for more), so a center that
//! reads slowly holds up only that stream. A stream ends with its query (unless followed),
//! on `logs.stop`, or when the link closes; its start and its end are logged at debug with
//! how many streams stay open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use shoal_api::fleet::{methods, LogCredit, LogLine, LogsEnd, LogsRequest, INITIAL_LOG_CREDIT};
use shoal_api::manifest::Name;
use shoal_rpc::Peer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::host::Host;
use crate::AgentError;

/// The most credit a stream may hold: a center cannot make the agent buffer more.
const MAX_CREDIT: usize = 4 * INITIAL_LOG_CREDIT as usize;

/// The log streams of one link.
#[derive(Debug, Default)]
pub struct Streams {
    open: Mutex<HashMap<u64, Control>>,
}

#[derive(Debug)]
struct Control {
    stop: CancellationToken,
    credit: Arc<Semaphore>,
}

impl Streams {
    /// Starts stream `req.stream` on `tasks`; fails (nothing started) for an app the agent
    /// does not have or a query that does not read.
    pub async fn start(
        self: &Arc<Self>,
        host: &dyn Host,
        req: LogsRequest,
        peer: Peer,
        tasks: &TaskTracker,
    ) -> Result<(), AgentError> {
        let name = Name::new(&req.app).map_err(AgentError::invalid)?;
        let logs = host.logs(&name, &req.query).await?;
        let control = Control {
            stop: CancellationToken::new(),
            credit: Arc::new(Semaphore::new(INITIAL_LOG_CREDIT as usize)),
        };
        let (stop, credit) = (control.stop.clone(), control.credit.clone());
        let open = {
            let mut open = self.open.lock().unwrap();
            open.insert(req.stream, control);
            open.len()
        };
        debug!(stream = req.stream, app = %req.app, open, "log stream started");
        let streams = self.clone();
        let stream = req.stream;
        tasks.spawn(async move {
            let send = Sender {
                peer: &peer,
                stream,
                credit: &credit,
                stop: &stop,
            };
            let mut more = send.all(logs.lines).await;
            if let (true, Some(follow)) = (more, logs.follow) {
                let mut follow = std::pin::pin!(follow.into_stream());
                while more {
                    let lines = tokio::select! {
                        () = stop.cancelled() => None,
                        () = peer.closed() => None,
                        lines = follow.next() => lines,
                    };
                    more = match lines {
                        Some(lines) => send.all(lines).await,
                        None => false,
                    };
                }
            }
            let ended = if stop.is_cancelled() {
                Ended::Stopped
            } else if peer.is_closed() {
                Ended::LinkClosed
            } else {
                let _ = peer.notify(methods::LOGS_END, &[LogsEnd { stream }]);
                Ended::Done
            };
            let open = {
                let mut open = streams.open.lock().unwrap();
                open.remove(&stream);
                open.len()
            };
            debug!(stream, ?ended, open, "log stream ended");
        });
        Ok(())
    }

    /// `logs.credit`: the center takes more lines.
    pub fn credit(&self, credit: LogCredit) {
        if let Some(control) = self.open.lock().unwrap().get(&credit.stream) {
            let room = MAX_CREDIT.saturating_sub(control.credit.available_permits());
            control
                .credit
                .add_permits((credit.lines as usize).min(room));
        }
    }

    /// `logs.stop`: the center no longer wants the stream.
    pub fn stop(&self, stream: u64) {
        if let Some(control) = self.open.lock().unwrap().remove(&stream) {
            control.stop.cancel();
        }
    }

    /// Every stream ends (the link closed).
    pub fn stop_all(&self) {
        for (_, control) in self.open.lock().unwrap().drain() {
            control.stop.cancel();
        }
    }
}

/// Why a stream ended.
#[derive(Debug)]
enum Ended {
    /// Its query had no more lines.
    Done,
    /// The center sent `logs.stop`, or the link stopped.
    Stopped,
    /// The connection closed under it.
    LinkClosed,
}

struct Sender<'a> {
    peer: &'a Peer,
    stream: u64,
    credit: &'a Semaphore,
    stop: &'a CancellationToken,
}

impl Sender<'_> {
    /// Sends `lines`, each when there is credit for it; false once the stream should end.
    async fn all(&self, lines: Vec<String>) -> bool {
        for line in lines {
            let permit = tokio::select! {
                () = self.stop.cancelled() => return false,
                () = self.peer.closed() => return false,
                permit = self.credit.acquire() => permit,
            };
            match permit {
                Ok(permit) => permit.forget(),
                Err(_) => return false,
            }
            let line = LogLine {
                stream: self.stream,
                line,
            };
            if self.peer.notify(methods::LOGS_LINE, &[line]).is_err() {
                return false;
            }
        }
        true
    }
}
