//! `inspect`: what a package archive holds (manifest, checksum, files, size), read under the
//! same checks as unpacking without writing anything.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::read::GzDecoder;
use serde::Serialize;

use crate::archive::{walk_package, ArchiveError, Limits, Sink, SinkError};
use crate::digest::{Hasher, Sha256};
use crate::manifest::Manifest;

/// What [`inspect`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// Of the whole archive file, as its `.sha256` file has it.
    pub sha256: Sha256,
    /// The archive file's size in bytes.
    pub archive_size: u64,
    /// Files, directories and symlinks that unpacking would create.
    pub files: u64,
    /// Bytes of file contents.
    pub size: u64,
    pub manifest: Manifest,
}

/// Reads the archive at `archive` through every check [`crate::unpack`] makes, writing
/// nothing: an archive that inspects cleanly under `limits` unpacks under them.
pub fn inspect(archive: &Path, limits: &Limits) -> Result<Inspection, ArchiveError> {
    let open_error = |source| ArchiveError::Open {
        archive: archive.to_path_buf(),
        source,
    };
    let file = File::open(archive).map_err(open_error)?;
    let archive_size = file.metadata().map_err(open_error)?.len();
    let mut hashed = Hasher::new(file);
    let (summary, manifest) = walk_package(GzDecoder::new(&mut hashed), limits, &mut Discard)
        .map_err(|e| e.into_archive_error(archive, Path::new("")))?;
    io::copy(&mut hashed, &mut io::sink()).map_err(open_error)?;
    let (_, sha256) = hashed.finish();
    Ok(Inspection {
        sha256,
        archive_size,
        files: summary.files,
        size: summary.size,
        manifest,
    })
}

/// Reads every file to its end (so that sizes are counted, not taken from headers) and keeps
/// nothing.
struct Discard;

impl Sink for Discard {
    fn dir(&mut self, _path: &str, _mode: u32) -> Result<(), SinkError> {
        Ok(())
    }

    fn file(
        &mut self,
        _path: &str,
        _mode: u32,
        _mtime: u64,
        data: &mut dyn Read,
    ) -> Result<u64, SinkError> {
        Ok(io::copy(data, &mut io::sink())?)
    }

    fn symlink(&mut self, _path: &str, _target: &str) -> Result<(), SinkError> {
        Ok(())
    }
}
