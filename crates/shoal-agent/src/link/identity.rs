//! The agent's identity with its center: its id, its own key (made here, never sent), the
//! certificate the center issued for it and the center's root, kept together in
//! `DATA/link/identity.json` (mode 0600, replaced whole through a rename).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What enrollment gave the agent.
#[derive(Clone, Serialize, Deserialize)]
pub struct Identity {
    pub agent_id: String,
    /// The center it enrolled with, `host:port`.
    pub center: String,
    /// The agent's private key (PKCS#8 PEM).
    pub key_pem: String,
    /// Its certificate then the agents' intermediate.
    pub cert_pem: String,
    /// The center's root: the only authority the agent trusts for its center.
    pub ca_pem: String,
    pub issued_at: DateTime<Utc>,
    pub not_after: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("agent_id", &self.agent_id)
            .field("center", &self.center)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Why the identity file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not an identity file ({source}); move it away and join again with a new token", path.display())]
    Bad {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} can be read by others (mode {mode:o}): it holds the agent's key; `chmod 600` it", path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("making a key and a certificate request: {0}")]
    Key(#[source] rcgen::Error),
}

impl Identity {
    /// When to renew: two thirds into the certificate's life.
    pub fn renew_at(&self) -> Option<DateTime<Utc>> {
        let end = self.not_after?;
        Some(self.issued_at + (end - self.issued_at) * 2 / 3)
    }
}

/// `DATA/link/identity.json`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("link").join("identity.json")
}

/// `DATA/link/agent.id`: the agent's id alone, for people and scripts (no secret in it).
pub fn id_path(data_dir: &Path) -> PathBuf {
    data_dir.join("link").join("agent.id")
}

/// The stored identity, if the agent enrolled. Blocking.
pub fn load(data_dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let path = path(data_dir);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Exposed { path, mode });
    }
    let text = std::fs::read(&path).map_err(io)?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| IdentityError::Bad { path, source })
}

/// Writes `identity` in place of the stored one (0600, a rename), and its id to
/// `agent.id`. Blocking.
pub fn store(data_dir: &Path, identity: &Identity) -> Result<(), IdentityError> {
    let json = serde_json::to_vec_pretty(identity).map_err(|source| IdentityError::Bad {
        path: path(data_dir),
        source,
    })?;
    write(&path(data_dir), &json, 0o600)?;
    write(
        &id_path(data_dir),
        format!("{}\n", identity.agent_id).as_bytes(),
        0o644,
    )
}

/// Replaces `path` with `bytes` through a synced temporary file and a rename.
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let path = path.to_owned();
    let dir = path.parent().expect("the identity file is in a directory");
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// A new key pair and a certificate request for it: (key PEM, CSR PEM).
pub fn new_key_and_csr(hostname: &str) -> Result<(String, String), IdentityError> {
    let key = rcgen::KeyPair::generate().map_err(IdentityError::Key)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        format!("shoal agent on {hostname}"),
    );
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(IdentityError::Key)?;
    Ok((key.serialize_pem(), csr))
}
