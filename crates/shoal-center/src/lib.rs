//! shoal-center: the fleet's control plane as a library. Agents dial in over mutual TLS and
//! are kept in a registry; operators reach them through an HTTP/JSON API (`/api/v1`, with an
//! OpenAPI document, bearer tokens with roles, an audit log): a package repository, commands
//! to target sets, fleet logs. Every piece of state is reached through `shoal-store`'s traits.
//! [`run`] composes it all.
//!
//! - [`pki`]: the certificate authority (a root, separate intermediates for agents and for
//!   centers) under `DATA/pki/`, the center's server certificate, the agents' port's TLS.
//! - [`link`]: the agents' port (enrollment, `hello`, heartbeats, package downloads,
//!   renewal) and [`link::Links`], the handle the rest of the center calls agents through
//!   (`exec`, `logs`, the registry, `revoke`).
//! - [`tokens`], [`audit`], [`packages`], [`commands`], [`config`]: the center's state, on
//!   the store.
//! - [`api`]: the HTTP API over all of it; [`client`]: its client.
//!
//! Invariant: the center never depends on `shoal-agent`; what crosses the link is a
//! `shoal_api::fleet` type.

pub mod api;
pub mod audit;
pub mod client;
pub mod commands;
pub mod config;
mod discover;
pub mod link;
mod names;
pub mod packages;
pub mod pki;
mod run;
pub mod services;
pub mod tokens;
mod upload;
mod wiring;

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use shoal_store::{Blobs, Kv, Log, StoreError};
use tokio_util::task::TaskTracker;

pub use run::{run, Config, Running, StartError, DEFAULT_HTTP, DEFAULT_LISTEN};
pub use wiring::{Joins, LinkReach};

use crate::api::ApiError;
use crate::audit::{Actor, Audit, Outcome};
use crate::commands::{Commands, Reach};
use crate::config::Configs;
use crate::packages::Packages;
use crate::services::Services;
use crate::tokens::{Caller, Tokens};
use crate::upload::Upload;

/// What the API refuses before it stores anything.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest package upload, in bytes: more is answered 413.
    pub max_upload: u64,
}

impl Default for Limits {
    /// 512 MiB.
    fn default() -> Limits {
        Limits {
            max_upload: 512 << 20,
        }
    }
}

/// The center's parts, as the API's handlers reach them.
#[derive(Debug, Clone)]
pub struct Center {
    pub tokens: Tokens,
    pub audit: Audit,
    pub packages: Packages,
    pub commands: Commands,
    pub configs: Configs,
    pub reach: Arc<dyn Reach>,
    /// The services' endpoints, as the agents report them.
    pub services: Services,
    /// The pin of the center's root key, which join tokens carry.
    pub pin: Arc<str>,
    /// Where uploads are written while they are checked.
    pub incoming: PathBuf,
    pub limits: Limits,
    /// What a request changes runs here, with its audit entry, so that a caller who goes away
    /// does not cut it short between the change and the entry; [`Center::close`] waits for it.
    work: TaskTracker,
}

/// The store the center keeps its state in, as its traits.
#[derive(Debug, Clone)]
pub struct Stores {
    pub kv: Arc<dyn Kv>,
    pub log: Arc<dyn Log>,
    pub blobs: Arc<dyn Blobs>,
}

impl Center {
    /// The center's parts on `stores`, reaching agents through `reach`; uploads are written
    /// under `data_dir/incoming`.
    pub fn new(
        stores: &Stores,
        reach: Arc<dyn Reach>,
        pin: &str,
        data_dir: &std::path::Path,
        limits: Limits,
    ) -> Center {
        let packages = Packages::new(stores.kv.clone(), stores.blobs.clone());
        let audit = Audit::new(stores.log.clone());
        Center {
            tokens: Tokens::new(stores.kv.clone()),
            commands: Commands::new(
                stores.kv.clone(),
                reach.clone(),
                packages.clone(),
                audit.clone(),
            ),
            audit,
            configs: Configs::new(stores.kv.clone(), stores.blobs.clone()),
            packages,
            services: reach.services(),
            reach,
            pin: pin.into(),
            incoming: data_dir.join("incoming"),
            limits,
            work: TaskTracker::new(),
        }
    }

    /// The same center with `configs` (the one its link delivers from).
    pub fn with_configs(self, configs: Configs) -> Center {
        Center { configs, ..self }
    }

    /// Stops the commands running (the next start marks them interrupted) and waits for the
    /// requests' changes under way to be done and audited.
    pub async fn close(&self) {
        self.commands.close().await;
        self.work.close();
        self.work.wait().await;
    }

    /// Runs `change` to its end, whether or not the caller waits for it: a request's change and
    /// its audit entry go together.
    pub(crate) async fn detached<T: Send + 'static>(
        &self,
        change: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        self.work
            .spawn(change)
            .await
            .expect("a request's change does not panic")
    }

    /// Writes an audit entry for what `by` asked, with `outcome`'s error or `ok`, whether or
    /// not the caller waits for it.
    pub(crate) async fn audit<T, E: std::fmt::Display>(
        &self,
        by: &Caller,
        action: &str,
        targets: Vec<String>,
        outcome: &Result<T, E>,
    ) -> Result<u64, StoreError> {
        self.record(by.into(), action, targets, Outcome::of(outcome))
            .await
    }

    /// Writes an audit entry, whether or not the caller waits for it.
    pub(crate) async fn record(
        &self,
        by: Actor,
        action: &str,
        targets: Vec<String>,
        outcome: Outcome,
    ) -> Result<u64, StoreError> {
        let (audit, action) = (self.audit.clone(), action.to_owned());
        self.detached(async move { audit.record(by, &action, targets, outcome).await })
            .await
    }

    /// Streams a request's body into `incoming/`, answering 413 past the upload limit.
    pub(crate) async fn receive(&self, body: Body) -> Result<Upload, ApiError> {
        upload::receive(&self.incoming, self.limits.max_upload, body).await
    }
}
