//! SHA-256 digests of package archives: the [`Sha256`] value, hashing files and streams, and
//! the `sha256sum` line written beside every archive.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use sha2::Digest as _;

/// A SHA-256 digest; shown and parsed as 64 lowercase hex digits (parsing accepts uppercase).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The digest of everything `reader` yields.
    pub fn of_reader(mut reader: impl Read) -> io::Result<Sha256> {
        let mut hasher = Hasher::new(io::sink());
        io::copy(&mut reader, &mut hasher)?;
        Ok(hasher.finish().1)
    }

    /// The digest of the file at `path`.
    pub fn of_file(path: &Path) -> io::Result<Sha256> {
        Sha256::of_reader(File::open(path)?)
    }

    /// The line `sha256sum` writes and `sha256sum -c` checks: `HEX  FILE_NAME\n`.
    pub fn checksum_line(&self, file_name: &str) -> String {
        format!("{self}  {file_name}\n")
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SHA-256 digest: expected 64 hex digits")]
pub struct BadDigest(pub String);

impl FromStr for Sha256 {
    type Err = BadDigest;

    fn from_str(text: &str) -> Result<Sha256, BadDigest> {
        let bad = || BadDigest(text.to_owned());
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Sha256(out))
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Hashes what passes through it, read or written (the agent's backups use it too).
#[derive(Debug)]
pub struct Hasher<T> {
    inner: T,
    hasher: sha2::Sha256,
}

impl<T> Hasher<T> {
    pub fn new(inner: T) -> Hasher<T> {
        Hasher {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }

    /// The inner reader or writer, and the digest of everything that passed.
    pub fn finish(self) -> (T, Sha256) {
        (self.inner, Sha256(self.hasher.finalize().into()))
    }
}

impl<R: Read> Read for Hasher<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for Hasher<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let empty = Sha256::of_reader(io::empty()).unwrap();
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(empty.to_string(), hex);
        assert_eq!(hex.parse::<Sha256>().unwrap(), empty);
        assert_eq!(hex.to_uppercase().parse::<Sha256>().unwrap(), empty);
        assert!(hex[1..].parse::<Sha256>().is_err());
        assert!(format!("{}zz", &hex[2..]).parse::<Sha256>().is_err());
        assert!("é".repeat(32).parse::<Sha256>().is_err());
        assert!(format!("+{}", &hex[1..]).parse::<Sha256>().is_err());
        assert_eq!(
            empty.checksum_line("a.tar.gz"),
            format!("{hex}  a.tar.gz\n")
        );
    }
}
