//! [`RotatingFile`]: an append-only file of whole records under a stable name (followed when
//! someone else deletes or renames the file), rotated by size and at local-time boundaries,
//! whose rotated copies are compressed and pruned on a background thread. The log file sink writes through it; anything else that keeps a log (an agent
//! capturing a child's output) can too.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::timer::{Clock, Schedule, SystemClock, Unit, Zone};

/// How often a write checks that the path still names the open file, and how long a failed
/// rotation waits before it is tried again.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A `.gz.tmp` file untouched for this long is left over from a compression that stopped (its
/// process died); a younger one may be another process's compression under way.
const ABANDONED: Duration = Duration::from_secs(60);

/// When a [`RotatingFile`] rotates, and what happens to the rotated files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a record would take the file past this many bytes; None = never by size.
    /// A record larger than this still goes whole into a fresh file.
    pub max_size: Option<u64>,
    /// Rotate at the first write after each minute, hour or day boundary of local time; None =
    /// never by time.
    pub every: Option<Unit>,
    /// How many rotated files to keep, newest first; older ones are deleted.
    pub keep: usize,
    /// Gzip rotated files (`NAME.STAMP.gz`).
    pub compress: bool,
}

impl Default for Rotation {
    /// 10 MiB, no time rotation, 7 kept, compressed.
    fn default() -> Self {
        Rotation {
            max_size: Some(10 << 20),
            every: None,
            keep: 7,
            compress: true,
        }
    }
}

/// A log file that is always written under the same name.
///
/// A rotation renames the active file to `NAME.YYYYMMDDTHHMMSSZ` (the UTC time of the
/// rotation, with `-1`, `-2`, … added when that name is taken) and opens a fresh `NAME`; a
/// background thread then gzips it to `NAME.YYYYMMDDTHHMMSSZ.gz` (when
/// [`Rotation::compress`]) and deletes all but the newest [`Rotation::keep`] rotated files.
/// Writers never wait for either.
///
/// Rotated names sort in the order the rotations were made, and "newest" means last in that
/// order: the stamps are UTC, so the end of summer time does not turn them back, and a name
/// never sorts before an earlier one, so a clock set back makes the next names reuse the
/// newest stamp with higher suffixes. Names of earlier versions (`NAME.YYYYMMDD-HHMMSS`, local
/// time) count as older than all of these. Time rotation (`every`) still happens at local-time
/// boundaries; only the names are UTC.
///
/// Each [`write_record`](RotatingFile::write_record) (and each `write` through
/// [`io::Write`]) is one record: written whole under a lock, never split across two files nor
/// interleaved with another thread's. Opening appends to an existing file. Clones share the
/// file.
///
/// Opening also has the background thread clean up after a process that stopped half-way:
/// `.gz.tmp` files of interrupted compressions are removed (once untouched for a minute: a
/// younger one may be another process's compression under way), and rotated files left
/// uncompressed are compressed (when [`Rotation::compress`]).
///
/// A rotation that fails (the rename is refused) costs no record: records go on into the
/// active file, the failure is reported on stderr once (until a rotation works again), and
/// the rotation is tried again a second later.
///
/// # Someone else moves the file
///
/// The path is followed, not the open file: when the file at the path is deleted (`rm`) or
/// renamed away (an outside logrotate), the next rotation, or the first write a second or
/// more after the last look, notices that the path names another file or none and opens the
/// path again (creating it). Records written in that second go to the old file: lost with it
/// if it was deleted.
///
/// Two processes that share a path (the old and the new one during a re-executing upgrade)
/// each rotate on their own count. After one of them renames the file aside, the other
/// follows within about a second; what it writes in that second lands in the rotated file,
/// and is lost if that file is compressed (which removes it) within the same second.
#[derive(Clone)]
pub struct RotatingFile {
    inner: Arc<Inner>,
}

impl RotatingFile {
    /// Opens (creating it and its directory if needed) `path` for appending.
    pub fn open(path: impl Into<PathBuf>, rotation: Rotation) -> io::Result<RotatingFile> {
        RotatingFile::open_with_clock(path, rotation, Arc::new(SystemClock))
    }

