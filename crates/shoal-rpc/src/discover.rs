//! Discovery: where a client learns which servers to call. A [`Discover`] is a stream of whole
//! [`EndpointSet`]s, each replacing the one before; a client built over one
//! ([`ClientBuilder::discover`](crate::ClientBuilder::discover)) rebuilds its picker on every
//! set, while its calls go on.
//!
//! Whole sets, not changes: tower's `Discover` and tonic's balanced channel stream
//! `Insert(key, service)` / `Remove(key)` changes, which suits balancers that treat each
//! service on its own. Here a consistent-hash ring and shard ranges are functions of the whole
//! list, a file holds a whole list, and a source that reconnects (the center, later) can simply
//! send its current set again: replaying it changes nothing. The client compares each set with
//! the last and keeps every server that stays as it was (connection, health, calls in flight).
//!
//! An item may be an error (a file that does not parse, a source that lost its feed): the
//! client logs it and keeps the set it has. A stream that ends leaves the client on its last
//! set.
//!
//! Three sources come with the crate:
//!
//! - [`Static`]: one set, given up front.
//! - [`FileWatch`]: an endpoint file (format in [`crate::endpoints`]), re-read on an interval.
//! - `tokio::sync::watch::Receiver<EndpointSet>`: whatever the sending side sets, for a
//!   source inside the program (the center's feed, tests).
//!
//! A registry that long-polls (the center's API, the agent's programs socket) implements
//! [`LongPoll`], and its [`Discover::watch`] is [`follow`]: asking again at once after each
//! answer, yielding a set when its revision changes, backing off after a failure.
//!
//! ```no_run
//! # async fn example() -> Result<(), shoal_rpc::Error> {
//! use shoal_rpc::discover::FileWatch;
//! use shoal_rpc::Client;
//!
//! let client = Client::builder()
//!     .discover(&FileWatch::new("/etc/shop/clients.toml"))
//!     .connect()
//!     .await?;
//! let total: i64 = client.call("add", &(1, 2)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Watching a file
//!
//! [`FileWatch`] reads the whole file every [`FileWatch::interval`] (1 s unless set) on the
//! blocking pool and compares its bytes with the last read; only different bytes are parsed,
//! and only a set different from the last one is yielded. A file that turns bad (unreadable,
//! or not a valid endpoint file) yields one error naming the file and, for a file that could
//! be read, the line and key at fault, then nothing until its bytes change again; the client
//! keeps the last good set meanwhile.
//!
//! Polling was chosen over file-system notifications: inotify needs a new dependency, and
//! sees the common ways of replacing such a file (an editor's or a deploy tool's rename over
//! it, a Kubernetes ConfigMap's symlink swap) only when the watch is on the directory and
//! re-armed after each swap. Comparing bytes rather than the modification time catches a
//! second write within one timestamp tick that keeps the size. An endpoint file is a few
//! hundred bytes, so one read a second costs nothing that matters.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::stream::{self, Stream};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::balance::Balance;
use crate::endpoints::EndpointSet;
use crate::error::Error;
use crate::transport::Addr;

/// How often [`FileWatch`] reads its file unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The first pause of [`follow`] after a failed request; it doubles up to [`MAX_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
pub const MAX_PAUSE: Duration = Duration::from_secs(10);

/// A source of endpoint sets: each item replaces the set before it (see the module
/// documentation).
pub trait Discover {
    /// A new stream of sets, starting with the current one as soon as it is known. Each call
    /// starts afresh, so one source can feed several clients.
    fn watch(&self) -> impl Stream<Item = Result<EndpointSet, Error>> + Send + 'static;
}

/// One endpoint set that never changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Static(pub EndpointSet);

impl Discover for Static {
    fn watch(&self) -> impl Stream<Item = Result<EndpointSet, Error>> + Send + 'static {
        stream::iter([Ok(self.0.clone())])
    }
}

/// Every value the sending side sets, starting with the current one; the stream ends when the
/// sender is dropped.
impl Discover for watch::Receiver<EndpointSet> {
    fn watch(&self) -> impl Stream<Item = Result<EndpointSet, Error>> + Send + 'static {
        let mut rx = self.clone();
        rx.mark_changed();
        stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let set = rx.borrow_and_update().clone();
            Some((Ok(set), rx))
        })
    }
}

