//! Calls read in place from a connection's buffer: the call a router hands to a typed
//! service without building a [`Request`](crate::Request), and the finished handler futures
//! a connection keeps so that the next call to the same method reuses their memory and their
//! handle on the service instead of allocating and counting again.

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::BytesMut;
use futures_util::task::noop_waker_ref;
use rmpv::Value;
use tokio::time::Instant;

use crate::blocking::BlockingPool;
use crate::conn::{encode_reply, log_notification, Peer};
use crate::error::RpcError;
use crate::extensions::Extensions;
use crate::service::{Args, BoxReply, Context, Reply, Route};
use crate::throttle::LogThrottle;

/// A call read in place from a connection's buffer (see
/// [`Dispatch::call_in_place`](crate::Dispatch::call_in_place)): a server without middleware
/// hands each call to its router this way, with no [`Request`](crate::Request) built for it.
#[derive(Debug)]
pub struct CallInPlace<'a> {
    /// The router's own name for the method (see [`Router::route`](crate::Router)).
    pub(crate) method: &'static str,
    pub(crate) route: Route,
    /// The params array as sent, header included.
    pub(crate) params: &'a [u8],
    pub(crate) deadline: Option<Instant>,
    /// The handler may run now. False for a notification behind others still running: it
    /// must wait its turn, so [`CallInPlace::start`] makes its future without polling it.
    pub(crate) run_now: bool,
    pub(crate) more_input: bool,
    pub(crate) peer: &'a Peer,
    pub(crate) blocking: &'a BlockingPool,
    pub(crate) state: &'a Extensions,
    pub(crate) kept: &'a Kept,
    /// The call's msgid: `None` for a notification.
    pub(crate) id: Option<&'a Value>,
    /// The replies of the connection's current read, written together.
    pub(crate) replies: &'a mut BytesMut,
    /// The largest reply the connection sends.
    pub(crate) max_reply: usize,
    pub(crate) failed_notifications: &'a Mutex<LogThrottle>,
}

/// How a call read in place started. Only [`CallInPlace::start`] and its kin make one, so
/// a call said to be answered was answered.
pub enum InPlace {
    /// The call is answered (or, a notification, done): its handler finished on its first
    /// poll, or it was refused before it ran.
    Answered(Answered),
    /// The handler has yet to finish, polled once already (or, a notification that waits its
    /// turn, to start): the connection runs it.
    Running(BoxReply),
}

/// Proof that [`CallInPlace::answer`] answered a call: nothing outside this crate makes one.
#[derive(Debug)]
pub struct Answered(());

impl std::fmt::Debug for InPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InPlace::Answered(_) => f.write_str("Answered"),
            InPlace::Running(_) => f.write_str("Running"),
        }
    }
}

impl<'a> CallInPlace<'a> {
    /// The method's name, as its service serves it.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The method's place in its service's [`Dispatch::methods`](crate::Dispatch::methods):
    /// generated code dispatches on it rather than comparing the name again.
    pub fn method_index(&self) -> usize {
        self.route.method
    }

