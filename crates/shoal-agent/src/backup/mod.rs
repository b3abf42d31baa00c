//! Backups of an app's `[backup] paths`: taken on schedule or on request into
//! `backups/NAME/`, the newest `keep` kept, listed, and restored over the app's directory.
//!
//! # On disk
//!
//! A backup is `backups/NAME/NAME-YYYYMMDDTHHMMSSZ.tar.gz` (UTC; `-2`, `-3`... added when two
//! are taken in the same second) beside `NAME-....tar.gz.sha256`, one `sha256sum` line. The
//! archive's first entry, `.shoal-backup.json`, names the app, the time and the paths it
//! holds; then each path, relative to `apps/NAME/`, depth first in name order. Files keep
//! their permission bits (not setuid, setgid or sticky) and modification time, directories
//! their permission bits; owners are not recorded. Symlinks are stored as symlinks and never
//! followed. Left out, each with a note in [`Created::notes`]: sockets, fifos and devices,
//! names that are not UTF-8, symlinks whose target is absolute or climbs out of `apps/NAME/`
//! (restoring refuses those), and paths below a symlink. A path missing when the backup is
//! taken is not in it, and a restore leaves that path alone. Two names of one file (hard
//! links) are stored, and restored, as two files.
//!
//! A backup is written to a hidden temporary file, synced, and renamed into place after its
//! `.sha256`, so a listed backup is always complete. [`create`] and [`restore`] hold an
//! exclusive `flock` on `backups/NAME/.lock`, so they never interleave, even across
//! processes. Files an app changes while it is backed up are read as they are at that moment;
//! one that shrinks is padded with zeros, as GNU tar does.
//!
//! # Restoring
//!
//! [`restore`] checks the archive's SHA-256 against its `.sha256` before anything is written,
//! then reads the archive as hostile input into a hidden directory inside `apps/NAME/`,
//! through `shoal-pkg`'s archive walk: every rule a package is held to (no absolute path or
//! `..`, no hard link, device, fifo or sparse file, nothing twice or below a file or a
//! symlink, no symlink that is absolute or resolves outside `apps/NAME/` through the
//! archive's other symlinks or climbs out of a name the archive does not hold, so nothing on
//! disk is ever resolved through; extension headers bounded before they are read), under the
//! same limits as packages (the agent's [`Limits`]), in time linear in the entries. Modes are
//! kept (without setuid, setgid and sticky), as are files' modification times. On top:
//! the first entry is the index, which names only paths inside the manifest's current
//! `[backup] paths`, and every other entry lies below one of the paths the index names, so a
//! restore never writes anything else (the versions, `current`). The file is hashed again as
//! it is read; only when everything passed are the paths swapped in one by one (the current
//! one renamed aside, the restored one renamed in, the old one removed), and a failed swap
//! puts back what it had moved. On any refusal the app's files are as they were, and the
//! error names the entry and the rule it broke.
//!
//! The app must be stopped while it is restored: the caller stops it first (a running app
//! would keep writing into files that are about to be replaced). Paths are replaced by
//! rename, so a path that is a mount point cannot be restored (the error names it). An agent
//! killed in the middle of the swap leaves what it had renamed aside in
//! `apps/NAME/.restore-old-*`, which nothing removes: it may be the only copy.
//!
//! # Schedule
//!
//! [`create_if_due`] is what the agent calls periodically (every minute is plenty): it takes
//! a backup when the newest one is `every` old, or there is none. The schedule follows the
//! backups on disk, so an agent restart takes no extra backup, and a manual backup postpones
//! the next one. A clock set back delays the next backup until it passes the newest one plus
//! `every`; no burst follows a clock change.
//!
//! Everything here blocks: async callers use `spawn_blocking`.

mod archive;
mod restore;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use shoal_pkg::manifest::{Backup, Name};
use shoal_pkg::{Limits, Rule, Sha256};

use crate::layout::DataDir;

/// One backup on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupInfo {
    /// The file name, which [`restore`] takes: `NAME-YYYYMMDDTHHMMSSZ.tar.gz`.
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// Bytes of the archive.
    pub size: u64,
    pub sha256: Sha256,
}

/// What [`create`] made.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub backup: BackupInfo,
    /// What was left out or changed while it was read: `data/app.sock: a socket: left out`.
    pub notes: Vec<String>,
    /// Backups removed to keep `keep`.
    pub pruned: Vec<String>,
}

