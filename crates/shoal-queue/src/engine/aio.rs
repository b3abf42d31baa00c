//! Linux's native asynchronous IO, for a publish's direct write: the write is submitted, the
//! task waits on an eventfd in the runtime's reactor like on a socket, and the thread that
//! read the publish goes on to serve others meanwhile. Writing on an async thread would hold
//! its other tasks up for the disk's time; `block_in_place` instead hands the thread's
//! runtime to another thread at each publish, about a third of a lone publisher's rate.
//!
//! One write at a time per [`Aio`] (its topic's log is held while it runs). The memory it
//! writes from must stay put until the write is reaped: [`Aio::completion`], or
//! [`Aio::completion_blocking`] for a caller dropped while it waited.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::libc;
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `struct iocb` of `linux/aio_abi.h`.
#[repr(C)]
#[derive(Debug, Default)]
struct Iocb {
    data: u64,
    #[cfg(target_endian = "little")]
    key: u32,
    rw_flags: i32,
    #[cfg(target_endian = "big")]
    key: u32,
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}

/// `struct io_event` of `linux/aio_abi.h`.
#[repr(C)]
#[derive(Debug, Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const IOCB_CMD_PWRITE: u16 = 1;
/// Signal `resfd` (an eventfd) on completion.
const IOCB_FLAG_RESFD: u32 = 1;

/// An AIO context with the eventfd its completions signal.
#[derive(Debug)]
pub struct Aio {
    context: libc::c_ulong,
    done: AsyncFd<OwnedFd>,
}

impl Aio {
    /// A context for one write at a time; must be called inside a runtime.
    pub fn new() -> io::Result<Aio> {
        let done = OwnedFd::from(EventFd::from_flags(
            EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
        )?);
        // SAFETY: the OwnedFd is the AsyncFd's own: it stays open, the same descriptor, until
        // the AsyncFd is dropped. Readable only: an eventfd is always writable, and each
        // completion would wake the reactor for that too.
        #[allow(unsafe_code)]
        let done = unsafe { AsyncFd::register_with_interest(done, Interest::READABLE) }
            .map_err(io::Error::from)?;
        let mut context: libc::c_ulong = 0;
        // SAFETY: io_setup writes the new context's id to the pointer it is given, which
        // points at a live c_ulong.
        #[allow(unsafe_code)]
        let r = unsafe { libc::syscall(libc::SYS_io_setup, 1 as libc::c_long, &mut context) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Aio { context, done })
    }

