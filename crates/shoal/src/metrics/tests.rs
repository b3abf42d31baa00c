//! Unit tests: the registry through the facade's macros (on a local recorder), the histogram's
//! buckets and quantiles, the Prometheus text written from snapshots, `/proc` parsing, and
//! the layer's folding of method names.

use std::collections::BTreeMap;

use ::metrics::with_local_recorder;
use shoal_rpc::middleware::Stats;
use shoal_rpc::{Context, Reply, Request, RpcError};
use tower::{service_fn, Layer, ServiceExt};

use super::histogram::{quantile, Histogram};
use super::render::{escape_label_value, float, label_name, metric_name};
use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn counter_value(name: &str, pairs: &[(&str, &str)], value: u64) -> CounterValue {
    CounterValue {
        name: name.into(),
        labels: labels(pairs),
        help: None,
        unit: None,
        value,
    }
}

fn gauge_value(name: &str, pairs: &[(&str, &str)], value: f64) -> GaugeValue {
    GaugeValue {
        name: name.into(),
        labels: labels(pairs),
        help: None,
        unit: None,
        value,
    }
}

/// The Prometheus text of `snapshot` is exactly `expected`.
fn check(snapshot: &Snapshot, expected: &str) {
    assert_eq!(
        snapshot.to_prometheus(),
        expected,
        "\n{}",
        snapshot.to_prometheus()
    );
}

#[test]
fn names_are_made_valid_and_label_values_escaped() {
    for (raw, name) in [
        ("http.requests", "http_requests"),
        ("a-b c/d", "a_b_c_d"),
        ("ns:sub_name9", "ns:sub_name9"),
        ("9lives", "_9lives"),
        ("", "_"),
        ("é", "_"),
    ] {
        assert_eq!(metric_name(raw), name, "{raw:?}");
    }
    for (raw, name) in [("op.kind", "op_kind"), ("a:b", "a_b"), ("1st", "_1st")] {
        assert_eq!(label_name(raw), name, "{raw:?}");
    }
    for (raw, escaped) in [
        ("plain", "plain"),
        (r"back\slash", r"back\\slash"),
        ("say \"hi\"", "say \\\"hi\\\""),
        ("two\nlines", "two\\nlines"),
        ("tab\tand é", "tab\tand é"),
    ] {
        assert_eq!(escape_label_value(raw), escaped, "{raw:?}");
    }
    for (x, text) in [
        (1.0, "1"),
        (0.25, "0.25"),
        (-3.5, "-3.5"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::NAN, "NaN"),
    ] {
        assert_eq!(float(x), text);
    }
}

#[test]
fn counters_get_total_once_and_each_family_one_help_and_type() {
    let mut snapshot = Snapshot {
        counters: vec![
            counter_value("jobs.done", &[("queue", "mail")], 3),
            counter_value("jobs.done", &[("queue", "a \"b\"\\\n")], 1),
            counter_value("bytes_sent_total", &[], 7),
        ],
        gauges: vec![gauge_value("queue.depth", &[], 2.5)],
        ..Snapshot::default()
    };
    snapshot.counters[0].help = Some("Jobs done\nby queue \\ kind".into());
    check(
        &snapshot,
        "# HELP bytes_sent_total bytes_sent_total (no description)\n\
         # TYPE bytes_sent_total counter\n\
         bytes_sent_total 7\n\
         # HELP jobs_done_total Jobs done\\nby queue \\\\ kind\n\
         # TYPE jobs_done_total counter\n\
         jobs_done_total{queue=\"a \\\"b\\\"\\\\\\n\"} 1\n\
         jobs_done_total{queue=\"mail\"} 3\n\
         # HELP queue_depth queue.depth (no description)\n\
         # TYPE queue_depth gauge\n\
         queue_depth 2.5\n",
    );
}

#[test]
fn histograms_write_cumulative_buckets_inf_sum_and_count() {
    let histogram = HistogramValue {
        name: "op.seconds".into(),
        labels: labels(&[("op", "add"), ("le", "user's")]),
        help: Some("Time per op".into()),
        unit: Some("seconds".into()),
        count: 5,
        sum: 12.5,
        buckets: vec![
            Bucket { le: 0.5, count: 1 },
            Bucket { le: 1.0, count: 3 },
            Bucket { le: 2.5, count: 3 },
        ],
        p50: None,
        p99: None,
    };
    check(
        &Snapshot {
            histograms: vec![histogram],
            ..Snapshot::default()
        },
        "# HELP op_seconds Time per op\n\
         # TYPE op_seconds histogram\n\
         op_seconds_bucket{op=\"add\",le=\"0.5\"} 1\n\
         op_seconds_bucket{op=\"add\",le=\"1\"} 3\n\
         op_seconds_bucket{op=\"add\",le=\"2.5\"} 3\n\
         op_seconds_bucket{op=\"add\",le=\"+Inf\"} 5\n\
         op_seconds_sum{op=\"add\"} 12.5\n\
         op_seconds_count{op=\"add\"} 5\n",
    );
}

