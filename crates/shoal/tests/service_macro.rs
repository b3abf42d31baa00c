//! `#[shoal::service]` on the server side: the generated `<Trait>Server` driven through
//! `Dispatch::call` with hand-built requests, checked by what its replies decode to, and
//! over a socket with and without middleware, where the calls it reads in place
//! (`Dispatch::call_in_place`) must answer as requests do. The generated client is only
//! type-checked here; `service_client.rs` calls it over a socket.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal::rpc::{Dispatch, MethodInfo, Reply, Request};
use shoal::{codes, Context, RpcError, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    x: i32,
    y: i32,
}

/// An application error that knows its wire form.
#[derive(Debug)]
pub enum CalcError {
    DivisionByZero { dividend: i64 },
}

const DIVISION_BY_ZERO: i64 = codes::APP_MIN + 1;

impl From<CalcError> for RpcError {
    fn from(e: CalcError) -> RpcError {
        match e {
            CalcError::DivisionByZero { dividend } => {
                RpcError::new(DIVISION_BY_ZERO, "division by zero").with_data(dividend.into())
            }
        }
    }
}

/// Arithmetic and a little state, one method per kind the macro knows.
#[shoal::service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;

    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError>;

    #[shoal(notify)]
    async fn record(&self, line: String);

    /// Sums `1..=n` the slow way.
    #[shoal(blocking)]
    fn crunch(&self, n: u64) -> u64;

    /// Which thread ran the call, and whether the caller set a deadline.
    #[shoal(blocking)]
    fn whereami(&self, ctx: &Context) -> (String, bool);

    #[shoal(idempotent)]
    async fn get(&self, key: String) -> Option<String>;

    async fn whoami(&self, ctx: &Context) -> String;

    async fn shift(&self, p: Point, dx: i32) -> Point;

    #[shoal(name = "calc.version", idempotent)]
    async fn version(&self) -> String {
        "1.0".to_owned()
    }

    async fn reset(&self);
}

#[derive(Default)]
struct Calc {
    lines: Mutex<Vec<String>>,
    store: HashMap<String, String>,
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        a.checked_div(b)
            .ok_or(CalcError::DivisionByZero { dividend: a })
    }

    async fn record(&self, line: String) {
        self.lines.lock().unwrap().push(line);
    }

    fn crunch(&self, n: u64) -> u64 {
        (1..=n).sum()
    }

    fn whereami(&self, ctx: &Context) -> (String, bool) {
        (thread_label(), ctx.deadline().is_some())
    }

    async fn get(&self, key: String) -> Option<String> {
        self.store.get(&key).cloned()
    }

    async fn whoami(&self, ctx: &Context) -> String {
        match ctx.deadline() {
            Some(_) => "a caller with a deadline".to_owned(),
            None => "a caller without a deadline".to_owned(),
        }
    }

    async fn shift(&self, p: Point, dx: i32) -> Point {
        Point { x: p.x + dx, ..p }
    }

    async fn reset(&self) {
        self.lines.lock().unwrap().clear();
    }
}

fn server() -> CalculatorServer<Calc> {
    let store = HashMap::from([("pi".to_owned(), "3.14".to_owned())]);
    CalculatorServer::new(Calc {
        store,
        ..Calc::default()
    })
}

fn request(method: &str, params: Vec<Value>) -> Request {
    Request {
        method: method.to_owned(),
        params,
        ctx: Context::new(None, false, None),
    }
}

async fn call(server: &impl Dispatch, method: &str, params: Vec<Value>) -> Result<Value, RpcError> {
    server
        .call(request(method, params))
        .await
        .map(|reply| reply.to_value())
}

fn thread_label() -> String {
    format!("{:?}", std::thread::current().id())
}

fn point(x: i32, y: i32) -> Value {
    Value::Map(vec![("x".into(), x.into()), ("y".into(), y.into())])
}

#[tokio::test]
async fn calls_decode_their_arguments_and_encode_the_result() {
    let server = server();
    let cases: Vec<(&str, Vec<Value>, Value)> = vec![
        ("add", vec![2.into(), 3.into()], 5.into()),
        ("add", vec![(-2).into(), 3.into()], 1.into()),
        ("div", vec![7.into(), 2.into()], 3.into()),
        ("crunch", vec![10.into()], 55.into()),
        ("get", vec!["pi".into()], "3.14".into()),
        ("get", vec!["e".into()], Value::Nil),
        ("whoami", vec![], "a caller without a deadline".into()),
        ("calc.version", vec![], "1.0".into()),
        ("reset", vec![], Value::Nil),
        // Structs travel as maps with field names, both ways.
        ("shift", vec![point(1, 2), 10.into()], point(11, 2)),
    ];
    for (method, params, expected) in cases {
        let got = call(&server, method, params.clone()).await;
        assert_eq!(got, Ok(expected), "{method}({params:?})");
    }
}