/// Why a backup was not taken, listed or restored; each names the path or backup at fault.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup.paths: {path:?} {why}")]
    BadPath { path: String, why: &'static str },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{app} has no backup {id:?}: `shoal backups {app}` lists them")]
    NotFound { app: Name, id: String },
    #[error(
        "{}: sha256 is {actual}, but its .sha256 says {expected}: the backup is damaged or was \
         changed; restore another one",
        archive.display()
    )]
    Checksum {
        archive: PathBuf,
        expected: Sha256,
        actual: Sha256,
    },
    #[error("{}: {path}: {rule}", archive.display())]
    Rejected {
        archive: PathBuf,
        /// The entry's path as the archive has it (lossily decoded, a long one cut short).
        path: String,
        rule: Rule,
    },
    #[error("{}: not a backup of {app} that shoal can restore: {why}", archive.display())]
    NotABackup {
        archive: PathBuf,
        app: Name,
        why: String,
    },
}

/// Backs up `backup.paths` of `app` now, then removes the oldest backups beyond
/// `backup.keep`.
pub fn create(data: &DataDir, app: &Name, backup: &Backup) -> Result<Created, BackupError> {
    create_at(data, app, backup, Utc::now())
}

/// The app's backups, newest first. Archives without their `.sha256` (a backup being
/// written, or one cut short by a crash) are not listed.
pub fn list(data: &DataDir, app: &Name) -> Result<Vec<BackupInfo>, BackupError> {
    let dir = data.backups(app);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(BackupError::Io { path: dir, source }),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| io_error(&dir, source))?;
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(stamp) = parse_id(app, &id) else {
            continue;
        };
        let path = dir.join(&id);
        let Some(sha256) = read_sidecar(&path)? else {
            continue;
        };
        let size = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            // Pruned meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(BackupError::Io { path, source }),
        };
        found.push((
            stamp,
            BackupInfo {
                id,
                created_at: stamp.0,
                size,
                sha256,
            },
        ));
    }
    found.sort_by_key(|(stamp, _)| std::cmp::Reverse(*stamp));
    Ok(found.into_iter().map(|(_, info)| info).collect())
}

/// Restores backup `id` of `app` over `apps/NAME/`: each path it holds is replaced whole.
/// Nothing changes unless the archive matches its checksum and passes every rule under
/// `limits` (see the module docs); only paths inside `backup.paths`, the app's manifest's, are
/// ever written. The app must be stopped by the caller.
pub fn restore(
    data: &DataDir,
    app: &Name,
    backup: &Backup,
    id: &str,
    limits: &Limits,
) -> Result<(), BackupError> {
    let not_found = || BackupError::NotFound {
        app: app.clone(),
        id: id.to_owned(),
    };
    // Only names this module writes: no `/`, so the path stays in the app's backup directory.
    parse_id(app, id).ok_or_else(not_found)?;
    // What the restore may write: the manifest's paths, as a backup of them is taken.
    let scope = roots(&backup.paths)?;
    let dir = data.backups(app);
    let path = dir.join(id);
    let _lock = lock(&dir)?;
    let expected = read_sidecar(&path)?.ok_or_else(not_found)?;
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        Err(source) => return Err(BackupError::Io { path, source }),
    };
    let actual = Sha256::of_reader(&mut file).map_err(|source| io_error(&path, source))?;
    if actual != expected {
        return Err(BackupError::Checksum {
            archive: path,
            expected,
            actual,
        });
    }
    io::Seek::rewind(&mut file).map_err(|source| io_error(&path, source))?;

    let app_dir = data.app(app);
    fs::create_dir_all(&app_dir).map_err(|source| io_error(&app_dir, source))?;
    let staging = Scratch::create(&app_dir, "restore")?;
    let extracted = restore::extract(&path, file, &staging.path, app, &scope, limits)?;
    if extracted.sha256 != expected {
        return Err(BackupError::Checksum {
            archive: path,
            expected,
            actual: extracted.sha256,
        });
    }
    swap(&app_dir, &staging.path, &extracted.roots)?;
    tracing::info!(%app, backup = id, paths = ?extracted.roots, "backup restored");
    Ok(())
}

