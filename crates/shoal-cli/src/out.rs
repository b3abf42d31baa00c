//! Standard output that may close under us (`shoal ps | head -1`): writes that return an error
//! instead of panicking as `println!` does (Rust ignores SIGPIPE, so a write to a pipe whose
//! reader is gone fails with EPIPE), and [`closed`], which notices the reader going while
//! nothing is being written. `main` ends a command whose output closed quietly, with status 0.
//! Standard error's lines (`errln!`) are written whatever becomes of them.

use std::io::Write as _;
use std::os::fd::{AsFd as _, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Writes `format!(...)` to standard output and flushes it; a closed output is [`Closed`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!($($arg)*))
    };
}

/// As [`out!`], with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes a line to standard error, whatever becomes of it: `eprintln!` panics when stderr
/// is a pipe whose reader is gone (`2>&1 | head`), and a warning nobody reads is no reason to
/// stop.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

pub(crate) use {errln, out, outln};

/// Standard output's reader is gone: whatever the command had left to say, nobody reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output is closed")
    }
}

impl std::error::Error for Closed {}

/// Whether `error` is, or was caused by, standard output closing.
pub fn is_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<Closed>())
}

/// Writes formatted text to standard output and flushes it, so that a failure shows here and
/// not when the process exits (where std would drop it).
pub fn write_fmt(text: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(text)
        .and_then(|()| stdout.flush())
        .map_err(failed)
}

/// Writes `bytes` as they are (a followed log) to standard output and flushes them.
pub fn write_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(failed)
}

fn failed(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(Closed)
    } else {
        anyhow::Error::new(error).context("writing to standard output")
    }
}

/// Completes when standard output's reader is gone, without writing anything: the kernel
/// reports an error on a pipe's write end once its last reader closed, and on a terminal
/// that hung up. Never completes for an output that cannot go away or cannot be watched
/// (a file, `/dev/null`); there a closed output shows at the next write.
pub async fn closed() {
    let watched = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(watch_errors);
    match watched {
        Ok(stdout) => {
            if let Err(error) = stdout.ready(Interest::ERROR).await {
                tracing::debug!(%error, "stopped watching standard output");
                std::future::pending::<()>().await;
            }
        }
        Err(error) => {
            // EPERM: a regular file or a device without readiness, which never closes.
            tracing::debug!(%error, "standard output cannot be watched for closing");
            std::future::pending::<()>().await;
        }
    }
}

/// `fd` in the runtime's reactor, for its error readiness alone: a pipe's write end reports
/// nothing else that matters, and being writable must not wake us on every read at the
/// other end. Its own descriptor (a `dup` of standard output) is registered, so watchers
/// never share a registration.
#[allow(unsafe_code)]
fn watch_errors(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns `fd`, so the descriptor stays open and names the same file
    // until the `AsyncFd` drops it; `as_raw_fd` always returns that descriptor.
    unsafe { AsyncFd::register_with_interest(fd, Interest::ERROR) }.map_err(Into::into)
}
