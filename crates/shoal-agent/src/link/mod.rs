//! The agent's link to a center (`shoal agent --center HOST:PORT`): enrollment on the first
//! start, then one connection kept up, over which the center runs commands (`exec`, each
//! command id at most once) and reads logs.
//!
//! Enrollment: the join token's pin is checked against the root the center presents before
//! the agent sends anything ([`tls::PinVerifier`]); the agent makes its own key pair and
//! sends only a certificate request; the certificate, the key and the center's root go to
//! `DATA/link/identity.json` (0600). Later starts use them and need no token.
//!
//! The link's tasks are tracked by [`Link`]; [`Link::stop`] ends the connection and log
//! streams, [`Link::wait`] waits for a command still running.

mod center;
mod exec;
mod host;
mod identity;
mod logs;
mod session;
pub mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::fleet::{codes, methods, EnrollRequest, Enrolled, CENTER_NAME};
use shoal_api::token::TokenText;
use shoal_rpc::conn::ConnConfig;
use shoal_rpc::{Addr, ClientTls, Reply, Request, RpcError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use center::{CenterCallError, CenterPeer, MAX_DISCOVER_WAIT};
pub use exec::{Commands, Fetch, FetchStream};
pub use host::{AgentHost, Host};
pub use identity::{Identity, IdentityError};

use crate::Agent;

/// Where the agent's center is and how it joins it.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// The center's agents' port, `host:port`.
    pub center: String,
    /// The join token; needed only until the agent has enrolled.
    pub join: Option<TokenText>,
    pub labels: BTreeMap<String, String>,
    pub namespace: Option<String>,
    /// How long a call over the link may take (`hello`, a heartbeat, a package part).
    pub call_timeout: Duration,
    /// The first and the longest pause before connecting again.
    pub backoff: (Duration, Duration),
}

impl LinkOptions {
    pub fn new(center: impl Into<String>) -> LinkOptions {
        LinkOptions {
            center: center.into(),
            join: None,
            labels: BTreeMap::new(),
            namespace: None,
            call_timeout: Duration::from_secs(30),
            backoff: (Duration::from_millis(100), Duration::from_secs(10)),
        }
    }
}

/// Why the link did not start.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the agent has not joined a center yet: give it a join token (`--join`, made on the center with `shoal token create --role join`)")]
    NoToken,
    #[error("the join token has no pin of the center's certificate authority (a join token is shoal_<id>_<secret>_<pin>): make one with `shoal token create --role join`")]
    NoPin,
    #[error("the center at {center} is not the one the join token was made for: its certificate authority's pin is {}, the token's is {expected}. Check that --center names the center that made the token, or make a new token there (`shoal token create --role join`); nothing was sent", if found.is_empty() { "missing".to_owned() } else { found.join(" or ") })]
    PinMismatch {
        center: String,
        expected: String,
        found: Vec<String>,
    },
    #[error("connecting to the center at {center}: {message}")]
    Connect { center: String, message: String },
    #[error("the center at {center} refused to enroll this agent: {message}")]
    JoinRefused { center: String, message: String },
    #[error("enrolling with the center at {center}: {message}")]
    Enroll { center: String, message: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("the agent's command table: {0}")]
    State(#[from] crate::StateError),
}

/// The running link.
#[derive(Debug)]
pub struct Link {
    agent_id: String,
    stop: CancellationToken,
    tasks: TaskTracker,
    linked: tokio::sync::watch::Receiver<u64>,
}

impl Link {
    /// The id the center gave this agent.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// Changes each time the link says hello to the center.
    pub fn linked(&self) -> tokio::sync::watch::Receiver<u64> {
        self.linked.clone()
    }

