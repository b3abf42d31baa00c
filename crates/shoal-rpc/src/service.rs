//! What the server dispatches to: a [`Request`] in, an encoded [`Reply`] out. Typed services
//! (from `#[shoal::service]`) implement [`Dispatch`]; the [`Router`] puts several behind one
//! tower `Service` so middleware layers wrap every method alike.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::blocking::BlockingPool;
use crate::conn::Peer;
use crate::error::RpcError;
use crate::extensions::Extensions;
use crate::in_place::{CallInPlace, InPlace};

/// The future a handler returns.
pub type BoxReply = Pin<Box<dyn Future<Output = Result<Reply, RpcError>> + Send + 'static>>;

/// A call as middleware and handlers see it.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub params: Vec<Value>,
    pub ctx: Context,
}

/// Facts about one call beside its arguments.
#[derive(Debug, Clone)]
pub struct Context {
    deadline: Option<Instant>,
    notification: bool,
    peer: Option<Peer>,
    blocking: BlockingPool,
    state: Extensions,
    more_input: bool,
}

impl Context {
    /// A context with no shared state (see [`Context::with_state`]).
    pub fn new(deadline: Option<Instant>, notification: bool, peer: Option<Peer>) -> Self {
        Self {
            deadline,
            notification,
            peer,
            blocking: BlockingPool::shared_default(),
            state: Extensions::default(),
            more_input: false,
        }
    }

    /// A context whose blocking work runs on `pool` (a server's own, rather than the shared
    /// default).
    pub fn with_pool(
        deadline: Option<Instant>,
        notification: bool,
        peer: Option<Peer>,
        blocking: BlockingPool,
    ) -> Self {
        Self {
            deadline,
            notification,
            peer,
            blocking,
            state: Extensions::default(),
            more_input: false,
        }
    }

    /// The same context, carrying `state` (a server's, see [`crate::ServerBuilder::state`]).
    pub fn with_state(mut self, state: Extensions) -> Self {
        self.state = state;
        self
    }

    /// The same context, saying whether more of the peer's messages were already read and
    /// wait behind this call (see [`Context::more_input`]).
    pub fn with_more_input(mut self, more_input: bool) -> Self {
        self.more_input = more_input;
        self
    }

    /// True when more of the peer's messages were already read and wait behind this call.
    /// A handler that can either finish its work at once on the connection's task or hand it
    /// to be done together with other calls (one disk sync for several writes, say) may hand
    /// it off when this is true: the connection has more to read meanwhile.
    pub fn more_input(&self) -> bool {
        self.more_input
    }

    /// The server's shared value of type `T`, if it was given one
    /// ([`crate::ServerBuilder::state`]).
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.state.get()
    }

    /// Like [`Context::state`], as a handle that may outlive the call (to move into a task).
    pub fn state_arc<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.state.get_arc()
    }

    /// All of the server's shared values.
    pub fn extensions(&self) -> &Extensions {
        &self.state
    }

    /// When the caller stops waiting: sent by shoal clients, set by the timeout layer.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// True for a notification: no reply will be sent.
    pub fn is_notification(&self) -> bool {
        self.notification
    }

    /// The other end of the connection the call came on; a handler may call back through it.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// Runs `f` on the server's bounded pool of blocking threads, never on the async executor.
    pub fn run_blocking<F, T>(&self, f: F) -> impl Future<Output = Result<T, RpcError>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.blocking.run(f)
    }
}

/// The MessagePack encoding of a call's result.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply(pub bytes::Bytes);

impl Reply {
    /// Encodes `value` (structs as maps with field names).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Reply, RpcError> {
        let mut out = Encoded::default();
        rmp_serde::encode::write_named(&mut out, value)
            .map_err(|e| RpcError::internal(format!("cannot encode the result: {e}")))?;
        Ok(Reply(out.take_bytes()))
    }

    /// The reply to a notification, never sent.
    pub fn none() -> Reply {
        Reply(bytes::Bytes::from_static(&[0xc0]))
    }

    pub fn to_value(&self) -> Value {
        rmpv::decode::read_value(&mut &self.0[..]).unwrap_or(Value::Nil)
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reply({})", self.to_value())
    }
}

