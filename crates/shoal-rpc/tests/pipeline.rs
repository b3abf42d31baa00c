//! Pipelines end to end: calls and notifications sent together, each call answered in its
//! place with its own result, a deadline or a closed connection failing only the calls still
//! waiting, nothing sent when one message is over the limit, and the server told to stop the
//! calls a dropped pipeline left.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::{client, client_on, in_memory, serve_tcp, server, Probe};
use shoal_rpc::codec::{self, Decoder, Message};
use shoal_rpc::transport::memory_pair;
use shoal_rpc::{codes, CallOptions, Client, Error, Pipeline, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn each_call_of_a_pipeline_gets_its_own_answer_in_its_place() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let client = client(&addr).await;
    let mut p = Pipeline::new();
    p.call("echo", &(1,)).unwrap();
    p.notify("count", &()).unwrap();
    p.call("fail", &()).unwrap();
    p.notify("count", &()).unwrap();
    p.call("echo", &("b",)).unwrap();
    p.call("nope", &()).unwrap();
    let answers = client
        .call_pipeline(&CallOptions::default(), &p)
        .await
        .unwrap();
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert_eq!(answers[0].as_ref().unwrap(), &Value::from(1));
    assert_eq!(answers[1].as_ref().unwrap_err().code(), Some(1001));
    assert_eq!(answers[2].as_ref().unwrap(), &Value::from("b"));
    assert_eq!(
        answers[3].as_ref().unwrap_err().code(),
        Some(codes::METHOD_NOT_FOUND)
    );
    // The same pipeline again: its calls get fresh msgids.
    let again = client
        .call_pipeline(&CallOptions::default(), &p)
        .await
        .unwrap();
    assert_eq!(again[2].as_ref().unwrap(), &Value::from("b"));
    // Notifications run on their own queue at the server; all four arrive.
    tokio::time::timeout(T, async {
        while probe.counted.load(Ordering::Relaxed) < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the pipelined notifications never all arrived");
    stop.cancel();
}

#[tokio::test]
async fn a_call_past_the_deadline_fails_alone_and_the_server_stops_it() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let client = client(&addr).await;
    let dropped = probe.dropped.notified();
    let mut p = Pipeline::new();
    p.call("echo", &(1,))
        .unwrap()
        .call("hold", &("x",))
        .unwrap();
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let answers = client.call_pipeline(&opts, &p).await.unwrap();
    assert_eq!(answers[0].as_ref().unwrap(), &Value::from(1));
    let late = answers[1].as_ref().unwrap_err();
    assert!(matches!(late, Error::DeadlineExceeded(_)), "{late:?}");
    // The server was told the deadline, or the cancellation: either way its handler goes.
    tokio::time::timeout(T, dropped)
        .await
        .expect("the held call was never stopped at the server");
    assert_eq!(client.peer().await.unwrap().pending(), 0);
    stop.cancel();
}

#[tokio::test]
async fn a_pipeline_with_a_message_over_the_limit_sends_nothing() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let small = Client::builder()
        .endpoint(addr.clone())
        .max_message(1024)
        .connect()
        .await
        .unwrap();
    let mut p = Pipeline::new();
    p.call("hold", &("x",)).unwrap();
    p.call("echo", &("x".repeat(2000),)).unwrap();
    let err = small
        .call_pipeline(&CallOptions::default(), &p)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::FrameTooLarge { max: 1024, .. }),
        "{err}"
    );
    // The connection goes on, and calls are answered in order after what was read before
    // them: had the `hold` left, the server would hold it now.
    assert_eq!(small.call::<_, i64>("echo", &(2,)).await.unwrap(), 2);
    assert!(probe.gates.lock().unwrap().is_empty());
    assert_eq!(small.peer().await.unwrap().pending(), 0);
    stop.cancel();
}

#[tokio::test]
async fn dropping_a_pipeline_stops_the_calls_it_left_at_the_server() {
    let probe = Arc::new(Probe::default());
    let server = server(&probe).build().unwrap();
    let peer = in_memory(&server);
    assert!(
        peer.negotiate(T).await,
        "the server speaks shoal's extensions"
    );
    let mut p = Pipeline::new();
    p.call("echo", &(1,)).unwrap();
    p.call("hold", &("a",)).unwrap();
    p.call("hold", &("b",)).unwrap();
    let sent = tokio::spawn({
        let peer = peer.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            peer.call_pipeline(&p, deadline, Duration::from_secs(60))
                .await
        }
    });
    probe.wait_held(2).await;
    sent.abort();
    let _ = sent.await;
    tokio::time::timeout(T, async {
        while probe.dropped_count.load(Ordering::Relaxed) < 2 {
            probe.dropped.notified().await;
        }
    })
    .await
    .expect("the held calls were never stopped at the server");
    assert_eq!(peer.pending(), 0);
}

#[tokio::test]
async fn calls_without_an_answer_fail_closed_when_the_connection_goes() {
    let ((cr, cw), (mut sr, mut sw)) = memory_pair();
    let peer = client_on(cr, cw, "memory");
    let mut p = Pipeline::new();
    p.call("echo", &(1,)).unwrap().call("echo", &(2,)).unwrap();
    let sent = tokio::spawn({
        let peer = peer.clone();
        async move {
            let deadline = tokio::time::Instant::now() + T;
            peer.call_pipeline(&p, deadline, T).await
        }
    });
    // The other end reads both requests, answers the first and goes away.
    let mut decoder = Decoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut ids = Vec::new();
    while ids.len() < 2 {
        assert!(
            sr.read_buf(&mut buf).await.unwrap() > 0,
            "the pipeline ended early"
        );
        while let Some(m) = decoder.decode(&mut buf).unwrap() {
            match m {
                Message::Request { id, .. } => ids.push(id),
                other => panic!("not a request: {other:?}"),
            }
        }
    }
    let mut reply = BytesMut::new();
    codec::encode_response_ok(&mut reply, &ids[0], &[0x07]);
    sw.write_all(&reply).await.unwrap();
    sw.flush().await.unwrap();
    drop((sr, sw));
    let answers = tokio::time::timeout(T, sent)
        .await
        .expect("the pipeline never ended")
        .unwrap()
        .unwrap();
    assert_eq!(answers[0].as_ref().unwrap(), &Value::from(7));
    let lost = answers[1].as_ref().unwrap_err();
    assert!(matches!(lost, Error::Closed { .. }), "{lost:?}");
    assert_eq!(peer.pending(), 0);
}
