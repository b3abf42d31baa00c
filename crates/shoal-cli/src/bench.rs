//! `shoal bench serve` (an echo service built with `#[shoal::service]`) and `shoal bench run`
//! (a load generator: C connections, D calls in flight on each, for a fixed time).

use std::future::Future;
use std::pin::{pin, Pin};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Wake, Waker};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use shoal::rpc::{Addr, CallOptions, Client, Listener, Pipeline};
use shoal::{Server, Value};
use tokio::time::Instant;

use crate::out::{errln, outln};
use crate::signal::Signal;

/// The service the bench measures.
#[shoal::service]
pub trait Echo {
    /// Answers with its argument.
    async fn echo(&self, x: Value) -> Value;
    /// Answers with `x` after `ms` milliseconds.
    async fn sleep_echo(&self, ms: u64, x: Value) -> Value;
    /// Takes a notification and drops it.
    #[shoal(notify)]
    async fn sink(&self, x: Value);
}

/// The echo service.
#[derive(Debug, Clone, Copy)]
pub struct EchoService;

impl Echo for EchoService {
    async fn echo(&self, x: Value) -> Value {
        x
    }

    async fn sleep_echo(&self, ms: u64, x: Value) -> Value {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        x
    }

    async fn sink(&self, _x: Value) {}
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Serve the echo service until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Generate load against an echo server and print requests/s and latency percentiles.
    Run(RunArgs),
    /// Simulate many agents linked to one center (see bench/center-sim.sh).
    #[command(name = "center-sim", hide = true)]
    CenterSim(crate::bench_sim::CenterSimArgs),
    /// Time etcd's watch fan-out: N watchers on one key, P puts (see bench/config-push.sh).
    #[command(name = "etcd-watch", hide = true)]
    EtcdWatch(crate::bench_etcd::EtcdWatchArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// host:port (port 0 picks a free one) or unix:PATH.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: String,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// After SIGINT or SIGTERM, how long calls in progress may take before the server
    /// closes their connections (a second signal closes them at once), like the runtime's
    /// `shutdown.grace`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Close a connection that sent part of a message and then nothing, or took none of its
    /// replies, for this long (the server's default, 30 s, unless given).
    #[arg(long, value_parser = humantime::parse_duration)]
    stall_timeout: Option<Duration>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Server address: host:port or unix:PATH.
    #[arg(long, default_value = "127.0.0.1:7400")]
    addr: String,
    /// Connections to open.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Calls kept in flight on each connection.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Send notifications (`sink`) instead of calls; each in-flight slot sends a batch of 64,
    /// then one `echo` call as a barrier, so the count is of notifications the server read.
    #[arg(long)]
    notify: bool,
    /// Send each connection's in-flight calls together as one pipeline and wait for all
    /// their answers before the next (as `redis-benchmark -P` does), instead of keeping each
    /// call in flight on its own. With `--notify`, each pipeline holds the in-flight slots'
    /// batches and barrier calls.
    #[arg(long)]
    pipeline: bool,
    /// Bytes in the echoed string.
    #[arg(long, default_value_t = 4)]
    payload: usize,
    /// Runtime worker threads (default: one per connection, at most one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl RunArgs {
    /// A one-second run for the demo.
    pub fn quick(addr: String) -> Self {
        Self {
            addr,
            connections: 8,
            in_flight: 8,
            duration: 1.0,
            warmup: 0.2,
            notify: false,
            pipeline: false,
            payload: 4,
            threads: None,
            json: false,
        }
    }
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::CenterSim(args) => crate::bench_sim::run(args),
        BenchCommand::EtcdWatch(args) => crate::bench_etcd::run(args),
        BenchCommand::Serve(args) => {
            let rt = runtime(args.threads)?;
            rt.block_on(serve(args))?;
            // Handlers cut off by the grace period are dropped with their tasks; none is
            // waited for.
            rt.shutdown_background();
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Run(args) => {
            // One thread per connection up to the core count: a single connection gains
            // nothing from a second thread and pays for waking across them.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let threads = args.threads.unwrap_or(args.connections.clamp(1, cores));
            let report = runtime(Some(threads))?.block_on(load(args.clone()))?;
            if args.json {
                outln!("{}", serde_json::to_string(&report)?)?;
            } else {
                outln!("{report}")?;
            }
            Ok(if report.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut rt = match threads {
        // One thread: tokio's single-threaded scheduler, which serves tasks in order.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.worker_threads(n);
            rt
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    Ok(rt.enable_all().build()?)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let addr: Addr = args.listen.parse()?;
    let mut server = Server::builder().service(EchoServer::new(EchoService));
    if let Some(limit) = args.stall_timeout {
        server = server.stall_timeout(Some(limit));
    }
    let server = server.build()?;
    let listener = Listener::bind(&addr).await?;
    outln!("listening on {}", listener.local_addr())?;
    let signals =
        crate::signal::Signals::new().context("install the SIGINT and SIGTERM handlers")?;
    serve_until(&server, listener, signals, args.grace).await
}

/// Where [`serve_until`] hears signals from: the process's, or a test's channel.
trait SignalSource {
    fn recv(&mut self) -> impl std::future::Future<Output = Signal> + Send;
}

impl SignalSource for crate::signal::Signals {
    fn recv(&mut self) -> impl std::future::Future<Output = Signal> + Send {
        crate::signal::Signals::recv(self)
    }
}

/// Serves until the first signal, then drains for at most `grace`; a second signal, or the
/// end of the grace period, closes the connections still open and returns.
async fn serve_until(
    server: &Server,
    listener: Listener,
    mut signals: impl SignalSource,
    grace: Duration,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = server.serve(listener, async {
        let _ = stopped.await;
    });
    tokio::pin!(serving);
    let first = tokio::select! {
        r = &mut serving => return Ok(r?),
        s = signals.recv() => s,
    };
    errln!("{first}: draining for up to {grace:?}; a second signal stops at once");
    let _ = stop.send(());
    tokio::select! {
        r = &mut serving => r?,
        _ = tokio::time::sleep(grace) => {
            errln!("grace period of {grace:?} over: closing the connections still open");
        }
        s = signals.recv() => errln!("{s} again: closing the connections still open"),
    }
    // Dropping the serve future closes what is left.
    Ok(())
}

/// What a load run measured.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    mode: &'static str,
    pipeline: bool,
    connections: usize,
    in_flight: usize,
    duration_s: f64,
    calls: u64,
    errors: u64,
    rps: f64,
    /// Latency to the answer's arrival (see [`Arrival`]), as redis-benchmark measures it.
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// Latency until the caller ran again with its answer: the arrival plus the caller's
    /// wait for its turn on the runtime.
    seen_p50_us: f64,
    seen_p99_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} x {} in flight{}, {:.1}s, {}: {:.0} requests/s ({} calls, {} errors)",
            self.connections,
            self.in_flight,
            if self.pipeline { " (pipelined)" } else { "" },
            self.duration_s,
            self.mode,
            self.rps,
            self.calls,
            self.errors
        )?;
        write!(
            f,
            "latency to the answer p50 {:.1}us  p99 {:.1}us  p999 {:.1}us  max {:.1}us\n\
             latency until the caller ran p50 {:.1}us  p99 {:.1}us",
            self.p50_us, self.p99_us, self.p999_us, self.max_us, self.seen_p50_us, self.seen_p99_us
        )?;
        if let Some(e) = &self.first_error {
            write!(f, "\nfirst error: {e}")?;
        }
        Ok(())
    }
}

const NOTIFY_BATCH: u64 = 64;

struct Shared {
    calls: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    start: Instant,
    end: Instant,
    next: NextCall,
}

/// When a lane makes its next call once an answer is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NextCall {
    /// At once: with one connection, nothing else is waiting to be taken first; and with
    /// several calls in flight on a connection each on its own (the lanes of one task), a
    /// shape redis-benchmark has no counterpart of, kept as it was measured before.
    AtOnce,
    /// On the runtime's next turn, after the other connections' answers that came in
    /// meanwhile are taken, as redis-benchmark writes a connection's next request on its
    /// event loop's next turn: the calls of a turn go out together, and the clock of each
    /// starts at its write, as there. Over one connection a turn would only add a system
    /// call (the runtime's look at its sockets) to every call.
    NextTurn,
}

