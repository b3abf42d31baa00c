//! One process per store: an exclusive `flock` on `<database>.lock`. Two processes writing one
//! database would each broadcast only their own commits, so the other's watches would miss
//! them; the second to open is refused instead. The kernel releases the lock when its holder
//! dies, even by SIGKILL.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::backend;
use crate::Result;

/// The lock, held while it lives; the file holds the holder's pid, for the message.
#[derive(Debug)]
pub(super) struct Lock {
    _file: Flock<File>,
}

impl Lock {
    pub fn take(path: &Path) -> Result<Lock> {
        let doing = || format!("locking {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| backend(doing(), e))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => file,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let why = format!(
                    "another process (pid {}) has this store open; stop it first",
                    holder.trim()
                );
                return Err(backend(doing(), why));
            }
            Err((_, errno)) => return Err(backend(doing(), errno)),
        };
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(|e| backend(doing(), e))?;
        Ok(Lock { _file: file })
    }
}
