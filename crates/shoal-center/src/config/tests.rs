//! Tests of what each instance holds across center restarts: written in batches, kept at a
//! stop, and, for what a crash lost before its batch was written, repaired by the next report.

use std::sync::Arc;

use shoal_api::agent::{AppKind, AppState, AppStatus};
use shoal_api::center::{ConfigPush, ConfigStatus, InstanceState};
use shoal_api::config::Delivery;
use shoal_api::fleet::AgentInfo;
use shoal_store::Sqlite;

use super::{Configs, DEFAULT_NAMESPACE as NS};
use crate::tokens::Caller;

const APP: &str = "shop";

/// A store in a fresh directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "shoal-instances-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// The configurations on this directory's store, as a center starting now has them.
    fn configs(&self) -> (Sqlite, Configs) {
        let store = Sqlite::open(self.0.join("center.db")).unwrap();
        let configs = Configs::new(Arc::new(store.clone()), Arc::new(store.clone()));
        (store, configs)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn agent(id: &str) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        hostname: id.into(),
        namespace: NS.into(),
        labels: Default::default(),
        online: true,
        revoked: false,
        last_heartbeat: None,
        version: "1.0.0".into(),
        apps: vec![AppStatus {
            pid: Some(1),
            uptime_secs: Some(1),
            ..AppStatus::new(
                APP.into(),
                "1.0.0".into(),
                AppKind::Service,
                AppState::Running,
            )
        }],
    }
}

async fn push(configs: &Configs, content: &str) -> u64 {
    let push = ConfigPush {
        content: content.into(),
        message: None,
        gray: None,
    };
    let pushed = configs.push(NS, APP, push, &Caller::center()).await;
    pushed.unwrap().version.version
}

async fn status(configs: &Configs) -> ConfigStatus {
    let agents = [agent("a"), agent("b")];
    configs.status(NS, APP, &agents).await.unwrap()
}

/// Agent `id`'s (applied, state).
fn of(status: &ConfigStatus, id: &str) -> (Option<u64>, InstanceState) {
    let i = status.instances.iter().find(|i| i.agent == id).unwrap();
    (i.applied, i.state.clone())
}

#[tokio::test]
async fn acknowledgements_show_at_once_and_after_a_restart_once_flushed() {
    let dir = Scratch::new("flushed");
    let (store, configs) = dir.configs();
    let v1 = push(&configs, "port = 1\n").await;
    configs
        .record(NS, "a", APP, v1, &Delivery::Applied)
        .await
        .unwrap();
    configs
        .record(NS, "b", APP, v1, &Delivery::Pending)
        .await
        .unwrap();
    let now = status(&configs).await;
    assert_eq!(of(&now, "a"), (Some(v1), InstanceState::Applied));
    assert_eq!(of(&now, "b"), (None, InstanceState::Pending));
    // Both changed, written together; nothing is left to write after.
    assert_eq!(configs.flush().await.unwrap(), 2);
    assert_eq!(configs.flush().await.unwrap(), 0);
    // A late pending report of an answered version changes nothing, so writes nothing.
    configs
        .record(NS, "a", APP, v1, &Delivery::Pending)
        .await
        .unwrap();
    assert_eq!(configs.flush().await.unwrap(), 0);
    store.close().await;

    let (store, restarted) = dir.configs();
    let after = status(&restarted).await;
    assert_eq!(of(&after, "a"), (Some(v1), InstanceState::Applied));
    assert_eq!(of(&after, "b"), (None, InstanceState::Pending));
    store.close().await;
}

#[tokio::test]
async fn what_a_crash_lost_before_the_flush_is_repaired_by_the_next_report() {
    let dir = Scratch::new("crash");
    let (store, configs) = dir.configs();
    let v1 = push(&configs, "port = 1\n").await;
    configs
        .record(NS, "a", APP, v1, &Delivery::Applied)
        .await
        .unwrap();
    configs.flush().await.unwrap();
    let v2 = push(&configs, "port = 2\n").await;
    configs
        .record(NS, "a", APP, v2, &Delivery::Applied)
        .await
        .unwrap();
    configs
        .record(NS, "b", APP, v2, &Delivery::Applied)
        .await
        .unwrap();
    // The center stops without writing the last acknowledgements (a crash).
    store.close().await;
    drop(configs);

    let (store, restarted) = dir.configs();
    let lost = status(&restarted).await;
    assert_eq!(of(&lost, "a"), (Some(v1), InstanceState::Pending));
    assert_eq!(of(&lost, "b"), (None, InstanceState::Pending));
    // Each agent's hello lists what it holds; the link records it as it records an answer.
    for id in ["a", "b"] {
        restarted
            .record(NS, id, APP, v2, &Delivery::Applied)
            .await
            .unwrap();
    }
    let repaired = status(&restarted).await;
    assert_eq!(of(&repaired, "a"), (Some(v2), InstanceState::Applied));
    assert_eq!(of(&repaired, "b"), (Some(v2), InstanceState::Applied));
    assert_eq!(restarted.flush().await.unwrap(), 2);
    store.close().await;

    let (store, again) = dir.configs();
    assert_eq!(
        of(&status(&again).await, "b"),
        (Some(v2), InstanceState::Applied)
    );
    store.close().await;
}
