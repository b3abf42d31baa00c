//! `shoal queue` as a server: a validated [`Config`], the MessagePack-RPC methods as thin
//! adapters over the [`Engine`], access control (open on loopback and Unix sockets; TLS and a
//! token everywhere else) and a graceful close.

use std::future::Future;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_api::queue::{self as api, codes, methods};
use shoal_rpc::transport::{server_tls, Addr, Listener};
use shoal_rpc::{Args, BoxReply, Dispatch, MethodInfo, Reply, Request, RpcError, Server, Value};
use tracing::{info, warn};

use crate::backend::{Backend, EngineKind};
use crate::engine::{Commit, Engine, EngineOptions, Error};

/// The longest a fetch may wait for messages.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// Largest request or reply frame: a batch of messages at the engine's `max_message` each.
const MAX_FRAME: usize = 64 << 20;

/// Where the queue keeps its data and how it is reached, as given.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file engine keeps its topics (unused by JetStream's).
    pub data_dir: PathBuf,
    /// The file engine (the default) or JetStream's.
    pub kind: EngineKind,
    /// `host:port` or `unix:PATH`.
    pub listen: Addr,
    /// Certificate chain and key (PEM) to serve TLS with.
    pub tls: Option<TlsFiles>,
    /// A file (mode 0600) holding the token every client must send.
    pub token_file: Option<PathBuf>,
    pub engine: EngineOptions,
    /// How long a close waits for calls in flight before dropping their connections.
    pub grace: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// A configuration with the engine's defaults.
    pub fn new(data_dir: impl Into<PathBuf>, listen: Addr) -> Config {
        Config {
            data_dir: data_dir.into(),
            kind: EngineKind::File,
            listen,
            tls: None,
            token_file: None,
            engine: EngineOptions::default(),
            grace: Duration::from_secs(10),
        }
    }
}

/// Why the queue cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "{addr} is not a loopback address or a Unix socket: give a TLS certificate and key and \
         a token file (mode 0600), or listen on 127.0.0.1 or unix:PATH"
    )]
    OpenOnNetwork { addr: Addr },
    #[error("token file {path}: {reason}")]
    Token { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    // Boxed: shoal-rpc's error is large, and this one travels through every `?` of startup.
    #[error("TLS: {0}")]
    Tls(#[source] Box<shoal_rpc::Error>),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: Addr,
        #[source]
        source: Box<shoal_rpc::Error>,
    },
    #[error("data directory {path}: {source}")]
    Engine {
        path: PathBuf,
        #[source]
        source: Error,
    },
    #[error("--nats {url}: this shoal was built without the `nats` feature (cargo build --features nats)")]
    NatsNotBuilt { url: String },
    #[error("serving: {0}")]
    Serve(#[source] Box<shoal_rpc::Error>),
}

/// Runs the queue until `shutdown` completes, then stops accepting, finishes the calls in
/// flight (up to the grace period) and syncs every topic.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    Queue::bind(config).await?.serve(shutdown).await
}

/// A queue bound to its address, not yet serving: tests read the ephemeral port here.
#[derive(Debug)]
pub struct Queue {
    engine: Arc<dyn Backend>,
    server: Server,
    listener: Listener,
    grace: Duration,
}

impl Queue {
    /// Checks access, opens the data directory, and binds.
    pub async fn bind(config: Config) -> Result<Queue, StartError> {
        let access = Access::check(&config)?;
        // Bad certificates fail here, before the data directory is opened or a port bound.
        let tls = access
            .tls
            .map(|(cert, key)| server_tls(&cert, &key))
            .transpose()
            .map_err(|e| StartError::Tls(Box::new(e)))?;
        let engine = open_engine(&config).await?;
        let mut builder = Server::builder()
            .max_message(MAX_FRAME)
            .service(QueueService {
                engine: engine.clone(),
                token: access.token.map(Arc::from),
            });
        if let Some(tls) = tls {
            builder = builder.tls(tls);
        }
        let server = builder
            .build()
            .map_err(|e| StartError::Serve(Box::new(e)))?;
        let listener =
            Listener::bind(&config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen.clone(),
                    source: Box::new(source),
                })?;
        Ok(Queue {
            engine,
            server,
            listener,
            grace: config.grace,
        })
    }

    pub fn local_addr(&self) -> Addr {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then closes gracefully (see [`run`]).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let Queue {
            engine,
            server,
            listener,
            grace,
        } = self;
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        };
        let serve = server.serve(listener, shutdown);
        tokio::pin!(serve);
        let served = tokio::select! {
            r = &mut serve => r,
            _ = async {
                let _ = stopping_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                warn!(?grace, "calls still in flight after the grace period: dropping them");
                Ok(())
            }
        };
        engine.close().await;
        info!("queue closed");
        served.map_err(|e| StartError::Serve(Box::new(e)))
    }
}

