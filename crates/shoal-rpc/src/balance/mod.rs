//! Choosing an endpoint for each call: round robin, least pending, a consistent-hash ring, or
//! shard ranges; failed endpoints are ejected and probed back.
//!
//! # Strategies
//!
//! - [`Balance::RoundRobin`]: endpoints in turn, an endpoint of weight `w` taking `w` turns
//!   per round (interleaved: round `r` visits every endpoint whose weight exceeds `r`).
//! - [`Balance::LeastPending`]: two endpoints drawn at random, the call going to the one with
//!   fewer calls in flight per unit of weight ("power of two choices").
//! - [`Balance::HashRing`]: the endpoint owning the call's key on a weighted consistent-hash
//!   ring (formula below, reproducible in any language). The key is the call's
//!   [`CallOptions::key`](crate::CallOptions::key), else the client's
//!   [`pin_key`](crate::ClientBuilder::pin_key), else a random key drawn once when the client
//!   is built: like pysvrkit's clients, a client without keys sticks to one server, and many
//!   such clients spread over the ring.
//! - [`Balance::Shard`]: `key % count` falls in one endpoint's inclusive range `[begin, end]`;
//!   that endpoint serves it, or its backup while it is down. Shard calls need an integer key;
//!   a shard call never goes to an endpoint outside its range's primary and backup.
//!
//! Weights are 1 to [`MAX_WEIGHT`]; `shard` ignores them.
//!
//! # The ring
//!
//! Every client that lists the same endpoints, in any order and in any language, builds the
//! same ring, provided each writes the addresses the same way (`localhost:3000` and
//! `127.0.0.1:3000` are different identities). Exactly:
//!
//! - `h(bytes)` = the first 8 bytes of `SHA-256(bytes)`, read as a big-endian unsigned integer;
//! - an endpoint with identity `id` (its address as written: `host:port` or `unix:PATH`) and
//!   weight `w` has the `w × 512` points `h(format!("{id}#{i}"))` for `i` in `0..w × 512`;
//! - the points of all endpoints are sorted by `(point, id)`, the identity breaking ties so
//!   the order of the endpoint list never matters;
//! - a key hashes to `h(decimal digits)` for an integer key and `h(UTF-8 bytes)` for a text
//!   key, and belongs to the endpoint of the first point `>= h(key)`, wrapping past the
//!   largest point to the smallest.
//!
//! The same in Python:
//!
//! ```python
//! import bisect, hashlib
//! def h(data: bytes) -> int:
//!     return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")
//! def ring(endpoints):  # [(addr, weight)]
//!     return sorted((h(f"{addr}#{i}".encode()), addr)
//!                   for addr, weight in endpoints for i in range(weight * 512))
//! def owner(points, key):  # key: int or str
//!     k = h(str(key).encode())
//!     return points[bisect.bisect_left(points, (k, "")) % len(points)][1]
//! ```
//!
//! 512 points per unit of weight keep every endpoint's share of keys close to its weight: an
//! endpoint's share deviates from fair by about `1/sqrt(512 × weight)`, 4.4% at weight 1. Of
//! ten equal endpoints the busiest typically gets 1.1× its fair share, and in 20,000 random
//! rings never more than 1.19× (the property tests check 1.25× on 100,000 keys); with
//! ketama's 160 points it reaches 1.3×. A point costs 12 bytes: ten endpoints of weight 1
//! make a 60 KiB ring, built in about a millisecond.
//!
//! # Ejection and probes
//!
//! An endpoint that could not be reached, or whose connection closed under a call, is
//! ejected for a backoff that doubles with each consecutive failure (50 ms up to 5 s, plus up
//! to 20% jitter). Once the backoff has passed, exactly one call is let through as a probe:
//! its success (any answer, even an error object, proves the server is there) restores the
//! endpoint; its failure ejects it again for longer; a probe whose caller gives up or whose
//! deadline passes decides nothing and the next call probes instead.
//!
//! While an endpoint is out, `round_robin` and `least_pending` skip it, `hashring` walks
//! clockwise to the next distinct endpoint that is in service (so only the ejected endpoint's
//! keys move, and they move back when it returns), and `shard` goes to the backup.
//!
//! When every candidate is out (all endpoints, or a shard's primary and backup), the call is
//! still tried on the one whose backoff ends first instead of failing unsent. Failing fast
//! would leave a client with one server, or whose servers restarted together, refusing calls
//! for up to 5 s after the servers came back; trying costs a refused connection (cheap on a
//! reachable host) or, when the host does not answer at all, at most the call's own deadline.
//! Several such forced calls may run at once: the "one probe" rule holds only while some other
//! endpoint can take the traffic.

