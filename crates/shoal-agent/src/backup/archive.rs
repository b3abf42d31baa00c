//! Writing the backup archive: an app's paths into a `.tar.gz`, an index entry first, without
//! following symlinks. Reading one back is `restore.rs`, through `shoal-pkg`'s walk.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use chrono::{DateTime, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;
use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};
use shoal_pkg::manifest::Name;
use shoal_pkg::{Hasher, Sha256};
use tar::{EntryType, Header};

use super::INDEX;

/// What [`write`] produced.
#[derive(Debug)]
pub(super) struct Written {
    pub sha256: Sha256,
    pub notes: Vec<String>,
}

/// The archive's first entry.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Index {
    pub app: String,
    pub created_at: DateTime<Utc>,
    /// The paths the archive holds, relative to the app's directory.
    pub paths: Vec<String>,
}

/// Writes the archive of `roots` (below `app_dir`) to `dest`, which must not exist, and
/// syncs it.
pub(super) fn write(
    dest: &Path,
    app_dir: &Path,
    app: &Name,
    now: DateTime<Utc>,
    roots: &[String],
) -> io::Result<Written> {
    let mut notes = Vec::new();
    let mut present = Vec::new();
    for root in roots {
        match root_kind(app_dir, root)? {
            Ok(()) => present.push(root.clone()),
            Err(note) => notes.push(format!("{root}: {note}")),
        }
    }

    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)?;
    let hashing = Hasher::new(BufWriter::new(file));
    let mut tar = tar::Builder::new(GzEncoder::new(hashing, Compression::default()));
    let index = serde_json::to_vec_pretty(&Index {
        app: app.to_string(),
        created_at: now,
        paths: present.clone(),
    })?;
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(index.len() as u64);
    header.set_mtime(u64::try_from(now.timestamp()).unwrap_or(0));
    tar.append_data(&mut header, INDEX, index.as_slice())?;
    for root in &present {
        add_tree(&mut tar, app_dir, root, &mut notes)?;
    }
    let (buffered, sha256) = tar.into_inner()?.finish()?.finish();
    let file = buffered
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    Ok(Written { sha256, notes })
}

/// Whether `root` goes in the backup, or the note saying why not.
fn root_kind(app_dir: &Path, root: &str) -> io::Result<Result<(), String>> {
    let mut path = app_dir.to_path_buf();
    let parts: Vec<&str> = root.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let meta = match path.symlink_metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Err("missing: not in the backup".to_owned()))
            }
            Err(e) => return Err(e),
        };
        let last = i == parts.len() - 1;
        if !last && !meta.is_dir() {
            let above = parts[..=i].join("/");
            return Ok(Err(format!(
                "{above} is a symlink or a file: left out, as backups never follow links"
            )));
        }
        if last && meta.file_type().is_symlink() {
            let target = fs::read_link(&path)?;
            let Some(target) = target.to_str() else {
                return Ok(Err(
                    "a symlink to a name that is not UTF-8: left out".to_owned()
                ));
            };
            if let Err(why) = link_inside(root, target) {
                return Ok(Err(format!("{why}: left out")));
            }
        }
    }
    Ok(Ok(()))
}

/// Appends `root` and everything below it, depth first in name order, never following a
/// symlink.
fn add_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    app_dir: &Path,
    root: &str,
    notes: &mut Vec<String>,
) -> io::Result<()> {
    let mut stack = vec![root.to_owned()];
    while let Some(rel) = stack.pop() {
        let full = app_dir.join(&rel);
        let meta = match full.symlink_metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                notes.push(format!(
                    "{rel}: removed while it was read: not in the backup"
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        let kind = meta.file_type();
        let mut header = Header::new_gnu();
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_uid(0);
        header.set_gid(0);
        if kind.is_dir() {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(meta.mode() & 0o777);
            header.set_size(0);
            tar.append_data(&mut header, &rel, io::empty())?;
            let mut children = Vec::new();
            for entry in fs::read_dir(&full)? {
                let name = entry?.file_name();
                match name.to_str() {
                    Some(name) => children.push(format!("{rel}/{name}")),
                    None => notes.push(format!(
                        "{rel}/{}: the name is not UTF-8: left out",
                        name.to_string_lossy()
                    )),
                }
            }
            children.sort();
            stack.extend(children.into_iter().rev());
        } else if kind.is_file() {
            // O_NOFOLLOW: a file replaced by a symlink since it was looked at is not read
            // through.
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(OFlag::O_NOFOLLOW.bits())
                .open(&full)?;
            let size = file.metadata()?.len();
            header.set_entry_type(EntryType::Regular);
            header.set_mode(meta.mode() & 0o777);
            header.set_size(size);
            let mut reader = Exactly {
                inner: file.take(size),
                left: size,
                padded: 0,
            };
            tar.append_data(&mut header, &rel, &mut reader)?;
            if reader.padded > 0 {
                notes.push(format!(
                    "{rel}: shrank by {} bytes while it was read: padded with zeros",
                    reader.padded
                ));
            }
        } else if kind.is_symlink() {
            let target = fs::read_link(&full)?;
            let Some(target) = target.to_str() else {
                notes.push(format!(
                    "{rel}: a symlink to a name that is not UTF-8: left out"
                ));
                continue;
            };
            if let Err(why) = link_inside(&rel, target) {
                notes.push(format!("{rel}: {why}: left out"));
                continue;
            }
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, &rel, target)?;
        } else {
            use std::os::unix::fs::FileTypeExt;
            let what = if kind.is_socket() {
                "a socket"
            } else if kind.is_fifo() {
                "a fifo"
            } else {
                "a device"
            };
            notes.push(format!("{rel}: {what}: left out"));
        }
    }
    Ok(())
}

/// Checks a symlink's target on its own: relative, not empty, and not climbing above the
/// app's directory from the link's directory (`path` is relative to the app's directory).
fn link_inside(path: &str, target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("a symlink with an empty target".to_owned());
    }
    if target.starts_with('/') {
        return Err(format!(
            "a symlink to the absolute path {target:?}: backups hold links inside the app's directory only"
        ));
    }
    let mut depth = path.matches('/').count();
    for part in components(target) {
        if part == ".." {
            depth = depth.checked_sub(1).ok_or_else(|| {
                format!("a symlink to {target:?}, which points outside the app's directory")
            })?;
        } else {
            depth += 1;
        }
    }
    Ok(())
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|p| !p.is_empty() && *p != ".")
}

/// A file's first `left` bytes, padded with zeros if it ends sooner: the size in a tar
/// header is a promise.
struct Exactly<R> {
    inner: R,
    left: u64,
    padded: u64,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
            self.padded += n as u64;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_alone() {
        let check = |path: &str, target: &str, ok: bool| {
            assert_eq!(link_inside(path, target).is_ok(), ok, "{path} -> {target}");
        };
        check("data/a", "b", true);
        check("data/a", "../versions/1.0.0/x", true);
        check("data/a", "..", true);
        check("data/a", "../..", false);
        check("data/x/a", "../../current", true);
        check("data/a", "/etc/passwd", false);
        check("data/a", "", false);
        check("data/a", "./././../../x", false);
    }
}
