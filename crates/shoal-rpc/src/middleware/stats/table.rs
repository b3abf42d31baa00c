//! The shared table of per-method counters behind [`Stats`], and the snapshots read from it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::histogram::Histogram;
use crate::error::{codes, RpcError};
use crate::service::Reply;

/// A handle on per-method statistics; clones share one table.
#[derive(Clone, Default)]
pub struct Stats {
    methods: Arc<RwLock<HashMap<String, Arc<MethodCounters>>>>,
}

/// One method's statistics at the time of a [`Stats::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodStats {
    /// The method name, or [`Stats::UNKNOWN`] / [`Stats::OTHER`] for folded names.
    pub method: String,
    /// Calls that completed, errors included.
    pub calls: u64,
    /// Calls answered with an error.
    pub errors: u64,
    pub latency: LatencySummary,
}

/// Latency of the calls counted, in microseconds. Quantiles are read from a log-scale
/// histogram with four buckets per power of two: each is the upper end of its bucket (capped
/// at `max_us`), so at most a quarter above the true value and never below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: u64,
}

impl Stats {
    /// Where calls to names the inner service answered "method not found" for are counted:
    /// method names come from the network, and one entry per name a client makes up would
    /// let it grow the table without bound.
    pub const UNKNOWN: &'static str = "<unknown>";
    /// Where calls are counted once [`Stats::MAX_METHODS`] names are in the table.
    pub const OTHER: &'static str = "<other>";
    /// Most method names kept apart, the two above included.
    pub const MAX_METHODS: usize = 1024;

    pub fn new() -> Self {
        Self::default()
    }

    /// Every method's statistics, sorted by method name. Counters are read one by one while
    /// calls go on, so a snapshot taken under load may be off by the calls in progress.
    pub fn snapshot(&self) -> Vec<MethodStats> {
        let methods: Vec<(String, Arc<MethodCounters>)> = self
            .methods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, counters)| (name.clone(), counters.clone()))
            .collect();
        let mut stats: Vec<MethodStats> = methods
            .into_iter()
            .map(|(method, counters)| MethodStats {
                method,
                calls: counters.calls.load(Ordering::Relaxed),
                errors: counters.errors.load(Ordering::Relaxed),
                latency: counters.latency.summary(),
            })
            .collect();
        stats.sort_unstable_by(|a, b| a.method.cmp(&b.method));
        stats
    }

    /// Where a call to `method` will be recorded: its counters if the name is known, else the
    /// name, to be placed once the answer shows whether the method exists.
    pub(super) fn slot(&self, method: &str) -> Slot {
        match self.find(method) {
            Some(counters) => Slot::Known(counters),
            None => Slot::New {
                method: method.to_owned(),
                stats: self.clone(),
            },
        }
    }

    fn find(&self, method: &str) -> Option<Arc<MethodCounters>> {
        self.methods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(method)
            .cloned()
    }

    /// The counters for `method`, added if missing; a full table gives [`Stats::OTHER`]'s.
    fn counters(&self, method: &str) -> Arc<MethodCounters> {
        if let Some(counters) = self.find(method) {
            return counters;
        }
        let mut methods = self.methods.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(counters) = methods.get(method) {
            return counters.clone();
        }
        let name = if methods.len() < Self::MAX_METHODS - 1 {
            method
        } else {
            Self::OTHER
        };
        methods.entry(name.to_owned()).or_default().clone()
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let methods = self
            .methods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Stats").field("methods", &methods).finish()
    }
}

/// Where one call is recorded when it completes.
#[derive(Debug)]
pub(super) enum Slot {
    Known(Arc<MethodCounters>),
    New { method: String, stats: Stats },
}

impl Slot {
    pub(super) fn record(self, result: &Result<Reply, RpcError>, elapsed: Duration) {
        let counters = match self {
            Slot::Known(counters) => counters,
            Slot::New { stats, .. } if matches!(result, Err(e) if e.code == codes::METHOD_NOT_FOUND) => {
                stats.counters(Stats::UNKNOWN)
            }
            Slot::New { method, stats } => stats.counters(&method),
        };
        counters.record(result.is_err(), elapsed);
    }
}

#[derive(Debug, Default)]
pub(super) struct MethodCounters {
    calls: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
}

impl MethodCounters {
    fn record(&self, failed: bool, elapsed: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency
            .record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }
}