/// Endpoint sets read from an endpoint file, re-read every [`interval`](Self::interval).
#[derive(Debug, Clone)]
pub struct FileWatch {
    path: PathBuf,
    default: Balance,
    interval: Duration,
}

impl FileWatch {
    /// Watches the endpoint file at `path`; a file without a `balance` key balances round
    /// robin.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            default: Balance::RoundRobin,
            interval: DEFAULT_INTERVAL,
        }
    }

    /// Balancing for a file without a `balance` key (see [`EndpointSet::load_or`]).
    pub fn default_balance(mut self, balance: Balance) -> Self {
        self.default = balance;
        self
    }

    /// How often the file is read.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Discover for FileWatch {
    fn watch(&self) -> impl Stream<Item = Result<EndpointSet, Error>> + Send + 'static {
        let mut ticks = tokio::time::interval(self.interval);
        // A slow read (a stalled network file system) delays the next one instead of
        // bunching reads up behind it.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let state = Polling {
            watch: self.clone(),
            ticks,
            bytes: None,
            set: None,
            error: None,
        };
        stream::unfold(state, |mut state| async move {
            let item = state.next().await;
            Some((item, state))
        })
    }
}

/// A registry answering "the set newer than this revision" (a long poll), for [`follow`].
pub trait LongPoll: Send + 'static {
    /// Why one request failed.
    type Error: fmt::Display;

    /// One request: the current listing at once without `after`; with it, once the
    /// revision differs from `after`, or as it is when the registry's wait runs out.
    fn ask(
        &mut self,
        after: Option<u64>,
    ) -> impl Future<Output = Result<Listing, Self::Error>> + Send;

    /// What is followed through what, for errors: `service web through the center at …`.
    fn describe(&self) -> String;
}

/// A service's endpoints at one revision, as a registry lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub service: String,
    pub namespace: String,
    /// Changes whenever the set does.
    pub revision: u64,
    /// In the registry's order.
    pub endpoints: Vec<ListedEndpoint>,
}

/// One endpoint of a [`Listing`]: where, and who reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedEndpoint {
    /// The agent whose app serves it.
    pub agent: String,
    /// `host:port`, as the agent reports it.
    pub addr: String,
}

impl Listing {
    /// The set a client balances over (see [`EndpointSet::spread`]); an error for a service
    /// with no endpoint, or an address that is not `host:port`, naming the service.
    pub fn endpoint_set(&self, balance: &Balance) -> Result<EndpointSet, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Unavailable(format!(
                "service {} of namespace {} has no endpoints now: no online agent reports it \
                 running and healthy (is it installed and started, and does its manifest list \
                 its [run] ports?)",
                self.service, self.namespace
            )));
        }
        let mut addrs = Vec::with_capacity(self.endpoints.len());
        for e in &self.endpoints {
            let addr: Addr = e.addr.parse().map_err(|error| {
                Error::Config(format!(
                    "service {}: agent {} reports the endpoint {:?}, which is not host:port: \
                     {error}",
                    self.service, e.agent, e.addr
                ))
            })?;
            addrs.push(addr);
        }
        Ok(EndpointSet::spread(addrs, balance.clone()))
    }
}

/// Follows `poll`: yields the set (balanced by `balance`) each time its revision changes.
///
/// Errors are items of the stream, not its end: a failed request yields one error naming
/// [`LongPoll::describe`], then the stream asks again after a pause ([`FIRST_PAUSE`],
/// doubling to [`MAX_PAUSE`], with jitter); a listing with no endpoint yields an error too, so
/// a client keeps the last instances it knew rather than none. The stream ends only when
/// dropped, which drops the request in flight with it.
pub fn follow<P: LongPoll>(
    poll: P,
    balance: Balance,
) -> impl Stream<Item = Result<EndpointSet, Error>> + Send + 'static {
    let state = Following {
        poll,
        balance,
        revision: None,
        pause: None,
    };
    stream::unfold(state, |mut state| async move {
        let item = state.next().await;
        Some((item, state))
    })
}

/// What a [`FileWatch`] stream remembers between reads.
struct Polling {
    watch: FileWatch,
    ticks: tokio::time::Interval,
    /// The file's bytes at the last successful read.
    bytes: Option<Vec<u8>>,
    /// The last set yielded.
    set: Option<EndpointSet>,
    /// The last error yielded, so a file that stays bad is reported once.
    error: Option<String>,
}

