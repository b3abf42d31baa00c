//! `build`: a package directory into `NAME-VERSION.tar.gz` and its `.sha256`, byte for byte
//! the same for the same tree, and checked as the agent will check it before it is kept.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use crate::archive::{ArchiveError, Limits, Rule};
use crate::digest::{Hasher, Sha256};
use crate::inspect::inspect;
use crate::manifest::{Manifest, ManifestError, ManifestExt, MANIFEST_FILE};

/// What [`build`] wrote.
#[derive(Debug, Clone)]
pub struct Built {
    /// `OUT_DIR/NAME-VERSION.tar.gz`.
    pub archive: PathBuf,
    /// `OUT_DIR/NAME-VERSION.tar.gz.sha256`, one `sha256sum` line.
    pub checksum_file: PathBuf,
    pub sha256: Sha256,
    /// Files, directories and symlinks in the archive.
    pub files: u64,
    /// Bytes of file contents.
    pub size: u64,
    pub manifest: Manifest,
}

/// Why a package was not built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {kind}: packages hold only files, directories and symlinks", path.display())]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("{}: changed while it was being packed; build again", path.display())]
    Changed { path: PathBuf },
    /// The tree would make an archive that unpacking refuses (a symlink that escapes, a
    /// name that is not UTF-8, more than the default limits allow).
    #[error("{}: {rule}", path.display())]
    Rejected { path: PathBuf, rule: Rule },
    #[error("the built archive does not pass inspection: {0}")]
    Check(ArchiveError),
}

/// Packs the directory `dir` (with `shoal.toml` at its root) into `out_dir`, which is created
/// if missing.
///
/// The manifest is checked first. Entries are written depth first with each directory's
/// children sorted by name, each with mtime 0, uid and gid 0, no owner names, and mode 0755
/// (directories, and files with any executable bit) or 0644; the gzip header has no name or
/// time. The same tree therefore gives the same bytes with the same shoal binary. Symlinks
/// are stored as symlinks; sockets, fifos and devices are refused. When `out_dir` is inside
/// `dir` it is left out of the archive, and when it is `dir` itself, so are the files earlier
/// builds of this package left there (`NAME-*.tar.gz` and their `.sha256`).
///
/// The archive is then read back through [`crate::inspect`] with the default [`Limits`], so a
/// package that builds is one the agent accepts, and only then moved to its name. Blocking.
pub fn build(dir: &Path, out_dir: &Path) -> Result<Built, BuildError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io { path, source }
    };
    let manifest = Manifest::load(&dir.join(MANIFEST_FILE))?;
    fs::create_dir_all(out_dir).map_err(io_error(out_dir))?;
    let source_root = dir.canonicalize().map_err(io_error(dir))?;
    let out_root = out_dir.canonicalize().map_err(io_error(out_dir))?;
    let name = manifest.archive_name();
    let skip = Skip {
        out_dir: (out_root != source_root && out_root.starts_with(&source_root))
            .then(|| out_root.clone()),
        earlier_builds: (out_root == source_root).then(|| format!("{}-", manifest.package.name)),
    };
    let mut entries = Vec::new();
    collect(&source_root, Path::new(""), &skip, &mut entries)?;

    let archive = out_root.join(&name);
    let staging = out_root.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = write_archive(&source_root, &entries, &staging).and_then(|sha256| {
        let inspection = inspect(&staging, &Limits::default()).map_err(|e| match e {
            ArchiveError::Rejected { path, rule, .. } => BuildError::Rejected {
                path: dir.join(path),
                rule,
            },
            other => BuildError::Check(other),
        })?;
        debug_assert_eq!(inspection.sha256, sha256);
        fs::rename(&staging, &archive).map_err(io_error(&archive))?;
        Ok((sha256, inspection))
    });
    let (sha256, inspection) = written.inspect_err(|_| {
        let _ = fs::remove_file(&staging);
    })?;

    let checksum_file = out_root.join(format!("{name}.sha256"));
    let checksum_staging = out_root.join(format!(".{name}.sha256.tmp-{}", std::process::id()));
    fs::write(&checksum_staging, sha256.checksum_line(&name))
        .and_then(|()| fs::rename(&checksum_staging, &checksum_file))
        .map_err(|e| {
            let _ = fs::remove_file(&checksum_staging);
            BuildError::Io {
                path: checksum_file.clone(),
                source: e,
            }
        })?;
    Ok(Built {
        archive,
        checksum_file,
        sha256,
        files: inspection.files,
        size: inspection.size,
        manifest,
    })
}

