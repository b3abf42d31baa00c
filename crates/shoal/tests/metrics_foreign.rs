//! A process whose `metrics` recorder was installed before shoal's (its own test binary, as
//! the recorder is global): the application still starts and serves, and `shoal.metrics` and
//! the exporter say the values went elsewhere instead of showing an empty registry.

mod common;

use std::time::Duration;

use common::{config_args, no_env, Scratch};
use shoal::{codes, App, Client, Exit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn another_recorder_installed_first_is_reported_not_hidden() {
    metrics::set_global_recorder(metrics::NoopRecorder).unwrap();
    let dir = Scratch::new("metrics-foreign");
    let file = dir.write(
        "app.toml",
        "[rpc]\nlisten = \"127.0.0.1:0\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let running = App::new("foreign", "1.0.0")
        .args(config_args(&file), no_env())
        .start()
        .await
        .unwrap();
    assert!(shoal::metrics::install().is_none());
    assert!(shoal::metrics::global().is_none());

    let client = Client::connect(&running.rpc_addr().unwrap().to_string())
        .await
        .unwrap();
    match client.call::<_, shoal::Value>("shoal.metrics", &()).await {
        Err(shoal::Error::Remote(e)) => {
            assert_eq!(e.code, Some(codes::INTERNAL));
            assert!(e.message.contains("another metrics recorder"), "{e:?}");
        }
        other => panic!("expected an error, got {other:?}"),
    }

    let mut stream = TcpStream::connect(running.metrics_addr().unwrap())
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(LIMIT, stream.read_to_string(&mut answer))
        .await
        .expect("the exporter answers")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("another metrics recorder"), "{answer}");

    running.handle().close();
    assert_eq!(running.wait().await, Exit::Closed);
}
