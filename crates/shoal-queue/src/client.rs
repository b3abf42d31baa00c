//! The Rust client of `shoal queue`: typed calls over a shoal-rpc client.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;
use shoal_api::queue::{self as api, methods};
use shoal_rpc::{Addr, CallOptions, ClientTls};

pub use shoal_api::queue::{codes, Message, TopicStats};
pub use shoal_rpc::Error;

/// How long a call other than a waiting fetch may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to one queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    rpc: shoal_rpc::Client,
    token: Option<String>,
}

impl Client {
    /// Connects to `addr` (`host:port` or `unix:PATH`) without TLS or token, as a queue on
    /// loopback or a Unix socket allows.
    pub async fn connect(addr: &Addr) -> Result<Client, Error> {
        Client::connect_with(addr, None, None).await
    }

    /// Connects with TLS (trusting `tls`) and a token, as a queue on any other address needs.
    pub async fn connect_with(
        addr: &Addr,
        tls: Option<ClientTls>,
        token: Option<String>,
    ) -> Result<Client, Error> {
        let mut builder = shoal_rpc::Client::builder()
            .endpoint(addr.clone())
            .timeout(TIMEOUT)
            .max_message(64 << 20);
        if let Some(tls) = tls {
            builder = builder.tls(tls);
        }
        Ok(Client {
            rpc: builder.connect().await?,
            token,
        })
    }

    /// Creates `topic` (a no-op when it exists with the same `max_bytes`).
    pub async fn create_topic(&self, topic: &str, max_bytes: Option<u64>) -> Result<(), Error> {
        let request = api::CreateTopic {
            topic: topic.to_owned(),
            max_bytes,
            token: self.token.clone(),
        };
        self.call(methods::CREATE_TOPIC, &request, TIMEOUT).await
    }

    /// Registers a durable subscription: it gets every message published from now on.
    pub async fn register(&self, topic: &str, sub: &str) -> Result<(), Error> {
        self.call(methods::REGISTER, &self.subscription(topic, sub), TIMEOUT)
            .await
    }

    /// Unregisters a subscription, releasing the messages only it held.
    pub async fn unregister(&self, topic: &str, sub: &str) -> Result<(), Error> {
        self.call(methods::UNREGISTER, &self.subscription(topic, sub), TIMEOUT)
            .await
    }

    /// Publishes `messages`, answering with their sequence numbers once they are on disk.
    pub async fn publish<M: Into<Vec<u8>>>(
        &self,
        topic: &str,
        messages: impl IntoIterator<Item = M>,
    ) -> Result<Vec<u64>, Error> {
        let request = api::Publish {
            topic: topic.to_owned(),
            messages: messages
                .into_iter()
                .map(|m| ByteBuf::from(m.into()))
                .collect(),
            token: self.token.clone(),
        };
        let published: api::Published = self.call(methods::PUBLISH, &request, TIMEOUT).await?;
        Ok(published.seqs)
    }

    /// Up to `max` messages for `sub`, waiting up to `wait` while there are none.
    pub async fn fetch(
        &self,
        topic: &str,
        sub: &str,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<Message>, Error> {
        let request = api::Fetch {
            topic: topic.to_owned(),
            sub: sub.to_owned(),
            max: Some(max),
            wait_ms: Some(wait.as_millis().try_into().unwrap_or(u64::MAX)),
            token: self.token.clone(),
        };
        self.call(methods::FETCH, &request, wait + TIMEOUT).await
    }

    pub async fn ack(&self, topic: &str, sub: &str, seqs: &[u64]) -> Result<(), Error> {
        let request = api::Ack {
            topic: topic.to_owned(),
            sub: sub.to_owned(),
            seqs: seqs.to_vec(),
            token: self.token.clone(),
        };
        self.call(methods::ACK, &request, TIMEOUT).await
    }

    /// Hands messages back, to be delivered again after `delay`.
    pub async fn nack(
        &self,
        topic: &str,
        sub: &str,
        seqs: &[u64],
        delay: Duration,
    ) -> Result<(), Error> {
        let request = api::Nack {
            topic: topic.to_owned(),
            sub: sub.to_owned(),
            seqs: seqs.to_vec(),
            delay_ms: Some(delay.as_millis().try_into().unwrap_or(u64::MAX)),
            token: self.token.clone(),
        };
        self.call(methods::NACK, &request, TIMEOUT).await
    }

    /// Figures of `topic`, or of every topic.
    pub async fn stats(&self, topic: Option<&str>) -> Result<Vec<TopicStats>, Error> {
        let request = api::Stats {
            topic: topic.map(str::to_owned),
            token: self.token.clone(),
        };
        self.call(methods::STATS, &request, TIMEOUT).await
    }

    fn subscription(&self, topic: &str, sub: &str) -> api::Subscription {
        api::Subscription {
            topic: topic.to_owned(),
            sub: sub.to_owned(),
            token: self.token.clone(),
        }
    }

    async fn call<R: DeserializeOwned + 'static>(
        &self,
        method: &str,
        request: &impl Serialize,
        timeout: Duration,
    ) -> Result<R, Error> {
        let options = CallOptions {
            timeout: Some(timeout),
            ..CallOptions::default()
        };
        self.rpc.call_with(&options, method, &(request,)).await
    }
}
