//! [`Registry`]: shoal's `metrics` recorder. Each series is an atomic found by its key under a
//! read lock (the write lock only the first time a key is seen); descriptions and units are
//! kept by name and kind.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use metrics::{Key, KeyName, Metadata, SharedString, Unit};

use super::histogram::{check_bounds, quantile, Histogram, DEFAULT_BUCKETS};
use super::snapshot::{CounterValue, GaugeValue, HistogramValue, Snapshot};

/// A `metrics` recorder that keeps every series in process: counters as `u64`, gauges as `f64`,
/// histograms as cumulative buckets ([`DEFAULT_BUCKETS`] unless [`Registry::set_buckets`]
/// said otherwise). The runtime installs one for the process ([`install`](super::install)); a
/// test can record into its own with `metrics::with_local_recorder`.
#[derive(Debug, Default)]
pub struct Registry {
    counters: Table<AtomicU64>,
    gauges: Table<AtomicU64>,
    histograms: Table<Histogram>,
    descriptions: RwLock<HashMap<(Kind, String), Description>>,
    buckets: RwLock<HashMap<String, Arc<[f64]>>>,
}

/// The bounds given to [`Registry::set_buckets`] cannot be buckets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("buckets of histogram {name}: {reason}")]
pub struct InvalidBuckets {
    pub name: String,
    pub reason: &'static str,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The upper bounds of histogram `name`'s buckets, for its series registered from now on
    /// (call it before recording). They must be finite and rise strictly.
    pub fn set_buckets(&self, name: &str, bounds: &[f64]) -> Result<(), InvalidBuckets> {
        check_bounds(bounds).map_err(|reason| InvalidBuckets {
            name: name.to_owned(),
            reason,
        })?;
        self.buckets
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), bounds.into());
        Ok(())
    }

    /// Every series' value now, sorted by name then labels; `process` is left None. Values are
    /// read one by one while others record, so a snapshot under load may miss what is in
    /// progress.
    pub fn snapshot(&self) -> Snapshot {
        let descriptions = self
            .descriptions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let described = |kind: Kind, name: &str| {
            let d = descriptions.get(&(kind, name.to_owned()));
            (
                d.map(|d| d.help.clone()),
                d.and_then(|d| d.unit.map(|u| u.as_str().to_owned())),
            )
        };
        let mut snapshot = Snapshot::default();
        for (key, value) in self.counters.entries() {
            let (help, unit) = described(Kind::Counter, key.name());
            snapshot.counters.push(CounterValue {
                name: key.name().to_owned(),
                labels: labels(&key),
                help,
                unit,
                value: value.load(Ordering::Relaxed),
            });
        }
        for (key, value) in self.gauges.entries() {
            let (help, unit) = described(Kind::Gauge, key.name());
            snapshot.gauges.push(GaugeValue {
                name: key.name().to_owned(),
                labels: labels(&key),
                help,
                unit,
                value: f64::from_bits(value.load(Ordering::Relaxed)),
            });
        }
        for (key, histogram) in self.histograms.entries() {
            let (help, unit) = described(Kind::Histogram, key.name());
            let (count, sum, buckets) = histogram.read();
            snapshot.histograms.push(HistogramValue {
                name: key.name().to_owned(),
                labels: labels(&key),
                help,
                unit,
                count,
                sum,
                p50: quantile(0.5, count, &buckets),
                p99: quantile(0.99, count, &buckets),
                buckets,
            });
        }
        snapshot
            .counters
            .sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        snapshot
            .gauges
            .sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        snapshot
            .histograms
            .sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        snapshot
    }

    fn describe(&self, kind: Kind, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.descriptions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                (kind, key.as_str().to_owned()),
                Description {
                    unit,
                    help: help.into_owned(),
                },
            );
    }
}

impl metrics::Recorder for Registry {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(Kind::Counter, key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(Kind::Gauge, key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(Kind::Histogram, key, unit, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.counters.get(key, AtomicU64::default))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.gauges.get(key, AtomicU64::default))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::from_arc(self.histograms.get(key, || {
            let bounds = self
                .buckets
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(key.name())
                .cloned();
            Histogram::new(bounds.unwrap_or_else(|| DEFAULT_BUCKETS.into()))
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug)]
struct Description {
    unit: Option<Unit>,
    help: String,
}

/// The series of one kind, by key (name and labels, the labels sorted by name so that their
/// order at the call site does not make two series of one).
#[derive(Debug)]
struct Table<T> {
    series: RwLock<HashMap<Key, Arc<T>>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            series: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> Table<T> {
    /// The series at `key`, made by `make` if it is new.
    fn get(&self, key: &Key, make: impl FnOnce() -> T) -> Arc<T> {
        let sorted;
        let key = if key.labels().is_sorted_by(|a, b| a.key() <= b.key()) {
            key
        } else {
            let (name, mut labels) = key.clone().into_parts();
            labels.sort_by(|a, b| a.key().cmp(b.key()));
            sorted = Key::from_parts(name, labels);
            &sorted
        };
        if let Some(value) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return value.clone();
        }
        self.series
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    fn entries(&self) -> Vec<(Key, Arc<T>)> {
        self.series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }
}

fn labels(key: &Key) -> BTreeMap<String, String> {
    key.labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect()
}
