//! Starting a program's process: a `vfork` child that takes a descriptor table of its own,
//! empty, opens its stdio by path and execs; `posix_spawn` where the kernel cannot do that.
//!
//! Either way the new process leads a new session (so a new process group whose id is its
//! pid) with no controlling terminal: a terminal's signals (Ctrl-C, hang-up) never reach it,
//! and the whole group can be signalled at once. Its stdin is `/dev/null`, its stdout and
//! stderr are the FIFOs [`Stdio`] names, opened read-write, it holds no other descriptor, no
//! signal is blocked and every signal has its default disposition, and it runs in its
//! directory. Nothing of the agent's address space is copied, whatever its size: the child
//! shares it (`CLONE_VM`) while the agent's thread waits (`CLONE_VFORK`) until the exec.
//!
//! Why not `posix_spawn` always: glibc's child gets a copy of the agent's descriptor table
//! and closes all of it but its stdio before the exec. The agent holds about five descriptors
//! per program (two FIFO read ends, two log files, a pidfd), so with 200 programs every start
//! copied and closed a thousand, and unmapped the child's stack afterwards (a TLB shootdown on
//! every core the agent runs on). The child here starts on the agent's table (`CLONE_FILES`)
//! and leaves it for an empty one of its own before touching any descriptor
//! (`close_range(0, ~0, CLOSE_RANGE_UNSHARE)`, Linux 5.9), so nothing is copied or closed, on
//! a stack each spawning thread keeps. Where that call is refused (a kernel before 5.9, a
//! seccomp filter that does not list it), every start from then on uses `posix_spawn`.
//!
//! The child runs in the agent's memory, beside its other threads, until the exec: it makes
//! system calls and nothing else (no allocation, no lock, no Rust standard library), with
//! every signal blocked until it has set them all to their defaults.

use std::cell::RefCell;
use std::ffi::{c_int, c_void, CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::SigSet;
use nix::unistd::Pid;

/// What [`spawn`] executes: `path` (absolute, or relative to `dir`) with `argv` and `envp`.
#[derive(Debug)]
pub(crate) struct Exec<'a> {
    pub path: &'a CStr,
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    pub dir: &'a CStr,
}

/// The FIFOs a new process gets as its stdout and stderr, opened read-write by the process
/// itself: it keeps its pipes open for reading, so it never gets SIGPIPE or EPIPE while no
/// agent reads, and only blocks once a pipe is full.
#[derive(Debug)]
pub(crate) struct Stdio {
    stdout: CString,
    stderr: CString,
}

impl Stdio {
    pub fn new(stdout: &Path, stderr: &Path) -> io::Result<Stdio> {
        let c_path = |path: &Path| {
            CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} holds a NUL byte", path.display()),
                )
            })
        };
        Ok(Stdio {
            stdout: c_path(stdout)?,
            stderr: c_path(stderr)?,
        })
    }
}

/// Set once the kernel has refused the child a table of its own: `posix_spawn` from then on.
static NO_OWN_TABLE: AtomicBool = AtomicBool::new(false);

/// Starts `exec` with `stdio` (see the module documentation); the pid once it has exec'd.
///
/// A failure of the exec itself (no such file, not executable, not an executable format) or
/// of the change to its directory is this call's error with the errno it failed with, as
/// `execvp` gives it; a stdio that cannot be opened names its path.
pub(crate) fn spawn(exec: &Exec<'_>, stdio: &Stdio) -> io::Result<Pid> {
    if !NO_OWN_TABLE.load(Ordering::Relaxed) {
        match spawn_child(exec, stdio) {
            // ENOSYS, EINVAL: a kernel before 5.9; EPERM: a seccomp filter that does not know
            // the call (older container runtimes refuse what they do not list).
            Err(Failed {
                step: Step::OwnTable,
                errno: Errno::ENOSYS | Errno::EINVAL | Errno::EPERM,
            }) => NO_OWN_TABLE.store(true, Ordering::Relaxed),
            done => return done.map_err(|failed| failed.into_error(stdio)),
        }
    }
    posix_spawn(exec, stdio)
}

/// Where the child stopped, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failed {
    step: Step,
    errno: Errno,
}

/// The child's steps, in order; the one it failed at is written where the parent reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    /// The clone itself, in the parent.
    Clone = 1,
    OwnTable,
    Stdin,
    Stdout,
    Stderr,
    Session,
    Dir,
    Exec,
}

impl Step {
    const ALL: [Step; 8] = [
        Step::Clone,
        Step::OwnTable,
        Step::Stdin,
        Step::Stdout,
        Step::Stderr,
        Step::Session,
        Step::Dir,
        Step::Exec,
    ];