impl NextCall {
    async fn wait(self) {
        if self == NextCall::NextTurn {
            tokio::task::yield_now().await;
        }
    }
}

pub async fn load(args: RunArgs) -> anyhow::Result<Report> {
    let addr: Addr = args.addr.parse()?;
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.max(1) {
        let client = Client::builder()
            .endpoint(addr.clone())
            .timeout(Duration::from_secs(10))
            .retries(0)
            .connect()
            .await
            .with_context(|| format!("connect to {addr}"))?;
        clients.push(client);
    }
    let now = Instant::now();
    let start = now + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.duration);
    let shared = Arc::new(Shared {
        calls: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        start,
        end,
        next: if args.connections > 1 && (args.pipeline || args.in_flight <= 1) {
            NextCall::NextTurn
        } else {
            NextCall::AtOnce
        },
    });
    let payload = Value::from("x".repeat(args.payload));
    let mut tasks = Vec::new();
    let depth = args.in_flight.max(1);
    for client in &clients {
        let (client, shared) = (client.clone(), shared.clone());
        let task = if args.pipeline {
            let pipeline = echo_pipeline(depth, &payload, args.notify)?;
            tokio::spawn(pipelined_load(client, pipeline, shared, args.notify))
        } else {
            let load = connection_load(
                EchoClient::new(client),
                depth,
                shared,
                payload.clone(),
                args.notify,
            );
            tokio::spawn(load)
        };
        tasks.push(task);
    }
    let mut total = Latencies::default();
    for t in tasks {
        total.add(&t.await?)?;
    }
    let calls = shared.calls.load(Ordering::Relaxed);
    let first_error = shared.first_error.lock().unwrap().take();
    let us = |q: f64| total.arrived.value_at_quantile(q) as f64 / 1000.0;
    let seen_us = |q: f64| total.seen.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        mode: if args.notify { "notify" } else { "call" },
        pipeline: args.pipeline,
        connections: clients.len(),
        in_flight: args.in_flight.max(1),
        duration_s: args.duration,
        calls,
        errors: shared.errors.load(Ordering::Relaxed),
        rps: calls as f64 / args.duration,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: total.arrived.max() as f64 / 1000.0,
        seen_p50_us: seen_us(0.5),
        seen_p99_us: seen_us(0.99),
        first_error,
    })
}

