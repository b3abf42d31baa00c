//! One MessagePack-RPC connection, symmetric: either side may call the other. A reader task
//! decodes and dispatches, a writer task batches outgoing frames into few writes, and a
//! [`Peer`] handle lets any task call or notify the other end.
//!
//! A reply, or a call made while no other is waiting, is written by its sender at once when
//! nothing is queued before it and the writer task is not writing: a lone call or a reply
//! then costs no wake-up of another task. What the socket does not take at once is queued
//! for the writer task, behind which every later frame waits, so frames never overtake.
//!
//! # Extensions between shoal peers
//!
//! A shoal client opens every connection with the call `shoal.hello` (`[{"version": 1}]`). A
//! shoal server answers `{"version": 1, "deadline": true, "cancel": true, "goaway": true}`; any
//! other peer answers with an error (method not found) and the connection stays plain
//! MessagePack-RPC. Once both ends agreed:
//!
//! - requests carry a fifth element `{"deadline_ms": n}`, the time the caller still waits;
//! - a caller that gives up sends the notification `shoal.cancel` with the msgids it dropped,
//!   and the other end stops those handlers;
//! - a server that is shutting down sends the notification `shoal.goaway` (params `[]`)
//!   instead of closing. It keeps reading and answering requests until the other end closes
//!   the connection. The receiver sends no new requests on that connection
//!   ([`Peer::is_draining`]); it closes the connection once every call it made there is
//!   answered, and opens a new one for later calls. The listening socket may meanwhile be
//!   served by a successor process, so a drain loses no call.
//!
//! A peer that never said hello is never sent any of these, and on shutdown its connection
//! stops reading at once, lets the calls already read finish, and closes.
//!
//! # A peer that goes away
//!
//! Whichever task sees it first, the reader (end of stream, a reset, a time limit) or the
//! writer (a failed or stalled write), the peer's calls still running are cancelled and the
//! connection closes at once: nobody is left to read their replies. The reader keeps
//! watching while it waits for room or for an in-flight slot, reading on up to a small cap.
//! A close at this end ([`Peer::close`], or a drain whose calls are all answered) is not a
//! peer going away: the peer's calls finish first and their replies go out.
//!
//! # Time limits
//!
//! The stall limit ([`ConnConfig::stall_timeout`]) is the longest gap a peer may leave: the
//! timer starts over with every read that brings bytes, so a peer must send something within
//! each stall period, and a message may take longer than that in all. The idle limit
//! ([`ConnConfig::idle_timeout`]) counts from the last byte either way.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::task::noop_waker_ref;
use rmpv::Value;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::util::BoxCloneSyncService;
use tower::Service;
use tracing::{debug, info, warn};

use crate::blocking::BlockingPool;
use crate::calls::{Answer, Calls, Outcome};
use crate::codec::{self, DecodeError, Decoder, Message, RequestExt};
use crate::error::{codes, Error, RemoteError, RpcError};
use crate::extensions::Extensions;
use crate::in_place::{poll_once, CallInPlace, InPlace, Kept};
use crate::pipeline::{Pipeline, TooLarge};
use crate::service::{builtin, BoxReply, Context, Reply, Request, Router};
use crate::throttle::{LogThrottle, LOG_INTERVAL};
use crate::woken::OnWake;

/// What serves the calls a connection receives: a [`Router`] called directly, or any tower
/// service (a router wrapped in layers, a service of its own) behind a box.
///
/// A router's handlers already return a boxed future: called directly, it is not boxed a
/// second time, which a [`BoxCloneSyncService`] around it would do on every call.
#[derive(Clone)]
pub struct Handler(Serve);

#[derive(Clone)]
enum Serve {
    Router(Router),
    Boxed(BoxCloneSyncService<Request, Reply, RpcError>),
}

impl Handler {
    /// Any tower service of requests, boxed.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Request, Response = Reply, Error = RpcError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Handler(Serve::Boxed(BoxCloneSyncService::new(service)))
    }
}

impl From<Router> for Handler {
    fn from(router: Router) -> Self {
        Handler(Serve::Router(router))
    }
}

impl From<BoxCloneSyncService<Request, Reply, RpcError>> for Handler {
    fn from(service: BoxCloneSyncService<Request, Reply, RpcError>) -> Self {
        Handler(Serve::Boxed(service))
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Serve::Router(_) => "Handler(Router)",
            Serve::Boxed(_) => "Handler(..)",
        })
    }
}

impl Service<Request> for Handler {
    type Response = Reply;
    type Error = RpcError;
    type Future = BoxReply;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), RpcError>> {
        match &mut self.0 {
            Serve::Router(_) => Poll::Ready(Ok(())),
            Serve::Boxed(service) => service.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Request) -> BoxReply {
        match &mut self.0 {
            Serve::Router(router) => router.dispatch(req),
            Serve::Boxed(service) => service.call(req),
        }
    }
}

/// Default number of calls (and queued notifications) one connection may have in progress.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default bound on replies queued for a peer and not yet taken by it, in bytes; past it the
/// connection stops reading from that peer until it takes them.
pub const DEFAULT_MAX_UNSENT: usize = 4 * 1024 * 1024;
/// Default time a peer may leave a message half sent, or leave our replies untaken while
/// some wait, before the connection is closed.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits and identity of one connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Largest message read or written, in bytes.
    pub max_message: usize,
    /// Calls from the peer handled at once; past it the connection stops reading.
    pub max_in_flight: usize,
    /// Bytes queued for the peer and not yet written; past it the connection stops reading
    /// until the peer takes some, so a peer that never reads cannot grow the queue.
    pub max_unsent: usize,
    /// Values one incoming message may hold ([`codec::DEFAULT_MAX_VALUES`]).
    pub max_values: usize,
    /// A peer that sent part of a message and then nothing for this long, or that took none
    /// of our queued bytes for this long, is closed. `None`: no limit. The timer starts over
    /// with every read that brings bytes: the peer must send something within each period.
    pub stall_timeout: Option<Duration>,
    /// A connection with nothing read for this long, no call in progress either way and
    /// nothing queued is closed (a shoal peer is sent `shoal.goaway` and closes it itself).
    /// `None`: no limit.
    pub idle_timeout: Option<Duration>,
    /// Where blocking handlers run.
    pub blocking: BlockingPool,
    /// Before each write, let other ready tasks queue their frames so they leave together.
    /// Worth it where many tasks send (a client's callers); a server's replies are already
    /// batched per read, and waiting a scheduler turn would only add latency.
    pub coalesce_writes: bool,
    /// On shutdown, send a shoal peer `shoal.goaway` and keep answering it until it closes,
    /// rather than stop reading at once. Servers do; a client closing has no caller to spare.
    pub goaway: bool,
    /// Shared values every call's [`Context`] carries.
    pub state: Extensions,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            max_message: codec::DEFAULT_MAX_MESSAGE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_unsent: DEFAULT_MAX_UNSENT,
            max_values: codec::DEFAULT_MAX_VALUES,
            stall_timeout: Some(DEFAULT_STALL_TIMEOUT),
            idle_timeout: None,
            blocking: BlockingPool::shared_default(),
            coalesce_writes: true,
            goaway: false,
            state: Extensions::default(),
        }
    }
}

/// A handle on the other end of a connection: call it, notify it, see whether it is open.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<PeerInner>,
}

struct PeerInner {
    addr: Arc<str>,
    out: Outbox,
    /// Calls made from this end that wait for an answer.
    calls: Mutex<Calls>,
    /// [`Calls::outstanding`], mirrored for readers that take no lock.
    outstanding: AtomicUsize,
    /// Wakes the deadline sweep ([`sweep_deadlines`]) to sleep less.
    sweep: Notify,
    next_id: AtomicU32,
    /// The peer is shoal: deadlines travel with requests and cancellations are sent.
    extended: AtomicBool,
    /// The other end sent `shoal.goaway`: no new calls; close once none is pending.
    draining: AtomicBool,
    closed: CancellationToken,
    /// Mirrors `closed` for the check on every call, which must not take a lock.
    is_closed: AtomicBool,
    max_message: usize,
}

