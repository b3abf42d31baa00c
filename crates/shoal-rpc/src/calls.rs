//! The calls this end made on one connection and that wait for an answer: one table per
//! connection, keyed by msgid. The reader leaves each answer in its call's entry and wakes the
//! caller; one sweep per connection fails the calls whose deadline passed.
//!
//! A waiting call costs one entry here, with no channel and no timer of its own. The sweep
//! sleeps until the earliest deadline it knows of; only a call due before that wakes it early
//! (with one timeout for every call, none does), and when it wakes it looks at every entry
//! once. A caller finds the outcome in its entry, takes it and removes the entry; a caller
//! that gives up removes its entry itself.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::task::{Context, Poll, Waker};

use rmpv::Value;
use tokio::time::Instant;

/// What the other end answered: the result, or the error it sent.
pub(crate) type Answer = Result<Value, Value>;

/// How a call ended, as its caller finds it.
pub(crate) enum Outcome {
    Answered(Answer),
    /// The deadline passed first. The entry stays until the caller removes it, and counts as
    /// outstanding until then: the caller still has to tell the other end it gave up.
    Expired,
    /// The connection closed first.
    Closed,
}

enum Slot {
    Waiting {
        deadline: Instant,
        waker: Option<Waker>,
    },
    Done(Outcome),
}

/// The table. Every method runs under the connection's lock on it.
#[derive(Default)]
pub(crate) struct Calls {
    slots: HashMap<u32, Slot, BuildHasherDefault<IdHasher>>,
    /// Entries not yet answered or closed (waiting or expired), see [`Calls::outstanding`].
    outstanding: usize,
    /// When the sweep is set to wake, if it is.
    sweep_at: Option<Instant>,
}

impl Calls {
    /// Calls without an answer: waiting, or expired and not yet given up by their caller.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Records call `id`, due at `deadline`. True when the sweep must wake sooner than it is
    /// set to (it is set to nothing, or to a later time).
    pub(crate) fn insert(&mut self, id: u32, deadline: Instant) -> bool {
        let slot = Slot::Waiting {
            deadline,
            waker: None,
        };
        if let Some(old) = self.slots.insert(id, slot) {
            // An id comes round again only after 2^31 calls, and every caller removes its
            // entry when it ends: only a call future leaked without being dropped leaves one.
            if counts(&old) {
                self.outstanding -= 1;
            }
        }
        self.outstanding += 1;
        let sooner = self.sweep_at.is_none_or(|at| deadline < at);
        if sooner {
            self.sweep_at = Some(deadline);
        }
        sooner
    }

    /// Leaves the answer to call `id`; returns the waker of its caller, to wake once the
    /// lock is let go. An answer to a call that is no longer waiting is dropped.
    pub(crate) fn answer(&mut self, id: u32, answer: Answer) -> Option<Waker> {
        let slot = self.slots.get_mut(&id)?;
        let Slot::Waiting { waker, .. } = slot else {
            return None;
        };
        let waker = waker.take();
        *slot = Slot::Done(Outcome::Answered(answer));
        self.outstanding -= 1;
        waker
    }

    /// The caller's look at call `id`: the outcome once there is one (an expired entry stays,
    /// see [`Outcome::Expired`]), or pending with the caller's waker kept.
    pub(crate) fn poll(&mut self, id: u32, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.slots.get_mut(&id) {
            Some(Slot::Waiting { waker, .. }) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(Slot::Done(Outcome::Expired)) => Poll::Ready(Outcome::Expired),
            Some(Slot::Done(_)) => match self.slots.remove(&id) {
                Some(Slot::Done(outcome)) => Poll::Ready(outcome),
                _ => unreachable!("the entry was just seen done"),
            },
            // Removed only by its caller, which does not look again.
            None => Poll::Ready(Outcome::Closed),
        }
    }

    /// Removes the entry of a caller that gives up. True when the call had no answer (it
    /// waited or expired): the other end may still be working on it.
    pub(crate) fn remove(&mut self, id: u32) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        let unanswered = counts(&slot);
        if unanswered {
            self.outstanding -= 1;
        }
        unanswered
    }

    /// Marks every waiting call expired whose deadline is at or before `now`, pushing their
    /// wakers onto `wake`. Returns when the sweep should wake next: the earliest deadline
    /// still waiting.
    pub(crate) fn expire(&mut self, now: Instant, wake: &mut Vec<Waker>) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for slot in self.slots.values_mut() {
            let Slot::Waiting { deadline, waker } = slot else {
                continue;
            };
            if *deadline <= now {
                wake.extend(waker.take());
                *slot = Slot::Done(Outcome::Expired);
            } else if next.is_none_or(|at| *deadline < at) {
                next = Some(*deadline);
            }
        }
        self.sweep_at = next;
        next
    }

    /// The connection closed: every waiting call ends as closed, their wakers pushed onto
    /// `wake`. Answers already in stay for their callers.
    pub(crate) fn close(&mut self, wake: &mut Vec<Waker>) {
        for slot in self.slots.values_mut() {
            if let Slot::Waiting { waker, .. } = slot {
                wake.extend(waker.take());
                *slot = Slot::Done(Outcome::Closed);
                self.outstanding -= 1;
            }
        }
        self.sweep_at = None;
    }
}

