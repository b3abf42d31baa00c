//! The server: typed services behind a router, wrapped in middleware, served on listeners
//! until a shutdown future completes; then it stops accepting, drains its connections
//! (shoal peers through `shoal.goaway`, see [`crate::conn`]) and returns.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Layer, Service};
use tracing::{debug, info};

use crate::accept::AcceptFailures;
use crate::blocking::{BlockingPool, DEFAULT_BLOCKING_THREADS};
use crate::conn::{self, ConnConfig, Handler, Peer};
use crate::error::{Error, RpcError};
use crate::extensions::Extensions;
use crate::service::{Dispatch, Reply, Request, Router};
use crate::transport::{Listener, ReadHalf, WriteHalf};

type Wrap = Box<dyn FnOnce(Handler) -> Handler + Send>;

/// Longest a new connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit on connections open at once on one listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time a connection may sit idle (see [`ServerBuilder::idle_timeout`]).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Collects services, middleware and limits; [`ServerBuilder::build`] checks them.
pub struct ServerBuilder {
    services: Vec<Arc<dyn Dispatch>>,
    wraps: Vec<Wrap>,
    config: ConnConfig,
    blocking_threads: usize,
    max_connections: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field(
                "services",
                &self
                    .services
                    .iter()
                    .map(|s| s.service_name())
                    .collect::<Vec<_>>(),
            )
            .field("layers", &self.wraps.len())
            .field("config", &self.config)
            .finish()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            services: Vec::new(),
            wraps: Vec::new(),
            config: ConnConfig {
                idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
                ..ConnConfig::default()
            },
            blocking_threads: DEFAULT_BLOCKING_THREADS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
        }
    }
}

impl ServerBuilder {
    /// Serves a typed service (`<Trait>Server::new(impl)`).
    pub fn service(mut self, svc: impl Dispatch) -> Self {
        self.services.push(Arc::new(svc));
        self
    }

    /// Wraps every call in a tower layer; the first layer added is the outermost.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Handler> + Send + 'static,
        L::Service:
            Service<Request, Response = Reply, Error = RpcError> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.wraps
            .push(Box::new(move |inner| Handler::new(layer.layer(inner))));
        self
    }

    /// Largest message read or written (default 16 MiB).
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.config.max_message = bytes;
        self
    }

    /// Calls one connection may have in progress before the server stops reading from it.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.config.max_in_flight = calls;
        self
    }

    /// Bytes of replies a connection may queue for a peer that has not taken them; past it
    /// the server stops reading from that peer until it does (default 4 MiB).
    pub fn max_unsent(mut self, bytes: usize) -> Self {
        self.config.max_unsent = bytes;
        self
    }

    /// Values one incoming message may hold, counting every scalar, string, array and map
    /// key and value (default 1,048,576); past it the message is refused with an error naming
    /// the limit and the connection closes.
    pub fn max_values(mut self, values: usize) -> Self {
        self.config.max_values = values;
        self
    }

    /// Closes a connection that sent part of a message and then nothing for `limit`, or that
    /// took none of the bytes queued for it for `limit` (default 30 s); `None` for no limit.
    pub fn stall_timeout(mut self, limit: Option<Duration>) -> Self {
        self.config.stall_timeout = limit;
        self
    }

    /// Closes a connection with nothing read or written for `limit` and no call in progress
    /// (default 10 minutes); a shoal peer is sent `shoal.goaway` and closes it itself, without
    /// failing a call. `None` for no limit.
    pub fn idle_timeout(mut self, limit: Option<Duration>) -> Self {
        self.config.idle_timeout = limit;
        self
    }

    /// Connections one listener keeps open at once (default 4096); past it new ones are
    /// accepted and closed at once, with a warning logged at a bounded rate.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// Blocking handlers that may run at once.
    pub fn blocking_threads(mut self, threads: usize) -> Self {
        self.blocking_threads = threads;
        self
    }

    /// Shares `value` with every call: handlers read it with
    /// [`Context::state`](crate::Context::state)`::<T>()`. One value per type; a second
    /// value of the same type replaces the first.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.config.state.insert(value);
        self
    }

    /// Like [`ServerBuilder::state`], for a value the caller also keeps a handle on.
    pub fn state_arc<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.config.state.insert_arc(value);
        self
    }

    /// Like [`ServerBuilder::state`], for a value whose type is known only at run time (a
    /// runtime passing on state it collected by type); handlers find it as the type inside.
    pub fn state_any(mut self, value: Arc<dyn Any + Send + Sync>) -> Self {
        self.config.state.insert_any(value);
        self
    }

    /// Serves TLS on every listener.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    pub fn build(self) -> Result<Server, Error> {
        let router = Router::new(self.services)?;
        let mut handler = Handler::from(router.clone());
        // Apply inside-out so the first layer added ends up outermost.
        for wrap in self.wraps.into_iter().rev() {
            handler = wrap(handler);
        }
        let mut config = self.config;
        config.blocking = BlockingPool::new(self.blocking_threads);
        // Replies leave batched per read already.
        config.coalesce_writes = false;
        config.goaway = true;
        Ok(Server {
            router,
            handler,
            config,
            max_connections: self.max_connections.max(1),
            tls: self.tls.map(tokio_rustls::TlsAcceptor::from),
            tracker: TaskTracker::new(),
        })
    }
}