#[tokio::test]
async fn bad_calls_answer_errors_that_say_what_is_wrong() {
    let server = server();
    let cases: Vec<(&str, Vec<Value>, i64, &str)> = vec![
        (
            "add",
            vec![1.into(), "two".into()],
            codes::INVALID_PARAMS,
            "add: argument 1 `b`: ",
        ),
        // Only a trailing Option argument may be left out.
        (
            "add",
            vec![1.into()],
            codes::INVALID_PARAMS,
            "add: missing argument 1 `b` (only a trailing Option argument may be left out)",
        ),
        (
            "add",
            vec![1.into(); 3],
            codes::INVALID_PARAMS,
            "add takes 2 argument(s), got 3",
        ),
        (
            "shift",
            vec![1.into(), 1.into()],
            codes::INVALID_PARAMS,
            "shift: argument 0 `p`: ",
        ),
        // The `&Context` parameter is not an argument on the wire.
        (
            "whoami",
            vec![1.into()],
            codes::INVALID_PARAMS,
            "whoami takes 0 argument(s), got 1",
        ),
        (
            "crunch",
            vec!["x".into()],
            codes::INVALID_PARAMS,
            "crunch: argument 0 `n`: ",
        ),
        (
            "nope",
            vec![],
            codes::METHOD_NOT_FOUND,
            "method not found: nope",
        ),
        // Renamed methods answer only to their wire name.
        (
            "version",
            vec![],
            codes::METHOD_NOT_FOUND,
            "method not found: version",
        ),
        (
            "div",
            vec![1.into(), 0.into()],
            DIVISION_BY_ZERO,
            "division by zero",
        ),
    ];
    for (method, params, code, message) in cases {
        let err = call(&server, method, params.clone()).await.unwrap_err();
        assert_eq!(err.code, code, "{method}({params:?}): {err}");
        assert!(
            err.message.starts_with(message),
            "{method}({params:?}): {err}"
        );
    }
}

#[tokio::test]
async fn application_errors_keep_their_code_and_data() {
    let err = call(&server(), "div", vec![7.into(), 0.into()])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RpcError::new(DIVISION_BY_ZERO, "division by zero").with_data(7.into())
    );
    assert!(err.code >= codes::APP_MIN);
}

#[tokio::test]
async fn results_are_encoded_as_msgpack_maps() {
    let reply = server()
        .call(request("shift", vec![point(1, 2), 1.into()]))
        .await
        .unwrap();
    let Value::Map(fields) = reply.to_value() else {
        panic!("not a map: {reply:?}")
    };
    let names: Vec<_> = fields.iter().map(|(k, _)| k.as_str().unwrap()).collect();
    assert_eq!(names, ["x", "y"]);
}

#[tokio::test]
async fn notifications_reach_the_handler_and_reply_nothing() {
    let calc = Arc::new(Calc::default());
    let server = CalculatorServer::from_arc(calc.clone());
    let reply = server
        .call(request("record", vec!["hello".into()]))
        .await
        .unwrap();
    assert_eq!(reply, Reply::none());
    assert_eq!(*calc.lines.lock().unwrap(), ["hello"]);
}

#[tokio::test]
async fn blocking_methods_run_off_the_async_threads() {
    // On a current-thread runtime the test's own thread is the only async one.
    let got = call(&server(), "whereami", vec![]).await.unwrap();
    let expected_deadline = Value::from(false);
    let Value::Array(fields) = got else {
        panic!("not an array: {got}")
    };
    let [thread, deadline] = &fields[..] else {
        panic!("not a pair: {fields:?}")
    };
    assert_ne!(thread.as_str(), Some(thread_label().as_str()));
    assert_eq!(*deadline, expected_deadline);
}

#[tokio::test]
async fn the_context_is_the_request_context() {
    let mut req = request("whoami", vec![]);
    req.ctx
        .set_deadline(Some(tokio::time::Instant::now() + Duration::from_secs(60)));
    let reply = server().call(req).await.unwrap();
    assert_eq!(reply.to_value(), Value::from("a caller with a deadline"));
}