    /// Submits a write of `blocks` at `offset` of `file`, synchronous in the file's own terms
    /// (a file opened with `O_DSYNC` completes once the data is on stable storage).
    ///
    /// # Safety
    /// `blocks` must stay alive and unmoved, and must not be written, until the write is
    /// reaped by [`Aio::completion`] or [`Aio::completion_blocking`]; no other write may be
    /// submitted on this context before that.
    #[allow(unsafe_code)]
    pub unsafe fn submit(
        &self,
        file: BorrowedFd<'_>,
        blocks: &[u8],
        offset: u64,
    ) -> io::Result<()> {
        let iocb = Iocb {
            opcode: IOCB_CMD_PWRITE,
            fildes: file.as_raw_fd() as u32,
            buf: blocks.as_ptr() as u64,
            nbytes: blocks.len() as u64,
            offset: offset as i64,
            flags: IOCB_FLAG_RESFD,
            resfd: self.done.as_raw_fd() as u32,
            ..Iocb::default()
        };
        let mut list = [&iocb as *const Iocb];
        // SAFETY: the kernel copies the iocb during the call; the memory it points at lives
        // until the write is reaped, as the caller promised.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                self.context,
                1 as libc::c_long,
                list.as_mut_ptr(),
            )
        };
        match r {
            1 => Ok(()),
            r if r < 0 => Err(io::Error::last_os_error()),
            _ => Err(io::Error::other("io_submit took no write")),
        }
    }

    /// Waits for the write in flight and answers how many bytes it wrote.
    pub async fn completion(&self) -> io::Result<usize> {
        loop {
            let mut ready = self.done.readable().await?;
            // Read down to zero, or found so: not readable until the next completion.
            let signalled = drain(self.done.get_ref().as_fd());
            ready.clear_ready();
            if !signalled {
                continue;
            }
            if let Some(result) = self.reap(false)? {
                return result;
            }
        }
    }

    /// [`Aio::completion`] on a thread that may wait.
    pub fn completion_blocking(&self) -> io::Result<usize> {
        loop {
            if let Some(result) = self.reap(true)? {
                drain(self.done.get_ref().as_fd());
                return result;
            }
        }
    }

    /// The write's outcome if it is done; with `wait`, waits for it.
    fn reap(&self, wait: bool) -> io::Result<Option<io::Result<usize>>> {
        let mut event = IoEvent::default();
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let timeout: *const libc::timespec = if wait { std::ptr::null() } else { &zero };
        // SAFETY: io_getevents writes at most one event into the live `event`, and reads the
        // timeout if it is not null.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.context,
                1 as libc::c_long,
                1 as libc::c_long,
                &mut event as *mut IoEvent,
                timeout,
            )
        };
        match r {
            1 if event.res < 0 => Ok(Some(Err(io::Error::from_raw_os_error(-event.res as i32)))),
            1 => Ok(Some(Ok(event.res as usize))),
            0 => Ok(None),
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => Ok(None),
                    _ => Err(e),
                }
            }
        }
    }
}

impl Drop for Aio {
    fn drop(&mut self) {
        // Waits for any write still in flight (there is none: each is reaped by its caller).
        // SAFETY: the context is this one's and is not used again.
        #[allow(unsafe_code)]
        unsafe {
            libc::syscall(libc::SYS_io_destroy, self.context);
        }
    }
}

/// Reads the eventfd's count down to zero; true if it held one.
fn drain(fd: BorrowedFd<'_>) -> bool {
    let mut count = [0u8; 8];
    nix::unistd::read(fd, &mut count).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::direct::BLOCK;
    use std::os::unix::fs::OpenOptionsExt;

    #[tokio::test]
    async fn a_direct_write_completes_through_the_reactor() {
        let dir = crate::engine::testdir::TestDir::new("aio");
        let path = dir.path().join("seg");
        std::fs::write(&path, vec![0u8; 2 * BLOCK as usize]).unwrap();
        let Ok(file) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(&path)
        else {
            println!("skipped: the test directory's filesystem takes no direct writes");
            return;
        };
        let aio = match Aio::new() {
            Ok(aio) => aio,
            // A kernel built without AIO, or a sandbox that filters it out: the engine then
            // writes in block_in_place.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                println!("skipped: no asynchronous IO here ({e})");
                return;
            }
            Err(e) => panic!("io_setup: {e}"),
        };
        let mut memory = vec![7u8; 2 * BLOCK as usize];
        let at = memory.as_ptr().align_offset(BLOCK as usize);
        let blocks = &mut memory[at..at + BLOCK as usize];
        // SAFETY: `memory` outlives the completion awaited below.
        #[allow(unsafe_code)]
        unsafe {
            aio.submit(file.as_fd(), blocks, BLOCK).unwrap();
        }
        assert_eq!(aio.completion().await.unwrap(), BLOCK as usize);
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk[..BLOCK as usize].iter().all(|&b| b == 0));
        assert!(on_disk[BLOCK as usize..].iter().all(|&b| b == 7));

        // Unaligned memory: the kernel refuses it, and says so at completion or submission.
        let unaligned = &memory[at + 1..at + 1 + BLOCK as usize];
        #[allow(unsafe_code)]
        let submitted = unsafe { aio.submit(file.as_fd(), unaligned, 0) };
        let outcome = match submitted {
            Ok(()) => aio.completion_blocking(),
            Err(e) => Err(e),
        };
        assert_eq!(outcome.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    }
}