#[test]
fn names_that_collide_once_made_valid_keep_the_first_series() {
    let snapshot = Snapshot {
        counters: vec![counter_value("a.b", &[], 1), counter_value("a_b", &[], 2)],
        gauges: vec![
            gauge_value("a_b_total", &[], 9.0),
            gauge_value("c", &[], 1.0),
        ],
        ..Snapshot::default()
    };
    check(
        &snapshot,
        "# HELP a_b_total a.b (no description)\n\
         # TYPE a_b_total counter\n\
         a_b_total 1\n\
         # HELP c c (no description)\n\
         # TYPE c gauge\n\
         c 1\n",
    );
}

#[test]
fn render_keeps_a_histograms_sample_names_from_other_families_whichever_comes_first() {
    let histogram = |name: &str| HistogramValue {
        name: name.into(),
        labels: labels(&[]),
        help: None,
        unit: None,
        count: 1,
        sum: 2.0,
        buckets: vec![Bucket { le: 5.0, count: 1 }],
        p50: None,
        p99: None,
    };
    let written = |name: &str| {
        format!(
            "# HELP {name} {name} (no description)\n\
             # TYPE {name} histogram\n\
             {name}_bucket{{le=\"5\"}} 1\n\
             {name}_bucket{{le=\"+Inf\"}} 1\n\
             {name}_sum 2\n\
             {name}_count 1\n"
        )
    };
    // A gauge `x_count` first (gauges are written before histograms): histogram `x` would
    // write `x_count` too, and is left out, whatever its labels.
    let snapshot = Snapshot {
        gauges: vec![gauge_value("x_count", &[], 9.0)],
        histograms: vec![histogram("x"), {
            let mut other = histogram("x");
            other.labels = labels(&[("k", "v")]);
            other
        }],
        ..Snapshot::default()
    };
    check(
        &snapshot,
        "# HELP x_count x_count (no description)\n# TYPE x_count gauge\nx_count 9\n",
    );
    // Histogram `y` first: a family named like one of its samples is left out.
    for taken in ["y_bucket", "y_sum", "y_count"] {
        let snapshot = Snapshot {
            histograms: vec![histogram("y"), histogram(taken)],
            ..Snapshot::default()
        };
        check(&snapshot, &written("y"));
    }
    // And the other way round: `z_sum` first leaves `z` out.
    let snapshot = Snapshot {
        histograms: vec![histogram("z_sum"), histogram("z")],
        ..Snapshot::default()
    };
    check(&snapshot, &written("z_sum"));
    // A name a histogram's samples only start with is not taken.
    let snapshot = Snapshot {
        gauges: vec![gauge_value("w_counts", &[], 1.0)],
        histograms: vec![histogram("w")],
        ..Snapshot::default()
    };
    assert!(snapshot.to_prometheus().contains("# TYPE w histogram\n"));
    assert!(snapshot.to_prometheus().contains("# TYPE w_counts gauge\n"));
}

#[test]
fn failed_accepts_are_warned_about_at_most_once_a_minute_and_counted() {
    let mut failures = http::AcceptFailures::default();
    let start = tokio::time::Instant::now();
    let at = |secs: u64| start + std::time::Duration::from_secs(secs);
    // (when, what to warn with): the first at once, then once a minute at most, counting
    // the failures since the last warning.
    for (secs, expected) in [
        (0, Some(1)),
        (0, None),
        (30, None),
        (59, None),
        (60, Some(4)),
        (61, None),
        (200, Some(2)),
    ] {
        assert_eq!(failures.failed(at(secs)), expected, "at {secs} s");
    }
}

