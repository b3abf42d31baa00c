//! The lifecycle hooks an application implements: start, reload, close, errors, summary and an
//! optional long-running loop. Every method has a default, so a pure RPC service implements
//! none of them.

use std::future::Future;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::config::Config;
use crate::status::ErrorRecord;
use crate::{BoxError, Handle};

/// What the runtime calls at each step of the application's life.
///
/// ```
/// use shoal::{BoxError, Handle, Hooks};
///
/// struct Counter;
///
/// impl Hooks for Counter {
///     async fn on_start(&self, _app: &Handle) -> Result<(), BoxError> {
///         Ok(())
///     }
///     fn summary(&self) -> String {
///         "counted 0 things".into()
///     }
/// }
/// ```
pub trait Hooks: Send + Sync + 'static {
    /// After the listeners are bound and before the first call is answered. An error stops
    /// the start (exit code 1).
    fn on_start(&self, app: &Handle) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = app;
        async { Ok(()) }
    }

    /// With a new configuration that passed validation, before it replaces the old one. An
    /// error rejects the reload: the old configuration stays in force.
    fn on_reload(&self, config: &Config) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = config;
        async { Ok(()) }
    }

    /// Once, when the application starts closing, after it stops accepting connections and
    /// while in-flight calls finish.
    fn on_close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Every error the runtime records (a failed timer, hook, run loop or watchdog).
    fn on_error(&self, error: &ErrorRecord) {
        let _ = error;
    }

    /// A line or a few about what the application did, logged every summary period and at
    /// close, and shown in status.
    fn summary(&self) -> String {
        String::new()
    }

    /// The application's own loop, if it has one. Returning `Ok` closes the application with
    /// exit code 0, an error with 1. The default waits until the application closes.
    fn run(&self, app: Handle) -> impl Future<Output = Result<(), BoxError>> + Send {
        async move {
            app.closing().await;
            Ok(())
        }
    }
}

/// The hooks of an application that has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// [`Hooks`] behind a pointer: the runtime stores one `Arc<dyn DynHooks>`.
pub(crate) trait DynHooks: Send + Sync + 'static {
    fn on_start<'a>(&'a self, app: &'a Handle) -> BoxFuture<'a, Result<(), BoxError>>;
    fn on_reload<'a>(&'a self, config: &'a Config) -> BoxFuture<'a, Result<(), BoxError>>;
    fn on_close(&self) -> BoxFuture<'_, ()>;
    fn on_error(&self, error: &ErrorRecord);
    fn summary(&self) -> String;
    fn run(&self, app: Handle) -> BoxFuture<'_, Result<(), BoxError>>;
}

impl<H: Hooks> DynHooks for H {
    fn on_start<'a>(&'a self, app: &'a Handle) -> BoxFuture<'a, Result<(), BoxError>> {
        Hooks::on_start(self, app).boxed()
    }
    fn on_reload<'a>(&'a self, config: &'a Config) -> BoxFuture<'a, Result<(), BoxError>> {
        Hooks::on_reload(self, config).boxed()
    }
    fn on_close(&self) -> BoxFuture<'_, ()> {
        Hooks::on_close(self).boxed()
    }
    fn on_error(&self, error: &ErrorRecord) {
        Hooks::on_error(self, error)
    }
    fn summary(&self) -> String {
        Hooks::summary(self)
    }
    fn run(&self, app: Handle) -> BoxFuture<'_, Result<(), BoxError>> {
        Hooks::run(self, app).boxed()
    }
}
