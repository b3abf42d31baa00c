//! What crosses between the agent and the programs it starts: the environment that tells a
//! program where its agent is, and the calls a service built with the SDK makes on the
//! agent's programs socket (MessagePack-RPC on a Unix socket only the agent's user can open)
//! to learn of a new version of its central configuration and to say how it took it, and to
//! follow a service's endpoints through the center.
//!
//! The agent writes the version of an app's configuration it should run to
//! `apps/NAME/center/config.toml`, a symlink to `vVERSION.toml` beside it (switched by an
//! atomic rename), and names it in [`env::CENTER_CONFIG`]: the SDK reads it as its center
//! layer at start and on every reload, and learns the version from the link's target.

use serde::{Deserialize, Serialize};

use crate::config::ConfigVersion;

/// The environment variables the agent sets for its programs.
pub mod env {
    /// `unix:PATH`: the agent's programs socket.
    pub const AGENT: &str = "SHOAL_AGENT";
    /// The path of the app's center layer (`DATA/apps/NAME/center/config.toml`); the file may
    /// not exist (no configuration released for the app yet).
    pub const CENTER_CONFIG: &str = "SHOAL_CENTER_CONFIG";
}

/// The methods of the agent's programs socket.
pub mod methods {
    /// [`super::ConfigWatch`] → [`super::ConfigWatched`]: a long poll, answered once the
    /// version the app should run differs from the one it has, or when the wait ends.
    pub const CONFIG_WATCH: &str = "agent.config.watch";
    /// [`crate::config::ConfigApplied`] → `nil`: how the app took a version (at start, and
    /// after each reload the agent asked for). Its `name` is the app's.
    pub const CONFIG_APPLIED: &str = "agent.config.applied";
    /// [`crate::fleet::DiscoverWatch`] → [`crate::fleet::ServiceEndpoints`]: a service's
    /// endpoints in the agent's namespace, asked of the center over the agent's link (the
    /// same long poll as the link's `discover.watch`, its wait cut to 5 minutes). Any
    /// program may ask; an agent without a center, or not linked right now, answers an
    /// error saying which.
    pub const DISCOVER_WATCH: &str = "agent.discover.watch";
}

/// The file name of version `version` in the app's `center` directory.
pub fn center_file_name(version: ConfigVersion) -> String {
    format!("v{version}.toml")
}

/// The version a center file's name (`v7.toml`) carries.
pub fn center_file_version(name: &str) -> Option<ConfigVersion> {
    name.strip_prefix('v')?.strip_suffix(".toml")?.parse().ok()
}

/// `agent.config.watch`: app `app` runs the center's version `have` (`None`: no center layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigWatch {
    pub app: String,
    pub have: Option<ConfigVersion>,
    /// How long the agent may hold the call before answering with what it has (at most a
    /// minute).
    pub wait_ms: u64,
}

/// The answer to [`ConfigWatch`]: the version the app should run (`None`: none), which the
/// app's `SHOAL_CENTER_CONFIG` now names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigWatched {
    pub version: Option<ConfigVersion>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_file_names_carry_their_version() {
        assert_eq!(center_file_name(12), "v12.toml");
        assert_eq!(center_file_version("v12.toml"), Some(12));
        for bad in ["12.toml", "v12", "vx.toml", "config.toml", "v.toml"] {
            assert_eq!(center_file_version(bad), None, "{bad}");
        }
    }
}