    fn from_u8(value: u8) -> Option<Step> {
        Step::ALL.into_iter().find(|&step| step as u8 == value)
    }
}

impl Failed {
    fn into_error(self, stdio: &Stdio) -> io::Error {
        let e = io::Error::from(self.errno);
        let named = |what: &str| io::Error::new(e.kind(), format!("{what}: {e}"));
        match self.step {
            Step::Stdin => named("/dev/null"),
            Step::Stdout => named(&stdio.stdout.to_string_lossy()),
            Step::Stderr => named(&stdio.stderr.to_string_lossy()),
            Step::OwnTable => named("a descriptor table of its own (close_range)"),
            Step::Session => named("a session of its own (setsid)"),
            // As `execvp` reports them: the caller tells the causes apart by the errno.
            Step::Clone | Step::Dir | Step::Exec => e,
        }
    }
}

/// What the child reads and writes: pointers into memory the parent keeps alive and
/// unchanged until the child has exec'd or exited, and where a failure goes.
struct Child {
    path: *const libc::c_char,
    argv: *const *mut libc::c_char,
    envp: *const *mut libc::c_char,
    dir: *const libc::c_char,
    stdout: *const libc::c_char,
    stderr: *const libc::c_char,
    failed_at: AtomicU8,
    errno: AtomicI32,
}

/// The stack a spawning thread's children run on, one after the other (the thread waits for
/// each until its exec). Its pages are touched only as deep as a child goes, a few kB.
const STACK_WORDS: usize = 32 * 1024 / 16;

thread_local! {
    static STACK: RefCell<Option<Box<[MaybeUninit<u128>]>>> = const { RefCell::new(None) };
}

#[allow(unsafe_code)]
fn spawn_child(exec: &Exec<'_>, stdio: &Stdio) -> Result<Pid, Failed> {
    let argv = null_terminated(exec.argv);
    let envp = null_terminated(exec.envp);
    let child = Child {
        path: exec.path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        dir: exec.dir.as_ptr(),
        stdout: stdio.stdout.as_ptr(),
        stderr: stdio.stderr.as_ptr(),
        failed_at: AtomicU8::new(0),
        errno: AtomicI32::new(0),
    };
    let pid = STACK.with_borrow_mut(|stack| {
        let stack = stack.get_or_insert_with(|| Box::new_uninit_slice(STACK_WORDS));
        // One past the end: the stack grows down. 16-byte aligned, as the ABI asks.
        let top = stack.as_mut_ptr_range().end.cast::<c_void>();
        let mut old = SigSet::empty();
        // Every signal blocked, glibc's own included, until the child has reset them all: a
        // handler of the agent's must not run in the child, on its stack, in shared memory.
        raw_sigprocmask(libc::SIG_SETMASK, &every_signal(), Some(&mut old));
        let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD;
        // SAFETY: `child_main` makes only system calls and reads `child`, which outlives the
        // call: with CLONE_VFORK this thread is suspended until the child has exec'd or
        // exited, so neither `child`, nor the strings and arrays it points to, nor `stack`
        // (this thread's alone) change or go away while the child uses them.
        let pid = unsafe {
            libc::clone(
                child_main,
                top,
                flags,
                std::ptr::from_ref(&child).cast_mut().cast(),
            )
        };
        let clone_errno = Errno::last();
        raw_sigprocmask(libc::SIG_SETMASK, old.as_ref(), None);
        (pid, clone_errno)
    });
    match pid {
        (-1, errno) => Err(Failed {
            step: Step::Clone,
            errno,
        }),
        (pid, _) => {
            let pid = Pid::from_raw(pid);
            match Step::from_u8(child.failed_at.load(Ordering::Acquire)) {
                None => Ok(pid),
                Some(step) => {
                    // It has exited (the parent resumes only then, or at the exec): reaped here,
                    // as nothing else waits for it.
                    let _ = nix::sys::wait::waitpid(pid, None);
                    Err(Failed {
                        step,
                        errno: Errno::from_raw(child.errno.load(Ordering::Acquire)),
                    })
                }
            }
        }
    }
}

