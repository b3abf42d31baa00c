//! What the supervisor asks of Linux beyond nix's safe wrappers: a pidfd, starting a program in
//! a new session with `posix_spawn`, and the figures it reads from `/proc` (start time, process group, CPU, memory).
//!
//! The crate's `unsafe` blocks are here and nowhere else, each in a small function.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;
use nix::sys::signal::SigSet;
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A descriptor that refers to process `pid` for as long as it is open (`pidfd_open(2)`):
/// it becomes readable when that process exits, child of ours or not, and it never comes to
/// mean another process that later gets the same number. Close-on-exec.
#[allow(unsafe_code)]
pub(crate) fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1; it touches no
    // memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd_open: bad descriptor"))?;
    // SAFETY: the kernel just created `fd` for this call; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watches `pidfd` from the async runtime: readable once its process has exited.
#[allow(unsafe_code)]
pub(crate) fn watch_pidfd(pidfd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is an open descriptor that stays open and the same until the
    // AsyncFd that owns it drops it; `as_raw_fd` always returns that descriptor.
    unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }.map_err(Into::into)
}

/// A new process's stdout and stderr: descriptors numbered 3 or above, so that putting one
/// in place as fd 1 or 2 never overwrites the other before it is copied.
#[derive(Debug)]
pub(crate) struct Stdio {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

impl Stdio {
    /// Takes `stdout` and `stderr`, moving either above fd 2 if it is one of 0, 1, 2 (an
    /// agent started with its own stdio closed hands out those numbers).
    pub fn new(stdout: OwnedFd, stderr: OwnedFd) -> io::Result<Stdio> {
        Ok(Stdio {
            stdout: above_stdio(stdout)?,
            stderr: above_stdio(stderr)?,
        })
    }
}

#[allow(unsafe_code)]
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let copy = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC just created `copy` for this call; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// What [`spawn`] executes: `path` (absolute, or relative to `dir`) with `argv` and `envp`.
#[derive(Debug)]
pub(crate) struct Exec<'a> {
    pub path: &'a CStr,
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    pub dir: &'a CStr,
}

