//! The types that cross between shoal's own processes: what an agent's API answers, what a
//! service's `shoal.status` answers, the package manifest, and `shoal queue`'s calls. Serde
//! types only, no IO, so every side of a boundary (the agent, the CLI, the center, a test)
//! decodes the same type instead of reading values back by key.

pub mod agent;
pub mod center;
pub mod config;
pub mod fleet;
pub mod manifest;
pub mod program;
pub mod queue;
pub mod status;
pub mod token;
