//! `shard` balancing: `key % count` falls in exactly one endpoint's inclusive range
//! `[begin, end]`, served by that endpoint or, while it is down, by its backup.

use crate::endpoint::EndpointConfig;

use super::Invalid;

/// Validated shard ranges, sorted by their first value.
#[derive(Debug, Clone)]
pub(crate) struct Shards {
    count: u64,
    ranges: Vec<Range>,
}

#[derive(Debug, Clone, Copy)]
struct Range {
    begin: u64,
    end: u64,
    primary: usize,
    backup: Option<usize>,
}

impl Shards {
    /// Checks that the ranges of `endpoints` lie within `0..count`, do not overlap and cover
    /// every value; appends each backup that is not an endpoint already to `endpoints`.
    pub(crate) fn new(count: u64, endpoints: &mut Vec<EndpointConfig>) -> Result<Shards, Invalid> {
        if count == 0 {
            return Err(Invalid::file(
                "shard_count",
                "shard_count must be at least 1".into(),
            ));
        }
        let primaries = endpoints.len();
        let mut ranges = Vec::with_capacity(primaries);
        for (i, ep) in endpoints.iter().enumerate() {
            let addr = &ep.addr;
            let Some((begin, end)) = ep.shard else {
                return Err(Invalid::endpoint(
                    i,
                    "shard",
                    format!("{addr}: shard balancing needs a range [begin, end] on every endpoint"),
                ));
            };
            if begin > end {
                return Err(Invalid::endpoint(
                    i,
                    "shard",
                    format!("{addr}: shard range [{begin}, {end}] is backwards; write [begin, end] with begin <= end"),
                ));
            }
            if end >= count {
                return Err(Invalid::endpoint(
                    i,
                    "shard",
                    format!(
                        "{addr}: shard range [{begin}, {end}] goes past {}: ranges hold values of key % shard_count ({count})",
                        count - 1
                    ),
                ));
            }
            if ep.backup.as_ref() == Some(addr) {
                return Err(Invalid::endpoint(
                    i,
                    "backup",
                    format!("{addr}: an endpoint cannot be its own backup"),
                ));
            }
            ranges.push(Range {
                begin,
                end,
                primary: i,
                backup: None,
            });
        }
        ranges.sort_by_key(|r| (r.begin, r.end));
        check_cover(count, &ranges, endpoints)?;
        for range in &mut ranges {
            let Some(backup) = endpoints[range.primary].backup.clone() else {
                continue;
            };
            let index = match endpoints.iter().position(|e| e.addr == backup) {
                Some(index) => index,
                None => {
                    endpoints.push(EndpointConfig::new(backup));
                    endpoints.len() - 1
                }
            };
            range.backup = Some(index);
        }
        Ok(Shards { count, ranges })
    }

    /// The endpoint serving `key` and its backup.
    pub(crate) fn route(&self, key: u64) -> (usize, Option<usize>) {
        let value = key % self.count;
        let at = self.ranges.partition_point(|r| r.begin <= value) - 1;
        let range = &self.ranges[at];
        debug_assert!(range.begin <= value && value <= range.end);
        (range.primary, range.backup)
    }
}

/// Fails on the first overlap, or on the values no range covers (all of them listed).
fn check_cover(count: u64, sorted: &[Range], endpoints: &[EndpointConfig]) -> Result<(), Invalid> {
    let mut gaps = Vec::new();
    let mut next = 0u64;
    let mut previous: Option<&Range> = None;
    for range in sorted {
        if let Some(prev) = previous.filter(|p| range.begin <= p.end) {
            return Err(Invalid::endpoint(
                range.primary,
                "shard",
                format!(
                    "{}: shard range [{}, {}] overlaps [{}, {}] of {}",
                    endpoints[range.primary].addr,
                    range.begin,
                    range.end,
                    prev.begin,
                    prev.end,
                    endpoints[prev.primary].addr
                ),
            ));
        }
        if range.begin > next {
            gaps.push(format!("[{next}, {}]", range.begin - 1));
        }
        // `end < count`, so this cannot overflow.
        next = range.end + 1;
        previous = Some(range);
    }
    if next < count {
        gaps.push(format!("[{next}, {}]", count - 1));
    }
    if gaps.is_empty() {
        return Ok(());
    }
    Err(Invalid::file(
        "shard_count",
        format!(
            "shard values {} of 0..{count} are not covered by any endpoint's range",
            gaps.join(", ")
        ),
    ))
}
