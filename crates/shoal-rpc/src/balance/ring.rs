//! The weighted consistent-hash ring behind `hashring` balancing. Its points depend only on
//! each endpoint's identity and weight, so every client, in any language, builds the same ring;
//! the formula is documented on the `balance` module and pinned by a test against Python.

use sha2::{Digest, Sha256};

use crate::endpoint::RouteKey;

/// Points on the ring per unit of weight.
pub const POINTS_PER_WEIGHT: u32 = 512;

/// A consistent-hash ring over endpoints numbered by their position in the list it was built
/// from.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Sorted by point and then by the owner's identity.
    points: Vec<u64>,
    /// The member owning each point.
    owners: Vec<u32>,
    members: usize,
}

impl Ring {
    /// A ring over `(identity, weight)` members; [`Ring::owner`] answers with their positions.
    pub fn new<'a>(members: impl IntoIterator<Item = (&'a str, u32)>) -> Ring {
        let members: Vec<(&str, u32)> = members.into_iter().collect();
        let mut points: Vec<(u64, &str, u32)> = Vec::new();
        for (index, (id, weight)) in members.iter().enumerate() {
            let index = u32::try_from(index).expect("fewer than 2^32 endpoints");
            for i in 0..weight.saturating_mul(POINTS_PER_WEIGHT) {
                points.push((point(id, i), id, index));
            }
        }
        points.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        Ring {
            owners: points.iter().map(|&(_, _, m)| m).collect(),
            points: points.into_iter().map(|(p, _, _)| p).collect(),
            members: members.len(),
        }
    }

    /// The member a key hash belongs to; `None` when the ring has no points.
    pub fn owner(&self, hash: u64) -> Option<usize> {
        let at = self.points.partition_point(|&p| p < hash);
        let at = if at == self.points.len() { 0 } else { at };
        self.owners.get(at).map(|&m| m as usize)
    }

    /// Every member once, in the order met walking clockwise from `hash`: the owner first,
    /// then where the key goes when the owner is down, and so on.
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let n = self.points.len();
        let start = self.points.partition_point(|&p| p < hash);
        let mut seen = vec![false; self.members];
        let mut left = self.members;
        let mut k = 0;
        std::iter::from_fn(move || {
            while left > 0 && k < n {
                let m = self.owners[(start + k) % n] as usize;
                k += 1;
                if !seen[m] {
                    seen[m] = true;
                    left -= 1;
                    return Some(m);
                }
            }
            None
        })
    }

    /// Number of points, for tests and diagnostics.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// `(point, member)` in ring order.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.points
            .iter()
            .zip(&self.owners)
            .map(|(&p, &m)| (p, m as usize))
    }
}

/// The `i`th point of the endpoint `id`.
pub fn point(id: &str, i: u32) -> u64 {
    hash(format!("{id}#{i}").as_bytes())
}

/// Where a key sits on the ring.
pub fn key_hash(key: &RouteKey) -> u64 {
    match key {
        RouteKey::Int(n) => hash(n.to_string().as_bytes()),
        RouteKey::Text(s) => hash(s.as_bytes()),
    }
}

fn hash(data: &[u8]) -> u64 {
    let digest = Sha256::digest(data);
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 is 32 bytes"))
}