impl Polling {
    /// Reads on every tick until there is something new to say.
    async fn next(&mut self) -> Result<EndpointSet, Error> {
        loop {
            self.ticks.tick().await;
            let path = &self.watch.path;
            let bytes = match read(path.clone()).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.bytes = None;
                    let error = Error::io(format!("read endpoint file {}", path.display()), e);
                    if self.reported(&error) {
                        continue;
                    }
                    return Err(error);
                }
            };
            if self.bytes.as_ref() == Some(&bytes) {
                continue;
            }
            let parsed = match std::str::from_utf8(&bytes) {
                Ok(text) => {
                    EndpointSet::parse_or(text, &path.display().to_string(), &self.watch.default)
                }
                Err(e) => Err(Error::Config(format!(
                    "{}: not UTF-8 text ({e}); write the endpoint file as UTF-8 TOML",
                    path.display()
                ))),
            };
            self.bytes = Some(bytes);
            match parsed {
                Ok(set) => {
                    self.error = None;
                    if self.set.as_ref() == Some(&set) {
                        continue;
                    }
                    self.set = Some(set.clone());
                    return Ok(set);
                }
                Err(error) => {
                    if self.reported(&error) {
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    /// True when `error` is the one reported last; otherwise remembers it as reported.
    fn reported(&mut self, error: &Error) -> bool {
        let text = error.to_string();
        if self.error.as_ref() == Some(&text) {
            return true;
        }
        self.error = Some(text);
        false
    }
}

/// What one [`follow`] stream remembers between requests.
struct Following<P> {
    poll: P,
    balance: Balance,
    /// The revision of the last answer.
    revision: Option<u64>,
    /// The pause before the next request, after a failed one.
    pause: Option<Duration>,
}

impl<P: LongPoll> Following<P> {
    /// Asks until the set is new, or a request fails.
    async fn next(&mut self) -> Result<EndpointSet, Error> {
        loop {
            if let Some(pause) = self.pause {
                // Jitter: followers that lost their registry at once do not all come back at
                // once.
                tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64() / 2.0)).await;
            }
            let listing = match self.poll.ask(self.revision).await {
                Ok(listing) => listing,
                Err(e) => {
                    let pause = self.pause.map_or(FIRST_PAUSE, |p| (p * 2).min(MAX_PAUSE));
                    self.pause = Some(pause);
                    let what = self.poll.describe();
                    return Err(Error::Unavailable(format!("discovering {what}: {e}")));
                }
            };
            self.pause = None;
            if self.revision == Some(listing.revision) {
                continue;
            }
            self.revision = Some(listing.revision);
            return listing.endpoint_set(&self.balance);
        }
    }
}

/// Reads the whole file on the blocking pool.
fn read(path: PathBuf) -> impl Future<Output = io::Result<Vec<u8>>> + Send {
    let task = tokio::task::spawn_blocking(move || std::fs::read(path));
    async move { task.await.map_err(io::Error::other)? }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use futures_util::StreamExt;

    use super::*;
    use crate::endpoint::EndpointConfig;

    /// How long any awaited item may take before the test fails.
    const T: Duration = Duration::from_secs(10);

    fn set(balance: Balance, addrs: &[&str]) -> EndpointSet {
        EndpointSet {
            balance,
            endpoints: addrs
                .iter()
                .map(|a| EndpointConfig::new(a.parse().unwrap()))
                .collect(),
        }
    }

    fn file(addrs: &[&str]) -> String {
        addrs
            .iter()
            .map(|a| format!("[[endpoint]]\naddr = \"{a}\"\n"))
            .collect()
    }

    /// Writes `text` to `path` through a rename, as deploy tools and editors do.
    fn write(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    async fn next<S: Stream<Item = Result<EndpointSet, Error>> + Unpin>(
        sets: &mut S,
    ) -> Result<EndpointSet, Error> {
        tokio::time::timeout(T, sets.next())
            .await
            .expect("the watcher said something in time")
            .expect("the watcher's stream goes on")
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "shoal-rpc-discover-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// How often the tests' watchers read; the clock is paused, so ticks cost no real time.
    const TICK: Duration = Duration::from_millis(10);

    /// Asserts that the watcher says nothing over five more reads of the file.
    async fn quiet<S: Stream<Item = Result<EndpointSet, Error>> + Unpin>(sets: &mut S) {
        if let Ok(item) = tokio::time::timeout(TICK * 5, sets.next()).await {
            panic!("the watcher said {item:?}, expected nothing");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_watched_file_yields_each_new_set_and_keeps_quiet_when_only_bytes_change() {
        let dir = scratch("change");
        let path = dir.join("clients.toml");
        write(&path, &file(&["127.0.0.1:1", "127.0.0.1:2"]));
        let watch = FileWatch::new(&path)
            .default_balance(Balance::HashRing)
            .interval(TICK);
        let mut sets = pin!(watch.watch());
        let first = next(&mut sets).await.unwrap();
        assert_eq!(
            first,
            set(Balance::HashRing, &["127.0.0.1:1", "127.0.0.1:2"])
        );
        quiet(&mut sets).await;

        // A comment changes the bytes but not the set.
        write(
            &path,
            &format!("# moved\n{}", file(&["127.0.0.1:1", "127.0.0.1:2"])),
        );
        quiet(&mut sets).await;

        let moved = ["127.0.0.1:2", "127.0.0.1:3"];
        write(&path, &file(&moved));
        assert_eq!(
            next(&mut sets).await.unwrap(),
            set(Balance::HashRing, &moved)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_file_is_reported_once_naming_file_and_line_and_the_old_set_stays() {
        let dir = scratch("bad");
        let path = dir.join("clients.toml");
        write(&path, &file(&["127.0.0.1:1"]));
        let watch = FileWatch::new(&path).interval(TICK);
        let mut sets = pin!(watch.watch());
        let good = next(&mut sets).await.unwrap();
        assert_eq!(good, set(Balance::RoundRobin, &["127.0.0.1:1"]));

        write(
            &path,
            "[[endpoint]]\naddr = \"127.0.0.1:1\"\n[[endpoint]]\naddr = \"nope\"\n",
        );
        let error = next(&mut sets).await.unwrap_err().to_string();
        let at = format!("{}:4: endpoint[1].addr", path.display());
        assert!(
            error.starts_with(&at),
            "{error}\n  does not start with {at}"
        );
        quiet(&mut sets).await;

        // The file going missing is a new error, named by path.
        std::fs::remove_file(&path).unwrap();
        let error = next(&mut sets).await.unwrap_err().to_string();
        assert!(
            error.contains(&format!("read endpoint file {}", path.display())),
            "{error}"
        );
        quiet(&mut sets).await;

        // Back to the old contents: the consumer still has that set, so nothing is said.
        write(&path, &file(&["127.0.0.1:1"]));
        quiet(&mut sets).await;
        let grown = ["127.0.0.1:1", "127.0.0.1:5"];
        write(&path, &file(&grown));
        assert_eq!(
            next(&mut sets).await.unwrap(),
            set(Balance::RoundRobin, &grown)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_watch_channel_yields_its_current_value_then_each_new_one() {
        let (tx, rx) = watch::channel(set(Balance::RoundRobin, &["127.0.0.1:1"]));
        let mut sets = pin!(rx.watch());
        assert_eq!(
            next(&mut sets).await.unwrap(),
            set(Balance::RoundRobin, &["127.0.0.1:1"])
        );
        tx.send_replace(set(Balance::HashRing, &["127.0.0.1:2"]));
        assert_eq!(
            next(&mut sets).await.unwrap(),
            set(Balance::HashRing, &["127.0.0.1:2"])
        );
        drop(tx);
        assert!(sets.next().await.is_none(), "ends with its sender");
    }

    #[tokio::test]
    async fn a_static_set_is_yielded_once() {
        let one = set(Balance::LeastPending, &["127.0.0.1:1"]);
        let sets: Vec<_> = Static(one.clone()).watch().collect().await;
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].as_ref().unwrap(), &one);
    }

    fn listing(revision: u64, addrs: &[&str]) -> Listing {
        Listing {
            service: "web".into(),
            namespace: "default".into(),
            revision,
            endpoints: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| ListedEndpoint {
                    agent: format!("agent{i}"),
                    addr: (*a).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn every_balance_makes_a_set_a_client_accepts() {
        let three = listing(7, &["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]);
        for balance in [
            Balance::RoundRobin,
            Balance::LeastPending,
            Balance::HashRing,
            Balance::Shard { count: 1 },
            Balance::Shard { count: 2 },
            Balance::Shard { count: 8 },
        ] {
            let set = three.endpoint_set(&balance).unwrap();
            crate::Client::builder()
                .endpoints(set.endpoints.clone())
                .balance(set.balance.clone())
                .build()
                .unwrap_or_else(|e| panic!("{balance}: {e}"));
        }
        let shards = three.endpoint_set(&Balance::Shard { count: 8 }).unwrap();
        let ranges: Vec<_> = shards.endpoints.iter().map(|e| e.shard.unwrap()).collect();
        assert_eq!(ranges, [(0, 1), (2, 4), (5, 7)]);
        assert_eq!(
            shards.endpoints[2].backup,
            Some("10.0.0.1:7000".parse().unwrap())
        );
    }

    #[test]
    fn an_empty_service_or_a_bad_address_is_an_error_naming_it() {
        let none = listing(7, &[]).endpoint_set(&Balance::RoundRobin);
        let none = none.unwrap_err().to_string();
        assert!(
            none.contains("service web of namespace default has no endpoints"),
            "{none}"
        );
        let bad = listing(7, &["nope"]).endpoint_set(&Balance::RoundRobin);
        let bad = bad.unwrap_err().to_string();
        assert!(
            bad.starts_with("service web: agent agent0 reports the endpoint \"nope\""),
            "{bad}"
        );
    }

    /// A registry that answers from a script and records what it was asked.
    struct Script {
        answers: std::collections::VecDeque<Result<Listing, &'static str>>,
        asked: Vec<Option<u64>>,
    }

    impl LongPoll for Script {
        type Error = &'static str;

        fn ask(
            &mut self,
            after: Option<u64>,
        ) -> impl Future<Output = Result<Listing, &'static str>> + Send {
            self.asked.push(after);
            let answer = self
                .answers
                .pop_front()
                .expect("the script has an answer left");
            async move { answer }
        }

        fn describe(&self) -> String {
            "service web through the script".into()
        }
    }

    fn following(answers: Vec<Result<Listing, &'static str>>) -> Following<Script> {
        Following {
            poll: Script {
                answers: answers.into(),
                asked: Vec::new(),
            },
            balance: Balance::RoundRobin,
            revision: None,
            pause: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_yields_each_new_revision_and_asks_after_the_last() {
        let mut f = following(vec![
            Ok(listing(1, &["127.0.0.1:1"])),
            Ok(listing(1, &["127.0.0.1:1"])),
            Ok(listing(2, &["127.0.0.1:2"])),
            Ok(listing(3, &[])),
        ]);
        let first = f.next().await.unwrap();
        assert_eq!(first, set(Balance::RoundRobin, &["127.0.0.1:1"]));
        // The same revision again (a wait that ran out) is asked past, not yielded.
        let second = f.next().await.unwrap();
        assert_eq!(second, set(Balance::RoundRobin, &["127.0.0.1:2"]));
        let empty = f.next().await.unwrap_err().to_string();
        assert!(empty.contains("service web of namespace default has no endpoints"));
        assert_eq!(f.poll.asked, [None, Some(1), Some(1), Some(2)]);
        assert_eq!(f.revision, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_request_is_an_error_item_and_the_pause_doubles_to_its_cap() {
        let mut answers = vec![Err("connection refused"); 10];
        answers.push(Ok(listing(4, &["127.0.0.1:1"])));
        let mut f = following(answers);
        let error = f.next().await.unwrap_err().to_string();
        assert_eq!(
            error,
            Error::Unavailable(
                "discovering service web through the script: connection refused".into()
            )
            .to_string()
        );
        assert_eq!(f.pause, Some(FIRST_PAUSE));
        f.next().await.unwrap_err();
        assert_eq!(f.pause, Some(FIRST_PAUSE * 2));
        for _ in 2..10 {
            f.next().await.unwrap_err();
        }
        assert_eq!(f.pause, Some(MAX_PAUSE));
        assert!(f.next().await.is_ok());
        assert_eq!(f.pause, None, "a success ends the backoff");
        assert_eq!(f.poll.asked.len(), 11);
        assert!(f.poll.asked.iter().all(Option::is_none));
    }

    #[tokio::test(start_paused = true)]
    async fn follow_is_a_stream_of_the_followers_items() {
        let script = Script {
            answers: vec![Err("down"), Ok(listing(5, &["127.0.0.1:9"]))].into(),
            asked: Vec::new(),
        };
        let mut sets = pin!(follow(script, Balance::HashRing));
        assert!(next(&mut sets).await.is_err());
        assert_eq!(
            next(&mut sets).await.unwrap(),
            set(Balance::HashRing, &["127.0.0.1:9"])
        );
    }
}