fn histogram() -> Histogram<u64> {
    // Nanoseconds from 1µs to 60s at three significant figures.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// The latencies of one connection's calls, each taken two ways (see [`Took`]).
struct Latencies {
    arrived: Histogram<u64>,
    seen: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            arrived: histogram(),
            seen: histogram(),
        }
    }
}

impl Latencies {
    fn add(&mut self, other: &Latencies) -> Result<(), hdrhistogram::AdditionError> {
        self.arrived.add(&other.arrived)?;
        self.seen.add(&other.seen)
    }

    fn record(&mut self, took: Took, calls: u64) {
        let ns = |d: Duration| (d.as_nanos() as u64).clamp(1_000, 60_000_000_000);
        let _ = self.arrived.record_n(ns(took.arrived), calls);
        let _ = self.seen.record_n(ns(took.seen), calls);
    }
}

/// How long a call took: until its answer arrived, and until its caller ran again with it.
#[derive(Clone, Copy)]
struct Took {
    arrived: Duration,
    seen: Duration,
}

impl Took {
    /// A call made at `t0` whose answer arrived at `arrived` and was taken at `done`.
    fn since(t0: Instant, arrived: Instant, done: Instant) -> Took {
        Took {
            arrived: arrived - t0,
            seen: done - t0,
        }
    }
}

