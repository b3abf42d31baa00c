//! The backup archive: an app's paths written into a `.tar.gz` without following symlinks,
//! and an archive read back as hostile input into a staging directory.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};
use shoal_pkg::manifest::Name;
use shoal_pkg::{Hasher, Sha256};
use tar::{EntryType, Header};

use super::{BackupError, INDEX};

/// What [`write`] produced.
#[derive(Debug)]
pub(super) struct Written {
    pub sha256: Sha256,
    pub notes: Vec<String>,
}

/// What [`extract`] put in the staging directory.
#[derive(Debug)]
pub(super) struct Extracted {
    /// The paths the backup holds, relative to the app's directory.
    pub roots: Vec<String>,
    /// The archive's digest, computed as it was read.
    pub sha256: Sha256,
}

/// Why [`extract`] stopped; [`ExtractError::at`] names the archive.
#[derive(Debug)]
pub(super) enum ExtractError {
    Read(io::Error),
    Write { path: PathBuf, source: io::Error },
    Rejected { path: String, why: String },
    NotABackup(String),
}

impl ExtractError {
    pub(super) fn at(self, archive: &Path, app: &Name) -> BackupError {
        let archive = archive.to_path_buf();
        match self {
            ExtractError::Read(e) => BackupError::NotABackup {
                archive,
                app: app.clone(),
                why: format!("not a readable .tar.gz: {e}"),
            },
            ExtractError::Write { path, source } => BackupError::Io { path, source },
            ExtractError::Rejected { path, why } => BackupError::Rejected { archive, path, why },
            ExtractError::NotABackup(why) => BackupError::NotABackup {
                archive,
                app: app.clone(),
                why,
            },
        }
    }
}

/// The archive's first entry.
#[derive(Debug, Serialize, Deserialize)]
struct Index {
    app: String,
    created_at: DateTime<Utc>,
    /// The paths the archive holds, relative to the app's directory.
    paths: Vec<String>,
}

/// The largest index read back.
const MAX_INDEX: u64 = 64 * 1024;
/// The longest entry path or symlink target read back.
const MAX_PATH_LEN: usize = 4096;
/// Symlinks followed through while resolving one target, as Linux's limit.
const MAX_LINK_HOPS: usize = 40;
/// Path components walked while resolving every target of an archive.
const MAX_LINK_STEPS: usize = 1_000_000;

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

/// Reads the archive in `file` into `staging`, checking every entry (see the module docs),
/// and hashes the whole file on the way.
pub(super) fn extract(file: File, staging: &Path, app: &Name) -> Result<Extracted, ExtractError> {
    let mut hashing = Hasher::new(BufReader::new(file));
    let roots = {
        let mut archive = tar::Archive::new(GzDecoder::new(&mut hashing));
        let mut entries = archive.entries().map_err(ExtractError::Read)?;
        let first = entries
            .next()
            .ok_or_else(|| ExtractError::NotABackup("the archive is empty".to_owned()))?
            .map_err(ExtractError::Read)?;
        let roots = read_index(first, app)?;
        let mut walk = Walk {
            staging,
            roots: &roots,
            tree: BTreeMap::new(),
            dirs: Vec::new(),
            links: Vec::new(),
        };
        for entry in entries {
            walk.entry(entry.map_err(ExtractError::Read)?)?;
        }
        walk.check_links()?;
        for root in &roots {
            if !walk.tree.contains_key(root) {
                return Err(ExtractError::NotABackup(format!(
                    "its index names {root:?}, which it does not hold"
                )));
            }
        }
        walk.finish()?;
        roots
    };
    // The rest of the file (the gzip trailer, anything after it) completes the digest.
    io::copy(&mut hashing, &mut io::sink()).map_err(ExtractError::Read)?;
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

fn read_index<R: Read>(
    mut entry: tar::Entry<'_, R>,
    app: &Name,
) -> Result<Vec<String>, ExtractError> {
    let not_backup = |why: String| ExtractError::NotABackup(why);
    let path = entry.path_bytes();
    if &*path != INDEX.as_bytes() || entry.header().entry_type() != EntryType::Regular {
        return Err(not_backup(format!(
            "its first entry is {:?}, not {INDEX}",
            String::from_utf8_lossy(&path)
        )));
    }
    let mut text = Vec::new();
    (&mut entry)
        .take(MAX_INDEX + 1)
        .read_to_end(&mut text)
        .map_err(ExtractError::Read)?;
    if text.len() as u64 > MAX_INDEX {
        return Err(not_backup(format!("{INDEX} is over {MAX_INDEX} bytes")));
    }
    let index: Index =
        serde_json::from_slice(&text).map_err(|e| not_backup(format!("{INDEX}: {e}")))?;
    if index.app != app.as_str() {
        return Err(not_backup(format!("it holds a backup of {:?}", index.app)));
    }
    let roots = super::roots(&index.paths).map_err(|e| not_backup(format!("{INDEX}: {e}")))?;
    if roots != index.paths {
        return Err(not_backup(format!(
            "{INDEX}: the paths are not in the form shoal writes them"
        )));
    }
    Ok(roots)
}

/// What the archive holds so far, as it is in the staging directory.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Link(String),
}

