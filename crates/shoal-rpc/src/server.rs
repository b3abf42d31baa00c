//! The server: typed services behind a router, wrapped in middleware, served on listeners
//! until a shutdown future completes; then it stops accepting, lets in-flight calls finish and
//! closes.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};
use tracing::{debug, info, warn};

use crate::blocking::{BlockingPool, DEFAULT_BLOCKING_THREADS};
use crate::conn::{self, ConnConfig, Handler, Peer};
use crate::error::{Error, RpcError};
use crate::service::{Dispatch, Reply, Request, Router};
use crate::transport::{Listener, ReadHalf, WriteHalf};

type Wrap = Box<dyn FnOnce(Handler) -> Handler + Send>;

/// Longest a new connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Collects services, middleware and limits; [`ServerBuilder::build`] checks them.
pub struct ServerBuilder {
    services: Vec<Arc<dyn Dispatch>>,
    wraps: Vec<Wrap>,
    config: ConnConfig,
    blocking_threads: usize,
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
            config: ConnConfig::default(),
            blocking_threads: DEFAULT_BLOCKING_THREADS,
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
        self.wraps.push(Box::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner))
        }));
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

    /// Blocking handlers that may run at once.
    pub fn blocking_threads(mut self, threads: usize) -> Self {
        self.blocking_threads = threads;
        self
    }

    /// Serves TLS on every listener.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    pub fn build(self) -> Result<Server, Error> {
        let router = Router::new(self.services)?;
        let mut handler: Handler = BoxCloneSyncService::new(router.clone());
        // Apply inside-out so the first layer added ends up outermost.
        for wrap in self.wraps.into_iter().rev() {
            handler = wrap(handler);
        }
        let mut config = self.config;
        config.blocking = BlockingPool::new(self.blocking_threads);
        // Replies leave batched per read already.
        config.coalesce_writes = false;
        Ok(Server {
            router,
            handler,
            config,
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

    /// Accepts connections on `listener` until `shutdown` completes, then stops accepting,
    /// lets every in-flight call finish and its reply go out, and returns. It waits for
    /// handlers as long as they take: bound it with `tokio::time::timeout` for a grace period.
    pub async fn serve(
        &self,
        listener: Listener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let local = listener.local_addr();
        info!(addr = %local, "serving");
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let server = self.clone();
                    let stop = stop.clone();
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
                                server.connection(r, w, peer, stop, &tracker);
                            }
                            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    warn!(addr = %local, error = %e, "accept failed");
                    tokio::task::yield_now().await;
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
