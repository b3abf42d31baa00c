//! `unpack`: a package archive into a new directory, checksum first, through a hidden sibling
//! directory that is renamed into place only when every entry and the manifest have passed.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::GzDecoder;

use crate::archive::{walk_package, ArchiveError, Limits, Sink, SinkError};
use crate::digest::{Hasher, Sha256};
use crate::manifest::Manifest;

/// What [`unpack`] put in place.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub manifest: Manifest,
    /// Files, directories and symlinks created.
    pub files: u64,
    /// Bytes of file contents.
    pub size: u64,
}

/// Unpacks the archive at `archive` into `dest`, which must not exist yet.
///
/// Nothing is written until the whole file's SHA-256 equals `expected`. Entries then go into
/// a new hidden directory beside `dest` (`.NAME.unpack-PID-N`), checked one by one as they
/// stream (see the crate docs for the rules), and the file is hashed again on the way so that
/// what was unpacked is what was checked. Only when everything passed, the manifest included,
/// are the files and directories synced and the directory renamed to `dest`. On any error
/// the hidden directory is removed and `dest` does not exist.
///
/// Blocking: call it from `spawn_blocking` in async code.
pub fn unpack(
    archive: &Path,
    expected: &Sha256,
    dest: &Path,
    limits: &Limits,
) -> Result<Unpacked, ArchiveError> {
    let open_error = |source| ArchiveError::Open {
        archive: archive.to_path_buf(),
        source,
    };
    if dest.symlink_metadata().is_ok() {
        return Err(ArchiveError::DestinationExists {
            dest: dest.to_path_buf(),
        });
    }
    let mut file = File::open(archive).map_err(open_error)?;
    let actual = Sha256::of_reader(&mut file).map_err(open_error)?;
    if actual != *expected {
        return Err(ArchiveError::Checksum {
            archive: archive.to_path_buf(),
            expected: *expected,
            actual,
        });
    }
    file.rewind().map_err(open_error)?;

    let staging = Staging::create(dest)?;
    let mut writer = Writer {
        root: staging.path.clone(),
        dirs: Vec::new(),
    };
    let mut hashed = Hasher::new(file);
    let (summary, manifest) = walk_package(GzDecoder::new(&mut hashed), limits, &mut writer)
        .map_err(|e| e.into_archive_error(archive, dest))?;
    // The rest of the file (the gzip trailer, anything after it) completes the second hash.
    io::copy(&mut hashed, &mut io::sink()).map_err(open_error)?;
    let (_, again) = hashed.finish();
    if again != *expected {
        return Err(ArchiveError::Changed {
            archive: archive.to_path_buf(),
            actual: again,
        });
    }
    writer.sync().map_err(|e| staging.error(e))?;
    staging.commit(dest)?;
    Ok(Unpacked {
        manifest,
        files: summary.files,
        size: summary.size,
    })
}

/// Writes entries below `root`, which this process created and nobody else writes into; the
/// walk has checked that every parent is a directory made here.
struct Writer {
    root: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Writer {
    /// Flushes files' directory entries to disk, so the rename publishes a complete tree even
    /// across a power loss (files are synced as they are written).
    fn sync(&self) -> io::Result<()> {
        for dir in self.dirs.iter().rev().chain([&self.root]) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Modes come from the walk, reset ([`crate::archive::Modes::Reset`]): the archive's own are
/// not kept beyond whether a file is executable, so no entry can be setuid, setgid, sticky or
/// writable by others.
impl Sink for Writer {
    fn dir(&mut self, path: &str, mode: u32) -> Result<(), SinkError> {
        let full = self.root.join(path);
        DirBuilder::new().mode(mode).create(&full)?;
        // The mode again, without the umask: the agent's umask is not the package's business.
        fs::set_permissions(&full, fs::Permissions::from_mode(mode))?;
        self.dirs.push(full);
        Ok(())
    }

    fn file(
        &mut self,
        path: &str,
        mode: u32,
        _mtime: u64,
        data: &mut dyn Read,
    ) -> Result<u64, SinkError> {
        let full = self.root.join(path);
        // create_new: O_EXCL, which also refuses to follow a symlink at the last component.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&full)?;
        let written = io::copy(data, &mut file)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        Ok(written)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), SinkError> {
        Ok(std::os::unix::fs::symlink(target, self.root.join(path))?)
    }
}

/// The hidden directory an archive is unpacked into; removed when dropped uncommitted.
struct Staging {
    path: PathBuf,
    committed: bool,
}

impl Staging {
    fn create(dest: &Path) -> Result<Staging, ArchiveError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let bad_dest = |message: &str| ArchiveError::Write {
            path: dest.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, message.to_owned()),
        };
        let name = dest
            .file_name()
            .ok_or_else(|| bad_dest("the destination has no file name"))?
            .to_string_lossy();
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!(".{name}.unpack-{}-{n}", std::process::id()));
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    return Ok(Staging {
                        path,
                        committed: false,
                    })
                }
                // Left by a process that had this pid before and died mid-unpack.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(ArchiveError::Write { path, source }),
            }
        }
    }

    fn error(&self, source: io::Error) -> ArchiveError {
        ArchiveError::Write {
            path: self.path.clone(),
            source,
        }
    }

    fn commit(mut self, dest: &Path) -> Result<(), ArchiveError> {
        // The mode every unpacked directory gets (`Modes::Reset`).
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o755))
            .map_err(|e| self.error(e))?;
        fs::rename(&self.path, dest).map_err(|source| ArchiveError::Write {
            path: dest.to_path_buf(),
            source,
        })?;
        self.committed = true;
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The rename itself, durable. A failure here leaves a complete tree in place.
            let _ = File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // `remove_dir_all` does not follow symlinks, so links in the tree are safe to leave
            // to it.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
