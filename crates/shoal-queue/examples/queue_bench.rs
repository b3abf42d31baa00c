//! The load generator of `bench/queue-vs-jetstream.sh`: durable publishes of 1 KiB messages
//! (N in flight) for a time, then consume-and-ack by two subscriptions, against shoal's queue
//! (its Rust client), JetStream (async-nats) or redis Streams (RESP by hand). Prints one JSON
//! line: `{"publish_per_s", "consume_per_s", ...}`.
//!
//!   queue_bench shoal ADDR IN_FLIGHT SECONDS
//!   queue_bench jetstream URL IN_FLIGHT SECONDS
//!   queue_bench redis HOST:PORT IN_FLIGHT SECONDS

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

const SIZE: usize = 1024;
const SUBS: [&str; 2] = ["s1", "s2"];
const BATCH: usize = 100;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, kind, addr, in_flight, seconds] = &args[..] else {
        return Err("usage: queue_bench shoal|jetstream|redis ADDR IN_FLIGHT SECONDS".into());
    };
    let in_flight: usize = in_flight.parse()?;
    let time = Duration::from_secs_f64(seconds.parse()?);
    let topic = format!("bench{in_flight}");
    let (published, publish_s, consumed, consume_s) = match kind.as_str() {
        "shoal" => shoal(addr, &topic, in_flight, time).await?,
        "jetstream" => nats(addr, &topic, in_flight, time).await?,
        "redis" => redis(addr, &topic, in_flight, time).await?,
        other => return Err(format!("unknown target {other}").into()),
    };
    println!(
        "{{\"published\": {published}, \"publish_per_s\": {:.0}, \"consumed\": {consumed}, \"consume_per_s\": {:.0}}}",
        published as f64 / publish_s,
        consumed as f64 / consume_s
    );
    Ok(())
}

/// Runs `in_flight` publishers, each one publish at a time, for `time`; answers how many were
/// acknowledged and the seconds taken.
async fn publish_for<F, Fut>(in_flight: usize, time: Duration, publish: F) -> Res<(u64, f64)>
where
    F: Fn(Vec<u8>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Res<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (stop, count, publish) = (stop.clone(), count.clone(), publish.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                publish(vec![b'x'; SIZE]).await?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Res::Ok(())
        });
    }
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok((count.load(Ordering::Relaxed), start.elapsed().as_secs_f64()))
}

