//! run.rs: [`run`], the center as one call: the store, the certificate authority, the agents'
//! port, the registry, the HTTP API, and the first admin token; [`Running::stopped`] closes it
//! in order once the shutdown token fires.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_api::center::{Role, TokenRequest};
use shoal_store::sqlite::Sqlite;
use shoal_store::StoreError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::link::{LinkConfig, LinkDeps, Links};
use crate::pki::{Pki, PkiError};
use crate::tokens::{Caller, TokenError};
use crate::wiring::LinkReach;
use crate::{Center, Limits, Stores};

/// The agents' port when none is given.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7440";
/// The HTTP API's address when none is given.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7441";

/// How a center runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds the store (`store/`), the authority (`pki/`) and `admin.token`.
    pub data_dir: PathBuf,
    /// The agents' port (mutual TLS).
    pub listen: SocketAddr,
    /// The HTTP API; loopback only.
    pub http: SocketAddr,
    /// Names and addresses, beyond the host's own, that agents may dial the center by (its
    /// server certificate's names).
    pub names: Vec<String>,
    pub link: LinkConfig,
    pub limits: Limits,
}

impl Config {
    /// The defaults on `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            listen: DEFAULT_LISTEN.parse().expect("a socket address"),
            http: DEFAULT_HTTP.parse().expect("a socket address"),
            names: Vec::new(),
            link: LinkConfig::default(),
            limits: Limits::default(),
        }
    }
}

/// Why the center could not start; each names the file or address at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the store in {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("the certificate authority: {0}")]
    Pki(#[from] PkiError),
    #[error("binding the {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP API listens on loopback only, not {0}: use 127.0.0.1 (or ::1), and reach it from elsewhere through an SSH tunnel or a TLS proxy")]
    NotLoopback(SocketAddr),
    #[error("the first admin token: {0}")]
    Token(#[from] TokenError),
    #[error("{path}: {source}")]
    AdminToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A started center.
#[derive(Debug)]
pub struct Running {
    /// Where the agents' port listens (its real port when 0 was asked).
    pub listen: SocketAddr,
    /// Where the HTTP API listens.
    pub http: SocketAddr,
    /// The admin token made at the first start, shown this once; `None` on later starts.
    pub admin_token: Option<String>,
    /// The file holding the first admin token (mode 0600).
    pub admin_token_file: PathBuf,
    /// The pin of the root key that join tokens carry.
    pub pin: String,
    pub center: Center,
    store: Sqlite,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Running {
    /// Waits for the shutdown token, then for the links and the API to close, then writes the
    /// configuration instances not yet written and closes the store.
    pub async fn stopped(self) {
        self.shutdown.cancelled().await;
        self.center.commands.close().await;
        self.tasks.close();
        self.tasks.wait().await;
        // The API is closed: no request starts a change any more.
        self.center.close().await;
        if let Err(error) = self.center.configs.flush().await {
            tracing::warn!(%error, "writing configuration instances at stop");
        }
        self.store.close().await;
    }
}

/// Starts a center on `config`, until `shutdown` is cancelled. Binds both ports first (a port
/// in use is refused before anything is written) and before it returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    if !config.http.ip().is_loopback() {
        return Err(StartError::NotLoopback(config.http));
    }
    // Both ports first: a port in use is refused before anything is opened or written.
    let link_listener = bind("agents' port", config.listen).await?;
    let api_listener = bind("HTTP API", config.http).await?;
    let data_dir = config.data_dir.clone();
    make_private_dir(&data_dir).await?;
    let store = open_store(&data_dir.join("store")).await?;
    let stores = Stores {
        kv: Arc::new(store.clone()),
        log: Arc::new(store.clone()),
        blobs: Arc::new(store.clone()),
    };
    let pki = Arc::new(Pki::load(&data_dir, config.names.clone()).await?);
    let pin = pki.pin().to_owned();
    let joins = crate::wiring::Joins {
        tokens: crate::tokens::Tokens::new(stores.kv.clone()),
        audit: crate::audit::Audit::new(stores.log.clone()),
    };
    let packages = crate::packages::Packages::new(stores.kv.clone(), stores.blobs.clone());
    let configs = crate::config::Configs::new(stores.kv.clone(), stores.blobs.clone());
    let deps = LinkDeps {
        kv: stores.kv.clone(),
        pki,
        join: Arc::new(joins),
        packages: Arc::new(packages),
        configs: configs.clone(),
    };
    let links = Links::new(deps, config.link.clone())
        .await
        .map_err(|source| StartError::Store {
            path: data_dir.join("store"),
            source,
        })?;
    let center = Center::new(
        &stores,
        Arc::new(LinkReach(links.clone())),
        &pin,
        &data_dir,
        config.limits,
    )
    .with_configs(configs);
    let interrupted = center
        .commands
        .recover()
        .await
        .map_err(|e| StartError::Store {
            path: data_dir.join("store"),
            source: StoreError::Backend {
                doing: "marking the commands a stopped center left running".into(),
                source: e.into(),
            },
        })?;
    if interrupted > 0 {
        tracing::warn!(
            commands = interrupted,
            "commands left running by a stopped center are marked interrupted"
        );
    }
    let admin_token_file = data_dir.join("admin.token");
    let admin_token = first_admin_token(&center, &admin_token_file).await?;
    let tasks = TaskTracker::new();
    tasks.spawn(center.configs.clone().persist(shutdown.clone()));
    let listen = serve_link(&config, link_listener, links, &tasks, &shutdown)?;
    let http = serve_api(&config, api_listener, center.clone(), &tasks, &shutdown)?;
    tracing::info!(%listen, %http, "center started");
    Ok(Running {
        listen,
        http,
        admin_token,
        admin_token_file,
        pin,
        center,
        store,
        tasks,
        shutdown,
    })
}

fn serve_link(
    config: &Config,
    listener: TcpListener,
    links: Links,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<SocketAddr, StartError> {
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        what: "agents' port",
        addr: config.listen,
        source,
    })?;
    let stop = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = crate::link::serve(links, listener, stop.clone()).await {
            tracing::error!(error = %e, "the agents' port stopped; the center stops");
            stop.cancel();
        }
    });
    Ok(addr)
}