/// Where [`Reply::encode`] writes: on the stack while the result is small, as most are, so
/// the reply costs one allocation of its exact size; in a growing buffer past that.
struct Encoded {
    small: [u8; 120],
    len: usize,
    large: Vec<u8>,
}

impl Default for Encoded {
    fn default() -> Self {
        Self {
            small: [0; 120],
            len: 0,
            large: Vec::new(),
        }
    }
}

impl std::io::Write for Encoded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self.small.get_mut(self.len..self.len + buf.len()) {
            Some(room) if self.large.is_empty() => {
                room.copy_from_slice(buf);
                self.len += buf.len();
            }
            _ => {
                if self.large.is_empty() {
                    self.large.reserve(2 * (self.len + buf.len()));
                    self.large.extend_from_slice(&self.small[..self.len]);
                }
                self.large.extend_from_slice(buf);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Encoded {
    /// Taken by reference: moving the whole struct would copy its stack buffer once more.
    fn take_bytes(&mut self) -> bytes::Bytes {
        if self.large.is_empty() {
            bytes::Bytes::copy_from_slice(&self.small[..self.len])
        } else {
            // A boxed slice becomes `Bytes` with no shared header to allocate.
            bytes::Bytes::from(std::mem::take(&mut self.large).into_boxed_slice())
        }
    }
}

/// A method's signature, for `shoal.methods`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    pub name: &'static str,
    /// `(name, Rust type)` of each positional parameter.
    pub params: &'static [(&'static str, &'static str)],
    pub returns: &'static str,
    /// One-way: called with a notification, no reply.
    pub notify: bool,
    /// Runs on the blocking pool.
    pub blocking: bool,
    /// Safe to retry when a call fails after it may have been sent.
    pub idempotent: bool,
}

/// A typed service: `#[shoal::service]` implements it for `<Trait>Server<T>`.
pub trait Dispatch: Send + Sync + 'static {
    /// The trait's name.
    fn service_name(&self) -> &'static str;
    /// Every method served.
    fn methods(&self) -> &'static [MethodInfo];
    /// Handles a call to one of [`Dispatch::methods`]; any other name answers method not found.
    fn call(&self, req: Request) -> BoxReply;

    /// Handles a call read in place from a connection's buffer, decoding its arguments
    /// straight from the bytes the peer sent and building its [`Context`] only for a
    /// handler that takes one, and polling the handler where it is made
    /// ([`CallInPlace::start`]): one done at once is answered there ([`InPlace::Answered`]).
    /// `None` declines: the call then comes to [`Dispatch::call`] as a [`Request`].
    /// `#[shoal::service]` implements it; by default it declines.
    fn call_in_place(&self, call: &mut CallInPlace<'_>) -> Option<InPlace> {
        let _ = call;
        None
    }

    /// True when [`Dispatch::call_in_place`] takes calls (an implementation of it says so):
    /// a router none of whose services does never reads a call in place, only to have it
    /// read again as a [`Request`].
    fn takes_calls_in_place(&self) -> bool {
        false
    }
}

/// Several [`Dispatch`] services behind one tower `Service`, plus the built-in methods.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    routes: HashMap<&'static str, Route>,
    /// The same table as a list, searched instead of hashing when it is short: a few length
    /// and byte compares beat SipHash on every call.
    few: Option<Vec<(&'static str, Route)>>,
    services: Vec<Arc<dyn Dispatch>>,
    /// Some service takes calls in place ([`Dispatch::takes_calls_in_place`]).
    in_place: bool,
    methods: Value,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.inner.routes.keys().collect();
        names.sort();
        f.debug_struct("Router").field("methods", &names).finish()
    }
}

/// Where a method is served: the service, and the method's place in its
/// [`Dispatch::methods`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) service: usize,
    pub(crate) method: usize,
}