    /// The same with the time read from `clock`, so that time rotation can be tested.
    pub fn open_with_clock(
        path: impl Into<PathBuf>,
        rotation: Rotation,
        clock: Arc<dyn Clock>,
    ) -> io::Result<RotatingFile> {
        let path = path.into();
        if path.file_name().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file", path.display()),
            ));
        }
        let (file, meta) = open_append(&path)?;
        let next_turn = next_turn(rotation.every, clock.now());
        let file = RotatingFile {
            inner: Arc::new(Inner {
                path,
                clock,
                state: Mutex::new(State {
                    file: Some(file),
                    id: identity(&meta),
                    size: meta.len(),
                    look_at: Instant::now() + CHECK_EVERY,
                    retry_at: None,
                    rotation,
                    next_turn,
                    last: None,
                }),
                pending: Arc::new(Pending::default()),
                write_failing: AtomicBool::new(false),
                upkeep_failing: AtomicBool::new(false),
            }),
        };
        // What a process that stopped half-way left behind is cleaned up in the background.
        let state = file.inner.lock();
        file.inner.schedule(Task::Tidy, &state.rotation);
        drop(state);
        Ok(file)
    }

    /// The active file's path, as given to [`open`](RotatingFile::open).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends one record, rotating first when it is due. Err means the record was not
    /// written; a failure is reported on stderr once (until a write succeeds again) and never
    /// panics. A failed rotation is not an Err: the record still goes into the active file.
    pub fn write_record(&self, record: &[u8]) -> io::Result<()> {
        let (written, upkeep) = self.inner.write(record);
        if let Some(e) = upkeep {
            self.inner.report(
                &self.inner.upkeep_failing,
                &format!(
                    "{e}; records go on into the file open now (further such failures are not \
                     reported until one works)"
                ),
            );
        }
        match &written {
            Ok(()) => self.inner.write_failing.store(false, Ordering::Relaxed),
            Err(e) => self.inner.report(
                &self.inner.write_failing,
                &format!("{e} (further failures are not reported until a write succeeds)"),
            ),
        }
        written
    }

    /// Rotates now (unless the active file is empty), whatever the size and the time.
    pub fn rotate(&self) -> io::Result<()> {
        let mut state = self.inner.lock();
        self.inner.rotate(&mut state, Instant::now())
    }

    /// Changes when the file rotates and what is kept, from the next write on.
    pub fn set_rotation(&self, rotation: Rotation) {
        let mut state = self.inner.lock();
        if state.rotation.every != rotation.every {
            state.next_turn = next_turn(rotation.every, self.inner.clock.now());
        }
        state.rotation = rotation;
    }

    /// Waits until every file rotated so far is compressed and the old ones pruned, and the
    /// leftovers found at open are dealt with.
    pub fn wait_idle(&self) {
        let pending = &self.inner.pending;
        let mut count = pending.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            count = pending
                .idle
                .wait(count)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl std::fmt::Debug for RotatingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("RotatingFile")
            .field("path", &self.inner.path)
            .field("size", &state.size)
            .field("rotation", &state.rotation)
            .finish()
    }
}

/// Each `write` is one record ([`RotatingFile::write_record`]): Ok once it is written, so
/// that a caller that retries on Err never writes it twice.
impl Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_record(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Records go straight to the file: there is no buffer to flush.
        Ok(())
    }
}

/// Each `write` is one record ([`RotatingFile::write_record`]).
impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Inner {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Rotated files of this one waiting for the background thread.
    pending: Arc<Pending>,
    /// Set after a reported write failure, so that a broken disk is reported once.
    write_failing: AtomicBool,
    /// The same for failures to rotate or to open the path again.
    upkeep_failing: AtomicBool,
}

struct State {
    /// None after a rotation could not open a fresh file: the next write tries again.
    file: Option<File>,
    /// The open file's (device, inode), to tell whether the path still names it.
    id: (u64, u64),
    size: u64,
    /// When a write next checks that the path names the open file.
    look_at: Instant,
    /// Set when a rotation failed: none is tried before then.
    retry_at: Option<Instant>,
    rotation: Rotation,
    next_turn: Option<DateTime<Utc>>,
    /// The newest rotated name's stamp and suffix (this process's, or on disk at the first
    /// rotation), which the next name sorts after.
    last: Option<(String, u32)>,
}

/// What [`Inner::follow`] found at the path.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// The open file, or nothing could be told (it stays open).
    Same,
    /// Another file or none: the path is open again.
    Reopened,
}