impl PeerInner {
    fn mark_closed(&self) {
        self.is_closed.store(true, Ordering::Release);
        self.closed.cancel();
        // A reader waiting for room to queue replies must see the close rather than wait on.
        self.out.room.notify_one();
    }

    /// Records call `id`; returns how many calls are outstanding with it.
    fn begin(&self, id: u32, deadline: Instant) -> usize {
        self.begin_many(id, 1, deadline)
    }

    /// Records `count` calls numbered from `first` on (see [`Pipeline`]), all due at
    /// `deadline`, under one lock; returns the calls now outstanding.
    fn begin_many(&self, first: u32, count: usize, deadline: Instant) -> usize {
        let mut calls = self.calls.lock().unwrap();
        let mut sooner = false;
        for id in pipeline_ids(first, count) {
            sooner |= calls.insert(id, deadline);
        }
        let outstanding = calls.outstanding();
        self.outstanding.store(outstanding, Ordering::Relaxed);
        drop(calls);
        if sooner {
            self.sweep.notify_one();
        }
        outstanding
    }

    /// Leaves the answer to call `id` for its caller, closing a draining connection when it
    /// was the last call outstanding.
    fn answer(&self, id: u32, answer: Answer) {
        let mut calls = self.calls.lock().unwrap();
        let waker = calls.answer(id, answer);
        self.outstanding
            .store(calls.outstanding(), Ordering::Relaxed);
        self.close_if_drained(&calls);
        drop(calls);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Removes the entry of call `id`, whose caller gives up or never sent it; true when it
    /// had no answer. A draining connection is not closed here: see [`CallGuard`].
    fn abandon(&self, id: u32) -> bool {
        let mut calls = self.calls.lock().unwrap();
        let unanswered = calls.remove(id);
        self.outstanding
            .store(calls.outstanding(), Ordering::Relaxed);
        unanswered
    }

    /// Removes the entry of call `id`, which never left: nothing to cancel at the other end,
    /// so a draining connection left without calls closes at once, under the same lock.
    fn unsent(&self, id: u32) {
        self.unsent_many(id, 1);
    }

    /// [`PeerInner::unsent`] for the `count` calls of a pipeline numbered from `first` on.
    fn unsent_many(&self, first: u32, count: usize) {
        let mut calls = self.calls.lock().unwrap();
        for id in pipeline_ids(first, count) {
            calls.remove(id);
        }
        self.outstanding
            .store(calls.outstanding(), Ordering::Relaxed);
        self.close_if_drained(&calls);
    }

    /// Ends every waiting call as closed: nobody will answer them.
    fn fail_calls(&self) {
        let mut wake = Vec::new();
        let mut calls = self.calls.lock().unwrap();
        calls.close(&mut wake);
        self.outstanding
            .store(calls.outstanding(), Ordering::Relaxed);
        drop(calls);
        wake.into_iter().for_each(Waker::wake);
    }

    /// Expires the calls due by now; returns when the next one is due.
    fn expire_calls(&self) -> Option<Instant> {
        let mut wake = Vec::new();
        let next = self.calls.lock().unwrap().expire(Instant::now(), &mut wake);
        wake.into_iter().for_each(Waker::wake);
        next
    }

    /// Closes a draining connection with no call outstanding. Runs under the `calls` lock,
    /// and a caller checks for a close after inserting under that lock, so a call either
    /// keeps the connection open until it is answered or fails as never sent: none is left
    /// without an answer.
    fn close_if_drained(&self, calls: &Calls) {
        if calls.outstanding() == 0
            && self.draining.load(Ordering::Acquire)
            && !self.closed.is_cancelled()
        {
            // The reader stops, lets the peer's calls to us finish, flushes and shuts the
            // write half down: the other end reads a clean end of stream.
            self.mark_closed();
        }
    }

    fn start_draining(&self) {
        let calls = self.calls.lock().unwrap();
        self.draining.store(true, Ordering::Release);
        self.close_if_drained(&calls);
    }
}

/// Frames waiting for the writer. Senders encode straight into the shared buffer, and the
/// writer takes all of it at once, so frames queued while a write is in progress leave
/// together in the next one.
struct Outbox {
    state: Mutex<OutState>,
    /// The connection's write half. The writer task holds it for one poll at a time; a
    /// sender holding `state` may write through it when nothing is queued or being written.
    /// Lock order: `state`, then `sink`.
    sink: Mutex<Option<Sink>>,
    ready: Notify,
    /// Bytes queued or being written and not yet taken by the peer. Kept beside the lock so
    /// the reader checks it per message without taking it.
    unsent: AtomicUsize,
    /// Bytes the peer has taken since the connection opened: writing is activity too, for
    /// the idle limit.
    written: AtomicU64,
    /// Signalled when the writer made progress or stopped, for a reader waiting for room.
    room: Notify,
}

#[derive(Default)]
struct OutState {
    buf: BytesMut,
    /// The writer task took bytes it has not finished writing: a sender writing now would
    /// overtake them.
    writing: bool,
    /// Flush what is queued, then close the write half.
    closing: bool,
    /// The writer has stopped; nothing more can be sent.
    gone: bool,
}

/// The write half a connection writes to.
type Sink = Box<dyn AsyncWrite + Send + Unpin>;

/// How a frame leaves once queued.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leave {
    /// With whatever else the writer task gathers.
    Gathered,
    /// Written by the sender at once, when nothing is queued or being written.
    AtOnce,
}

enum PushError {
    Closed,
    TooLarge(usize),
    Encode(String),
}

impl From<rmp_serde::encode::Error> for PushError {
    fn from(e: rmp_serde::encode::Error) -> Self {
        PushError::Encode(e.to_string())
    }
}

impl From<std::convert::Infallible> for PushError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

impl From<TooLarge> for PushError {
    fn from(TooLarge(size): TooLarge) -> Self {
        PushError::TooLarge(size)
    }
}

impl Outbox {
    fn new(sink: Sink) -> Self {
        Self {
            state: Mutex::new(OutState::default()),
            sink: Mutex::new(Some(sink)),
            ready: Notify::new(),
            unsent: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            room: Notify::new(),
        }
    }

