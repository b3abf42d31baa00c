//! Test helpers: temporary directories that clean up after themselves, and a raw tar writer
//! that builds archives byte by byte, malicious ones included (paths set as raw bytes, where
//! `tar`'s builder would refuse them).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::write::GzEncoder;
use flate2::Compression;
use shoal_pkg::Sha256;
use tar::{EntryType, Header};

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("shoal-pkg-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A valid crontab manifest, the smallest a package can have.
pub const MANIFEST: &str = "[package]\nname = \"reports\"\nversion = \"0.1.0\"\nkind = \"crontab\"\n\
                            [[cron]]\nname = \"daily\"\nschedule = \"0 0 3 * * *\"\ncommand = \"bin/daily\"\n";

/// An uncompressed tar stream written header by header.
#[derive(Default, Clone)]
pub struct Raw {
    pub bytes: Vec<u8>,
}

impl Raw {
    pub fn new() -> Raw {
        Raw::default()
    }

    /// A raw entry: `path` and `link` go into the header as bytes, unchecked (at most 100
    /// each); `size` is what the header claims, `data` what follows it.
    pub fn header(
        mut self,
        kind: EntryType,
        path: &[u8],
        link: &[u8],
        mode: u32,
        size: u64,
        data: &[u8],
    ) -> Raw {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(0);
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0, pad));
        self
    }

    pub fn file(self, path: &str, data: &[u8]) -> Raw {
        self.file_mode(path, 0o644, data)
    }

    pub fn file_mode(self, path: &str, mode: u32, data: &[u8]) -> Raw {
        self.header(
            EntryType::Regular,
            path.as_bytes(),
            b"",
            mode,
            data.len() as u64,
            data,
        )
    }

    pub fn manifest(self) -> Raw {
        self.file("shoal.toml", MANIFEST.as_bytes())
    }

    pub fn dir(self, path: &str) -> Raw {
        self.header(EntryType::Directory, path.as_bytes(), b"", 0o755, 0, b"")
    }

    pub fn symlink(self, path: &str, target: &str) -> Raw {
        self.header(
            EntryType::Symlink,
            path.as_bytes(),
            target.as_bytes(),
            0o777,
            0,
            b"",
        )
    }

    pub fn hard_link(self, path: &str, target: &str) -> Raw {
        self.header(
            EntryType::Link,
            path.as_bytes(),
            target.as_bytes(),
            0o644,
            0,
            b"",
        )
    }

    pub fn special(self, kind: EntryType, path: &str) -> Raw {
        self.header(kind, path.as_bytes(), b"", 0o644, 0, b"")
    }

    /// A GNU long-name record naming the next entry (no length limit).
    pub fn long_name(self, name: &[u8]) -> Raw {
        let mut data = name.to_vec();
        data.push(0);
        let size = data.len() as u64;
        self.header(
            EntryType::GNULongName,
            b"././@LongLink",
            b"",
            0o644,
            size,
            &data,
        )
    }

    /// A pax extended header for the next entry (`global`: for all of them).
    pub fn pax(self, records: &[(&str, &str)], global: bool) -> Raw {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = format!(" {key}={value}\n");
            // The length counts its own digits.
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        let kind = if global {
            EntryType::XGlobalHeader
        } else {
            EntryType::XHeader
        };
        let size = data.len() as u64;
        self.header(kind, b"PaxHeader", b"", 0o644, size, &data)
    }

    /// The stream with its end-of-archive blocks.
    pub fn tar(&self) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        bytes.extend(std::iter::repeat_n(0, 1024));
        bytes
    }

    /// Gzipped, as a package file is.
    pub fn gz(&self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub fn sha256(bytes: &[u8]) -> Sha256 {
    Sha256::of_reader(bytes).unwrap()
}

/// Every path below `dir` (relative, sorted), not following symlinks.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}
