//! packages.rs: the center's package repository. An upload is written to `incoming/`,
//! inspected exactly as an agent inspects it (every rule of `shoal_pkg`'s archive walk), then
//! kept in the store's `Blobs` by sha256 and listed under `packages/<name>/<version>`. A version
//! is immutable: pushing it again with other content is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use shoal_api::center::PackageInfo;
use shoal_api::fleet::PackageRef;
use shoal_pkg::archive::{ArchiveError, Limits};
use shoal_pkg::{Sha256, Version};
use shoal_store::{Blobs, Digest, Kv, StoreError};

const PREFIX: &str = "packages/";

/// What pushing or resolving a package fails with.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The archive breaks a rule; the message names it.
    #[error("the package is refused: {0}")]
    Refused(#[source] ArchiveError),
    /// The upload is not the archive its sender hashed.
    #[error("the upload's sha256 is {actual}, not the {claimed} it was sent with: the archive was damaged on the way, or the checksum is another archive's; nothing was kept")]
    Mismatch { claimed: Sha256, actual: Sha256 },
    #[error("{name} {version} is already in the repository with another sha256 ({sha256}): a version is immutable, push a new version")]
    Immutable {
        name: String,
        version: String,
        sha256: String,
    },
    #[error("no package {0} in the repository: push it with `shoal push FILE`")]
    NotFound(String),
    #[error("the stored archive of {name} {version} does not match its sha256: push it again")]
    Damaged { name: String, version: String },
    #[error("the package store: {0}")]
    Store(#[from] StoreError),
    #[error("reading the upload {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a stored package record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The repository.
#[derive(Debug, Clone)]
pub struct Packages {
    kv: Arc<dyn Kv>,
    blobs: Arc<dyn Blobs>,
    limits: Limits,
}

impl Packages {
    pub fn new(kv: Arc<dyn Kv>, blobs: Arc<dyn Blobs>) -> Packages {
        Packages {
            kv,
            blobs,
            limits: Limits::default(),
        }
    }

    /// Adds the archive at `upload` (a file the caller removes afterwards). With `claimed`,
    /// an upload of another sha256 is refused before it is inspected or kept.
    pub async fn push(
        &self,
        upload: &Path,
        claimed: Option<Sha256>,
    ) -> Result<PackageInfo, PackageError> {
        let path = upload.to_path_buf();
        let limits = self.limits;
        let (inspection, data) = tokio::task::spawn_blocking(move || {
            let io = |source| PackageError::Io {
                path: path.clone(),
                source,
            };
            if let Some(claimed) = claimed {
                let actual = Sha256::of_file(&path).map_err(io)?;
                if actual != claimed {
                    return Err(PackageError::Mismatch { claimed, actual });
                }
            }
            let inspection = shoal_pkg::inspect(&path, &limits).map_err(PackageError::Refused)?;
            let data = std::fs::read(&path).map_err(io)?;
            Ok::<_, PackageError>((inspection, data))
        })
        .await
        .expect("the inspection does not panic")?;
        let info = PackageInfo {
            name: inspection.manifest.package.name.to_string(),
            version: inspection.manifest.package.version.to_string(),
            sha256: inspection.sha256.to_string(),
            size: inspection.archive_size,
            pushed: Utc::now(),
        };
        let key = key(&info.name, &info.version);
        if let Some(existing) = self.kv.get(&key).await? {
            let existing: PackageInfo = serde_json::from_slice(&existing.value)?;
            if existing.sha256 == info.sha256 {
                return Ok(existing);
            }
            return Err(PackageError::Immutable {
                name: info.name,
                version: info.version,
                sha256: existing.sha256,
            });
        }
        let digest = self.blobs.put(Bytes::from(data)).await?;
        if digest.0 != info.sha256 {
            return Err(PackageError::Damaged {
                name: info.name,
                version: info.version,
            });
        }
        match self
            .kv
            .create(&key, Bytes::from(serde_json::to_vec(&info)?))
            .await
        {
            Ok(_) => Ok(info),
            // Pushed meanwhile by another request: the check above, once more.
            Err(StoreError::Conflict { .. }) => Box::pin(self.push(upload, claimed)).await,
            Err(other) => Err(other.into()),
        }
    }

    /// Every version of `name` (of every package when `None`), by name then newest first.
    pub async fn list(&self, name: Option<&str>) -> Result<Vec<PackageInfo>, PackageError> {
        let prefix = match name {
            Some(name) => format!("{PREFIX}{name}/"),
            None => PREFIX.to_owned(),
        };
        let mut all = Vec::new();
        for entry in self.kv.list(&prefix).await? {
            all.push(serde_json::from_slice::<PackageInfo>(&entry.value)?);
        }
        all.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| parse(&b.version).cmp(&parse(&a.version)))
        });
        Ok(all)
    }

    /// `name` at `version`, or its newest version.
    pub async fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<PackageRef, PackageError> {
        let found = match version {
            Some(version) => match self.kv.get(&key(name, version)).await? {
                Some(entry) => Some(serde_json::from_slice::<PackageInfo>(&entry.value)?),
                None => None,
            },
            None => self.list(Some(name)).await?.into_iter().next(),
        };
        let info = found.ok_or_else(|| match version {
            Some(v) => PackageError::NotFound(format!("{name} {v}")),
            None => PackageError::NotFound(name.to_owned()),
        })?;
        Ok(PackageRef {
            name: info.name,
            version: info.version,
            sha256: info.sha256,
            size: info.size,
        })
    }

    /// The archive whose sha256 is `sha256`.
    pub async fn fetch(&self, sha256: &str) -> Result<Option<Bytes>, PackageError> {
        Ok(self.blobs.get(&Digest(sha256.to_owned())).await?)
    }
}

fn key(name: &str, version: &str) -> String {
    format!("{PREFIX}{name}/{version}")
}

fn parse(version: &str) -> Option<Version> {
    Version::parse(version).ok()
}
