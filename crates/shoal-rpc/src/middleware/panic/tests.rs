//! Tests for [`CatchPanic`](super::CatchPanic): panics before and inside the handler's future,
//! with each kind of payload.

use rmpv::Value;
use tower::{service_fn, Layer, ServiceExt};

use super::*;
use crate::error::codes;
use crate::middleware::tests::request;

/// Panics the way its method name says; `ok` answers normally.
fn panicky() -> impl Service<Request, Response = Reply, Error = RpcError, Future: Send> + Clone {
    service_fn(|req: Request| {
        match req.method.as_str() {
            "sync_str" => panic!("static message"),
            "sync_string" => panic!("formatted {}", 42),
            "sync_other" => std::panic::panic_any(7_u32),
            _ => {}
        }
        async move {
            tokio::task::yield_now().await;
            match req.method.as_str() {
                "async_str" => panic!("static message"),
                "async_string" => panic!("formatted {}", 42),
                "async_other" => std::panic::panic_any(7_u32),
                _ => Reply::encode("ok"),
            }
        }
    })
}

#[tokio::test]
async fn panics_in_call_and_in_the_future_become_internal_errors() {
    let svc = CatchPanicLayer::new().layer(panicky());
    let cases = [
        ("str", "handler panicked: static message"),
        ("string", "handler panicked: formatted 42"),
        ("other", "handler panicked: panic payload is not a string"),
    ];
    for (payload, expected) in cases {
        for when in ["sync", "async"] {
            let method = format!("{when}_{payload}");
            let err = svc.clone().oneshot(request(&method)).await.unwrap_err();
            assert_eq!(err.code, codes::INTERNAL, "{method}");
            assert_eq!(err.message, expected, "{method}");
        }
    }
    // The service keeps answering after its handlers panicked.
    let reply = svc.oneshot(request("ok")).await.unwrap();
    assert_eq!(reply.to_value(), Value::from("ok"));
}
