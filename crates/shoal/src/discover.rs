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

use futures_util::stream::Stream;
use shoal_api::fleet::{DiscoverWatch, ServiceEndpoints};
use shoal_api::program::{env, methods};
use shoal_rpc::discover::{follow, ListedEndpoint, Listing, LongPoll};
use shoal_rpc::{Addr, Balance, CallOptions, Client, Discover, EndpointSet, Error};

pub use shoal_rpc::discover::{FIRST_PAUSE, MAX_PAUSE};

/// How long one long poll waits for a change unless told otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
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
        AgentDiscover::from_env_value(&crate::control::agent_from_env(), service)
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
        let poll = AgentPoll {
            discover: self.clone(),
            client: None,
        };
        follow(poll, self.balance.clone())
    }
}

/// One [`AgentDiscover::watch`] stream's requests, over its own connection to the agent.
struct AgentPoll {
    discover: AgentDiscover,
    /// The connection to the agent's socket, made on the first request.
    client: Option<Client>,
}

impl LongPoll for AgentPoll {
    type Error = Error;

    /// One `agent.discover.watch`: at once for the first set, then a long poll.
    async fn ask(&mut self, after: Option<u64>) -> Result<Listing, Error> {
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
            after,
            wait_ms: wait.as_millis() as u64,
        };
        let options = CallOptions {
            timeout: Some(wait + MARGIN),
            ..CallOptions::default()
        };
        let answer: ServiceEndpoints = client
            .call_with(&options, methods::DISCOVER_WATCH, &[watch])
            .await?;
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
        let agent = &self.discover.agent;
        format!(
            "service {} through the agent at {agent}",
            self.discover.service
        )
    }
}

#[cfg(test)]
mod tests {
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
}