/// Runs one consumer per subscription until each has consumed `each`; answers the total and
/// the seconds taken.
async fn consume_all<F, Fut>(each: u64, consume: F) -> Res<(u64, f64)>
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = Res<u64>> + Send + 'static,
{
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for sub in SUBS {
        let batch = consume(sub);
        tasks.spawn(batch);
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    assert_eq!(total, each * SUBS.len() as u64);
    Ok((total, start.elapsed().as_secs_f64()))
}

async fn shoal(
    addr: &str,
    topic: &str,
    in_flight: usize,
    time: Duration,
) -> Res<(u64, f64, u64, f64)> {
    let client = shoal_queue::Client::connect(&addr.parse()?).await?;
    client.create_topic(topic, Some(8 << 30)).await?;
    for sub in SUBS {
        client.register(topic, sub).await?;
    }
    let t = topic.to_owned();
    let c = client.clone();
    let (published, publish_s) = publish_for(in_flight, time, move |m| {
        let (c, t) = (c.clone(), t.clone());
        async move { c.publish(&t, [m]).await.map(drop).map_err(Into::into) }
    })
    .await?;
    let (consumed, consume_s) = consume_all(published, |sub| {
        let (c, t) = (client.clone(), topic.to_owned());
        async move {
            let mut n = 0;
            while n < published {
                let got = c
                    .fetch(&t, sub, BATCH as u32, Duration::from_secs(1))
                    .await?;
                let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
                c.ack(&t, sub, &seqs).await?;
                n += seqs.len() as u64;
            }
            Ok(n)
        }
    })
    .await?;
    Ok((published, publish_s, consumed, consume_s))
}

async fn nats(
    url: &str,
    topic: &str,
    in_flight: usize,
    time: Duration,
) -> Res<(u64, f64, u64, f64)> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let stream = js
        .create_stream(stream::Config {
            name: topic.to_owned(),
            subjects: vec![topic.to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    for sub in SUBS {
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(sub.to_owned()),
                ack_policy: consumer::AckPolicy::All,
                max_ack_pending: -1,
                ..Default::default()
            })
            .await?;
    }
    let subject = topic.to_owned();
    let j = js.clone();
    let (published, publish_s) = publish_for(in_flight, time, move |m| {
        let (j, s) = (j.clone(), subject.clone());
        async move {
            j.publish(s, m.into()).await?.await?;
            Ok(())
        }
    })
    .await?;
    let (consumed, consume_s) = consume_all(published, |sub| {
        let stream = stream.clone();
        async move {
            let c: consumer::PullConsumer = stream.get_consumer(sub).await?;
            let mut n = 0;
            while n < published {
                let mut batch = c.fetch().max_messages(BATCH).messages().await?;
                let mut last = None;
                while let Some(m) = batch.next().await {
                    last = Some(m?);
                    n += 1;
                }
                // AckPolicy::All: one acknowledged ack of the last covers the batch.
                if let Some(m) = last {
                    m.double_ack().await?;
                }
            }
            Ok(n)
        }
    })
    .await?;
    Ok((published, publish_s, consumed, consume_s))
}

async fn redis(
    addr: &str,
    topic: &str,
    in_flight: usize,
    time: Duration,
) -> Res<(u64, f64, u64, f64)> {
    let mut setup = Resp::connect(addr).await?;
    setup.call(&["DEL", topic]).await?;
    setup.call(&["XADD", topic, "*", "d", "seed"]).await?;
    for sub in SUBS {
        setup.call(&["XGROUP", "CREATE", topic, sub, "$"]).await?;
    }
    // redis answers one command at a time per connection: one connection per publish in flight.
    let conns = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    for _ in 0..in_flight {
        conns.lock().await.push(Resp::connect(addr).await?);
    }
    let t = topic.to_owned();
    let (published, publish_s) = publish_for(in_flight, time, move |m| {
        let (conns, t) = (conns.clone(), t.clone());
        async move {
            let mut conn = conns.lock().await.pop().ok_or("no connection")?;
            let data = String::from_utf8(m)?;
            conn.call(&["XADD", &t, "*", "d", &data]).await?;
            conns.lock().await.push(conn);
            Ok(())
        }
    })
    .await?;
    let (consumed, consume_s) = consume_all(published, |sub| {
        let (addr, t) = (addr.to_owned(), topic.to_owned());
        async move {
            let mut conn = Resp::connect(&addr).await?;
            let count = BATCH.to_string();
            let mut n = 0;
            while n < published {
                let reply = conn
                    .call(&[
                        "XREADGROUP",
                        "GROUP",
                        sub,
                        "c",
                        "COUNT",
                        &count,
                        "STREAMS",
                        &t,
                        ">",
                    ])
                    .await?;
                let ids = stream_ids(&reply);
                if ids.is_empty() {
                    continue;
                }
                let mut ack = vec!["XACK", &t, sub];
                ack.extend(ids.iter().map(String::as_str));
                conn.call(&ack).await?;
                n += ids.len() as u64;
            }
            Ok(n)
        }
    })
    .await?;
    Ok((published, publish_s, consumed, consume_s))
}

/// A RESP reply; the bench reads only bulk strings and arrays.
#[derive(Debug)]
#[allow(dead_code)]
enum Reply {
    Simple(String),
    Bulk(Option<Vec<u8>>),
    Int(i64),
    Array(Option<Vec<Reply>>),
}

/// One redis connection speaking RESP2.
struct Resp {
    reader: BufReader<TcpStream>,
}

impl Resp {
    async fn connect(addr: &str) -> Res<Resp> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Resp {
            reader: BufReader::new(stream),
        })
    }

    async fn call(&mut self, args: &[&str]) -> Res<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&out).await?;
        self.read().await
    }

    fn read(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Res<Reply>> + Send + '_>> {
        Box::pin(async move {
            let mut line = String::new();
            self.reader.read_line(&mut line).await?;
            let (kind, rest) = line.trim_end().split_at(1);
            Ok(match kind {
                "+" => Reply::Simple(rest.to_owned()),
                "-" => return Err(format!("redis: {rest}").into()),
                ":" => Reply::Int(rest.parse()?),
                "$" => match rest.parse::<i64>()? {
                    -1 => Reply::Bulk(None),
                    len => {
                        let mut data = vec![0; len as usize + 2];
                        self.reader.read_exact(&mut data).await?;
                        data.truncate(len as usize);
                        Reply::Bulk(Some(data))
                    }
                },
                "*" => match rest.parse::<i64>()? {
                    -1 => Reply::Array(None),
                    len => {
                        let mut items = Vec::with_capacity(len as usize);
                        for _ in 0..len {
                            items.push(self.read().await?);
                        }
                        Reply::Array(Some(items))
                    }
                },
                other => return Err(format!("redis: unexpected reply {other:?}").into()),
            })
        })
    }
}

/// The entry ids in an XREADGROUP reply: [[stream, [[id, [field, value]], ...]]].
fn stream_ids(reply: &Reply) -> Vec<String> {
    let Reply::Array(Some(streams)) = reply else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for s in streams {
        let Reply::Array(Some(pair)) = s else {
            continue;
        };
        let Some(Reply::Array(Some(entries))) = pair.get(1) else {
            continue;
        };
        for e in entries {
            if let Reply::Array(Some(fields)) = e {
                if let Some(Reply::Bulk(Some(id))) = fields.first() {
                    ids.push(String::from_utf8_lossy(id).into_owned());
                }
            }
        }
    }
    ids
}