    /// Appends one frame written by `encode`, unless the connection is closing or the frame
    /// is over `max` bytes, and writes it at once if `leave` says so and it is first in line.
    fn push<E: Into<PushError>>(
        &self,
        max: usize,
        leave: Leave,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), PushError> {
        let mut state = self.state.lock().unwrap();
        if state.closing || state.gone {
            return Err(PushError::Closed);
        }
        let start = state.buf.len();
        if let Err(e) = encode(&mut state.buf) {
            state.buf.truncate(start);
            return Err(e.into());
        }
        let size = state.buf.len() - start;
        if size > max {
            state.buf.truncate(start);
            return Err(PushError::TooLarge(size));
        }
        let taken = if leave == Leave::AtOnce && start == 0 && !state.writing {
            self.write_now(&mut state.buf)
        } else {
            0
        };
        self.unsent.fetch_add(size - taken, Ordering::Relaxed);
        let queued = !state.buf.is_empty();
        drop(state);
        if start == 0 && queued {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Writes what the socket takes of `buf` without waiting, removing it from `buf`; the
    /// caller holds `state`, so nothing can be queued before it. Returns the bytes taken.
    /// Whatever the socket refuses, an error included, stays for the writer task, which
    /// waits for the socket or reports the error.
    fn write_now(&self, buf: &mut BytesMut) -> usize {
        let Ok(mut sink) = self.sink.try_lock() else {
            return 0;
        };
        let Some(sink) = sink.as_mut() else { return 0 };
        let mut cx = std::task::Context::from_waker(noop_waker_ref());
        let n = match Pin::new(&mut *sink).poll_write(&mut cx, buf) {
            Poll::Ready(Ok(n)) => n,
            _ => return 0,
        };
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        if n < buf.len() {
            buf.advance(n);
            return n;
        }
        buf.clear();
        if !matches!(Pin::new(sink).poll_flush(&mut cx), Poll::Ready(Ok(()))) {
            // Records kept back (TLS): the writer task flushes them when the socket has room.
            self.ready.notify_one();
        }
        n
    }

    fn close(&self) {
        self.state.lock().unwrap().closing = true;
        self.ready.notify_one();
        // A reader waiting for room must see the close rather than wait on.
        self.room.notify_one();
    }

    fn unsent(&self) -> usize {
        self.unsent.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("addr", &self.inner.addr)
            .field("extended", &self.is_extended())
            .field("draining", &self.is_draining())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Peer {
    /// The address of the other end, for messages.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    pub fn is_closed(&self) -> bool {
        self.inner.is_closed.load(Ordering::Acquire)
    }

    /// Completes once the connection has closed.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// True once both ends agreed to shoal's extensions (deadline and cancellation).
    pub fn is_extended(&self) -> bool {
        self.inner.extended.load(Ordering::Relaxed)
    }

    /// True once the other end sent `shoal.goaway`: it is shutting down and answers only the
    /// calls already made; the connection closes when the last of them is answered. Start
    /// new calls on a new connection (the [`crate::Client`] does).
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Calls `method` with positional `params` (a tuple, slice or `Vec`), waiting at most
    /// `timeout`. Dropping the future abandons the call and, between shoal peers, cancels the
    /// handler on the other side.
    pub async fn call<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<Value, Error> {
        self.call_until(method, params, Instant::now() + timeout, timeout)
            .await
    }

    /// Calls with an absolute deadline; `left` is the time until it, as the caller last read
    /// the clock (sent to shoal peers, and reported if the deadline passes).
    pub async fn call_until<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
        deadline: Instant,
        left: Duration,
    ) -> Result<Value, Error> {
        let inner = &self.inner;
        if self.is_closed() {
            return Err(self.not_sent("connection is closed"));
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let extended = self.is_extended();
        let ext = extended.then(|| request_ext(left));
        let outstanding = inner.begin(id, deadline);
        let mut guard = CallGuard {
            peer: self,
            id,
            extended,
            done: false,
        };
        if self.is_closed() {
            // The reader stopped, or a drain closed the connection, between the check above
            // and the insert: nobody would answer.
            guard.done = true;
            inner.unsent(id);
            return Err(self.not_sent("connection is closed"));
        }
        // A lone call goes at once; with others waiting, the writer gathers them.
        let leave = if outstanding > 1 {
            Leave::Gathered
        } else {
            Leave::AtOnce
        };
        let pushed = inner.out.push(inner.max_message, leave, |buf| {
            codec::encode_request(buf, id, method, params, ext)
        });
        if let Err(e) = pushed {
            guard.done = true;
            inner.unsent(id);
            return Err(self.push_error(e));
        }
        let outcome = std::future::poll_fn(|cx| inner.calls.lock().unwrap().poll(id, cx)).await;
        match outcome {
            // The guard gives the call up: the other end is told, the entry removed.
            Outcome::Expired => Err(Error::DeadlineExceeded(left)),
            Outcome::Closed => {
                guard.done = true;
                Err(Error::Closed {
                    addr: self.addr().to_owned(),
                })
            }
            Outcome::Answered(reply) => {
                guard.done = true;
                answered(reply, extended, deadline, left)
            }
        }
    }

    /// Sends every message of `pipeline` in one write and waits for the answers to its
    /// calls, all due at `deadline` (`left` as in [`Peer::call_until`]). Gives one result per
    /// call, in the order they were added: the value, or that call's own error (the other
    /// end's error, the deadline, or the connection closing before its answer). Fails as a
    /// whole only when nothing was sent: the connection is closed, or a message is over the
    /// connection's limit. Dropping the future abandons the calls not yet answered, as
    /// dropping a call does.
    pub async fn call_pipeline(
        &self,
        pipeline: &Pipeline,
        deadline: Instant,
        left: Duration,
    ) -> Result<Vec<Result<Value, Error>>, Error> {
        let inner = &self.inner;
        if self.is_closed() {
            return Err(self.not_sent("connection is closed"));
        }
        let count = pipeline.calls();
        let first = inner.next_id.fetch_add(count as u32, Ordering::Relaxed) & 0x7fff_ffff;
        let extended = self.is_extended();
        let ext = extended.then(|| request_ext(left));
        let outstanding = inner.begin_many(first, count, deadline);
        let mut guard = PipelineGuard {
            peer: self,
            first,
            count,
            taken: 0,
            extended,
            expired: Vec::new(),
        };
        if self.is_closed() {
            guard.unsent();
            return Err(self.not_sent("connection is closed"));
        }
        let leave = if outstanding > count {
            Leave::Gathered
        } else {
            Leave::AtOnce
        };
        let max = inner.max_message;
        let pushed = inner.out.push(usize::MAX, leave, |buf| {
            pipeline.encode(buf, first, ext, max)
        });
        if let Err(e) = pushed {
            guard.unsent();
            return Err(self.push_error(e));
        }
        let mut results = Vec::with_capacity(count);
        // In order, one entry at a time: only the first unanswered call holds the waker, so
        // answers that come in order wake this task once per read, not once per call.
        std::future::poll_fn(|cx| {
            let mut calls = inner.calls.lock().unwrap();
            while guard.taken < count {
                let id = pipeline_id(first, guard.taken);
                let result = match calls.poll(id, cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Outcome::Answered(reply)) => {
                        answered(reply, extended, deadline, left)
                    }
                    Poll::Ready(Outcome::Expired) => {
                        calls.remove(id);
                        guard.expired.push(id);
                        Err(Error::DeadlineExceeded(left))
                    }
                    Poll::Ready(Outcome::Closed) => Err(Error::Closed {
                        addr: self.addr().to_owned(),
                    }),
                };
                results.push(result);
                guard.taken += 1;
            }
            if !guard.expired.is_empty() {
                inner
                    .outstanding
                    .store(calls.outstanding(), Ordering::Relaxed);
            }
            Poll::Ready(())
        })
        .await;
        // The guard tells the other end to stop the calls that expired.
        Ok(results)
    }

    /// Sends a one-way notification.
    pub fn notify<P: Serialize + ?Sized>(&self, method: &str, params: &P) -> Result<(), Error> {
        if self.is_closed() {
            return Err(self.not_sent("connection is closed"));
        }
        self.inner
            .out
            .push(self.inner.max_message, Leave::Gathered, |buf| {
                codec::encode_notification(buf, method, params)
            })
            .map_err(|e| self.push_error(e))
    }

    /// Asks the other end whether it speaks shoal's extensions; turns them on if so. Peers
    /// that do not know `shoal.hello` answer with an error, and the connection stays plain.
    pub async fn negotiate(&self, timeout: Duration) -> bool {
        let hello = self
            .call(builtin::HELLO, &[HelloParams { version: 1 }], timeout)
            .await;
        let ok = matches!(&hello, Ok(v) if hello_accepted(v));
        self.inner.extended.store(ok, Ordering::Relaxed);
        ok
    }

    /// Number of calls waiting for an answer.
    pub fn pending(&self) -> usize {
        self.inner.outstanding.load(Ordering::Relaxed)
    }

    /// Bytes queued for the other end that it has not taken yet (replies, calls,
    /// notifications); a server stops reading from a peer while this is past its bound.
    pub fn unsent(&self) -> usize {
        self.inner.out.unsent()
    }

    /// Takes no new calls and closes once the calls made are answered, as if the other end
    /// had sent `shoal.goaway`: how a client lets go of a server its endpoint set dropped.
    pub(crate) fn drain(&self) {
        self.inner.start_draining();
    }

    /// Stops the connection: no more reading; queued frames are flushed first.
    pub fn close(&self) {
        self.inner.out.close();
        self.inner.mark_closed();
    }

    fn push_error(&self, e: PushError) -> Error {
        match e {
            PushError::Closed => self.not_sent("connection is closed"),
            PushError::TooLarge(size) => Error::FrameTooLarge {
                size,
                max: self.inner.max_message,
            },
            PushError::Encode(e) => Error::Encode(e),
        }
    }

    fn not_sent(&self, reason: &str) -> Error {
        Error::NotSent {
            addr: self.addr().to_owned(),
            reason: reason.to_owned(),
        }
    }
}

#[derive(Serialize)]
struct HelloParams {
    version: u32,
}

fn hello_accepted(v: &Value) -> bool {
    v.as_map().is_some_and(|m| {
        m.iter()
            .any(|(k, v)| k.as_str() == Some("version") && v.as_u64() == Some(1))
    })
}

fn hello_answer() -> Reply {
    #[derive(Serialize)]
    struct Hello {
        version: u32,
        deadline: bool,
        cancel: bool,
        goaway: bool,
    }
    Reply::encode(&Hello {
        version: 1,
        deadline: true,
        cancel: true,
        goaway: true,
    })
    .unwrap_or_else(|_| Reply::none())
}

/// What a call tells a shoal peer: the time `left` until its deadline, rounded up, since the
/// other end must not give up before the caller does.
fn request_ext(left: Duration) -> RequestExt {
    RequestExt {
        deadline_ms: Some(u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)),
    }
}

/// The result of a call the other end answered with `reply`.
fn answered(
    reply: Answer,
    extended: bool,
    deadline: Instant,
    left: Duration,
) -> Result<Value, Error> {
    reply.map_err(|e| {
        let e = RemoteError::from_value(e);
        // The other end was told this call's deadline and says it passed, just before the
        // sweep would have: the same failure, whichever saw it first.
        let ours =
            extended && e.code == Some(codes::DEADLINE_EXCEEDED) && Instant::now() >= deadline;
        if ours {
            Error::DeadlineExceeded(left)
        } else {
            Error::Remote(Box::new(e))
        }
    })
}

/// The msgid of a pipeline's `n`th call, the first being `first`.
fn pipeline_id(first: u32, n: usize) -> u32 {
    first.wrapping_add(n as u32) & 0x7fff_ffff
}

fn pipeline_ids(first: u32, count: usize) -> impl Iterator<Item = u32> {
    (0..count).map(move |n| pipeline_id(first, n))
}

/// Removes the calls of a pipeline not yet taken by its sender when the sender gives up,
/// and, between shoal peers, tells the other end to stop those it did not answer and those
/// whose deadline passed.
struct PipelineGuard<'a> {
    peer: &'a Peer,
    first: u32,
    count: usize,
    /// The calls before this one have an outcome and their entries are gone.
    taken: usize,
    extended: bool,
    /// Calls taken as expired: the other end may still be working on them.
    expired: Vec<u32>,
}

