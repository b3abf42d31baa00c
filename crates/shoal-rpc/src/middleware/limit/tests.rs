//! Tests for [`ConcurrencyLimit`](super::ConcurrencyLimit): calls held open by a gate the test
//! opens one at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tower::{service_fn, Layer, ServiceExt};

use super::*;
use crate::error::codes;
use crate::middleware::tests::request;

/// A handler that counts the calls it starts and finishes each only when `gate` gives it a
/// permit; the test opens the gate one call at a time.
fn gated(
    gate: Arc<Semaphore>,
    started: Arc<AtomicUsize>,
) -> impl Service<Request, Response = Reply, Error = RpcError, Future: Send> + Clone {
    service_fn(move |req: Request| {
        started.fetch_add(1, Ordering::SeqCst);
        let gate = gate.clone();
        async move {
            gate.acquire().await.unwrap().forget();
            Reply::encode(&req.method)
        }
    })
}

/// Makes a call on a clone of `svc` without polling it, as a connection does before it spawns
/// the call's future.
async fn start<S: Service<Request> + Clone>(svc: &S, method: &str) -> S::Future {
    svc.clone()
        .ready_oneshot()
        .await
        .ok()
        .unwrap()
        .call(request(method))
}

#[tokio::test]
async fn calls_over_the_limit_are_refused_at_once_and_a_finished_call_frees_its_slot() {
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let layer = ConcurrencyLimitLayer::new(2);
    // Two services from one layer stand for two connections of one server.
    let first = layer.layer(gated(gate.clone(), started.clone()));
    let second = layer.layer(gated(gate.clone(), started.clone()));

    let (done_tx, mut done) = mpsc::unbounded_channel();
    for (svc, method) in [(&first, "a"), (&second, "b")] {
        let done_tx = done_tx.clone();
        let call = start(svc, method).await;
        tokio::spawn(async move { done_tx.send(call.await).unwrap() });
    }
    // Each call takes its slot when it is made, before the tasks above first run.
    assert_eq!(layer.in_progress(), 2);

    for svc in [&first, &second] {
        let err = svc.clone().oneshot(request("c")).await.unwrap_err();
        assert_eq!(err.code, codes::OVERLOADED);
        assert!(err.message.contains("limit of 2 calls"), "{}", err.message);
    }
    assert_eq!(
        started.load(Ordering::SeqCst),
        2,
        "a refused call reached the handler"
    );

    gate.add_permits(1);
    let finished = done.recv().await.unwrap().unwrap();
    assert!(["a", "b"]
        .map(rmpv::Value::from)
        .contains(&finished.to_value()));
    assert_eq!(layer.in_progress(), 1);

    let call = start(&second, "d").await;
    assert_eq!(layer.in_progress(), 2);
    assert_eq!(started.load(Ordering::SeqCst), 3);
    gate.add_permits(2);
    assert_eq!(call.await.unwrap().to_value(), rmpv::Value::from("d"));
    done.recv().await.unwrap().unwrap();
    assert_eq!(first.in_progress(), 0);
}

#[tokio::test]
async fn a_dropped_call_frees_its_slot() {
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let layer = ConcurrencyLimitLayer::new(1);
    let svc = layer.layer(gated(gate.clone(), started.clone()));

    let call = start(&svc, "abandoned").await;
    assert_eq!(layer.in_progress(), 1);
    drop(call);
    assert_eq!(layer.in_progress(), 0);

    gate.add_permits(1);
    let reply = svc.oneshot(request("next")).await.unwrap();
    assert_eq!(reply.to_value(), rmpv::Value::from("next"));
}

#[tokio::test]
async fn a_limit_of_zero_admits_one_call() {
    let gate = Arc::new(Semaphore::new(0));
    let svc = ConcurrencyLimitLayer::new(0).layer(gated(gate, Arc::default()));
    let _held = start(&svc, "first").await;
    let err = svc.oneshot(request("second")).await.unwrap_err();
    assert!(err.message.contains("limit of 1 calls"), "{}", err.message);
}
