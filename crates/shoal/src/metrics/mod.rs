//! Metrics: counters, gauges and histograms recorded through the `metrics` facade into
//! shoal's own recorder, the [`Registry`], and read back as a structured [`Snapshot`] (the
//! `shoal.metrics` method) or as Prometheus text (the same method with the argument
//! `"prometheus"`, and `GET /metrics` on the `metrics.listen` port).
//!
//! ```
//! use shoal::metrics::{counter, describe_counter};
//!
//! describe_counter!("jobs_done_total", "jobs finished, by queue");
//! counter!("jobs_done_total", "queue" => "mail").increment(1);
//! ```
//!
//! The facade's macros are re-exported here, so an application needs no dependency of its
//! own on the `metrics` crate.
//!
//! # One registry per process
//!
//! The `metrics` facade has one global recorder per process. The runtime installs shoal's at
//! start ([`install`]); every [`App`](crate::App) in the process (tests start several) records
//! into that one registry and shows all of it. When another recorder was installed first, the
//! runtime logs a warning and `shoal.metrics` answers an error saying so: the values went to
//! that recorder.
//!
//! # Metric names
//!
//! Recorded by the runtime:
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `shoal_rpc_calls_total` | counter | `method`, `outcome` (`ok`, `error`) | calls and notifications answered |
//! | `shoal_rpc_call_duration_seconds` | histogram | `method` | time from the call to its answer |
//!
//! Method names come from the network: a name the services answered "method not found" for is
//! counted as `<unknown>`, and past [`MAX_METHODS`] names as `<other>`, so a client cannot
//! grow the registry without bound.
//!
//! Read from `/proc/self` each time the metrics are read (the [`Process`] part of a snapshot):
//! `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
//! `process_start_time_seconds`.
//!
//! # Prometheus text
//!
//! [`Snapshot::to_prometheus`] writes the text exposition format 0.0.4: names made valid
//! (`.`, `-` and other characters become `_`), counters suffixed `_total` unless they are
//! already, one `# HELP` (the description, or the original name when none was given) and
//! `# TYPE` per family, label values escaped, families sorted by name and series by labels.
//! Histograms use [`DEFAULT_BUCKETS`] unless [`Registry::set_buckets`] gave a name its own. A
//! name that, once made valid, is already taken by a metric of another type is left out of
//! the text (it stays in the snapshot), and so is one that would share sample names with a
//! histogram: a gauge `x_count`, `x_sum` or `x_bucket` beside a histogram `x`, whichever was
//! written first is kept (the process's figures, then counters, gauges and histograms, each
//! by name).

mod histogram;
mod http;
mod layer;
mod process;
mod registry;
mod render;
mod snapshot;

use std::sync::OnceLock;

pub use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

pub use self::histogram::DEFAULT_BUCKETS;
pub(crate) use self::http::serve;
pub use self::layer::{MetricsLayer, MetricsService, ResponseFuture};
pub use self::registry::{InvalidBuckets, Registry};
pub use self::snapshot::{Bucket, CounterValue, GaugeValue, HistogramValue, Process, Snapshot};

/// Calls and notifications answered, by `method` and `outcome`.
pub const RPC_CALLS: &str = "shoal_rpc_calls_total";
/// Seconds from a call to its answer, by `method`.
pub const RPC_CALL_DURATION: &str = "shoal_rpc_call_duration_seconds";
/// Most method names [`MetricsLayer`] keeps apart before counting calls as `<other>`.
pub const MAX_METHODS: usize = shoal_rpc::middleware::Stats::MAX_METHODS;

/// Why there is nothing to show: the process's `metrics` recorder is not shoal's.
pub(crate) const FOREIGN: &str = "another metrics recorder was installed in this process \
     before shoal's; the values went there and shoal has none to show";

static REGISTRY: OnceLock<Registry> = OnceLock::new();
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Installs shoal's registry as the process's `metrics` recorder, once; later calls return the
/// same. None when another recorder was installed first. The runtime calls this when an
/// application starts; call it earlier to keep values recorded before that.
pub fn install() -> Option<&'static Registry> {
    let registry = REGISTRY.get_or_init(Registry::new);
    let ours = *INSTALLED.get_or_init(|| {
        let ours = ::metrics::set_global_recorder(Global(registry)).is_ok();
        if ours {
            describe_runtime(registry);
        }
        ours
    });
    ours.then_some(registry)
}

/// Shoal's registry when it is the process's recorder (after [`install`]).
pub fn global() -> Option<&'static Registry> {
    match INSTALLED.get() {
        Some(true) => REGISTRY.get(),
        _ => None,
    }
}

/// The global registry's snapshot with the process's figures, read off the executor (it reads
/// `/proc`); the error says why there is none.
pub(crate) async fn collect() -> Result<Snapshot, &'static str> {
    let registry = global().ok_or(FOREIGN)?;
    tokio::task::spawn_blocking(|| {
        let mut snapshot = registry.snapshot();
        snapshot.process = Process::read();
        snapshot
    })
    .await
    .map_err(|_| "reading the metrics failed")
}

fn describe_runtime(registry: &Registry) {
    use ::metrics::Recorder as _;
    registry.describe_counter(
        RPC_CALLS.into(),
        None,
        "RPC calls and notifications answered, by method and outcome (ok or error)".into(),
    );
    registry.describe_histogram(
        RPC_CALL_DURATION.into(),
        Some(Unit::Seconds),
        "Time from an RPC call to its answer, by method".into(),
    );
}

/// The registry as the global recorder: `set_global_recorder` takes the recorder by value, and
/// the runtime keeps reading the same one.
#[derive(Debug)]
struct Global(&'static Registry);

impl ::metrics::Recorder for Global {
    fn describe_counter(
        &self,
        key: ::metrics::KeyName,
        unit: Option<Unit>,
        description: ::metrics::SharedString,
    ) {
        self.0.describe_counter(key, unit, description);
    }

    fn describe_gauge(
        &self,
        key: ::metrics::KeyName,
        unit: Option<Unit>,
        description: ::metrics::SharedString,
    ) {
        self.0.describe_gauge(key, unit, description);
    }

    fn describe_histogram(
        &self,
        key: ::metrics::KeyName,
        unit: Option<Unit>,
        description: ::metrics::SharedString,
    ) {
        self.0.describe_histogram(key, unit, description);
    }

    fn register_counter(
        &self,
        key: &::metrics::Key,
        metadata: &::metrics::Metadata<'_>,
    ) -> ::metrics::Counter {
        self.0.register_counter(key, metadata)
    }

    fn register_gauge(
        &self,
        key: &::metrics::Key,
        metadata: &::metrics::Metadata<'_>,
    ) -> ::metrics::Gauge {
        self.0.register_gauge(key, metadata)
    }

    fn register_histogram(
        &self,
        key: &::metrics::Key,
        metadata: &::metrics::Metadata<'_>,
    ) -> ::metrics::Histogram {
        self.0.register_histogram(key, metadata)
    }
}

#[cfg(test)]
mod tests;