/// Marks when a caller's answer arrived: the moment the connection's reader woke the caller.
///
/// redis-benchmark stamps a reply when its event loop takes the connection's read event,
/// before it parses the reply, and starts the clock of the next request when it writes it;
/// the time between the two, while the loop serves the other connections, counts for
/// neither. shoal's reader and caller are two tasks: the reader reads the answer and wakes
/// the caller, which then waits its turn behind the other connections' tasks. Stamping the
/// wake leaves that turn out as redis-benchmark leaves out its own; [`Took::seen`] keeps it
/// in. One per lane, made once: a call costs it a lock and a clock read per wake.
struct Arrival {
    /// The caller's own waker, woken after the stamp.
    caller: Mutex<Option<Waker>>,
    /// Nanoseconds after `base` of the last wake; 0 for none since the call began.
    woken_ns: AtomicU64,
    base: Instant,
}

impl Arrival {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            caller: Mutex::new(None),
            woken_ns: AtomicU64::new(0),
            base: Instant::now(),
        })
    }

    /// Runs `fut` with `waker` (this `Arrival`'s), and returns its output with the time its
    /// last wake came (or the time it finished, when it finished without waiting) and the
    /// time it finished.
    async fn time<F: Future>(
        self: &Arc<Self>,
        waker: &Waker,
        mut fut: Pin<&mut F>,
    ) -> (F::Output, Instant, Instant) {
        self.woken_ns.store(0, Ordering::Relaxed);
        std::future::poll_fn(|cx| {
            {
                let mut caller = self.caller.lock().unwrap();
                if !caller.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *caller = Some(cx.waker().clone());
                }
            }
            let output = std::task::ready!(fut
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker)));
            let now = Instant::now();
            let arrived = match self.woken_ns.load(Ordering::Relaxed) {
                0 => now,
                ns => (self.base + Duration::from_nanos(ns)).min(now),
            };
            Poll::Ready((output, arrived, now))
        })
        .await
    }
}

impl Wake for Arrival {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let ns = self.base.elapsed().as_nanos() as u64;
        self.woken_ns.store(ns.max(1), Ordering::Relaxed);
        if let Some(caller) = self.caller.lock().unwrap().as_ref() {
            caller.wake_by_ref();
        }
    }
}

/// The load on one connection: `depth` lanes in one task (cheaper to schedule than a task
/// per call), each making one call after another until the end; returns the latencies that
/// fell inside the measuring window, in one histogram whose lock is never contended (one
/// task). A lane's future lives for the whole run: a call costs the load generator no
/// allocation of its own, where a future pushed per call cost one allocation of about
/// 1 KiB each (and glibc consolidating its free lists on each).
async fn connection_load(
    client: EchoClient,
    depth: usize,
    shared: Arc<Shared>,
    payload: Value,
    notify: bool,
) -> Latencies {
    let hist = Mutex::new(Latencies::default());
    if depth == 1 {
        // One lane needs no set: its caller's wake-up goes to the task itself, not through
        // the set's own waker and queue.
        lane(&client, &shared, &payload, notify, &hist).await;
        return hist.into_inner().unwrap();
    }
    let mut lanes: FuturesUnordered<_> = (0..depth)
        .map(|_| lane(&client, &shared, &payload, notify, &hist))
        .collect();
    while lanes.next().await.is_some() {}
    drop(lanes);
    hist.into_inner().unwrap()
}

/// The pipeline a connection sends over and over: `depth` echo calls, or with `notify`,
/// `depth` batches of notifications, each followed by its barrier call.
fn echo_pipeline(depth: usize, payload: &Value, notify: bool) -> anyhow::Result<Pipeline> {
    let mut p = Pipeline::new();
    for _ in 0..depth {
        if notify {
            for _ in 0..NOTIFY_BATCH {
                p.notify("sink", &(payload,))?;
            }
            p.call("echo", &(Value::Nil,))?;
        } else {
            p.call("echo", &(payload,))?;
        }
    }
    Ok(p)
}

