//! `shoal.toml`, the manifest at the root of every package: reading and checking it into the
//! types of [`shoal_api::manifest`] (re-exported here, so `shoal_pkg::manifest::Manifest` is
//! that type), and [`ManifestError`], which names the file, the key and what is expected.
//!
//! The keys, their defaults and the rules they are checked against are in the crate
//! documentation; `parse.rs` does the checking.

mod parse;
pub(crate) mod units;

use std::fmt;
use std::path::Path;

pub use shoal_api::manifest::*;

/// The manifest's file name, at the root of a package directory and of its archive.
pub const MANIFEST_FILE: &str = "shoal.toml";

/// The largest manifest read, in bytes; a package whose `shoal.toml` is larger is refused.
pub const MAX_MANIFEST_SIZE: u64 = 64 * 1024;

/// Reading a [`Manifest`] from TOML: `Manifest::parse(text, file)` and `Manifest::load(path)`
/// with this trait in scope. A trait because the type lives in `shoal-api`, which does no IO
/// and parses no TOML.
pub trait ManifestExt: Sized {
    /// Checks manifest `text`; `file` (the path it came from, or just `shoal.toml`) starts
    /// every error.
    fn parse(text: &str, file: &str) -> Result<Self, ManifestError>;

    /// Reads and checks the manifest at `path`.
    fn load(path: &Path) -> Result<Self, ManifestError>;
}

impl ManifestExt for Manifest {
    fn parse(text: &str, file: &str) -> Result<Manifest, ManifestError> {
        parse::manifest(text, file)
    }

    fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let file = path.display().to_string();
        let unreadable =
            |e: &dyn fmt::Display| ManifestError::whole(&file, format!("cannot read: {e}"));
        let size = std::fs::metadata(path).map_err(|e| unreadable(&e))?.len();
        if size > MAX_MANIFEST_SIZE {
            return Err(ManifestError::whole(
                &file,
                format!("{size} bytes, more than the {MAX_MANIFEST_SIZE} a manifest may have"),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(&e))?;
        Manifest::parse(&text, &file)
    }
}

/// Why a manifest was refused: `shoal.toml: run.restart: "sometimes" is not one of always,
/// on-failure, never`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest's path as given, or `shoal.toml` inside an archive.
    pub file: String,
    /// The key at fault, as a dotted path (`cron[1].schedule`); empty when the fault is the
    /// file's (unreadable, not TOML).
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ManifestError {
    pub(crate) fn whole(file: &str, message: String) -> ManifestError {
        ManifestError {
            file: file.to_owned(),
            key: String::new(),
            message,
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

impl std::error::Error for ManifestError {}
