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

use futures_util::stream::{self, Stream};
use shoal_api::fleet::ServiceEndpoints;
use shoal_rpc::{Addr, Balance, Discover, EndpointSet, Error};

use crate::client::{CenterClient, ClientError};

/// How long one long poll waits for a change unless told otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// The first pause after a failed request; it doubles up to [`MAX_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
pub const MAX_PAUSE: Duration = Duration::from_secs(10);

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
        let state = Following {
            discover: self.clone(),
            revision: None,
            pause: None,
        };
        stream::unfold(state, |mut state| async move {
            let item = state.next().await;
            Some((item, state))
        })
    }
}

/// What one [`CenterDiscover::watch`] stream remembers between requests.
struct Following {
    discover: CenterDiscover,
    /// The revision of the last answer.
    revision: Option<u64>,
    /// The pause before the next request, after a failed one.
    pause: Option<Duration>,
}

impl Following {
    /// Asks until the set is new, or a request fails.
    async fn next(&mut self) -> Result<EndpointSet, Error> {
        loop {
            if let Some(pause) = self.pause {
                // Jitter: clients that lost one center at once do not all come back at once.
                tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64() / 2.0)).await;
            }
            let path = self.discover.path(self.revision);
            let answer = match self.discover.client.get::<ServiceEndpoints>(&path).await {
                Ok(answer) => answer,
                Err(e) => {
                    let pause = self.pause.map_or(FIRST_PAUSE, |p| (p * 2).min(MAX_PAUSE));
                    self.pause = Some(pause);
                    return Err(Error::Unavailable(format!(
                        "discovering service {} through the center at {}: {e}",
                        self.discover.service,
                        self.discover.client.addr()
                    )));
                }
            };
            self.pause = None;
            if self.revision == Some(answer.revision) {
                continue;
            }
            self.revision = Some(answer.revision);
            return endpoint_set(&answer, &self.discover.balance);
        }
    }
}

/// The set a client balances over, from the registry's answer.
pub fn endpoint_set(answer: &ServiceEndpoints, balance: &Balance) -> Result<EndpointSet, Error> {
    if answer.endpoints.is_empty() {
        return Err(Error::Unavailable(format!(
            "service {} of namespace {} has no endpoints now: no online agent reports it \
             running and healthy (is it installed and started, and does its manifest list \
             its [run] ports?)",
            answer.service, answer.namespace
        )));
    }
    let mut addrs = Vec::with_capacity(answer.endpoints.len());
    for e in &answer.endpoints {
        let addr: Addr = e.addr.parse().map_err(|error| {
            Error::Config(format!(
                "service {}: agent {} reports the endpoint {:?}, which is not host:port: {error}",
                answer.service, e.agent, e.addr
            ))
        })?;
        addrs.push(addr);
    }
    Ok(EndpointSet::spread(addrs, balance.clone()))
}

#[cfg(test)]
mod tests {
    use shoal_api::fleet::ServiceEndpoint;
    use shoal_rpc::Client;

    use super::*;

    fn answer(addrs: &[&str]) -> ServiceEndpoints {
        ServiceEndpoints {
            service: "web".into(),
            namespace: "default".into(),
            revision: 7,
            endpoints: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| ServiceEndpoint {
                    agent: format!("agent{i}"),
                    addr: (*a).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn every_balance_makes_a_set_a_client_accepts() {
        let three = answer(&["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]);
        for balance in [
            Balance::RoundRobin,
            Balance::LeastPending,
            Balance::HashRing,
            Balance::Shard { count: 1 },
            Balance::Shard { count: 2 },
            Balance::Shard { count: 8 },
        ] {
            let set = endpoint_set(&three, &balance).unwrap();
            Client::builder()
                .endpoints(set.endpoints.clone())
                .balance(set.balance.clone())
                .build()
                .unwrap_or_else(|e| panic!("{balance}: {e}"));
        }
        let shards = endpoint_set(&three, &Balance::Shard { count: 8 }).unwrap();
        let ranges: Vec<_> = shards.endpoints.iter().map(|e| e.shard.unwrap()).collect();
        assert_eq!(ranges, [(0, 1), (2, 4), (5, 7)]);
        assert_eq!(
            shards.endpoints[2].backup,
            Some("10.0.0.1:7000".parse().unwrap())
        );
    }

    #[test]
    fn an_empty_service_or_a_bad_address_is_an_error_naming_it() {
        let none = endpoint_set(&answer(&[]), &Balance::RoundRobin).unwrap_err();
        assert!(none
            .to_string()
            .contains("service web of namespace default has no endpoints"));
        let bad = endpoint_set(&answer(&["nope"]), &Balance::RoundRobin).unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("service web: agent agent0 reports the endpoint \"nope\""),
            "{bad}"
        );
    }

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