/// Names of the methods every shoal server answers itself.
pub mod builtin {
    pub const PING: &str = "shoal.ping";
    pub const METHODS: &str = "shoal.methods";
    pub const HELLO: &str = "shoal.hello";
    pub const CANCEL: &str = "shoal.cancel";
    /// Notification from a server that is shutting down: send no new requests on this
    /// connection, and close it once the calls made are answered (see [`crate::conn`]).
    pub const GOAWAY: &str = "shoal.goaway";
}

impl Router {
    /// Builds the routing table; two services serving the same method name is an error
    /// naming both.
    pub fn new(services: Vec<Arc<dyn Dispatch>>) -> Result<Router, crate::Error> {
        let mut routes = HashMap::new();
        let mut listing = Vec::new();
        for (index, svc) in services.iter().enumerate() {
            for (method, m) in svc.methods().iter().enumerate() {
                if m.name.starts_with("shoal.") {
                    return Err(crate::Error::Config(format!(
                        "service {}: method name {} uses the reserved prefix `shoal.`",
                        svc.service_name(),
                        m.name
                    )));
                }
                let route = Route {
                    service: index,
                    method,
                };
                if let Some(Route { service: prev, .. }) = routes.insert(m.name, route) {
                    return Err(crate::Error::Config(format!(
                        "method {} is served by both {} and {}; rename one",
                        m.name,
                        services[prev].service_name(),
                        svc.service_name()
                    )));
                }
                listing.push(method_value(svc.service_name(), m));
            }
        }
        for name in [builtin::PING, builtin::METHODS] {
            listing.push(method_value(
                "shoal",
                &MethodInfo {
                    name,
                    params: &[],
                    returns: if name == builtin::PING {
                        "String"
                    } else {
                        "Vec<Method>"
                    },
                    notify: false,
                    blocking: false,
                    idempotent: true,
                },
            ));
        }
        Ok(Router {
            inner: Arc::new(RouterInner {
                few: (routes.len() <= 16)
                    .then(|| routes.iter().map(|(name, route)| (*name, *route)).collect()),
                routes,
                in_place: services.iter().any(|svc| svc.takes_calls_in_place()),
                services,
                methods: Value::Array(listing),
            }),
        })
    }

    /// The `shoal.methods` answer: one map per method.
    pub fn methods(&self) -> &Value {
        &self.inner.methods
    }

    /// True when some service takes calls read in place ([`Dispatch::takes_calls_in_place`]).
    pub(crate) fn takes_calls_in_place(&self) -> bool {
        self.inner.in_place
    }

    /// The service serving `method` as sent, with the name it serves it by; `None` for a
    /// built-in (`shoal.`) name or one no service serves. Compared as bytes: a name that
    /// matches is the service's own, and needs no check of its UTF-8.
    #[inline(always)]
    pub(crate) fn route(&self, method: &[u8]) -> Option<(&'static str, Route)> {
        match &self.inner.few {
            Some(few) => few
                .iter()
                .find(|(name, _)| same_bytes(name.as_bytes(), method))
                .copied(),
            None => {
                let method = std::str::from_utf8(method).ok()?;
                self.inner
                    .routes
                    .get_key_value(method)
                    .map(|(name, route)| (*name, *route))
            }
        }
    }

    /// Starts the handler of the service `call` is routed to ([`Router::route`]), for a
    /// call read in place; `None` when the service declines it (the call then goes to
    /// [`Router::dispatch`] as a [`Request`]).
    #[inline]
    pub(crate) fn dispatch_in_place(&self, call: &mut CallInPlace<'_>) -> Option<InPlace> {
        self.inner.services[call.route.service].call_in_place(call)
    }

    /// Finds and starts the handler for `req`.
    pub fn dispatch(&self, req: Request) -> BoxReply {
        // The built-ins take no argument: extra ones are refused, as for any method.
        match req.method.as_str() {
            builtin::PING => {
                return ready(
                    Args::new(builtin::PING, req.params, 0).and_then(|_| Reply::encode("pong")),
                )
            }
            builtin::METHODS => {
                return ready(
                    Args::new(builtin::METHODS, req.params, 0)
                        .and_then(|_| Reply::encode(&self.inner.methods)),
                )
            }
            _ => {}
        }
        match self.route(req.method.as_bytes()) {
            Some((_, route)) => self.inner.services[route.service].call(req),
            None => ready(Err(RpcError::method_not_found(&req.method))),
        }
    }
}