#[test]
fn process_figures_are_written_with_the_standard_names() {
    let snapshot = Snapshot {
        process: Some(Process {
            resident_memory_bytes: 4096,
            cpu_seconds: 1.5,
            open_fds: 7,
            start_time_seconds: 1_700_000_000.25,
        }),
        ..Snapshot::default()
    };
    let text = snapshot.to_prometheus();
    for line in [
        "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n",
        "# TYPE process_open_fds gauge\nprocess_open_fds 7\n",
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 4096\n",
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1700000000.25\n",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
}

#[test]
fn the_registry_keeps_what_the_macros_record() {
    let registry = Registry::new();
    with_local_recorder(&registry, || {
        describe_counter!("calls_total", "Calls made");
        describe_gauge!("temperature", Unit::Count, "Degrees");
        describe_histogram!("size", Unit::Bytes, "Sizes seen");
        counter!("calls_total", "b" => "2", "a" => "1").increment(2);
        // The same series whatever the order of its labels at the call site.
        counter!("calls_total", "a" => "1", "b" => "2").increment(3);
        counter!("calls_total").absolute(10);
        gauge!("temperature").set(20.0);
        gauge!("temperature").increment(1.5);
        gauge!("temperature").decrement(0.5);
        for value in [0.5, 1.0, 1.0, 7.0, 1e6] {
            histogram!("size", "kind" => "x").record(value);
        }
    });
    let snapshot = registry.snapshot();
    assert_eq!(
        snapshot.counters,
        [
            CounterValue {
                name: "calls_total".into(),
                labels: labels(&[]),
                help: Some("Calls made".into()),
                unit: None,
                value: 10,
            },
            CounterValue {
                name: "calls_total".into(),
                labels: labels(&[("a", "1"), ("b", "2")]),
                help: Some("Calls made".into()),
                unit: None,
                value: 5,
            },
        ]
    );
    assert_eq!(snapshot.gauge("temperature", &[]), Some(21.0));
    assert_eq!(snapshot.gauges[0].unit.as_deref(), Some("count"));
    let h = snapshot.histogram("size", &[("kind", "x")]).unwrap();
    assert_eq!((h.count, h.sum), (5, 1e6 + 9.5));
    assert_eq!(h.unit.as_deref(), Some("bytes"));
    let cumulative: Vec<(f64, u64)> = h.buckets.iter().map(|b| (b.le, b.count)).collect();
    let expected: Vec<(f64, u64)> = DEFAULT_BUCKETS
        .iter()
        .map(|&le| {
            let n = match le {
                le if le < 0.5 => 0,
                le if le < 1.0 => 1,
                le if le < 10.0 => 3,
                _ => 4,
            };
            (le, n)
        })
        .collect();
    assert_eq!(cumulative, expected);
    assert_eq!(snapshot.process, None);
}

#[test]
fn a_value_on_a_bound_counts_in_that_bucket_and_nan_only_in_inf() {
    let h = Histogram::new([1.0, 2.0].into());
    ::metrics::HistogramFn::record(&h, 1.0);
    ::metrics::HistogramFn::record(&h, 2.0000001);
    ::metrics::HistogramFn::record_many(&h, f64::NAN, 2);
    let (count, sum, buckets) = h.read();
    assert_eq!(count, 4);
    assert!(sum.is_nan());
    let counts: Vec<u64> = buckets.iter().map(|b| b.count).collect();
    assert_eq!(counts, [1, 1]);
}

#[test]
fn a_histogram_can_have_its_own_buckets() {
    let registry = Registry::new();
    registry.set_buckets("digits", &[1.0, 10.0, 100.0]).unwrap();
    for (bounds, reason) in [
        (&[1.0, 1.0][..], "the bounds must rise strictly"),
        (&[2.0, 1.0][..], "the bounds must rise strictly"),
        (
            &[1.0, f64::INFINITY][..],
            "every bound must be a finite number (the +Inf bucket is implied)",
        ),
    ] {
        let error = registry.set_buckets("bad", bounds).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("buckets of histogram bad: {reason}")
        );
    }
    with_local_recorder(&registry, || {
        histogram!("digits").record(5.0);
        histogram!("other").record(5.0);
    });
    let snapshot = registry.snapshot();
    let bounds = |name| -> Vec<(f64, u64)> {
        let h = snapshot.histogram(name, &[]).unwrap();
        h.buckets.iter().map(|b| (b.le, b.count)).collect()
    };
    assert_eq!(bounds("digits"), [(1.0, 0), (10.0, 1), (100.0, 1)]);
    assert_eq!(bounds("other").len(), DEFAULT_BUCKETS.len());
}

#[test]
fn quantiles_interpolate_within_the_bucket_of_their_rank() {
    let buckets = |counts: &[(f64, u64)]| -> Vec<Bucket> {
        counts
            .iter()
            .map(|&(le, count)| Bucket { le, count })
            .collect()
    };
    let b = buckets(&[(1.0, 0), (2.0, 50), (4.0, 100)]);
    // Rank 50 is the last of the (1, 2] bucket; rank 99 is 49/50 into (2, 4].
    assert_eq!(quantile(0.5, 100, &b), Some(2.0));
    assert_eq!(quantile(0.99, 100, &b), Some(2.0 + 2.0 * 49.0 / 50.0));
    // The first bucket starts at zero.
    assert_eq!(quantile(0.5, 10, &buckets(&[(1.0, 10)])), Some(0.5));
    // Beyond the highest bound: that bound.
    assert_eq!(quantile(0.99, 10, &buckets(&[(1.0, 5)])), Some(1.0));
    assert_eq!(quantile(0.5, 0, &b), None);
}

