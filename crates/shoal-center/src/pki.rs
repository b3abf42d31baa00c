//! The center's certificate authority: a root, an intermediate that issues agents'
//! certificates and a separate one for centers, kept under `DATA/pki/`; the center's server
//! certificate; and the TLS configuration of the agents' port built from them.
//!
//! ```text
//! DATA/pki/
//!   root.pem    root.key       the root (10 years); its key's pin goes into join tokens
//!   agents.pem  agents.key     issues agents' client certificates (client auth only)
//!   centers.pem centers.key    issues centers' certificates (server and client auth)
//!   server.pem  server.key     this center's chain (server, centers, root), issued anew at
//!                              every start (names may change)
//! ```
//!
//! Keys are written 0600 through a temporary file and a rename, so a crash leaves the old
//! file or the new one, never half of either. Opening does file IO and key generation: call
//! [`Pki::open`] off the async executor (or [`Pki::load`]).

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// The name every center's server certificate carries, and agents check: a center is known by
/// the certificate authority it chains to, not by the address an agent dials.
pub use shoal_api::fleet::CENTER_NAME;

/// How long an agent's certificate lasts unless told otherwise; it is renewed over the live
/// link at two thirds of it.
pub const DEFAULT_AGENT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const INTERMEDIATE_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Clocks of agents and the center differ a little: certificates start a bit in the past.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// What went wrong with the certificate authority, naming the file or the request at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot read it ({source}); restore it from a backup, or move DATA/pki away to start a new authority (every agent must join again)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{} exists but {} is missing: restore it, or move DATA/pki away to start a new authority (every agent must join again)", have.display(), missing.display())]
    Incomplete { have: PathBuf, missing: PathBuf },
    #[error("making {what}: {source}")]
    Make {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("the certificate signing request is not valid (PEM of a PKCS#10 request signed by its key): {0}")]
    Csr(#[source] rcgen::Error),
    #[error("the TLS configuration of the agents' port: {0}")]
    Tls(String),
}

/// One certificate authority (root or intermediate): its certificate and key.
struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    key: KeyPair,
    /// The certificate as rcgen signs with it (its name and key identifier).
    issuer: rcgen::Certificate,
}

/// The center's certificate authority, loaded or created by [`Pki::open`].
pub struct Pki {
    dir: PathBuf,
    root: Ca,
    agents: Ca,
    centers: Ca,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    pin: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// An agent's (or a center's) new certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate then its intermediate (PEM).
    pub chain_pem: String,
    pub not_after: SystemTime,
}