/// Equal bytes, compared in line: a method's name is a few bytes, for which slice equality
/// calls `memcmp`.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

fn method_value(service: &str, m: &MethodInfo) -> Value {
    let params = m
        .params
        .iter()
        .map(|(name, ty)| {
            Value::Map(vec![
                ("name".into(), (*name).into()),
                ("type".into(), (*ty).into()),
            ])
        })
        .collect();
    Value::Map(vec![
        ("name".into(), m.name.into()),
        ("service".into(), service.into()),
        ("params".into(), Value::Array(params)),
        ("returns".into(), m.returns.into()),
        ("notify".into(), m.notify.into()),
        ("blocking".into(), m.blocking.into()),
        ("idempotent".into(), m.idempotent.into()),
    ])
}

fn ready(r: Result<Reply, RpcError>) -> BoxReply {
    Box::pin(std::future::ready(r))
}

impl tower::Service<Request> for Router {
    type Response = Reply;
    type Error = RpcError;
    type Future = BoxReply;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), RpcError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> BoxReply {
        self.dispatch(req)
    }
}

/// Reads positional arguments for generated dispatch code, with errors that name the method
/// and the argument.
///
/// A call passes every argument the method takes, in order. Only a trailing `Option`
/// parameter may be left out (it reads as `None`; a caller written before the parameter was
/// added keeps working); any other missing argument, and any argument beyond the method's,
/// is an invalid-params error naming it.
#[derive(Debug)]
pub struct Args<'a> {
    method: &'static str,
    params: Params<'a>,
    index: usize,
}

/// Where [`Args`] reads from: a [`Request`]'s values, or the bytes of a [`CallInPlace`].
#[derive(Debug)]
enum Params<'a> {
    Values(std::vec::IntoIter<Value>),
    /// Within an array already checked whole ([`codec::read_call`](crate::codec)), with
    /// `left` items still to read.
    Bytes {
        rd: &'a [u8],
        left: usize,
    },
}

impl Args<'static> {
    /// Fails when more arguments came than the method takes.
    pub fn new(
        method: &'static str,
        params: Vec<Value>,
        arity: usize,
    ) -> Result<Args<'static>, RpcError> {
        check_arity(method, params.len(), arity)?;
        Ok(Args {
            method,
            params: Params::Values(params.into_iter()),
            index: 0,
        })
    }

    /// The one argument of a method that takes exactly one (a request type), as `T`: no
    /// argument or more than one is an invalid-params error naming `method`.
    pub fn one<T: DeserializeOwned + 'static>(
        method: &'static str,
        params: Vec<Value>,
    ) -> Result<T, RpcError> {
        Args::new(method, params, 1)?.next("request")
    }
}

