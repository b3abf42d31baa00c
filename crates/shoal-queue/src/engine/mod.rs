//! The queue's storage engine: per topic a segmented log with a checksum per record, durable
//! subscriptions with persisted ack floors, and a writer thread that group-commits publishes
//! (one write and one fdatasync for every publish waiting). A publish that finds its topic
//! idle writes itself and skips the two thread hand-offs: as a direct write through Linux's
//! asynchronous IO where the newest segment takes it ([`aio`]), else in `block_in_place`. One
//! that finds the topic busy queues for the writer's next group. No file IO runs on a thread
//! that is an async worker at the time, save submitting an asynchronous write.

mod aio;
mod direct;
mod error;
mod log;
mod record;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};
use tracing::{info, warn};

pub use shoal_api::queue::{Message, SubStats, TopicStats};

pub use error::{check_name, Error, NameKind};
pub use log::{LogOptions, TopicLimits, TopicLog};

use aio::Aio;
use log::DirectPlan;
pub use record::encode as encode_record;

/// Settings for every topic.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub log: LogOptions,
    /// Segment size of new topics.
    pub segment_bytes: u64,
    /// `max_bytes` of a topic created without one.
    pub default_max_bytes: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            log: LogOptions {
                max_message: 1 << 20,
                ack_timeout: Duration::from_secs(30),
            },
            segment_bytes: 16 << 20,
            default_max_bytes: 1 << 30,
        }
    }
}

/// All topics under one data directory; cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    topics_dir: PathBuf,
    options: EngineOptions,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    /// Held while a topic is created: two creates of one name must not both write its files.
    creating: tokio::sync::Mutex<()>,
}

/// A topic's log (its writer thread's, and an idle-time publisher's), its writer thread and
/// the wake-up for fetches waiting on it.
#[derive(Debug)]
struct Topic {
    log: Arc<tokio::sync::Mutex<Shared>>,
    /// For the direct writes of publishes that write themselves; `None` inside when the
    /// kernel gives no AIO context. Made by the first such publish, inside the runtime.
    aio: std::sync::OnceLock<Option<Aio>>,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    changed: Notify,
    /// Fetches waiting in [`Engine::fetch`], for the stats.
    waiting: AtomicU64,
    /// Publishes handed to the writer and not yet answered: while there are any, a publish
    /// joins them rather than writing alone.
    queued: AtomicU64,
    /// Publishes written by their caller, for the tests.
    #[cfg(test)]
    inline: AtomicU64,
    /// Of those, the ones submitted as direct writes through [`Aio`], for the tests.
    #[cfg(test)]
    direct: AtomicU64,
}

/// Where a publish may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// On the caller's thread when the topic's log is idle (no hand-off to the writer thread
    /// and back), else in the writer's next group commit.
    IfIdle,
    /// In the writer's next group commit: more publishes are known to follow (the
    /// connection has more messages read), and they share one fdatasync.
    Grouped,
}