    /// Ends the connection and its log streams; a command still running goes on to its end.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops, then waits for every task of the link (a running command included).
    pub async fn wait(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Starts `agent`'s link: enrolls first when the agent has no identity yet (so a refused
/// token or a wrong pin fails the start, saying why), then keeps the link up until `shutdown`
/// is cancelled or [`Link::stop`]. `center` follows the connection (made with
/// [`CenterPeer::new`] for `options.center`), for calls the agent makes for its programs.
pub async fn start(
    agent: &Agent,
    options: LinkOptions,
    center: CenterPeer,
    shutdown: CancellationToken,
) -> Result<Link, LinkError> {
    let tasks = TaskTracker::new();
    let commands = Commands::open(agent.clone(), tasks.clone()).await?;
    let host = Arc::new(AgentHost::new(agent.clone(), commands));
    start_with(host, tasks, options, center, shutdown).await
}

/// Starts the link of any [`Host`], its tasks on `tasks`: as [`start`] does for the agent.
pub async fn start_with(
    host: Arc<dyn Host>,
    tasks: TaskTracker,
    options: LinkOptions,
    center: CenterPeer,
    shutdown: CancellationToken,
) -> Result<Link, LinkError> {
    let dir = host.data_dir().to_owned();
    let identity = match load(dir.clone()).await? {
        Some(identity) => {
            if options.join.is_some() {
                info!(agent = %identity.agent_id, "already joined: the join token given is not used");
            }
            identity
        }
        None => {
            let token = options.join.as_ref().ok_or(LinkError::NoToken)?;
            let identity = enroll(&options, token).await?;
            let stored = identity.clone();
            let saved = tokio::task::spawn_blocking(move || identity::store(&dir, &stored)).await;
            saved.map_err(|e| IdentityError::Io {
                path: identity::path(host.data_dir()),
                source: std::io::Error::other(e),
            })??;
            info!(agent = %identity.agent_id, center = %options.center, "joined the center");
            identity
        }
    };
    let stop = shutdown.child_token();
    let (linked, linked_rx) = tokio::sync::watch::channel(0);
    let agent_id = identity.agent_id.clone();
    let session = session::Session {
        host,
        options,
        identity: Arc::new(Mutex::new(identity)),
        tasks: tasks.clone(),
        shutdown: stop.clone(),
        linked,
        center,
    };
    tasks.spawn(session.run());
    Ok(Link {
        agent_id,
        stop,
        tasks,
        linked: linked_rx,
    })
}

async fn load(dir: PathBuf) -> Result<Option<Identity>, IdentityError> {
    let path = identity::path(&dir);
    tokio::task::spawn_blocking(move || identity::load(&dir))
        .await
        .map_err(|e| IdentityError::Io {
            path,
            source: std::io::Error::other(e),
        })?
}

/// Enrolls with the center of `options` using `token`: the center's root checked against the
/// token's pin during the handshake, then `enroll` with a certificate request for a key made
/// here.
pub async fn enroll(options: &LinkOptions, token: &TokenText) -> Result<Identity, LinkError> {
    let center = options.center.clone();
    let pin = token.pin.as_deref().ok_or(LinkError::NoPin)?;
    let verifier = tls::PinVerifier::new(pin);
    let config = tls::enroll_config(verifier.clone()).map_err(|message| LinkError::Connect {
        center: center.clone(),
        message,
    })?;
    let client = ClientTls {
        config,
        server_name: Some(CENTER_NAME.to_owned()),
    };
    let connected = shoal_rpc::transport::connect(&Addr::Tcp(center.clone()), Some(&client)).await;
    let (r, w) = connected.map_err(|e| match verifier.mismatch() {
        Some(found) => LinkError::PinMismatch {
            center: center.clone(),
            expected: pin.to_owned(),
            found,
        },
        None => LinkError::Connect {
            center: center.clone(),
            message: e.to_string(),
        },
    })?;
    let tasks = TaskTracker::new();
    let peer = shoal_rpc::conn::spawn(
        r,
        w,
        center.clone(),
        tower::util::BoxCloneSyncService::new(tower::service_fn(|req: Request| async move {
            // The center calls nothing on an enrolling connection.
            Err::<Reply, _>(RpcError::method_not_found(&req.method))
        })),
        ConnConfig::default(),
        CancellationToken::new(),
        &tasks,
    );
    let hostname = session::hostname();
    let host = hostname.clone();
    let (key_pem, csr_pem) = tokio::task::spawn_blocking(move || identity::new_key_and_csr(&host))
        .await
        .map_err(|e| LinkError::Enroll {
            center: center.clone(),
            message: e.to_string(),
        })??;
    let request = EnrollRequest {
        token: token.credential(),
        csr_pem,
        hostname,
        namespace: options.namespace.clone(),
        labels: options.labels.clone(),
    };
    let answer = peer
        .call(methods::ENROLL, &[request], options.call_timeout)
        .await;
    peer.close();
    tasks.close();
    tasks.wait().await;
    let enrolled: Enrolled = match answer {
        Ok(value) => shoal_rpc::decode::from_value(value).map_err(|e| LinkError::Enroll {
            center: center.clone(),
            message: format!("the center's answer does not read: {e}"),
        })?,
        Err(shoal_rpc::Error::Remote(e)) if e.code == Some(codes::JOIN_REFUSED) => {
            return Err(LinkError::JoinRefused {
                center,
                message: e.message,
            })
        }
        Err(e) => {
            return Err(LinkError::Enroll {
                center,
                message: e.to_string(),
            })
        }
    };
    check_root(&enrolled.ca_pem, pin).map_err(|message| LinkError::Enroll {
        center: center.clone(),
        message,
    })?;
    Ok(Identity {
        agent_id: enrolled.agent_id,
        center,
        key_pem,
        cert_pem: enrolled.certificate_pem,
        ca_pem: enrolled.ca_pem,
        issued_at: chrono::Utc::now(),
        not_after: enrolled.not_after,
    })
}

/// The root the center hands over must be the one the pin named.
fn check_root(ca_pem: &str, pin: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let root = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| format!("the center's root does not read: {e}"))?;
    match tls::spki_pin(&root) {
        Some(found) if found == pin.to_ascii_lowercase() => Ok(()),
        _ => Err("the root the center sent is not the one its join token pins".into()),
    }
}
