//! [`Snapshot`]: every metric's value at one moment, as `shoal.metrics` returns it (a
//! MessagePack map with these field names) and as the Prometheus text is written from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The registry's metrics, each kind sorted by name then labels, and the process's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub counters: Vec<CounterValue>,
    pub gauges: Vec<GaugeValue>,
    pub histograms: Vec<HistogramValue>,
    /// None where `/proc/self` cannot be read (not Linux), and in a [`Registry`]'s own
    /// snapshot; `shoal.metrics` fills it in.
    ///
    /// [`Registry`]: super::Registry
    pub process: Option<Process>,
}

/// A counter: a name as recorded (not made valid for Prometheus), its labels and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterValue {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// What `describe_counter!` said, if it was called.
    pub help: Option<String>,
    /// The unit `describe_counter!` gave, as the facade spells it (`seconds`, `bytes`, ...).
    pub unit: Option<String>,
    pub value: u64,
}

/// A gauge, like [`CounterValue`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaugeValue {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub value: f64,
}

/// A histogram, like [`CounterValue`], with its buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramValue {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub help: Option<String>,
    pub unit: Option<String>,
    /// Values recorded (the `+Inf` bucket).
    pub count: u64,
    pub sum: f64,
    /// Cumulative: how many values were at most each upper bound, lowest first; the `+Inf`
    /// bucket is `count`.
    pub buckets: Vec<Bucket>,
    /// The median, estimated from the buckets (linear within one); None without values.
    pub p50: Option<f64>,
    /// The 99th percentile, estimated the same way.
    pub p99: Option<f64>,
}

/// One cumulative bucket: `count` values were at most `le`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub le: f64,
    pub count: u64,
}

/// The process's own figures, read from `/proc/self` when the snapshot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub resident_memory_bytes: u64,
    /// User and system CPU time since the process started.
    pub cpu_seconds: f64,
    pub open_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl Snapshot {
    /// The counter `name` with exactly `labels`, if it was recorded.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        find(&self.counters, name, labels, |c| (&c.name, &c.labels)).map(|c| c.value)
    }

    /// The gauge `name` with exactly `labels`.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        find(&self.gauges, name, labels, |g| (&g.name, &g.labels)).map(|g| g.value)
    }

    /// The histogram `name` with exactly `labels`.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<&HistogramValue> {
        find(&self.histograms, name, labels, |h| (&h.name, &h.labels))
    }

    /// The Prometheus text exposition format 0.0.4 (see the [module](super) docs).
    pub fn to_prometheus(&self) -> String {
        super::render::render(self)
    }
}

fn find<'a, T>(
    items: &'a [T],
    name: &str,
    labels: &[(&str, &str)],
    parts: impl Fn(&T) -> (&String, &BTreeMap<String, String>),
) -> Option<&'a T> {
    items.iter().find(|item| {
        let (n, l) = parts(item);
        n == name
            && l.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
    })
}
