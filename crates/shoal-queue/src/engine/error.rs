//! What the engine refuses or fails at, each naming the topic, subscription or file at fault.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "topic {topic} is full ({bytes} bytes stored, max_bytes {max_bytes}): subscription \
         {holder} holds the oldest message (seq {oldest}); ack or unregister it, or raise max_bytes"
    )]
    Full {
        topic: String,
        bytes: u64,
        max_bytes: u64,
        holder: String,
        oldest: u64,
    },
    #[error("topic {topic}: a publish of {size} bytes is over the limit of {max} bytes; split it")]
    TooLarge { topic: String, size: u64, max: u64 },
    #[error("no topic {topic}: create it first (shoal queue topic create {topic})")]
    NoTopic { topic: String },
    #[error("topic {topic} exists with max_bytes {max_bytes}; asked for {asked}")]
    TopicExists {
        topic: String,
        max_bytes: u64,
        asked: u64,
    },
    #[error("topic {topic}: max_bytes {max_bytes} is below the smallest allowed, {min}")]
    MaxBytesTooSmall {
        topic: String,
        max_bytes: u64,
        min: u64,
    },
    #[error("topic {topic} has no subscription {sub}: register it first (shoal queue sub add {topic} {sub})")]
    NoSubscription { topic: String, sub: String },
    #[error("{kind} name {name:?}: use 1 to 128 of A-Z a-z 0-9 . _ - (not starting with .)")]
    BadName { kind: NameKind, name: String },
    #[error(
        "topic {topic}, subscription {sub}: seq {seq} is not one of its messages (published \
         before it registered, or not yet published); nothing was acked"
    )]
    NotItsMessage {
        topic: String,
        sub: String,
        seq: u64,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: record at byte {offset} is damaged (checksum or sequence mismatch) before the last segment; restore the file or remove the topic")]
    Corrupt { path: PathBuf, offset: u64 },
    #[error("{path}: cannot read the state file: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: rmp_serde::decode::Error,
    },
    #[error(
        "topic {topic}, subscription {sub}: seq {seq} was not delivered by this queue since it \
         started (JetStream acks a delivery, not a sequence); fetch it again, then ack"
    )]
    NotDelivered {
        topic: String,
        sub: String,
        seq: u64,
    },
    #[error("JetStream at {url}: {what}: {source}")]
    Nats {
        url: String,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the queue is shutting down")]
    Closed,
}

/// Which kind of name [`Error::BadName`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Topic,
    Subscription,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::Topic => "topic",
            NameKind::Subscription => "subscription",
        })
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Checks a topic or subscription name: it becomes a directory or a key in a state file.
pub fn check_name(kind: NameKind, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName {
            kind,
            name: name.to_owned(),
        })
    }
}
