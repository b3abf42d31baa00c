//! Tests for [`Timeout`](super::Timeout), on paused time so deadlines are exact.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

use super::*;
use crate::error::codes;
use crate::middleware::tests::{request, request_within, DropFlag};

/// Answers how many milliseconds the handler has left before its deadline; nil for none.
async fn time_left(req: Request) -> Result<Reply, RpcError> {
    match req.ctx.deadline() {
        Some(deadline) => Reply::encode(&((deadline - Instant::now()).as_millis() as u64)),
        None => Reply::encode(&()),
    }
}

async fn check(timeout: Duration, requested: Option<Duration>, expected_ms: Option<u64>) {
    let svc = TimeoutLayer::new(timeout).layer(service_fn(time_left));
    let req = match requested {
        Some(after) => request_within("time_left", after),
        None => request("time_left"),
    };
    let seen = svc.oneshot(req).await.unwrap().to_value();
    let expected = expected_ms.map_or(Value::Nil, Value::from);
    assert_eq!(
        seen, expected,
        "timeout {timeout:?}, requested {requested:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn handlers_see_the_sooner_of_the_timeout_and_the_callers_deadline() {
    let ms = Duration::from_millis;
    check(ms(100), None, Some(100)).await;
    check(ms(100), Some(ms(30)), Some(30)).await;
    check(ms(100), Some(ms(500)), Some(100)).await;
    check(ms(100), Some(ms(100)), Some(100)).await;
    // A timeout too long for an instant leaves the caller's deadline, or none.
    check(Duration::MAX, Some(ms(30)), Some(30)).await;
    check(Duration::MAX, None, None).await;
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_deadline_is_answered_and_its_handler_dropped() {
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let inner = service_fn({
        let (dropped, finished) = (dropped.clone(), finished.clone());
        move |_req: Request| {
            let guard = DropFlag(dropped.clone());
            let finished = finished.clone();
            async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_millis(150)).await;
                finished.store(true, Ordering::SeqCst);
                Reply::encode("done")
            }
        }
    });
    let svc = TimeoutLayer::new(Duration::from_millis(100)).layer(inner);

    let started = Instant::now();
    let err = svc.oneshot(request("slow")).await.unwrap_err();
    assert_eq!(err.code, codes::DEADLINE_EXCEEDED);
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler's future was not dropped"
    );
    assert!(
        !finished.load(Ordering::SeqCst),
        "the handler ran to completion"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_within_its_deadline_keeps_its_result() {
    let inner = service_fn(|_req: Request| async {
        tokio::time::sleep(Duration::from_millis(99)).await;
        Reply::encode("in time")
    });
    let svc = TimeoutLayer::new(Duration::from_millis(100)).layer(inner);
    let started = Instant::now();
    let reply = svc.oneshot(request("quick")).await.unwrap();
    assert_eq!(reply.to_value(), Value::from("in time"));
    assert_eq!(started.elapsed(), Duration::from_millis(99));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_passed_fails_a_pending_call_at_once_but_not_a_ready_one() {
    let inner = service_fn(|req: Request| async move {
        if req.method == "pending" {
            std::future::pending::<()>().await;
        }
        Reply::encode("ready")
    });
    let svc = TimeoutLayer::new(Duration::from_secs(10)).layer(inner);

    let started = Instant::now();
    let err = svc
        .clone()
        .oneshot(request_within("pending", Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(err.code, codes::DEADLINE_EXCEEDED);
    assert_eq!(started.elapsed(), Duration::ZERO);

    let reply = svc
        .oneshot(request_within("ready", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(reply.to_value(), Value::from("ready"));
}