/// The load on one connection with `--pipeline`: one pipeline after another until the end.
/// Each call of a pipeline inside the window counts with the pipeline's time, as
/// `redis-benchmark -P` counts its requests.
async fn pipelined_load(
    client: Client,
    pipeline: Pipeline,
    shared: Arc<Shared>,
    notify: bool,
) -> Latencies {
    let hist = Mutex::new(Latencies::default());
    let opts = CallOptions::default();
    let arrival = Arrival::new();
    let waker = Waker::from(arrival.clone());
    loop {
        let t0 = Instant::now();
        let call = pin!(client.call_pipeline(&opts, &pipeline));
        let (answers, arrived, done) = arrival.time(&waker, call).await;
        if t0 >= shared.start && done <= shared.end {
            let took = Took::since(t0, arrived, done);
            match answers {
                Ok(answers) => {
                    let mut answered = 0;
                    for answer in answers {
                        match answer {
                            Ok(_) => answered += 1,
                            Err(e) => record(&shared, &hist, notify, took, 1, Err(e)),
                        }
                    }
                    record(&shared, &hist, notify, took, answered, Ok(()));
                }
                Err(e) => record(&shared, &hist, notify, took, 1, Err(e)),
            }
        }
        if done >= shared.end {
            return hist.into_inner().unwrap();
        }
        shared.next.wait().await;
    }
}

/// Calls one after another until the end, recording each call that fell inside the window.
async fn lane(
    client: &EchoClient,
    shared: &Shared,
    payload: &Value,
    notify: bool,
    hist: &Mutex<Latencies>,
) {
    let arrival = Arrival::new();
    let waker = Waker::from(arrival.clone());
    loop {
        let t0 = Instant::now();
        // Pinned where it is made: the call's future (about 1 KiB) is not moved again.
        let call = pin!(one_call(client, payload, notify));
        let (result, arrived, done) = arrival.time(&waker, call).await;
        if t0 >= shared.start && done <= shared.end {
            let took = Took::since(t0, arrived, done);
            record(shared, hist, notify, took, 1, result);
        }
        if done >= shared.end {
            return;
        }
        shared.next.wait().await;
    }
}

/// Counts `calls` calls that fell inside the window and took `took` each, or one error.
fn record(
    shared: &Shared,
    hist: &Mutex<Latencies>,
    notify: bool,
    took: Took,
    calls: u64,
    result: Result<(), shoal::Error>,
) {
    match result {
        Ok(()) if calls == 0 => {}
        Ok(()) => {
            let n = if notify { NOTIFY_BATCH } else { 1 };
            shared.calls.fetch_add(n * calls, Ordering::Relaxed);
            hist.lock().unwrap().record(took, calls);
        }
        Err(e) => {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            shared
                .first_error
                .lock()
                .unwrap()
                .get_or_insert_with(|| e.to_string());
        }
    }
}

/// One call (or, with `notify`, a batch of notifications and a barrier call).
async fn one_call(client: &EchoClient, payload: &Value, notify: bool) -> Result<(), shoal::Error> {
    if notify {
        // Boxed so the plain call's future, moved on every push, stays small.
        Box::pin(notify_batch(client, payload)).await
    } else {
        client.echo(payload.clone()).await.map(|_| ())
    }
}