    /// The call's arguments, as [`Args::new`] reads them from a [`Request`](crate::Request).
    #[inline(always)]
    pub fn args(&self, method: &'static str, arity: usize) -> Result<Args<'a>, RpcError> {
        Args::from_bytes(method, self.params, arity)
    }

    /// The [`Context`] a [`Request`](crate::Request) for this call would carry.
    pub fn context(&self) -> Context {
        Context::with_pool(
            self.deadline,
            self.id.is_none(),
            Some(self.peer.clone()),
            self.blocking.clone(),
        )
        .with_state(self.state.clone())
        .with_more_input(self.more_input)
    }

    /// Starts the handler: `make` turns a handle on `service` into the call's future, which
    /// gives the handle back with its result. A future that finishes on its first poll
    /// leaves its memory and the handle with the connection for the next call to this
    /// method, so a handler that never waits costs no allocation and no reference count.
    #[inline]
    pub fn start<T, F>(&mut self, service: &Arc<T>, make: impl FnOnce(Arc<T>) -> F) -> InPlace
    where
        T: Send + Sync + 'static,
        F: Future<Output = (Result<Reply, RpcError>, Arc<T>)> + Send + 'static,
    {
        let (kept, slot, run_now) = (self.kept, self.route.slot(), self.run_now);
        kept.start(slot, run_now, service, make, |result| self.answer(result))
    }

    /// [`CallInPlace::start`] for a one-way handler that cannot fail: its future gives back
    /// only the handle, and a notification it finishes at once needs no answer at all.
    #[inline]
    pub fn start_one_way<T, F>(
        &mut self,
        service: &Arc<T>,
        make: impl FnOnce(Arc<T>) -> F,
    ) -> InPlace
    where
        T: Send + Sync + 'static,
        F: Future<Output = ((), Arc<T>)> + Send + 'static,
    {
        let (kept, slot, run_now) = (self.kept, self.route.slot(), self.run_now);
        kept.start(slot, run_now, service, make, |()| match self.id {
            None => InPlace::Answered(Answered(())),
            Some(_) => self.answer(Ok(Reply::none())),
        })
    }

    /// Answers the call now with `result` (what [`Dispatch::call_in_place`] then returns):
    /// a reply goes with the others of this read, a failed notification to the connection's
    /// log. A notification that waits its turn keeps it: `result` is queued behind the
    /// notifications before it.
    ///
    /// [`Dispatch::call_in_place`]: crate::Dispatch::call_in_place
    pub fn answer(&mut self, result: Result<Reply, RpcError>) -> InPlace {
        if !self.run_now {
            return InPlace::Running(Box::pin(std::future::ready(result)));
        }
        match self.id {
            Some(id) => encode_reply(self.replies, id, result, self.max_reply),
            None => log_notification(self.peer, self.failed_notifications, result),
        }
        InPlace::Answered(Answered(()))
    }
}

/// How many finished futures a connection keeps: a few methods called in turn each find
/// theirs, and an idle connection holds at most this many.
const KEPT: usize = 4;

/// A future larger than this is not kept: a connection would hold it while idle.
const MAX_KEPT_SIZE: usize = 512;

/// A connection's finished handler futures, one slot per few methods (see
/// [`CallInPlace::start`]). Only the connection's reader uses it.
#[derive(Default)]
pub(crate) struct Kept {
    slots: [Cell<Option<Box<dyn Any + Send>>>; KEPT],
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept").finish_non_exhaustive()
    }
}

/// What a slot holds: the last call's future, finished, and the handle it gave back.
struct Finished<T, F> {
    fut: Pin<Box<F>>,
    service: Option<Arc<T>>,
}

impl Kept {
    /// See [`CallInPlace::start`]; `answer` takes the result of a future done at once.
    #[inline]
    fn start<T, O, F>(
        &self,
        slot: usize,
        run_now: bool,
        service: &Arc<T>,
        make: impl FnOnce(Arc<T>) -> F,
        answer: impl FnOnce(O) -> InPlace,
    ) -> InPlace
    where
        T: Send + Sync + 'static,
        O: Outcome,
        F: Future<Output = (O, Arc<T>)> + Send + 'static,
    {
        if !run_now {
            return InPlace::Running(hand_back(make(Arc::clone(service))));
        }
        if size_of::<F>() > MAX_KEPT_SIZE {
            let mut fut = Box::pin(make(Arc::clone(service)));
            return match poll_once(fut.as_mut()) {
                Poll::Ready((outcome, _)) => answer(outcome),
                Poll::Pending => InPlace::Running(hand_back(fut)),
            };
        }
        let cell = &self.slots[slot % KEPT];
        match cell.take().map(|k| k.downcast::<Finished<T, F>>()) {
            Some(Ok(mut finished)) => {
                // The handle is the one this service was kept with, unless the slot is
                // another instance's of the same type.
                let handle = match finished.service.take() {
                    Some(handle) if Arc::ptr_eq(&handle, service) => handle,
                    _ => Arc::clone(service),
                };
                finished.fut.set(make(handle));
                match poll_once(finished.fut.as_mut()) {
                    Poll::Ready((outcome, handle)) => {
                        finished.service = Some(handle);
                        cell.set(Some(finished));
                        answer(outcome)
                    }
                    // The future leaves the slot to run on its own.
                    Poll::Pending => InPlace::Running(hand_back(finished.fut)),
                }
            }
            other => {
                let mut fut = Box::pin(make(Arc::clone(service)));
                match poll_once(fut.as_mut()) {
                    Poll::Ready((outcome, handle)) => {
                        cell.set(Some(Box::new(Finished {
                            fut,
                            service: Some(handle),
                        })));
                        answer(outcome)
                    }
                    // The slot keeps another method's future, if it held one.
                    Poll::Pending => {
                        cell.set(other.and_then(Result::err));
                        InPlace::Running(hand_back(fut))
                    }
                }
            }
        }
    }
}

