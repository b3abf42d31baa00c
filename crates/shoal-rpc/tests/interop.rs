//! Interop with third-party MessagePack-RPC implementations over loopback: Python's
//! aio-msgpack-rpc and msgpack-rpc-python as clients of a shoal server and as servers for a
//! shoal client, and Neovim as a server that calls the client back. Each test prints a
//! `skipped:` line and passes when its peer is not installed, unless `SHOAL_REQUIRE_TOOLS=1`
//! (set by `.ci/run`, which installs them all) makes that a failure.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value as Json};
use shoal_rpc::{
    Addr, Args, BoxReply, Client, Dispatch, Error, MethodInfo, RemoteError, Reply, Request,
    RpcError, Value,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use common::{serve_tcp, server, skip, Probe};

/// Longest any peer process or call may take before the test fails.
const T: Duration = Duration::from_secs(30);
const NOTIFICATIONS: i64 = 300;

/// The venv `.ci/run` makes with `aio-msgpack-rpc` and `msgpack`.
const AIO: Peer = Peer {
    var: "SHOAL_TEST_PYTHON",
    module: "aio_msgpack_rpc",
};
/// The venv `.ci/run` makes with `msgpack-rpc-python` (which pins msgpack 0.5 and tornado 4).
const MPRPC: Peer = Peer {
    var: "SHOAL_TEST_PYTHON_MPRPC",
    module: "msgpackrpc",
};

#[tokio::test]
async fn aio_client_calls_shoal_server() {
    let Some(python) = AIO.python().await else {
        return;
    };
    let checks = client_calls_shoal_server(&python, "aio_client.py", 13, 200).await;
    // Requests numbered from 2^32 - 5 on, past the wrap back to 0, all answered by the ids
    // they carried.
    let high = checks.one("high_msgid");
    assert_eq!(high["ok"], true, "{high}");
    assert_eq!(high["next_id"], 4, "{high}");
}

#[tokio::test]
async fn mprpc_client_calls_shoal_server() {
    let Some(python) = MPRPC.python().await else {
        return;
    };
    let checks = client_calls_shoal_server(&python, "mprpc_client.py", 10, 100).await;
    // This peer sends bytes as a raw `str` holding invalid UTF-8 (the spec before `bin`).
    // The call must be answered, not fail to decode. The bytes do not come back intact:
    // `Args::next` turns bad UTF-8 into U+FFFD even when the argument is read as a `Value`.
    checks.one("raw_bytes");
}

#[tokio::test]
async fn shoal_client_calls_aio_server() {
    let Some(python) = AIO.python().await else {
        return;
    };
    let server = PeerServer::start(&python, "aio_server.py").await;
    let client = plain_client(&server.addr).await;
    calls_foreign_server(&client, "boom from aio").await;
    // aio-msgpack-rpc speaks the current spec, so bytes come back as `bin`.
    assert_eq!(
        echo(&client, Value::Binary(vec![0, 0xff, 7])).await,
        Value::Binary(vec![0, 0xff, 7])
    );
}

#[tokio::test]
async fn shoal_client_calls_mprpc_server() {
    let Some(python) = MPRPC.python().await else {
        return;
    };
    let server = PeerServer::start(&python, "mprpc_server.py").await;
    let client = plain_client(&server.addr).await;
    calls_foreign_server(&client, "boom from msgpack-rpc-python").await;
    // This peer has no `bin` type: bytes come back as a raw `str` with invalid UTF-8, which
    // the client reads as bytes rather than failing.
    let got = echo(&client, Value::Binary(vec![0, 0xff, 7])).await;
    let bytes = match &got {
        Value::Binary(b) => b.clone(),
        Value::String(s) => s.as_bytes().to_vec(),
        other => panic!("bytes came back as {other:?}"),
    };
    assert_eq!(bytes, [0, 0xff, 7]);
}

#[tokio::test]
async fn shoal_client_calls_neovim_and_serves_its_requests() {
    if !on_path("nvim") {
        skip("nvim not installed (apt-get install neovim; .ci/run does)");
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new("nvim");
    command.args(["--headless", "--clean", "--listen", &addr]);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut nvim = Reaper::spawn(command);
    nvim.wait_listening(&addr).await;

    let probe = Arc::new(CallbackProbe::default());
    let client = Client::builder()
        .endpoint(addr.parse().unwrap())
        .timeout(T)
        .serve(vec![Arc::new(Callbacks(probe.clone()))])
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Neovim answers `shoal.hello` with "Invalid method": the connection stays plain.
    assert!(!client.peer().await.unwrap().is_extended());

    let (channel, api): (u64, Value) = client.call("nvim_get_api_info", &[(); 0]).await.unwrap();
    assert!(channel > 0);
    let functions = api["functions"]
        .as_array()
        .expect("api info lists functions");
    assert!(functions
        .iter()
        .any(|f| f["name"].as_str() == Some("nvim_eval")));

    let three: i64 = client.call("nvim_eval", &("1+2",)).await.unwrap();
    assert_eq!(three, 3);

    // Neovim's errors are `[kind, message]` pairs.
    let err = remote_error(client.call::<_, Value>("nvim_eval", &("1+",)).await);
    assert!(err.message.contains("E15: Invalid expression"), "{err:?}");
    assert!(
        matches!(&err.raw, Value::Array(items) if items.len() == 2),
        "{err:?}"
    );

    // While the client waits for `nvim_exec_lua`, Neovim calls the client's own handler on
    // the same connection and returns its answer.
    let lua = "return vim.rpcrequest(..., 'shoal_cb', 21)";
    let got: Value = client
        .call("nvim_exec_lua", &(lua, [channel]))
        .await
        .unwrap();
    assert_eq!(got, Value::Array(vec!["from shoal".into(), 42.into()]));
    assert_eq!(*probe.calls.lock().unwrap(), vec![Value::from(21)]);

    // A handler's error reaches Lua as an error of `vim.rpcrequest`. Neovim reads only string
    // and `[kind, message]` errors; shoal's `{code, message, data}` map shows as "unknown
    // error" there, so only the failure itself is asserted.
    let lua = "local ok, err = pcall(vim.rpcrequest, ..., 'shoal_fail')
               return {ok, vim.inspect(err)}";
    let got: (bool, String) = client
        .call("nvim_exec_lua", &(lua, [channel]))
        .await
        .unwrap();
    assert!(!got.0, "{got:?}");

    let lua = "vim.rpcnotify(..., 'shoal_note', 'from nvim') return 0";
    let _: Value = client
        .call("nvim_exec_lua", &(lua, [channel]))
        .await
        .unwrap();
    probe.wait_note().await;
    assert_eq!(*probe.notes.lock().unwrap(), vec![Value::from("from nvim")]);
}

/// Runs a third-party client script against a shoal server serving `TestService` and checks
/// what it reports: values round-trip with their types, notifications run in order,
/// pipelined calls all come back, errors arrive as shoal's error objects.
async fn client_calls_shoal_server(
    python: &Path,
    script: &str,
    echoes: usize,
    pipelined: u64,
) -> Checks {
    let probe = Arc::new(Probe::default());
    let (addr, stop, task) = serve_tcp(server(&probe).build().unwrap()).await;
    let checks = Checks(
        run_script(
            python,
            script,
            &[addr.to_string(), NOTIFICATIONS.to_string()],
        )
        .await,
    );

    let echoed = checks.all("echo");
    assert_eq!(echoed.len(), echoes, "{checks:?}");
    echoed.iter().for_each(|c| assert_eq!(c["ok"], true, "{c}"));
    assert_eq!(checks.one("after_notifications")["ok"], true);
    let records = tokio::time::timeout(T, async {
        loop {
            if probe.records.lock().unwrap().len() >= NOTIFICATIONS as usize {
                return probe.records.lock().unwrap().clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every notification reaches the handler");
    assert_eq!(records, (0..NOTIFICATIONS).collect::<Vec<_>>());

    let pipe = checks.one("pipelined");
    assert_eq!(
        (pipe["count"].as_u64(), &pipe["ok"]),
        (Some(pipelined), &json!(true)),
        "{pipe}"
    );

    let fail = checks.error("fail");
    assert_eq!(
        *fail,
        json!({"code": 1001, "message": "failed on purpose", "data": "why"})
    );
    let missing = checks.error("no_such_method");
    assert_eq!(missing["code"], 1, "{missing}");
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("no_such_method"),
        "{missing}"
    );

    assert_eq!(checks.one("done")["ok"], true);
    stop.cancel();
    task.await.unwrap();
    checks
}

/// Calls a third-party server that knows nothing of shoal's extensions.
async fn calls_foreign_server(client: &Client, boom: &str) {
    assert!(
        !client.peer().await.unwrap().is_extended(),
        "the peer never agreed to extensions"
    );

    for v in [
        Value::from("héllo"),
        Value::from(""),
        Value::from(-7),
        Value::from(u64::MAX),
        Value::F64(1.5),
        Value::Nil,
        Value::Boolean(true),
        Value::Array(vec![1.into(), "two".into(), Value::Array(vec![Value::Nil])]),
        Value::Map(vec![("k".into(), Value::Array(vec![1.into(), 2.into()]))]),
    ] {
        assert_eq!(echo(client, v.clone()).await, v);
    }

    // Replies leave out of order: "b" is answered while "a" still sleeps.
    let order = Mutex::new(Vec::new());
    let slow = |ms: u64, tag: &'static str| {
        let order = &order;
        async move {
            let got: String = client.call("slow", &(ms, tag)).await.unwrap();
            order.lock().unwrap().push(got);
        }
    };
    tokio::join!(slow(1000, "a"), slow(0, "b"));
    assert_eq!(*order.lock().unwrap(), ["b", "a"]);

    // Foreign errors are strings: a remote error without a code, never a decode failure.
    let err = remote_error(client.call::<_, Value>("boom", &[(); 0]).await);
    assert_eq!(err.code, None, "{err:?}");
    assert!(err.message.contains(boom), "{err:?}");
    let err = remote_error(client.call::<_, Value>("no_such_method", &[(); 0]).await);
    assert!(err.message.contains("no_such_method"), "{err:?}");

    for i in 0..NOTIFICATIONS {
        client.notify("note", &(i,)).await.unwrap();
    }
    let seen: Vec<i64> = client.call("notes_seen", &[(); 0]).await.unwrap();
    assert_eq!(seen, (0..NOTIFICATIONS).collect::<Vec<_>>());
}

async fn echo(client: &Client, v: Value) -> Value {
    client.call("echo", &(v,)).await.unwrap()
}

fn remote_error(r: Result<Value, Error>) -> RemoteError {
    match r {
        Err(Error::Remote(e)) => *e,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

async fn plain_client(addr: &Addr) -> Client {
    Client::builder()
        .endpoint(addr.clone())
        .timeout(T)
        .connect()
        .await
        .unwrap()
}

/// A Python library a test needs, and the variable naming the interpreter that has it.
struct Peer {
    var: &'static str,
    module: &'static str,
}

impl Peer {
    /// The interpreter, or `None` after printing why the test is skipped.
    async fn python(&self) -> Option<PathBuf> {
        let Some(exe) = std::env::var_os(self.var) else {
            self.skip(&format!("{} is not set", self.var));
            return None;
        };
        let exe = PathBuf::from(exe);
        let mut command = Command::new(&exe);
        command.args(["-c", &format!("import {}", self.module)]);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = tokio::task::spawn_blocking(move || command.status())
            .await
            .unwrap();
        match status {
            Ok(s) if s.success() => Some(exe),
            Ok(s) => {
                self.skip(&format!(
                    "`import {}` failed in {} ({s})",
                    self.module,
                    exe.display()
                ));
                None
            }
            Err(e) => {
                self.skip(&format!("cannot run {}: {e}", exe.display()));
                None
            }
        }
    }

    fn skip(&self, why: &str) {
        skip(&format!(
            "{} interop: {why} (set {}, see .ci/run)",
            self.module, self.var
        ));
    }
}

/// JSON lines a peer script printed, one `{"check": NAME, ...}` each.
#[derive(Debug)]
struct Checks(Vec<Json>);

impl Checks {
    fn all(&self, name: &str) -> Vec<&Json> {
        self.0.iter().filter(|c| c["check"] == name).collect()
    }

    fn one(&self, name: &str) -> &Json {
        match self.all(name)[..] {
            [c] => c,
            _ => panic!("expected one {name:?} check in {self:?}"),
        }
    }

    /// The error object the script received when calling `method`.
    fn error(&self, method: &str) -> &Json {
        let c = self
            .all("error")
            .into_iter()
            .find(|c| c["method"] == method)
            .unwrap_or_else(|| panic!("no error check for {method} in {self:?}"));
        assert_eq!(c["raised"], true, "{c}");
        &c["payload"]
    }
}

fn script_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// Runs a client script to its end and returns the JSON lines it printed; kills it after `T`.
async fn run_script(python: &Path, script: &str, args: &[String]) -> Vec<Json> {
    let mut command = Command::new(python);
    command.arg(script_path(script)).args(args);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Reaper::spawn(command);
    let mut stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    // Pipes are read off the executor; killing the child ends the reads.
    let read = tokio::task::spawn_blocking(move || {
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        (out, errors.join().unwrap_or_default())
    });
    let (out, errors) = tokio::time::timeout(T, read)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {T:?}"))
        .unwrap();
    let status = child.exit_status().await;
    assert!(
        status.success(),
        "{script} failed: {status}\nstdout:\n{out}\nstderr:\n{errors}"
    );
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{script} printed {l:?}: {e}")))
        .collect()
}

/// A peer server script, started on an ephemeral loopback port.
struct PeerServer {
    addr: Addr,
    /// Killed on drop; the script also exits when its stdin (held here) closes.
    _process: Reaper,
}

impl PeerServer {
    async fn start(python: &Path, script: &str) -> PeerServer {
        let mut command = Command::new(python);
        command.arg(script_path(script));
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut process = Reaper::spawn(command);
        let stdout = process.0.stdout.take().unwrap();
        let read = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = tokio::time::timeout(T, read)
            .await
            .unwrap_or_else(|_| panic!("{script} printed no port within {T:?}"))
            .unwrap()
            .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{script} printed {line:?}"));
        PeerServer {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            _process: process,
        }
    }
}

/// A child process that is killed and reaped however the test ends.
struct Reaper(Child);

impl Reaper {
    fn spawn(mut command: Command) -> Reaper {
        let program = command.get_program().to_owned();
        Reaper(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {program:?}: {e}")),
        )
    }

    async fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + T;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "child did not exit within {T:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until something accepts connections on `addr`, failing if the child exits first.
    async fn wait_listening(&mut self, addr: &str) {
        let deadline = Instant::now() + T;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            if let Some(status) = self.0.try_wait().unwrap() {
                panic!("exited with {status} before listening on {addr}");
            }
            assert!(
                Instant::now() < deadline,
                "nothing listened on {addr} within {T:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A port nothing listens on right now (bound and released; another process could take it,
/// which on a test machine does not happen in practice).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// What Neovim's calls into the client did.
#[derive(Default)]
struct CallbackProbe {
    calls: Mutex<Vec<Value>>,
    notes: Mutex<Vec<Value>>,
    noted: Notify,
}

impl CallbackProbe {
    async fn wait_note(&self) {
        tokio::time::timeout(T, async {
            loop {
                let noted = self.noted.notified();
                if !self.notes.lock().unwrap().is_empty() {
                    return;
                }
                noted.await;
            }
        })
        .await
        .expect("the notification from nvim never arrived");
    }
}

/// The service the client serves to Neovim.
struct Callbacks(Arc<CallbackProbe>);

const CALLBACK_METHODS: &[MethodInfo] = &[
    method("shoal_cb", false),
    method("shoal_fail", false),
    method("shoal_note", true),
];

const fn method(name: &'static str, notify: bool) -> MethodInfo {
    MethodInfo {
        name,
        params: &[],
        returns: "Value",
        notify,
        blocking: false,
        idempotent: false,
    }
}

impl Dispatch for Callbacks {
    fn service_name(&self) -> &'static str {
        "Callbacks"
    }

    fn methods(&self) -> &'static [MethodInfo] {
        CALLBACK_METHODS
    }

    fn call(&self, req: Request) -> BoxReply {
        let probe = self.0.clone();
        Box::pin(async move {
            match req.method.as_str() {
                "shoal_cb" => {
                    let x: i64 = Args::new("shoal_cb", req.params, 1)?.next("x")?;
                    probe.calls.lock().unwrap().push(Value::from(x));
                    Reply::encode(&("from shoal", x * 2))
                }
                "shoal_fail" => Err(RpcError::new(1002, "failed in shoal")),
                "shoal_note" => {
                    let v: Value = Args::new("shoal_note", req.params, 1)?.next("v")?;
                    probe.notes.lock().unwrap().push(v);
                    probe.noted.notify_one();
                    Ok(Reply::none())
                }
                other => Err(RpcError::method_not_found(other)),
            }
        })
    }
}