async fn open_engine(config: &Config) -> Result<Arc<dyn Backend>, StartError> {
    match &config.kind {
        EngineKind::File => Engine::open(&config.data_dir, config.engine)
            .await
            .map(|e| Arc::new(e) as Arc<dyn Backend>)
            .map_err(|source| StartError::Engine {
                path: config.data_dir.clone(),
                source,
            }),
        #[cfg(feature = "nats")]
        EngineKind::Nats { url } => crate::nats::JetStream::connect(url, config.engine)
            .await
            .map(|e| Arc::new(e) as Arc<dyn Backend>)
            .map_err(|source| StartError::Engine {
                path: url.into(),
                source,
            }),
        #[cfg(not(feature = "nats"))]
        EngineKind::Nats { url } => Err(StartError::NatsNotBuilt { url: url.clone() }),
    }
}

/// What [`Access::check`] found the queue may run with.
struct Access {
    /// Certificate chain and key, PEM.
    tls: Option<(Vec<u8>, Vec<u8>)>,
    token: Option<String>,
}

impl Access {
    fn check(config: &Config) -> Result<Access, StartError> {
        let token = config.token_file.as_deref().map(read_token).transpose()?;
        let tls = match &config.tls {
            Some(files) => Some((read(&files.cert)?, read(&files.key)?)),
            None => None,
        };
        if !is_local(&config.listen) && (tls.is_none() || token.is_none()) {
            return Err(StartError::OpenOnNetwork {
                addr: config.listen.clone(),
            });
        }
        Ok(Access { tls, token })
    }
}

/// True for a Unix socket or a loopback IP address (or `localhost`).
pub fn is_local(addr: &Addr) -> bool {
    match addr {
        Addr::Unix(_) => true,
        Addr::Tcp(_) => match addr.host() {
            Some("localhost") => true,
            Some(host) => host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
            None => false,
        },
    }
}

fn read(path: &Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a token file, refusing one others may read.
pub fn read_token(path: &Path) -> Result<String, StartError> {
    let fail = |reason: String| StartError::Token {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "mode is {mode:04o}; make it readable by its owner only (chmod 600)"
        )));
    }
    let text = String::from_utf8(read(path)?).map_err(|_| fail("is not UTF-8".into()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("is empty".into()));
    }
    Ok(token.to_owned())
}

/// The RPC methods: each reads its one map argument, checks the token and calls the engine.
struct QueueService {
    engine: Arc<dyn Backend>,
    token: Option<Arc<str>>,
}

const fn method(name: &'static str, returns: &'static str, idempotent: bool) -> MethodInfo {
    MethodInfo {
        name,
        params: &[("request", "Map")],
        returns,
        notify: false,
        blocking: false,
        idempotent,
    }
}

const METHODS: &[MethodInfo] = &[
    method(methods::CREATE_TOPIC, "()", true),
    method(methods::REGISTER, "()", true),
    method(methods::UNREGISTER, "()", false),
    method(methods::PUBLISH, "Published", false),
    method(methods::FETCH, "Vec<Message>", false),
    method(methods::ACK, "()", true),
    method(methods::NACK, "()", true),
    method(methods::STATS, "Vec<TopicStats>", true),
];