/// Whether a backup is due at `now` when the newest was taken at `newest`.
pub fn is_due(newest: Option<DateTime<Utc>>, every: Duration, now: DateTime<Utc>) -> bool {
    let Some(newest) = newest else {
        return true;
    };
    let every = chrono::TimeDelta::from_std(every).unwrap_or(chrono::TimeDelta::MAX);
    newest
        .checked_add_signed(every)
        .is_some_and(|due| now >= due)
}

/// Takes a backup named for `now` if one [`is_due`], going by the backups on disk.
pub fn create_if_due(
    data: &DataDir,
    app: &Name,
    backup: &Backup,
    now: DateTime<Utc>,
) -> Result<Option<Created>, BackupError> {
    let newest = list(data, app)?.first().map(|b| b.created_at);
    if !is_due(newest, backup.every, now) {
        return Ok(None);
    }
    create_at(data, app, backup, now).map(Some)
}

/// The name of the archive's index entry.
const INDEX: &str = ".shoal-backup.json";

fn create_at(
    data: &DataDir,
    app: &Name,
    backup: &Backup,
    now: DateTime<Utc>,
) -> Result<Created, BackupError> {
    let roots = roots(&backup.paths)?;
    let dir = data.backups(app);
    fs::create_dir_all(&dir).map_err(|source| io_error(&dir, source))?;
    let _lock = lock(&dir)?;
    remove_leftovers(&dir, app);

    let id = free_id(&dir, app, now);
    let path = dir.join(&id);
    let sidecar = sidecar(&path);
    let temp = Scratch::file(dir.join(format!(".{id}.tmp")));
    let temp_sidecar = Scratch::file(dir.join(format!(".{id}.sha256.tmp")));
    let written = archive::write(&temp.path, &data.app(app), app, now, &roots)
        .map_err(|source| io_error(&temp.path, source))?;

    let line = written.sha256.checksum_line(&id);
    write_synced(&temp_sidecar.path, line.as_bytes())
        .map_err(|source| io_error(&temp_sidecar.path, source))?;
    // The checksum first: an archive is listed only with it, so a listed one is complete.
    fs::rename(&temp_sidecar.path, &sidecar).map_err(|source| io_error(&sidecar, source))?;
    fs::rename(&temp.path, &path).map_err(|source| io_error(&path, source))?;
    sync_dir(&dir).map_err(|source| io_error(&dir, source))?;

    let size = fs::metadata(&path)
        .map_err(|source| io_error(&path, source))?
        .len();
    let info = BackupInfo {
        created_at: parse_id(app, &id).map_or(now, |(time, _)| time),
        id,
        size,
        sha256: written.sha256,
    };
    let pruned = prune(&dir, app, backup.keep)?;
    for note in &written.notes {
        tracing::warn!(%app, backup = %info.id, note, "backup: left out");
    }
    tracing::info!(%app, backup = %info.id, size, pruned = pruned.len(), "backup taken");
    Ok(Created {
        backup: info,
        notes: written.notes,
        pruned,
    })
}

/// The paths to back up, normalised (`./data/` is `data`), each once, and none inside
/// another (which already holds it).
fn roots(paths: &[String]) -> Result<Vec<String>, BackupError> {
    let mut roots = Vec::new();
    for path in paths {
        let bad = |why| BackupError::BadPath {
            path: path.clone(),
            why,
        };
        let mut parts = Vec::new();
        for component in Path::new(path).components() {
            match component {
                Component::Normal(part) => {
                    parts.push(part.to_str().ok_or_else(|| bad("is not UTF-8"))?)
                }
                Component::CurDir => {}
                Component::ParentDir => return Err(bad("leaves the app's directory with '..'")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(bad(
                        "is absolute: paths are relative to the app's directory",
                    ))
                }
            }
        }
        if parts.is_empty() {
            return Err(bad(
                "is the app's directory itself: name what inside it to back up, like \"data\"",
            ));
        }
        if parts[0] == INDEX || parts[0].starts_with(".restore-") {
            return Err(bad("is a name shoal uses for itself"));
        }
        roots.push(parts.join("/"));
    }
    roots.sort();
    roots.dedup();
    let all = roots.clone();
    roots.retain(|r| !all.iter().any(|other| r.starts_with(&format!("{other}/"))));
    Ok(roots)
}

