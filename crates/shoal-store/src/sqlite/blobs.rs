//! `Blobs` as files under the store directory, named by digest: written to a temporary
//! file, fsynced, renamed into place, the directory fsynced.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::{backend, blocking, Sqlite};
use crate::{Blobs, Digest, Result};

/// Temporary files live beside the blobs (same file system, so the rename is atomic).
const TMP_DIR: &str = "tmp";

#[async_trait]
impl Blobs for Sqlite {
    async fn put(&self, data: Bytes) -> Result<Digest> {
        self.inner.readers.check_open()?;
        let dir = self.inner.blob_dir.clone();
        blocking(move || {
            let digest = Digest::of(&data);
            let path = blob_path(&dir, &digest);
            if !path.exists() {
                write_atomic(&dir, &path, &data)
                    .map_err(|e| backend(format!("writing blob {}", path.display()), e))?;
            }
            Ok(digest)
        })
        .await
    }

    async fn get(&self, digest: &Digest) -> Result<Option<Bytes>> {
        self.inner.readers.check_open()?;
        if !digest.is_valid() {
            // No blob has that name; refusing it here also keeps it out of the path.
            return Ok(None);
        }
        let path = blob_path(&self.inner.blob_dir, digest);
        let digest = digest.clone();
        blocking(move || {
            let data = match fs::read(&path) {
                Ok(data) => data,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(backend(format!("reading blob {}", path.display()), e)),
            };
            if Digest::of(&data) != digest {
                let doing = format!("reading blob {}", path.display());
                return Err(backend(doing, "its content does not match its digest: remove the file and push the blob again"));
            }
            Ok(Some(Bytes::from(data)))
        })
        .await
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        self.inner.readers.check_open()?;
        if !digest.is_valid() {
            return Ok(());
        }
        let path = blob_path(&self.inner.blob_dir, digest);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend(format!("removing blob {}", path.display()), e)),
        })
        .await
    }
}

/// Creates the blob directory and empties its temporary directory: what a killed process
/// left there was never renamed into place, and no other process writes here (the lock).
pub(super) fn prepare(dir: &Path) -> Result<()> {
    let tmp = dir.join(TMP_DIR);
    let doing = || format!("preparing the blob directory {}", tmp.display());
    match fs::remove_dir_all(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(backend(doing(), e)),
    }
    fs::create_dir_all(&tmp).map_err(|e| backend(doing(), e))
}

/// `blobs/ab/abcd...`: two hex digits of fan-out keep directories small.
fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join(&digest.0[..2]).join(&digest.0)
}

fn write_atomic(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp_dir = dir.join(TMP_DIR);
    let name = format!(
        "{}.{}.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = tmp_dir.join(name);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        let parent = path.parent().unwrap_or(dir);
        fs::create_dir_all(parent)?;
        fs::rename(&tmp, path)?;
        File::open(parent)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
