//! Reading a backup back into a staging directory, as hostile input: the archive goes through
//! `shoal-pkg`'s walk (no manifest, modes kept, the agent's limits), with a sink that takes
//! the index first and then only the paths it names, each inside the manifest's
//! `[backup] paths`.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::GzDecoder;
use shoal_pkg::archive::{
    walk, EntryKind, ManifestRule, Modes, Options, Sink, SinkError, WalkError,
};
use shoal_pkg::manifest::Name;
use shoal_pkg::{Hasher, Limits, Sha256};

use super::archive::Index;
use super::{roots, BackupError, INDEX};

/// What [`extract`] put in the staging directory.
#[derive(Debug)]
pub(super) struct Extracted {
    /// The paths the backup holds, relative to the app's directory, as its index names them.
    pub roots: Vec<String>,
    /// The archive's digest, computed as it was read.
    pub sha256: Sha256,
}

/// The largest index read back.
const MAX_INDEX: u64 = 64 * 1024;

/// The most of a name from the archive that an error quotes.
const MAX_SHOWN: usize = 100;

/// Reads the backup `archive` (open as `file`) into `staging`, checking every entry with
/// `shoal-pkg`'s rules under `limits`, and every path against the index and `scope` (the
/// manifest's `[backup] paths`, as [`roots`] gives them); hashes the whole file on the way.
pub(super) fn extract(
    archive: &Path,
    file: File,
    staging: &Path,
    app: &Name,
    scope: &[String],
    limits: &Limits,
) -> Result<Extracted, BackupError> {
    let not_a_backup = |why: String| BackupError::NotABackup {
        archive: archive.to_path_buf(),
        app: app.clone(),
        why,
    };
    let mut hashing = Hasher::new(BufReader::new(file));
    let mut sink = Restorer {
        staging,
        app,
        scope,
        reading: Reading::Index,
        dirs: Vec::new(),
    };
    let options = Options {
        limits: *limits,
        manifest: ManifestRule::NotRead,
        modes: Modes::Kept,
    };
    walk(GzDecoder::new(&mut hashing), &options, &mut sink).map_err(|e| match e {
        WalkError::Read(e) => not_a_backup(format!("not a readable .tar.gz: {e}")),
        WalkError::Rejected { path, rule } => BackupError::Rejected {
            archive: archive.to_path_buf(),
            path,
            rule,
        },
        WalkError::Sink { path, source } => BackupError::Io {
            path: staging.join(path),
            source,
        },
        // Not asked for: ManifestRule::NotRead.
        other @ (WalkError::NoManifest | WalkError::Manifest(_)) => not_a_backup(other.to_string()),
    })?;
    let Reading::Roots { roots, held } = &sink.reading else {
        return Err(not_a_backup(format!("it is empty: no {INDEX}")));
    };
    if let Some(missing) = roots.iter().find(|r| !held.contains(*r)) {
        return Err(not_a_backup(format!(
            "its index names {:?}, which it does not hold",
            short(missing)
        )));
    }
    let roots = roots.iter().cloned().collect();
    sink.finish()?;
    // The rest of the file (the gzip trailer, anything after it) completes the digest.
    io::copy(&mut hashing, &mut io::sink())
        .map_err(|e| not_a_backup(format!("not a readable .tar.gz: {e}")))?;
    let (_, sha256) = hashing.finish();
    Ok(Extracted { roots, sha256 })
}

/// Makes every directory below `dir` (not through symlinks) writable by its owner, so that
/// it can be removed.
pub(super) fn make_removable(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = dir.symlink_metadata() else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        if meta.mode() & 0o700 != 0o700 {
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
}

/// Writes what the walk passes below `staging`, which the restore created and nobody else
/// writes into; the walk has checked that every parent is a directory made here.
struct Restorer<'a> {
    staging: &'a Path,
    app: &'a Name,
    scope: &'a [String],
    reading: Reading,
    /// Directories created, in order (parents first), and the modes they get once
    /// everything is in them.
    dirs: Vec<(PathBuf, u32)>,
}

/// Where the walk is in the backup.
enum Reading {
    /// Before the first entry, which must be the index.
    Index,
    /// After it: only what lies in `roots`, the paths it names.
    Roots {
        roots: BTreeSet<String>,
        /// The roots met so far, as entries or as directories entries imply.
        held: BTreeSet<String>,
    },
}