impl Pki {
    /// [`Pki::open`] on a blocking thread.
    pub async fn load(data_dir: &Path, names: Vec<String>) -> Result<Pki, PkiError> {
        let dir = data_dir.to_owned();
        match tokio::task::spawn_blocking(move || Pki::open(&dir, &names)).await {
            Ok(pki) => pki,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Loads the authority of `data_dir` (`DATA/pki/`), creating it on the first start, and
    /// issues this start's server certificate for `localhost`, `127.0.0.1`, `::1`, the host's
    /// name, [`CENTER_NAME`] and `names`. Blocking.
    pub fn open(data_dir: &Path, names: &[String]) -> Result<Pki, PkiError> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
        let root = load_or_make(&dir, "root", None)?;
        let agents = load_or_make(&dir, "agents", Some(&root))?;
        let centers = load_or_make(&dir, "centers", Some(&root))?;
        let pin = hex(&Sha256::digest(root.key.public_key_der()));
        let server_key = KeyPair::generate().map_err(make("the server's key"))?;
        let server = server_params(names)?
            .signed_by(&server_key, &centers.issuer, &centers.key)
            .map_err(make("the server's certificate"))?;
        let server_chain = vec![server.der().clone(), centers.der.clone(), root.der.clone()];
        let pem = [server.pem(), centers.pem.clone(), root.pem.clone()].concat();
        write_atomic(&dir.join("server.pem"), pem.as_bytes(), 0o644)?;
        write_atomic(
            &dir.join("server.key"),
            server_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        Ok(Pki {
            dir,
            root,
            agents,
            centers,
            server_chain,
            server_key: server_key.serialize_der(),
            pin,
        })
    }

    /// Lowercase hex sha256 of the root's SubjectPublicKeyInfo: what a join token carries
    /// and an agent checks before it sends anything secret.
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// The root certificate (PEM): what agents trust once enrolled.
    pub fn root_pem(&self) -> &str {
        &self.root.pem
    }

    /// The agents' intermediate (DER): the only issuer the agents' port accepts.
    pub fn agents_der(&self) -> &CertificateDer<'static> {
        &self.agents.der
    }

    /// The server's chain: its certificate, the centers' intermediate, the root.
    pub fn server_chain(&self) -> &[CertificateDer<'static>] {
        &self.server_chain
    }

    /// A certificate for agent `agent_id`, valid for `lifetime`, for the key of `csr_pem`
    /// (whose signature is checked; the key never leaves the agent): SAN URI
    /// `shoal://agent/<id>`, client auth only, from the agents' intermediate.
    pub fn issue_agent(
        &self,
        csr_pem: &str,
        agent_id: &str,
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let now = SystemTime::now();
        self.issue_agent_between(csr_pem, agent_id, now - CLOCK_SKEW, now + lifetime)
    }

    /// [`Pki::issue_agent`] with the validity given outright.
    pub fn issue_agent_between(
        &self,
        csr_pem: &str,
        agent_id: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, PkiError> {
        let mut params = leaf_params(&format!("shoal agent {agent_id}"), not_before, not_after);
        params.subject_alt_names = vec![SanType::URI(agent_uri(agent_id).try_into().map_err(
            |e| PkiError::Make {
                what: format!("the certificate of agent {agent_id:?}"),
                source: e,
            },
        )?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(csr_pem, params, &self.agents, not_after)
    }

    /// A certificate for another center named `name`, for the key of `csr_pem`: server and
    /// client auth, from the centers' intermediate (never accepted as an agent).
    pub fn issue_center(
        &self,
        csr_pem: &str,
        name: &str,
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let now = SystemTime::now();
        let mut params = leaf_params(
            &format!("shoal center {name}"),
            now - CLOCK_SKEW,
            now + lifetime,
        );
        params.subject_alt_names = vec![dns(name)?, dns(CENTER_NAME)?];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(csr_pem, params, &self.centers, now + lifetime)
    }

    /// The agents' port's TLS: TLS 1.3, this center's chain (root included, for the pin
    /// check), client certificates optional at the TLS layer but, when given, verified to
    /// lead to the agents' intermediate (unexpired, client auth).
    pub fn link_server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.agents.der.clone())
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        Ok(Arc::new(config))
    }

    fn sign(
        &self,
        csr_pem: &str,
        params: CertificateParams,
        ca: &Ca,
        not_after: SystemTime,
    ) -> Result<Issued, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::Csr)?;
        // Only the key comes from the request; everything else is the center's to say.
        csr.params = params;
        let cert = csr
            .signed_by(&ca.issuer, &ca.key)
            .map_err(make("a certificate"))?;
        Ok(Issued {
            chain_pem: [cert.pem(), ca.pem.clone()].concat(),
            not_after,
        })
    }
}

/// The SAN URI of agent `id`.
pub fn agent_uri(id: &str) -> String {
    format!("shoal://agent/{id}")
}