#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done that matters: keep logging.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports `message` on stderr unless `failing` says it was already: the last resort,
    /// since the log is what failed (see the module docs of `logging`).
    fn report(&self, failing: &AtomicBool, message: &str) {
        if !failing.swap(true, Ordering::Relaxed) {
            eprintln!("shoal: log file {}: {message}", self.path.display());
        }
    }

    /// Appends `record`, first following the path or rotating when due. Returns whether the
    /// record was written, and a failure to rotate or to follow the path, which costs no
    /// record.
    fn write(&self, record: &[u8]) -> (io::Result<()>, Option<io::Error>) {
        let mut state = self.lock();
        let now = Instant::now();
        let mut upkeep = None;
        if now >= state.look_at {
            if let Err(e) = self.follow(&mut state, now) {
                upkeep = Some(e);
            }
        }
        let len = record.len() as u64;
        let may_rotate = state.retry_at.is_none_or(|t| now >= t);
        let by_time = state.next_turn.is_some_and(|t| self.clock.now() >= t);
        let by_size = state
            .rotation
            .max_size
            .is_some_and(|max| state.size > 0 && state.size.saturating_add(len) > max);
        if may_rotate && (by_time || by_size) {
            if let Err(e) = self.rotate(&mut state, now) {
                upkeep = Some(e);
            }
        }
        (self.append(&mut state, record), upkeep)
    }

    fn append(&self, state: &mut State, record: &[u8]) -> io::Result<()> {
        let file = match &mut state.file {
            Some(file) => file,
            None => {
                self.reopen(state)?;
                state.file.as_mut().expect("opened above")
            }
        };
        file.write_all(record)?;
        state.size += record.len() as u64;
        Ok(())
    }

    /// Opens the path again (it, or its directory, may have been removed) in place of the
    /// open file.
    fn reopen(&self, state: &mut State) -> io::Result<()> {
        let (file, meta) = open_append(&self.path)?;
        state.id = identity(&meta);
        state.size = meta.len();
        state.file = Some(file);
        Ok(())
    }

    /// Opens the path again when it names another file than the open one, or none. The size
    /// is taken from the file, so another process's records count too.
    fn follow(&self, state: &mut State, now: Instant) -> io::Result<Found> {
        state.look_at = now + CHECK_EVERY;
        match fs::metadata(&self.path) {
            Ok(meta) if identity(&meta) == state.id && state.file.is_some() => {
                state.size = meta.len();
                Ok(Found::Same)
            }
            Ok(_) => self.reopen_after_move(state),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.reopen_after_move(state),
            // Nothing to tell from: go on with the open file.
            Err(_) => Ok(Found::Same),
        }
    }

    fn reopen_after_move(&self, state: &mut State) -> io::Result<Found> {
        self.reopen(state).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("it was removed or replaced, and cannot be opened again: {e}"),
            )
        })?;
        self.upkeep_failing.store(false, Ordering::Relaxed);
        Ok(Found::Reopened)
    }

    /// Renames the active file aside and opens a fresh one. A failure leaves the active file
    /// in place and open; the next attempt is [`CHECK_EVERY`] later.
    fn rotate(&self, state: &mut State, now: Instant) -> io::Result<()> {
        let wall = self.clock.now();
        let turn = next_turn(state.rotation.every, wall);
        let found = self.follow(state, now).inspect_err(|_| {
            state.retry_at = Some(now + CHECK_EVERY);
        })?;
        // Someone else moved the file aside already (or deleted it): the fresh one is open.
        if found == Found::Reopened || state.size == 0 {
            state.next_turn = turn;
            state.retry_at = None;
            return Ok(());
        }
        let rotated = self.rotated_name(state, wall);
        if let Err(e) = fs::rename(&self.path, &rotated) {
            state.retry_at = Some(now + CHECK_EVERY);
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot rename it to {} to rotate it: {e}",
                    rotated.display()
                ),
            ));
        }
        state.next_turn = turn;
        state.retry_at = None;
        self.upkeep_failing.store(false, Ordering::Relaxed);
        // Closed before the background thread reads the rotated file; when no fresh one can be
        // opened, the next write tries again.
        state.file = None;
        state.size = 0;
        let _ = self.reopen(state);
        self.schedule(Task::Compress(rotated), &state.rotation);
        Ok(())
    }

    /// Hands `task` to the background thread, with the pruning that follows it.
    fn schedule(&self, task: Task, rotation: &Rotation) {
        *self
            .pending
            .count
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        background(Job {
            task,
            active: self.path.clone(),
            keep: rotation.keep,
            compress: rotation.compress,
            pending: self.pending.clone(),
        });
    }

    /// `NAME.YYYYMMDDTHHMMSSZ` (UTC), with `-N` when that is taken (compressed or not), and
    /// never sorting before the newest rotated name: when the clock reads earlier than that
    /// (it was set back), the name takes its stamp with the next suffix.
    fn rotated_name(&self, state: &mut State, now: DateTime<Utc>) -> PathBuf {
        if state.last.is_none() {
            // Rotations from before a restart count too.
            state.last = rotations(&self.path)
                .ok()
                .and_then(|found| found.newest())
                .filter(|order| order.utc)
                .map(|order| (order.stamp, order.suffix));
        }
        let stamp = now.format(STAMP).to_string();
        let (stamp, mut suffix) = match &state.last {
            Some((last, n)) if *last >= stamp => (last.clone(), n + 1),
            _ => (stamp, 0),
        };
        let base = self.path.as_os_str().to_string_lossy().into_owned();
        loop {
            let name = match suffix {
                0 => format!("{base}.{stamp}"),
                n => format!("{base}.{stamp}-{n}"),
            };
            let taken = ["", ".gz", ".gz.tmp"]
                .iter()
                .any(|ext| Path::new(&format!("{name}{ext}")).exists());
            if !taken {
                state.last = Some((stamp, suffix));
                return PathBuf::from(name);
            }
            suffix += 1;
        }
    }
}