/// Starts `exec` with `posix_spawn`, which glibc runs as `clone(CLONE_VM | CLONE_VFORK)`:
/// nothing of the agent's address space is copied, whatever its size. The new process leads a
/// new session (so a new process group whose id is its pid) with no controlling terminal: a
/// terminal's signals (Ctrl-C, hang-up) never reach it, and the whole group can be signalled
/// at once. Its stdin is `/dev/null`, its stdout and stderr are `stdio`'s, every other
/// descriptor is closed (close-on-exec or not), no signal is blocked and every signal has its
/// default disposition, and it runs in `exec.dir`.
///
/// A failure of the exec itself (no such file, not executable, not an executable format) is
/// this call's error, with the errno the exec failed with.
#[allow(unsafe_code)]
pub(crate) fn spawn(exec: &Exec<'_>, stdio: &Stdio) -> io::Result<Pid> {
    let mut actions = FileActions::new()?;
    actions.dup2(stdio.stdout.as_raw_fd(), 1)?;
    actions.dup2(stdio.stderr.as_raw_fd(), 2)?;
    actions.open_read_only(0, c"/dev/null")?;
    actions.close_from(3)?;
    actions.chdir(exec.dir)?;
    let attr = SpawnAttr::new_session()?;
    let argv = null_terminated(exec.argv);
    let envp = null_terminated(exec.envp);
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: `pid` is ours to write, `path` and the
    // strings `argv` and `envp` point to live in `exec`, both arrays end with a null pointer,
    // and `actions` and `attr` were initialised by their `new`. posix_spawn writes only
    // `pid`; it reads the rest and keeps no pointer once it returns.
    let ret = unsafe {
        libc::posix_spawn(
            &mut pid,
            exec.path.as_ptr(),
            &actions.0,
            &attr.0,
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    check(ret)?;
    Ok(Pid::from_raw(pid))
}

/// The `char *const[]` posix_spawn takes: pointers into `strings`, then a null pointer.
fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    // posix_spawn's arrays are declared `char *const[]` but it never writes through them.
    let mut pointers: Vec<_> = strings.iter().map(|s| s.as_ptr().cast_mut()).collect();
    pointers.push(std::ptr::null_mut());
    pointers
}

/// posix_spawn and its helpers return an error number instead of setting `errno`.
fn check(ret: libc::c_int) -> io::Result<()> {
    match ret {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// What the new process does with its descriptors and directory before the exec, in order.
/// glibc's object holds no pointer into itself, so it may move once initialised.
struct FileActions(libc::posix_spawn_file_actions_t);

#[allow(unsafe_code)]
impl FileActions {
    fn new() -> io::Result<FileActions> {
        let mut actions = MaybeUninit::uninit();
        // SAFETY: init writes an empty action list into the memory it is given.
        check(unsafe { libc::posix_spawn_file_actions_init(actions.as_mut_ptr()) })?;
        // SAFETY: init succeeded, so the object is initialised.
        Ok(FileActions(unsafe { actions.assume_init() }))
    }

    fn dup2(&mut self, fd: RawFd, target: RawFd) -> io::Result<()> {
        // SAFETY: `self.0` is initialised; the call copies two integers into it.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, target) })
    }

    /// Opens `path` read-only as `target`. Without O_CLOEXEC: opened straight onto a free
    /// `target`, the descriptor would otherwise be closed by the exec.
    fn open_read_only(&mut self, target: RawFd, path: &CStr) -> io::Result<()> {
        // SAFETY: `self.0` is initialised and `path` is NUL-terminated; glibc copies the
        // string into the action list.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut self.0,
                target,
                path.as_ptr(),
                libc::O_RDONLY,
                0,
            )
        })
    }

    fn close_from(&mut self, first: RawFd) -> io::Result<()> {
        // SAFETY: `self.0` is initialised; the call copies an integer into it (glibc 2.34).
        check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut self.0, first) })
    }

    fn chdir(&mut self, dir: &CStr) -> io::Result<()> {
        // SAFETY: `self.0` is initialised and `dir` is NUL-terminated; glibc copies the
        // string into the action list (glibc 2.29).
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

#[allow(unsafe_code)]
impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialised by `new` and is destroyed once, here.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// The new process's session, signal mask and signal dispositions.
struct SpawnAttr(libc::posix_spawnattr_t);

#[allow(unsafe_code)]
impl SpawnAttr {
    /// A new session (glibc 2.26), an empty signal mask and every signal at its default: the
    /// agent's runtime ignores SIGPIPE, and a program must not start with it, or any other
    /// signal, ignored or blocked.
    fn new_session() -> io::Result<SpawnAttr> {
        let mut attr = MaybeUninit::uninit();
        // SAFETY: init writes default attributes into the memory it is given.
        check(unsafe { libc::posix_spawnattr_init(attr.as_mut_ptr()) })?;
        // SAFETY: init succeeded, so the object is initialised.
        let mut attr = SpawnAttr(unsafe { attr.assume_init() });
        let flags = libc::POSIX_SPAWN_SETSID
            | libc::c_short::try_from(libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF)
                .map_err(io::Error::other)?;
        // SAFETY: `attr.0` is initialised; the call copies an integer into it.
        check(unsafe { libc::posix_spawnattr_setflags(&mut attr.0, flags) })?;
        let none = SigSet::empty();
        // SAFETY: `attr.0` is initialised; the call copies the set `none` points to.
        check(unsafe { libc::posix_spawnattr_setsigmask(&mut attr.0, none.as_ref()) })?;
        let all = every_signal();
        // SAFETY: `attr.0` is initialised; the call copies the set `all` points to.
        check(unsafe { libc::posix_spawnattr_setsigdefault(&mut attr.0, &all) })?;
        Ok(attr)
    }
}

/// Every signal, glibc's own two included (32 and 33, which `sigfillset` leaves out): left
/// out of the set, glibc's spawn ignores them in the child, and an ignored signal stays
/// ignored across the exec, where a fork and exec leaves them at their defaults.
#[allow(unsafe_code)]
fn every_signal() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: a sigset_t is a plain bit array, so any bytes make a valid one, and every byte
    // is written before `assume_init`.
    unsafe {
        set.as_mut_ptr().write_bytes(0xff, 1);
        set.assume_init()
    }
}

#[allow(unsafe_code)]
impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialised by `new_session` and is destroyed once, here.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// `R`, `S`, `D`, `Z` (zombie: exited, not yet reaped), ...
    pub state: char,
    pub pgrp: i32,
    /// User plus system time, in clock ticks.
    pub cpu_ticks: u64,
    /// Clock ticks after boot at which it started: with the pid and the boot id, what tells
    /// a process from a later one that got the same pid.
    pub start_time: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Reads `/proc/PID/stat`; Err when there is no such process.