/// A built server; serve it on one or more listeners.
#[derive(Clone)]
pub struct Server {
    router: Router,
    handler: Handler,
    config: ConnConfig,
    max_connections: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("router", &self.router)
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The routing table, for `shoal.methods` and introspection.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The values shared with every call ([`ServerBuilder::state`]).
    pub fn state(&self) -> &Extensions {
        &self.config.state
    }

    /// Accepts connections on `listener` until `shutdown` completes, then stops accepting,
    /// drops `listener` and drains every connection:
    ///
    /// - a shoal peer (one that said `shoal.hello`) is sent `shoal.goaway` and is served,
    ///   requests it already sent or sends now included, until it closes the connection; a
    ///   shoal client does so as soon as its calls there are answered, and makes new calls on
    ///   a new connection. When the listening socket lives on in a successor process (a dup
    ///   of it was handed over), those land on the successor and no call fails;
    /// - any other peer's connection stops reading at once; the calls already read finish,
    ///   their replies go out, and it closes.
    ///
    /// Past [`ServerBuilder::max_connections`] open on this listener, a new connection is
    /// closed as soon as it is accepted. When accepting fails (out of descriptors, say), the
    /// loop pauses, from 10 ms doubling up to 1 s while failures go on, so as not to spin,
    /// and logs once per 10 s with the count of failures in between.
    ///
    /// It returns once every connection has closed, which takes as long as handlers take and
    /// peers take to close: bound it with `tokio::time::timeout` for a grace period. A peer
    /// that never closes holds its connection (idle, not spinning) until then. Dropping the
    /// future closes the connections still open: replies already queued are flushed, those of
    /// handlers still running are dropped.
    pub async fn serve(
        &self,
        listener: Listener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let local = listener.local_addr();
        info!(addr = %local, "serving");
        let stop = CancellationToken::new();
        // Cancelled when this future is dropped (its grace period ran out): the connections
        // still open close then, rather than outlive it.
        let abandon = CancellationToken::new();
        let _abandon_on_drop = abandon.clone().drop_guard();
        let connections = TaskTracker::new();
        let open = Arc::new(Semaphore::new(self.max_connections));
        let mut failures = AcceptFailures::new(&local);
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    failures.accepted();
                    let Ok(slot) = open.clone().try_acquire_owned() else {
                        failures.refused(peer, self.max_connections);
                        drop(stream);
                        continue;
                    };
                    let server = self.clone();
                    let stop = stop.clone();
                    let abandon = abandon.clone();
                    let tracker = connections.clone();
                    connections.spawn(async move {
                        // A peer that never finishes its handshake must neither hold a task
                        // forever nor hold up shutdown.
                        let handshake = tokio::time::timeout(
                            HANDSHAKE_TIMEOUT,
                            stream.split(server.tls.as_ref()),
                        );
                        let split = tokio::select! {
                            r = handshake => r,
                            _ = stop.cancelled() => return,
                        };
                        match split {
                            Ok(Ok((r, w))) => {
                                let conn = server.connection(r, w, peer, stop, &tracker);
                                drop(server);
                                tokio::select! {
                                    _ = abandon.cancelled() => conn.close(),
                                    _ = conn.closed() => {}
                                }
                            }
                            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: retrying at once fails the same way.
                    // Pause, and keep serving the connections already open meanwhile.
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = failures.failed(&e) => {}
                    }
                }
            }
        }
        drop(listener);
        info!(addr = %local, "shutting down: draining in-flight calls");
        stop.cancel();
        connections.close();
        connections.wait().await;
        Ok(())
    }

    /// Serves one already-connected stream (an in-memory pipe in tests, or an accepted socket);
    /// returns the handle for calling the client back.
    pub fn serve_connection(
        &self,
        reader: ReadHalf,
        writer: WriteHalf,
        peer: impl Into<Arc<str>>,
        shutdown: CancellationToken,
    ) -> Peer {
        let tracker = self.tracker.clone();
        self.connection(reader, writer, peer, shutdown, &tracker)
    }

    fn connection(
        &self,
        reader: ReadHalf,
        writer: WriteHalf,
        peer: impl Into<Arc<str>>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Peer {
        conn::spawn(
            reader,
            writer,
            peer,
            self.handler.clone(),
            self.config.clone(),
            shutdown,
            tracker,
        )
    }
}