/// Creates the file's directory when it is missing (at the start, or removed since). Only a
/// regular file is written to: the open does not wait (a FIFO without a reader would block it
/// forever), and anything else at the path is an error naming it. Gives the file's metadata
/// with it, read once.
fn open_append(path: &Path) -> io::Result<(File, fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;

    use nix::fcntl::{fcntl, FcntlArg, OFlag};

    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(OFlag::O_NONBLOCK.bits())
            .open(path)
    };
    let file = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir)?;
            }
            open()
        }
        other => other,
    };
    // ENXIO: a FIFO nobody reads.
    let file = file.map_err(|e| match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => not_a_file(path, &meta),
        _ => e,
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_a_file(path, &meta));
    }
    // Writes to a regular file ignore the flag; cleared all the same, so that nothing reads
    // it as a descriptor meant not to block.
    fcntl(&file, FcntlArg::F_SETFL(OFlag::O_APPEND)).map_err(io::Error::from)?;
    Ok((file, meta))
}

/// Whether `path` can be a file sink's file without opening it: missing, or a regular file
/// (through symbolic links, as the open follows them).
pub(super) fn check_path(path: &Path) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(not_a_file(path, &meta)),
        _ => Ok(()),
    }
}

/// The error for a log path that holds something other than a regular file.
fn not_a_file(path: &Path, meta: &fs::Metadata) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is {}, not a regular file: a file sink appends to a file it can rotate",
            path.display(),
            file_kind(meta.file_type())
        ),
    )
}

/// What tells one file from another: (device, inode).
fn identity(meta: &fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

fn next_turn(every: Option<Unit>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let unit = every?;
    Schedule::Boundary {
        unit,
        offset: Duration::ZERO,
    }
    .next_after(now, Zone::Local)
}

/// Work for the background thread.
struct Job {
    task: Task,
    active: PathBuf,
    keep: usize,
    compress: bool,
    pending: Arc<Pending>,
}

enum Task {
    /// A file just rotated: compress it (when `compress`), then prune.
    Compress(PathBuf),
    /// At open: clean up what a process that stopped half-way left.
    Tidy,
}

/// Hands `job` to the one background thread of the process (started on first use), or does
/// it here if that thread cannot be had.
fn background(job: Job) {
    static WORKER: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("shoal-log-rotate".into())
            .spawn(move || {
                for job in rx {
                    run(job);
                }
            })
            .ok()
            .map(|_| tx)
    });
    let job = match worker {
        Some(tx) => match tx.send(job) {
            Ok(()) => return,
            Err(mpsc::SendError(job)) => job,
        },
        None => job,
    };
    run(job);
}