/// `(time, sequence)` of a backup's file name, if it is one of `app`'s.
fn parse_id(app: &Name, id: &str) -> Option<(DateTime<Utc>, u32)> {
    let rest = id.strip_prefix(app.as_str())?.strip_prefix('-')?;
    let rest = rest.strip_suffix(".tar.gz")?;
    let (stamp, seq) = match rest.split_once('-') {
        Some((stamp, seq)) => {
            let seq: u32 = seq.parse().ok()?;
            // Only the forms `free_id` writes, so that one backup has one name.
            if seq < 2 || seq.to_string().len() != rest.len() - stamp.len() - 1 {
                return None;
            }
            (stamp, seq)
        }
        None => (rest, 1),
    };
    if stamp.len() != 16 {
        return None;
    }
    let time = NaiveDateTime::parse_from_str(stamp, STAMP).ok()?;
    Some((time.and_utc(), seq))
}

const STAMP: &str = "%Y%m%dT%H%M%SZ";

/// `NAME-STAMP.tar.gz`, or with `-2`, `-3`... if taken.
fn free_id(dir: &Path, app: &Name, now: DateTime<Utc>) -> String {
    let base = format!("{app}-{}", now.format(STAMP));
    let mut id = format!("{base}.tar.gz");
    let mut seq = 2;
    while dir.join(&id).symlink_metadata().is_ok() || sidecar(&dir.join(&id)).exists() {
        id = format!("{base}-{seq}.tar.gz");
        seq += 1;
    }
    id
}