impl<'a> Args<'a> {
    /// Reads from `params`, a MessagePack array; fails when more arguments came than the
    /// method takes. Inlined, as [`Args::next`] is.
    #[inline(always)]
    pub(crate) fn from_bytes(
        method: &'static str,
        params: &'a [u8],
        arity: usize,
    ) -> Result<Args<'a>, RpcError> {
        let mut rd = params;
        let left = match params.split_first() {
            Some((&m @ 0x90..=0x9f, items)) => {
                rd = items;
                (m & 0x0f) as usize
            }
            _ => rmp::decode::read_array_len(&mut rd)
                .map_err(|e| RpcError::invalid_params(format!("{method}: params: {e}")))?
                as usize,
        };
        check_arity(method, left, arity)?;
        Ok(Args {
            method,
            params: Params::Bytes { rd, left },
            index: 0,
        })
    }

    #[inline(always)]
    fn next_value(&mut self) -> Result<Option<Value>, RpcError> {
        match &mut self.params {
            Params::Values(values) => Ok(values.next()),
            Params::Bytes { left: 0, .. } => Ok(None),
            Params::Bytes { rd, left } => {
                *left -= 1;
                crate::codec::read_arg(rd).map(Some).map_err(|e| {
                    RpcError::invalid_params(format!(
                        "{}: argument {}: {e}",
                        self.method, self.index
                    ))
                })
            }
        }
    }

    /// The next argument as `T`. A missing argument reads as `None` when `T` is an `Option`
    /// and is an error naming it otherwise. `str` values with bad UTF-8 read as text with
    /// replacement characters.
    ///
    /// Inlined with what it calls, from the bytes to a `Value` parameter: a value returned
    /// through calls is written and read back at each, and a read of a value just written
    /// in smaller pieces waits for the writes. Decoding into other types is out of line.
    #[inline(always)]
    pub fn next<T: DeserializeOwned + 'static>(&mut self, name: &str) -> Result<T, RpcError> {
        let value = self.next_value()?;
        let index = self.index;
        self.index += 1;
        match value.map(as_is::<T>) {
            Some(Ok(v)) => Ok(v),
            Some(Err(value)) => self.decode(value, index, name),
            None => T::deserialize(Missing).map_err(|_| {
                RpcError::invalid_params(format!(
                    "{}: missing argument {index} `{name}` (only a trailing Option argument may be left out)",
                    self.method
                ))
            }),
        }
    }

    /// Argument `index` as a `T` other than [`Value`].
    #[inline(never)]
    fn decode<T: DeserializeOwned>(
        &self,
        value: Value,
        index: usize,
        name: &str,
    ) -> Result<T, RpcError> {
        // Old peers send bytes as `str`: a `Value` or byte parameter gets them untouched, and
        // only a type that insists on text reads them with replacement characters.
        let decoded = if has_bad_text(&value) {
            match crate::decode::from_value(value.clone()) {
                Ok(v) => Ok(v),
                Err(_) => crate::decode::from_value(fix_text(value)),
            }
        } else {
            crate::decode::from_value(value)
        };
        decoded.map_err(|e| {
            RpcError::invalid_params(format!("{}: argument {index} `{name}`: {e}", self.method))
        })
    }
}

#[inline(always)]
fn check_arity(method: &'static str, got: usize, arity: usize) -> Result<(), RpcError> {
    if got > arity {
        return Err(too_many_args(method, got, arity));
    }
    Ok(())
}

/// [`check_arity`]'s error, out of line: the check is made for every call.
#[cold]
#[inline(never)]
fn too_many_args(method: &'static str, got: usize, arity: usize) -> RpcError {
    RpcError::invalid_params(format!("{method} takes {arity} argument(s), got {got}"))
}

/// An argument the caller left out: only a type that asks for an `Option` accepts it (as
/// `None`), so a missing `Value`, unit or nil-accepting type is still an error.
struct Missing;

impl<'de> serde::Deserializer<'de> for Missing {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("missing"))
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_none()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

/// `value` itself when `T` is [`Value`]: a dynamic parameter or result skips the round trip
/// through serde (a deep copy). Any other `T` gets the value back to decode.
pub(crate) fn as_is<T: 'static>(value: Value) -> Result<T, Value> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        Some(v) => Ok(v.take().expect("slot is filled")),
        None => Err(slot.expect("slot is filled")),
    }
}

fn has_bad_text(v: &Value) -> bool {
    match v {
        Value::String(s) => s.as_str().is_none(),
        Value::Array(items) => items.iter().any(has_bad_text),
        Value::Map(entries) => entries
            .iter()
            .any(|(k, v)| has_bad_text(k) || has_bad_text(v)),
        _ => false,
    }
}