/// What the walk over the source leaves out (see [`build`]).
struct Skip {
    out_dir: Option<PathBuf>,
    /// `NAME-`: earlier archives of this package in the root, when they are written there.
    earlier_builds: Option<String>,
}

impl Skip {
    fn skips(&self, full: &Path, relative: &Path) -> bool {
        if self.out_dir.as_deref() == Some(full) {
            return true;
        }
        let (Some(prefix), Some(name)) = (&self.earlier_builds, relative.to_str()) else {
            return false;
        };
        let hidden = name.strip_prefix('.').unwrap_or(name);
        relative.parent() == Some(Path::new(""))
            && hidden.starts_with(prefix.as_str())
            && (name.ends_with(".tar.gz")
                || name.ends_with(".tar.gz.sha256")
                || (name.starts_with('.') && name.contains(".tar.gz")))
    }
}

/// One entry to write, in archive order.
enum Source {
    Dir,
    File { executable: bool, size: u64 },
    Link(PathBuf),
}

/// Appends the entries below `root.join(relative)` depth first, children sorted by name.
fn collect(
    root: &Path,
    relative: &Path,
    skip: &Skip,
    out: &mut Vec<(PathBuf, Source)>,
) -> Result<(), BuildError> {
    let dir = root.join(relative);
    let read = |e| BuildError::Io {
        path: dir.clone(),
        source: e,
    };
    let mut children: Vec<_> = fs::read_dir(&dir)
        .map_err(read)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(read)?;
    children.sort();
    for child in children {
        let relative = relative.join(&child);
        let full = root.join(&relative);
        if skip.skips(&full, &relative) {
            continue;
        }
        let meta = fs::symlink_metadata(&full).map_err(|e| BuildError::Io {
            path: full.clone(),
            source: e,
        })?;
        let kind = meta.file_type();
        if kind.is_dir() {
            out.push((relative.clone(), Source::Dir));
            collect(root, &relative, skip, out)?;
        } else if kind.is_file() {
            let executable = meta.permissions().mode() & 0o111 != 0;
            let size = meta.len();
            out.push((relative, Source::File { executable, size }));
        } else if kind.is_symlink() {
            let target = fs::read_link(&full).map_err(|e| BuildError::Io {
                path: full.clone(),
                source: e,
            })?;
            out.push((relative, Source::Link(target)));
        } else {
            use std::os::unix::fs::FileTypeExt;
            let kind = if kind.is_socket() {
                "socket"
            } else if kind.is_fifo() {
                "fifo"
            } else {
                "device"
            };
            return Err(BuildError::Unsupported { path: full, kind });
        }
    }
    Ok(())
}

/// Writes the archive of `entries` to `path`, returning its digest.
fn write_archive(
    root: &Path,
    entries: &[(PathBuf, Source)],
    path: &Path,
) -> Result<Sha256, BuildError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io { path, source }
    };
    let file = File::create(path).map_err(io_error(path))?;
    let gzip: GzEncoder<Hasher<File>> =
        GzBuilder::new().write(Hasher::new(file), Compression::default());
    let mut tar = tar::Builder::new(gzip);
    for (relative, source) in entries {
        let full = root.join(relative);
        let mut header = Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        match source {
            Source::Dir => {
                header.set_entry_type(EntryType::Directory);
                header.set_mode(0o755);
                tar.append_data(&mut header, relative, io::empty())
                    .map_err(io_error(&full))?;
            }
            Source::File { executable, size } => {
                header.set_entry_type(EntryType::Regular);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                header.set_size(*size);
                let file = File::open(&full).map_err(io_error(&full))?;
                let mut counted = Exact {
                    inner: file.take(*size),
                    read: 0,
                };
                tar.append_data(&mut header, relative, &mut counted)
                    .map_err(io_error(&full))?;
                let grown = counted
                    .inner
                    .into_inner()
                    .read(&mut [0u8; 1])
                    .map_err(io_error(&full))?
                    != 0;
                if grown || counted.read != *size {
                    return Err(BuildError::Changed { path: full });
                }
            }
            Source::Link(target) => {
                header.set_entry_type(EntryType::Symlink);
                header.set_mode(0o777);
                tar.append_link(&mut header, relative, target)
                    .map_err(io_error(&full))?;
            }
        }
    }
    let gzip = tar.into_inner().map_err(io_error(path))?;
    let hashed = gzip.finish().map_err(io_error(path))?;
    let (mut file, sha256) = hashed.finish();
    file.flush()
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))?;
    Ok(sha256)
}

/// Counts the bytes a file gives, to notice one that shrank while it was read.
struct Exact<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}
