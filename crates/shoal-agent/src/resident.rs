//! Keeps the agent's resident code to the pages it runs.
//!
//! The agent runs from the one `shoal` binary that carries every command, and the kernel maps
//! its code from the page cache. How the cache holds the file decides how much a fault maps:
//! a file read with readahead or freshly written sits in large folios (runs of pages up to
//! megabytes), and a fault maps the whole cached folio; a file cached page by page is mapped
//! 64 KiB around each fault (fault-around). The agent touched about 2 MB of code scattered
//! over a 19 MB `.text` and had 14 MB of the binary mapped.
//!
//! [`trim_code`], called once start-up is over (the programs that should run are started):
//! drops the binary's cached pages that no process maps, gives back the pages of code and
//! read-only data the agent mapped (`MADV_PAGEOUT`, which the kernel applies to a file's
//! pages only for root or the file's owner; any other user drops its mapping of the code
//! segment with `MADV_DONTNEED` instead: code is never written, so nothing is lost; the
//! writable mappings hold the agent's own data and are left alone), drops what that left
//! cached, and reads the ranges the agent maps back into the cache page by page
//! (`POSIX_FADV_RANDOM`: no readahead, no large folios): about 26 MB read once, in the
//! background. From then on a fault maps its 64 KiB window from the cache, without a disk
//! read; a fault on an uncached page of code would read the device's whole readahead window
//! (megabytes) whatever the mapping's advice. Other processes of the same binary (a center,
//! the CLI) keep the pages they map. Nothing here changes what the agent does; a failure only
//! leaves more resident. With 200 programs the agent went from 18 MB resident to 7-9 MB after
//! the trim, and about 12 MB once the code of restarting programs had run too.
//!
//! Last, it maps what it is told to keep: in a release build, the part of the sections where
//! the build lays out the functions the agent runs once its start-up is over (restarts, idle
//! timers) and their jump tables (`crates/shoal/layout.rs`, 661 kB of code), and all of
//! `.rodata` (1.5 MB). Left to faults, the restart path shared its windows with code only the
//! start ran, and each restart faulted in a few more: 1 MB more after 30 restarts. The
//! constants it reads (format strings, `serde_json`'s escape table, the digit table, errno
//! names) are scattered over `.rodata`, most of them anonymous, so no list can place them:
//! they came back on the first restarts, nine 64 KiB windows (0.6 MB) once. Mapped once, the
//! agent's resident code and data stay flat while programs crash and come back, and a
//! restart takes no fault on either.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::ptr::NonNull;

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use nix::sys::mman::{madvise, MmapAdvise};

/// What [`trim_code`] did: the bytes of the executable's mappings it advised, and the bytes
/// of code it mapped back to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    pub mapped: usize,
    pub kept: usize,
}

/// Trims the resident code of this process's executable, then maps every page of each range
/// in `keep`, ranges of its mappings (see the module documentation).
pub fn trim_code(keep: &[&[u8]]) -> io::Result<Trimmed> {
    let exe = File::open("/proc/self/exe")?;
    let meta = exe.metadata()?;
    let path = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mappings: Vec<Mapping> = maps
        .lines()
        .filter_map(Mapping::parse)
        .filter(|m| m.maps(&meta, &path))
        // Code and read-only data; the writable data is the process's own.
        .filter(|m| !m.writable)
        .collect();
    // Allowed to page out a file's pages, as the kernel decides it: root or the owner (or a
    // process that could write the file, which a running executable cannot be asked).
    let euid = nix::unistd::geteuid();
    let can_page_out = euid.is_root() || euid.as_raw() == meta.uid();
    let mut mapped = 0;
    for m in &mappings {
        mapped += m.len;
        advise(m, MmapAdvise::MADV_RANDOM)?;
    }
    let drop_cached = || posix_fadvise(&exe, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    drop_cached()?;
    if can_page_out {
        for m in &mappings {
            advise(m, MmapAdvise::MADV_PAGEOUT)?;
        }
    } else {
        for m in mappings.iter().filter(|m| m.executable) {
            advise(m, MmapAdvise::MADV_DONTNEED)?;
        }
    }
    drop_cached()?;
    // Read back through a descriptor marked for random access: the kernel then caches what
    // is read page by page, where a fault on an uncached page would read megabytes ahead.
    posix_fadvise(&exe, 0, 0, PosixFadviseAdvice::POSIX_FADV_RANDOM)?;
    let mut buf = vec![0; 1 << 20];
    for m in &mappings {
        read_range(&exe, m.offset, m.len, &mut buf)?;
    }
    // One byte read per page; the kernel maps its 64 KiB window from the cache.
    for byte in keep
        .iter()
        .flat_map(|range| range.iter().step_by(page_size()))
    {
        // SAFETY: a reference to a byte of a live slice.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::read_volatile(byte)
        };
    }
    Ok(Trimmed {
        mapped,
        kept: keep.iter().map(|range| range.len()).sum(),
    })
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |n| n as usize)
}

