//! Reading an archive as hostile input: one pass over the tar stream that checks every entry
//! against the rules in the crate docs and hands what passes to a [`Sink`] (the unpacker
//! writes it, inspection only counts it, the agent's restore writes a backup into staging).
//! All see exactly the same checks; [`Options`] says what differs between a package and a
//! backup: whether a manifest is required, whether modes are kept, and the limits.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::digest::Sha256;
use crate::manifest::{Manifest, ManifestError, ManifestExt, MANIFEST_FILE, MAX_MANIFEST_SIZE};

/// What an archive is held to while it is read. Both are counted as the archive is read, not
/// taken from what its headers claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files, directories and symlinks created, including directories that entries imply.
    pub max_files: u64,
    /// Bytes of file contents, all files together.
    pub max_size: u64,
}

impl Default for Limits {
    /// 100 000 files and 1 GiB.
    fn default() -> Limits {
        Limits {
            max_files: 100_000,
            max_size: 1 << 30,
        }
    }
}

/// The longest entry path or symlink target, in bytes. Well above what packages need, and low
/// enough that the paths of `max_files` entries held in memory stay modest.
pub const MAX_PATH_LEN: usize = 1024;

/// The modes of [`Modes::Reset`]: nothing is setuid, setgid, sticky or writable by others.
const DIR_MODE: u32 = 0o755;
const EXECUTABLE_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

/// The largest GNU long-name or long-link record.
const MAX_LONG_NAME: u64 = MAX_PATH_LEN as u64 + 1;
/// The largest pax extended header.
const MAX_PAX: u64 = 64 * 1024;
/// pax global headers in one archive; `git archive` writes one.
const MAX_GLOBAL_HEADERS: u32 = 16;
/// Symlinks followed through while resolving one target, as Linux's limit.
const MAX_LINK_HOPS: usize = 40;
/// Path components walked while resolving all targets of an archive together, so that many
/// long chains cannot make the check itself slow.
const MAX_LINK_STEPS: usize = 1_000_000;

/// The most of a path or link target an error quotes: a hostile one may be as long as an
/// extension header allows, and an error is for people.
const MAX_SHOWN: usize = 200;

/// How [`walk`] reads an archive, beyond the rules every archive is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub limits: Limits,
    pub manifest: ManifestRule,
    pub modes: Modes,
}

impl Options {
    /// A package's: a manifest required, modes reset.
    pub fn package(limits: &Limits) -> Options {
        Options {
            limits: *limits,
            manifest: ManifestRule::Required,
            modes: Modes::Reset,
        }
    }
}

/// Whether an archive must hold a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestRule {
    /// `shoal.toml` at the root: a regular file of at most 64 KiB that parses (a package).
    Required,
    /// None is looked for: `shoal.toml` is a file like any other (a backup).
    NotRead,
}

/// The permission bits a [`Sink`] is handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modes {
    /// 0755 for directories and for files with an executable bit, 0644 for other files: a
    /// package's own bits are not its business.
    Reset,
    /// The archive's permission bits, without setuid, setgid and sticky (a backup, which
    /// restores what it saved).
    Kept,
}