impl PipelineGuard<'_> {
    /// The pipeline never left: its entries go, with nothing to cancel.
    fn unsent(&mut self) {
        self.peer.inner.unsent_many(self.first, self.count);
        self.taken = self.count;
    }
}

impl Drop for PipelineGuard<'_> {
    fn drop(&mut self) {
        let inner = &self.peer.inner;
        let mut stop = std::mem::take(&mut self.expired);
        stop.extend(
            pipeline_ids(self.first, self.count)
                .skip(self.taken)
                .filter(|&id| inner.abandon(id)),
        );
        if stop.is_empty() {
            return;
        }
        if self.extended {
            let _ = self.peer.notify(builtin::CANCEL, &stop);
        }
        // Only now may a drain close the connection: the cancellation goes out first.
        inner.close_if_drained(&inner.calls.lock().unwrap());
    }
}

/// Removes an abandoned call and, between shoal peers, tells the other end to stop.
struct CallGuard<'a> {
    peer: &'a Peer,
    id: u32,
    extended: bool,
    done: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let inner = &self.peer.inner;
        let unanswered = inner.abandon(self.id);
        if unanswered && self.extended {
            let _ = self.peer.notify(builtin::CANCEL, &[self.id]);
        }
        // Only now may a drain close the connection: the cancellation goes out first.
        if unanswered {
            inner.close_if_drained(&inner.calls.lock().unwrap());
        }
    }
}

/// Starts serving a connection over `reader` and `writer`. Calls from the peer go to
/// `handler`; the returned [`Peer`] calls the other way. The connection's tasks are spawned on
/// `tracker` and end when the peer closes or on a fatal error. When `shutdown` fires, a shoal
/// peer is sent `shoal.goaway` if [`ConnConfig::goaway`] is set and served until it closes
/// (see the module documentation); otherwise reading stops, in-flight calls finish and their
/// replies are flushed before closing.
pub fn spawn<R, W>(
    reader: R,
    writer: W,
    addr: impl Into<Arc<str>>,
    handler: impl Into<Handler>,
    config: ConnConfig,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Peer
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let peer = Peer {
        inner: Arc::new(PeerInner {
            addr: addr.into(),
            out: Outbox::new(Box::new(writer)),
            calls: Mutex::new(Calls::default()),
            outstanding: AtomicUsize::new(0),
            sweep: Notify::new(),
            next_id: AtomicU32::new(0),
            extended: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            closed: CancellationToken::new(),
            is_closed: AtomicBool::new(false),
            max_message: config.max_message,
        }),
    };
    // Cancelled when the peer is gone, whichever task sees it first: the calls it made and
    // that are still running have no one left to answer.
    let abort = CancellationToken::new();
    tracker.spawn(write_loop(
        peer.clone(),
        config.coalesce_writes,
        config.stall_timeout,
        abort.clone(),
    ));
    tracker.spawn(sweep_deadlines(peer.inner.clone()));
    let reading = Reader {
        peer: peer.clone(),
        handler: handler.into(),
        decoder: Decoder::new(config.max_message).with_max_values(config.max_values),
        max_unsent: config.max_unsent,
        stall_timeout: config.stall_timeout,
        idle_timeout: config.idle_timeout,
        written_at_arm: 0,
        last_read: Instant::now(),
        abort,
        failed_notifications: Arc::new(Mutex::new(LogThrottle::new(LOG_INTERVAL))),
        in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
        running: Arc::new(Mutex::new(HashMap::new())),
        notifications: None,
        blocking: config.blocking,
        state: config.state,
        goaway: config.goaway,
        tasks: TaskTracker::new(),
        batch: BytesMut::new(),
        read_at: None,
        kept: Kept::default(),
    };
    tracker.spawn(reading.run(reader, shutdown));
    peer
}