impl Route {
    /// The slot of [`Kept`] this method's futures go to.
    fn slot(&self) -> usize {
        self.service.wrapping_mul(7).wrapping_add(self.method)
    }
}

/// What a handler's future gives besides the handle: its result, or nothing for a one-way
/// handler that cannot fail.
trait Outcome: Send + 'static {
    fn into_result(self) -> Result<Reply, RpcError>;
}

impl Outcome for Result<Reply, RpcError> {
    fn into_result(self) -> Result<Reply, RpcError> {
        self
    }
}

impl Outcome for () {
    fn into_result(self) -> Result<Reply, RpcError> {
        Ok(Reply::none())
    }
}

/// The reader's future for a call that runs on its own: `fut`'s result without the handle.
fn hand_back<T, O, F>(fut: F) -> BoxReply
where
    T: Send + Sync + 'static,
    O: Outcome,
    F: Future<Output = (O, Arc<T>)> + Send + 'static,
{
    Box::pin(async move { fut.await.0.into_result() })
}

/// Polls `fut` once, with no waker to wake: futures register their waker again at every
/// poll, so one that is not done here is polled again later from a task.
#[inline]
pub(crate) fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(noop_waker_ref());
    fut.poll(&mut cx)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct Service;

    /// Done at its first poll, with `n`.
    struct Ready {
        n: i64,
        service: Option<Arc<Service>>,
    }

    impl Future for Ready {
        type Output = (Result<Reply, RpcError>, Arc<Service>);
        fn poll(mut self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<Self::Output> {
            let service = self.service.take().expect("polled after it was done");
            Poll::Ready((Reply::encode(&self.n), service))
        }
    }

    /// Done at its second poll, with `n`, as `yield_now` is; says when it is first polled.
    struct Later {
        n: i64,
        polled: Arc<AtomicBool>,
        service: Option<Arc<Service>>,
    }

    impl Future for Later {
        type Output = (Result<Reply, RpcError>, Arc<Service>);
        fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
            if !self.polled.swap(true, Ordering::Relaxed) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let service = self.service.take().expect("polled after it was done");
            Poll::Ready((Reply::encode(&self.n), service))
        }
    }

    /// Done at its first poll, too large to keep.
    struct Big {
        pad: [u8; MAX_KEPT_SIZE + 1],
        service: Option<Arc<Service>>,
    }

    impl Future for Big {
        type Output = (Result<Reply, RpcError>, Arc<Service>);
        fn poll(mut self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<Self::Output> {
            let service = self.service.take().expect("polled after it was done");
            Poll::Ready((Reply::encode(&self.pad.len()), service))
        }
    }

    /// Starts a [`Ready`] call in `slot`; the answer, if it came at once, goes to `got`.
    fn ready(
        kept: &Kept,
        slot: usize,
        service: &Arc<Service>,
        n: i64,
        got: &mut Vec<Value>,
    ) -> InPlace {
        let make = |service| Ready {
            n,
            service: Some(service),
        };
        kept.start(slot, true, service, make, answered_to(got))
    }

    /// An answer given at once goes to `got`.
    fn answered_to(got: &mut Vec<Value>) -> impl FnOnce(Result<Reply, RpcError>) -> InPlace + '_ {
        |result| {
            got.push(result.unwrap().to_value());
            InPlace::Answered(Answered(()))
        }
    }

    /// Starts a [`Later`] call in slot 0, polled at once when `run_now`; it is done at its
    /// first poll if `polled` says it was polled before.
    fn later(
        kept: &Kept,
        run_now: bool,
        service: &Arc<Service>,
        polled: bool,
        got: &mut Vec<Value>,
    ) -> (InPlace, Arc<AtomicBool>) {
        let polled = Arc::new(AtomicBool::new(polled));
        let make = |service| Later {
            n: 7,
            polled: polled.clone(),
            service: Some(service),
        };
        let started = kept.start(0, run_now, service, make, answered_to(got));
        (started, polled)
    }

    /// What `look` sees of `slot`, which is left as it was.
    fn peek<R>(kept: &Kept, slot: usize, look: impl FnOnce(Option<&dyn Any>) -> R) -> R {
        let held = kept.slots[slot].take();
        let seen = look(held.as_deref().map(|held| held as &dyn Any));
        kept.slots[slot].set(held);
        seen
    }

    fn holds_any(kept: &Kept, slot: usize) -> bool {
        peek(kept, slot, |held| held.is_some())
    }

    /// Where the future kept in `slot` lies, if it is a [`Ready`].
    fn kept_ready(kept: &Kept, slot: usize) -> Option<*const Ready> {
        peek(kept, slot, |held| {
            held?
                .downcast_ref::<Finished<Service, Ready>>()
                .map(|finished| &*finished.fut as *const Ready)
        })
    }

    async fn result_of(started: InPlace) -> Value {
        match started {
            InPlace::Running(fut) => fut.await.unwrap().to_value(),
            InPlace::Answered(_) => panic!("answered at once"),
        }
    }

    #[test]
    fn a_call_done_at_once_leaves_its_memory_and_handle_for_the_next() {
        let (kept, service, mut got) = (Kept::default(), Arc::new(Service), Vec::new());
        ready(&kept, 1, &service, 1, &mut got);
        let first = kept_ready(&kept, 1).expect("kept");
        // The service, and the handle the slot keeps.
        assert_eq!(Arc::strong_count(&service), 2);
        for n in 2..=5 {
            assert!(matches!(
                ready(&kept, 1, &service, n, &mut got),
                InPlace::Answered(_)
            ));
            assert_eq!(kept_ready(&kept, 1), Some(first), "the same memory");
            assert_eq!(Arc::strong_count(&service), 2, "no handle more");
        }
        assert_eq!(got, (1..=5).map(Value::from).collect::<Vec<_>>());
        // Another slot is another method's.
        ready(&kept, 2, &service, 6, &mut got);
        assert_ne!(kept_ready(&kept, 2), Some(first));
        assert_eq!(Arc::strong_count(&service), 3);
    }

    #[test]
    fn a_future_too_large_is_answered_at_once_but_not_kept() {
        let (kept, service, mut got) = (Kept::default(), Arc::new(Service), Vec::new());
        let make = |service| Big {
            pad: [0; MAX_KEPT_SIZE + 1],
            service: Some(service),
        };
        let started = kept.start(3, true, &service, make, answered_to(&mut got));
        assert!(matches!(started, InPlace::Answered(_)));
        assert_eq!(got, [Value::from(MAX_KEPT_SIZE + 1)]);
        assert!(!holds_any(&kept, 3));
        assert_eq!(Arc::strong_count(&service), 1);
    }

    #[test]
    fn another_instance_of_the_service_gets_its_own_handle() {
        let (kept, mut got) = (Kept::default(), Vec::new());
        let (one, two) = (Arc::new(Service), Arc::new(Service));
        ready(&kept, 0, &one, 1, &mut got);
        ready(&kept, 0, &two, 2, &mut got);
        assert_eq!(Arc::strong_count(&one), 1, "the first handle let go");
        assert_eq!(Arc::strong_count(&two), 2);
        assert_eq!(got, [Value::from(1), Value::from(2)]);
    }

    #[tokio::test]
    async fn a_call_not_done_at_once_runs_on_its_own_and_the_slot_keeps_what_it_held() {
        let (kept, service, mut got) = (Kept::default(), Arc::new(Service), Vec::new());
        ready(&kept, 0, &service, 1, &mut got);
        let before = kept_ready(&kept, 0);
        let (started, polled) = later(&kept, true, &service, false, &mut got);
        assert!(polled.load(Ordering::Relaxed), "polled where it was made");
        assert_eq!(result_of(started).await, Value::from(7));
        assert_eq!(
            kept_ready(&kept, 0),
            before,
            "the other method's future stays"
        );

        // Done at once, it takes the slot; the next of its kind is not and leaves it.
        let (started, _) = later(&kept, true, &service, true, &mut got);
        assert!(matches!(started, InPlace::Answered(_)));
        assert!(kept_ready(&kept, 0).is_none() && holds_any(&kept, 0));
        let (started, _) = later(&kept, true, &service, false, &mut got);
        assert!(!holds_any(&kept, 0));
        assert_eq!(
            Arc::strong_count(&service),
            2,
            "the running call holds a handle"
        );
        assert_eq!(result_of(started).await, Value::from(7));
        assert_eq!(Arc::strong_count(&service), 1);
        assert_eq!(got, [Value::from(1), Value::from(7)]);
    }

    #[tokio::test]
    async fn a_call_that_must_wait_its_turn_is_not_polled() {
        let (kept, service, mut got) = (Kept::default(), Arc::new(Service), Vec::new());
        let (started, polled) = later(&kept, false, &service, false, &mut got);
        assert!(!polled.load(Ordering::Relaxed));
        assert!(!holds_any(&kept, 0));
        assert_eq!(result_of(started).await, Value::from(7));
        assert!(got.is_empty());
    }
}
