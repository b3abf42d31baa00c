//! [`run`]: the agent and its local API put together, the one start and stop sequence that
//! `shoal agent` and `shoal up` share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, Bound, Token};
use crate::link::{self, Link, LinkOptions};
use crate::{Agent, AgentError, Options, Programs};

/// How long the API's connections may take to end once the agent has closed (answers being
/// written out).
const API_DRAIN: Duration = Duration::from_secs(5);

/// What [`run`] runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The agent's data directory (created if missing).
    pub data_dir: PathBuf,
    pub options: Options,
    /// A loopback address for the API besides the Unix socket in the data directory.
    pub listen: Option<SocketAddr>,
    /// What closing does with the programs.
    pub at_exit: Programs,
    /// The center to link to; `None`: the agent works alone.
    pub link: Option<LinkOptions>,
}

impl Config {
    /// The agent of `data_dir` with the default options, its API on its Unix socket only,
    /// leaving its programs running when it ends.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            options: Options::default(),
            listen: None,
            at_exit: Programs::KeepRunning,
            link: None,
        }
    }
}

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting the agent on {}", dir.display())]
    Open {
        dir: PathBuf,
        #[source]
        source: AgentError,
    },
    #[error("the agent's API token")]
    Token(#[source] std::io::Error),
    #[error("serving the agent's API")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Link(#[from] link::LinkError),
}

/// Opens the agent of `config` and serves its API (the token in the data directory's
/// `agent.token`, created when missing) until `shutdown` is cancelled; returns once the API
/// listens. [`Running::stopped`] then waits for `shutdown` and closes everything.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Running, RunError> {
    let agent = Agent::open(&config.data_dir, config.options)
        .await
        .map_err(|source| RunError::Open {
            dir: config.data_dir.clone(),
            source,
        })?;
    let token_path = agent.data().token();
    let token = tokio::task::spawn_blocking(move || Token::load_or_create(&token_path))
        .await
        .map_err(|e| RunError::Token(std::io::Error::other(e)))
        .and_then(|loaded| loaded.map_err(RunError::Token));
    let tasks = TaskTracker::new();
    let api_stop = shutdown.child_token();
    let bound = match token {
        Ok(token) => api::serve(
            api::routes(agent.clone()),
            token,
            &agent.data().socket(),
            config.listen,
            api_stop.clone(),
            &tasks,
        )
        .await
        .map_err(RunError::Serve),
        Err(e) => Err(e),
    };
    let center = match &config.link {
        Some(options) => link::CenterPeer::new(&options.center, options.call_timeout),
        None => link::CenterPeer::none(),
    };
    let bound = bound.and_then(|bound| {
        let socket = agent.data().programs_socket();
        let serving = crate::programs::Serving {
            central: agent.central().clone(),
            center: center.clone(),
        };
        crate::programs::serve(serving, &socket, &tasks, api_stop.clone()).map_err(|e| {
            RunError::Serve(std::io::Error::other(format!("{}: {e}", socket.display())))
        })?;
        Ok(bound)
    });
    let linked = match (bound, config.link) {
        (Ok(bound), Some(options)) => link::start(&agent, options, center, shutdown.child_token())
            .await
            .map(|link| (bound, Some(link)))
            .map_err(RunError::from),
        (Ok(bound), None) => Ok((bound, None)),
        (Err(e), _) => Err(e),
    };
    match linked {
        Ok((bound, link)) => Ok(Running {
            agent,
            bound,
            shutdown,
            api: tasks,
            at_exit: config.at_exit,
            link,
        }),
        Err(e) => {
            api_stop.cancel();
            tasks.close();
            agent.close(config.at_exit).await;
            let _ = tokio::time::timeout(API_DRAIN, tasks.wait()).await;
            Err(e)
        }
    }
}

/// An agent [`run`] started.
#[derive(Debug)]
pub struct Running {
    agent: Agent,
    bound: Bound,
    shutdown: CancellationToken,
    /// The API's servers and connections.
    api: TaskTracker,
    at_exit: Programs,
    /// The link to a center, when there is one.
    link: Option<Link>,
}

impl Running {
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The link to a center, when the agent has one.
    pub fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    /// Where the API listens.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Waits until `shutdown` is cancelled, then stops: the API takes no new request, the
    /// agent closes (a change in progress finishing first, see [`Agent::close`]), and the
    /// API's last answers go out within a deadline.
    pub async fn stopped(self) {
        self.shutdown.cancelled().await;
        // The link stops taking commands first; one still running ends with the agent's close.
        if let Some(link) = &self.link {
            link.stop();
        }
        self.agent.close(self.at_exit).await;
        if let Some(link) = self.link {
            link.wait().await;
        }
        self.api.close();
        if tokio::time::timeout(API_DRAIN, self.api.wait())
            .await
            .is_err()
        {
            tracing::warn!("the API's connections did not end after the agent closed");
        }
    }
}
