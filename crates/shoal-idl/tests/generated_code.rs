//! The generated Rust compiles and works: `generated/echo.rs` is what the generator writes for
//! pysvrkit's echo example (tests/parse.rs checks that it still is), served here and called
//! through the generated client and as a plain MessagePack map, as a Python client sends it.

// Kept byte for byte as generated.
#[rustfmt::skip]
#[path = "generated/echo.rs"]
mod echo;

use echo::{Echo, EchoClient, EchoServer, Echomsg};
use shoal::rpc::Listener;
use shoal::{Addr, Client, RpcError, Server, Value};

struct Echoer;

impl Echo for Echoer {
    async fn echo(&self, msg: Echomsg) -> Result<Value, RpcError> {
        Ok(Value::from(msg.value))
    }
}

#[tokio::test]
async fn the_generated_service_serves_and_its_client_calls() {
    let server = Server::builder()
        .service(EchoServer::new(Echoer))
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

    let client = Client::connect(&addr).await.unwrap();
    let typed = EchoClient::new(client.clone());
    let msg = Echomsg {
        value: "hello".into(),
    };
    assert_eq!(typed.echo(msg).await.unwrap(), Value::from("hello"));

    // What a pysvrkit client sends: the proto as a map of its fields.
    let map = Value::Map(vec![(Value::from("value"), Value::from("from python"))]);
    let answer: Value = client.call("echo", &(map,)).await.unwrap();
    assert_eq!(answer, Value::from("from python"));

    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}
