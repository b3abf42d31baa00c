//! [`Capture`]: one thread that moves every program's output from its FIFOs into its log
//! files, through one buffer.
//!
//! The thread waits on all the FIFOs at once (epoll) and, for each that is readable, reads
//! into the shared buffer and appends what it read to the program's [`RotatingFile`] before
//! reading again: nothing read is held anywhere but that buffer, and only until it is
//! written. What the thread has not read stays in the pipe, where the next agent finds it.
//! File writes never run on the async executor, and a program costs two descriptors here,
//! not a task, a thread or a buffer.
//!
//! Each line in a log starts with the time the agent read it, RFC 3339 in UTC with
//! milliseconds, and a space (`2026-11-22T11:00:00.123Z listening on 3000`), so `shoal logs
//! --since` can pick lines by time; the program's bytes follow unchanged.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use shoal::logging::RotatingFile;
use tokio::sync::oneshot;

/// The one buffer reads go through.
const BUFFER: usize = 64 * 1024;
/// The most written as one record: a read is cut into records that end at a newline where
/// one is within this many bytes, so the log rotates close to its size and whole lines stay
/// in one file (a longer line, or one still being written, may be split).
const RECORD: usize = 4096;
/// Reads from one FIFO before the others get a turn.
const READS_PER_TURN: usize = 16;
/// Reads when a stream is removed: what its pipe can hold, and a bound for a writer that
/// goes on writing meanwhile.
const DRAIN_TURNS: usize = 64;
/// The epoll key of the wake-up eventfd; streams count up from 1.
const WAKE: u64 = 0;

