//! The generated Rust compiles and works: `generated/echo.rs` is what the generator writes for
//! pysvrkit's echo example (tests/parse.rs checks that it still is), served here and called
//! through the generated client, from an endpoint file balanced as the IDL says, and as a
//! plain MessagePack map, as a Python client sends it.

// Kept byte for byte as generated.
#[rustfmt::skip]
#[path = "generated/echo.rs"]
mod echo;

use echo::{Echo, EchoClient, EchoServer, EchoWorkers, Echomsg};
use shoal::rpc::Listener;
use shoal::{Addr, BoxError, Client, RpcError, Server, Value, Worker};

/// Answers `ID:VALUE`, so a caller sees which server answered.
struct Echoer {
    id: &'static str,
}

impl Echo for Echoer {
    fn echo(&self, msg: Echomsg) -> Result<Value, RpcError> {
        Ok(Value::from(format!("{}:{}", self.id, msg.value)))
    }
}

struct Workers;

impl EchoWorkers for Workers {
    async fn event(&self, worker: Worker, _coroutine: usize) -> Result<(), BoxError> {
        worker.closing().await;
        Ok(())
    }

    async fn value(&self, worker: Worker, _coroutine: usize) -> Result<(), BoxError> {
        worker.closing().await;
        Ok(())
    }
}

/// A running echo server: its address, and a sender that stops it.
struct Running {
    addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), shoal::Error>>,
}

async fn serve(id: &'static str) -> Running {
    let server = Server::builder()
        .service(EchoServer::new(Echoer { id }))
        .build()
        .unwrap();
    let listener = Listener::bind(&"127.0.0.1:0".parse::<Addr>().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    Running {
        addr,
        stop,
        serving,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.serving.await.unwrap().unwrap();
    }
}

fn msg(value: &str) -> Echomsg {
    Echomsg {
        value: value.into(),
    }
}

#[tokio::test]
async fn the_generated_service_serves_and_its_client_calls() {
    let server = serve("a").await;
    let client = Client::connect(&server.addr).await.unwrap();
    let typed = EchoClient::new(client.clone());
    assert_eq!(
        typed.echo(msg("hello")).await.unwrap(),
        Value::from("a:hello")
    );

    // What a pysvrkit client sends: the proto as a map of its fields.
    let map = Value::Map(vec![(Value::from("value"), Value::from("from python"))]);
    let answer: Value = client.call("echo", &(map,)).await.unwrap();
    assert_eq!(answer, Value::from("a:from python"));

    // The worker groups' trait and their declaration compile against the SDK.
    let _declare: fn(&mut shoal::Setup, Workers) = echo::declare_workers;
    server.stop().await;
}

/// The ids of the servers that answered `calls` calls.
async fn servers_answering(
    client: &EchoClient,
    calls: usize,
) -> std::collections::BTreeSet<String> {
    let mut answered = std::collections::BTreeSet::new();
    for i in 0..calls {
        let answer = client.echo(msg(&i.to_string())).await.unwrap();
        let id = answer.as_str().unwrap().split(':').next().unwrap();
        answered.insert(id.to_owned());
    }
    answered
}

#[tokio::test]
async fn the_client_from_an_endpoint_file_balances_as_the_idl_says() {
    let (a, b) = (serve("a").await, serve("b").await);
    let dir = std::env::temp_dir().join(format!("shoal-idl-endpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let endpoints = format!(
        "[[endpoint]]\naddr = \"{}\"\n\n[[endpoint]]\naddr = \"{}\"\n",
        a.addr, b.addr
    );

    // No `balance` in the file: hashring, the IDL's rpc_client.mode. A client without keys
    // is pinned to one server, as pysvrkit's were.
    let file = dir.join("clients.toml");
    std::fs::write(&file, &endpoints).unwrap();
    let client = echo::client_from_file(&file).unwrap();
    let answered = servers_answering(&client, 20).await;
    assert_eq!(answered.len(), 1, "one pinned server, got {answered:?}");

    // The file's own `balance` wins: round robin visits both.
    let file = dir.join("round_robin.toml");
    std::fs::write(&file, format!("balance = \"round_robin\"\n{endpoints}")).unwrap();
    let client = echo::client_from_file(&file).unwrap();
    let answered = servers_answering(&client, 4).await;
    assert_eq!(answered.len(), 2, "both servers, got {answered:?}");

    // A bad file names itself.
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[[endpoint]]\nadr = \"x\"\n").unwrap();
    let e = echo::client_from_file(&file).unwrap_err().to_string();
    assert!(e.contains("bad.toml:2"), "{e}");

    std::fs::remove_dir_all(&dir).unwrap();
    a.stop().await;
    b.stop().await;
}