#[test]
fn methods_list_wire_names_signatures_and_flags() {
    let info = |name, params, returns, notify, blocking, idempotent| MethodInfo {
        name,
        params,
        returns,
        notify,
        blocking,
        idempotent,
    };
    let expected = [
        info(
            "add",
            &[("a", "i64"), ("b", "i64")][..],
            "i64",
            false,
            false,
            false,
        ),
        info(
            "div",
            &[("a", "i64"), ("b", "i64")],
            "Result<i64, CalcError>",
            false,
            false,
            false,
        ),
        info("record", &[("line", "String")], "()", true, false, false),
        info("crunch", &[("n", "u64")], "u64", false, true, false),
        info("whereami", &[], "(String, bool)", false, true, false),
        info(
            "get",
            &[("key", "String")],
            "Option<String>",
            false,
            false,
            true,
        ),
        info("whoami", &[], "String", false, false, false),
        info(
            "shift",
            &[("p", "Point"), ("dx", "i32")],
            "Point",
            false,
            false,
            false,
        ),
        info("calc.version", &[], "String", false, false, true),
        info("reset", &[], "()", false, false, false),
    ];
    let server = server();
    assert_eq!(server.service_name(), "Calculator");
    assert_eq!(server.methods(), expected);
}

#[test]
fn the_client_has_one_typed_method_per_call() {
    // Only compiled: the futures must be `Send` and the types must line up.
    async fn calls(c: CalculatorClient) -> Result<(), shoal::Error> {
        let c = c
            .with_timeout(Duration::from_secs(1))
            .with_key("tenant-1")
            .with_key(7u64);
        let _: &shoal::Client = c.client();
        let _: i64 = c.add(1, 2).await?;
        let _: i64 = c.div(1, 2).await?;
        let (): () = c.record("line".to_owned()).await?;
        let _: u64 = c.crunch(10).await?;
        let _: (String, bool) = c.whereami().await?;
        let _: Option<String> = c.get("pi".to_owned()).await?;
        let _: String = c.whoami().await?;
        let _: Point = c.shift(Point { x: 1, y: 2 }, 3).await?;
        let _: String = c.version().await?;
        let (): () = c.reset().await?;
        Ok(())
    }
    fn is_send<F: Future + Send>(_: impl FnOnce(CalculatorClient) -> F) {}
    is_send(calls);
}

mod renamed {
    //! The macro used where the facade is reachable under another path.

    pub mod facade {
        pub use shoal::rpc;
    }

    #[shoal::service(crate = "crate::renamed::facade")]
    pub trait Echo {
        async fn echo(&self, text: String) -> String;
    }

    pub struct Parrot;

    impl Echo for Parrot {
        async fn echo(&self, text: String) -> String {
            text
        }
    }
}

#[tokio::test]
async fn the_facade_path_can_be_named() {
    let server = renamed::EchoServer::new(renamed::Parrot);
    assert_eq!(
        call(&server, "echo", vec!["hi".into()]).await,
        Ok("hi".into())
    );
}

/// The frames of [`calls_read_in_place_answer_as_requests_do`]: every kind of call, well
/// formed or not, plain or written in unusual ways. Requests have msgids 1 and up.
fn frames() -> Vec<u8> {
    let msg = |v: Value| rmp_serde::to_vec(&v).unwrap();
    let call = |id: i64, method: &str, params: Vec<Value>| {
        msg(Value::Array(vec![
            0.into(),
            id.into(),
            method.into(),
            Value::Array(params),
        ]))
    };
    let with_ext = |id: i64, method: &str, ext: Value| {
        msg(Value::Array(vec![
            0.into(),
            id.into(),
            method.into(),
            Value::Array(vec![]),
            ext,
        ]))
    };
    let deadline = |ms: u64| Value::Map(vec![("deadline_ms".into(), ms.into())]);
    let mut out = [
        call(1, "add", vec![2.into(), 3.into()]),
        call(2, "add", vec![1.into(), "two".into()]),
        call(3, "add", vec![1.into()]),
        call(4, "add", vec![1.into(); 3]),
        call(5, "shift", vec![point(1, 2), 10.into()]),
        call(6, "get", vec!["pi".into()]),
        call(7, "crunch", vec![10.into()]),
        call(8, "nope", vec![]),
        call(9, "shoal.ping", vec![]),
        call(10, "div", vec![1.into(), 0.into()]),
        call(11, "calc.version", vec![]),
        with_ext(12, "whoami", deadline(60_000)),
        with_ext(
            13,
            "whoami",
            Value::Map(vec![
                ("other".into(), 1.into()),
                ("deadline_ms".into(), 5.into()),
            ]),
        ),
        msg(Value::Array(vec![
            2.into(),
            "record".into(),
            Value::Array(vec!["line".into()]),
        ])),
        msg(Value::Array(vec![
            2.into(),
            "record".into(),
            Value::Array(vec![]),
        ])),
        // A one-way method called with a msgid runs and answers nil.
        call(19, "record", vec!["called".into()]),
        msg(Value::Array(vec![
            0.into(),
            14.into(),
            "add".into(),
            7.into(),
        ])),
        msg(Value::Array(vec![
            0.into(),
            Value::F64(15.0),
            "add".into(),
            Value::Array(vec![4.into(), 5.into()]),
        ])),
    ]
    .concat();
    // A string argument that is not UTF-8, a `bin` method name, a long array header, and
    // params under a long array header.
    out.extend([
        0x94, 0x00, 0x10, 0xa3, b'g', b'e', b't', 0x91, 0xa2, b'h', 0xff,
    ]);
    out.extend([
        0x94, 0x00, 0x11, 0xc4, 0x03, b'a', b'd', b'd', 0x92, 0x01, 0x02,
    ]);
    out.extend([
        0xdc, 0x00, 0x04, 0x00, 0x12, 0xa3, b'a', b'd', b'd', 0x92, 0x03, 0x04,
    ]);
    out.extend([
        0x94, 0x00, 0x14, 0xa3, b'a', b'd', b'd', 0xdc, 0x00, 0x02, 0x05, 0x06,
    ]);
    // A run longer than the reader takes in place in one go.
    for id in 21..=30 {
        out.extend(call(id, "add", vec![id.into(), 1.into()]));
    }
    out
}

