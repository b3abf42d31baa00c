//! The JetStream engine (feature `nats`): the queue's semantics on a NATS server, for fleets
//! that outgrow one machine's disk.
//!
//! A topic is a stream (`SHOALQ_<topic>`, subject `shoalq.<topic>`) with limits retention,
//! file storage and `discard: new`, so a full stream refuses rather than drops; a subscription
//! is a durable pull consumer with explicit acks that starts at the sequence after the stream's
//! last when it is registered. Messages go once every consumer's ack floor has passed them: a
//! reaper purges below the lowest floor. Interest retention is not used: it drops messages
//! published while no consumer exists and leaves orphans when one is deleted.
//!
//! Publishes are acknowledged when JetStream acknowledges them: after fsync only if the server
//! runs with `sync_interval: always` (see the README). JetStream acks a delivery, not a
//! sequence, so the engine remembers each delivery's ack subject; an ack of a sequence not
//! delivered since the engine started is refused ([`Error::NotDelivered`]) unless the
//! consumer's floor has passed it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{
    ConsumerInfoError, ConsumerInfoErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::stream::{
    self, ConsumerErrorKind, DiscardPolicy, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, ErrorCode};
use async_trait::async_trait;
use futures_util::TryStreamExt as _;
use tokio::sync::{Notify, RwLock};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::backend::Backend;
use crate::engine::{
    check_name, EngineOptions, Error, Message, NameKind, SubStats, TopicStats, MIN_MAX_BYTES,
};

const STREAM_PREFIX: &str = "SHOALQ_";
const SUBJECT_PREFIX: &str = "shoalq.";
/// How long a close waits for what is buffered to reach the NATS server.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// The queue's calls over JetStream; see the module docs.
#[derive(Debug)]
pub struct JetStream {
    inner: Arc<Inner>,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    url: String,
    client: async_nats::Client,
    js: jetstream::Context,
    options: EngineOptions,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    /// Topics with acks since their last reap.
    dirty: Mutex<HashSet<String>>,
    reap: Notify,
}

#[derive(Debug)]
struct Topic {
    name: String,
    stream: stream::Stream,
    subject: String,
    /// Publishes hold it shared, a registration alone: the sequence a new consumer starts at
    /// is then exactly the one after the last published.
    gate: RwLock<()>,
    consumers: Mutex<HashMap<String, PullConsumer>>,
    /// The ack subject of each delivery not yet acked, by subscription and sequence.
    deliveries: Mutex<HashMap<(String, u64), String>>,
}

impl JetStream {
    /// Connects to the NATS server at `url` and starts the reaper.
    pub async fn connect(url: &str, options: EngineOptions) -> Result<JetStream, Error> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| nats_error(url, "connect", e))?;
        let inner = Arc::new(Inner {
            url: url.to_owned(),
            js: jetstream::new(client.clone()),
            client,
            options,
            topics: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
            reap: Notify::new(),
        });
        let reaper = tokio::spawn(reaper(inner.clone()));
        Ok(JetStream {
            inner,
            reaper: Mutex::new(Some(reaper)),
        })
    }

    /// Purges `topic` below the lowest ack floor of its subscriptions (everything when it has
    /// none) and answers the floor.
    pub async fn reap(&self, topic: &str) -> Result<u64, Error> {
        let t = self.inner.topic(topic).await?;
        self.inner.reap_topic(&t).await
    }
}

#[async_trait]
impl Backend for JetStream {
    async fn create_topic(&self, topic: &str, max_bytes: Option<u64>) -> Result<(), Error> {
        check_name(NameKind::Topic, topic)?;
        let inner = &self.inner;
        let asked = max_bytes.unwrap_or(inner.options.default_max_bytes);
        if let Some(existing) = inner.find_stream(topic).await? {
            let have = existing.cached_info().config.max_bytes as u64;
            return match max_bytes {
                Some(asked) if asked != have => Err(Error::TopicExists {
                    topic: topic.to_owned(),
                    max_bytes: have,
                    asked,
                }),
                _ => Ok(()),
            };
        }
        if asked < MIN_MAX_BYTES {
            return Err(Error::MaxBytesTooSmall {
                topic: topic.to_owned(),
                max_bytes: asked,
                min: MIN_MAX_BYTES,
            });
        }
        let config = stream::Config {
            name: stream_name(topic),
            subjects: vec![subject(topic)],
            description: Some(format!("shoal queue topic {topic}")),
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            discard: DiscardPolicy::New,
            max_bytes: i64::try_from(asked).unwrap_or(i64::MAX),
            max_message_size: i32::try_from(inner.options.log.max_message).unwrap_or(i32::MAX),
            num_replicas: 1,
            ..Default::default()
        };
        inner
            .js
            .get_or_create_stream(config)
            .await
            .map_err(|e| inner.error(format!("create stream for topic {topic}"), e))?;
        Ok(())
    }

