//! The client: one multiplexed connection per endpoint, a deadline on every call, reconnection
//! with backoff, and balancing over several endpoints (see [`crate::balance`]), which may come
//! and go while it runs (see [`crate::discover`]).

mod pool;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use self::pool::{Endpoint, Picked, Pool};
use crate::balance::{Admission, Balance, Now, Pick};
use crate::conn::{self, ConnConfig, Handler, Peer};
use crate::discover::Discover;
use crate::endpoint::{EndpointConfig, EndpointStatus, RouteKey};
use crate::endpoints::EndpointSet;
use crate::error::Error;
use crate::pipeline::Pipeline;
use crate::service::{Dispatch, Router};
use crate::transport::{self, Addr, ClientTls};

/// Deadline of a call when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for a connection to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Per-call options; typed clients keep one and pass it on every call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Overrides the client's default deadline.
    pub timeout: Option<Duration>,
    /// Routes the call (hashring, shard); without it the client's pinned key or a spread is used.
    pub key: Option<RouteKey>,
    /// The method is safe to retry even when the request may have reached a server.
    pub idempotent: bool,
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    endpoints: Vec<EndpointConfig>,
    balance: Balance,
    discover: Option<Sets>,
    timeout: Duration,
    pinned: Option<RouteKey>,
    retries: usize,
    tls: Option<ClientTls>,
    config: ConnConfig,
    handler: Option<Router>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            balance: Balance::RoundRobin,
            discover: None,
            timeout: DEFAULT_TIMEOUT,
            pinned: None,
            retries: 2,
            tls: None,
            config: ConnConfig::default(),
            handler: None,
        }
    }
}

impl ClientBuilder {
    pub fn endpoint(mut self, addr: Addr) -> Self {
        self.endpoints.push(EndpointConfig::new(addr));
        self
    }

    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = EndpointConfig>) -> Self {
        self.endpoints.extend(endpoints);
        self
    }

    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Adds the endpoints of an endpoint file (see [`crate::endpoints`]) and takes its
    /// balancing. Reads the file synchronously, once: meant for startup (to follow the file
    /// as it changes, use [`discover`](Self::discover) with a [`crate::discover::FileWatch`]).
    pub fn endpoints_file(self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let file = EndpointSet::load(path)?;
        Ok(self.endpoints(file.endpoints).balance(file.balance))
    }

    /// Like [`endpoints_file`](Self::endpoints_file), balancing by `default` when the file
    /// does not say (see [`EndpointSet::load_or`]).
    pub fn endpoints_file_or(
        self,
        path: impl AsRef<Path>,
        default: &Balance,
    ) -> Result<Self, Error> {
        let file = EndpointSet::load_or(path, default)?;
        Ok(self.endpoints(file.endpoints).balance(file.balance))
    }

    /// Takes endpoints and balancing from `source`, following each set it gives while the
    /// client runs, instead of a fixed list: calls made before the first set wait for it (up
    /// to their deadline); on each new set the picker is rebuilt, servers that stay keep
    /// their connection and calls in flight, servers that leave are drained (calls already
    /// on them are answered, then the connection closes) and new ones are connected on first
    /// use. A set that cannot be balanced is logged and the last one stays. Each set
    /// carries its own balancing: [`balance`](Self::balance) does not apply.
    pub fn discover(mut self, source: &impl Discover) -> Self {
        self.discover = Some(Sets(Box::pin(source.watch())));
        self
    }

    /// Default deadline of each call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Routes every call without a key of its own by this one (pysvrkit pinned a client to
    /// one server this way). Without it, `hashring` uses a random key drawn at build time and
    /// `shard` fails calls that carry no key.
    pub fn pin_key(mut self, key: impl Into<RouteKey>) -> Self {
        self.pinned = Some(key.into());
        self
    }

    /// Further endpoints tried when a call could not be sent (or failed, for idempotent
    /// methods).
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn max_message(mut self, bytes: usize) -> Self {
        self.config.max_message = bytes;
        self
    }

    /// Serves requests the server sends back over the client's connections.
    pub fn serve(mut self, services: Vec<Arc<dyn Dispatch>>) -> Result<Self, Error> {
        self.handler = Some(Router::new(services)?);
        Ok(self)
    }

    /// The client, connecting lazily on first use. A client with [`discover`](Self::discover)
    /// must be built inside a tokio runtime: it follows its source on a task of its own.
    pub fn build(self) -> Result<Client, Error> {
        let pool = Arc::new(Pool::new(self.pinned.clone()));
        let sets = match self.discover {
            None if self.endpoints.is_empty() => {
                return Err(Error::Config("a client needs at least one endpoint".into()));
            }
            None => {
                pool.replace(EndpointSet {
                    balance: self.balance,
                    endpoints: self.endpoints,
                })?;
                None
            }
            Some(_) if !self.endpoints.is_empty() => {
                return Err(Error::Config(
                    "a client takes its endpoints from a list (endpoint, endpoints, \
                     endpoints_file) or from discover, not both; give it one of them"
                        .into(),
                ));
            }
            Some(Sets(sets)) => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(Error::Config(
                        "a client with discovery must be built inside a tokio runtime".into(),
                    ));
                }
                Some(sets)
            }
        };
        let handler: Handler = match self.handler {
            Some(router) => Handler::from(router),
            None => Handler::from(Router::new(Vec::new())?),
        };
        let inner = ClientInner {
            pool,
            timeout: self.timeout,
            pinned: self.pinned,
            retries: self.retries,
            tls: self.tls,
            config: self.config,
            handler,
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        };
        if let Some(sets) = sets {
            let follow = follow(inner.pool.clone(), sets, inner.shutdown.child_token());
            inner.tracker.spawn(follow);
        }
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// The client, with a connection to every endpoint opened (or failed) now. With
    /// discovery, first waits for the source's first set, failing if it reports an error
    /// instead or gives nothing within the client's timeout. All of it, the `shoal.hello`
    /// exchange included, takes at most the client's timeout.
    pub async fn connect(self) -> Result<Client, Error> {
        let client = self.build()?;
        let inner = &client.inner;
        let deadline = Instant::now() + inner.timeout;
        inner.pool.first_set(deadline, inner.timeout).await?;
        let endpoints = inner.pool.endpoints();
        let mut last = None;
        for ep in &endpoints {
            let opened = tokio::time::timeout_at(deadline, Box::pin(inner.peer(ep)))
                .await
                .unwrap_or(Err(Error::DeadlineExceeded(inner.timeout)));
            if let Err(e) = opened {
                ep.load.health.lock().failed(Instant::now());
                last = Some(e);
            }
        }
        match last {
            Some(e) if endpoints.len() == 1 => Err(e),
            _ => Ok(client),
        }
    }
}