/// Reads `len` bytes of `file` from `offset` into the page cache, `buf` at a time; a range
/// past the end of the file (the zero fill of a last page) ends the read.
fn read_range(file: &File, offset: u64, len: usize, buf: &mut [u8]) -> io::Result<()> {
    let end = offset + len as u64;
    let mut at = offset;
    while at < end {
        let want = buf.len().min((end - at) as usize);
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        at += n as u64;
    }
    Ok(())
}

#[allow(unsafe_code)]
fn advise(m: &Mapping, advice: MmapAdvise) -> io::Result<()> {
    let Some(start) = NonNull::new(m.start as *mut std::ffi::c_void) else {
        return Ok(());
    };
    // SAFETY: the range is one of this process's mappings, read from /proc/self/maps. The
    // advice given changes no contents: random access and page-out only tell the kernel how
    // to cache, and DONTNEED is given only to a code mapping that was never written, whose
    // pages come back from the file unchanged.
    unsafe { madvise(start, m.len, advice) }.map_err(io::Error::from)
}

/// One line of `/proc/self/maps`.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    len: usize,
    /// Where in the file the mapping starts.
    offset: u64,
    writable: bool,
    executable: bool,
    dev: u64,
    inode: u64,
    /// The file's path as the kernel shows it; empty for an anonymous mapping.
    path: String,
}

impl Mapping {
    /// Whether this maps the file of `meta` at `path`: by the file's identity, or by its
    /// path where they differ (overlayfs shows the underlying file's device and inode).
    fn maps(&self, meta: &std::fs::Metadata, path: &Path) -> bool {
        (self.inode == meta.ino() && self.dev == meta.dev()) || Path::new(&self.path) == path
    }

