//! The client: one multiplexed connection per endpoint, a deadline on every call, reconnection
//! with backoff, and balancing over several endpoints (see [`crate::balance`]).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::util::BoxCloneSyncService;

use crate::balance::{Admission, Balance, Health, Now, Pick, Picker};
use crate::conn::{self, ConnConfig, Handler, Peer};
use crate::endpoints::EndpointsFile;
use crate::error::Error;
use crate::service::{Dispatch, Router};
use crate::transport::{self, Addr, ClientTls};

/// Deadline of a call when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for a connection to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The key a call is routed by, for `hashring` and `shard` balancing. On the ring an `Int`
/// hashes as its decimal digits and a `Text` as its UTF-8 bytes, so `Int(42)` and
/// `Text("42")` meet the same server (see [`crate::balance::Ring`]); `shard` takes only `Int`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKey {
    Int(u64),
    Text(String),
}

impl From<u64> for RouteKey {
    fn from(v: u64) -> Self {
        RouteKey::Int(v)
    }
}

impl From<&str> for RouteKey {
    fn from(v: &str) -> Self {
        RouteKey::Text(v.to_owned())
    }
}

impl From<String> for RouteKey {
    fn from(v: String) -> Self {
        RouteKey::Text(v)
    }
}

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

/// One server a client may call, with its balancing weight and shard range.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub addr: Addr,
    pub weight: u32,
    /// Inclusive range of `key % shard_count` served here (shard balancing).
    pub shard: Option<(u64, u64)>,
    /// Where shard calls go when this endpoint is down.
    pub backup: Option<Addr>,
}

impl EndpointConfig {
    pub fn new(addr: Addr) -> Self {
        Self {
            addr,
            weight: 1,
            shard: None,
            backup: None,
        }
    }
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    endpoints: Vec<EndpointConfig>,
    balance: Balance,
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
    /// balancing. Reads the file synchronously: meant for startup.
    pub fn endpoints_file(self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let file = EndpointsFile::load(path)?;
        Ok(self.endpoints(file.endpoints).balance(file.balance))
    }