impl Dispatch for QueueService {
    fn service_name(&self) -> &'static str {
        "Queue"
    }

    fn methods(&self) -> &'static [MethodInfo] {
        METHODS
    }

    fn call(&self, req: Request) -> BoxReply {
        let engine = self.engine.clone();
        let token = self.token.clone();
        Box::pin(async move {
            let Request {
                method,
                params,
                ctx,
            } = req;
            match method.as_str() {
                methods::CREATE_TOPIC => {
                    let r: api::CreateTopic = Args::one(methods::CREATE_TOPIC, params)?;
                    authorize(&token, &r.token)?;
                    engine
                        .create_topic(&r.topic, r.max_bytes)
                        .await
                        .map_err(to_rpc)?;
                    Reply::encode(&())
                }
                methods::REGISTER => {
                    let r: api::Subscription = Args::one(methods::REGISTER, params)?;
                    authorize(&token, &r.token)?;
                    engine.register(&r.topic, &r.sub).await.map_err(to_rpc)?;
                    Reply::encode(&())
                }
                methods::UNREGISTER => {
                    let r: api::Subscription = Args::one(methods::UNREGISTER, params)?;
                    authorize(&token, &r.token)?;
                    engine.unregister(&r.topic, &r.sub).await.map_err(to_rpc)?;
                    Reply::encode(&())
                }
                methods::PUBLISH => {
                    let r: api::Publish = Args::one(methods::PUBLISH, params)?;
                    authorize(&token, &r.token)?;
                    let messages = r.messages.into_iter().map(|m| m.into_vec()).collect();
                    // With more of this connection's messages read, they are likely more
                    // publishes: hand this one to the writer so they share one fdatasync.
                    let commit = if ctx.more_input() {
                        Commit::Grouped
                    } else {
                        Commit::IfIdle
                    };
                    let seqs = engine
                        .publish_with(&r.topic, messages, commit)
                        .await
                        .map_err(to_rpc)?;
                    Reply::encode(&api::Published { seqs })
                }
                methods::FETCH => {
                    let r: api::Fetch = Args::one(methods::FETCH, params)?;
                    authorize(&token, &r.token)?;
                    let wait = Duration::from_millis(r.wait_ms.unwrap_or(0)).min(MAX_WAIT);
                    let max = r.max.unwrap_or(1).max(1) as usize;
                    let messages = engine
                        .fetch(&r.topic, &r.sub, max, wait)
                        .await
                        .map_err(to_rpc)?;
                    Reply::encode(&messages)
                }
                methods::ACK => {
                    let r: api::Ack = Args::one(methods::ACK, params)?;
                    authorize(&token, &r.token)?;
                    engine.ack(&r.topic, &r.sub, r.seqs).await.map_err(to_rpc)?;
                    Reply::encode(&())
                }
                methods::NACK => {
                    let r: api::Nack = Args::one(methods::NACK, params)?;
                    authorize(&token, &r.token)?;
                    let delay = Duration::from_millis(r.delay_ms.unwrap_or(0));
                    engine
                        .nack(&r.topic, &r.sub, r.seqs, delay)
                        .await
                        .map_err(to_rpc)?;
                    Reply::encode(&())
                }
                methods::STATS => {
                    let r: api::Stats = Args::one(methods::STATS, params)?;
                    authorize(&token, &r.token)?;
                    let topics = match r.topic {
                        Some(topic) => vec![topic],
                        None => engine.topics().await.map_err(to_rpc)?,
                    };
                    let mut stats = Vec::with_capacity(topics.len());
                    for topic in topics {
                        stats.push(engine.stats(&topic).await.map_err(to_rpc)?);
                    }
                    Reply::encode(&stats)
                }
                other => Err(RpcError::method_not_found(other)),
            }
        })
    }
}

/// Compares in constant time, so the answer's timing says nothing about the token.
fn authorize(expected: &Option<Arc<str>>, given: &Option<String>) -> Result<(), RpcError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = given.as_deref().unwrap_or("").as_bytes();
    let expected = expected.as_bytes();
    let mut diff = u8::from(given.len() != expected.len());
    for (i, b) in expected.iter().enumerate() {
        diff |= b ^ given.get(i).copied().unwrap_or(0);
    }
    if diff == 0 {
        Ok(())
    } else {
        Err(RpcError::new(
            codes::UNAUTHORIZED,
            "missing or wrong token: send the one in the queue's token file as `token`",
        ))
    }
}

fn to_rpc(error: Error) -> RpcError {
    let code = match &error {
        Error::Full { .. } => codes::FULL,
        Error::TooLarge { .. } => codes::TOO_LARGE,
        Error::NoTopic { .. } => codes::NO_TOPIC,
        Error::NoSubscription { .. } => codes::NO_SUBSCRIPTION,
        Error::TopicExists { .. }
        | Error::MaxBytesTooSmall { .. }
        | Error::BadName { .. }
        | Error::NotItsMessage { .. }
        | Error::NotDelivered { .. } => codes::INVALID,
        Error::Closed => codes::CLOSED,
        Error::Io { .. } | Error::Corrupt { .. } | Error::State { .. } | Error::Nats { .. } => {
            warn!(%error, "queue call failed");
            shoal_rpc::codes::INTERNAL
        }
    };
    let rpc = RpcError::new(code, error.to_string());
    match error {
        Error::Full { topic, holder, .. } => rpc.with_data(Value::Map(vec![
            ("topic".into(), topic.into()),
            ("holder".into(), holder.into()),
        ])),
        _ => rpc,
    }
}
