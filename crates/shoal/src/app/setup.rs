//! What an application declares while it is being built: its services and what they require,
//! typed configuration sections, timers, worker groups, shared state, middleware and event
//! hooks.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use shoal_rpc::{BoxReply, CallInPlace, Dispatch, InPlace, MethodInfo, Request, ServerBuilder};
use tower::{Layer, Service};

use crate::config::{Config, ConfigError};
use crate::events::{Event, EventKind, Events};
use crate::live::{ConfigCell, Live};
use crate::timer::Timer;
use crate::workers::{Worker, WorkerGroup};
use crate::{BoxError, Handle};

type Factory = Box<dyn FnOnce(&mut Setup) -> Result<Box<dyn Dispatch>, BoxError> + Send>;
pub(crate) type Wrap = Box<dyn FnOnce(ServerBuilder) -> ServerBuilder + Send>;

/// Values shared by type: handlers read them with `Context::state`, hooks and timers with
/// [`Handle::state`].
#[derive(Clone, Default)]
pub(crate) struct StateMap {
    pub(crate) values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for StateMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMap")
            .field("values", &self.values.len())
            .finish()
    }
}

impl StateMap {
    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.clone().downcast::<T>().ok())
    }
}

/// A registered service, not yet built.
pub struct ServiceEntry {
    pub(crate) name: String,
    pub(crate) requires: Vec<String>,
    pub(crate) factory: Option<Factory>,
}

impl std::fmt::Debug for ServiceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceEntry")
            .field("name", &self.name)
            .field("requires", &self.requires)
            .finish()
    }
}

impl ServiceEntry {
    /// Services that must start before this one, and start with it when it is enabled.
    pub fn requires<I, S>(&mut self, names: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.requires.extend(names.into_iter().map(Into::into));
        self
    }
}

/// The application as it is being declared, handed to the `setup` function of
/// [`crate::App::setup`] and to each service's factory.
pub struct Setup {
    pub(crate) handle: Handle,
    pub(crate) cell: Arc<ConfigCell>,
    pub(crate) services: Vec<ServiceEntry>,
    pub(crate) timers: Vec<Timer>,
    pub(crate) state: StateMap,
    pub(crate) wraps: Vec<Wrap>,
    pub(crate) events: Events,
    pub(crate) workers: Vec<WorkerGroup>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("services", &self.services)
            .field("timers", &self.timers.len())
            .field("workers", &self.workers)
            .finish()
    }
}

impl Setup {
    /// The configuration loaded at start.
    pub fn config(&self) -> Config {
        self.cell.snapshot().config.clone()
    }

    /// The running application's handle (heartbeat, status, control), for timers and services
    /// to keep.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Parses the top-level table `name` as `T` now, and again from every reloaded
    /// configuration; a reload whose section does not parse is rejected whole.
    pub fn section<T>(&mut self, name: &str) -> Result<Live<T>, ConfigError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.cell.register(name)
    }

    /// Registers a service built by `factory` if it is enabled (`services.enabled`, or all
    /// when that is absent) or required by one that is. Factories run in dependency order, so
    /// a factory finds the state its requirements put in.
    pub fn service<D, F>(&mut self, name: &str, factory: F) -> &mut ServiceEntry
    where
        D: Dispatch,
        F: FnOnce(&mut Setup) -> Result<D, BoxError> + Send + 'static,
    {
        self.services.push(ServiceEntry {
            name: name.to_owned(),
            requires: Vec::new(),
            factory: Some(Box::new(move |setup: &mut Setup| {
                factory(setup).map(|d| Box::new(d) as Box<dyn Dispatch>)
            })),
        });
        self.services.last_mut().expect("just pushed")
    }

    /// Registers an already built service under its trait's name.
    pub fn serve<D: Dispatch>(&mut self, service: D) -> &mut ServiceEntry {
        let name = service.service_name();
        self.service(name, move |_| Ok(service))
    }

    /// Adds a timer; the application's timers run one at a time unless a timer asks for its
    /// own task.
    pub fn timer(&mut self, timer: Timer) -> &mut Self {
        self.timers.push(timer);
        self
    }

    /// Declares a group of `count` workers running `body` as async tasks (`.processes()` on
    /// the result: as processes); `[workers] NAME = COUNT` in the configuration changes the
    /// count. See [`crate::workers`].
    pub fn workers<F, Fut>(&mut self, name: &str, count: usize, body: F) -> &mut WorkerGroup
    where
        F: Fn(Worker) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.workers.push(WorkerGroup::tasks(name, count, body));
        self.workers.last_mut().expect("just pushed")
    }

    /// Declares a group of `count` workers running the blocking `body` on OS threads of
    /// their own (`.processes()` on the result: as processes).
    pub fn thread_workers<F>(&mut self, name: &str, count: usize, body: F) -> &mut WorkerGroup
    where
        F: Fn(Worker) -> Result<(), BoxError> + Send + Sync + 'static,
    {
        self.workers.push(WorkerGroup::threads(name, count, body));
        self.workers.last_mut().expect("just pushed")
    }

    /// Shares `value` with every handler (`cx.state::<T>()`), hook and timer
    /// ([`Handle::state`]); one value per type, a second replaces the first.
    pub fn state<T: Send + Sync + 'static>(&mut self, value: T) -> &mut Self {
        self.state.values.insert(
            TypeId::of::<T>(),
            Arc::new(value) as Arc<dyn Any + Send + Sync>,
        );
        self
    }

    /// Shares a value that is already behind an `Arc` (see [`Setup::state`]).
    pub fn state_arc<T: Send + Sync + 'static>(&mut self, value: Arc<T>) -> &mut Self {
        self.state
            .values
            .insert(TypeId::of::<T>(), value as Arc<dyn Any + Send + Sync>);
        self
    }

    /// The shared value of type `T`, if one was put in.
    pub fn get_state<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.state.get::<T>()
    }

    /// Wraps every call to the application's services in a tower layer; the first added is
    /// the outermost.
    pub fn layer<L>(&mut self, layer: L) -> &mut Self
    where
        L: Layer<shoal_rpc::conn::Handler> + Send + 'static,
        L::Service: Service<Request, Response = shoal_rpc::Reply, Error = shoal_rpc::RpcError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.wraps
            .push(Box::new(move |builder: ServerBuilder| builder.layer(layer)));
        self
    }

    /// Binds `hook` to an event; lower `priority` runs first (see [`crate::events::priority`]).
    /// A [`EventKind::BeforeCall`] hook that returns an error refuses the call with it (an
    /// `RpcError` is sent as is).
    pub fn on<F>(&mut self, kind: EventKind, priority: i32, hook: F) -> &mut Self
    where
        F: Fn(&Event<'_>) -> Result<(), BoxError> + Send + Sync + 'static,
    {
        self.events.bind(kind, priority, hook);
        self
    }
}

/// A boxed service, served like the typed one inside.
pub(crate) struct Boxed(pub(crate) Box<dyn Dispatch>);

impl Dispatch for Boxed {
    fn service_name(&self) -> &'static str {
        self.0.service_name()
    }
    fn methods(&self) -> &'static [MethodInfo] {
        self.0.methods()
    }
    fn call(&self, req: Request) -> BoxReply {
        self.0.call(req)
    }
    fn call_in_place(&self, call: &mut CallInPlace<'_>) -> Option<InPlace> {
        self.0.call_in_place(call)
    }
    fn takes_calls_in_place(&self) -> bool {
        self.0.takes_calls_in_place()
    }
}