struct Reader {
    peer: Peer,
    handler: Handler,
    decoder: Decoder,
    /// See [`ConnConfig::max_unsent`].
    max_unsent: usize,
    stall_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    /// Bytes written when the timer was last set (see [`Reader::is_idle`]).
    written_at_arm: u64,
    /// Cancelled when the peer is gone (seen by the reader or the writer): its calls still
    /// running have no one to answer.
    abort: CancellationToken,
    /// Notifications whose handler failed (unknown methods above all): a peer can send them
    /// as fast as it writes, so they are counted and logged at a bounded rate.
    failed_notifications: Arc<Mutex<LogThrottle>>,
    in_flight: Arc<Semaphore>,
    /// Spawned calls from a shoal peer, by msgid, so `shoal.cancel` can stop them.
    running: Arc<Mutex<HashMap<u32, CancellationToken>>>,
    /// Queue of notifications that could not finish at once; keeps them in arrival order.
    notifications: Option<mpsc::UnboundedSender<Pending>>,
    blocking: BlockingPool,
    state: Extensions,
    /// Send `shoal.goaway` on shutdown (see [`ConnConfig::goaway`]).
    goaway: bool,
    tasks: TaskTracker,
    /// Replies completed while reading one chunk, written together.
    batch: BytesMut,
    /// The clock as first read after the last read from the peer: the deadlines of the
    /// requests in one chunk count from it. Every byte of the chunk was sent before it, so a
    /// deadline counted from it never comes before the caller's own.
    read_at: Option<Instant>,
    /// When the last read that brought bytes was handled (`read_at` or a clock read of its
    /// own): a running idle limit counts from it (see [`Reader::after_read`]).
    last_read: Instant,
    /// Finished handler futures of calls read in place, for the next calls to reuse.
    kept: Kept,
}

type Pending = (BoxReply, OwnedSemaphorePermit);

/// Why a connection stopped reading.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Shutdown,
    /// Closed on purpose at this end ([`Peer::close`], or a drain that ended).
    Closed,
    /// The writer could not write: the peer is gone or stalled.
    WriteFailed,
    PeerClosed,
    ReadError,
    BadInput,
    Idle(Duration),
    Stalled(Duration),
}

/// What woke the reader.
enum Step {
    Read(std::io::Result<usize>),
    /// A slot is free for the message that waits for one.
    SlotFree,
}

/// Bytes read on, and held, while a message waits for a slot: a peer's end of stream or
/// reset is still seen, and what it sends past the in-flight limit stays bounded.
const PARKED_READ_CAP: usize = 64 * 1024;

/// Messages a reader handles for each unit of tokio's per-task budget (see [`Reader::drain`]):
/// a turn of the thread is then at most 1024 messages (128 units), and a message costs the
/// budget's bookkeeping an eighth of the time.
const MESSAGES_PER_BUDGET_UNIT: usize = 8;