/// What the writer thread and a publisher writing itself share.
#[derive(Debug)]
struct Shared {
    log: TopicLog,
    /// Set once the writer has stopped and synced: nobody writes after it.
    closed: bool,
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

#[derive(Debug)]
enum Command {
    Publish(Vec<Vec<u8>>, Reply<std::ops::Range<u64>>),
    Register(String, Reply<()>),
    Unregister(String, Reply<()>),
    Fetch(String, usize, Reply<Fetched>),
    Ack(String, Vec<u64>, Reply<()>),
    Nack(String, Vec<u64>, Duration, Reply<()>),
    Stats(Reply<TopicStats>),
    /// Says it holds (on the first sender), then stops the writer until the second's sender
    /// is dropped or sends: tests queue commands behind it.
    #[cfg(test)]
    Hold(mpsc::Sender<()>, mpsc::Receiver<()>),
}

#[derive(Debug)]
struct Fetched {
    messages: Vec<Message>,
    /// When a message becomes due again, for a fetch that found nothing.
    next_due: Option<Instant>,
}

/// The smallest `max_bytes`: room for at least a few records of any size up to 64 KiB.
pub const MIN_MAX_BYTES: u64 = 1 << 16;

impl Engine {
    /// Opens every topic under `data_dir` (reopening after a crash drops torn tails).
    pub async fn open(data_dir: &Path, options: EngineOptions) -> Result<Engine, Error> {
        let topics_dir = data_dir.join("topics");
        let dir = topics_dir.clone();
        let logs = blocking(move || {
            fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
            let mut logs = Vec::new();
            for entry in fs::read_dir(&dir).map_err(Error::io(&dir))? {
                let entry = entry.map_err(Error::io(&dir))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if check_name(NameKind::Topic, &name).is_err() || !entry.path().is_dir() {
                    continue;
                }
                logs.push(TopicLog::open(&entry.path(), &name, options.log)?);
            }
            Ok(logs)
        })
        .await?;
        let topics = logs
            .into_iter()
            .map(|log| (log.name().to_owned(), Topic::start(log)))
            .collect::<HashMap<_, _>>();
        info!(topics = topics.len(), dir = %topics_dir.display(), "queue engine open");
        Ok(Engine {
            inner: Arc::new(Inner {
                topics_dir,
                options,
                topics: Mutex::new(topics),
                creating: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Creates `topic`; creating it again with the same `max_bytes` (or none) is a no-op.
    pub async fn create_topic(&self, topic: &str, max_bytes: Option<u64>) -> Result<(), Error> {
        check_name(NameKind::Topic, topic)?;
        let asked = max_bytes.unwrap_or(self.inner.options.default_max_bytes);
        let _creating = self.inner.creating.lock().await;
        if let Some(existing) = self.existing(topic) {
            let stats = existing.stats().await?;
            return match max_bytes {
                Some(asked) if asked != stats.max_bytes => Err(Error::TopicExists {
                    topic: topic.to_owned(),
                    max_bytes: stats.max_bytes,
                    asked,
                }),
                _ => Ok(()),
            };
        }
        if asked < MIN_MAX_BYTES {
            return Err(Error::MaxBytesTooSmall {
                topic: topic.to_owned(),
                max_bytes: asked,
                min: MIN_MAX_BYTES,
            });
        }
        let limits = TopicLimits {
            max_bytes: asked,
            segment_bytes: self.inner.options.segment_bytes.min(asked / 4).max(1),
        };
        let dir = self.inner.topics_dir.join(topic);
        let name = topic.to_owned();
        let options = self.inner.options.log;
        let log = blocking(move || TopicLog::create(&dir, &name, limits, options)).await?;
        self.inner
            .topics
            .lock()
            .expect("topics lock")
            .insert(topic.to_owned(), Topic::start(log));
        Ok(())
    }

    /// Every topic's name, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut names: Vec<_> = self
            .inner
            .topics
            .lock()
            .expect("topics lock")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    pub async fn register(&self, topic: &str, sub: &str) -> Result<(), Error> {
        check_name(NameKind::Subscription, sub)?;
        let sub = sub.to_owned();
        self.topic(topic)?.call(|r| Command::Register(sub, r)).await
    }

    pub async fn unregister(&self, topic: &str, sub: &str) -> Result<(), Error> {
        let sub = sub.to_owned();
        self.topic(topic)?
            .call(|r| Command::Unregister(sub, r))
            .await
    }

    /// Appends `messages`, answering once they are on disk with their sequence numbers;
    /// written on this thread if the topic is idle ([`Commit::IfIdle`]).
    pub async fn publish(&self, topic: &str, messages: Vec<Vec<u8>>) -> Result<Vec<u64>, Error> {
        self.publish_with(topic, messages, Commit::IfIdle).await
    }

    /// [`Engine::publish`], written where `commit` says.
    pub async fn publish_with(
        &self,
        topic: &str,
        messages: Vec<Vec<u8>>,
        commit: Commit,
    ) -> Result<Vec<u64>, Error> {
        let t = self.topic(topic)?;
        let here = match commit {
            Commit::IfIdle => t.publish_if_idle(&messages).await,
            Commit::Grouped => None,
        };
        let range = match here {
            Some(range) => range?,
            None => {
                // Counted down however the call ends, a dropped one included.
                t.queued.fetch_add(1, Ordering::Relaxed);
                let _queued = Counted(&t.queued);
                t.call(|r| Command::Publish(messages, r)).await?
            }
        };
        t.changed.notify_waiters();
        Ok(range.collect())
    }

    /// Up to `max` messages for `sub`, waiting up to `wait` while there are none.
    pub async fn fetch(
        &self,
        topic: &str,
        sub: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, Error> {
        let t = self.topic(topic)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Listening before asking: a publish between the answer and the wait still wakes us.
            let changed = t.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let sub_name = sub.to_owned();
            let fetched = t.call(|r| Command::Fetch(sub_name, max.max(1), r)).await?;
            if !fetched.messages.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(fetched.messages);
            }
            let until = fetched
                .next_due
                .map(|due| tokio::time::Instant::from_std(due).min(deadline))
                .unwrap_or(deadline);
            t.waiting.fetch_add(1, Ordering::Relaxed);
            // Counted down however the wait ends, the call dropped included.
            let _counted = Counted(&t.waiting);
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    pub async fn ack(&self, topic: &str, sub: &str, seqs: Vec<u64>) -> Result<(), Error> {
        let sub = sub.to_owned();
        self.topic(topic)?
            .call(|r| Command::Ack(sub, seqs, r))
            .await
    }

    /// Hands `seqs` back to be delivered again after `delay`.
    pub async fn nack(
        &self,
        topic: &str,
        sub: &str,
        seqs: Vec<u64>,
        delay: Duration,
    ) -> Result<(), Error> {
        let t = self.topic(topic)?;
        let sub = sub.to_owned();
        t.call(|r| Command::Nack(sub, seqs, delay, r)).await?;
        t.changed.notify_waiters();
        Ok(())
    }

    pub async fn stats(&self, topic: &str) -> Result<TopicStats, Error> {
        self.topic(topic)?.stats().await
    }

    /// Stops every writer thread once the commands sent are done, persisting ack floors.
    /// Later calls answer [`Error::Closed`].
    pub async fn close(&self) {
        let topics: Vec<_> = self
            .inner
            .topics
            .lock()
            .expect("topics lock")
            .values()
            .cloned()
            .collect();
        let threads: Vec<_> = topics
            .iter()
            .filter_map(|t| {
                t.commands.lock().expect("commands lock").take();
                t.thread.lock().expect("thread lock").take()
            })
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }

    /// Holds `topic`'s writer until the returned sender sends or is dropped; returns once the
    /// writer holds, so every command sent after it waits for the next round.
    #[cfg(test)]
    pub(crate) fn hold(&self, topic: &str) -> mpsc::Sender<()> {
        let (tx, rx) = mpsc::channel();
        let (held_tx, held) = mpsc::channel();
        {
            let commands = self.topic(topic).expect("topic");
            let commands = commands.commands.lock().expect("commands lock");
            commands
                .as_ref()
                .expect("open")
                .send(Command::Hold(held_tx, rx))
                .expect("writer running");
        }
        held.recv().expect("the writer holds");
        tx
    }

    /// How many of `topic`'s publishes their callers wrote.
    #[cfg(test)]
    pub(crate) fn inline_publishes(&self, topic: &str) -> u64 {
        self.topic(topic)
            .expect("topic")
            .inline
            .load(Ordering::Relaxed)
    }

    /// How many of `topic`'s publishes went as direct writes through [`Aio`].
    #[cfg(test)]
    pub(crate) fn direct_publishes(&self, topic: &str) -> u64 {
        self.topic(topic)
            .expect("topic")
            .direct
            .load(Ordering::Relaxed)
    }

    fn topic(&self, topic: &str) -> Result<Arc<Topic>, Error> {
        self.existing(topic).ok_or_else(|| Error::NoTopic {
            topic: topic.to_owned(),
        })
    }

    fn existing(&self, topic: &str) -> Option<Arc<Topic>> {
        self.inner
            .topics
            .lock()
            .expect("topics lock")
            .get(topic)
            .cloned()
    }
}

impl Topic {
    fn start(log: TopicLog) -> Arc<Topic> {
        let (tx, rx) = mpsc::channel();
        let name = log.name().to_owned();
        let log = Arc::new(tokio::sync::Mutex::new(Shared { log, closed: false }));
        let shared = log.clone();
        let thread = std::thread::Builder::new()
            .name(format!("queue-{name}"))
            .spawn(move || writer(&shared, rx))
            .expect("spawn a topic writer thread");
        Arc::new(Topic {
            log,
            aio: std::sync::OnceLock::new(),
            commands: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            changed: Notify::new(),
            waiting: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            #[cfg(test)]
            inline: AtomicU64::new(0),
            #[cfg(test)]
            direct: AtomicU64::new(0),
        })
    }

    async fn call<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        {
            let commands = self.commands.lock().expect("commands lock");
            let sender = commands.as_ref().ok_or(Error::Closed)?;
            sender.send(command(tx)).map_err(|_| Error::Closed)?;
        }
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Publishes from this task when nobody holds the log (the writer is between rounds and
    /// no other publish is writing) and no publish waits for the writer: a direct write
    /// through [`Aio`] where the newest segment takes one, awaited like a socket, else the
    /// write and fdatasync in `block_in_place`, so that the runtime moves its other tasks to
    /// another thread meanwhile. `None` when the log is busy or publishes are queued (this
    /// one joins the writer's next group commit) or the runtime has one thread.
    async fn publish_if_idle(
        &self,
        messages: &[Vec<u8>],
    ) -> Option<Result<std::ops::Range<u64>, Error>> {
        let flavor = tokio::runtime::Handle::try_current().ok()?.runtime_flavor();
        if flavor != tokio::runtime::RuntimeFlavor::MultiThread
            || self.queued.load(Ordering::Relaxed) > 0
        {
            return None;
        }
        let mut shared = self.log.try_lock().ok()?;
        if shared.closed {
            return Some(Err(Error::Closed));
        }
        #[cfg(test)]
        self.inline.fetch_add(1, Ordering::Relaxed);
        let planned = shared.log.plan_direct(messages);
        let Some((aio, plan)) = self.aio().zip(planned) else {
            return Some(tokio::task::block_in_place(|| shared.log.publish(messages)));
        };
        let mut flight = Flight {
            shared,
            aio,
            plan: Some(plan),
            submitted: false,
        };
        let written = match flight.submit() {
            Ok(()) => {
                #[cfg(test)]
                self.direct.fetch_add(1, Ordering::Relaxed);
                aio.completion().await
            }
            Err(e) => Err(e),
        };
        Some(flight.finish(written, messages))
    }

    /// The AIO context, made on first use; `None` when the kernel gives none.
    fn aio(&self) -> Option<&Aio> {
        self.aio
            .get_or_init(|| {
                Aio::new()
                    .inspect_err(|error| {
                        warn!(%error, "no asynchronous IO: publishes write in block_in_place");
                    })
                    .ok()
            })
            .as_ref()
    }

    async fn stats(&self) -> Result<TopicStats, Error> {
        let mut stats = self.call(Command::Stats).await?;
        stats.waiting = self.waiting.load(Ordering::Relaxed);
        Ok(stats)
    }
}

/// How long moved ack floors may wait to be written: acks arriving meanwhile share one write
/// and its fsyncs. A crash loses at most this much of acks, which are then delivered again
/// (at least once); publishes are never held by it.
const ACK_PERSIST_AFTER: Duration = Duration::from_millis(100);

/// The writer thread: takes every command waiting, runs consecutive publishes as one group
/// commit, and persists moved ack floors at most [`ACK_PERSIST_AFTER`] after they moved. It
/// holds the log for a whole round, so publishes arriving meanwhile queue for the next.
fn writer(shared: &tokio::sync::Mutex<Shared>, commands: mpsc::Receiver<Command>) {
    let mut persist_at: Option<Instant> = None;
    loop {
        let first = match persist_at {
            None => match commands.recv() {
                Ok(command) => command,
                Err(_) => break,
            },
            Some(at) => match commands.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(command) => command,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    persist_acks(&mut lock(shared).log);
                    persist_at = None;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut round = vec![first];
        round.extend(commands.try_iter());
        // Answered only once the log is let go of: a caller that publishes again at once
        // then finds it free and may write itself.
        let mut answers = Vec::new();
        let acked = {
            let mut guard = lock(shared);
            run_round(&mut guard.log, round, &mut answers)
        };
        for answer in answers {
            answer();
        }
        if acked && persist_at.is_none() {
            persist_at = Some(Instant::now() + ACK_PERSIST_AFTER);
        }
        if persist_at.is_some_and(|at| at <= Instant::now()) {
            persist_acks(&mut lock(shared).log);
            persist_at = None;
        }
    }
    let mut guard = lock(shared);
    guard.closed = true;
    if let Err(error) = guard.log.sync() {
        warn!(topic = %guard.log.name(), %error, "cannot persist ack floors on close");
    }
}

/// A planned direct write with the log held, from submission to its outcome. If its caller
/// is dropped first, the drop waits for the write and settles the log: the memory written
/// from lives until the kernel is done with it, and the log matches the disk.
struct Flight<'a> {
    shared: tokio::sync::MutexGuard<'a, Shared>,
    aio: &'a Aio,
    /// Taken by [`Flight::finish`].
    plan: Option<DirectPlan>,
    submitted: bool,
}

impl Flight<'_> {
    fn submit(&mut self) -> std::io::Result<()> {
        let plan = self.plan.as_ref().expect("planned");
        let fd = self
            .shared
            .log
            .direct_fd()
            .expect("a planned direct write has its descriptor");
        // SAFETY: the plan's memory is this flight's, which takes it apart only once the
        // write is reaped, in `finish` or in `drop`; the log, held, submits nothing else.
        #[allow(unsafe_code)]
        unsafe {
            self.aio.submit(fd, plan.blocks(), plan.offset())?;
        }
        self.submitted = true;
        Ok(())
    }

    /// Takes the write's outcome into the log. A write the device refused (it wants larger
    /// blocks) or one that could not be submitted wrote nothing: `messages` then go by write
    /// and fdatasync, as the segment's later publishes do.
    fn finish(
        mut self,
        written: std::io::Result<usize>,
        messages: &[Vec<u8>],
    ) -> Result<std::ops::Range<u64>, Error> {
        let plan = self.plan.take().expect("finished once");
        let log = &mut self.shared.log;
        match written {
            Ok(n) => log.finish_direct(plan, Ok(n)),
            Err(e) if !self.submitted || log::refused_direct(&e) => {
                warn!(topic = %log.name(), error = %e, "a direct write did not go");
                log.stop_direct();
                tokio::task::block_in_place(|| log.publish(messages))
            }
            Err(e) => tokio::task::block_in_place(|| log.finish_direct(plan, Err(e))),
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if let Some(plan) = self.plan.take() {
            if self.submitted {
                let written = self.aio.completion_blocking();
                let _ = self.shared.log.finish_direct(plan, written);
            }
        }
    }
}

/// A reply to send once the round is over.
type Answer = Box<dyn FnOnce() + Send>;

fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, Error>) -> Answer {
    Box::new(move || {
        let _ = reply.send(result);
    })
}

/// Runs one round of commands against the log, consecutive publishes as one group commit,
/// adding each reply to `answers`; true when something was acknowledged.
fn run_round(log: &mut TopicLog, round: Vec<Command>, answers: &mut Vec<Answer>) -> bool {
    let mut acked = false;
    let mut round = round.into_iter().peekable();
    while let Some(command) = round.next() {
        match command {
            Command::Publish(messages, reply) => {
                let mut group = vec![(messages, reply)];
                while let Some(Command::Publish(..)) = round.peek() {
                    if let Some(Command::Publish(m, r)) = round.next() {
                        group.push((m, r));
                    }
                }
                let batches: Vec<&[Vec<u8>]> = group.iter().map(|(m, _)| &m[..]).collect();
                let results = log.publish_group(&batches);
                for ((_, reply), result) in group.into_iter().zip(results) {
                    answers.push(answer(reply, result));
                }
            }
            Command::Register(sub, reply) => answers.push(answer(reply, log.register(&sub))),
            Command::Unregister(sub, reply) => {
                answers.push(answer(reply, log.unregister(&sub)));
            }
            Command::Fetch(sub, max, reply) => {
                let result = log
                    .fetch(&sub, max, Instant::now())
                    .map(|messages| Fetched {
                        next_due: log.next_due(&sub),
                        messages,
                    });
                answers.push(answer(reply, result));
            }
            Command::Ack(sub, seqs, reply) => {
                acked = true;
                answers.push(answer(reply, log.ack(&sub, &seqs)));
            }
            Command::Nack(sub, seqs, delay, reply) => {
                answers.push(answer(reply, log.nack(&sub, &seqs, delay, Instant::now())));
            }
            Command::Stats(reply) => answers.push(answer(reply, Ok(log.stats()))),
            #[cfg(test)]
            Command::Hold(held, release) => {
                let _ = held.send(());
                let _ = release.recv();
            }
        }
    }
    acked
}

/// The shared log, from the writer thread.
fn lock(shared: &tokio::sync::Mutex<Shared>) -> tokio::sync::MutexGuard<'_, Shared> {
    shared.blocking_lock()
}

/// Writes the moved ack floors and lets go of the segments every subscription has passed.
fn persist_acks(log: &mut TopicLog) {
    if let Err(error) = log.sync() {
        warn!(topic = %log.name(), %error, "cannot persist ack floors");
    }
}

struct Counted<'a>(&'a AtomicU64);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

#[cfg(test)]
pub(crate) mod testdir;
#[cfg(test)]
mod tests;
