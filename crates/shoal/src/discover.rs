//! [`AgentDiscover`]: a [`shoal_rpc::Discover`] that follows a service's endpoints through
//! the local agent, for programs inside the fleet. It long-polls the agent's programs socket
//! (`SHOAL_AGENT=unix:PATH`, `agent.discover.watch`), which the agent passes on over its link
//! to the center, so a change reaches the program as soon as the center learns it; it yields
//! a whole [`EndpointSet`] each time the set changes, balanced as the caller chose. The
//! program needs no token and no center address: the agent's link speaks for it, in the
//! agent's namespace.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal::discover::AgentDiscover;
//! use shoal::rpc::{Balance, Client};
//!
//! let web = AgentDiscover::new("web")?.balance(Balance::HashRing);
//! let client = Client::builder().discover(&web).connect().await?;
//! let answer: String = client.call("greet", &("world",)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Errors are items of the stream, not its end: an agent that cannot be reached, that has no
//! center or is not linked to it right now, yields one error per failed request, then the
//! stream asks again after a pause (100 ms, doubling to 10 s, with jitter) and goes on; the
//! client keeps its last set meanwhile. A service with no endpoint yields an error too (the
//! client keeps calling the last instances it knew rather than none). The stream ends only
//! when dropped, which drops the request in flight with it.

use std::time::Duration;

use futures_util::stream::{self, Stream};
use shoal_api::fleet::{DiscoverWatch, ServiceEndpoints};
use shoal_api::program::{env, methods};
use shoal_rpc::{Addr, Balance, CallOptions, Client, Discover, EndpointSet, Error};

/// How long one long poll waits for a change unless told otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// The first pause after a failed request; it doubles up to [`MAX_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
pub const MAX_PAUSE: Duration = Duration::from_secs(10);
/// How long a request may take beyond its wait: the agent's own call to the center.
const MARGIN: Duration = Duration::from_secs(35);

/// A service's endpoints, followed through the local agent (see the module documentation).
#[derive(Debug, Clone)]
pub struct AgentDiscover {
    agent: Addr,
    service: String,
    balance: Balance,
    wait: Duration,
}

impl AgentDiscover {
    /// Follows service `service` (the package name that declares its ports) through the
    /// agent that started this process, named by `SHOAL_AGENT`; balanced round robin unless
    /// [`balance`](Self::balance) says. An error when `SHOAL_AGENT` is missing or not
    /// `unix:PATH` (a process the agent did not start: use [`at`](Self::at)).
    pub fn new(service: &str) -> Result<AgentDiscover, Error> {
        let raw = std::env::var(env::AGENT).unwrap_or_default();
        AgentDiscover::from_env_value(&raw, service)
    }

    /// Follows `service` through the agent whose programs socket is `agent`
    /// (`unix:DATA/programs.sock`).
    pub fn at(agent: Addr, service: &str) -> AgentDiscover {
        AgentDiscover {
            agent,
            service: service.to_owned(),
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

    /// How long one long poll waits for a change (the agent cuts it to 5 minutes).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    fn from_env_value(raw: &str, service: &str) -> Result<AgentDiscover, Error> {
        if raw.is_empty() {
            return Err(Error::Config(format!(
                "discovering service {service} through the agent: {} is not set (only a \
                 process the agent started has it; elsewhere name the agent's socket with \
                 AgentDiscover::at, or discover through the center)",
                env::AGENT
            )));
        }
        match raw.parse::<Addr>() {
            Ok(agent @ Addr::Unix(_)) => Ok(AgentDiscover::at(agent, service)),
            _ => Err(Error::Config(format!(
                "discovering service {service} through the agent: {}={raw:?} is not unix:PATH",
                env::AGENT
            ))),
        }
    }
}

impl Discover for AgentDiscover {
    fn watch(&self) -> impl Stream<Item = Result<EndpointSet, Error>> + Send + 'static {
        let state = Following {
            discover: self.clone(),
            client: None,
            revision: None,
            pause: None,
        };
        stream::unfold(state, |mut state| async move {
            let item = state.next().await;
            Some((item, state))
        })
    }
}

/// What one [`AgentDiscover::watch`] stream remembers between requests.
struct Following {
    discover: AgentDiscover,
    /// The connection to the agent's socket, made on the first request.
    client: Option<Client>,
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
                // Jitter: programs that lost their agent (or its link) at once come back apart.
                tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64() / 2.0)).await;
            }
            let answer = match self.ask().await {
                Ok(answer) => answer,
                Err(e) => {
                    let pause = self.pause.map_or(FIRST_PAUSE, |p| (p * 2).min(MAX_PAUSE));
                    self.pause = Some(pause);
                    return Err(Error::Unavailable(format!(
                        "discovering service {} through the agent at {}: {e}",
                        self.discover.service, self.discover.agent
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

    /// One `agent.discover.watch`: at once for the first set, then a long poll.
    async fn ask(&mut self) -> Result<ServiceEndpoints, Error> {
        let wait = self.discover.wait;
        let client = match &self.client {
            Some(client) => client,
            None => self.client.insert(
                Client::builder()
                    .endpoint(self.discover.agent.clone())
                    .build()?,
            ),
        };
        let watch = DiscoverWatch {
            service: self.discover.service.clone(),
            after: self.revision,
            wait_ms: wait.as_millis() as u64,
        };
        let options = CallOptions {
            timeout: Some(wait + MARGIN),
            ..CallOptions::default()
        };
        client
            .call_with(&options, methods::DISCOVER_WATCH, &[watch])
            .await
    }
}

/// The set a client balances over, from the registry's answer.
fn endpoint_set(answer: &ServiceEndpoints, balance: &Balance) -> Result<EndpointSet, Error> {
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

    use super::*;

    #[test]
    fn shoal_agent_must_name_a_unix_socket() {
        let missing = AgentDiscover::from_env_value("", "web").unwrap_err();
        assert!(
            missing.to_string().contains("SHOAL_AGENT is not set"),
            "{missing}"
        );
        let tcp = AgentDiscover::from_env_value("127.0.0.1:9", "web").unwrap_err();
        assert!(
            tcp.to_string()
                .contains("SHOAL_AGENT=\"127.0.0.1:9\" is not unix:PATH"),
            "{tcp}"
        );
        let found = AgentDiscover::from_env_value("unix:/run/a/programs.sock", "web").unwrap();
        assert_eq!(found.agent, "unix:/run/a/programs.sock".parse().unwrap());
    }

    #[test]
    fn an_answer_becomes_a_balanced_set_or_an_error_naming_the_service() {
        let answer = |addrs: &[&str]| ServiceEndpoints {
            service: "web".into(),
            namespace: "default".into(),
            revision: 3,
            endpoints: addrs
                .iter()
                .map(|a| ServiceEndpoint {
                    agent: "a1".into(),
                    addr: (*a).into(),
                })
                .collect(),
        };
        let set = endpoint_set(
            &answer(&["10.0.0.1:7000", "10.0.0.2:7000"]),
            &Balance::Shard { count: 4 },
        )
        .unwrap();
        let ranges: Vec<_> = set.endpoints.iter().map(|e| e.shard.unwrap()).collect();
        assert_eq!(ranges, [(0, 1), (2, 3)]);
        let none = endpoint_set(&answer(&[]), &Balance::RoundRobin).unwrap_err();
        assert!(none
            .to_string()
            .contains("service web of namespace default has no endpoints"));
        let bad = endpoint_set(&answer(&["nope"]), &Balance::RoundRobin).unwrap_err();
        assert!(
            bad.to_string()
                .contains("agent a1 reports the endpoint \"nope\""),
            "{bad}"
        );
    }
}