    async fn topics(&self) -> Result<Vec<String>, Error> {
        let names: Vec<String> = self
            .inner
            .js
            .stream_names()
            .try_collect()
            .await
            .map_err(|e| self.inner.error("list streams".into(), e))?;
        let mut topics: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix(STREAM_PREFIX).and_then(unescape))
            .collect();
        topics.sort();
        Ok(topics)
    }

    async fn register(&self, topic: &str, sub: &str) -> Result<(), Error> {
        check_name(NameKind::Subscription, sub)?;
        let t = self.inner.topic(topic).await?;
        if self.inner.consumer(&t, sub).await.is_ok() {
            return Ok(());
        }
        let _alone = t.gate.write().await;
        let mut stream = t.stream.clone();
        let last = stream
            .info()
            .await
            .map_err(|e| self.inner.error(format!("read stream of topic {topic}"), e))?
            .state
            .last_sequence;
        let config = pull::Config {
            durable_name: Some(escape(sub)),
            description: Some(format!("shoal queue subscription {sub} of {topic}")),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.inner.options.log.ack_timeout,
            max_ack_pending: 1 << 20,
            ..Default::default()
        };
        let consumer = t.stream.create_consumer(config).await.map_err(|e| {
            self.inner
                .error(format!("create consumer {sub} of {topic}"), e)
        })?;
        t.consumers
            .lock()
            .expect("consumers lock")
            .insert(sub.to_owned(), consumer);
        Ok(())
    }

    async fn unregister(&self, topic: &str, sub: &str) -> Result<(), Error> {
        let t = self.inner.topic(topic).await?;
        match t.stream.delete_consumer(&escape(sub)).await {
            Ok(_) => {}
            Err(e) if consumer_missing(e.kind()) => return Err(no_sub(topic, sub)),
            Err(e) => {
                return Err(self
                    .inner
                    .error(format!("delete consumer {sub} of {topic}"), e))
            }
        }
        t.consumers.lock().expect("consumers lock").remove(sub);
        t.deliveries
            .lock()
            .expect("deliveries lock")
            .retain(|(s, _), _| s != sub);
        self.inner.reap_topic(&t).await.map(drop)
    }

    async fn publish(&self, topic: &str, messages: Vec<Vec<u8>>) -> Result<Vec<u64>, Error> {
        let t = self.inner.topic(topic).await?;
        let max = self.inner.options.log.max_message;
        if let Some(big) = messages.iter().find(|m| m.len() as u64 > max) {
            return Err(Error::TooLarge {
                topic: topic.to_owned(),
                size: big.len() as u64,
                max,
            });
        }
        let size: u64 = messages.iter().map(|m| m.len() as u64).sum();
        if messages.len() > 1 {
            // A batch is several JetStream publishes: make room first, so a full topic refuses
            // it whole rather than midway.
            self.inner.check_room(&t, size).await?;
        }
        match self.inner.publish_all(&t, &messages).await {
            Err(Error::Full { .. }) if messages.len() == 1 => {
                self.inner.reap_topic(&t).await?;
                self.inner.publish_all(&t, &messages).await
            }
            other => other,
        }
    }

    async fn fetch(
        &self,
        topic: &str,
        sub: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, Error> {
        let t = self.inner.topic(topic).await?;
        let consumer = self.inner.consumer(&t, sub).await?;
        let max = max.max(1);
        let mut got = self
            .inner
            .pull(&t, sub, &consumer, max, Duration::ZERO)
            .await?;
        if got.is_empty() && !wait.is_zero() {
            // One message, waiting up to `wait`; then whatever else is there at once.
            got = self.inner.pull(&t, sub, &consumer, 1, wait).await?;
            if !got.is_empty() && max > 1 {
                let more = self
                    .inner
                    .pull(&t, sub, &consumer, max - 1, Duration::ZERO)
                    .await?;
                got.extend(more);
            }
        }
        Ok(got)
    }

    async fn ack(&self, topic: &str, sub: &str, seqs: Vec<u64>) -> Result<(), Error> {
        let t = self.inner.topic(topic).await?;
        let replies = self.inner.replies(&t, sub, &seqs).await?;
        let client = &self.inner.client;
        // Double acks: each answered once the server has recorded it.
        let acks = replies
            .iter()
            .map(|(_, reply)| client.request(reply.clone(), "+ACK".into()));
        let results = futures_util::future::join_all(acks).await;
        for ((seq, _), result) in replies.iter().zip(results) {
            result.map_err(|e| {
                self.inner
                    .error(format!("ack {seq} of {sub} on {topic}"), e)
            })?;
            t.deliveries
                .lock()
                .expect("deliveries lock")
                .remove(&(sub.to_owned(), *seq));
        }
        self.inner
            .dirty
            .lock()
            .expect("dirty lock")
            .insert(topic.to_owned());
        self.inner.reap.notify_one();
        Ok(())
    }

    async fn nack(
        &self,
        topic: &str,
        sub: &str,
        seqs: Vec<u64>,
        delay: Duration,
    ) -> Result<(), Error> {
        let t = self.inner.topic(topic).await?;
        let replies = self.inner.replies(&t, sub, &seqs).await?;
        let nak = format!("-NAK {{\"delay\": {}}}", delay.as_nanos());
        for (seq, reply) in &replies {
            self.inner
                .client
                .publish(reply.clone(), nak.clone().into())
                .await
                .map_err(|e| {
                    self.inner
                        .error(format!("nack {seq} of {sub} on {topic}"), e)
                })?;
        }
        self.inner
            .client
            .flush()
            .await
            .map_err(|e| self.inner.error(format!("nack on {topic}"), e))
    }

    async fn stats(&self, topic: &str) -> Result<TopicStats, Error> {
        let t = self.inner.topic(topic).await?;
        let mut stream = t.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| self.inner.error(format!("read stream of topic {topic}"), e))?
            .clone();
        let consumers = self.inner.consumer_infos(&t).await?;
        let mut subs: Vec<SubStats> = consumers
            .iter()
            .filter_map(|c| {
                Some(SubStats {
                    name: unescape(&c.name)?,
                    lag: c.num_pending + c.num_ack_pending as u64,
                    unacked: c.num_ack_pending as u64,
                    redelivered: c.num_redelivered as u64,
                    ack_floor: floor(c),
                })
            })
            .collect();
        subs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(TopicStats {
            topic: topic.to_owned(),
            bytes: info.state.bytes,
            max_bytes: info.config.max_bytes as u64,
            first_seq: info
                .state
                .first_sequence
                .max(1)
                .min(info.state.last_sequence + 1),
            last_seq: info.state.last_sequence,
            waiting: 0,
            syncs: 0,
            subs,
        })
    }

    async fn close(&self) {
        let reaper = self.reaper.lock().expect("reaper lock").take();
        if let Some(reaper) = reaper {
            reaper.abort();
            let _ = reaper.await;
        }
        match tokio::time::timeout(CLOSE_FLUSH, self.inner.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(url = %self.inner.url, %error, "flushing to NATS on close"),
            Err(_) => warn!(url = %self.inner.url, "NATS unreachable on close: nacks may be lost"),
        }
    }
}

