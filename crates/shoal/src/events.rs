//! Event hooks: functions an application or a library binds to a point in the runtime's life
//! (start, configuration loaded, services started, before and after each call, reload, close),
//! run in priority order. A hook bound before calls can refuse a call, which is how an access
//! policy plugs in.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use shoal_rpc::{Reply, Request, RpcError};
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::warn;

use crate::config::Config;
use crate::BoxError;

/// Where in the runtime's life a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// After setup, before any listener is bound.
    Startup,
    /// A configuration was loaded and is about to be in force: at start and after each accepted
    /// reload.
    ConfigLoaded,
    /// Listeners serve and `on_start` has run.
    ServicesStarted,
    /// Before each call's handler runs; an error refuses the call.
    BeforeCall,
    /// After each call, with its outcome.
    AfterCall,
    /// A reload was accepted (after [`EventKind::ConfigLoaded`]).
    Reload,
    /// The application starts closing.
    Close,
}

/// What a hook is told.
#[derive(Debug)]
pub enum Event<'a> {
    Startup,
    ConfigLoaded(&'a Config),
    ServicesStarted,
    BeforeCall(&'a Request),
    AfterCall(&'a CallOutcome),
    Reload(&'a Config),
    Close,
}

impl Event<'_> {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Startup => EventKind::Startup,
            Event::ConfigLoaded(_) => EventKind::ConfigLoaded,
            Event::ServicesStarted => EventKind::ServicesStarted,
            Event::BeforeCall(_) => EventKind::BeforeCall,
            Event::AfterCall(_) => EventKind::AfterCall,
            Event::Reload(_) => EventKind::Reload,
            Event::Close => EventKind::Close,
        }
    }
}

/// How a call ended, for [`EventKind::AfterCall`] hooks.
#[derive(Debug)]
pub struct CallOutcome {
    pub method: String,
    pub error: Option<RpcError>,
    pub elapsed: Duration,
}

/// Priorities: hooks with a lower number run first; equal numbers run in the order bound.
pub mod priority {
    pub const HIGH: i32 = -100;
    pub const NORMAL: i32 = 0;
    pub const LOW: i32 = 100;
}

type HookFn = Arc<dyn Fn(&Event<'_>) -> Result<(), BoxError> + Send + Sync>;

/// The bound hooks, sorted by kind and priority.
#[derive(Clone, Default)]
pub(crate) struct Events {
    hooks: Vec<(EventKind, i32, HookFn)>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl Events {
    pub(crate) fn bind(
        &mut self,
        kind: EventKind,
        priority: i32,
        hook: impl Fn(&Event<'_>) -> Result<(), BoxError> + Send + Sync + 'static,
    ) {
        self.hooks.push((kind, priority, Arc::new(hook)));
        // Stable: equal priorities keep the order they were bound in.
        self.hooks.sort_by_key(|(_, priority, _)| *priority);
    }

    pub(crate) fn has(&self, kind: EventKind) -> bool {
        self.hooks.iter().any(|(k, _, _)| *k == kind)
    }

    /// Runs every hook bound to the event's kind. The first error stops the rest and is
    /// returned; for kinds that cannot be refused the caller logs it.
    pub(crate) fn emit(&self, event: &Event<'_>) -> Result<(), BoxError> {
        let kind = event.kind();
        for (_, _, hook) in self.hooks.iter().filter(|(k, _, _)| *k == kind) {
            hook(event)?;
        }
        Ok(())
    }

    /// Runs the hooks of an event that cannot be refused, logging a failure.
    pub(crate) fn notify(&self, event: &Event<'_>) {
        if let Err(error) = self.emit(event) {
            warn!(event = ?event.kind(), %error, "event hook failed");
        }
    }
}

/// Runs [`EventKind::BeforeCall`] and [`EventKind::AfterCall`] hooks around every call.
#[derive(Clone, Debug)]
pub(crate) struct CallEventsLayer {
    pub(crate) events: Arc<Events>,
}

impl<S> Layer<S> for CallEventsLayer {
    type Service = CallEvents<S>;

    fn layer(&self, inner: S) -> CallEvents<S> {
        CallEvents {
            inner,
            events: self.events.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct CallEvents<S> {
    inner: S,
    events: Arc<Events>,
}

impl<S> Service<Request> for CallEvents<S>
where
    S: Service<Request, Response = Reply, Error = RpcError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = RpcError;
    type Future = BoxFuture<'static, Result<Reply, RpcError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), RpcError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if let Err(refused) = self.events.emit(&Event::BeforeCall(&req)) {
            let error = match refused.downcast::<RpcError>() {
                Ok(rpc) => *rpc,
                Err(other) => RpcError::new(
                    shoal_rpc::codes::INVALID_PARAMS,
                    format!("{}: refused: {other}", req.method),
                ),
            };
            return Box::pin(std::future::ready(Err(error)));
        }
        let events = self.events.clone();
        let method = req.method.clone();
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            if events.has(EventKind::AfterCall) {
                let outcome = CallOutcome {
                    method,
                    error: result.as_ref().err().cloned(),
                    elapsed: started.elapsed(),
                };
                events.notify(&Event::AfterCall(&outcome));
            }
            result
        })
    }
}
