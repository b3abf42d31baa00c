//! The local API's token: 32 random bytes as hex in `agent.token`, readable by its owner
//! only. Whoever can read the file may drive the agent; nobody else can.

use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A secret compared in constant time.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token in `path`, created (mode 0600) when there is none. A token file that others
    /// can read, or that another user owns, is refused: anyone reading it could drive the
    /// agent.
    pub fn load_or_create(path: &Path) -> io::Result<Token> {
        if path.exists() {
            return Token::load(path);
        }
        // Written whole under another name, then linked into place: a reader never sees a
        // half-written token, and of two agents starting at once one token wins.
        let temp = path.with_extension(format!("new-{}", std::process::id()));
        let token = Token(random_hex(32)?);
        let write = || -> io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(token.0.as_bytes())?;
            file.sync_all()
        };
        let _ = std::fs::remove_file(&temp);
        let linked = write().and_then(|()| std::fs::hard_link(&temp, path));
        let _ = std::fs::remove_file(&temp);
        match linked {
            Ok(()) => Ok(token),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Token::load(path),
            Err(e) => Err(annotate(path, e)),
        }
    }

    /// The token in `path`, which must be private to this user (mode 0600 or stricter).
    pub fn load(path: &Path) -> io::Result<Token> {
        let meta = std::fs::metadata(path).map_err(|e| annotate(path, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{}: mode {mode:03o} lets other users read the agent's token; chmod 600 it",
                    path.display()
                ),
            ));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{}: owned by uid {}, not this user (uid {me}); run as the agent's user",
                    path.display(),
                    meta.uid()
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| annotate(path, e))?;
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not an agent token (64 hex digits); remove it and restart the agent",
                    path.display()
                ),
            ));
        }
        Ok(Token(text.to_owned()))
    }

    /// The value of an `Authorization` header carrying this token.
    pub fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header value carries this token, compared in constant time.
    pub fn accepts(&self, header: &str) -> bool {
        let Some(given) = header.strip_prefix("Bearer ") else {
            return false;
        };
        let (a, b) = (given.as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

fn annotate(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn random_hex(bytes: usize) -> io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_created_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("shoal-agent-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.token");
        let token = Token::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Token::load_or_create(&path).unwrap();
        assert!(again.accepts(&token.header()));
        assert!(!again.accepts("Bearer 00"));
        assert!(!again.accepts(&token.header().replace("Bearer", "Basic")));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::load(&path).unwrap_err().to_string();
        assert!(e.contains("mode 644 lets other users read"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "short").unwrap();
        let e = Token::load(&path).unwrap_err().to_string();
        assert!(e.contains("not an agent token"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
