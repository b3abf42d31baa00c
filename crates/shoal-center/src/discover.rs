//! [`CenterDiscover`]: a [`shoal_rpc::Discover`] that follows a service's endpoints through
//! the center's API, for clients outside the fleet. It long-polls
//! `GET /api/v1/services/{name}/endpoints?after=REV&wait=DUR`, so a change reaches the client
//! as soon as the center learns it, and yields a whole [`EndpointSet`] each time the set
//! changes, balanced as the caller chose.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal_center::client::CenterDiscover;
//! use shoal_rpc::{Balance, Client};
//!
//! let web = CenterDiscover::new("http://127.0.0.1:7441", "shoal_…", "web")?
//!     .balance(Balance::HashRing);
//! let client = Client::builder().discover(&web).connect().await?;
//! let answer: String = client.call("greet", &("world",)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Errors are items of the stream, not its end: a center that cannot be reached or refuses
//! the token yields one error per failed request, then the stream asks again after a pause
//! (100 ms, doubling to 10 s, with jitter) and goes on; the client keeps its last set
//! meanwhile. A service with no endpoint yields an error too (the client keeps calling the
//! last instances it knew rather than none). The stream ends only when dropped, which
//! drops the request in flight with it.

use std::time::Duration;

use futures_util::stream::Stream;
use shoal_api::fleet::ServiceEndpoints;
use shoal_rpc::discover::{follow, ListedEndpoint, Listing, LongPoll};
use shoal_rpc::{Balance, Discover, EndpointSet, Error};

use crate::client::{CenterClient, ClientError};

/// How long one long poll waits for a change unless told otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// A service's endpoints, followed through the center (see the module documentation).
#[derive(Debug, Clone)]
pub struct CenterDiscover {
    client: CenterClient,
    service: String,
    namespace: Option<String>,
    balance: Balance,
    wait: Duration,
}

impl CenterDiscover {
    /// Follows service `service` (the package name that declares its ports) through the
    /// center at `center_url` (`http://HOST:PORT`), with `token` (viewer role or above), in
    /// the token's namespace; balanced round robin unless [`balance`](Self::balance) says.
    pub fn new(center_url: &str, token: &str, service: &str) -> Result<Self, ClientError> {
        Ok(CenterDiscover::with_client(
            CenterClient::new(center_url, token)?,
            service,
        ))
    }

    /// As [`new`](Self::new), with a client already made.
    pub fn with_client(client: CenterClient, service: &str) -> CenterDiscover {
        CenterDiscover {
            client,
            service: service.to_owned(),
            namespace: None,
            balance: Balance::RoundRobin,
            wait: DEFAULT_WAIT,
        }
    }

    /// How calls spread over the instances. With [`Balance::Shard`], `0..count` is cut into
    /// contiguous ranges, one per instance in the registry's order (by agent id, then
    /// address), each instance backing up the next one's range; an instance coming or
    /// going moves the ranges, so keys that must stay put want [`Balance::HashRing`].
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// The service's namespace, when not the token's own.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// How long one long poll waits for a change (the center cuts it to 5 minutes).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The request path for a set newer than `after`.
    fn path(&self, after: Option<u64>) -> String {
        let mut path = format!("/api/v1/services/{}/endpoints?", self.service);
        if let Some(namespace) = &self.namespace {
            path.push_str(&format!("namespace={namespace}&"));
        }
        if let Some(after) = after {
            path.push_str(&format!("after={after}&wait={}ms&", self.wait.as_millis()));
        }
        path.pop();
        path
    }
}

impl Discover for CenterDiscover {
    fn watch(&self) -> impl Stream<Item = Result<EndpointSet, Error>> + Send + 'static {
        follow(self.clone(), self.balance.clone())
    }
}

impl LongPoll for CenterDiscover {
    type Error = ClientError;

    async fn ask(&mut self, after: Option<u64>) -> Result<Listing, ClientError> {
        let answer: ServiceEndpoints = self.client.get(&self.path(after)).await?;
        Ok(Listing {
            service: answer.service,
            namespace: answer.namespace,
            revision: answer.revision,
            endpoints: (answer.endpoints.into_iter())
                .map(|e| ListedEndpoint {
                    agent: e.agent,
                    addr: e.addr,
                })
                .collect(),
        })
    }

    fn describe(&self) -> String {
        let center = self.client.addr();
        format!("service {} through the center at {center}", self.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_asks_for_a_newer_set_only_once_it_has_one() {
        let d = CenterDiscover::new("http://127.0.0.1:1", "t", "web").unwrap();
        assert_eq!(d.path(None), "/api/v1/services/web/endpoints");
        let d = d.namespace("prod").wait(Duration::from_secs(30));
        assert_eq!(
            d.path(Some(5)),
            "/api/v1/services/web/endpoints?namespace=prod&after=5&wait=30000ms"
        );
    }
}