async fn notify_batch(client: &EchoClient, payload: &Value) -> Result<(), shoal::Error> {
    for _ in 0..NOTIFY_BATCH {
        client.sink(payload.clone()).await?;
    }
    client.echo(Value::Nil).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_next_call_waits_for_the_tasks_ready_before_it_on_the_next_turn() {
        for (next, order) in [
            (NextCall::AtOnce, ["next call", "other"]),
            (NextCall::NextTurn, ["other", "next call"]),
        ] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (a, b) = (seen.clone(), seen.clone());
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async move {
                    let lane = tokio::task::spawn_local(async move {
                        // The answer is in; another connection's task is ready too.
                        let other = tokio::task::spawn_local(async move {
                            b.lock().unwrap().push("other");
                        });
                        next.wait().await;
                        a.lock().unwrap().push("next call");
                        other.await.unwrap();
                    });
                    lane.await.unwrap();
                })
                .await;
            assert_eq!(*seen.lock().unwrap(), order);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_arrives_when_the_caller_is_woken_not_when_it_runs_again() {
        let arrival = Arrival::new();
        let waker = Waker::from(arrival.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let answering = tokio::spawn(async move {
            tokio::time::advance(Duration::from_millis(10)).await;
            tx.send(7).unwrap();
            // The caller is woken; the clock moves on before it runs.
            tokio::time::advance(Duration::from_millis(5)).await;
        });
        let t0 = Instant::now();
        let (answer, arrived, done) = arrival.time(&waker, pin!(rx)).await;
        answering.await.unwrap();
        assert_eq!(answer, Ok(7));
        assert_eq!(arrived - t0, Duration::from_millis(10));
        assert_eq!(done - t0, Duration::from_millis(15));

        // The next call starts with no wake of its own: one that finishes on its first
        // poll arrived when it finished.
        tokio::time::advance(Duration::from_millis(3)).await;
        let t1 = Instant::now();
        let (answer, arrived, done) = arrival.time(&waker, pin!(std::future::ready(8))).await;
        assert_eq!(answer, 8);
        assert_eq!((arrived, done), (t1, t1));
    }

    impl SignalSource for tokio::sync::mpsc::UnboundedReceiver<Signal> {
        async fn recv(&mut self) -> Signal {
            match tokio::sync::mpsc::UnboundedReceiver::recv(self).await {
                Some(s) => s,
                None => std::future::pending().await,
            }
        }
    }

    /// Serves the echo service on loopback with one call to `sleep_echo` of an hour in
    /// progress; returns the sender of signals and the serving task.
    async fn serving_a_long_call(
        grace: Duration,
    ) -> (
        tokio::sync::mpsc::UnboundedSender<Signal>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
        tokio::task::JoinHandle<Result<Value, shoal::rpc::Error>>,
    ) {
        let server = Server::builder()
            .service(EchoServer::new(EchoService))
            .build()
            .unwrap();
        let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let serving = tokio::spawn(async move { serve_until(&server, listener, rx, grace).await });
        let client = Client::builder()
            .endpoint(addr)
            .timeout(Duration::from_secs(7200))
            .connect()
            .await
            .unwrap();
        let call = tokio::spawn(async move {
            client
                .call::<_, Value>("sleep_echo", &(3_600_000u64, 1))
                .await
        });
        // The clock is paused: this returns once every task waits on a timer, the call's
        // handler included.
        tokio::time::sleep(Duration::from_millis(10)).await;
        (tx, serving, call)
    }

    /// Before, the server waited for such a handler to end, whatever signals came.
    #[tokio::test(start_paused = true)]
    async fn a_signal_drains_for_the_grace_period_then_closes_what_is_left() {
        let grace = Duration::from_secs(10);
        let (tx, serving, call) = serving_a_long_call(grace).await;
        let signalled = Instant::now();
        tx.send(Signal::Terminate).unwrap();
        serving.await.unwrap().unwrap();
        let took = signalled.elapsed();
        assert!(took >= grace && took < Duration::from_secs(60), "{took:?}");
        assert!(call.await.unwrap().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_closes_at_once() {
        let grace = Duration::from_secs(10);
        let (tx, serving, call) = serving_a_long_call(grace).await;
        let signalled = Instant::now();
        tx.send(Signal::Terminate).unwrap();
        tx.send(Signal::Interrupt).unwrap();
        serving.await.unwrap().unwrap();
        assert!(signalled.elapsed() < grace, "{:?}", signalled.elapsed());
        assert!(call.await.unwrap().is_err());
    }
}