struct Walk<'a> {
    staging: &'a Path,
    roots: &'a [String],
    tree: BTreeMap<String, Node>,
    /// Directories created and the modes they get once everything is in them.
    dirs: Vec<(PathBuf, u32)>,
    links: Vec<String>,
}

fn reject<T>(path: &str, why: impl Into<String>) -> Result<T, ExtractError> {
    Err(ExtractError::Rejected {
        path: path.to_owned(),
        why: why.into(),
    })
}

impl Walk<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let path = match normalize(&raw) {
            Ok(Some(path)) => path,
            Ok(None) => return reject(&shown, "an empty path"),
            Err(why) => return reject(&shown, why),
        };
        if !self
            .roots
            .iter()
            .any(|r| path == *r || path.starts_with(&format!("{r}/")))
        {
            return reject(&path, "outside the paths the backup holds");
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => self.file(&mut entry, &path),
            EntryType::Directory => {
                let mode = entry.header().mode().map_err(ExtractError::Read)? & 0o777;
                self.place(&path, Node::Dir, mode)
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let Ok(target) = String::from_utf8(target) else {
                    return reject(&path, "a symlink to a name that is not UTF-8");
                };
                if target.contains('\0') || target.len() > MAX_PATH_LEN {
                    return reject(&path, "a symlink target with NUL, or too long");
                }
                link_inside(&path, &target).or_else(|why| reject(&path, why))?;
                self.place(&path, Node::Link(target.clone()), 0)?;
                let full = self.staging.join(&path);
                std::os::unix::fs::symlink(&target, &full)
                    .map_err(|source| ExtractError::Write { path: full, source })?;
                self.links.push(path);
                Ok(())
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = String::from_utf8_lossy(&target).into_owned();
                reject(
                    &path,
                    format!("a hard link to {target:?}: backups hold none"),
                )
            }
            EntryType::Char => reject(&path, "a character device: backups hold none"),
            EntryType::Block => reject(&path, "a block device: backups hold none"),
            EntryType::Fifo => reject(&path, "a fifo: backups hold none"),
            other => reject(
                &path,
                format!(
                    "tar entry type {:?}: backups hold only files, directories and symlinks",
                    char::from(other.as_byte())
                ),
            ),
        }
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &str,
    ) -> Result<(), ExtractError> {
        let header = entry.header();
        let mode = header.mode().map_err(ExtractError::Read)? & 0o777;
        let mtime = header.mtime().map_err(ExtractError::Read)?;
        let size = header.entry_size().map_err(ExtractError::Read)?;
        self.place(path, Node::File, mode)?;
        let full = self.staging.join(path);
        let write_error = |source| ExtractError::Write {
            path: full.clone(),
            source,
        };
        // create_new: O_EXCL, which also refuses a symlink at the last component.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)
            .map_err(write_error)?;
        let copied = copy(entry, &mut file).map_err(|e| match e {
            Copy::Read(e) => ExtractError::Read(e),
            Copy::Write(e) => write_error(e),
        })?;
        if copied != size {
            return reject(path, "the archive ends inside this file");
        }
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(write_error)?;
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))
            .map_err(write_error)?;
        file.sync_all().map_err(write_error)
    }

    /// Records `node` at `path`, creating the directories above it that are not there yet;
    /// nothing is ever placed below a file or a symlink.
    fn place(&mut self, path: &str, node: Node, mode: u32) -> Result<(), ExtractError> {
        for (end, _) in path.match_indices('/') {
            let parent = &path[..end];
            match self.tree.get(parent) {
                Some(Node::Dir) => {}
                Some(_) => {
                    return reject(
                        path,
                        format!(
                            "{parent:?} is a file or a symlink, so nothing can be put below it"
                        ),
                    )
                }
                None => self.dir(parent, 0o755)?,
            }
        }
        match (self.tree.get(path), &node) {
            (None, Node::Dir) => self.dir(path, mode),
            (None, _) => {
                self.tree.insert(path.to_owned(), node);
                Ok(())
            }
            // A directory named again, once implied by an entry below it.
            (Some(Node::Dir), Node::Dir) => {
                let full = self.staging.join(path);
                if let Some(entry) = self.dirs.iter_mut().find(|(p, _)| *p == full) {
                    entry.1 = mode;
                }
                Ok(())
            }
            (Some(_), _) => reject(path, "appears twice in the archive"),
        }
    }

    /// Creates the directory `path`, writable by us until [`Walk::finish`] gives it `mode`.
    fn dir(&mut self, path: &str, mode: u32) -> Result<(), ExtractError> {
        let full = self.staging.join(path);
        DirBuilder::new()
            .mode(0o700)
            .create(&full)
            .map_err(|source| ExtractError::Write {
                path: full.clone(),
                source,
            })?;
        self.tree.insert(path.to_owned(), Node::Dir);
        self.dirs.push((full, mode));
        Ok(())
    }

    /// Gives directories their modes, deepest first, and syncs them.
    fn finish(&self) -> Result<(), ExtractError> {
        for (dir, mode) in self.dirs.iter().rev() {
            let error = |source| ExtractError::Write {
                path: dir.clone(),
                source,
            };
            File::open(dir).and_then(|d| d.sync_all()).map_err(error)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(*mode)).map_err(error)?;
        }
        Ok(())
    }

    /// Follows every symlink through the others, as the kernel would, and refuses any that
    /// ends up outside the app's directory. Checking each alone is not enough: with
    /// `data/a -> ..`, the target `a/..` of `data/b` looks inside but is `apps/`.
    fn check_links(&self) -> Result<(), ExtractError> {
        let mut steps = 0;
        for path in &self.links {
            let Some(Node::Link(target)) = self.tree.get(path) else {
                continue;
            };
            let escaping =
                || format!("a symlink to {target:?}, which resolves outside the app's directory");
            let mut dir: Vec<&str> = path.split('/').collect();
            dir.pop();
            let mut queue: VecDeque<&str> = components(target).collect();
            let mut hops = 0;
            while let Some(part) = queue.pop_front() {
                steps += 1;
                if steps > MAX_LINK_STEPS {
                    return reject(
                        path,
                        format!("a symlink to {target:?} that takes too long to resolve"),
                    );
                }
                if part == ".." {
                    if dir.pop().is_none() {
                        return reject(path, escaping());
                    }
                    continue;
                }
                dir.push(part);
                match self.tree.get(&dir.join("/")) {
                    Some(Node::Link(next)) => {
                        hops += 1;
                        if hops > MAX_LINK_HOPS {
                            return reject(
                                path,
                                format!("a symlink to {target:?} that resolves through too many symlinks"),
                            );
                        }
                        dir.pop();
                        for part in components(next).collect::<Vec<_>>().into_iter().rev() {
                            queue.push_front(part);
                        }
                    }
                    // Nothing resolves below a file.
                    Some(Node::File) => break,
                    // A directory, or a name the archive does not hold: taken as written.
                    Some(Node::Dir) | None => {}
                }
            }
        }
        Ok(())
    }
}