fn sidecar(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// The digest in an archive's `.sha256`; `None` if there is none.
fn read_sidecar(archive: &Path) -> Result<Option<Sha256>, BackupError> {
    let path = sidecar(archive);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(BackupError::Io { path, source }),
    };
    let hex = text.split_whitespace().next().unwrap_or("");
    hex.parse().map(Some).map_err(|e| BackupError::Io {
        path,
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

/// Removes the oldest backups beyond `keep`; returns their ids.
fn prune(dir: &Path, app: &Name, keep: u32) -> Result<Vec<String>, BackupError> {
    let mut all: Vec<(DateTime<Utc>, u32, String)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|source| io_error(dir, source))? {
        let entry = entry.map_err(|source| io_error(dir, source))?;
        if let Some(id) = entry.file_name().to_str() {
            if let Some((time, seq)) = parse_id(app, id) {
                all.push((time, seq, id.to_owned()));
            }
        }
    }
    all.sort_by(|a, b| b.cmp(a));
    let keep = usize::try_from(keep.max(1)).unwrap_or(usize::MAX);
    let mut pruned = Vec::new();
    for (_, _, id) in all.into_iter().skip(keep) {
        let path = dir.join(&id);
        // The archive before its checksum: a crash between leaves a stray `.sha256`, never
        // a listed backup without one.
        fs::remove_file(&path).map_err(|source| io_error(&path, source))?;
        let _ = fs::remove_file(sidecar(&path));
        pruned.push(id);
    }
    Ok(pruned)
}

/// Removes what a crash left in the app's backup directory: temporary files, and checksums
/// whose archive is gone. Called under the lock, so nothing is being written.
fn remove_leftovers(dir: &Path, app: &Name) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stray_sidecar = name
            .strip_suffix(".sha256")
            .is_some_and(|archive| parse_id(app, archive).is_some() && !dir.join(archive).exists());
        if (name.starts_with('.') && name.ends_with(".tmp")) || stray_sidecar {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Replaces each of `roots` below `app_dir` with its copy in `staging`, renaming the current
/// one aside first; on a failure, puts back what was moved.
fn swap(app_dir: &Path, staging: &Path, roots: &[String]) -> Result<(), BackupError> {
    let aside = Scratch::create(app_dir, "restore-old")?;
    let mut done: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    let result = (|| {
        for (i, root) in roots.iter().enumerate() {
            let target = app_dir.join(root);
            real_parents(app_dir, root)?;
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|source| io_error(parent, source))?;
            }
            let old = match target.symlink_metadata() {
                Ok(_) => {
                    let moved = aside.path.join(i.to_string());
                    fs::rename(&target, &moved).map_err(|source| io_error(&target, source))?;
                    Some(moved)
                }
                Err(_) => None,
            };
            if let Err(source) = fs::rename(staging.join(root), &target) {
                if let Some(old) = &old {
                    let _ = fs::rename(old, &target);
                }
                return Err(io_error(&target, source));
            }
            done.push((target, old));
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (i, (target, old)) in done.iter().enumerate().rev() {
            let _ = fs::rename(target, staging.join(format!(".undo-{i}")));
            if let Some(old) = old {
                let _ = fs::rename(old, target);
            }
        }
        return Err(e);
    }
    for (target, _) in &done {
        if let Some(parent) = target.parent() {
            let _ = sync_dir(parent);
        }
    }
    Ok(())
}

/// Fails if a directory above `root` (below `app_dir`) is a symlink or not a directory, so
/// that nothing is restored through a link out of the app's directory.
fn real_parents(app_dir: &Path, root: &str) -> Result<(), BackupError> {
    let mut path = app_dir.to_path_buf();
    let parts: Vec<&str> = root.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        path.push(part);
        match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(BackupError::Io {
                    path: path.clone(),
                    source: io::Error::other(
                        "is a symlink or a file: a path below it is not restored through it",
                    ),
                })
            }
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// An exclusive lock on the app's backup directory, released when dropped.
fn lock(dir: &Path) -> Result<Flock<File>, BackupError> {
    fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| io_error(&path, source))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| BackupError::Io {
        path,
        source: errno.into(),
    })
}

/// A temporary file or directory, removed when dropped unless it was renamed away.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn file(path: PathBuf) -> Scratch {
        Scratch { path }
    }

    /// A new hidden directory in `parent`: `.KIND-PID-N`.
    fn create(parent: &Path, kind: &str) -> Result<Scratch, BackupError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!(".{kind}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).map_err(|source| io_error(&path, source))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        match self.path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => {
                restore::make_removable(&self.path);
                let _ = fs::remove_dir_all(&self.path);
            }
            Ok(_) => {
                let _ = fs::remove_file(&self.path);
            }
            Err(_) => {}
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    io::Write::write_all(&mut file, bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_error(path: &Path, source: io::Error) -> BackupError {
    BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names() {
        let app = Name::new("web-1").unwrap();
        let at = |s: &str| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .unwrap()
                .and_utc()
        };
        let check = |id: &str, expected: Option<(&str, u32)>| {
            assert_eq!(
                parse_id(&app, id),
                expected.map(|(s, n)| (at(s), n)),
                "{id}"
            );
        };
        check(
            "web-1-20240102T030405Z.tar.gz",
            Some(("2024-01-02 03:04:05", 1)),
        );
        check(
            "web-1-20240102T030405Z-2.tar.gz",
            Some(("2024-01-02 03:04:05", 2)),
        );
        check("web-1-20240102T030405Z-1.tar.gz", None);
        check("web-1-20240102T030405Z-02.tar.gz", None);
        check("web-1-20240102T030405Z.tar.gz.sha256", None);
        check("web-2-20240102T030405Z.tar.gz", None);
        check("web-1-20241302T030405Z.tar.gz", None);
        check("web-1-../../x.tar.gz", None);
        check(".web-1-20240102T030405Z.tar.gz.tmp", None);
    }

    #[test]
    fn roots_are_normalised_and_nested_ones_dropped() {
        let check = |paths: &[&str], expected: Result<&[&str], &str>| {
            let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            match (roots(&paths), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{paths:?}"),
                (Err(got), Err(want)) => assert_eq!(got.to_string(), want, "{paths:?}"),
                (got, want) => panic!("{paths:?}: {got:?}, expected {want:?}"),
            }
        };
        check(&["data"], Ok(&["data"]));
        check(
            &["./data/", "conf/app.toml"],
            Ok(&["conf/app.toml", "data"]),
        );
        check(&["data/db", "data", "data"], Ok(&["data"]));
        check(&["database", "data"], Ok(&["data", "database"]));
        check(
            &["."],
            Err(
                "backup.paths: \".\" is the app's directory itself: name what inside it to \
                 back up, like \"data\"",
            ),
        );
        check(
            &["../x"],
            Err("backup.paths: \"../x\" leaves the app's directory with '..'"),
        );
        check(
            &["/etc"],
            Err("backup.paths: \"/etc\" is absolute: paths are relative to the app's directory"),
        );
    }
}
