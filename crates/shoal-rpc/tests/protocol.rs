//! The protocol's rules, byte for byte: what a server answers to requests that break them
//! (params that are not an array, missing or extra arguments) and which of them close the
//! connection. Raw frames go over loopback, so no client smooths anything over.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::{serve_tcp, server, Probe};
use shoal_rpc::codec::{Decoder, Message};
use shoal_rpc::{codes, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

/// One connection that sends raw bytes and reads the replies.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
    dec: Decoder,
}

impl Raw {
    async fn connect(addr: &shoal_rpc::Addr) -> Raw {
        Raw {
            s: TcpStream::connect(addr.to_string()).await.unwrap(),
            buf: BytesMut::new(),
            dec: Decoder::default(),
        }
    }

    /// Sends `bytes` and returns the `(error, result)` of the response to msgid `id`.
    async fn ask(&mut self, id: u32, bytes: &[u8]) -> (Value, Value) {
        self.s.write_all(bytes).await.unwrap();
        loop {
            if let Some(m) = self.dec.decode(&mut self.buf).unwrap() {
                let Message::Response {
                    id: got,
                    error,
                    result,
                } = m
                else {
                    panic!("unexpected {m:?}")
                };
                assert_eq!(got, Value::from(id));
                return (error, result);
            }
            let n = tokio::time::timeout(T, self.s.read_buf(&mut self.buf))
                .await
                .expect("no answer")
                .unwrap();
            assert!(n > 0, "the server closed the connection");
        }
    }
}

/// `[0, id, "more", []]`: asks whether more messages were read behind this call.
fn more(id: u8) -> [u8; 9] {
    [0x94, 0x00, id, 0xa4, b'm', b'o', b'r', b'e', 0x90]
}

#[tokio::test]
async fn a_handler_knows_whether_more_of_the_peers_messages_wait_behind_its_call() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let mut raw = Raw::connect(&addr).await;
    // Two calls in one write: the first has the second behind it, the second nothing.
    raw.s.write_all(&[more(1), more(2)].concat()).await.unwrap();
    let (error, result) = raw.ask(1, &[]).await;
    assert_eq!((error, result), (Value::Nil, Value::from(true)));
    let (error, result) = raw.ask(2, &[]).await;
    assert_eq!((error, result), (Value::Nil, Value::from(false)));
    // Alone, a call has nothing behind it.
    let (error, result) = raw.ask(3, &more(3)).await;
    assert_eq!((error, result), (Value::Nil, Value::from(false)));
    stop.cancel();
}

fn invalid_params(error: &Value) -> &str {
    assert_eq!(error["code"], Value::from(codes::INVALID_PARAMS), "{error}");
    error["message"].as_str().unwrap()
}

#[tokio::test]
async fn params_that_are_not_an_array_are_answered_with_invalid_params() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let mut raw = Raw::connect(&addr).await;
    // [0, 1, "echo", nil]
    let (error, _) = raw
        .ask(1, &[0x94, 0x00, 0x01, 0xa4, b'e', b'c', b'h', b'o', 0xc0])
        .await;
    assert_eq!(
        invalid_params(&error),
        "params must be an array of the arguments, got nil"
    );
    // [0, 2, "echo", "x"]
    let (error, _) = raw
        .ask(
            2,
            &[0x94, 0x00, 0x02, 0xa4, b'e', b'c', b'h', b'o', 0xa1, b'x'],
        )
        .await;
    assert_eq!(
        invalid_params(&error),
        "params must be an array of the arguments, got a string"
    );
    // [0, 3, "echo", {}]
    let (error, _) = raw
        .ask(3, &[0x94, 0x00, 0x03, 0xa4, b'e', b'c', b'h', b'o', 0x80])
        .await;
    assert!(invalid_params(&error).ends_with("got a map"));
    // The connection goes on: [0, 4, "echo", [7]].
    let (error, result) = raw
        .ask(
            4,
            &[0x94, 0x00, 0x04, 0xa4, b'e', b'c', b'h', b'o', 0x91, 0x07],
        )
        .await;
    assert_eq!((error, result), (Value::Nil, Value::from(7)));

    // A notification has no msgid to answer: [2, "count", 5] closes the connection.
    let mut note = TcpStream::connect(addr.to_string()).await.unwrap();
    note.write_all(&[0x93, 0x02, 0xa5, b'c', b'o', b'u', b'n', b't', 0x05])
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(T, note.read_to_end(&mut rest))
        .await
        .expect("the connection stayed open")
        .unwrap();
    assert!(rest.is_empty());
    stop.cancel();
}