/// A client over one or more endpoints. Cheap to clone; connections close when the last clone
/// is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    pool: Arc<Pool>,
    timeout: Duration,
    pinned: Option<RouteKey>,
    retries: usize,
    tls: Option<ClientTls>,
    config: ConnConfig,
    handler: Handler,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects to one server (`host:port` or `unix:PATH`).
    pub async fn connect(addr: &str) -> Result<Client, Error> {
        Client::builder().endpoint(addr.parse()?).connect().await
    }

    /// Calls `method` with positional `params` (a tuple, slice or `Vec`) and reads the result.
    pub async fn call<P, R>(&self, method: &str, params: &P) -> Result<R, Error>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned + 'static,
    {
        self.call_with(&CallOptions::default(), method, params)
            .await
    }

    pub async fn call_with<P, R>(
        &self,
        opts: &CallOptions,
        method: &str,
        params: &P,
    ) -> Result<R, Error>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned + 'static,
    {
        let value = self.call_value(opts, method, params).await?;
        match crate::service::as_is::<R>(value) {
            Ok(v) => Ok(v),
            Err(value) => crate::decode::from_value(value)
                .map_err(|e| Error::Decode(format!("{method}: {e}"))),
        }
    }

    /// Calls and returns the result as a dynamic value.
    ///
    /// The call moves to another endpoint (at most [`ClientBuilder::retries`] times) only
    /// when the request provably never left this client, or when `opts.idempotent` is set and
    /// the connection closed under it; never after its deadline has passed.
    pub async fn call_value<P>(
        &self,
        opts: &CallOptions,
        method: &str,
        params: &P,
    ) -> Result<Value, Error>
    where
        P: Serialize + ?Sized,
    {
        self.route(opts, |peer, deadline, left| async move {
            peer.call_until(method, params, deadline, left).await
        })
        .await
    }

    /// Sends `pipeline` to one endpoint in one write and waits for the answers to its calls
    /// (see [`Peer::call_pipeline`]): one result per call, in the order they were added, all
    /// within one deadline (`opts.timeout`, or the client's). As a redis pipeline is, it is
    /// meant for many small calls to one place: their answers come back together.
    ///
    /// The pipeline moves to another endpoint (at most [`ClientBuilder::retries`] times) only
    /// when it provably never left this client; calls the connection lost after it left fail
    /// each with [`Error::Closed`] and are not sent again, even when `opts.idempotent` is set.
    pub async fn call_pipeline(
        &self,
        opts: &CallOptions,
        pipeline: &Pipeline,
    ) -> Result<Vec<Result<Value, Error>>, Error> {
        let opts = CallOptions {
            idempotent: false,
            ..opts.clone()
        };
        self.route(&opts, |peer, deadline, left| async move {
            peer.call_pipeline(pipeline, deadline, left).await
        })
        .await
    }

    /// Picks an endpoint for `send` and runs it on that endpoint's connection, opened if
    /// needed.
    ///
    /// It moves to another endpoint (at most [`ClientBuilder::retries`] times) only when the
    /// request provably never left this client, or when `opts.idempotent` is set and the
    /// connection closed under it; never after its deadline has passed.
    async fn route<T, F>(
        &self,
        opts: &CallOptions,
        send: impl Fn(Peer, Instant, Duration) -> F,
    ) -> Result<T, Error>
    where
        T: Answers,
        F: Future<Output = Result<T, Error>>,
    {
        let inner = &self.inner;
        let timeout = opts.timeout.unwrap_or(inner.timeout);
        let start = Instant::now();
        let deadline = start + timeout;
        let key = opts.key.as_ref().or(inner.pinned.as_ref());
        // Endpoints tried and failed: the set may change between attempts, so they are named
        // by identity, not position.
        let mut tried: Vec<Endpoint> = Vec::new();
        let mut failures = 0;
        let mut waited = false;
        let mut last = None;
        loop {
            // The clock read at the start is still fresh: no attempt or wait came between.
            let first = tried.is_empty() && !waited;
            let now = if first {
                Now::at(start)
            } else {
                Now::default()
            };
            let (ep, pick) = match inner.pool.pick(key, &tried, &now)? {
                Picked::One(ep, pick) => (ep, pick),
                Picked::Exhausted => return Err(last.unwrap_or_else(|| inner.pool.unavailable())),
                Picked::NoSet => {
                    inner.pool.first_set(deadline, timeout).await?;
                    waited = true;
                    continue;
                }
            };
            let mut attempt = Attempt::new(&ep, pick);
            let sent = async {
                let mut replaced = false;
                loop {
                    let mut already_open = true;
                    let peer = match ep.open_peer() {
                        Some(peer) => peer,
                        // Connecting counts against the deadline: a host that does not answer
                        // must not hold a short call for the whole connect timeout. Only this
                        // slow path pays for a second timer, and it is boxed so the connect
                        // and TLS states do not make every call's future kilobytes larger.
                        None => {
                            already_open = false;
                            tokio::time::timeout_at(deadline, Box::pin(inner.peer(&ep)))
                                .await
                                .map_err(|_| Error::DeadlineExceeded(timeout))??
                        }
                    };
                    // The first attempt on an open connection needs no second clock read.
                    let left = if first && already_open && !replaced {
                        timeout
                    } else {
                        deadline.saturating_duration_since(Instant::now())
                    };
                    if left.is_zero() {
                        return Err(Error::DeadlineExceeded(timeout));
                    }
                    ep.load.in_flight.fetch_add(1, Ordering::Relaxed);
                    let _done = InFlight(&ep.load.in_flight);
                    match send(peer, deadline, left).await {
                        // The connection closed before the request left: a server draining
                        // it (`shoal.goaway`, while its successor takes the listening
                        // socket) or closing it during the hello. The endpoint may well be
                        // fine, so one new connection to it is tried before anything counts
                        // against it.
                        Err(Error::NotSent { .. }) if !replaced => replaced = true,
                        result => return result,
                    }
                }
            };
            let e = match sent.await {
                Ok(v) => {
                    if v.answered() {
                        attempt.up();
                    }
                    return Ok(v);
                }
                Err(e @ Error::Remote(_)) => {
                    // An error object is an answer: the server is there.
                    attempt.up();
                    return Err(e);
                }
                Err(Error::DeadlineExceeded(_)) => return Err(Error::DeadlineExceeded(timeout)),
                Err(e) => e,
            };
            let closed = matches!(e, Error::Closed { .. });
            // An endpoint its set dropped under the call says nothing of its health, and
            // the call goes on in the new set without counting it as a retry.
            if !ep.is_retired() {
                if e.never_sent() || closed {
                    attempt.down();
                }
                failures += 1;
            }
            let retry = e.never_sent() || (opts.idempotent && closed);
            if !retry || failures > inner.retries {
                return Err(e);
            }
            drop(attempt);
            tried.push(ep);
            last = Some(e);
        }
    }

    /// Sends a one-way notification.
    pub async fn notify<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<(), Error> {
        self.notify_with(&CallOptions::default(), method, params)
            .await
    }

    /// Sends a one-way notification, moving to another endpoint only when it could not be
    /// sent.
    pub async fn notify_with<P>(
        &self,
        opts: &CallOptions,
        method: &str,
        params: &P,
    ) -> Result<(), Error>
    where
        P: Serialize + ?Sized,
    {
        let inner = &self.inner;
        let key = opts.key.as_ref().or(inner.pinned.as_ref());
        // An endpoint in service whose connection is open takes it with no handle cloned.
        if let Some(sent) = inner
            .pool
            .send_open(key, |peer| peer.notify(method, params))
        {
            return sent;
        }
        let mut tried: Vec<Endpoint> = Vec::new();
        let mut failures = 0;
        let mut last = None;
        loop {
            let (ep, pick) = match inner.pool.pick(key, &tried, &Now::default())? {
                Picked::One(ep, pick) => (ep, pick),
                Picked::Exhausted => return Err(last.unwrap_or_else(|| inner.pool.unavailable())),
                Picked::NoSet => {
                    let timeout = opts.timeout.unwrap_or(inner.timeout);
                    inner
                        .pool
                        .first_set(Instant::now() + timeout, timeout)
                        .await?;
                    continue;
                }
            };
            let mut attempt = Attempt::new(&ep, pick);
            let result = match inner.peer(&ep).await {
                Ok(peer) => match peer.notify(method, params) {
                    // Closed between the pick and the send (see `call_value`): one new
                    // connection before the endpoint counts as down.
                    Err(e) if e.never_sent() => inner
                        .peer(&ep)
                        .await
                        .and_then(|peer| peer.notify(method, params)),
                    result => result,
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    // Queued on an open connection: the best sign of life a notification gets.
                    attempt.up();
                    return Ok(());
                }
                Err(e) if e.never_sent() => {
                    // As in `call_value`: a dropped endpoint counts neither down nor as a retry.
                    if !ep.is_retired() {
                        attempt.down();
                        failures += 1;
                    }
                    if failures > inner.retries {
                        return Err(e);
                    }
                    drop(attempt);
                    tried.push(ep);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The connection to the first endpoint, opened if needed: for calling with a raw
    /// [`Peer`] (e.g. to see whether the server speaks shoal's extensions). With discovery,
    /// waits for the first set (up to the client's timeout).
    pub async fn peer(&self) -> Result<Peer, Error> {
        let inner = &self.inner;
        inner
            .pool
            .first_set(Instant::now() + inner.timeout, inner.timeout)
            .await?;
        let first = inner.pool.endpoints().into_iter().next();
        let first = first.ok_or_else(|| inner.pool.unavailable())?;
        inner.peer(&first).await
    }

    /// Addresses of the endpoints of the current set, in its order, then shard backups that
    /// were not listed as endpoints; empty while discovery has given no set yet.
    pub fn endpoints(&self) -> Vec<Addr> {
        self.inner
            .pool
            .endpoints()
            .iter()
            .map(|e| e.addr.clone())
            .collect()
    }

    /// How each endpoint is doing, in the order of [`Client::endpoints`].
    pub fn endpoint_status(&self) -> Vec<EndpointStatus> {
        self.inner.pool.status()
    }
}

/// One attempt of a call on one endpoint. Records in the endpoint's health whether it
/// answered; an attempt dropped undecided (deadline passed, caller gone, local error) gives
/// its probe back so the next call can probe.
struct Attempt<'a> {
    ep: &'a Endpoint,
    admission: Admission,
    decided: bool,
}

impl<'a> Attempt<'a> {
    fn new(ep: &'a Endpoint, pick: Pick) -> Self {
        Self {
            ep,
            admission: pick.admission,
            decided: false,
        }
    }

    fn up(&mut self) {
        self.ep.load.health.ok();
        self.decided = true;
    }

    fn down(&mut self) {
        self.ep.load.health.lock().failed(Instant::now());
        self.decided = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.decided && self.admission == Admission::Probe {
            self.ep.load.health.lock().release_probe();
        }
    }
}

/// What a successful send says of the endpoint's health.
trait Answers {
    /// The other end answered: the endpoint is up.
    fn answered(&self) -> bool;
}

impl Answers for Value {
    fn answered(&self) -> bool {
        true
    }
}

/// A pipeline whose every call lost its connection before an answer heard nothing from the
/// endpoint; the send counts neither up nor down (the connection's close is seen by the
/// next call). One with no calls was queued on an open connection, as a notification is.
impl Answers for Vec<Result<Value, Error>> {
    fn answered(&self) -> bool {
        self.is_empty()
            || self
                .iter()
                .any(|r| matches!(r, Ok(_) | Err(Error::Remote(_))))
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClientInner {
    /// The open connection to `ep`, or a new one.
    async fn peer(&self, ep: &Endpoint) -> Result<Peer, Error> {
        if let Some(peer) = ep.open_peer() {
            return Ok(peer);
        }
        let addr = &ep.addr;
        let not_sent = |reason: String| Error::NotSent {
            addr: addr.to_string(),
            reason,
        };
        let retired = || not_sent("no longer in the client's endpoint set".into());
        if ep.is_retired() {
            return Err(retired());
        }
        let _one_at_a_time = ep.connecting.lock().await;
        if let Some(peer) = ep.open_peer() {
            return Ok(peer);
        }
        if ep.is_retired() {
            return Err(retired());
        }
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, transport::connect(addr, self.tls.as_ref()))
                .await
                .map_err(|_| not_sent(format!("connect timed out after {CONNECT_TIMEOUT:?}")))?
                .map_err(|e| match e {
                    // The address is already in the error; keep the cause and what to check.
                    Error::Io { context, source } if context.starts_with("connect to") => not_sent(
                        format!("cannot connect: {source}; is the server running there?"),
                    ),
                    other => not_sent(other.to_string()),
                })?;
        let (reader, writer) = connected;
        let peer = conn::spawn(
            reader,
            writer,
            addr.to_string(),
            self.handler.clone(),
            self.config.clone(),
            self.shutdown.child_token(),
            &self.tracker,
        );
        // A caller whose deadline passes during the hello drops this future: the connection
        // then closes rather than live on unused.
        let mut unkept = CloseOnDrop(Some(peer.clone()));
        peer.negotiate(CONNECT_TIMEOUT.min(self.timeout)).await;
        ep.keep(&peer);
        unkept.0 = None;
        Ok(peer)
    }
}

/// Closes a connection unless it was taken out.
struct CloseOnDrop(Option<Peer>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(peer) = self.0.take() {
            peer.close();
        }
    }
}

/// The stream of sets a [`Discover`] gave the builder.
struct Sets(BoxStream<'static, Result<EndpointSet, Error>>);

impl fmt::Debug for Sets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sets(..)")
    }
}

/// Takes each set `sets` gives into `pool` until the source ends or the client is dropped.
async fn follow(
    pool: Arc<Pool>,
    mut sets: BoxStream<'static, Result<EndpointSet, Error>>,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = sets.next() => next,
        };
        let Some(next) = next else {
            debug!("endpoint discovery ended; the client keeps its last set");
            return;
        };
        match next.and_then(|set| pool.replace(set)) {
            Ok(changed) if changed.added.is_empty() && changed.removed.is_empty() => {
                debug!("endpoint set replaced, same servers");
            }
            Ok(changed) => {
                info!(added = ?changed.added, removed = ?changed.removed, "endpoint set changed");
            }
            Err(error) => {
                warn!(%error, "endpoint set not taken; the client keeps its last one");
                pool.report(&error);
            }
        }
    }
}