/// Sends every frame in one write to a server at `addr`, and returns the answers by msgid
/// once the 30 requests are answered.
async fn answers(addr: &shoal::rpc::Addr) -> HashMap<String, Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr.to_string())
        .await
        .unwrap();
    conn.write_all(&frames()).await.unwrap();
    let (mut buf, mut got) = (Vec::new(), HashMap::new());
    while got.len() < 30 {
        let mut rd = &buf[..];
        match rmp_serde::from_read::<_, Value>(&mut rd) {
            Ok(Value::Array(reply)) => {
                got.insert(reply[1].to_string(), Value::Array(reply[2..].to_vec()));
                buf.drain(..buf.len() - rd.len());
            }
            Ok(other) => panic!("not a reply: {other}"),
            Err(_) => {
                let n = conn.read_buf(&mut buf).await.unwrap();
                assert!(n > 0, "closed after {} answers: {got:?}", got.len());
            }
        }
    }
    got
}

/// A server without middleware hands its calls to the generated code as the bytes were read
/// (`Dispatch::call_in_place`); behind a layer they come as `Request`s. Both answer the same
/// every call, well formed or not, and every notification is handled alike.
#[tokio::test]
async fn calls_read_in_place_answer_as_requests_do() {
    let mut seen = Vec::new();
    for layered in [false, true] {
        let calc = Arc::new(Calc::default());
        let mut builder =
            shoal::Server::builder().service(CalculatorServer::from_arc(calc.clone()));
        if layered {
            builder = builder.layer(tower::layer::util::Identity::new());
        }
        let server = builder.build().unwrap();
        let listener = shoal::rpc::Listener::bind(&"127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let got = answers(&addr).await;
        let _ = stop.send(());
        serving.await.unwrap();
        seen.push((got, calc.lines.lock().unwrap().clone()));
    }
    assert!(server().takes_calls_in_place());
    let [(in_place, lines), (requests, layered_lines)] = &seen[..] else {
        unreachable!()
    };
    assert_eq!(in_place, requests);
    assert_eq!(lines, layered_lines);
    assert_eq!(*lines, ["line", "called"]);
    let ok = |v: Value| Value::Array(vec![Value::Nil, v]);
    assert_eq!(in_place["1"], ok(5.into()));
    assert_eq!(in_place["5"], ok(point(11, 2)));
    assert_eq!(in_place["7"], ok(55.into()));
    assert_eq!(in_place["12"], ok("a caller with a deadline".into()));
    assert_eq!(in_place["15"], ok(9.into()));
    assert_eq!(in_place["16"], ok(Value::Nil));
    assert_eq!(in_place["17"], ok(3.into()));
    assert_eq!(in_place["18"], ok(7.into()));
    assert_eq!(in_place["19"], ok(Value::Nil));
    assert_eq!(in_place["20"], ok(11.into()));
    for id in 21..=30 {
        assert_eq!(in_place[&id.to_string()], ok((id + 1).into()));
    }
    let error = |id: &str| in_place[id].as_array().unwrap()[0]["message"].to_string();
    assert_eq!(
        error("3"),
        "\"add: missing argument 1 `b` (only a trailing Option argument may be left out)\""
    );
    assert_eq!(error("4"), "\"add takes 2 argument(s), got 3\"");
    assert_eq!(error("8"), "\"method not found: nope\"");
}