/// The time limit the reader's timer stands for.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Idle(Duration),
    Stall(Duration),
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, mut reader: R, shutdown: CancellationToken) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let closed = self.peer.inner.closed.clone();
        let slots = self.in_flight.clone();
        // Made once: a fresh `cancelled()` per read would register and unregister a waiter
        // (under a lock) on every read. Polled again only once woken: a poll of one takes
        // two locks (the token's and its `Notify`'s), and the loop's `select!` polls `stop`
        // twice a turn.
        let stop = shutdown.cancelled();
        let gone = closed.cancelled();
        // One timer for the stall and idle limits, moved on as bytes arrive.
        let timer = tokio::time::sleep(Duration::MAX);
        tokio::pin!(stop, gone, timer);
        let mut stop = OnWake::new(stop);
        let mut gone = OnWake::new(gone);
        let mut timer = OnWake::new(timer);
        let mut limit = self.arm(&buf, timer.get_mut());
        // Set once `shoal.goaway` is sent: the shutdown arm is done with (a finished
        // `cancelled()` is ready on every poll and would spin the loop), and the connection
        // now ends when the peer closes it.
        let mut draining = false;
        // A call or notification read while every slot was taken: it waits for one here,
        // in the loop, so that the peer going away and shutdown are still seen meanwhile.
        let mut parked: Option<Message> = None;
        let why = loop {
            if buf.is_empty() && buf.capacity() > 1024 * 1024 {
                // Do not keep a large message's buffer for the life of the connection.
                buf = BytesMut::with_capacity(16 * 1024);
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
            // The flag is set with the token: seen here at once, where `gone` is polled only
            // when a read finds nothing, to wake a reader waiting on one.
            if self.peer.is_closed() {
                break self.closed_why();
            }
            // Shutdown comes first, read or not: a peer that keeps the socket full must not
            // keep this end from sending it `shoal.goaway`. The timer and the slots are for
            // a peer that sends nothing, so they too wait for a read that finds nothing.
            let step = tokio::select! {
                biased;
                _ = &mut stop, if !draining => {
                    if self.send_goaway() {
                        draining = true;
                        continue;
                    }
                    break Stop::Shutdown;
                }
                n = reader.read_buf(&mut buf), if parked.is_none() || buf.len() < PARKED_READ_CAP => {
                    Step::Read(n)
                }
                _ = &mut gone => break self.closed_why(),
                _ = &mut timer, if limit.is_some() => {
                    match limit {
                        Some(Limit::Idle(after)) if self.last_read + after > Instant::now() => {
                            // Bytes came since the timer was set: the limit counts from
                            // the last read that brought some.
                            self.arm_at(self.last_read + after, timer.get_mut());
                            continue;
                        }
                        Some(Limit::Idle(_)) if !self.is_idle() => {
                            // Busy with calls either way: idle time starts over.
                            limit = self.arm(&buf, timer.get_mut());
                            continue;
                        }
                        Some(Limit::Idle(after)) if !draining && self.send_goaway() => {
                            info!(peer = %self.peer.addr(), ?after, "idle connection: sent goaway");
                            draining = true;
                            limit = self.arm(&buf, timer.get_mut());
                            continue;
                        }
                        Some(Limit::Idle(after)) => break Stop::Idle(after),
                        Some(Limit::Stall(after)) => break Stop::Stalled(after),
                        None => continue,
                    }
                }
                // While a message waits for a slot, reading goes on only up to a small cap
                // (the read's condition): enough to see the end of stream or a reset, not
                // enough to let a peer past the in-flight limit queue work in memory.
                _ = slots.acquire(), if parked.is_some() => Step::SlotFree,
            };
            match step {
                Step::Read(Ok(0)) => break Stop::PeerClosed,
                Step::Read(Err(e)) => {
                    debug!(peer = %self.peer.addr(), error = %e, "read failed");
                    break Stop::ReadError;
                }
                Step::Read(Ok(_)) => {
                    self.read_at = None;
                    // Held until a slot frees, behind the message that waits for it.
                    if parked.is_some() {
                        continue;
                    }
                }
                Step::SlotFree => {
                    if let Some(msg) = parked.take() {
                        let more_input = !buf.is_empty();
                        self.handle(msg, more_input);
                    }
                }
            }
            match self.drain(&mut buf).await {
                Ok(waiting) => parked = waiting,
                Err(e) => {
                    warn!(peer = %self.peer.addr(), error = %e, "closing connection");
                    break Stop::BadInput;
                }
            }
            self.flush();
            // Waiting for a slot is this end's doing, not the peer's: neither limit runs.
            limit = match parked {
                Some(_) => None,
                None => self.after_read(&buf, limit, &mut timer),
            };
        };
        self.flush();
        match why {
            Stop::Idle(after) => info!(
                peer = %self.peer.addr(),
                ?after,
                "closing connection: idle past the limit"
            ),
            Stop::Stalled(after) => warn!(
                peer = %self.peer.addr(),
                ?after,
                "closing connection: part of a message came, then nothing within the limit"
            ),
            _ => debug!(peer = %self.peer.addr(), reason = ?why, "connection reader stopped"),
        }
        if matches!(
            why,
            Stop::PeerClosed
                | Stop::ReadError
                | Stop::WriteFailed
                | Stop::Idle(_)
                | Stop::Stalled(_)
        ) {
            // Nobody will read the replies: stop the handlers now rather than hold the
            // connection (and its descriptor) until they end.
            self.abort.cancel();
        }
        // Calls we made can no longer be answered: refuse new ones, then fail the waiting.
        self.peer.inner.mark_closed();
        self.peer.inner.fail_calls();
        // Let calls from the peer finish and their replies go out, then close.
        drop(self.notifications.take());
        self.tasks.close();
        self.tasks.wait().await;
        self.peer.inner.out.close();
    }

    /// Why the reader stops once the connection is closed from this end: a failed write
    /// aborts it, anything else closes it.
    fn closed_why(&self) -> Stop {
        if self.abort.is_cancelled() {
            Stop::WriteFailed
        } else {
            Stop::Closed
        }
    }

    /// Sets `timer` for the limit that applies to what is read so far: a message begun and
    /// not finished may stall only so long; otherwise the connection may idle only so long.
    fn arm(&mut self, buf: &BytesMut, timer: Pin<&mut tokio::time::Sleep>) -> Option<Limit> {
        let limit = if buf.is_empty() {
            self.idle_timeout.map(Limit::Idle)
        } else {
            self.stall_timeout.map(Limit::Stall)
        };
        if let Some(Limit::Idle(after) | Limit::Stall(after)) = limit {
            self.arm_at(Instant::now() + after, timer);
        }
        limit
    }

    /// The limit once a read's bytes are handled, `running` the one set before. A stall
    /// limit starts over with every read; a running idle limit is left as it is, with the
    /// read's time noted for it to move on to when it fires (moving the timer on every read
    /// cost more than the rest of a read's bookkeeping). The time is `read_at`'s when a
    /// request read it already.
    fn after_read(
        &mut self,
        buf: &BytesMut,
        running: Option<Limit>,
        timer: &mut OnWake<'_, tokio::time::Sleep>,
    ) -> Option<Limit> {
        self.last_read = *self.read_at.get_or_insert_with(Instant::now);
        match running {
            Some(Limit::Idle(_)) if buf.is_empty() => running,
            _ => self.arm(buf, timer.get_mut()),
        }
    }

    fn arm_at(&mut self, deadline: Instant, timer: Pin<&mut tokio::time::Sleep>) {
        self.written_at_arm = self.peer.inner.out.written.load(Ordering::Relaxed);
        timer.reset(deadline);
    }

    /// Nothing in progress either way since the timer was set: nothing written, no call of
    /// the peer's running, none of ours waiting, nothing queued for it.
    fn is_idle(&self) -> bool {
        self.peer.inner.out.written.load(Ordering::Relaxed) == self.written_at_arm
            && self.tasks.is_empty()
            && self.peer.pending() == 0
            && self.peer.unsent() == 0
    }

    /// Tells a shoal peer that this end is shutting down; false when the peer is plain (or
    /// the connection already closing) and the connection should close now.
    fn send_goaway(&self) -> bool {
        if !self.goaway || !self.peer.is_extended() {
            return false;
        }
        match self.peer.notify(builtin::GOAWAY, &[(); 0]) {
            Ok(()) => {
                debug!(peer = %self.peer.addr(), "sent goaway; serving until the peer closes");
                true
            }
            Err(_) => false,
        }
    }

    /// Handles every complete message in `buf`, waiting before a request or notification
    /// whenever the bytes queued for the peer pass [`ConnConfig::max_unsent`], and giving
    /// the other connections their turn every few messages (a peer that floods cheap
    /// messages gets no more than its share of the thread). Returns early, leaving the rest
    /// unread, once the connection closes, or with the message that needs a slot when every
    /// slot is taken ([`Reader::run`] waits for one).
    async fn drain(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        // Messages left before the next unit of budget is spent.
        let mut unspent = 0;
        loop {
            if self.peer.is_closed() {
                return Ok(None);
            }
            // Every few messages cost one unit of tokio's per-task budget; once spent, the
            // task yields. Without it one read of a few MiB of notifications is handled in
            // one go while every other connection on the thread waits.
            if unspent == 0 {
                tokio::task::consume_budget().await;
                unspent = MESSAGES_PER_BUDGET_UNIT;
            }
            unspent -= self.take_in_place(buf, unspent);
            // Short of its budget, the run stopped at a message read otherwise (or the end
            // of what is read, or a closed connection).
            if unspent == 0 || self.peer.is_closed() {
                continue;
            }
            unspent -= 1;
            match self.decoder.decode(buf) {
                // Answers to our own calls are always taken: they queue nothing, and a peer
                // waiting for room on its side must not wait on us in turn.
                Ok(Some(msg @ Message::Response { .. })) => self.handle(msg, false),
                Ok(Some(msg)) => {
                    // Bytes left after this message: at least part of another one is read.
                    let more_input = !buf.is_empty();
                    self.wait_for_room().await;
                    if self.peer.is_closed() {
                        return Ok(None);
                    }
                    if needs_slot(&msg) && self.in_flight.available_permits() == 0 {
                        return Ok(Some(msg));
                    }
                    self.handle(msg, more_input)
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    let answer = match &e {
                        DecodeError::FrameTooLarge {
                            size,
                            max,
                            id: Some(id),
                        } => Some((id, RpcError::frame_too_large(*size, *max))),
                        DecodeError::TooManyValues { max, id: Some(id) } => {
                            Some((id, RpcError::too_many_values(*max)))
                        }
                        _ => None,
                    };
                    if let Some((id, error)) = answer {
                        codec::encode_response_err(&mut self.batch, id, &error);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Waits, reading nothing more, while the bytes queued for the peer are past the bound:
    /// a peer that sends calls and never reads the replies holds at most that much (plus the
    /// replies of the calls already running) instead of everything it ever asked for.
    async fn wait_for_room(&mut self) {
        if self.has_room() {
            return;
        }
        self.flush();
        let out = &self.peer.inner.out;
        debug!(peer = %self.peer.addr(), unsent = out.unsent(), "peer is not reading its replies; reading stops");
        loop {
            let room = out.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if out.unsent() <= self.max_unsent || self.peer.is_closed() {
                return;
            }
            room.await;
        }
    }

    fn has_room(&self) -> bool {
        self.batch.len() + self.peer.inner.out.unsent() <= self.max_unsent
    }

    /// Takes up to `max` messages at the front of `buf` that are read in place (answers to
    /// our calls, and calls [`Reader::serve_in_place`] takes), stopping at the first that is
    /// not or once the connection closes; `buf` then moves past them all at once. Returns
    /// how many it took.
    fn take_in_place(&mut self, buf: &mut BytesMut, max: usize) -> usize {
        let (mut taken, mut at) = (0, 0);
        while taken < max && !self.peer.is_closed() {
            let rest = &buf[at..];
            // A message's type is its second byte in the forms read in place.
            let len = match rest.get(1) {
                Some(&1) => self.answer_in_place(rest),
                _ => self.serve_in_place(rest),
            };
            let Some(len) = len else { break };
            (taken, at) = (taken + 1, at + len);
        }
        buf.advance(at);
        taken
    }

    /// Takes the answer to one of our calls at the front of `buf` as it is read in place
    /// ([`codec::read_answer`]), with no [`Message`] built, and returns its length; `None`
    /// leaves the message to [`Decoder::decode`].
    fn answer_in_place(&mut self, buf: &[u8]) -> Option<usize> {
        let (key, answer, len) = self.decoder.window(buf).and_then(codec::read_answer)?;
        self.peer.inner.answer(key, answer);
        Some(len)
    }

    /// Serves the request or notification at the front of `buf` from its bytes in place,
    /// when the handler is a bare router whose service takes it that way
    /// ([`Router::dispatch_in_place`]): no [`Message`] or [`Request`] is built for it.
    /// Returns the message's length; `None` leaves it to [`Decoder::decode`] and
    /// [`Reader::handle`], as is everything that needs more than that: a message not whole
    /// yet, a built-in method, a full set of slots, a peer not taking its replies.
    fn serve_in_place(&mut self, buf: &[u8]) -> Option<usize> {
        let Serve::Router(router) = &self.handler.0 else {
            return None;
        };
        if !router.takes_calls_in_place()
            || self.in_flight.available_permits() == 0
            || !self.has_room()
        {
            return None;
        }
        let (call, len) = self.decoder.window(buf).and_then(codec::read_call)?;
        let (method, route) = router.route(call.method)?;
        let deadline = deadline_of(&mut self.read_at, call.ext);
        let mut in_place = CallInPlace {
            method,
            route,
            params: call.params,
            deadline,
            // A notification waits for those before it that are still running.
            run_now: call.id.is_some() || self.notifications.is_none(),
            more_input: buf.len() > len,
            peer: &self.peer,
            blocking: &self.blocking,
            state: &self.state,
            kept: &self.kept,
            id: call.id.as_ref(),
            replies: &mut self.batch,
            max_reply: self.peer.inner.max_message,
            failed_notifications: &self.failed_notifications,
        };
        let started = router.dispatch_in_place(&mut in_place)?;
        let id = call.id;
        // A handler that is running was polled once already, where it was made.
        match (started, id) {
            (InPlace::Answered(_), _) => {}
            (InPlace::Running(fut), Some(id)) => self.run_call(id, fut, deadline),
            (InPlace::Running(fut), None) => {
                let permit = self.take_slot();
                self.queue_notification(fut, permit);
            }
        }
        Some(len)
    }

    /// Acts on one message. A request or notification that takes a slot comes here only
    /// when one is free ([`needs_slot`]). `more_input`: more of the peer's bytes are read
    /// behind it (see [`Context::more_input`]).
    fn handle(&mut self, msg: Message, more_input: bool) {
        match msg {
            Message::Response { id, error, result } => {
                let Some(key) = codec::response_key(&id) else {
                    debug!(peer = %self.peer.addr(), %id, "reply with an id we never sent");
                    return;
                };
                let answer = if error.is_nil() {
                    Ok(result)
                } else {
                    Err(error)
                };
                self.peer.inner.answer(key, answer);
            }
            Message::Request {
                id,
                method,
                params,
                ext,
            } => {
                if method == builtin::HELLO {
                    self.peer.inner.extended.store(true, Ordering::Relaxed);
                    codec::encode_response_ok(&mut self.batch, &id, &hello_answer().0);
                    return;
                }
                let deadline = deadline_of(&mut self.read_at, ext);
                let ctx = Context::with_pool(
                    deadline,
                    false,
                    Some(self.peer.clone()),
                    self.blocking.clone(),
                )
                .with_state(self.state.clone())
                .with_more_input(more_input);
                let fut = self.dispatch(Request {
                    method,
                    params,
                    ctx,
                });
                self.respond(id, fut, deadline);
            }
            Message::Invalid { id, why } => {
                codec::encode_response_err(&mut self.batch, &id, &RpcError::invalid_params(why));
            }
            Message::Notification { method, params } => {
                if method == builtin::CANCEL {
                    self.cancel(&params);
                    return;
                }
                if method == builtin::GOAWAY {
                    debug!(peer = %self.peer.addr(), "peer is going away; draining");
                    self.peer.inner.start_draining();
                    return;
                }
                let ctx =
                    Context::with_pool(None, true, Some(self.peer.clone()), self.blocking.clone())
                        .with_state(self.state.clone());
                let fut = self.dispatch(Request {
                    method,
                    params,
                    ctx,
                });
                self.notified(fut);
            }
        }
    }

    /// Runs a notification's handler: at once when it finishes on its first poll and none
    /// is queued before it, behind the queued ones otherwise (in arrival order).
    fn notified(&mut self, mut fut: BoxReply) {
        if self.notifications.is_none() {
            if let Poll::Ready(result) = poll_once(fut.as_mut()) {
                log_notification(&self.peer, &self.failed_notifications, result);
                return;
            }
        }
        let permit = self.take_slot();
        self.queue_notification(fut, permit);
    }

    /// Takes the slot [`Reader::drain`] or [`Reader::run`] found free: only this task takes
    /// slots, so it is still there. Only calls that outlive their first poll take one; a
    /// call answered at once never held one.
    fn take_slot(&self) -> OwnedSemaphorePermit {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .expect("a slot was free and only the reader takes slots")
    }

    /// Starts the handler. Dispatch services are always ready (see [`crate::middleware`]); one
    /// that is not is answered as overloaded rather than waited on.
    fn dispatch(&mut self, req: Request) -> BoxReply {
        let mut cx = std::task::Context::from_waker(noop_waker_ref());
        match self.handler.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => self.handler.call(req),
            Poll::Ready(Err(e)) => Box::pin(std::future::ready(Err(e))),
            Poll::Pending => Box::pin(std::future::ready(Err(RpcError::overloaded(
                "server is at its concurrency limit",
            )))),
        }
    }

    /// Answers at once when the handler finishes on its first poll; otherwise runs it as a task.
    /// The caller's deadline is enforced only for handlers that wait: one that finishes on
    /// its first poll costs no timer.
    fn respond(&mut self, id: Value, mut fut: BoxReply, deadline: Option<Instant>) {
        if let Poll::Ready(result) = poll_once(fut.as_mut()) {
            encode_reply(&mut self.batch, &id, result, self.peer.inner.max_message);
            return;
        }
        self.run_call(id, fut, deadline);
    }

    /// Runs a call's handler that did not finish on its first poll as a task, under the
    /// caller's deadline, until it answers or is cancelled.
    fn run_call(&mut self, id: Value, fut: BoxReply, deadline: Option<Instant>) {
        let permit = self.take_slot();
        let peer = self.peer.clone();
        let key = self
            .peer
            .is_extended()
            .then(|| codec::response_key(&id))
            .flatten();
        // Cancelled by `shoal.cancel` for this call, or with every other call when the peer
        // goes away.
        let cancel = self.abort.child_token();
        if let Some(key) = key {
            self.running.lock().unwrap().insert(key, cancel.clone());
        }
        let running = self.running.clone();
        self.tasks.spawn(async move {
            let run = async move {
                match deadline {
                    None => fut.await,
                    Some(d) => tokio::time::timeout_at(d, fut)
                        .await
                        .unwrap_or_else(|_| Err(RpcError::deadline_exceeded())),
                }
            };
            let result = tokio::select! {
                r = run => Some(r),
                _ = cancel.cancelled() => None,
            };
            if let Some(key) = key {
                running.lock().unwrap().remove(&key);
            }
            // A cancelled call has no one waiting for its reply.
            if let Some(result) = result {
                let max = peer.inner.max_message;
                let _ = peer.inner.out.push(usize::MAX, Leave::AtOnce, |buf| {
                    encode_reply(buf, &id, result, max);
                    Ok::<(), std::convert::Infallible>(())
                });
            }
            drop(permit);
        });
    }

    fn cancel(&mut self, params: &[Value]) {
        for id in params.iter().filter_map(codec::response_key) {
            if let Some(token) = self.running.lock().unwrap().remove(&id) {
                debug!(peer = %self.peer.addr(), id, "call cancelled by the caller");
                token.cancel();
            }
        }
    }

    fn queue_notification(&mut self, fut: BoxReply, permit: OwnedSemaphorePermit) {
        let tx = self.notifications.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
            let peer = self.peer.clone();
            let failed = self.failed_notifications.clone();
            let abort = self.abort.clone();
            self.tasks.spawn(async move {
                let run = async {
                    while let Some((fut, permit)) = rx.recv().await {
                        log_notification(&peer, &failed, fut.await);
                        drop(permit);
                    }
                };
                // A peer that went away leaves its queued notifications undone.
                tokio::select! {
                    _ = run => {}
                    _ = abort.cancelled() => {}
                }
            });
            tx
        });
        let _ = tx.send((fut, permit));
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let batch = &mut self.batch;
            let _ = self.peer.inner.out.push(usize::MAX, Leave::AtOnce, |buf| {
                buf.extend_from_slice(batch);
                Ok::<(), std::convert::Infallible>(())
            });
            self.batch.clear();
        }
    }
}