///
/// Into a buffer on the stack, read until the end: one open, two reads and a close, where
/// `fs::read_to_string` asks the size first and then reads in growing steps (nine calls). A
/// start reads it once for the new process, and the usage walk once per process.
pub(crate) fn stat(pid: Pid) -> io::Result<Stat> {
    use std::io::Read;

    let unreadable = || io::Error::other(format!("/proc/{pid}/stat: unreadable"));
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat"))?;
    let mut buf = [0u8; STAT_MAX];
    let mut len = 0;
    loop {
        match file.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
        if len == buf.len() {
            return Err(unreadable());
        }
    }
    let text = std::str::from_utf8(&buf[..len]).map_err(|_| unreadable())?;
    parse_stat(text).ok_or_else(unreadable)
}

/// More than `/proc/PID/stat` holds: 52 numbers of at most 20 digits and a command name of at
/// most 64 bytes.
const STAT_MAX: usize = 1536;

/// `pid (comm) state ppid pgrp ...`: comm may hold spaces and parentheses, so the fields are
/// counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Field N of proc(5) is at N - 3 here: `state` is field 3.
    let field = |n: usize| fields.get(n - 3).copied();
    let number = |n: usize| field(n)?.parse::<u64>().ok();
    Some(Stat {
        state: field(3)?.chars().next()?,
        pgrp: field(5)?.parse().ok()?,
        cpu_ticks: number(14)? + number(15)?,
        start_time: number(22)?,
        rss_pages: number(24)?,
    })
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`); empty if unreadable. A pid and start
/// time recorded under another boot id name no process of this boot. Read once: it cannot
/// change while this process runs, and every start records it.
pub(crate) fn boot_id() -> &'static str {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    BOOT_ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    })
}

/// Clock ticks per second, for CPU times.
pub(crate) fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

pub(crate) fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(4096)
    })
}

/// CPU and memory of the live (not zombie) processes of a group, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub cpu_ticks: u64,
    pub rss_pages: u64,
}

/// One pass over `/proc`: the usage of each group in `groups`. Costs one small read per
/// process on the machine, whatever the number of groups asked about.
pub(crate) fn group_usage(groups: &[i32]) -> HashMap<i32, Usage> {
    let mut usage = HashMap::new();
    if groups.is_empty() {
        return usage;
    }
    for_each_process(|stat| {
        if stat.state != 'Z' && groups.contains(&stat.pgrp) {
            let u: &mut Usage = usage.entry(stat.pgrp).or_default();
            u.cpu_ticks += stat.cpu_ticks;
            u.rss_pages += stat.rss_pages;
        }
    });
    usage
}

/// Whether any live (not zombie) process is in group `pgid`.
pub(crate) fn group_alive(pgid: Pid) -> bool {
    // No process at all in the group: the common case, answered without reading /proc.
    if nix::sys::signal::killpg(pgid, None) == Err(nix::errno::Errno::ESRCH) {
        return false;
    }
    // Zombies count for kill(2) but not here: an exited member waits to be reaped by its
    // parent (often pid 1, which may take seconds), and is gone in every way that matters.
    let mut alive = false;
    for_each_process(|stat| alive |= stat.pgrp == pgid.as_raw() && stat.state != 'Z');
    alive
}

/// [`group_alive`] for async code: the `/proc` walk it may take runs on a blocking thread.
pub(crate) async fn group_alive_async(pgid: Pid) -> bool {
    // No process at all in the group: answered at once, without a thread.
    if nix::sys::signal::killpg(pgid, None) == Err(nix::errno::Errno::ESRCH) {
        return false;
    }
    // A panic in the walk is a bug; a runtime shutting down answers "alive", the safe side.
    tokio::task::spawn_blocking(move || group_alive(pgid))
        .await
        .unwrap_or(true)
}

fn for_each_process(mut f: impl FnMut(Stat)) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(stat) = stat(Pid::from_raw(pid)) {
            f(stat);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (a (b) c) S 1 4240 4240 0 -1 4194560 130 0 0 0 7 5 0 0 20 0 1 0 \
                    123456 2371584 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                state: 'S',
                pgrp: 4240,
                cpu_ticks: 12,
                start_time: 123456,
                rss_pages: 321,
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_reads_as_itself() {
        let me = stat(nix::unistd::getpid()).unwrap();
        assert_eq!(me.pgrp, nix::unistd::getpgrp().as_raw());
        assert!(me.rss_pages > 0);
        assert_ne!(me.state, 'Z');
        assert!(group_alive(nix::unistd::getpgrp()));
    }
}
