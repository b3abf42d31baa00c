//! A histogram of atomics with Prometheus-style buckets (each value counted in the first
//! bucket whose upper bound is at least the value), and quantiles estimated from them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::snapshot::Bucket;

/// The upper bounds a histogram uses unless [`Registry::set_buckets`] gave others: from 100 µs
/// to 10 s in 1-2.5-5 steps when the values are seconds (RPC latencies), and fine enough for
/// small counts and sizes (1, 2.5, 5, 10). Larger values are counted only in the `+Inf`
/// bucket, with their sum.
///
/// [`Registry::set_buckets`]: super::Registry::set_buckets
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Counts per bucket (not cumulative: each value adds to one), the number of values and their
/// sum (f64 bits).
#[derive(Debug)]
pub(super) struct Histogram {
    bounds: Arc<[f64]>,
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl Histogram {
    /// Bounds sorted, finite and distinct ([`check_bounds`]).
    pub(super) fn new(bounds: Arc<[f64]>) -> Histogram {
        Histogram {
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            bounds,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0.0_f64.to_bits()),
        }
    }

    fn add(&self, value: f64, times: u64) {
        // NaN is at most no bound: like Prometheus's clients, it counts only in +Inf.
        let index = if value.is_nan() {
            self.bounds.len()
        } else {
            self.bounds.partition_point(|bound| *bound < value)
        };
        if let Some(bucket) = self.counts.get(index) {
            bucket.fetch_add(times, Ordering::Relaxed);
        }
        let add = value * times as f64;
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + add).to_bits())
            });
        // Last, so that a reader who sees the count has seen the bucket too, mostly: readers
        // also cap the buckets at the count.
        self.count.fetch_add(times, Ordering::Relaxed);
    }

    /// The count, the sum and the cumulative buckets (the `+Inf` one is the count). Read while
    /// values are recorded, a bucket may lag the count by the values in progress; no bucket
    /// ever exceeds it.
    pub(super) fn read(&self) -> (u64, f64, Vec<Bucket>) {
        let count = self.count.load(Ordering::Relaxed);
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed));
        let mut cumulative = 0_u64;
        let buckets = self
            .bounds
            .iter()
            .zip(self.counts.iter())
            .map(|(&le, n)| {
                cumulative = cumulative.saturating_add(n.load(Ordering::Relaxed));
                Bucket {
                    le,
                    count: cumulative.min(count),
                }
            })
            .collect();
        (count, sum, buckets)
    }
}

impl ::metrics::HistogramFn for Histogram {
    fn record(&self, value: f64) {
        self.add(value, 1);
    }

    fn record_many(&self, value: f64, count: usize) {
        self.add(value, count as u64);
    }
}

/// The value below which a fraction `q` of the `count` values lie, estimated from cumulative
/// `buckets` as Prometheus's `histogram_quantile` does: linear within the bucket that holds
/// the rank (the first bucket starting at 0); in the `+Inf` bucket, the highest bound. None
/// when there are no values.
pub(super) fn quantile(q: f64, count: u64, buckets: &[Bucket]) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * count as f64;
    let (mut lower, mut below) = (0.0_f64, 0_u64);
    for (index, bucket) in buckets.iter().enumerate() {
        if bucket.count as f64 >= rank && bucket.count > below {
            if index == 0 && bucket.le <= 0.0 {
                return Some(bucket.le);
            }
            let within = (rank - below as f64) / (bucket.count - below) as f64;
            return Some(lower + (bucket.le - lower) * within);
        }
        lower = bucket.le;
        below = bucket.count;
    }
    Some(buckets.last().map_or(f64::INFINITY, |b| b.le))
}

/// Why `bounds` cannot be a histogram's buckets, if they cannot: they must be finite and rise
/// strictly (the `+Inf` bucket is always there).
pub(super) fn check_bounds(bounds: &[f64]) -> Result<(), &'static str> {
    if bounds.iter().any(|b| !b.is_finite()) {
        return Err("every bound must be a finite number (the +Inf bucket is implied)");
    }
    if bounds.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err("the bounds must rise strictly");
    }
    Ok(())
}
