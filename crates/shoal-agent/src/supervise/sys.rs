//! What the supervisor asks of Linux beyond nix's safe wrappers: a pidfd, room in the descriptor
//! table, and the figures it reads from `/proc` (start time, process group, CPU, memory).
//!
//! The crate's `unsafe` blocks are here and in `spawn.rs` and nowhere else, each in a small
//! function.

use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::libc;
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

/// Grows this process's descriptor table to hold descriptors numbered below `slots`, or up to
/// the open-file limit when that is lower; returns how many it holds room for now, at least.
/// The kernel never shrinks the table, so the room stays once the descriptor that made it is
/// closed.
pub(crate) fn reserve_descriptors(slots: usize) -> io::Result<usize> {
    use nix::sys::resource::{getrlimit, Resource};
    let (limit, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let highest = slots
        .min(usize::try_from(limit).unwrap_or(usize::MAX))
        .saturating_sub(1);
    let highest = RawFd::try_from(highest).unwrap_or(RawFd::MAX);
    let null = std::fs::File::open("/dev/null")?;
    let copy = nix::fcntl::fcntl(&null, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(highest))?;
    nix::unistd::close(copy)?;
    Ok(usize::try_from(highest).map_or(0, |h| h + 1))
}

/// Watches `pidfd` from the async runtime: readable once its process has exited.
#[allow(unsafe_code)]
pub(crate) fn watch_pidfd(pidfd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is an open descriptor that stays open and the same until the
    // AsyncFd that owns it drops it; `as_raw_fd` always returns that descriptor.
    unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }.map_err(Into::into)
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
