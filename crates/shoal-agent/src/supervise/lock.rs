//! [`Lock`]: one supervisor per data directory. Two would both adopt the same processes and
//! both restart them; the second to open is refused instead.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// An exclusive `flock` on `run/supervise.lock`, holding the owner's pid for messages. The
/// kernel releases it when its holder dies (even by SIGKILL); the descriptor is
/// close-on-exec, so no program inherits it.
#[derive(Debug)]
pub(crate) struct Lock {
    _file: Flock<File>,
}

impl Lock {
    /// Takes the lock, or says which process holds it.
    pub fn take(path: &Path) -> Result<Lock, LockError> {
        let fail = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(fail)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => file,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(LockError::Held {
                    path: path.to_owned(),
                    holder: holder.trim().to_owned(),
                });
            }
            Err((_, errno)) => return Err(fail(errno.into())),
        };
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(fail)?;
        Ok(Lock { _file: file })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{}: another agent (pid {holder}) supervises this data directory; stop it first",
        path.display()
    )]
    Held { path: PathBuf, holder: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