/// True for an entry that counts as outstanding.
fn counts(slot: &Slot) -> bool {
    matches!(slot, Slot::Waiting { .. } | Slot::Done(Outcome::Expired))
}

/// Hashes a msgid with one multiplication. The ids are this end's own, handed out in
/// sequence (no peer chooses them), so what the table needs is their bits spread to the top,
/// not SipHash's resistance to chosen keys.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(SPREAD);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(SPREAD);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// 2^64 divided by the golden ratio, odd: consecutive ids land far apart in every bit.
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    use super::*;

    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(Default::default()));
        (count.clone(), Waker::from(count))
    }

    fn woken(count: &Count) -> usize {
        count.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn an_answer_wakes_its_caller_once_and_is_taken_once() {
        let mut calls = Calls::default();
        let now = Instant::now();
        assert!(calls.insert(1, now + Duration::from_secs(5)));
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(calls.poll(1, &mut cx).is_pending());
        assert!(
            calls.poll(1, &mut cx).is_pending(),
            "polled again, same waker"
        );
        assert_eq!(calls.outstanding(), 1);
        calls.answer(1, Ok(Value::from(7))).unwrap().wake();
        assert_eq!(woken(&count), 1);
        assert_eq!(calls.outstanding(), 0);
        match calls.poll(1, &mut cx) {
            Poll::Ready(Outcome::Answered(Ok(v))) => assert_eq!(v, Value::from(7)),
            _ => panic!("expected the answer"),
        }
        assert!(!calls.remove(1), "the entry went with its answer");
        assert!(
            calls.answer(1, Ok(Value::Nil)).is_none(),
            "a late second answer is dropped"
        );
    }

    #[test]
    fn the_sweep_is_woken_only_for_a_sooner_deadline() {
        let mut calls = Calls::default();
        let now = Instant::now();
        assert!(calls.insert(1, now + Duration::from_secs(5)));
        assert!(!calls.insert(2, now + Duration::from_secs(6)));
        assert!(calls.insert(3, now + Duration::from_secs(1)));
        let mut wake = Vec::new();
        assert_eq!(
            calls.expire(now + Duration::from_secs(1), &mut wake),
            Some(now + Duration::from_secs(5))
        );
        assert!(!calls.insert(4, now + Duration::from_secs(7)));
    }

    #[test]
    fn an_expired_call_stays_outstanding_until_its_caller_gives_it_up() {
        let mut calls = Calls::default();
        let now = Instant::now();
        calls.insert(1, now + Duration::from_millis(10));
        calls.insert(2, now + Duration::from_millis(50));
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(calls.poll(1, &mut cx).is_pending());
        let mut wake = Vec::new();
        let next = calls.expire(now + Duration::from_millis(20), &mut wake);
        assert_eq!(next, Some(now + Duration::from_millis(50)));
        wake.into_iter().for_each(Waker::wake);
        assert_eq!(woken(&count), 1);
        assert!(matches!(
            calls.poll(1, &mut cx),
            Poll::Ready(Outcome::Expired)
        ));
        assert_eq!(calls.outstanding(), 2, "call 1 not yet given up");
        assert!(
            calls.remove(1),
            "expired is unanswered: the other end is told"
        );
        assert_eq!(calls.outstanding(), 1);
        assert!(
            calls.answer(1, Ok(Value::Nil)).is_none(),
            "an answer after the caller gave up is dropped"
        );
    }

    #[test]
    fn closing_ends_the_waiting_and_keeps_answers_already_in() {
        let mut calls = Calls::default();
        let later = Instant::now() + Duration::from_secs(5);
        calls.insert(1, later);
        calls.insert(2, later);
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(calls.poll(2, &mut cx).is_pending());
        assert!(
            calls.answer(1, Ok(Value::from(1))).is_none(),
            "never polled"
        );
        let mut wake = Vec::new();
        calls.close(&mut wake);
        wake.into_iter().for_each(Waker::wake);
        assert_eq!(woken(&count), 1);
        assert_eq!(calls.outstanding(), 0);
        assert!(matches!(
            calls.poll(1, &mut cx),
            Poll::Ready(Outcome::Answered(Ok(_)))
        ));
        assert!(matches!(
            calls.poll(2, &mut cx),
            Poll::Ready(Outcome::Closed)
        ));
        assert!(calls.slots.is_empty());
    }

    #[test]
    fn consecutive_ids_spread_over_the_top_bits() {
        let top = |id: u32| {
            let mut h = IdHasher::default();
            h.write_u32(id);
            h.finish() >> 57
        };
        let distinct: std::collections::HashSet<u64> = (0..64).map(top).collect();
        assert!(
            distinct.len() > 32,
            "{} distinct tags of 64",
            distinct.len()
        );
    }
}
