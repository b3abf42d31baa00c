//! One endpoint as data: where a server is and how balancing treats it, the key a call is
//! routed by, and how a client's connection to it is doing. Balancing, endpoint sets and the
//! client all build on these, so they depend on nothing of theirs.

use crate::transport::Addr;

/// One server a client may call, with its balancing weight and shard range.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub addr: Addr,
    pub weight: u32,
    /// Inclusive range of `key % shard_count` served here (shard balancing).
    pub shard: Option<(u64, u64)>,
    /// Where shard calls go when this endpoint is down.
    pub backup: Option<Addr>,
}

impl EndpointConfig {
    pub fn new(addr: Addr) -> Self {
        Self {
            addr,
            weight: 1,
            shard: None,
            backup: None,
        }
    }
}

/// The key a call is routed by, for `hashring` and `shard` balancing. On the ring an `Int`
/// hashes as its decimal digits and a `Text` as its UTF-8 bytes, so `Int(42)` and
/// `Text("42")` meet the same server (see [`crate::balance::Ring`]); `shard` takes only `Int`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKey {
    Int(u64),
    Text(String),
}

impl From<u64> for RouteKey {
    fn from(v: u64) -> Self {
        RouteKey::Int(v)
    }
}

impl From<&str> for RouteKey {
    fn from(v: &str) -> Self {
        RouteKey::Text(v.to_owned())
    }
}

impl From<String> for RouteKey {
    fn from(v: String) -> Self {
        RouteKey::Text(v)
    }
}

/// The state of one endpoint of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    pub addr: Addr,
    /// A connection is open.
    pub connected: bool,
    /// Taken out of service after a failure, until a probe call succeeds.
    pub ejected: bool,
    /// Consecutive failures; 0 when in service.
    pub failures: u32,
    /// Calls waiting for an answer.
    pub in_flight: usize,
}
