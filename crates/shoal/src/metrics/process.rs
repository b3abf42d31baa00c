//! The process's own figures from `/proc` (Linux): resident memory, CPU time, open files and
//! start time, read when the metrics are read. Blocking file reads: call it off the executor.

use super::snapshot::Process;

/// Clock ticks per second of the times in `/proc/<pid>/stat`: the kernel's `USER_HZ`, 100 on
/// every Linux architecture (Prometheus's own procfs reader assumes the same).
const TICKS_PER_SECOND: f64 = 100.0;

impl Process {
    /// None where `/proc/self` is missing or unreadable.
    pub(super) fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        parse(&stat, &status, &boot, open_fds)
    }
}

/// The figures from the text of `/proc/self/stat`, `/proc/self/status` and `/proc/stat`.
pub(super) fn parse(stat: &str, status: &str, boot: &str, open_fds: u64) -> Option<Process> {
    // The command name in parentheses may hold spaces and parentheses: fields count from the
    // last `)`. After it come field 3 (state) onwards.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime, start_ticks) = (field(14)?, field(15)?, field(22)?);
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    let boot_time: f64 = boot
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Process {
        resident_memory_bytes: rss_kib * 1024,
        cpu_seconds: (utime + stime) / TICKS_PER_SECOND,
        open_fds,
        start_time_seconds: boot_time + start_ticks / TICKS_PER_SECOND,
    })
}