/// A message that may run past its first poll and so needs an in-flight slot: a request or
/// a notification, except those the connection answers itself.
fn needs_slot(msg: &Message) -> bool {
    match msg {
        Message::Request { method, .. } => method != builtin::HELLO,
        Message::Notification { method, .. } => {
            method != builtin::CANCEL && method != builtin::GOAWAY
        }
        Message::Response { .. } | Message::Invalid { .. } => false,
    }
}

/// When a call must be answered by: `ext`'s time left, counted from the first reading of the
/// clock after the last read from the peer (see [`Reader::read_at`]).
fn deadline_of(read_at: &mut Option<Instant>, ext: Option<RequestExt>) -> Option<Instant> {
    let ms = ext?.deadline_ms?;
    Some(*read_at.get_or_insert_with(Instant::now) + Duration::from_millis(ms))
}

/// Appends the reply to call `id`, never larger than `max`: a result too large becomes a
/// frame-too-large error, and so does an error too large (a peer can make one carry what it
/// sent, such as a method name of many MiB).
pub(crate) fn encode_reply(
    buf: &mut BytesMut,
    id: &Value,
    result: Result<Reply, RpcError>,
    max: usize,
) {
    let start = buf.len();
    match result {
        Ok(reply) if reply.0.len() + 16 > max => {
            warn!(
                size = reply.0.len(),
                max, "reply exceeds the maximum message size"
            );
            codec::encode_response_err(buf, id, &RpcError::frame_too_large(reply.0.len(), max));
        }
        Ok(reply) => codec::encode_response_ok(buf, id, &reply.0),
        Err(e) => {
            codec::encode_response_err(buf, id, &e);
            let size = buf.len() - start;
            if size > max {
                warn!(
                    size,
                    max,
                    code = e.code,
                    "error reply exceeds the maximum message size"
                );
                buf.truncate(start);
                let mut cut = RpcError::frame_too_large(size, max);
                cut.message = format!(
                    "error reply (code {}) of {size} bytes exceeds the limit of {max} bytes",
                    e.code
                );
                codec::encode_response_err(buf, id, &cut);
            }
        }
    }
}