    /// Parses `start-end perms offset major:minor inode [path]`; None for a line in another form.
    fn parse(line: &str) -> Option<Mapping> {
        let mut fields = line.split_ascii_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?.as_bytes();
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let (major, minor) = fields.next()?.split_once(':')?;
        let inode = fields.next()?.parse().ok()?;
        let path = fields.collect::<Vec<_>>().join(" ");
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let dev = nix::sys::stat::makedev(
            u64::from_str_radix(major, 16).ok()?,
            u64::from_str_radix(minor, 16).ok()?,
        );
        Some(Mapping {
            start,
            len: end.checked_sub(start)?,
            offset,
            writable: perms.get(1) == Some(&b'w'),
            executable: perms.get(2) == Some(&b'x'),
            dev,
            inode,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_into_ranges_and_the_file_they_map() {
        let m = Mapping::parse(
            "55d0c8a00000-55d0c9e6f000 r-xp 00200000 fd:01 1835119    /usr/local/bin/shoal",
        )
        .unwrap();
        assert_eq!(m.start, 0x55d0c8a00000);
        assert_eq!(m.len, 0x55d0c9e6f000 - 0x55d0c8a00000);
        assert!(m.executable && !m.writable);
        assert_eq!(m.offset, 0x200000);
        assert_eq!(m.dev, nix::sys::stat::makedev(0xfd, 1));
        assert_eq!(m.inode, 1835119);
        assert_eq!(m.path, "/usr/local/bin/shoal");
        let anon = Mapping::parse("7ffd1c2a1000-7ffd1c2c2000 rw-p 00000000 00:00 0  [stack]");
        assert_eq!(anon.unwrap().inode, 0);
        assert_eq!(Mapping::parse("garbage"), None);
        assert_eq!(Mapping::parse("2000-1000 r--p 0 00:00 0"), None);
    }

    /// File-backed resident bytes of this process's mappings of its executable, and the
    /// code mapping's range.
    fn exe_resident() -> (u64, std::ops::Range<usize>) {
        let meta = std::fs::metadata("/proc/self/exe").unwrap();
        let path = std::fs::read_link("/proc/self/exe").unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let (mut ours, mut code) = (false, 0..0);
        let mut total = 0i64;
        for line in smaps.lines() {
            if let Some(m) = Mapping::parse(line) {
                ours = m.maps(&meta, &path);
                if ours && m.executable {
                    code = m.start..m.start + m.len;
                }
                continue;
            }
            let kb = |rest: &str| rest.trim().trim_end_matches(" kB").parse::<i64>().unwrap();
            match (ours, line.split_once(':')) {
                (true, Some(("Rss", rest))) => total += kb(rest) * 1024,
                (true, Some(("Anonymous", rest))) => total -= kb(rest) * 1024,
                _ => {}
            }
        }
        (total as u64, code)
    }

    /// Reads one byte of this process's code at `addr`, so that its page is mapped.
    #[allow(unsafe_code)]
    fn touch(addr: usize) {
        // SAFETY: `addr` lies inside the executable's code mapping, which is readable.
        unsafe { std::ptr::read_volatile(addr as *const u8) };
    }

    /// The addresses of `n` pages from `addr`.
    fn pages(addr: usize, n: usize) -> Vec<usize> {
        (0..n).map(|k| addr + k * page_size()).collect()
    }

    /// `len` bytes of this process's code from `addr`.
    #[allow(unsafe_code)]
    fn code_at(addr: usize, len: usize) -> &'static [u8] {
        // SAFETY: the range lies inside the executable's code mapping, which is readable and
        // never unmapped while the process runs.
        unsafe { std::slice::from_raw_parts(addr as *const u8, len) }
    }

    /// How many of the pages at `addrs` this process has mapped now (`/proc/self/pagemap`:
    /// bit 63 of a page's entry says it is present).
    fn mapped(addrs: &[usize]) -> usize {
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let page = page_size();
        let mut entry = [0u8; 8];
        addrs
            .iter()
            .filter(|&&addr| {
                pagemap
                    .read_exact_at(&mut entry, (addr / page * 8) as u64)
                    .unwrap();
                u64::from_ne_bytes(entry) >> 63 == 1
            })
            .count()
    }

    const WINDOW: u64 = 64 * 1024;
    const TOUCHES: usize = 8;

    /// Run in a child, on a fresh copy of the test binary (so that no other process maps its
    /// pages): touches pages of code far apart after the trim and prints what that mapped.
    #[test]
    fn trim_child() {
        if std::env::var_os("SHOAL_TRIM_CHILD").is_none() {
            return;
        }
        let (before, code) = exe_resident();
        // Pages in the last quarter of the code, one per 1/32 of it: far apart, and unlikely
        // to have run yet. The first set is touched before the trim, the second after it.
        let step = code.len() / 32;
        let early: Vec<usize> = (0..TOUCHES)
            .map(|k| code.end - (k + 1) * step - step / 2)
            .collect();
        early.iter().copied().for_each(touch);
        let early_before = mapped(&early);
        // Pages the trim is told to keep: the start of a 64 KiB block a step past both sets,
        // as unlikely to run. (Whether they are mapped before says nothing: a freshly written
        // copy is cached in large folios, and a fault maps a whole one.)
        let window = WINDOW as usize;
        let block = (code.end - step * 19 / 2) / window * window;
        let kept = pages(block, TOUCHES);
        let trimmed = trim_code(&[code_at(kept[0], TOUCHES * page_size())]).unwrap();
        let kept_after = mapped(&kept);
        let early_after = mapped(&early);
        // The first reading maps the code that parses it only after the kernel counted.
        exe_resident();
        let (after, _) = exe_resident();
        for k in 0..TOUCHES {
            touch(code.end - (k + 1) * step);
        }
        let (touched, _) = exe_resident();
        println!(
            "trim: mapped={} kept={} before={before} after={after} touched={touched} \
             early_before={early_before} early_after={early_after} kept_after={kept_after}",
            trimmed.mapped, trimmed.kept
        );
    }

    /// After the trim, the executable is cached page by page: a page of code touched for the
    /// first time maps its 64 KiB window at most, and what was mapped before went.
    #[test]
    fn after_the_trim_a_fault_maps_a_small_window() {
        let copy = std::env::temp_dir().join(format!("shoal-trim-{}", std::process::id()));
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        // Written back, as an installed binary is: dirty pages cannot be given back.
        File::open(&copy).unwrap().sync_all().unwrap();
        let out = std::process::Command::new(&copy)
            .args([
                "--exact",
                "resident::tests::trim_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SHOAL_TRIM_CHILD", "1")
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&copy);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| Some(l.split_once("trim: ")?.1))
            .unwrap_or_else(|| panic!("no figures from the child: {stdout}"));
        let figure = |key: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                .unwrap()
        };
        assert!(
            figure("mapped") > 0,
            "no mapping of the executable was found: {line}"
        );
        // What was mapped before went: the pages touched then are no longer mapped. (The
        // totals say little here: a copy the cache holds page by page maps small windows
        // before the trim too.) One or two may be mapped again by the reading itself, when
        // its code lies in the same 64 KiB window.
        assert_eq!(figure("early_before"), TOUCHES as u64, "{line}");
        // What it was told to keep is mapped, every page of it.
        assert_eq!(figure("kept"), (TOUCHES * page_size()) as u64, "{line}");
        assert_eq!(figure("kept_after"), TOUCHES as u64, "{line}");
        assert!(
            figure("early_after") <= 2,
            "the trim left the pages touched before it mapped: {line}"
        );
        let (after, touched) = (figure("after"), figure("touched"));
        // A window or two more may be code of the measurement's own that had not run yet.
        assert!(
            touched - after <= (TOUCHES as u64 + 2) * WINDOW,
            "{TOUCHES} pages touched after the trim mapped {} bytes: {line}",
            touched - after
        );
    }
}