fn serve_api(
    config: &Config,
    listener: TcpListener,
    center: Center,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<SocketAddr, StartError> {
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        what: "HTTP API",
        addr: config.http,
        source,
    })?;
    let services = center.services.clone();
    let app = crate::api::router(center);
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let stopping = stop.clone();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                stopping.cancelled().await;
                // Long polls answer now instead of holding the shutdown up.
                services.close();
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the HTTP API stopped; the center stops");
            stop.cancel();
        }
    });
    Ok(addr)
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

async fn make_private_dir(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt as _;
    let failed = |source| StartError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    tokio::fs::create_dir_all(dir).await.map_err(failed)?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(failed)
}

async fn open_store(path: &Path) -> Result<Sqlite, StartError> {
    let at = path.to_path_buf();
    tokio::task::spawn_blocking(move || Sqlite::open(&at))
        .await
        .expect("opening the store does not panic")
        .map_err(|source| StartError::Store {
            path: path.to_path_buf(),
            source,
        })
}

/// Makes the first admin token when `file` does not exist yet, and writes it there (0600,
/// atomically); answers it, to be shown once.
async fn first_admin_token(center: &Center, file: &Path) -> Result<Option<String>, StartError> {
    if tokio::fs::try_exists(file).await.unwrap_or(false) {
        return Ok(None);
    }
    let request = TokenRequest {
        role: Role::Admin,
        namespace: None,
        ttl_secs: None,
        uses: None,
    };
    let created = center
        .tokens
        .create(&request, &Caller::center(), &center.pin)
        .await?;
    let (path, text) = (file.to_path_buf(), format!("{}\n", created.token));
    tokio::task::spawn_blocking(move || write_private(&path, text.as_bytes()))
        .await
        .expect("writing the token does not panic")
        .map_err(|source| StartError::AdminToken {
            path: file.to_path_buf(),
            source,
        })?;
    center
        .audit
        .record(
            &Caller::center(),
            "token.create",
            vec![created.info.id],
            crate::audit::Outcome::Ok,
        )
        .await
        .map_err(TokenError::Store)?;
    Ok(Some(created.token))
}

/// Writes `data` to `path` with mode 0600: a temporary file, synced, renamed over.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
