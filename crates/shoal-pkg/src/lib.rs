//! shoal's package format: the `shoal.toml` manifest, deterministic archives, checksums, and
//! unpacking that treats every archive as hostile.

mod archive;
mod build;
mod digest;
mod inspect;
pub mod manifest;
mod unpack;

pub use archive::{ArchiveError, Limits, Rule, MAX_PATH_LEN};
pub use build::{build, BuildError, Built};
pub use digest::{BadDigest, Sha256};
pub use inspect::{inspect, Inspection};
pub use manifest::units::format_size;
pub use manifest::{Manifest, ManifestError, Version};
pub use unpack::{unpack, Unpacked};
