//! A future polled again only once it has been woken ([`OnWake`]): a loop that `select!`s on
//! a rarely-ready future every turn (a connection's shutdown and close signals) then pays an
//! atomic load a turn for it, not the future's own poll (two locks for a cancellation token).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Wraps a pinned future so that a poll made while the future has not been woken since its
/// last poll returns `Pending` at once, leaving the future's registration as it was. The
/// future is polled with a waker of the wrapper's own, which marks it woken and wakes the
/// task that polled last.
///
/// Sound for any future: one that is not ready has registered that waker (or will never be
/// ready), and a wake-up it has not yet seen is seen at the next poll after it.
pub(crate) struct OnWake<'a, F> {
    fut: Pin<&'a mut F>,
    flag: Arc<Flag>,
    /// The wrapper's waker, handed to `fut`: the same one every time, so `fut` keeps its
    /// registration as it is.
    waker: Waker,
    /// The task's waker as last stored in `flag`, to compare without its lock.
    task: Option<Waker>,
    /// `fut` was polled once: until then it has registered nothing.
    polled: bool,
}

#[derive(Default)]
struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set before the task is read: a poll that stored its waker after this read sees
        // the flag set.
        self.woken.store(true, Ordering::Release);
        if let Some(task) = self.task.lock().unwrap().as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<'a, F: Future> OnWake<'a, F> {
    pub(crate) fn new(fut: Pin<&'a mut F>) -> Self {
        let flag = Arc::new(Flag::default());
        Self {
            fut,
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
            polled: false,
        }
    }
}

impl<F> OnWake<'_, F> {
    /// The future, to change (a timer to reset): the next poll reaches it, woken or not.
    pub(crate) fn get_mut(&mut self) -> Pin<&mut F> {
        self.polled = false;
        self.fut.as_mut()
    }
}

impl<F> std::fmt::Debug for OnWake<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnWake")
            .field("polled", &self.polled)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for OnWake<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if !this.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // Stored before the flag is read, under the lock a wake-up reads it under.
            let task = cx.waker().clone();
            *this.flag.task.lock().unwrap() = Some(task.clone());
            this.task = Some(task);
        }
        if this.polled && !this.flag.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        this.polled = true;
        // Cleared before the poll: a wake-up during it is kept for the next.
        this.flag.woken.store(false, Ordering::Relaxed);
        this.fut
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;

    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A future that counts its polls and is ready once `ready` is set, waking the last
    /// waker it was given when `ready` is set through [`Gate::open`].
    #[derive(Default)]
    struct Gate {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    impl Gate {
        fn open(&self) {
            self.ready.store(true, Ordering::SeqCst);
            if let Some(w) = self.waker.lock().unwrap().take() {
                w.wake();
            }
        }

        async fn wait(&self) {
            std::future::poll_fn(|cx| {
                self.polls.fetch_add(1, Ordering::SeqCst);
                if self.ready.load(Ordering::SeqCst) {
                    return Poll::Ready(());
                }
                *self.waker.lock().unwrap() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await
        }
    }

    /// Counts the wake-ups of the task polling.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A task that counts its wake-ups, and its waker.
    fn task() -> (Arc<Task>, Waker) {
        let task = Arc::new(Task::default());
        (task.clone(), Waker::from(task))
    }

    #[test]
    fn polls_the_future_only_after_a_wake_up() {
        let gate = Gate::default();
        let fut = pin!(gate.wait());
        let mut on_wake = pin!(OnWake::new(fut));
        let (task, waker) = task();
        let mut cx = Context::from_waker(&waker);

        for _ in 0..5 {
            assert!(on_wake.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            gate.polls.load(Ordering::SeqCst),
            1,
            "polled once, then left alone"
        );

        gate.open();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(on_wake.as_mut().poll(&mut cx).is_ready());
        assert_eq!(gate.polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_new_task_waker_is_the_one_woken() {
        let gate = Gate::default();
        let fut = pin!(gate.wait());
        let mut on_wake = pin!(OnWake::new(fut));
        let (first, first_waker) = task();
        let (second, second_waker) = task();

        assert!(on_wake
            .as_mut()
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending());
        assert!(on_wake
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending());
        gate.open();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_cancellation_is_seen_in_a_select_loop() {
        let token = CancellationToken::new();
        let cancelled = pin!(token.cancelled());
        let mut cancelled = OnWake::new(cancelled);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sender = {
            let token = token.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    tx.send(i).unwrap();
                    tokio::task::yield_now().await;
                }
                token.cancel();
                // Kept open: only the cancellation can end the loop.
                std::future::pending::<()>().await;
            })
        };
        let mut got = 0;
        let run = async {
            loop {
                tokio::select! {
                    biased;
                    _ = &mut cancelled => break,
                    Some(_) = rx.recv() => got += 1,
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), run)
            .await
            .expect("the cancellation ends the loop");
        assert_eq!(got, 100);
        sender.abort();
    }
}