/// Runs a rotation job; failures go to stderr, the last resort (see `compress_file`).
fn run(job: Job) {
    let active = &job.active;
    match &job.task {
        Task::Compress(rotated) => {
            if job.compress {
                compress_file(rotated);
            }
            if let Err(e) = prune(active, job.keep) {
                eprintln!(
                    "shoal: cannot remove old rotations of {}: {e}",
                    active.display()
                );
            }
        }
        // Tidying prunes too, from the same listing.
        Task::Tidy => {
            if let Err(e) = tidy(active, job.keep, job.compress) {
                eprintln!(
                    "shoal: cannot clean up the rotations of {}: {e}",
                    active.display()
                );
            }
        }
    }
    let mut count = job
        .pending
        .count
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    *count -= 1;
    job.pending.idle.notify_all();
}

/// Failures go to stderr, the background thread's last resort: it has no caller to return to.
fn compress_file(rotated: &Path) {
    match gzip(rotated) {
        Ok(()) => {}
        // Pruned before its turn came.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("shoal: cannot compress {}: {e}", rotated.display()),
    }
}

/// `path` → `path.gz`, through `path.gz.tmp` so that a `.gz` is always whole. A `.gz.tmp`
/// that is there already is another process compressing the same file (they share the path
/// during a re-exec), or one that died doing it, which [`tidy`] deals with: either way this
/// leaves the file alone.
fn gzip(path: &Path) -> io::Result<()> {
    let gz = with_suffix(path, ".gz");
    let tmp = with_suffix(path, ".gz.tmp");
    let mut input = File::open(path)?;
    let output = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        output => output?,
    };
    let result = (|| {
        let mut encoder = GzEncoder::new(BufWriter::new(output), Compression::default());
        io::copy(&mut input, &mut encoder)?;
        let file = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, &gz)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    remove(path)
}

/// After a crash: removes the `.gz.tmp` files of compressions that stopped, prunes, and, when
/// compressing, compresses the rotated files left uncompressed (or removes them when their
/// `.gz` is there: it is renamed into place only once whole). One listing of the directory.
fn tidy(active: &Path, keep: usize, compress: bool) -> io::Result<()> {
    let now = SystemTime::now();
    let abandoned = |entry: &fs::DirEntry| {
        entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age >= ABANDONED))
    };
    let mut found = Rotations::new();
    each_rotation_file(active, |entry, rest| {
        match rest.strip_suffix(".gz.tmp") {
            Some(stem) => {
                if rotation_order(stem).is_some() && abandoned(&entry) {
                    remove(&entry.path())?;
                }
            }
            None => found.add(rest, entry.path()),
        }
        Ok(())
    })?;
    let kept = found.prune(keep)?;
    if compress {
        for files in kept.into_values() {
            let (gz, plain): (Vec<_>, Vec<_>) = files
                .into_iter()
                .partition(|f| f.extension().is_some_and(|e| e == "gz"));
            for file in plain {
                if gz.is_empty() {
                    compress_file(&file);
                } else {
                    remove(&file)?;
                }
            }
        }
    }
    Ok(())
}

/// Removes `path`; one that is gone already is no failure.
fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Deletes all but the newest `keep` rotations of `active`, compressed or not.
fn prune(active: &Path, keep: usize) -> io::Result<()> {
    rotations(active)?.prune(keep).map(drop)
}

/// The rotations of `active` in the order they were made, each with its files (the rotated
/// file, its `.gz`, or both while it is being compressed).
fn rotations(active: &Path) -> io::Result<Rotations> {
    let mut found = Rotations::new();
    each_rotation_file(active, |entry, rest| {
        found.add(rest, entry.path());
        Ok(())
    })?;
    Ok(found)
}

/// Calls `f` with each entry of `active`'s directory whose name starts with `NAME.`, and the
/// rest of its name; none when the name is not UTF-8 (see [`prefix`]).
fn each_rotation_file(
    active: &Path,
    mut f: impl FnMut(fs::DirEntry, &str) -> io::Result<()>,
) -> io::Result<()> {
    let Some(prefix) = prefix(active) else {
        return Ok(());
    };
    for entry in fs::read_dir(dir(active))? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) {
            f(entry, rest)?;
        }
    }
    Ok(())
}

/// Rotated files by their place in rotation order.
struct Rotations(BTreeMap<RotationOrder, Vec<PathBuf>>);

impl Rotations {
    fn new() -> Rotations {
        Rotations(BTreeMap::new())
    }

    /// Takes `path` if `rest`, its name after `NAME.`, is a rotated name, `.gz` or not.
    fn add(&mut self, rest: &str, path: PathBuf) {
        let stem = rest.strip_suffix(".gz").unwrap_or(rest);
        if let Some(order) = rotation_order(stem) {
            self.0.entry(order).or_default().push(path);
        }
    }