/// What an entry is, for [`Sink::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// The rule an entry broke; [`ArchiveError::Rejected`] names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rule {
    #[error("absolute path: entries are relative to the archive's root")]
    Absolute,
    #[error("'..' in the path: entries stay inside the archive's root")]
    ParentDir,
    #[error("the path is not UTF-8 or contains NUL")]
    BadBytes,
    #[error("empty path")]
    EmptyPath,
    #[error("longer than {MAX_PATH_LEN} bytes")]
    PathTooLong,
    #[error("appears twice in the archive")]
    Duplicate,
    #[error("{parent:?} is a file or a symlink, so nothing can be put below it")]
    ParentNotDir { parent: String },
    #[error("symlink to the absolute path {target:?}: symlinks point inside the archive's root")]
    AbsoluteLink { target: String },
    #[error("symlink to {target:?}, which points outside the archive's root")]
    EscapingLink { target: String },
    #[error("symlink with an empty target")]
    EmptyLink,
    #[error("symlink to {target:?} resolves through too many symlinks")]
    LinkLoop { target: String },
    #[error(
        "symlink to {target:?} climbs out of {through:?}, which the archive does not hold: \
         what is there on disk is not known, and no link is resolved through the disk"
    )]
    LinkThroughUnknown { target: String, through: String },
    #[error("hard link to {target:?}: shoal's archives hold no hard links")]
    HardLink { target: String },
    #[error("{kind}: shoal's archives hold only files, directories and symlinks")]
    Special { kind: &'static str },
    #[error(
        "tar entry type {0:?} is not supported: shoal's archives hold only files, directories and symlinks"
    )]
    UnsupportedType(char),
    #[error("pax header key {key:?} is not supported")]
    UnsupportedPax { key: String },
    #[error("malformed pax header")]
    BadPax,
    #[error("{size}-byte extension header, more than the {limit} allowed")]
    ExtensionTooLarge { size: u64, limit: u64 },
    #[error("a second extension header of the same kind for one entry")]
    RepeatedExtension,
    #[error("more than {MAX_GLOBAL_HEADERS} pax global headers")]
    TooManyGlobalHeaders,
    #[error("a directory or symlink entry that carries {size} bytes of data")]
    UnexpectedData { size: u64 },
    #[error("more than {limit} files, directories and symlinks (the file-count limit)")]
    TooManyFiles { limit: u64 },
    #[error("files add up to more than {limit} bytes (the size limit)")]
    TooLarge { limit: u64 },
    #[error("the archive ends inside this file")]
    Truncated,
    #[error("shoal.toml is not a regular file")]
    ManifestNotFile,
    #[error("shoal.toml is {size} bytes, more than the {MAX_MANIFEST_SIZE} allowed")]
    ManifestTooLarge { size: u64 },
    /// A rule of the reader's own ([`Sink::admit`], [`SinkError::Refused`]): a backup's paths.
    #[error("{0}")]
    Refused(String),
}

/// Why an archive was not inspected or unpacked. Every variant names the archive or the path
/// at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{}: cannot read: {source}", archive.display())]
    Open { archive: PathBuf, source: io::Error },
    #[error(
        "{}: sha256 is {actual}, expected {expected}: the file is damaged or not the one that was published",
        archive.display()
    )]
    Checksum {
        archive: PathBuf,
        expected: Sha256,
        actual: Sha256,
    },
    #[error("{}: changed while it was being unpacked (sha256 now {actual})", archive.display())]
    Changed { archive: PathBuf, actual: Sha256 },
    #[error("{}: not a readable .tar.gz: {source}", archive.display())]
    Read { archive: PathBuf, source: io::Error },
    #[error("{}: {path}: {rule}", archive.display())]
    Rejected {
        archive: PathBuf,
        /// The entry's path as the archive has it (lossily decoded).
        path: String,
        rule: Rule,
    },
    #[error("{}: no shoal.toml at the root of the archive", archive.display())]
    NoManifest { archive: PathBuf },
    #[error("{}: {source}", archive.display())]
    Manifest {
        archive: PathBuf,
        source: ManifestError,
    },
    #[error("{}: already exists: unpacking creates its destination and never writes into an existing one", dest.display())]
    DestinationExists { dest: PathBuf },
    #[error("{}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Where the entries that pass go. Paths are relative, `/`-separated and checked; the parents
/// of each have been handed to `dir` first, and no path is handed over twice. Modes are as
/// [`Options::modes`] says.
pub trait Sink {
    /// Whether the reader takes this entry, by rules of its own (a backup's paths), called
    /// once the walk's own rules passed and before anything of the entry is handed over;
    /// `size` is what a file's header claims. An error says why not, and the walk refuses
    /// the entry with it ([`Rule::Refused`]).
    fn admit(&mut self, _path: &str, _kind: EntryKind, _size: u64) -> Result<(), String> {
        Ok(())
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<(), SinkError>;

    /// Consumes `data` to its end; returns the bytes read. `mtime` is the header's, in
    /// seconds since the epoch.
    fn file(
        &mut self,
        path: &str,
        mode: u32,
        mtime: u64,
        data: &mut dyn Read,
    ) -> Result<u64, SinkError>;

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), SinkError>;
}