/// The child, from the clone to the exec. System calls only (see the module documentation).
#[allow(unsafe_code)]
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Child` `spawn_child` passed, alive until this child execs or
    // exits (its parent thread waits until then).
    let child = unsafe { &*arg.cast::<Child>() };
    let fail = |step: Step| -> c_int {
        child.errno.store(Errno::last_raw(), Ordering::Release);
        child.failed_at.store(step as u8, Ordering::Release);
        // SAFETY: _exit ends this process at once, running nothing of the agent's.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: every call below is a system call (`syscall`, not glibc's wrappers, some of
    // which are cancellation points that touch the parent thread's state) on arguments that
    // live in `child` or on this stack; none allocates, locks or runs code of the agent's.
    unsafe {
        // A table of its own with nothing copied into it: the agent's descriptors are never
        // touched, and the opens below get 0, 1 and 2, the lowest free numbers.
        if libc::syscall(
            libc::SYS_close_range,
            0 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        ) != 0
        {
            return fail(Step::OwnTable);
        }
        if open(c"/dev/null".as_ptr(), libc::O_RDONLY) != 0 {
            return fail(Step::Stdin);
        }
        if open(child.stdout, libc::O_RDWR) != 1 {
            return fail(Step::Stdout);
        }
        if open(child.stderr, libc::O_RDWR) != 2 {
            return fail(Step::Stderr);
        }
        // Every disposition to its default, glibc's own two signals included (its wrapper
        // refuses them), so that none the agent set (SIGPIPE ignored, a handler) survives.
        // SIGKILL and SIGSTOP refuse, and need not.
        for signal in 1..=LAST_SIGNAL {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                DEFAULT_ACTION.as_ptr(),
                std::ptr::null_mut::<c_void>(),
                KERNEL_SIGSET_BYTES,
            );
        }
        if libc::syscall(libc::SYS_setsid) < 0 {
            return fail(Step::Session);
        }
        if libc::syscall(libc::SYS_chdir, child.dir) != 0 {
            return fail(Step::Dir);
        }
        raw_sigprocmask(libc::SIG_SETMASK, &NO_SIGNAL, None);
        libc::syscall(libc::SYS_execve, child.path, child.argv, child.envp);
        fail(Step::Exec)
    }
}

/// `openat` itself, relative to the current directory, with no mode (nothing is created).
#[allow(unsafe_code)]
fn open(path: *const libc::c_char, flags: c_int) -> libc::c_long {
    // SAFETY: `path` is a NUL-terminated string the caller keeps alive over the call.
    unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path, flags) }
}

/// `rt_sigprocmask` itself: glibc's wrappers leave its own two signals out of a mask.
#[allow(unsafe_code)]
fn raw_sigprocmask(how: c_int, set: &libc::sigset_t, old: Option<&mut SigSet>) {
    let old = old.map_or(std::ptr::null_mut(), |old| {
        std::ptr::from_mut(old).cast::<libc::sigset_t>()
    });
    // SAFETY: `set` is a valid set, `old` null or a SigSet (a sigset_t) to write; the kernel
    // reads and writes its own 8 bytes of each.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            std::ptr::from_ref(set),
            old,
            KERNEL_SIGSET_BYTES,
        );
    }
}

/// The last of Linux's signals, and the size of its signal set, which `rt_sigprocmask` and
/// `rt_sigaction` check.
const LAST_SIGNAL: c_int = 64;
/// The kernel's `struct sigaction` (handler, flags, restorer, mask) all zero: `SIG_DFL`.
static DEFAULT_ACTION: [u64; 4] = [0; 4];
const KERNEL_SIGSET_BYTES: libc::size_t = 8;

/// The empty signal set.
#[allow(unsafe_code)]
// SAFETY: a sigset_t is a plain bit array, so all zeros is a valid one: no signal.
static NO_SIGNAL: libc::sigset_t = unsafe { std::mem::zeroed() };

/// Starts `exec` with glibc's `posix_spawn` (also `clone(CLONE_VM | CLONE_VFORK)`), whose
/// child copies the agent's descriptor table and closes all of it but its stdio.
#[allow(unsafe_code)]
fn posix_spawn(exec: &Exec<'_>, stdio: &Stdio) -> io::Result<Pid> {
    let mut actions = FileActions::new()?;
    actions.open(0, c"/dev/null", libc::O_RDONLY)?;
    actions.open(1, &stdio.stdout, libc::O_RDWR)?;
    actions.open(2, &stdio.stderr, libc::O_RDWR)?;
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

    /// Opens `path` as `target`. Without O_CLOEXEC: opened straight onto a free `target`, the
    /// descriptor would otherwise be closed by the exec.
    fn open(&mut self, target: RawFd, path: &CStr, flags: c_int) -> io::Result<()> {
        // SAFETY: `self.0` is initialised and `path` is NUL-terminated; glibc copies the
        // string into the action list.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(&mut self.0, target, path.as_ptr(), flags, 0)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use nix::sys::signal::{kill, Signal};
    use nix::sys::stat::Mode;

    use super::*;

    /// A directory with two FIFOs in it, removed at the end.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("shoal-spawn-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for fifo in ["stdout", "stderr"] {
                nix::unistd::mkfifo(&dir.join(fifo), Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
            }
            Dir(dir)
        }

        fn stdio(&self) -> Stdio {
            Stdio::new(&self.0.join("stdout"), &self.0.join("stderr")).unwrap()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    type How = fn(&Exec<'_>, &Stdio) -> io::Result<Pid>;

    /// The two ways, each checked the same.
    const WAYS: [(&str, How); 2] = [("clone", by_clone), ("posix", posix_spawn)];

    fn start(how: How, program: &str, dir: &CStr, stdio: &Stdio) -> io::Result<Pid> {
        let argv = [c(program), c("30")];
        let envp = [c("SHOAL_SPAWN_TEST=1")];
        let exec = Exec {
            path: &argv[0],
            argv: &argv,
            envp: &envp,
            dir,
        };
        how(&exec, stdio)
    }

    fn by_clone(exec: &Exec<'_>, stdio: &Stdio) -> io::Result<Pid> {
        spawn_child(exec, stdio).map_err(|failed| failed.into_error(stdio))
    }

    /// Polls `/proc` until the process has exec'd and its loader has let go of its files.
    fn settled(pid: Pid) -> BTreeSet<String> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let comm = std::fs::read_to_string(proc.join("comm")).unwrap();
            let fds: BTreeSet<String> = std::fs::read_dir(proc.join("fd"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            if comm.trim() == "sleep" && fds.len() <= 3 || Instant::now() > deadline {
                return fds;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn status_mask(pid: Pid, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix(key)).unwrap();
        u64::from_str_radix(line.trim(), 16).unwrap()
    }

    #[test]
    fn both_ways_start_a_session_leader_with_its_stdio_only_and_no_signal_held() {
        for (name, how) in WAYS {
            let dir = Dir::new(name);
            // A descriptor without close-on-exec: neither way may pass it on.
            let leak = std::fs::File::open("/dev/zero").unwrap();
            nix::fcntl::fcntl(
                &leak,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .unwrap();
            let pid = start(how, "/bin/sleep", &c(dir.0.to_str().unwrap()), &dir.stdio()).unwrap();
            let fds = settled(pid);
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let target = |fd: &str| std::fs::read_link(proc.join("fd").join(fd)).unwrap();
            let checks = (
                fds,
                target("0"),
                target("1"),
                target("2"),
                std::fs::read_link(proc.join("cwd")).unwrap(),
                nix::unistd::getsid(Some(pid)).unwrap(),
                status_mask(pid, "SigBlk:"),
                status_mask(pid, "SigIgn:"),
            );
            kill(pid, Signal::SIGKILL).unwrap();
            nix::sys::wait::waitpid(pid, None).unwrap();
            assert_eq!(
                checks,
                (
                    BTreeSet::from(["0", "1", "2"].map(String::from)),
                    PathBuf::from("/dev/null"),
                    dir.0.join("stdout"),
                    dir.0.join("stderr"),
                    dir.0.clone(),
                    pid,
                    0,
                    0,
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn a_failed_start_says_why_and_where() {
        let dir = Dir::new("failed");
        let here = c(dir.0.to_str().unwrap());
        let errno = |e: io::Error| e.raw_os_error().map(Errno::from_raw);
        // Not executable by anyone, root included.
        let plain = dir.0.join("plain").to_str().unwrap().to_owned();
        std::fs::write(&plain, "echo\n").unwrap();
        for (name, how) in WAYS {
            let missing = start(how, "/nonexistent/program", &here, &dir.stdio()).unwrap_err();
            assert_eq!(errno(missing), Some(Errno::ENOENT), "{name}");
            let not_executable = start(how, &plain, &here, &dir.stdio()).unwrap_err();
            assert_eq!(errno(not_executable), Some(Errno::EACCES), "{name}");
            let no_dir = start(how, "/bin/sleep", &c("/nonexistent/dir"), &dir.stdio());
            assert_eq!(errno(no_dir.unwrap_err()), Some(Errno::ENOENT), "{name}");
        }
        // The clone's child names the stdio it could not open.
        let gone = Stdio::new(&dir.0.join("gone"), &dir.0.join("stderr")).unwrap();
        let e = start(by_clone, "/bin/sleep", &here, &gone).unwrap_err();
        assert!(e.to_string().contains("gone"), "{e}");
    }
}