/// The agent id a verified agent certificate names (its SAN URI `shoal://agent/<id>`).
pub fn agent_id_of(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let id = cert
        .valid_uri_names()
        .find_map(|uri| uri.strip_prefix("shoal://agent/").map(str::to_owned));
    id.filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Lowercase hex sha256 of a certificate's SubjectPublicKeyInfo (how a pin is computed).
pub fn spki_pin(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(hex(&Sha256::digest(
        cert.subject_public_key_info().as_ref(),
    )))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn load_or_make(dir: &Path, name: &str, parent: Option<&Ca>) -> Result<Ca, PkiError> {
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => load_ca(&cert_path, &key_path),
        (false, false) => make_ca(name, parent, &cert_path, &key_path),
        (true, false) => Err(PkiError::Incomplete {
            have: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(PkiError::Incomplete {
            have: key_path,
            missing: cert_path,
        }),
    }
}

fn load_ca(cert_path: &Path, key_path: &Path) -> Result<Ca, PkiError> {
    let pem = std::fs::read_to_string(cert_path).map_err(io(cert_path))?;
    let key_pem = std::fs::read_to_string(key_path).map_err(io(key_path))?;
    let read = |path: &Path| {
        let path = path.to_owned();
        move |source| PkiError::Read { path, source }
    };
    let key = KeyPair::from_pem(&key_pem).map_err(read(key_path))?;
    let params = CertificateParams::from_ca_cert_pem(&pem).map_err(read(cert_path))?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::Tls(format!("{}: {e}", cert_path.display())))?;
    // rcgen signs with a `Certificate`; only its name, key identifier and key usages are
    // used, all read back from the stored certificate.
    let issuer = params
        .self_signed(&key)
        .map_err(make(format!("the issuer of {}", cert_path.display())))?;
    Ok(Ca {
        pem,
        der,
        key,
        issuer,
    })
}

fn make_ca(
    name: &str,
    parent: Option<&Ca>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Ca, PkiError> {
    let key = KeyPair::generate().map_err(make(format!("the {name} key")))?;
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "shoal");
    dn.push(DnType::CommonName, format!("shoal {name} CA"));
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(serial());
    params.not_before = (now - CLOCK_SKEW).into();
    let cert = match parent {
        None => {
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
            params.not_after = (now + ROOT_LIFETIME).into();
            params.self_signed(&key)
        }
        Some(parent) => {
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.not_after = (now + INTERMEDIATE_LIFETIME).into();
            params.use_authority_key_identifier_extension = true;
            params.signed_by(&key, &parent.issuer, &parent.key)
        }
    }
    .map_err(make(format!("the {name} certificate")))?;
    // The key first: a certificate without its key is reported, a key alone is made again.
    write_atomic(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        key,
        issuer: cert,
    })
}

fn server_params(names: &[String]) -> Result<CertificateParams, PkiError> {
    let now = SystemTime::now();
    let mut params = leaf_params("shoal center", now - CLOCK_SKEW, now + SERVER_LIFETIME);
    let mut sans = vec![dns("localhost")?, dns(CENTER_NAME)?];
    sans.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    sans.push(SanType::IpAddress(IpAddr::from(
        std::net::Ipv6Addr::LOCALHOST,
    )));
    let host = nix_hostname();
    for name in host.iter().chain(names) {
        sans.push(match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => dns(name)?,
        });
    }
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

fn leaf_params(cn: &str, not_before: SystemTime, not_after: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "shoal");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(serial());
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params.use_authority_key_identifier_extension = true;
    params
}

fn dns(name: &str) -> Result<SanType, PkiError> {
    name.try_into()
        .map(SanType::DnsName)
        .map_err(|e: rcgen::Error| PkiError::Make {
            what: format!("a certificate for the name {name:?}"),
            source: e,
        })
}

/// The host's name, when it has a usable one.
fn nix_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && name.is_ascii()).then(|| name.to_owned())
}

fn serial() -> rcgen::SerialNumber {
    // Positive and 16 bytes: unique enough that no two certificates of a CA share one.
    let mut bytes: Vec<u8> = (0..16).map(|_| fastrand::u8(..)).collect();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    rcgen::SerialNumber::from(bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same directory (created with
/// `mode`), synced and renamed into place, then syncs the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        PkiError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn make(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Make { what, source }
}
