//! A fixed-size latency histogram of atomics: log-scale buckets, four per power of two, so
//! recording is a few relaxed atomic adds and a quantile is within 25% of the true value.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::table::LatencySummary;

/// Buckets 0..4 hold 0, 1, 2 and 3 µs exactly; after that each power of two `[2^e, 2^(e+1))`
/// is cut into four equal buckets, up to `2^36` µs (about 19 hours), and the last bucket also
/// holds everything longer.
const LINEAR: usize = 4;
const SUB_BITS: u32 = 2;
const TOP_EXPONENT: u32 = 35;
pub(super) const BUCKETS: usize = LINEAR + (TOP_EXPONENT as usize - 1) * (1 << SUB_BITS);

pub(super) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("summary", &self.summary())
            .finish()
    }
}

impl Histogram {
    pub(super) fn record(&self, us: u64) {
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub(super) fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return LatencySummary::default();
        }
        let max_us = self.max_us.load(Ordering::Relaxed);
        let quantile = |q: f64| {
            // The rank of the sample at quantile q, counting from 1.
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (index, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return (bounds(index).1 - 1).min(max_us);
                }
            }
            max_us
        };
        LatencySummary {
            p50_us: quantile(0.50),
            p99_us: quantile(0.99),
            max_us,
            mean_us: self.sum_us.load(Ordering::Relaxed) / total,
        }
    }
}

/// The bucket `us` falls in.
pub(super) fn bucket(us: u64) -> usize {
    if us < LINEAR as u64 {
        return us as usize;
    }
    let exponent = us.ilog2();
    if exponent > TOP_EXPONENT {
        return BUCKETS - 1;
    }
    let sub = (us >> (exponent - SUB_BITS)) as usize & ((1 << SUB_BITS) - 1);
    LINEAR + (exponent - SUB_BITS) as usize * (1 << SUB_BITS) + sub
}

/// The range `[low, high)` of microseconds bucket `index` holds (the last one holds more).
pub(super) fn bounds(index: usize) -> (u64, u64) {
    if index < LINEAR {
        return (index as u64, index as u64 + 1);
    }
    let shift = ((index - LINEAR) >> SUB_BITS) as u32;
    let sub = ((index - LINEAR) & ((1 << SUB_BITS) - 1)) as u64;
    let first = 1 << SUB_BITS;
    ((first + sub) << shift, (first + sub + 1) << shift)
}
