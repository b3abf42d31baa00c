//! What `shoal queue` answers and is asked over MessagePack-RPC: one map argument per call
//! (so any language names its fields), payloads as MessagePack `bin`.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Method names.
pub mod methods {
    pub const CREATE_TOPIC: &str = "queue.create_topic";
    pub const REGISTER: &str = "queue.register";
    pub const UNREGISTER: &str = "queue.unregister";
    pub const PUBLISH: &str = "queue.publish";
    pub const FETCH: &str = "queue.fetch";
    pub const ACK: &str = "queue.ack";
    pub const NACK: &str = "queue.nack";
    pub const STATS: &str = "queue.stats";
}

/// Error codes a queue answers with, beside shoal-rpc's own.
pub mod codes {
    /// The topic is at `max_bytes`; `data` names `topic` and `holder`.
    pub const FULL: i64 = 1001;
    /// A message or batch over the limit.
    pub const TOO_LARGE: i64 = 1002;
    pub const NO_TOPIC: i64 = 1003;
    pub const NO_SUBSCRIPTION: i64 = 1004;
    /// A bad name, a conflicting topic, or an ack of a sequence not published for that
    /// subscription.
    pub const INVALID: i64 = 1005;
    /// The token is missing or wrong.
    pub const UNAUTHORIZED: i64 = 1006;
    /// The queue is shutting down.
    pub const CLOSED: i64 = 1007;
}

/// `queue.create_topic`: answers nil; creating it again with the same limit is a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreateTopic {
    pub topic: String,
    /// Bytes the topic may hold on disk; the queue's default when absent.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub token: Option<String>,
}

/// `queue.register` and `queue.unregister`: answer nil.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Subscription {
    pub topic: String,
    pub sub: String,
    #[serde(default)]
    pub token: Option<String>,
}

/// `queue.publish`: answers [`Published`] once every message is on disk.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Publish {
    pub topic: String,
    pub messages: Vec<ByteBuf>,
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// One per message, in order.
    pub seqs: Vec<u64>,
}

/// `queue.fetch`: answers up to `max` [`Message`]s, waiting up to `wait_ms` while there are
/// none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fetch {
    pub topic: String,
    pub sub: String,
    /// 1 when absent.
    #[serde(default)]
    pub max: Option<u32>,
    /// 0 (answer at once) when absent.
    #[serde(default)]
    pub wait_ms: Option<u64>,
    #[serde(default)]
    pub token: Option<String>,
}

/// `queue.ack`: answers nil.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ack {
    pub topic: String,
    pub sub: String,
    pub seqs: Vec<u64>,
    #[serde(default)]
    pub token: Option<String>,
}

/// `queue.nack`: answers nil; the messages are delivered again after `delay_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Nack {
    pub topic: String,
    pub sub: String,
    pub seqs: Vec<u64>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub token: Option<String>,
}

/// `queue.stats`: answers one [`TopicStats`] per topic (only `topic`'s when given).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

/// A message as a subscription receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub seq: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Delivered before (its ack timeout passed, or it was nacked).
    pub redelivered: bool,
}

/// A topic's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicStats {
    pub topic: String,
    /// Bytes of records on disk.
    pub bytes: u64,
    pub max_bytes: u64,
    /// The oldest sequence still stored (`last_seq + 1` when none is).
    pub first_seq: u64,
    /// The newest sequence published (0 before the first).
    pub last_seq: u64,
    /// Fetches waiting for messages right now.
    #[serde(default)]
    pub waiting: u64,
    /// fdatasyncs of published records since the queue started: publishes waiting together
    /// share one (group commit), so this stays below the publish calls under load.
    #[serde(default)]
    pub syncs: u64,
    pub subs: Vec<SubStats>,
}

/// A subscription's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubStats {
    pub name: String,
    /// Messages published for it and not yet acknowledged.
    pub lag: u64,
    /// Delivered and waiting for an ack.
    pub unacked: u64,
    /// Deliveries after the first, since the queue started.
    pub redelivered: u64,
    /// Every sequence below it is acknowledged.
    pub ack_floor: u64,
}