#[test]
fn process_figures_are_parsed_from_proc() {
    // The command name holds a space and a parenthesis; fields count from the last `)`.
    let stat = "4242 (my (app) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 50 0 0 20 0 3 0 \
                123456 12345678 1000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0";
    let status = "Name:\tx\nVmPeak:\t 99 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
    let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
    assert_eq!(
        process::parse(stat, status, boot, 9),
        Some(Process {
            resident_memory_bytes: 2048 * 1024,
            cpu_seconds: 2.0,
            open_fds: 9,
            start_time_seconds: 1_700_000_000.0 + 1234.56,
        })
    );
    assert_eq!(process::parse("garbage", status, boot, 1), None);
    assert_eq!(process::parse(stat, "Name:\tx\n", boot, 1), None);
}

#[test]
fn this_process_can_read_its_own_figures() {
    let Some(p) = Process::read() else {
        // As the integration tests' `common::skip` does: CI must not pass this as a skip.
        let required = std::env::var_os("SHOAL_REQUIRE_TOOLS").is_some_and(|v| v == "1");
        assert!(
            !required,
            "/proc/self is not readable; SHOAL_REQUIRE_TOOLS=1 requires it"
        );
        println!("skipped: /proc/self is not readable here");
        return;
    };
    assert!(p.resident_memory_bytes > 0);
    assert!(p.open_fds > 0);
    assert!(p.start_time_seconds > 0.0);
}

/// Answers every method but those starting with `nope`, which are not found, and `fail`,
/// which fail.
fn service(req: Request) -> std::future::Ready<Result<Reply, RpcError>> {
    std::future::ready(if req.method.starts_with("nope") {
        Err(RpcError::method_not_found(&req.method))
    } else if req.method.starts_with("fail") {
        Err(RpcError::internal("no"))
    } else {
        Reply::encode(&1)
    })
}

fn request(method: &str, notification: bool) -> Request {
    Request {
        method: method.into(),
        params: Vec::new(),
        ctx: Context::new(None, notification, None),
    }
}

#[test]
fn the_layer_counts_outcomes_and_folds_made_up_method_names() {
    let registry = Registry::new();
    let layer = MetricsLayer::new();
    let call = |method: &str, notification: bool| {
        let svc = layer.layer(service_fn(service));
        // The service answers on the first poll, so the local recorder sees the record.
        let answered = with_local_recorder(&registry, || {
            futures_util::FutureExt::now_or_never(svc.oneshot(request(method, notification)))
        });
        assert!(answered.is_some());
    };
    for _ in 0..3 {
        call("add", false);
    }
    call("add", true);
    call("fail", false);
    call("nope", false);
    call("nope_again", true);
    let snapshot = registry.snapshot();
    let count = |method: &str, outcome: &str| {
        snapshot.counter(RPC_CALLS, &[("method", method), ("outcome", outcome)])
    };
    assert_eq!(count("add", "ok"), Some(4));
    assert_eq!(count("fail", "error"), Some(1));
    assert_eq!(count(Stats::UNKNOWN, "error"), Some(2));
    assert_eq!(count("nope", "error"), None);
    assert_eq!(snapshot.counters.len(), 3);
    let durations: Vec<(&str, u64)> = snapshot
        .histograms
        .iter()
        .map(|h| {
            assert_eq!(h.name, RPC_CALL_DURATION);
            (h.labels["method"].as_str(), h.count)
        })
        .collect();
    assert_eq!(durations, [(Stats::UNKNOWN, 2), ("add", 4), ("fail", 1)]);
}

#[test]
fn past_the_limit_new_method_names_are_counted_as_other() {
    let registry = Registry::new();
    let layer = MetricsLayer::new();
    with_local_recorder(&registry, || {
        for i in 0..MAX_METHODS + 3 {
            let svc = layer.layer(service_fn(service));
            let req = request(&format!("m{i}"), false);
            futures_util::FutureExt::now_or_never(svc.oneshot(req))
                .unwrap()
                .unwrap();
        }
        // A name kept apart keeps its own series after the limit.
        let svc = layer.layer(service_fn(service));
        futures_util::FutureExt::now_or_never(svc.oneshot(request("m0", false)))
            .unwrap()
            .unwrap();
    });
    let snapshot = registry.snapshot();
    assert_eq!(snapshot.counters.len(), MAX_METHODS - 1);
    let count =
        |method: &str| snapshot.counter(RPC_CALLS, &[("method", method), ("outcome", "ok")]);
    assert_eq!(count(Stats::OTHER), Some(5));
    assert_eq!(count("m0"), Some(2));
}