/// The capture thread's handle. Dropping it stops the thread without waiting for it.
#[derive(Debug)]
pub(crate) struct Capture {
    tx: Mutex<mpsc::Sender<Msg>>,
    wake: Arc<EventFd>,
    next_key: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A FIFO being captured, returned by [`Capture::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StreamKey(u64);

enum Msg {
    Add {
        key: u64,
        fifo: File,
        log: RotatingFile,
    },
    /// Reads what is left, then closes the FIFO.
    Remove {
        key: u64,
        done: oneshot::Sender<()>,
    },
    Stop,
}

impl Capture {
    pub fn start() -> io::Result<Capture> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let (tx, rx) = mpsc::channel();
        let thread_wake = wake.clone();
        let thread = std::thread::Builder::new()
            .name("shoal-capture".into())
            // Reads, writes and a rotation: a small stack is plenty.
            .stack_size(256 * 1024)
            .spawn(move || run(epoll, &thread_wake, rx))?;
        Ok(Capture {
            tx: Mutex::new(tx),
            wake,
            next_key: AtomicU64::new(WAKE + 1),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Captures `fifo` (a FIFO's read end, opened non-blocking) into `log` from now on.
    pub fn add(&self, fifo: OwnedFd, log: RotatingFile) -> StreamKey {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.send(Msg::Add {
            key,
            fifo: File::from(fifo),
            log,
        });
        StreamKey(key)
    }

    /// Has the thread copy what is left in the stream's FIFO into its log, then close it;
    /// the receiver completes when it has (or fails if the thread is gone, the stream with
    /// it).
    pub fn remove(&self, key: StreamKey) -> oneshot::Receiver<()> {
        let (done, wait) = oneshot::channel();
        self.send(Msg::Remove { key: key.0, done });
        wait
    }

    /// Stops the thread (streams are closed as they are, what they hold left in their
    /// pipes) and returns it to join.
    pub fn stop(&self) -> Option<JoinHandle<()>> {
        self.send(Msg::Stop);
        self.thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn send(&self, msg: Msg) {
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(msg);
        if sent.is_ok() {
            // Fails only when the counter would overflow, and then a wake-up is pending.
            let _ = self.wake.write(1);
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.send(Msg::Stop);
    }
}

struct Stream {
    fifo: File,
    log: RotatingFile,
    /// The next byte read starts a line (and gets a timestamp).
    at_line_start: std::cell::Cell<bool>,
}

fn run(epoll: Epoll, wake: &EventFd, rx: mpsc::Receiver<Msg>) {
    let mut streams: HashMap<u64, Stream> = HashMap::new();
    let mut buffer = vec![0; BUFFER];
    let mut stamped = Vec::with_capacity(BUFFER);
    let mut events = [EpollEvent::empty(); 64];
    loop {
        let ready = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "output capture stopped: epoll failed");
                return;
            }
        };
        for event in &events[..ready] {
            let key = event.data();
            if key != WAKE {
                // Absent when removed earlier in this batch.
                if let Some(stream) = streams.get(&key) {
                    pump(stream, &mut buffer, &mut stamped, READS_PER_TURN);
                }
                continue;
            }
            let _ = wake.read();
            loop {
                match rx.try_recv() {
                    Ok(Msg::Add { key, fifo, log }) => {
                        match epoll.add(fifo.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, key)) {
                            Ok(()) => {
                                let at_line_start = std::cell::Cell::new(true);
                                streams.insert(
                                    key,
                                    Stream {
                                        fifo,
                                        log,
                                        at_line_start,
                                    },
                                );
                            }
                            Err(e) => tracing::error!(
                                log = %log.path().display(),
                                error = %e,
                                "cannot capture output"
                            ),
                        }
                    }
                    Ok(Msg::Remove { key, done }) => {
                        if let Some(stream) = streams.remove(&key) {
                            pump(&stream, &mut buffer, &mut stamped, DRAIN_TURNS);
                            let _ = epoll.delete(stream.fifo.as_fd());
                        }
                        let _ = done.send(());
                    }
                    Ok(Msg::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
        }
    }
}

/// Moves up to `turns` buffers from the stream's FIFO to its log, stopping when the FIFO is
/// empty. The FIFO never reads as closed: the agent holds it open for writing too.
fn pump(stream: &Stream, buffer: &mut [u8], stamped: &mut Vec<u8>, turns: usize) {
    for _ in 0..turns {
        match (&stream.fifo).read(buffer) {
            Ok(0) => return,
            Ok(n) => {
                let now = chrono::Utc::now()
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ ")
                    .to_string();
                let at_line_start = stamp(
                    &buffer[..n],
                    now.as_bytes(),
                    stream.at_line_start.get(),
                    stamped,
                );
                stream.at_line_start.set(at_line_start);
                for record in records(stamped, RECORD) {
                    // A failure is reported by the file itself (once); the bytes are lost
                    // either way, and holding them would only block the program.
                    let _ = stream.log.write_record(record);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(log = %stream.log.path().display(), error = %e, "cannot read output");
                return;
            }
        }
    }
}

/// `data` into `out` with `stamp` before each line's first byte (the first byte of `data`
/// starts one when `at_line_start`); returns whether the byte after `data` starts a line.
fn stamp(data: &[u8], stamp: &[u8], mut at_line_start: bool, out: &mut Vec<u8>) -> bool {
    out.clear();
    for piece in data.split_inclusive(|&b| b == b'\n') {
        if at_line_start {
            out.extend_from_slice(stamp);
        }
        out.extend_from_slice(piece);
        at_line_start = piece.ends_with(b"\n");
    }
    at_line_start
}

/// `data` cut into pieces of at most `max` bytes, each ending just after the last newline
/// within its reach (or at `max` if there is none).
fn records(data: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = if rest.len() <= max {
            rest.len()
        } else {
            rest[..max]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(max, |i| i + 1)
        };
        let (record, after) = rest.split_at(cut);
        rest = after;
        Some(record)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_stamped_once_across_reads() {
        let mut out = Vec::new();
        let t = b"T ";
        assert!(stamp(b"a\nb\n", t, true, &mut out));
        assert_eq!(out, b"T a\nT b\n");
        assert!(!stamp(b"half", t, true, &mut out));
        assert_eq!(out, b"T half");
        assert!(!stamp(b" more", t, false, &mut out));
        assert_eq!(out, b" more");
        assert!(stamp(b" end\n", t, false, &mut out));
        assert_eq!(out, b" end\n");
        assert!(!stamp(b"\n\nx", t, true, &mut out));
        assert_eq!(out, b"T \nT \nT x");
    }

    #[test]
    fn reads_are_cut_after_newlines_within_reach() {
        let check = |data: &str, max: usize, expected: &[&str]| {
            let got: Vec<&str> = records(data.as_bytes(), max)
                .map(|r| std::str::from_utf8(r).unwrap())
                .collect();
            assert_eq!(got, expected, "{data:?} by {max}");
        };
        check("", 4, &[]);
        check("ab\n", 4, &["ab\n"]);
        check("ab\ncd\nef\n", 6, &["ab\ncd\n", "ef\n"]);
        check("ab\ncdefgh\n", 6, &["ab\n", "cdefgh", "\n"]);
        check("abcdefghij", 4, &["abcd", "efgh", "ij"]);
        check("a\nb\nc", 100, &["a\nb\nc"]);
    }
}