    /// Where the newest rotation sorts.
    fn newest(self) -> Option<RotationOrder> {
        self.0.into_keys().next_back()
    }

    /// Deletes the files of all but the newest `keep` rotations; returns those kept.
    fn prune(mut self, keep: usize) -> io::Result<BTreeMap<RotationOrder, Vec<PathBuf>>> {
        while self.0.len() > keep {
            let Some((_, files)) = self.0.pop_first() else {
                break;
            };
            for file in files {
                remove(&file)?;
            }
        }
        Ok(self.0)
    }
}

/// The directory `active` is in.
fn dir(active: &Path) -> &Path {
    match active.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `NAME.`, which the names of `active`'s rotations start with; None for a name that is not
/// UTF-8 (its rotations are not recognised, so never pruned).
fn prefix(active: &Path) -> Option<String> {
    active
        .file_name()
        .and_then(|n| n.to_str())
        .map(|base| format!("{base}."))
}

/// The stamp of a rotated name: UTC, so that a local clock turned back (the end of summer
/// time) does not put newer names before older ones.
const STAMP: &str = "%Y%m%dT%H%M%SZ";

/// Where a rotated name sorts: the local-time names of earlier versions (`YYYYMMDD-HHMMSS`)
/// first, then the UTC ones (`YYYYMMDDTHHMMSSZ`), each by stamp and then by the number added
/// for a second rotation within a second (`-1`, `-2`, ...). Readers of rotated logs (the
/// agent's `shoal logs`) sort by it too.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RotationOrder {
    /// False for the local-time names of earlier versions (`YYYYMMDD-HHMMSS`), which come
    /// before every UTC one.
    utc: bool,
    stamp: String,
    suffix: u32,
}

/// A rotated name's stem (after `NAME.`, before `.gz`): `20261122T101500Z` or
/// `20261122T101500Z-3` (or the earlier `20261122-101500[-3]`) → its place in rotation order;
/// None for other names (a compression's `.gz.tmp` among them).
pub fn rotation_order(stem: &str) -> Option<RotationOrder> {
    let utc = stem.get(15..16) == Some("Z");
    let len = if utc { 16 } else { 15 };
    let stamp = stem.get(..len)?;
    let suffix = match &stem[len..] {
        "" => 0,
        rest => rest
            .strip_prefix('-')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?
            .parse()
            .ok()?,
    };
    let shape = stamp.bytes().enumerate().all(|(i, b)| match (utc, i) {
        (true, 8) => b == b'T',
        (true, 15) => b == b'Z',
        (false, 8) => b == b'-',
        _ => b.is_ascii_digit(),
    });
    shape.then(|| RotationOrder {
        utc,
        stamp: stamp.to_owned(),
        suffix,
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// "a FIFO", "a directory", … for messages about a path that should be a regular file.
pub(crate) fn file_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "something other than a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_order_by_stamp_then_suffix() {
        let order = |utc, stamp: &str, suffix| RotationOrder {
            utc,
            stamp: stamp.to_owned(),
            suffix,
        };
        let cases = [
            ("20261122T101500Z", Some(order(true, "20261122T101500Z", 0))),
            (
                "20261122T101500Z-2",
                Some(order(true, "20261122T101500Z", 2)),
            ),
            (
                "20261122T101500Z-10",
                Some(order(true, "20261122T101500Z", 10)),
            ),
            ("20261122-101500", Some(order(false, "20261122-101500", 0))),
            (
                "20261122-101500-3",
                Some(order(false, "20261122-101500", 3)),
            ),
            ("20261122T101500", None),
            ("20261122T10150Z", None),
            ("20261122x101500Z", None),
            ("20261122T101500Z-", None),
            ("20261122T101500Z-+2", None),
            ("20261122T101500Z.tmp", None),
            ("20261122T101500Z.gz.tmp", None),
            ("20261122-10150", None),
            ("gz", None),
        ];
        for (stem, expected) in cases {
            assert_eq!(rotation_order(stem), expected, "{stem}");
        }
        let sorted = [
            "20991231-235959",
            "20261122T101500Z",
            "20261122T101500Z-2",
            "20261122T101500Z-10",
            "20261122T101501Z",
        ];
        for pair in sorted.windows(2) {
            assert!(
                rotation_order(pair[0]) < rotation_order(pair[1]),
                "{pair:?}"
            );
        }
    }
}
