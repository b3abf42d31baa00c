//! `shoal demo`: starts the echo service on a free loopback port, calls it the way a user
//! would, runs a short load test against it, and stops it. No setup, nothing left behind.

use std::process::ExitCode;
use std::time::Duration;

use shoal::rpc::{Client, Listener};
use shoal::{Server, Value};
use tokio_util::sync::CancellationToken;

use crate::bench::{self, EchoClient, EchoServer, EchoService};
use crate::call::to_json;
use crate::out::outln;

pub fn run() -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = Server::builder()
            .service(EchoServer::new(EchoService))
            .build()?;
        let listener = Listener::bind(&"127.0.0.1:0".parse()?).await?;
        let addr = listener.local_addr();
        let stop = CancellationToken::new();
        let serving = tokio::spawn({
            let stop = stop.clone();
            async move { server.serve(listener, stop.cancelled_owned()).await }
        });
        outln!("echo service listening on {addr}\n")?;

        let client = Client::connect(&addr.to_string()).await?;
        let echo = EchoClient::new(client.clone());
        let methods: Vec<MethodName> = client.call("shoal.methods", &[(); 0]).await?;
        let names: Vec<_> = methods.into_iter().map(|m| m.name).collect();
        outln!("shoal.methods        -> {}", names.join(", "))?;
        let pong: String = client.call("shoal.ping", &[(); 0]).await?;
        outln!("shoal.ping           -> {pong}")?;
        let sample = Value::Map(vec![(
            "hello".into(),
            Value::Array(vec![1.into(), "two".into()]),
        )]);
        outln!(
            "echo({})  -> {}",
            to_json(&sample),
            to_json(&echo.echo(sample.clone()).await?)
        )?;
        let late = echo.clone().with_timeout(Duration::from_millis(50));
        match late.sleep_echo(500, Value::from("late")).await {
            Ok(v) => outln!("sleep_echo(500ms) -> {}", to_json(&v))?,
            Err(e) => outln!("sleep_echo(500ms) with a 50ms deadline -> {e}")?,
        }
        match client.call::<_, Value>("no_such_method", &[(); 0]).await {
            Ok(v) => outln!("no_such_method -> {}", to_json(&v))?,
            Err(e) => outln!("no_such_method -> {e}")?,
        }
        outln!("\nload: 1 second, 8 connections x 8 calls in flight")?;
        let report = bench::load(bench::RunArgs::quick(addr.to_string())).await?;
        outln!("{report}\n")?;
        outln!("try it yourself:")?;
        outln!("  target/release/shoal bench serve --listen 127.0.0.1:7400")?;
        outln!("  target/release/shoal call 127.0.0.1:7400 echo '\"hi\"'")?;
        outln!("  target/release/shoal bench run --addr 127.0.0.1:7400 --connections 50 --in-flight 16")?;
        stop.cancel();
        serving.await??;
        Ok(ExitCode::SUCCESS)
    })
}

/// The part of a `shoal.methods` entry the demo shows (the server sends more fields).
#[derive(Debug, serde::Deserialize)]
struct MethodName {
    name: String,
}