impl Restorer<'_> {
    /// Checks the index's `text` and returns the paths it names.
    fn read_index(&self, text: &[u8]) -> Result<BTreeSet<String>, String> {
        let index: Index = serde_json::from_slice(text).map_err(|e| format!("{INDEX}: {e}"))?;
        if index.app != self.app.as_str() {
            return Err(format!(
                "it holds a backup of {:?}, not of {}",
                short(&index.app),
                self.app
            ));
        }
        let roots = roots(&index.paths).map_err(|e| format!("{INDEX}: {e}"))?;
        if roots != index.paths {
            return Err(format!(
                "{INDEX}: the paths are not in the form shoal writes them"
            ));
        }
        let scope: BTreeSet<String> = self.scope.iter().cloned().collect();
        if let Some(outside) = roots.iter().find(|r| !within(&scope, r)) {
            return Err(format!(
                "its index names {:?}, which is not in the [backup] paths of {}'s manifest \
                 ({}): a restore writes only those",
                short(outside),
                self.app,
                self.scope.join(", ")
            ));
        }
        Ok(roots.into_iter().collect())
    }

    /// Notes that `path` is in the staging directory.
    fn hold(&mut self, path: &str) {
        if let Reading::Roots { roots, held } = &mut self.reading {
            if roots.contains(path) {
                held.insert(path.to_owned());
            }
        }
    }

    /// Gives directories their modes, deepest first, then puts everything written on disk
    /// with one `syncfs` rather than an fsync per file and directory, which for many small
    /// entries costs more than the rest of the restore together.
    fn finish(&self) -> Result<(), BackupError> {
        for (dir, mode) in self.dirs.iter().rev() {
            fs::set_permissions(dir, fs::Permissions::from_mode(*mode)).map_err(|source| {
                BackupError::Io {
                    path: dir.clone(),
                    source,
                }
            })?;
        }
        File::open(self.staging)
            .and_then(|dir| Ok(nix::unistd::syncfs(dir)?))
            .map_err(|source| BackupError::Io {
                path: self.staging.to_path_buf(),
                source,
            })
    }
}

impl Sink for Restorer<'_> {
    fn admit(&mut self, path: &str, kind: EntryKind, size: u64) -> Result<(), String> {
        match &self.reading {
            Reading::Index if path != INDEX || kind != EntryKind::File => {
                Err(format!("the first entry of a backup is its index, {INDEX}"))
            }
            Reading::Index if size > MAX_INDEX => Err(format!(
                "{size} bytes, more than the {MAX_INDEX} an index may have"
            )),
            Reading::Index => Ok(()),
            Reading::Roots { roots, .. } if within(roots, path) => Ok(()),
            Reading::Roots { roots, .. } => Err(format!(
                "outside the paths the backup holds ({})",
                roots
                    .iter()
                    .map(|r| short(r))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<(), SinkError> {
        let full = self.staging.join(path);
        // Writable until `finish`, whatever the backup's mode: a 0500 directory still gets
        // its contents.
        DirBuilder::new().mode(0o700).create(&full)?;
        self.dirs.push((full, mode));
        self.hold(path);
        Ok(())
    }

    fn file(
        &mut self,
        path: &str,
        mode: u32,
        mtime: u64,
        data: &mut dyn Read,
    ) -> Result<u64, SinkError> {
        if let Reading::Index = self.reading {
            // Admitted only as the first entry, and at most MAX_INDEX bytes.
            let mut text = Vec::new();
            data.read_to_end(&mut text)?;
            let roots = self.read_index(&text).map_err(SinkError::Refused)?;
            self.reading = Reading::Roots {
                roots,
                held: BTreeSet::new(),
            };
            return Ok(text.len() as u64);
        }
        let full = self.staging.join(path);
        // create_new: O_EXCL, which also refuses a symlink at the last component.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)?;
        let written = io::copy(data, &mut file)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))?;
        self.hold(path);
        Ok(written)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), SinkError> {
        std::os::unix::fs::symlink(target, self.staging.join(path))?;
        self.hold(path);
        Ok(())
    }
}

/// Whether `path` is one of `roots` or below one: a lookup per `/` in it, so that checking
/// every entry stays linear in the entries however many roots there are.
fn within(roots: &BTreeSet<String>, path: &str) -> bool {
    roots.contains(path)
        || path
            .match_indices('/')
            .any(|(end, _)| roots.contains(&path[..end]))
}

/// `text` cut to its first [`MAX_SHOWN`] characters, for an error.
fn short(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}
