//! `shoal call ADDR METHOD [ARG...]`: each argument is JSON; the result (or the error) is
//! printed as JSON.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use shoal::rpc::{CallOptions, Client, Error};
use shoal::Value;

use crate::out::outln;

#[derive(Args, Debug)]
pub struct CallArgs {
    /// Server address: host:port or unix:PATH.
    addr: String,
    /// Method name.
    method: String,
    /// Arguments, each one JSON: 1, "text", [1,2], {"k":"v"}.
    args: Vec<String>,
    /// How long to wait for the answer (500ms, 3s, 1m).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Send a one-way notification; nothing is printed.
    #[arg(long)]
    notify: bool,
}

pub fn run(args: CallArgs) -> anyhow::Result<ExitCode> {
    let params = parse_args(&args.args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(call(&args, &params))
}

/// Connects, calls (or notifies) and prints the answer. `--timeout` bounds all of it:
/// connecting and the hello come out of it, and the call has what is left.
async fn call(args: &CallArgs, params: &[Value]) -> anyhow::Result<ExitCode> {
    let deadline = tokio::time::Instant::now() + args.timeout;
    let client = match Client::builder()
        .endpoint(args.addr.parse()?)
        .timeout(args.timeout)
        .retries(0)
        .connect()
        .await
    {
        Ok(client) => client,
        // The server may accept and then never answer the hello.
        Err(Error::DeadlineExceeded(_)) => return Err(deadline_exceeded(args)),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("connect to {} within {:?}", args.addr, args.timeout))
        }
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if args.notify {
        client.notify(&args.method, params).await?;
        // Notifications have no reply: wait until the bytes are out.
        let opts = CallOptions {
            timeout: Some(left),
            ..Default::default()
        };
        client
            .call_with::<_, Value>(&opts, "shoal.ping", &[(); 0])
            .await
            .ok();
        return Ok(ExitCode::SUCCESS);
    }
    let opts = CallOptions {
        timeout: Some(left),
        ..Default::default()
    };
    match client.call_value(&opts, &args.method, params).await {
        Ok(v) => {
            outln!("{}", to_json(&v))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(Error::Remote(e)) => {
            // The call failed whoever reads: an output closed meanwhile does not make its
            // status 0.
            match outln!("{}", serde_json::json!({ "error": to_json(&e.raw) })) {
                Err(e) if !crate::out::is_closed(&e) => Err(e),
                _ => Ok(ExitCode::from(1)),
            }
        }
        Err(Error::DeadlineExceeded(_)) => Err(deadline_exceeded(args)),
        Err(e) => Err(e).with_context(|| format!("call {} on {}", args.method, args.addr)),
    }
}

/// Connecting and the hello may have spent most of the time, or all of it: the error names
/// the whole deadline the caller gave, not what was left of it for the call.
fn deadline_exceeded(args: &CallArgs) -> anyhow::Error {
    anyhow::anyhow!(
        "call {} on {}: deadline exceeded: no answer within --timeout {}",
        args.method,
        args.addr,
        humantime::format_duration(args.timeout)
    )
}

/// Reads each argument as JSON, naming the one at fault.
fn parse_args(args: &[String]) -> anyhow::Result<Vec<Value>> {
    args.iter()
        .enumerate()
        .map(|(i, text)| {
            let json: serde_json::Value = match serde_json::from_str(text) {
                Ok(j) => j,
                Err(e) => bail!(
                    "argument {} ({text}) is not JSON: {e}; quote strings like '\"{text}\"'",
                    i + 1
                ),
            };
            shoal::rpc::Value::deserialize_json(json)
        })
        .collect()
}

/// Converts between JSON and MessagePack values for the command line.
trait JsonValue: Sized {
    fn deserialize_json(json: serde_json::Value) -> anyhow::Result<Self>;
}

impl JsonValue for Value {
    fn deserialize_json(json: serde_json::Value) -> anyhow::Result<Self> {
        Ok(match json {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Boolean(b),
            serde_json::Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Value::from(u)
                } else if let Some(i) = n.as_i64() {
                    Value::from(i)
                } else {
                    Value::F64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Value::from(s),
            serde_json::Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(Value::deserialize_json)
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => Value::Map(
                map.into_iter()
                    .map(|(k, v)| Ok((Value::from(k), Value::deserialize_json(v)?)))
                    .collect::<anyhow::Result<_>>()?,
            ),
        })
    }
}

/// MessagePack as JSON: binary as an array of bytes, non-string map keys as their text.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => J::from(u),
            (_, Some(s)) => J::from(s),
            _ => J::Null,
        },
        Value::F32(f) => J::from(*f as f64),
        Value::F64(f) => J::from(*f),
        Value::String(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(tag, data) => serde_json::json!({ "ext": tag, "data": data }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_json_and_bad_ones_are_named() {
        let args: Vec<String> = ["1", "\"a\"", "[1,-2]", "{\"k\":null}", "1.5"]
            .map(String::from)
            .into();
        let v = parse_args(&args).unwrap();
        assert_eq!(v[0], Value::from(1));
        assert_eq!(v[1], Value::from("a"));
        assert_eq!(v[2], Value::Array(vec![1.into(), (-2).into()]));
        assert_eq!(v[3], Value::Map(vec![("k".into(), Value::Nil)]));
        assert_eq!(v[4], Value::F64(1.5));
        let err = parse_args(&["1".into(), "hello".into()])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("argument 2 (hello) is not JSON"), "{err}");
        assert!(err.contains("'\"hello\"'"), "{err}");
    }

    /// Against a server that accepts and never answers, not even `shoal.hello`, the command
    /// gives up after `--timeout` in all (before, the hello's wait came first and the call
    /// had the whole timeout again: 1 s took 2 s). The clock is paused, so `elapsed` counts
    /// only the timers that fired.
    #[tokio::test(start_paused = true)]
    async fn the_timeout_bounds_the_whole_command() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mute = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let args = CallArgs {
            addr,
            method: "echo".into(),
            args: vec![],
            timeout: Duration::from_secs(1),
            notify: false,
        };
        let start = tokio::time::Instant::now();
        let err = call(&args, &[Value::from(1)]).await.unwrap_err();
        assert!(
            start.elapsed() <= args.timeout,
            "took {:?}: {err:#}",
            start.elapsed()
        );
        assert!(format!("{err:#}").contains("deadline"), "{err:#}");
        mute.abort();
    }

    #[test]
    fn values_print_as_json() {
        let v = Value::Map(vec![
            (
                "a".into(),
                Value::Array(vec![Value::Binary(vec![1, 2]), Value::Nil]),
            ),
            (Value::from(3), Value::F64(0.5)),
        ]);
        assert_eq!(to_json(&v).to_string(), r#"{"3":0.5,"a":[[1,2],null]}"#);
    }
}