mod health;
mod ring;
mod shard;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::endpoint::{EndpointConfig, RouteKey};
use crate::error::Error;

pub(crate) use self::health::{Admission, HealthCell, Now};
pub use self::ring::{key_hash, point, Ring, POINTS_PER_WEIGHT};
use self::shard::Shards;

/// Largest endpoint weight.
pub const MAX_WEIGHT: u32 = 100;

/// How a client spreads calls over its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Balance {
    /// In turn, by weight.
    #[default]
    RoundRobin,
    /// The less busy of two random endpoints.
    LeastPending,
    /// Weighted consistent hashing of the call's key.
    HashRing,
    /// `key % count` onto the endpoints' inclusive shard ranges.
    Shard { count: u64 },
}

impl Balance {
    /// The name used in endpoint files: `round_robin`, `least_pending`, `hashring`, `shard`.
    pub fn name(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastPending => "least_pending",
            Balance::HashRing => "hashring",
            Balance::Shard { .. } => "shard",
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Balance::Shard { count } => write!(f, "shard (count {count})"),
            other => f.write_str(other.name()),
        }
    }
}

/// A configuration mistake, with where it is so an endpoint file can point at the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    /// Position of the endpoint at fault in the configured list, if one is.
    pub(crate) endpoint: Option<usize>,
    /// The setting at fault: an endpoint's (`addr`, `weight`, `shard`, `backup`) or a
    /// top-level one (`shard_count`).
    pub(crate) key: &'static str,
    /// Says what is wrong, naming the address when an endpoint is at fault.
    pub(crate) message: String,
}

impl Invalid {
    pub(crate) fn endpoint(index: usize, key: &'static str, message: String) -> Self {
        Self {
            endpoint: Some(index),
            key,
            message,
        }
    }

    pub(crate) fn file(key: &'static str, message: String) -> Self {
        Self {
            endpoint: None,
            key,
            message,
        }
    }
}

impl From<Invalid> for Error {
    fn from(e: Invalid) -> Error {
        Error::Config(e.message)
    }
}

/// What balancing reads and updates of one endpoint: whether it is in service, and how many
/// calls it has in flight. The client keeps one per server, for as long as any endpoint set
/// lists it, so a rebuilt picker sees the same health and load.
#[derive(Debug, Default)]
pub(crate) struct Load {
    pub(crate) health: HealthCell,
    pub(crate) in_flight: AtomicUsize,
}

/// The balancing state of one client over one endpoint set.
#[derive(Debug)]
pub(crate) struct Picker {
    strategy: Strategy,
    next: AtomicUsize,
}

#[derive(Debug)]
enum Strategy {
    /// Endpoint indices in turn order, each as often as its weight.
    RoundRobin {
        turns: Vec<usize>,
    },
    LeastPending {
        weights: Vec<u64>,
    },
    HashRing {
        ring: Ring,
        own_key: RouteKey,
    },
    Shard(Shards),
}

/// The endpoint for one attempt and how it was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pick {
    pub(crate) index: usize,
    pub(crate) admission: Admission,
}