fn fix_text(v: Value) -> Value {
    match v {
        Value::String(s) if s.as_str().is_none() => {
            Value::from(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(fix_text).collect()),
        Value::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (fix_text(k), fix_text(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::raw_str;

    /// Small results stay on the stack and larger ones spill into a buffer, in one write
    /// or across several: the bytes are rmp-serde's either way.
    #[test]
    fn a_reply_encodes_as_rmp_serde_does_on_either_side_of_the_stack_buffer() {
        for n in [0, 1, 100, 116, 117, 118, 300, 5000] {
            let one = "x".repeat(n);
            let many: Vec<String> = (0..n / 10).map(|i| format!("item {i}")).collect();
            let one_reply = Reply::encode(&one).unwrap();
            assert_eq!(one_reply.0, rmp_serde::to_vec_named(&one).unwrap(), "{n}");
            let many_reply = Reply::encode(&many).unwrap();
            assert_eq!(many_reply.0, rmp_serde::to_vec_named(&many).unwrap(), "{n}");
        }
    }

    /// A service that only takes `Request`s, as hand-written ones do by default.
    struct Plain;

    impl Dispatch for Plain {
        fn service_name(&self) -> &'static str {
            "Plain"
        }
        fn methods(&self) -> &'static [MethodInfo] {
            &[]
        }
        fn call(&self, _: Request) -> BoxReply {
            ready(Reply::encode(&()))
        }
    }

    #[test]
    fn a_router_of_services_that_take_requests_only_reads_no_call_in_place() {
        let router = Router::new(vec![Arc::new(Plain)]).unwrap();
        assert!(!router.takes_calls_in_place());
    }

    #[test]
    fn args_name_the_method_and_argument_at_fault() {
        let mut args = Args::new("add", vec![1.into(), "x".into()], 2).unwrap();
        assert_eq!(args.next::<i64>("a").unwrap(), 1);
        let err = args.next::<i64>("b").unwrap_err();
        assert_eq!(err.code, crate::codes::INVALID_PARAMS);
        assert!(
            err.message.starts_with("add: argument 1 `b`:"),
            "{}",
            err.message
        );
        let err = Args::new("add", vec![1.into(); 3], 2).unwrap_err();
        assert_eq!(err.message, "add takes 2 argument(s), got 3");
    }

    #[test]
    fn only_a_trailing_option_may_be_left_out() {
        let mut args = Args::new("put", vec![1.into()], 3).unwrap();
        assert_eq!(args.next::<i64>("key").unwrap(), 1);
        assert_eq!(args.next::<Option<String>>("note").unwrap(), None);
        let err = args.next::<Option<i64>>("ttl").unwrap();
        assert_eq!(err, None);
        // Anything but an Option is missing, even a type that would read a nil.
        for missing in [
            Args::new("put", vec![], 1).unwrap().next::<i64>("key"),
            Args::new("put", vec![], 1)
                .unwrap()
                .next::<Value>("key")
                .map(|_| 0),
            Args::new("put", vec![], 1)
                .unwrap()
                .next::<()>("key")
                .map(|_| 0),
        ] {
            let err = missing.unwrap_err();
            assert_eq!(err.code, crate::codes::INVALID_PARAMS);
            assert_eq!(
                err.message,
                "put: missing argument 0 `key` (only a trailing Option argument may be left out)"
            );
        }
        // An Option passed as nil is None too.
        let mut args = Args::new("put", vec![Value::Nil], 1).unwrap();
        assert_eq!(args.next::<Option<i64>>("ttl").unwrap(), None);
    }

    #[test]
    fn bad_utf8_and_bin_read_as_strings() {
        let mut args = Args::new(
            "greet",
            vec![raw_str(&[b'h', 0xff]), Value::Binary(b"bin".to_vec())],
            3,
        )
        .unwrap();
        assert_eq!(args.next::<String>("a").unwrap(), "h\u{fffd}");
        assert_eq!(args.next::<String>("b").unwrap(), "bin");
        assert_eq!(args.next::<Option<String>>("c").unwrap(), None);
        // A `Value` parameter keeps the bytes exactly as they came.
        let mut args = Args::new("echo", vec![raw_str(&[0, 0xff])], 1).unwrap();
        assert_eq!(args.next::<Value>("x").unwrap(), raw_str(&[0, 0xff]));
    }
}
