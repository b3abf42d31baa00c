//! Helpers shared by the middleware tests, and a test that stacks every layer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, ServiceBuilder, ServiceExt};

use super::*;
use crate::error::{codes, RpcError};
use crate::service::{Context, Reply, Request};

/// A call to `method` with no arguments, no deadline and no peer.
pub(crate) fn request(method: &str) -> Request {
    Request {
        method: method.to_owned(),
        params: vec![],
        ctx: Context::new(None, false, None),
    }
}

/// A call to `method` whose caller stops waiting `after` from now.
pub(crate) fn request_within(method: &str, after: Duration) -> Request {
    let mut req = request(method);
    req.ctx.set_deadline(Some(Instant::now() + after));
    req
}

/// Sets its flag when dropped: shows that a handler's future was dropped (cancelled).
pub(crate) struct DropFlag(pub(crate) Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn assert_clone_send_sync<T: Clone + Send + Sync + 'static>(_: &T) {}

#[tokio::test(start_paused = true)]
async fn all_layers_compose_into_a_boxable_service() {
    let inner = service_fn(|req: Request| {
        if req.method == "sync_panic" {
            panic!("panicked before any future");
        }
        async move {
            match req.method.as_str() {
                "echo" => Reply::encode(&req.params),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Reply::encode("late")
                }
                "async_panic" => panic!("panicked in the future"),
                _ => Err(RpcError::method_not_found(&req.method)),
            }
        }
    });
    let stats = StatsLayer::new();
    let handle = stats.stats();
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(stats)
        .layer(ConcurrencyLimitLayer::new(4))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(CatchPanicLayer::new())
        .service(inner);
    assert_clone_send_sync(&svc);
    let svc: BoxCloneSyncService<Request, Reply, RpcError> = BoxCloneSyncService::new(svc);

    let mut echo = request("echo");
    echo.params = vec![7.into()];
    let reply = svc.clone().oneshot(echo).await.unwrap();
    assert_eq!(reply.to_value(), rmpv::Value::Array(vec![7.into()]));

    let started = Instant::now();
    let err = svc.clone().oneshot(request("slow")).await.unwrap_err();
    assert_eq!(err.code, codes::DEADLINE_EXCEEDED);
    assert_eq!(started.elapsed(), Duration::from_secs(1));

    for method in ["sync_panic", "async_panic"] {
        let err = svc.clone().oneshot(request(method)).await.unwrap_err();
        assert_eq!(err.code, codes::INTERNAL, "{method}");
        assert!(
            err.message.starts_with("handler panicked: "),
            "{method}: {}",
            err.message
        );
    }

    let err = svc.clone().oneshot(request("missing")).await.unwrap_err();
    assert_eq!(err.code, codes::METHOD_NOT_FOUND);

    let calls: Vec<_> = handle
        .snapshot()
        .into_iter()
        .map(|m| (m.method, m.calls, m.errors))
        .collect();
    assert_eq!(
        calls,
        [
            (Stats::UNKNOWN.to_owned(), 1, 1),
            ("async_panic".to_owned(), 1, 1),
            ("echo".to_owned(), 1, 0),
            ("slow".to_owned(), 1, 1),
            ("sync_panic".to_owned(), 1, 1),
        ]
    );
}