    /// Like [`endpoints_file`](Self::endpoints_file), balancing by `default` when the file
    /// does not say (see [`EndpointsFile::load_or`]).
    pub fn endpoints_file_or(
        self,
        path: impl AsRef<Path>,
        default: &Balance,
    ) -> Result<Self, Error> {
        let file = EndpointsFile::load_or(path, default)?;
        Ok(self.endpoints(file.endpoints).balance(file.balance))
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

    /// The client, connecting lazily on first use.
    pub fn build(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("a client needs at least one endpoint".into()));
        }
        let (picker, endpoints) = Picker::new(self.balance, self.endpoints)?;
        if let Some(key) = &self.pinned {
            picker.check_key(key)?;
        }
        let handler: Handler = match self.handler {
            Some(router) => BoxCloneSyncService::new(router),
            None => BoxCloneSyncService::new(Router::new(Vec::new())?),
        };
        let endpoints = endpoints.into_iter().map(Endpoint::new).collect();
        Ok(Client {
            inner: Arc::new(ClientInner {
                endpoints,
                picker,
                timeout: self.timeout,
                pinned: self.pinned,
                retries: self.retries,
                tls: self.tls,
                config: self.config,
                handler,
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The client, with a connection to every endpoint opened (or failed) now.
    pub async fn connect(self) -> Result<Client, Error> {
        let client = self.build()?;
        let mut last = None;
        for ep in &client.inner.endpoints {
            if let Err(e) = client.inner.peer(ep).await {
                ep.health.lock().unwrap().failed(Instant::now());
                last = Some(e);
            }
        }
        match last {
            Some(e) if client.inner.endpoints.len() == 1 => Err(e),
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
    endpoints: Vec<Endpoint>,
    picker: Picker,
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

/// One server and the state of our connection to it.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) config: EndpointConfig,
    peer: Mutex<Option<Peer>>,
    connecting: tokio::sync::Mutex<()>,
    pub(crate) health: Mutex<Health>,
    /// Calls in progress, for least-pending balancing.
    pub(crate) in_flight: AtomicUsize,
}

impl Endpoint {
    pub(crate) fn new(config: EndpointConfig) -> Self {
        Self {
            config,
            peer: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            health: Mutex::new(Health::default()),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// The connection new calls may use: open, and not draining (a server going away still
    /// answers the calls made on it, but takes no new ones).
    fn open_peer(&self) -> Option<Peer> {
        self.peer
            .lock()
            .unwrap()
            .as_ref()
            .filter(|p| !p.is_closed() && !p.is_draining())
            .cloned()
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
            Err(value) => {
                rmpv::ext::from_value(value).map_err(|e| Error::Decode(format!("{method}: {e}")))
            }
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
        let inner = &self.inner;
        let timeout = opts.timeout.unwrap_or(inner.timeout);
        let start = Instant::now();
        let deadline = start + timeout;
        let key = opts.key.as_ref().or(inner.pinned.as_ref());
        let mut tried = Vec::new();
        let mut last = None;
        loop {
            let now = if tried.is_empty() {
                Now::at(start)
            } else {
                Now::default()
            };
            let Some(pick) = inner.pick(key, &tried, &now)? else {
                return Err(last.unwrap_or_else(|| inner.unavailable()));
            };
            tried.push(pick.index);
            let ep = &inner.endpoints[pick.index];
            let mut attempt = Attempt::new(ep, pick);
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
                            tokio::time::timeout_at(deadline, Box::pin(inner.peer(ep)))
                                .await
                                .map_err(|_| Error::DeadlineExceeded(timeout))??
                        }
                    };
                    // The first attempt on an open connection needs no second clock read.
                    let left = if tried.len() == 1 && already_open && !replaced {
                        timeout
                    } else {
                        deadline.saturating_duration_since(Instant::now())
                    };
                    if left.is_zero() {
                        return Err(Error::DeadlineExceeded(timeout));
                    }
                    ep.in_flight.fetch_add(1, Ordering::Relaxed);
                    let _done = InFlight(&ep.in_flight);
                    match peer.call_until(method, params, deadline, left).await {
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
                    attempt.up();
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
            if e.never_sent() || closed {
                attempt.down();
            }
            let retry = e.never_sent() || (opts.idempotent && closed);
            if !retry || tried.len() > inner.retries {
                return Err(e);
            }
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
        let mut tried = Vec::new();
        let mut last = None;
        loop {
            let Some(pick) = inner.pick(key, &tried, &Now::default())? else {
                return Err(last.unwrap_or_else(|| inner.unavailable()));
            };
            tried.push(pick.index);
            let ep = &inner.endpoints[pick.index];
            let mut attempt = Attempt::new(ep, pick);
            let result = match inner.peer(ep).await {
                Ok(peer) => match peer.notify(method, params) {
                    // Closed between the pick and the send (see `call_value`): one new
                    // connection before the endpoint counts as down.
                    Err(e) if e.never_sent() => inner
                        .peer(ep)
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
                    attempt.down();
                    if tried.len() > inner.retries {
                        return Err(e);
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The connection to the first endpoint, opened if needed: for calling with a raw
    /// [`Peer`] (e.g. to see whether the server speaks shoal's extensions).
    pub async fn peer(&self) -> Result<Peer, Error> {
        self.inner.peer(&self.inner.endpoints[0]).await
    }

    /// Addresses of the endpoints, in configuration order, then shard backups that were not
    /// listed as endpoints.
    pub fn endpoints(&self) -> Vec<Addr> {
        self.inner
            .endpoints
            .iter()
            .map(|e| e.config.addr.clone())
            .collect()
    }

    /// How each endpoint is doing, in the order of [`Client::endpoints`].
    pub fn endpoint_status(&self) -> Vec<EndpointStatus> {
        self.inner
            .endpoints
            .iter()
            .map(|ep| {
                let health = ep.health.lock().unwrap();
                EndpointStatus {
                    addr: ep.config.addr.clone(),
                    connected: ep.open_peer().is_some(),
                    ejected: health.retry_at().is_some(),
                    failures: health.failures(),
                    in_flight: ep.in_flight.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// The state of one endpoint of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    pub addr: Addr,
    /// A connection is open.
    pub connected: bool,
    /// Taken out of service after a failure, until a probe call succeeds.
    pub ejected: bool,
    /// Consecutive failures; 0 when in service.
    pub failures: u32,
    /// Calls waiting for an answer.
    pub in_flight: usize,
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
        self.ep.health.lock().unwrap().ok();
        self.decided = true;
    }

    fn down(&mut self) {
        self.ep.health.lock().unwrap().failed(Instant::now());
        self.decided = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.decided && self.admission == Admission::Probe {
            self.ep.health.lock().unwrap().release_probe();
        }
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClientInner {
    /// `now` is the caller's last clock reading: health checks need no fresher one.
    fn pick(
        &self,
        key: Option<&RouteKey>,
        tried: &[usize],
        now: &Now,
    ) -> Result<Option<Pick>, Error> {
        self.picker.pick(&self.endpoints, key, tried, now)
    }

    fn unavailable(&self) -> Error {
        let addrs: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.config.addr.to_string())
            .collect();
        Error::Unavailable(format!(
            "all endpoints failed or are backing off: {}",
            addrs.join(", ")
        ))
    }

    /// The open connection to `ep`, or a new one.
    async fn peer(&self, ep: &Endpoint) -> Result<Peer, Error> {
        if let Some(peer) = ep.open_peer() {
            return Ok(peer);
        }
        let _one_at_a_time = ep.connecting.lock().await;
        if let Some(peer) = ep.open_peer() {
            return Ok(peer);
        }
        let addr = &ep.config.addr;
        let not_sent = |reason: String| Error::NotSent {
            addr: addr.to_string(),
            reason,
        };
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
        peer.negotiate(CONNECT_TIMEOUT.min(self.timeout)).await;
        *ep.peer.lock().unwrap() = Some(peer.clone());
        Ok(peer)
    }
}