/// Logs a failed notification, at most once per [`LOG_INTERVAL`] per connection with the
/// count of those not logged: nobody is told of a notification's failure, and a peer could
/// otherwise fill the log as fast as it writes.
pub(crate) fn log_notification(
    peer: &Peer,
    failed: &Mutex<LogThrottle>,
    result: Result<Reply, RpcError>,
) {
    let Err(e) = result else { return };
    let mut failed = failed.lock().unwrap();
    if let Some(unlogged) = failed.note(Instant::now()) {
        let total = failed.total();
        drop(failed);
        warn!(
            peer = %peer.addr(),
            error = %e,
            unlogged,
            total,
            "notification failed (one line per connection every 10 s at most)"
        );
    }
}

async fn write_loop(peer: Peer, coalesce: bool, stall: Option<Duration>, abort: CancellationToken) {
    let out = &peer.inner.out;
    let mut local = BytesMut::with_capacity(64 * 1024);
    loop {
        out.ready.notified().await;
        // Let the tasks that are ready to send queue their frames too, so they leave in one
        // write: on a busy connection many small sends become a few large ones. With at most
        // one call waiting there is nothing to gather, and the turn would only add latency.
        if coalesce && peer.pending() > 1 {
            tokio::task::yield_now().await;
        }
        let closing = {
            let mut state = out.state.lock().unwrap();
            std::mem::swap(&mut local, &mut state.buf);
            state.writing = !local.is_empty();
            state.closing
        };
        if !local.is_empty() {
            let result = write_taken(&local, out, stall).await;
            out.state.lock().unwrap().writing = false;
            if let Err(e) = result {
                debug!(peer = %peer.addr(), error = %e, "write failed");
                // The peer is gone or takes nothing: no reply can reach it any more. The
                // reader may not see it (waiting for room or a slot), so stop the peer's
                // calls from here rather than hold the connection until they end.
                abort.cancel();
                break;
            }
            local.clear();
            if local.capacity() > 4 * 1024 * 1024 {
                // Do not keep a huge buffer alive after one large message.
                local = BytesMut::with_capacity(64 * 1024);
            }
        }
        // A TLS stream may keep records back when the socket is full; a plain socket has
        // nothing to flush. Senders that wrote at once and could not flush wake this loop.
        if let Err(e) = flush_taken(out, stall).await {
            debug!(peer = %peer.addr(), error = %e, "flush failed");
            abort.cancel();
            break;
        }
        if closing {
            break;
        }
    }
    out.state.lock().unwrap().gone = true;
    out.unsent.store(0, Ordering::Relaxed);
    out.room.notify_one();
    let sink = out.sink.lock().unwrap().take();
    if let Some(mut sink) = sink {
        let _ = sink.shutdown().await;
    }
    peer.inner.mark_closed();
    peer.inner.fail_calls();
}

/// Fails the calls made on this connection whose deadline passed, sleeping until the
/// earliest deadline it knows of (see [`crate::calls`]); ends when the connection closes.
async fn sweep_deadlines(inner: Arc<PeerInner>) {
    let gone = inner.closed.cancelled();
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(gone, timer);
    let mut armed = false;
    loop {
        tokio::select! {
            biased;
            _ = &mut gone => break,
            _ = inner.sweep.notified() => {}
            _ = &mut timer, if armed => {}
        }
        match inner.expire_calls() {
            Some(at) => {
                timer.as_mut().reset(at);
                armed = true;
            }
            None => armed = false,
        }
    }
}

/// Flushes the connection's write half, failing after `stall` without progress.
async fn flush_taken(out: &Outbox, stall: Option<Duration>) -> std::io::Result<()> {
    within_stall(on_sink(out, |sink, cx| sink.poll_flush(cx)), stall).await
}

/// Polls the connection's write half with `op`, holding it for that poll only; once the
/// writer task has let go of it, the pipe is broken.
fn on_sink<'a, T>(
    out: &'a Outbox,
    mut op: impl FnMut(Pin<&mut Sink>, &mut std::task::Context<'_>) -> Poll<std::io::Result<T>> + 'a,
) -> impl Future<Output = std::io::Result<T>> + 'a {
    std::future::poll_fn(move |cx| match out.sink.lock().unwrap().as_mut() {
        Some(sink) => op(Pin::new(sink), cx),
        None => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
    })
}

/// Runs `io`, failing it after `stall` without an outcome. Most writes finish at once: only
/// one that waits costs a timer.
async fn within_stall<T>(
    io: impl Future<Output = std::io::Result<T>>,
    stall: Option<Duration>,
) -> std::io::Result<T> {
    tokio::pin!(io);
    match (poll_once(io.as_mut()), stall) {
        (Poll::Ready(result), _) => result,
        (Poll::Pending, None) => io.await,
        (Poll::Pending, Some(limit)) => tokio::time::timeout(limit, io).await.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the peer took no bytes for {limit:?}"),
            )
        })?,
    }
}

/// Writes `buf` whole to the connection's write half, counting each part the peer takes off
/// the unsent bytes (waking a reader that waits for room). A peer that takes nothing for
/// `stall` fails the write: a connection cannot be held open by never reading.
async fn write_taken(mut buf: &[u8], out: &Outbox, stall: Option<Duration>) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = within_stall(on_sink(out, |sink, cx| sink.poll_write(cx, buf)), stall).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        out.unsent.fetch_sub(n, Ordering::Relaxed);
        out.written.fetch_add(n as u64, Ordering::Relaxed);
        out.room.notify_one();
    }
    Ok(())
}
