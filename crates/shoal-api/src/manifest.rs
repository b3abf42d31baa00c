//! The package manifest (`shoal.toml`) as a value: what the agent acts on and what crosses between processes.
