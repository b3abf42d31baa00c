//! [`CenterPeer`]: the agent's connection to its center as it is now, for calls the agent
//! makes on its programs' behalf (`agent.discover.watch` on the programs socket becomes the
//! link's `discover.watch`). The session names the connection once the center answered
//! `hello`, and takes it back as the connection ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::fleet::{methods, DiscoverWatch, ServiceEndpoints};
use shoal_rpc::Peer;

/// The longest long poll passed on: what the center holds one for at most.
pub const MAX_DISCOVER_WAIT: Duration = Duration::from_secs(300);

/// The agent's current link to its center, shared by the session that keeps it up and the
/// programs socket that calls over it. Cloning shares it.
#[derive(Debug, Clone)]
pub struct CenterPeer {
    /// `None`: the agent works without a center.
    center: Option<String>,
    /// How long a call may take beyond the wait it asks the center for.
    call_timeout: Duration,
    current: Arc<Mutex<Option<Peer>>>,
}

/// Why a call for a program did not reach the center, or what it answered.
#[derive(Debug, thiserror::Error)]
pub enum CenterCallError {
    #[error("this agent has no center (it was started without --center): discovery goes through the center")]
    NoCenter,
    #[error("this agent is not linked to its center at {center} right now (it connects again by itself); try again shortly")]
    NotLinked { center: String },
    #[error("the center at {center}: {message}")]
    Failed { center: String, message: String },
}

impl CenterPeer {
    /// The link of an agent that works alone: every call answers [`CenterCallError::NoCenter`].
    pub fn none() -> CenterPeer {
        CenterPeer {
            center: None,
            call_timeout: Duration::ZERO,
            current: Arc::default(),
        }
    }

    /// The link to the center at `center` (not connected yet), its calls taking at most
    /// `call_timeout` beyond their wait.
    pub fn new(center: &str, call_timeout: Duration) -> CenterPeer {
        CenterPeer {
            center: Some(center.to_owned()),
            call_timeout,
            current: Arc::default(),
        }
    }

    /// A service's endpoints in the agent's namespace, through the center's `discover.watch`
    /// (its wait cut to [`MAX_DISCOVER_WAIT`]).
    pub async fn discover(
        &self,
        watch: DiscoverWatch,
    ) -> Result<ServiceEndpoints, CenterCallError> {
        let (center, peer) = self.peer()?;
        let wait = Duration::from_millis(watch.wait_ms).min(MAX_DISCOVER_WAIT);
        let watch = DiscoverWatch {
            wait_ms: wait.as_millis() as u64,
            ..watch
        };
        let failed = |message: String| CenterCallError::Failed {
            center: center.clone(),
            message,
        };
        let answer = peer
            .call(methods::DISCOVER_WATCH, &[watch], wait + self.call_timeout)
            .await
            .map_err(|e| failed(e.to_string()))?;
        shoal_rpc::decode::from_value(answer)
            .map_err(|e| failed(format!("its answer to discover.watch does not read: {e}")))
    }

    /// The connection to call on, if the link is up.
    fn peer(&self) -> Result<(String, Peer), CenterCallError> {
        let center = self.center.clone().ok_or(CenterCallError::NoCenter)?;
        let current = self.current.lock().unwrap().clone();
        match current {
            Some(peer) if !peer.is_closed() => Ok((center, peer)),
            _ => Err(CenterCallError::NotLinked { center }),
        }
    }

    /// Names the connection calls go over from now on (`None`: none until the next).
    pub(super) fn set(&self, peer: Option<Peer>) {
        *self.current.lock().unwrap() = peer;
    }
}