/// `a/b/c`: UTF-8, relative, no `..`, no NUL; `.` and empty components dropped. `None` for
/// the root itself.
fn normalize(bytes: &[u8]) -> Result<Option<String>, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the path is not UTF-8")?;
    if text.contains('\0') {
        return Err("the path contains NUL");
    }
    if text.len() > MAX_PATH_LEN {
        return Err("the path is too long");
    }
    if text.starts_with('/') {
        return Err("an absolute path: entries are relative to the app's directory");
    }
    let mut parts = Vec::new();
    for part in components(text) {
        if part == ".." {
            return Err("'..' in the path: entries stay inside the app's directory");
        }
        parts.push(part);
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
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

/// Why [`copy`] failed: reading the archive, or writing the file.
enum Copy {
    Read(io::Error),
    Write(io::Error),
}

fn copy(from: &mut impl Read, to: &mut impl Write) -> Result<u64, Copy> {
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Copy::Write)?;
        total += n as u64;
    }
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

    #[test]
    fn paths() {
        assert_eq!(normalize(b"data/./a//b").unwrap().unwrap(), "data/a/b");
        assert_eq!(normalize(b"./").unwrap(), None);
        assert!(normalize(b"/data").is_err());
        assert!(normalize(b"data/../x").is_err());
        assert!(normalize(b"data/\xff").is_err());
    }
}
