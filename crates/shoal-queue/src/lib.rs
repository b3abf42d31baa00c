//! shoal queue: a durable fan-out queue. Every subscription registered before a message is
//! published gets it, connected or not; the message is deleted once all of them acked it.

pub mod backend;
pub mod engine;
#[cfg(feature = "nats")]
pub mod nats;

pub use backend::{Backend, EngineKind};
pub use engine::{Commit, Engine, EngineOptions, Error, Message, SubStats, TopicStats};
pub mod client;
pub mod server;

pub use client::Client;
pub use server::{run, Config, Queue, StartError, TlsFiles};