impl Picker {
    /// Validates `endpoints` for `balance`; returns the picker and the endpoints to connect
    /// to, which are `endpoints` followed by any shard backup not listed among them.
    /// `own_key` routes `hashring` calls that carry no key: the client draws it once, so
    /// its calls stay on one server across rebuilt pickers.
    pub(crate) fn new(
        balance: Balance,
        mut endpoints: Vec<EndpointConfig>,
        own_key: RouteKey,
    ) -> Result<(Picker, Vec<EndpointConfig>), Invalid> {
        check_endpoints(&balance, &endpoints)?;
        let weights = || {
            endpoints
                .iter()
                .map(|e| u64::from(e.weight))
                .collect::<Vec<_>>()
        };
        let strategy = match balance {
            Balance::RoundRobin => Strategy::RoundRobin {
                turns: turns(&weights()),
            },
            Balance::LeastPending => Strategy::LeastPending { weights: weights() },
            Balance::HashRing => {
                let ids: Vec<String> = endpoints.iter().map(|e| e.addr.to_string()).collect();
                let ring = Ring::new(
                    ids.iter()
                        .map(String::as_str)
                        .zip(endpoints.iter().map(|e| e.weight)),
                );
                Strategy::HashRing { ring, own_key }
            }
            Balance::Shard { count } => Strategy::Shard(Shards::new(count, &mut endpoints)?),
        };
        Ok((
            Picker {
                strategy,
                next: AtomicUsize::new(0),
            },
            endpoints,
        ))
    }

    /// Fails when `key` cannot route calls under this balancing (a text key for `shard`).
    pub(crate) fn check_key(&self, key: &RouteKey) -> Result<(), Error> {
        match (&self.strategy, key) {
            (Strategy::Shard(_), RouteKey::Text(text)) => Err(Error::Config(format!(
                "shard balancing needs an integer key, not the text {text:?}"
            ))),
            _ => Ok(()),
        }
    }

    /// The endpoint for the next attempt of a call, never one in `tried`; `None` when every
    /// candidate has been tried. `endpoints` are the ones [`Picker::new`] returned, in order.
    pub(crate) fn pick<E: AsRef<Load>>(
        &self,
        endpoints: &[E],
        key: Option<&RouteKey>,
        tried: &[usize],
        now: &Now,
    ) -> Result<Option<Pick>, Error> {
        let fresh = |i: &usize| !tried.contains(i);
        let pick = match &self.strategy {
            Strategy::RoundRobin { turns } => {
                // One endpoint (one turn) has no turns to take: no shared counter to bump.
                let start = match turns.len() {
                    1 => 0,
                    _ => self.next.fetch_add(1, Ordering::Relaxed),
                };
                let order = (0..turns.len()).map(|k| turns[(start + k) % turns.len()]);
                admit_first(endpoints, order.filter(fresh), now)
                    .or_else(|| forced(endpoints, (0..endpoints.len()).filter(fresh)))
            }
            Strategy::LeastPending { weights } => least_pending(endpoints, weights, tried, now),
            Strategy::HashRing { ring, own_key } => {
                let hash = key_hash(key.unwrap_or(own_key));
                admit_first(endpoints, ring.walk(hash).filter(fresh), now)
                    .or_else(|| forced(endpoints, ring.walk(hash).filter(fresh)))
            }
            Strategy::Shard(shards) => {
                let Some(RouteKey::Int(key)) = key else {
                    return Err(Error::Config(match key {
                        Some(key) => format!("shard balancing needs an integer key, not {key:?}"),
                        None => "shard balancing needs an integer key: set CallOptions::key or \
                                 ClientBuilder::pin_key"
                            .into(),
                    }));
                };
                let (primary, backup) = shards.route(*key);
                let order = || std::iter::once(primary).chain(backup).filter(fresh);
                admit_first(endpoints, order(), now).or_else(|| forced(endpoints, order()))
            }
        };
        Ok(pick)
    }
}

