//! What the center's API tests share: a stand-in for the agents' link and a center's API served
//! on 127.0.0.1 over the SQLite store.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use shoal_api::agent::LogQuery;
use shoal_api::center::{Role, TokenCreated, TokenRequest};
use shoal_api::fleet::CENTER_NAME;
use shoal_api::fleet::{AgentInfo, Exec, LogLine, TargetResult, TargetStatus};
use shoal_center::client::CenterClient;
use shoal_center::commands::{Reach, ReachError};
use shoal_center::tokens::Caller;
use shoal_center::{Center, Limits, Stores};
use shoal_rpc::ClientTls;
use shoal_store::sqlite::Sqlite;

/// Agents as the link would report them; `online` ones answer at once, others never.
#[derive(Debug, Default)]
pub struct Fleet {
    agents: Mutex<Vec<AgentInfo>>,
    ran: Mutex<Vec<(String, Exec)>>,
    /// The services' endpoints, set by the test as the link would.
    pub services: shoal_center::services::Services,
}

/// An agent of a test: id, namespace, labels, online.
pub type Seat<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], bool);

impl Fleet {
    pub fn with(agents: &[Seat<'_>]) -> Arc<Fleet> {
        let fleet = Fleet::default();
        *fleet.agents.lock().unwrap() = agents
            .iter()
            .map(|(id, ns, labels, online)| AgentInfo {
                id: (*id).into(),
                hostname: format!("host-{id}"),
                namespace: (*ns).into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                online: *online,
                revoked: false,
                last_heartbeat: None,
                version: "0.1.0".into(),
                apps: Vec::new(),
            })
            .collect();
        Arc::new(fleet)
    }

    pub fn ran_on(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .ran
            .lock()
            .unwrap()
            .iter()
            .map(|(a, _)| a.clone())
            .collect();
        ids.sort();
        ids
    }
}

#[async_trait]
impl Reach for Fleet {
    async fn agents(&self) -> Result<Vec<AgentInfo>, ReachError> {
        Ok(self.agents.lock().unwrap().clone())
    }

    async fn exec(
        &self,
        agent: &str,
        exec: Exec,
        deadline: Instant,
    ) -> Result<TargetResult, ReachError> {
        let online = self
            .agents
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.id == agent && a.online);
        if !online {
            tokio::time::sleep_until(deadline.into()).await;
            return Err(ReachError::Offline);
        }
        self.ran.lock().unwrap().push((agent.to_owned(), exec));
        Ok(TargetResult {
            status: TargetStatus::Ok,
            message: "done".into(),
            detail: None,
            duration_ms: Some(1),
        })
    }

    async fn revoke(&self, agent: &str) -> Result<(), ReachError> {
        for a in self.agents.lock().unwrap().iter_mut() {
            if a.id == agent {
                a.revoked = true;
                a.online = false;
            }
        }
        Ok(())
    }

    async fn logs(
        &self,
        agent: &str,
        app: &str,
        _query: LogQuery,
    ) -> Result<BoxStream<'static, LogLine>, ReachError> {
        let line = LogLine {
            stream: 0,
            line: format!("{agent} says hello from {app}"),
        };
        Ok(futures_util::stream::iter([line]).boxed())
    }

    fn services(&self) -> shoal_center::services::Services {
        self.services.clone()
    }
}

/// A center's API on 127.0.0.1, an admin token, and the scratch directory.
pub struct Served {
    pub url: String,
    pub admin: String,
    pub center: Center,
    pub dir: PathBuf,
    _server: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn serve(fleet: Arc<Fleet>, limits: Limits) -> Served {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "shoal-center-api-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Sqlite::open(dir.join("store")).unwrap();
    let stores = Stores {
        kv: Arc::new(store.clone()),
        log: Arc::new(store.clone()),
        blobs: Arc::new(store),
    };
    let center = Center::new(&stores, fleet, "0f0f", &dir, limits);
    let admin = center
        .tokens
        .create(
            &TokenRequest {
                role: Role::Admin,
                namespace: None,
                ttl_secs: None,
                uses: None,
            },
            &Caller::center(),
            "0f0f",
        )
        .await
        .unwrap()
        .token;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = shoal_center::api::router(center.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Served {
        url,
        admin,
        center,
        dir,
        _server: server,
    }
}

impl Served {
    pub fn client(&self, token: &str) -> CenterClient {
        CenterClient::new(&self.url, token).unwrap()
    }

    pub async fn token(&self, role: Role, namespace: Option<&str>) -> String {
        create_token(&self.client(&self.admin), role, namespace).await
    }
}

/// A new token of `role` (in `namespace`), made through the API by `admin`.
pub async fn create_token(admin: &CenterClient, role: Role, namespace: Option<&str>) -> String {
    let created: TokenCreated = admin
        .post(
            "/api/v1/tokens",
            &TokenRequest {
                role,
                namespace: namespace.map(Into::into),
                ttl_secs: None,
                uses: None,
            },
        )
        .await
        .unwrap();
    created.token
}

/// A TLS client of the center's agents' port, as the link's agents dial it: trusts only
/// `root_pem` and shows `identity` (key PEM, chain PEM) when given, else no certificate.
pub fn link_tls(root_pem: &str, identity: Option<(&str, &str)>) -> ClientTls {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((key, chain)) => {
            let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    ClientTls {
        config: Arc::new(config),
        server_name: Some(CENTER_NAME.into()),
    }
}