/// Why a [`Sink`] did not take an entry.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// By a rule of its own, said here; the walk reports [`Rule::Refused`] for the entry.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What a whole archive held, once every rule passed.
#[derive(Debug)]
pub struct Summary {
    /// Files, directories and symlinks created, implied directories included.
    pub files: u64,
    /// Bytes of file contents.
    pub size: u64,
    /// Present when [`ManifestRule::Required`].
    pub manifest: Option<Manifest>,
}

/// Why [`walk`] stopped; the caller adds the archive's path.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("not a readable tar stream: {0}")]
    Read(#[source] io::Error),
    #[error("{path}: {rule}")]
    Rejected {
        /// The entry's path as the archive has it (lossily decoded, a long one cut short).
        path: String,
        rule: Rule,
    },
    #[error("no shoal.toml at the root of the archive")]
    NoManifest,
    #[error(transparent)]
    Manifest(ManifestError),
    /// The sink failed to write `path` (relative to where it writes).
    #[error("{path}: {source}")]
    Sink { path: String, source: io::Error },
}

impl WalkError {
    /// The public error; `root` is where a sink's paths are (for write errors).
    pub(crate) fn into_archive_error(self, archive: &Path, root: &Path) -> ArchiveError {
        let archive = archive.to_path_buf();
        match self {
            WalkError::Read(source) => ArchiveError::Read { archive, source },
            WalkError::Rejected { path, rule } => ArchiveError::Rejected {
                archive,
                path,
                rule,
            },
            WalkError::NoManifest => ArchiveError::NoManifest { archive },
            WalkError::Manifest(source) => ArchiveError::Manifest { archive, source },
            WalkError::Sink { path, source } => ArchiveError::Write {
                path: root.join(path),
                source,
            },
        }
    }
}

/// Reads the uncompressed tar stream `reader` entry by entry, checking each against the rules
/// and `options` and handing it to `sink`; then checks symlinks against each other and, if
/// required, parses the manifest.
///
/// Time is linear in the entries (each is looked up in a tree of what exists so far by its
/// path's components), memory is bounded by the limits, and no header is read into memory
/// beyond its cap.
pub fn walk(
    reader: impl Read,
    options: &Options,
    sink: &mut dyn Sink,
) -> Result<Summary, WalkError> {
    let mut archive = tar::Archive::new(reader);
    // Raw entries: GNU long names and pax headers are read here, with size limits, instead of
    // by `tar`, which would read them whole into memory whatever their size; nor does `tar`
    // then read GNU sparse maps, whose entries are refused by type.
    let entries = archive.entries().map_err(WalkError::Read)?.raw(true);
    let mut walk = Walk {
        options: *options,
        tree: BTreeMap::new(),
        files: 0,
        size: 0,
        manifest: None,
        links: Vec::new(),
        global_headers: 0,
    };
    let mut pending = Pending::default();
    for entry in entries {
        let mut entry = entry.map_err(WalkError::Read)?;
        walk.entry(&mut entry, &mut pending, sink)?;
    }
    walk.check_links()?;
    let manifest = match options.manifest {
        ManifestRule::NotRead => None,
        ManifestRule::Required => {
            let text = walk.manifest.ok_or(WalkError::NoManifest)?;
            let text = String::from_utf8(text).map_err(|_| {
                WalkError::Manifest(ManifestError::whole(
                    MANIFEST_FILE,
                    "not UTF-8 text".to_owned(),
                ))
            })?;
            Some(Manifest::parse(&text, MANIFEST_FILE).map_err(WalkError::Manifest)?)
        }
    };
    Ok(Summary {
        files: walk.files,
        size: walk.size,
        manifest,
    })
}