#[tokio::test]
async fn arguments_missing_or_extra_are_invalid_params_naming_them() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let mut raw = Raw::connect(&addr).await;
    let greet = [0xa5, b'g', b'r', b'e', b'e', b't'];
    let frame = |id: u8, params: &[u8]| {
        let mut f = vec![0x94, 0x00, id];
        f.extend_from_slice(&greet);
        f.extend_from_slice(params);
        f
    };
    // greet(name: String, greeting: Option<String>) called with both, with the trailing
    // Option left out, and with nil for it.
    let (_, result) = raw
        .ask(1, &frame(1, &[0x92, 0xa2, b'a', b'l', 0xa2, b'h', b'i']))
        .await;
    assert_eq!(result, Value::from("hi, al"));
    let (_, result) = raw.ask(2, &frame(2, &[0x91, 0xa2, b'a', b'l'])).await;
    assert_eq!(result, Value::from("hello, al"));
    let (_, result) = raw.ask(3, &frame(3, &[0x92, 0xa2, b'a', b'l', 0xc0])).await;
    assert_eq!(result, Value::from("hello, al"));
    // Missing the required `name`.
    let (error, _) = raw.ask(4, &frame(4, &[0x90])).await;
    assert_eq!(
        invalid_params(&error),
        "greet: missing argument 0 `name` (only a trailing Option argument may be left out)"
    );
    // One too many.
    let (error, _) = raw
        .ask(5, &frame(5, &[0x93, 0xa2, b'a', b'l', 0xc0, 0x01]))
        .await;
    assert_eq!(invalid_params(&error), "greet takes 2 argument(s), got 3");
    // A `Value` parameter left out is missing too, though it could hold a nil: [0, 6, "echo", []].
    let (error, _) = raw
        .ask(6, &[0x94, 0x00, 0x06, 0xa4, b'e', b'c', b'h', b'o', 0x90])
        .await;
    assert!(
        invalid_params(&error).starts_with("echo: missing argument 0 `x`"),
        "{error}"
    );
    stop.cancel();
}

#[tokio::test]
async fn the_built_in_methods_refuse_extra_arguments() {
    let probe = Arc::new(Probe::default());
    let (addr, stop, _task) = serve_tcp(server(&probe).build().unwrap()).await;
    let mut raw = Raw::connect(&addr).await;
    let ping = [
        0xaa, b's', b'h', b'o', b'a', b'l', b'.', b'p', b'i', b'n', b'g',
    ];
    let methods = [
        0xad, b's', b'h', b'o', b'a', b'l', b'.', b'm', b'e', b't', b'h', b'o', b'd', b's',
    ];
    let frame = |id: u8, method: &[u8], params: &[u8]| {
        let mut f = vec![0x94, 0x00, id];
        f.extend_from_slice(method);
        f.extend_from_slice(params);
        f
    };
    // [0, 1, "shoal.ping", []] and [0, 2, "shoal.methods", []] are answered.
    let (error, result) = raw.ask(1, &frame(1, &ping, &[0x90])).await;
    assert_eq!((error, result), (Value::Nil, Value::from("pong")));
    let (error, result) = raw.ask(2, &frame(2, &methods, &[0x90])).await;
    assert_eq!(error, Value::Nil);
    assert!(result.as_array().is_some_and(|m| !m.is_empty()), "{result}");
    // [0, 3, "shoal.ping", [1]] and [0, 4, "shoal.methods", ["x", nil]] are not.
    let (error, _) = raw.ask(3, &frame(3, &ping, &[0x91, 0x01])).await;
    assert_eq!(
        invalid_params(&error),
        "shoal.ping takes 0 argument(s), got 1"
    );
    let (error, _) = raw
        .ask(4, &frame(4, &methods, &[0x92, 0xa1, b'x', 0xc0]))
        .await;
    assert_eq!(
        invalid_params(&error),
        "shoal.methods takes 0 argument(s), got 2"
    );
    stop.cancel();
}