/// Checks what every strategy needs: a sane weight, each address once, and shard settings
/// only with shard balancing (the ranges themselves are checked by [`Shards::new`]).
fn check_endpoints(balance: &Balance, endpoints: &[EndpointConfig]) -> Result<(), Invalid> {
    for (i, ep) in endpoints.iter().enumerate() {
        let addr = &ep.addr;
        if !(1..=MAX_WEIGHT).contains(&ep.weight) {
            return Err(Invalid::endpoint(
                i,
                "weight",
                format!(
                    "{addr}: weight {} is out of range; use 1 to {MAX_WEIGHT}",
                    ep.weight
                ),
            ));
        }
        if let Some(first) = endpoints[..i].iter().position(|e| e.addr == *addr) {
            return Err(Invalid::endpoint(
                i,
                "addr",
                format!(
                    "{addr} is listed twice (endpoints {first} and {i}); list it once and give it a weight"
                ),
            ));
        }
        if matches!(balance, Balance::Shard { .. }) {
            continue;
        }
        if ep.shard.is_some() {
            return Err(Invalid::endpoint(
                i,
                "shard",
                format!(
                    "{addr}: a shard range needs shard balancing, not {}",
                    balance.name()
                ),
            ));
        }
        if ep.backup.is_some() {
            return Err(Invalid::endpoint(
                i,
                "backup",
                format!(
                    "{addr}: a backup needs shard balancing, not {}",
                    balance.name()
                ),
            ));
        }
    }
    Ok(())
}

/// Round-robin turns: round `r` visits, in list order, every endpoint whose weight exceeds `r`.
fn turns(weights: &[u64]) -> Vec<usize> {
    let rounds = weights.iter().copied().max().unwrap_or(0);
    (0..rounds)
        .flat_map(|r| (0..weights.len()).filter(move |&i| weights[i] > r))
        .collect()
}

fn least_pending<E: AsRef<Load>>(
    endpoints: &[E],
    weights: &[u64],
    tried: &[usize],
    now: &Now,
) -> Option<Pick> {
    let n = endpoints.len();
    let fresh = |i: &usize| !tried.contains(i);
    let usable = |i: usize| fresh(&i) && endpoints[i].as_ref().health.usable(now);
    let lighter = |a: usize, b: usize| {
        let load = |i: usize| endpoints[i].as_ref().in_flight.load(Ordering::Relaxed) as u64;
        // Fewer calls per unit of weight; compared by cross-multiplying to stay in integers.
        if load(b) * weights[a] < load(a) * weights[b] {
            b
        } else {
            a
        }
    };
    // Usually both draws are usable and nothing else needs looking at.
    let a = fastrand::usize(..n);
    let b = (a + 1 + fastrand::usize(..n.max(2) - 1)) % n;
    if a != b && usable(a) && usable(b) {
        if let Some(pick) = admit_first(endpoints, [lighter(a, b)].into_iter(), now) {
            return Some(pick);
        }
    }
    let candidates: Vec<usize> = (0..n).map(|k| (a + k) % n).filter(|&i| usable(i)).collect();
    let choice = match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        len => {
            let x = fastrand::usize(..len);
            let y = (x + 1 + fastrand::usize(..len - 1)) % len;
            Some(lighter(candidates[x], candidates[y]))
        }
    };
    admit_first(
        endpoints,
        choice.into_iter().chain(candidates.iter().copied()),
        now,
    )
    .or_else(|| forced(endpoints, (0..n).filter(fresh)))
}

/// The first of `order` that lets a call through.
fn admit_first<E: AsRef<Load>>(
    endpoints: &[E],
    order: impl Iterator<Item = usize>,
    now: &Now,
) -> Option<Pick> {
    order.into_iter().find_map(|index| {
        let admission = endpoints[index].as_ref().health.admit(now)?;
        Some(Pick { index, admission })
    })
}

/// Among `order`, all of them ejected, the one whose backoff ends first (the earliest in
/// `order` on a tie).
fn forced<E: AsRef<Load>>(endpoints: &[E], order: impl Iterator<Item = usize>) -> Option<Pick> {
    order
        .min_by_key(|&i| endpoints[i].as_ref().health.lock().retry_at())
        .map(|index| Pick {
            index,
            admission: Admission::Forced,
        })
}
