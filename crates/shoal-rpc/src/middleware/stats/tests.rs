//! Tests for [`StatsService`](super::StatsService) and its histogram, on paused time so each
//! call takes exactly as long as its handler sleeps.

use std::time::Duration;

use tower::{service_fn, Layer, ServiceExt};

use super::histogram::{bounds, bucket, Histogram, BUCKETS};
use super::*;
use crate::middleware::tests::request;

/// Sleeps the milliseconds given as the first argument (none: not at all), then answers;
/// methods named `fail*` answer an error and `nope*` are not found.
fn sleeper() -> impl Service<Request, Response = Reply, Error = RpcError, Future: Send> + Clone {
    service_fn(|req: Request| async move {
        if req.method.starts_with("nope") {
            return Err(RpcError::method_not_found(&req.method));
        }
        let ms = req.params.first().and_then(|v| v.as_u64()).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if req.method.starts_with("fail") {
            Err(RpcError::invalid_params("no"))
        } else {
            Reply::encode(&ms)
        }
    })
}

/// A call to `method` whose handler takes `ms` milliseconds.
fn taking(method: &str, ms: u64) -> Request {
    let mut req = request(method);
    req.params = vec![ms.into()];
    req
}

fn check_bucket(us: u64, expected: (u64, u64)) {
    assert_eq!(bounds(bucket(us)), expected, "{us} µs");
}

#[test]
fn buckets_are_exact_below_four_then_quarters_of_each_power_of_two() {
    check_bucket(0, (0, 1));
    check_bucket(3, (3, 4));
    check_bucket(4, (4, 5));
    check_bucket(7, (7, 8));
    check_bucket(8, (8, 10));
    check_bucket(1_000, (896, 1_024));
    check_bucket(10_000, (8_192, 10_240));
    check_bucket(1_000_000, (917_504, 1_048_576));
    // Longer than the top bucket's range still lands in it.
    assert_eq!(bucket(u64::MAX), BUCKETS - 1);
}

#[test]
fn every_value_lands_in_a_bucket_that_holds_it_and_no_wider_than_a_quarter() {
    let mut us = 0_u64;
    while us < 1 << 36 {
        let index = bucket(us);
        let (low, high) = bounds(index);
        assert!(
            low <= us && us < high,
            "{us} µs in bucket {index} [{low}, {high})"
        );
        assert!(
            high - low <= low.max(4) / 4,
            "bucket {index} [{low}, {high}) is too wide"
        );
        assert!(
            index == 0 || bounds(index - 1).1 == low,
            "gap below bucket {index}"
        );
        us = us * 9 / 8 + 1;
    }
}

#[test]
fn an_empty_histogram_summarises_to_zeros() {
    assert_eq!(Histogram::default().summary(), LatencySummary::default());
}

#[tokio::test(start_paused = true)]
async fn counts_calls_errors_and_latency_per_method() {
    let layer = StatsLayer::new();
    let stats = layer.stats();
    let svc = layer.layer(sleeper());
    // 98 calls of 1 ms and 2 of 1 s: the median is fast, the 99th percentile slow.
    for i in 0..100 {
        let ms = if i % 50 == 0 { 1_000 } else { 1 };
        svc.clone().oneshot(taking("mixed", ms)).await.unwrap();
    }
    for _ in 0..3 {
        svc.clone().oneshot(taking("fail", 10)).await.unwrap_err();
    }
    svc.clone().oneshot(taking("instant", 0)).await.unwrap();

    // A clone of the handle sees the same table.
    let snapshot = stats.clone().snapshot();
    let expected = [
        MethodStats {
            method: "fail".into(),
            calls: 3,
            errors: 3,
            latency: LatencySummary {
                p50_us: 10_000,
                p99_us: 10_000,
                max_us: 10_000,
                mean_us: 10_000,
            },
        },
        MethodStats {
            method: "instant".into(),
            calls: 1,
            errors: 0,
            latency: LatencySummary::default(),
        },
        MethodStats {
            method: "mixed".into(),
            calls: 100,
            errors: 0,
            latency: LatencySummary {
                // 1 ms lands in [896, 1024) µs.
                p50_us: 1_023,
                p99_us: 1_000_000,
                max_us: 1_000_000,
                mean_us: (98 * 1_000 + 2 * 1_000_000) / 100,
            },
        },
    ];
    assert_eq!(snapshot, expected);
}

#[test]
fn quantiles_use_the_rank_of_each_sample() {
    let h = Histogram::default();
    for us in 1..=100 {
        h.record(us);
    }
    let summary = h.summary();
    // The 50th sample is 50 µs, in [48, 56); the 99th is 99 µs, in [96, 112), capped at max.
    assert_eq!(
        summary,
        LatencySummary {
            p50_us: 55,
            p99_us: 100,
            max_us: 100,
            mean_us: 50
        }
    );
}

#[tokio::test(start_paused = true)]
async fn made_up_method_names_are_folded_into_one_entry() {
    let layer = StatsLayer::new();
    let svc = layer.layer(sleeper());
    for method in ["nope", "nope_again", "nope_twice"] {
        svc.clone().oneshot(request(method)).await.unwrap_err();
    }
    svc.clone().oneshot(request("real")).await.unwrap();
    let calls: Vec<_> = layer
        .stats()
        .snapshot()
        .into_iter()
        .map(|m| (m.method, m.calls, m.errors))
        .collect();
    assert_eq!(
        calls,
        [(Stats::UNKNOWN.to_owned(), 3, 3), ("real".to_owned(), 1, 0)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_table_counts_new_names_as_other() {
    let layer = StatsLayer::new();
    let svc = layer.layer(sleeper());
    for i in 0..Stats::MAX_METHODS + 5 {
        svc.clone()
            .oneshot(request(&format!("m{i}")))
            .await
            .unwrap();
    }
    let snapshot = layer.stats().snapshot();
    assert_eq!(snapshot.len(), Stats::MAX_METHODS);
    let other = snapshot.iter().find(|m| m.method == Stats::OTHER).unwrap();
    // MAX_METHODS - 1 names kept apart, the remaining 6 calls counted as other.
    assert_eq!(other.calls, 6);
    // A name kept apart still gets its own entry after the table filled.
    svc.clone().oneshot(request("m0")).await.unwrap();
    let m0 = layer
        .stats()
        .snapshot()
        .into_iter()
        .find(|m| m.method == "m0")
        .unwrap();
    assert_eq!(m0.calls, 2);
}
