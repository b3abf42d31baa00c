//! The engine as the server sees it: [`Backend`], one set of calls implemented by shoal's own
//! file engine ([`Engine`]) and, with the `nats` feature, by JetStream's ([`crate::nats`]).

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::engine::{Commit, Engine, Error, Message, TopicStats};

/// What the queue's RPC methods call; every implementation keeps the same semantics (see the
/// crate docs) and answers the same [`Error`]s.
#[async_trait]
pub trait Backend: Debug + Send + Sync + 'static {
    async fn create_topic(&self, topic: &str, max_bytes: Option<u64>) -> Result<(), Error>;
    /// Every topic's name, sorted.
    async fn topics(&self) -> Result<Vec<String>, Error>;
    async fn register(&self, topic: &str, sub: &str) -> Result<(), Error>;
    async fn unregister(&self, topic: &str, sub: &str) -> Result<(), Error>;
    /// Answers once every message is durable, with their sequence numbers.
    async fn publish(&self, topic: &str, messages: Vec<Vec<u8>>) -> Result<Vec<u64>, Error>;
    /// [`Backend::publish`], saying where the write may happen (an engine that always
    /// writes the same way ignores `commit`).
    async fn publish_with(
        &self,
        topic: &str,
        messages: Vec<Vec<u8>>,
        commit: Commit,
    ) -> Result<Vec<u64>, Error> {
        let _ = commit;
        self.publish(topic, messages).await
    }
    async fn fetch(
        &self,
        topic: &str,
        sub: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, Error>;
    async fn ack(&self, topic: &str, sub: &str, seqs: Vec<u64>) -> Result<(), Error>;
    async fn nack(
        &self,
        topic: &str,
        sub: &str,
        seqs: Vec<u64>,
        delay: Duration,
    ) -> Result<(), Error>;
    async fn stats(&self, topic: &str) -> Result<TopicStats, Error>;
    /// Finishes what was sent and stops; later calls answer [`Error::Closed`].
    async fn close(&self);
}

/// Which engine a queue runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// shoal's segmented log under the data directory.
    #[default]
    File,
    /// JetStream on the NATS server at `url` (needs the `nats` feature).
    Nats { url: String },
}

#[async_trait]
impl Backend for Engine {
    async fn create_topic(&self, topic: &str, max_bytes: Option<u64>) -> Result<(), Error> {
        Engine::create_topic(self, topic, max_bytes).await
    }

    async fn topics(&self) -> Result<Vec<String>, Error> {
        Ok(Engine::topics(self))
    }

    async fn register(&self, topic: &str, sub: &str) -> Result<(), Error> {
        Engine::register(self, topic, sub).await
    }

    async fn unregister(&self, topic: &str, sub: &str) -> Result<(), Error> {
        Engine::unregister(self, topic, sub).await
    }

    async fn publish(&self, topic: &str, messages: Vec<Vec<u8>>) -> Result<Vec<u64>, Error> {
        Engine::publish(self, topic, messages).await
    }

    async fn publish_with(
        &self,
        topic: &str,
        messages: Vec<Vec<u8>>,
        commit: Commit,
    ) -> Result<Vec<u64>, Error> {
        Engine::publish_with(self, topic, messages, commit).await
    }

    async fn fetch(
        &self,
        topic: &str,
        sub: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, Error> {
        Engine::fetch(self, topic, sub, max, wait).await
    }

    async fn ack(&self, topic: &str, sub: &str, seqs: Vec<u64>) -> Result<(), Error> {
        Engine::ack(self, topic, sub, seqs).await
    }

    async fn nack(
        &self,
        topic: &str,
        sub: &str,
        seqs: Vec<u64>,
        delay: Duration,
    ) -> Result<(), Error> {
        Engine::nack(self, topic, sub, seqs, delay).await
    }

    async fn stats(&self, topic: &str) -> Result<TopicStats, Error> {
        Engine::stats(self, topic).await
    }

    async fn close(&self) {
        Engine::close(self).await
    }
}