/// [`walk`] with a package's [`Options`], returning its manifest.
pub(crate) fn walk_package(
    reader: impl Read,
    limits: &Limits,
    sink: &mut dyn Sink,
) -> Result<(Summary, Manifest), WalkError> {
    let mut summary = walk(reader, &Options::package(limits), sink)?;
    let manifest = summary.manifest.take().ok_or(WalkError::NoManifest)?;
    Ok((summary, manifest))
}

/// What the archive holds so far, as it would be on disk.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Link(String),
}

struct Walk {
    options: Options,
    tree: BTreeMap<String, Node>,
    files: u64,
    size: u64,
    manifest: Option<Vec<u8>>,
    /// Every symlink's path, in archive order, for the check once all are known.
    links: Vec<String>,
    global_headers: u32,
}

/// Extension headers seen before the entry they describe. At most one of each kind, so that
/// every header read is bounded by the entries it describes.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    long_name: bool,
    long_link: bool,
    pax: bool,
}

fn reject<T>(path: &str, rule: Rule) -> Result<T, WalkError> {
    Err(WalkError::Rejected {
        path: shown(path.as_bytes()),
        rule,
    })
}

/// `bytes` as text for an error: lossily decoded, and cut to its first [`MAX_SHOWN`] bytes
/// with the length said when it is longer.
fn shown(bytes: &[u8]) -> String {
    if bytes.len() <= MAX_SHOWN {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let prefix = String::from_utf8_lossy(&bytes[..MAX_SHOWN]);
    let prefix = prefix.trim_end_matches(char::REPLACEMENT_CHARACTER);
    format!("{prefix}... ({} bytes)", bytes.len())
}

impl Walk {
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pending: &mut Pending,
        sink: &mut dyn Sink,
    ) -> Result<(), WalkError> {
        let kind = entry.header().entry_type();
        let size = entry.header().entry_size().map_err(WalkError::Read)?;
        let raw_path = String::from_utf8_lossy(&entry.header().path_bytes()).into_owned();
        match kind {
            EntryType::GNULongName | EntryType::GNULongLink => {
                let seen = if kind == EntryType::GNULongName {
                    &mut pending.long_name
                } else {
                    &mut pending.long_link
                };
                if std::mem::replace(seen, true) {
                    return reject(&raw_path, Rule::RepeatedExtension);
                }
                let name = trim_nuls(read_extension(entry, size, MAX_LONG_NAME, &raw_path)?);
                // A pax name, from a header before this one, takes precedence.
                let slot = if kind == EntryType::GNULongName {
                    &mut pending.path
                } else {
                    &mut pending.link
                };
                slot.get_or_insert(name);
                return Ok(());
            }
            EntryType::XHeader | EntryType::XGlobalHeader => {
                let global = kind == EntryType::XGlobalHeader;
                if global {
                    self.global_headers += 1;
                    if self.global_headers > MAX_GLOBAL_HEADERS {
                        return reject(&raw_path, Rule::TooManyGlobalHeaders);
                    }
                } else if std::mem::replace(&mut pending.pax, true) {
                    return reject(&raw_path, Rule::RepeatedExtension);
                }
                let data = read_extension(entry, size, MAX_PAX, &raw_path)?;
                return pax(&data, &raw_path, if global { None } else { Some(pending) });
            }
            _ => {}
        }

        let described = std::mem::take(pending);
        let path_bytes = described
            .path
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let link = described.link;
        let lossy = String::from_utf8_lossy(&path_bytes).into_owned();
        let path = normalize(&path_bytes).or_else(|rule| reject(&lossy, rule))?;
        let Some(path) = path else {
            // `./`, the root itself, as `tar -C DIR .` writes it.
            return if kind == EntryType::Directory {
                Ok(())
            } else {
                reject(&lossy, Rule::EmptyPath)
            };
        };
        let is_file = matches!(kind, EntryType::Regular | EntryType::Continuous);
        if self.is_manifest(&path) && !is_file {
            return reject(&path, Rule::ManifestNotFile);
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => self.file(entry, size, &path, sink),
            EntryType::Directory => {
                if size != 0 {
                    return reject(&path, Rule::UnexpectedData { size });
                }
                let mode = match self.options.modes {
                    Modes::Reset => DIR_MODE,
                    Modes::Kept => entry.header().mode().map_err(WalkError::Read)? & 0o777,
                };
                admit(sink, &path, EntryKind::Dir, 0)?;
                self.place(&path, Node::Dir, mode, sink)
            }
            EntryType::Symlink => {
                if size != 0 {
                    return reject(&path, Rule::UnexpectedData { size });
                }
                let target = link
                    .or_else(|| entry.header().link_name_bytes().map(|b| b.into_owned()))
                    .unwrap_or_default();
                let target = link_target(&path, &target).or_else(|rule| reject(&path, rule))?;
                admit(sink, &path, EntryKind::Symlink, 0)?;
                self.place(&path, Node::Link(target.clone()), 0, sink)?;
                sink.symlink(&path, &target)
                    .map_err(|e| sink_error(&path, e))?;
                self.links.push(path);
                Ok(())
            }
            EntryType::Link => {
                let target = link
                    .or_else(|| entry.header().link_name_bytes().map(|b| b.into_owned()))
                    .unwrap_or_default();
                reject(
                    &path,
                    Rule::HardLink {
                        target: shown(&target),
                    },
                )
            }
            EntryType::Char => reject(
                &path,
                Rule::Special {
                    kind: "character device",
                },
            ),
            EntryType::Block => reject(
                &path,
                Rule::Special {
                    kind: "block device",
                },
            ),
            EntryType::Fifo => reject(&path, Rule::Special { kind: "fifo" }),
            other => reject(&path, Rule::UnsupportedType(char::from(other.as_byte()))),
        }
    }

    /// Counts one more file, directory or symlink against the limit.
    fn count(&mut self, path: &str) -> Result<(), WalkError> {
        self.files += 1;
        if self.files > self.options.limits.max_files {
            return reject(
                path,
                Rule::TooManyFiles {
                    limit: self.options.limits.max_files,
                },
            );
        }
        Ok(())
    }

    /// Whether `path` is the manifest, which the walk reads itself.
    fn is_manifest(&self, path: &str) -> bool {
        self.options.manifest == ManifestRule::Required && path == MANIFEST_FILE
    }

    /// Records `node` at `path`, creating the directories above it that are not there yet
    /// (with [`DIR_MODE`]); a new directory is handed to the sink with `mode`.
    fn place(
        &mut self,
        path: &str,
        node: Node,
        mode: u32,
        sink: &mut dyn Sink,
    ) -> Result<(), WalkError> {
        for (end, _) in path.match_indices('/') {
            let parent = &path[..end];
            match self.tree.get(parent) {
                Some(Node::Dir) => {}
                Some(_) => {
                    return reject(
                        path,
                        Rule::ParentNotDir {
                            parent: parent.to_owned(),
                        },
                    )
                }
                None => {
                    self.count(path)?;
                    sink.dir(parent, DIR_MODE)
                        .map_err(|e| sink_error(parent, e))?;
                    self.tree.insert(parent.to_owned(), Node::Dir);
                }
            }
        }
        match (self.tree.get(path), &node) {
            (None, _) => {}
            // A directory named again (often once implied by a file below it, then listed):
            // it keeps the mode it was made with, and costs one lookup, like any entry.
            (Some(Node::Dir), Node::Dir) => return Ok(()),
            (Some(_), _) => return reject(path, Rule::Duplicate),
        }
        self.count(path)?;
        if node == Node::Dir {
            sink.dir(path, mode).map_err(|e| sink_error(path, e))?;
        }
        self.tree.insert(path.to_owned(), node);
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        size: u64,
        path: &str,
        sink: &mut dyn Sink,
    ) -> Result<(), WalkError> {
        let allowed = self.options.limits.max_size - self.size;
        let too_large = Rule::TooLarge {
            limit: self.options.limits.max_size,
        };
        if size > allowed {
            return reject(path, too_large);
        }
        let is_manifest = self.is_manifest(path);
        if is_manifest && size > MAX_MANIFEST_SIZE {
            return reject(path, Rule::ManifestTooLarge { size });
        }
        let header_mode = entry.header().mode().map_err(WalkError::Read)?;
        let mode = match self.options.modes {
            Modes::Reset if header_mode & 0o111 != 0 => EXECUTABLE_MODE,
            Modes::Reset => FILE_MODE,
            Modes::Kept => header_mode & 0o777,
        };
        let mtime = entry.header().mtime().map_err(WalkError::Read)?;
        admit(sink, path, EntryKind::File, size)?;
        self.place(path, Node::File, 0, sink)?;
        let mut data = Counted {
            inner: entry,
            read: 0,
            allowed,
            failure: None,
        };
        let written = if is_manifest {
            let mut text = Vec::new();
            data.read_to_end(&mut text).map_err(|e| {
                data.failure
                    .take()
                    .map_or(WalkError::Read(e), |f| f.into_error(path, &too_large))
            })?;
            let written = sink.file(path, mode, mtime, &mut text.as_slice());
            self.manifest = Some(text);
            written
        } else {
            sink.file(path, mode, mtime, &mut data)
        };
        let written = written.map_err(|e| match data.failure.take() {
            Some(failure) => failure.into_error(path, &too_large),
            None => sink_error(path, e),
        })?;
        if data.read != size || written != size {
            return reject(path, Rule::Truncated);
        }
        self.size += data.read;
        Ok(())
    }

    /// Follows every symlink through the others, as the kernel would, and refuses any that
    /// ends up outside the root, or climbs back out of a name the archive does not hold.
    /// Checking each target alone is not enough: with `a -> .`, the target `a/..` looks
    /// inside but is the root's parent. Nothing on disk is looked at: what the archive does
    /// not hold is unknown, so with `self -> .` on disk beside a restored `data`, the target
    /// `../self/..` is refused.
    fn check_links(&self) -> Result<(), WalkError> {
        let mut steps = 0;
        for path in &self.links {
            let Some(Node::Link(target)) = self.tree.get(path) else {
                continue;
            };
            let escaping = || Rule::EscapingLink {
                target: target.clone(),
            };
            let looping = || Rule::LinkLoop {
                target: target.clone(),
            };
            let mut dir = Cursor::default();
            for part in path.split('/').take(path.matches('/').count()) {
                dir.push(part);
            }
            let mut queue: VecDeque<&str> = components(target).collect();
            let mut hops = 0;
            // The first name on the way that the archive does not hold, once one is passed.
            let mut unknown: Option<String> = None;
            while let Some(part) = queue.pop_front() {
                steps += 1;
                if steps > MAX_LINK_STEPS {
                    return reject(path, looping());
                }
                if part == ".." {
                    if let Some(through) = unknown {
                        return reject(
                            path,
                            Rule::LinkThroughUnknown {
                                target: target.clone(),
                                through,
                            },
                        );
                    }
                    if !dir.pop() {
                        return reject(path, escaping());
                    }
                    continue;
                }
                dir.push(part);
                // No path in the tree is longer than MAX_PATH_LEN, so a longer one is no entry.
                let node = (dir.path.len() <= MAX_PATH_LEN)
                    .then(|| self.tree.get(dir.path.as_str()))
                    .flatten();
                match node {
                    Some(Node::Link(next)) => {
                        hops += 1;
                        if hops > MAX_LINK_HOPS {
                            return reject(path, looping());
                        }
                        dir.pop();
                        for part in components(next).collect::<Vec<_>>().into_iter().rev() {
                            queue.push_front(part);
                        }
                    }
                    // Nothing resolves below a file; the kernel stops there too.
                    Some(Node::File) => break,
                    Some(Node::Dir) => {}
                    // A name the archive does not hold: nothing in a fresh package directory,
                    // but anything in a backup's (an app's other files, an installed
                    // version's symlinks). Names below it are taken as written, since they
                    // stay below it whatever it is; climbing back out of it with `..` could
                    // land anywhere, so that is refused.
                    None => {
                        if unknown.is_none() {
                            unknown = Some(shown(dir.path.as_bytes()));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Asks the sink whether it takes an entry; its refusal is the entry's.
fn admit(sink: &mut dyn Sink, path: &str, kind: EntryKind, size: u64) -> Result<(), WalkError> {
    sink.admit(path, kind, size)
        .or_else(|why| reject(path, Rule::Refused(why)))
}

fn sink_error(path: &str, error: SinkError) -> WalkError {
    match error {
        SinkError::Refused(why) => WalkError::Rejected {
            path: shown(path.as_bytes()),
            rule: Rule::Refused(why),
        },
        SinkError::Io(source) => WalkError::Sink {
            path: path.to_owned(),
            source,
        },
    }
}

/// A directory path walked one component at a time without reallocating: `a/b/c` and where
/// each component starts.
#[derive(Default)]
struct Cursor {
    path: String,
    starts: Vec<usize>,
}

impl Cursor {
    fn push(&mut self, part: &str) {
        self.starts.push(self.path.len());
        if !self.path.is_empty() {
            self.path.push('/');
        }
        self.path.push_str(part);
    }

    /// Goes up one level; false at the root.
    fn pop(&mut self) -> bool {
        match self.starts.pop() {
            Some(start) => {
                self.path.truncate(start);
                true
            }
            None => false,
        }
    }
}

/// The entry's reader, counting what is read against the size limit.
struct Counted<'a, R> {
    inner: &'a mut R,
    read: u64,
    allowed: u64,
    failure: Option<Failure>,
}

/// Why a [`Counted`] read failed, kept because the error passes through the sink.
enum Failure {
    OverLimit,
    Read(io::Error),
}

impl Failure {
    fn into_error(self, path: &str, too_large: &Rule) -> WalkError {
        match self {
            Failure::OverLimit => WalkError::Rejected {
                path: path.to_owned(),
                rule: too_large.clone(),
            },
            Failure::Read(e) => WalkError::Read(e),
        }
    }
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let message = e.to_string();
                self.failure = Some(Failure::Read(e));
                return Err(io::Error::other(message));
            }
        };
        self.read += n as u64;
        if self.read > self.allowed {
            self.failure = Some(Failure::OverLimit);
            return Err(io::Error::other("over the size limit"));
        }
        Ok(n)
    }
}

/// Reads an extension header's data, refusing one larger than `limit`.
fn read_extension<R: Read>(
    entry: &mut R,
    size: u64,
    limit: u64,
    path: &str,
) -> Result<Vec<u8>, WalkError> {
    if size > limit {
        return reject(path, Rule::ExtensionTooLarge { size, limit });
    }
    let mut data = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut data).map_err(WalkError::Read)?;
    if data.len() as u64 != size {
        return reject(path, Rule::Truncated);
    }
    Ok(data)
}

fn trim_nuls(mut name: Vec<u8>) -> Vec<u8> {
    while name.last() == Some(&0) {
        name.pop();
    }
    name
}

/// Applies a pax header: `path` and `linkpath` rename the next entry (`pending`, or `None` for
/// a global header, where they are refused); `size` and sparse files are refused, because
/// readers that disagree on them see different archives; other keys (times, owners,
/// comments, attributes) are ignored, as shoal restores none of them.
fn pax(data: &[u8], path: &str, pending: Option<&mut Pending>) -> Result<(), WalkError> {
    let mut names = (None, None);
    for record in tar::PaxExtensions::new(data) {
        let record = record.or_else(|_| reject(path, Rule::BadPax))?;
        let key = record.key().or_else(|_| reject(path, Rule::BadPax))?;
        match key {
            "path" => names.0 = Some(record.value_bytes().to_vec()),
            "linkpath" => names.1 = Some(record.value_bytes().to_vec()),
            "size" => {
                return reject(
                    path,
                    Rule::UnsupportedPax {
                        key: key.to_owned(),
                    },
                )
            }
            _ if key.starts_with("GNU.sparse") => {
                return reject(
                    path,
                    Rule::UnsupportedPax {
                        key: shown(key.as_bytes()),
                    },
                )
            }
            _ => {}
        }
    }
    match pending {
        Some(pending) => {
            if let Some(p) = names.0 {
                pending.path = Some(p);
            }
            if let Some(l) = names.1 {
                pending.link = Some(l);
            }
        }
        None if names.0.is_some() => {
            return reject(
                path,
                Rule::UnsupportedPax {
                    key: "path".to_owned(),
                },
            )
        }
        None if names.1.is_some() => {
            return reject(
                path,
                Rule::UnsupportedPax {
                    key: "linkpath".to_owned(),
                },
            )
        }
        None => {}
    }
    Ok(())
}

/// The entry path as `a/b/c`: UTF-8, relative, no `..`; `.` and empty components dropped.
/// `None` for the root itself.
fn normalize(bytes: &[u8]) -> Result<Option<String>, Rule> {
    let text = std::str::from_utf8(bytes).map_err(|_| Rule::BadBytes)?;
    if text.contains('\0') {
        return Err(Rule::BadBytes);
    }
    if text.len() > MAX_PATH_LEN {
        return Err(Rule::PathTooLong);
    }
    if text.starts_with('/') {
        return Err(Rule::Absolute);
    }
    let mut parts = Vec::new();
    for part in components(text) {
        if part == ".." {
            return Err(Rule::ParentDir);
        }
        parts.push(part);
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// The target of the symlink at `path`, checked on its own: relative, and not climbing above
/// the root when read from the link's directory.
fn link_target(path: &str, bytes: &[u8]) -> Result<String, Rule> {
    let target = std::str::from_utf8(bytes).map_err(|_| Rule::BadBytes)?;
    if target.contains('\0') {
        return Err(Rule::BadBytes);
    }
    if target.is_empty() {
        return Err(Rule::EmptyLink);
    }
    if target.len() > MAX_PATH_LEN {
        return Err(Rule::PathTooLong);
    }
    if target.starts_with('/') {
        return Err(Rule::AbsoluteLink {
            target: target.to_owned(),
        });
    }
    let mut depth = path.matches('/').count();
    for part in components(target) {
        if part == ".." {
            depth = depth.checked_sub(1).ok_or_else(|| Rule::EscapingLink {
                target: target.to_owned(),
            })?;
        } else {
            depth += 1;
        }
    }
    Ok(target.to_owned())
}

/// The components of a `/`-separated path, without empty ones and `.`.
fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|p| !p.is_empty() && *p != ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let check = |input: &str, expected: Result<Option<&str>, Rule>| {
            assert_eq!(
                normalize(input.as_bytes()),
                expected.map(|p| p.map(str::to_owned)),
                "{input:?}"
            );
        };
        check("a/b", Ok(Some("a/b")));
        check("./a//b/", Ok(Some("a/b")));
        check("./", Ok(None));
        check("/etc/passwd", Err(Rule::Absolute));
        check("a/../../b", Err(Rule::ParentDir));
        check("..", Err(Rule::ParentDir));
        check("a/..b", Ok(Some("a/..b")));
        assert_eq!(normalize(b"a\xffb"), Err(Rule::BadBytes));
    }

    #[test]
    fn link_targets_alone() {
        let check = |path: &str, target: &str, ok: bool| {
            assert_eq!(
                link_target(path, target.as_bytes()).is_ok(),
                ok,
                "{path} -> {target}"
            );
        };
        check("a", "b", true);
        check("a", "..", false);
        check("d/a", "../b", true);
        check("d/a", "../../b", false);
        check("d/a", "x/../../b", true);
        check("d/a", "x/../../../b", false);
        check("a", "/etc", false);
        check("a", "", false);
    }
}
