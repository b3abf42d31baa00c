//! shoal's package format: the `shoal.toml` manifest, deterministic archives, checksums, and
//! unpacking that treats every archive as hostile.

pub mod manifest;

pub use manifest::units::format_size;
pub use manifest::{Manifest, ManifestError, Version};