impl Drop for JetStream {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.lock().expect("reaper lock").take() {
            reaper.abort();
        }
    }
}

impl Inner {
    async fn topic(&self, topic: &str) -> Result<Arc<Topic>, Error> {
        if let Some(t) = self.topics.lock().expect("topics lock").get(topic) {
            return Ok(t.clone());
        }
        let stream = self
            .find_stream(topic)
            .await?
            .ok_or_else(|| Error::NoTopic {
                topic: topic.to_owned(),
            })?;
        let t = Arc::new(Topic {
            name: topic.to_owned(),
            stream,
            subject: subject(topic),
            gate: RwLock::new(()),
            consumers: Mutex::new(HashMap::new()),
            deliveries: Mutex::new(HashMap::new()),
        });
        Ok(self
            .topics
            .lock()
            .expect("topics lock")
            .entry(topic.to_owned())
            .or_insert(t)
            .clone())
    }

    async fn find_stream(&self, topic: &str) -> Result<Option<stream::Stream>, Error> {
        match self.js.get_stream(stream_name(topic)).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(self.error(format!("read stream of topic {topic}"), e)),
            },
        }
    }

    async fn consumer(&self, t: &Topic, sub: &str) -> Result<PullConsumer, Error> {
        if let Some(c) = t.consumers.lock().expect("consumers lock").get(sub) {
            return Ok(c.clone());
        }
        let consumer: PullConsumer = match t.stream.get_consumer(&escape(sub)).await {
            Ok(c) => c,
            Err(e) if consumer_info_missing(&*e) => return Err(no_sub(&t.name, sub)),
            Err(e) => {
                return Err(self.error(format!("read consumer {sub} of {}", t.name), e));
            }
        };
        t.consumers
            .lock()
            .expect("consumers lock")
            .insert(sub.to_owned(), consumer.clone());
        Ok(consumer)
    }

    async fn consumer_infos(&self, t: &Topic) -> Result<Vec<consumer::Info>, Error> {
        t.stream
            .consumers()
            .try_collect()
            .await
            .map_err(|e| self.error(format!("list consumers of {}", t.name), e))
    }

    /// Publishes each message and waits for all their acks; a "maximum bytes" refusal
    /// becomes [`Error::Full`].
    async fn publish_all(&self, t: &Topic, messages: &[Vec<u8>]) -> Result<Vec<u64>, Error> {
        let _shared = t.gate.read().await;
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let ack = self
                .js
                .publish(t.subject.clone(), m.clone().into())
                .await
                .map_err(|e| self.error(format!("publish to {}", t.name), e))?;
            pending.push(ack);
        }
        let mut seqs = Vec::with_capacity(messages.len());
        for ack in pending {
            match ack.await {
                Ok(ack) => seqs.push(ack.sequence),
                Err(e) if is_full(&e) => return Err(self.full(t).await),
                Err(e) => return Err(self.error(format!("publish to {}", t.name), e)),
            }
        }
        Ok(seqs)
    }

    /// Refuses a batch of `size` bytes the topic has no room for, even after a reap.
    async fn check_room(&self, t: &Topic, size: u64) -> Result<(), Error> {
        let mut stream = t.stream.clone();
        for attempt in 0..2 {
            let info = stream
                .info()
                .await
                .map_err(|e| self.error(format!("read stream of topic {}", t.name), e))?;
            let max = info.config.max_bytes as u64;
            if size > max {
                return Err(Error::TooLarge {
                    topic: t.name.clone(),
                    size,
                    max,
                });
            }
            if info.state.bytes + size <= max {
                return Ok(());
            }
            if attempt == 0 {
                self.reap_topic(t).await?;
            }
        }
        Err(self.full(t).await)
    }

    async fn full(&self, t: &Topic) -> Error {
        let mut stream = t.stream.clone();
        let (bytes, max_bytes, first) = match stream.info().await {
            Ok(info) => (
                info.state.bytes,
                info.config.max_bytes as u64,
                info.state.first_sequence,
            ),
            Err(_) => (0, 0, 0),
        };
        let holder = self
            .consumer_infos(t)
            .await
            .unwrap_or_default()
            .into_iter()
            .min_by_key(floor)
            .and_then(|c| Some((unescape(&c.name)?, floor(&c))));
        let (holder, oldest) = holder.unwrap_or_else(|| ("(none)".to_owned(), first));
        Error::Full {
            topic: t.name.clone(),
            bytes,
            max_bytes,
            holder,
            oldest,
        }
    }

    /// Pulls up to `max` messages, waiting up to `wait` for them (at once when zero), and
    /// remembers each one's ack subject.
    async fn pull(
        &self,
        t: &Topic,
        sub: &str,
        consumer: &PullConsumer,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, Error> {
        let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
            self.error(format!("fetch for {sub} of {}", t.name), e)
        };
        let batch = if wait.is_zero() {
            consumer.fetch().max_messages(max).messages().await
        } else {
            consumer
                .batch()
                .max_messages(max)
                .expires(wait)
                .messages()
                .await
        }
        .map_err(|e| fail(e.into()))?;
        let delivered: Vec<jetstream::Message> = batch.try_collect().await.map_err(&fail)?;
        let mut messages = Vec::with_capacity(delivered.len());
        let mut deliveries = t.deliveries.lock().expect("deliveries lock");
        for m in delivered {
            let info = m.info().map_err(&fail)?;
            let (seq, redelivered) = (info.stream_sequence, info.delivered > 1);
            if let Some(reply) = &m.reply {
                deliveries.insert((sub.to_owned(), seq), reply.to_string());
            }
            messages.push(Message {
                seq,
                data: m.payload.to_vec(),
                redelivered,
            });
        }
        Ok(messages)
    }

    /// The ack subject of each of `seqs`; a sequence below the consumer's floor is already
    /// acked and skipped.
    async fn replies(
        &self,
        t: &Topic,
        sub: &str,
        seqs: &[u64],
    ) -> Result<Vec<(u64, String)>, Error> {
        let consumer = self.consumer(t, sub).await?;
        let mut found = Vec::with_capacity(seqs.len());
        let mut missing = Vec::new();
        {
            let deliveries = t.deliveries.lock().expect("deliveries lock");
            for &seq in seqs {
                match deliveries.get(&(sub.to_owned(), seq)) {
                    Some(reply) => found.push((seq, reply.clone())),
                    None => missing.push(seq),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let mut consumer = consumer;
        let info = consumer
            .info()
            .await
            .map_err(|e| self.error(format!("read consumer {sub} of {}", t.name), e))?;
        let floor = floor(info);
        if let Some(&seq) = missing.iter().find(|&&s| s >= floor) {
            return Err(Error::NotDelivered {
                topic: t.name.clone(),
                sub: sub.to_owned(),
                seq,
            });
        }
        Ok(found)
    }

    /// Purges the stream below the lowest ack floor; answers that floor.
    async fn reap_topic(&self, t: &Topic) -> Result<u64, Error> {
        let consumers = self.consumer_infos(t).await?;
        let mut stream = t.stream.clone();
        let state = stream
            .info()
            .await
            .map_err(|e| self.error(format!("read stream of topic {}", t.name), e))?
            .state
            .clone();
        let lowest = consumers
            .iter()
            .map(floor)
            .min()
            .unwrap_or(state.last_sequence + 1);
        if lowest > state.first_sequence && state.messages > 0 {
            t.stream
                .purge()
                .sequence(lowest)
                .await
                .map_err(|e| self.error(format!("purge topic {} below {lowest}", t.name), e))?;
        }
        Ok(lowest)
    }

    fn error(
        &self,
        what: String,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        nats_error(&self.url, &what, source)
    }
}

/// Reaps the topics acked since the last round, one round at a time.
async fn reaper(inner: Arc<Inner>) {
    loop {
        inner.reap.notified().await;
        let dirty: Vec<String> = inner.dirty.lock().expect("dirty lock").drain().collect();
        for topic in dirty {
            let reaped = match inner.topic(&topic).await {
                Ok(t) => inner.reap_topic(&t).await,
                Err(e) => Err(e),
            };
            if let Err(error) = reaped {
                warn!(%topic, %error, "reaping acked messages failed; the next ack retries");
            }
        }
    }
}

/// Every sequence below it is acknowledged by the consumer `c`: one past its ack floor, and
/// never below where it started.
fn floor(c: &consumer::Info) -> u64 {
    let start = match c.config.deliver_policy {
        DeliverPolicy::ByStartSequence { start_sequence } => start_sequence,
        _ => 1,
    };
    (c.ack_floor.stream_sequence + 1).max(start)
}

fn is_full(e: &jetstream::context::PublishError) -> bool {
    // JetStream answers a publish past `max_bytes` with `discard: new` by this description
    // (error code 10047, "resource limits exceeded"; the text is the stable part).
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.contains("maximum bytes exceeded") || text.contains("resource limits exceeded")
}

fn consumer_missing(kind: ConsumerErrorKind) -> bool {
    matches!(kind, ConsumerErrorKind::JetStream(j) if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
}

/// What `get_consumer` answers (boxed) for a consumer that does not exist.
fn consumer_info_missing(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<ConsumerInfoError>().is_some_and(|e| {
        matches!(e.kind(), ConsumerInfoErrorKind::NotFound)
            || matches!(e.kind(), ConsumerInfoErrorKind::JetStream(j) if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
    })
}

fn no_sub(topic: &str, sub: &str) -> Error {
    Error::NoSubscription {
        topic: topic.to_owned(),
        sub: sub.to_owned(),
    }
}

fn nats_error(
    url: &str,
    what: &str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::Nats {
        url: url.to_owned(),
        what: what.to_owned(),
        source: source.into(),
    }
}

fn stream_name(topic: &str) -> String {
    format!("{STREAM_PREFIX}{}", escape(topic))
}

fn subject(topic: &str) -> String {
    format!("{SUBJECT_PREFIX}{}", escape(topic))
}

/// Topic and subscription names may hold `.`, which JetStream names may not: `_` becomes
/// `__` and `.` becomes `_d`, one to one.
fn escape(name: &str) -> String {
    name.replace('_', "__").replace('.', "_d")
}

fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '_' => match chars.next()? {
                '_' => out.push('_'),
                'd' => out.push('.'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_escape_one_to_one() {
        for name in ["jobs", "a.b", "a_b", "a__d.", "_d", "x-y.z_"] {
            let escaped = escape(name);
            assert!(!escaped.contains('.'), "{escaped}");
            assert_eq!(unescape(&escaped).as_deref(), Some(name));
        }
        assert_ne!(escape("a.b"), escape("a_b"));
        assert_eq!(unescape("a_x"), None);
    }
}
