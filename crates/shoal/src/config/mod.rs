//! Configuration: a TOML file, `SHOAL_…` environment overrides, typed sections, provenance.
