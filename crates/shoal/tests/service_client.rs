//! The generated `<Trait>Client` against the generated `<Trait>Server`, end to end over a real
//! loopback socket: typed results, error replies, notifications and call options, and the
//! order and answers of handlers that finish at once beside ones that wait.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::rpc::{Addr, Listener};
use shoal::{codes, Client, Context, RpcError, Server};
use tokio::sync::{oneshot, Notify};

#[shoal::service]
pub trait Tally {
    /// Adds `n` to the total and returns the new total.
    async fn add(&self, n: i64) -> i64;

    async fn div(&self, a: i64, b: i64) -> Result<i64, RpcError>;

    #[shoal(notify)]
    async fn note(&self, text: String);

    #[shoal(idempotent)]
    async fn notes(&self) -> Vec<String>;

    #[shoal(blocking)]
    fn double(&self, n: i64) -> i64;

    async fn has_peer(&self, ctx: &Context) -> bool;

    #[shoal(name = "tally.zero")]
    async fn zero(&self) -> i64;
}

#[derive(Default)]
struct Counter {
    total: Mutex<i64>,
    notes: Mutex<Vec<String>>,
    noted: Notify,
}

impl Tally for Counter {
    async fn add(&self, n: i64) -> i64 {
        let mut total = self.total.lock().unwrap();
        *total += n;
        *total
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, RpcError> {
        a.checked_div(b)
            .ok_or_else(|| RpcError::new(codes::APP_MIN, "division by zero"))
    }

    async fn note(&self, text: String) {
        self.notes.lock().unwrap().push(text);
        self.noted.notify_one();
    }

    async fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap().clone()
    }

    fn double(&self, n: i64) -> i64 {
        n * 2
    }

    async fn has_peer(&self, ctx: &Context) -> bool {
        ctx.peer().is_some()
    }

    async fn zero(&self) -> i64 {
        0
    }
}

/// A server on an ephemeral loopback port; stops when `stop` is sent or dropped.
struct Running {
    addr: Addr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(service: impl shoal::rpc::Dispatch) -> Running {
    let server = Server::builder().service(service).build().unwrap();
    let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        server.serve(listener, shutdown).await.unwrap();
    });
    Running { addr, stop, task }
}

impl Running {
    async fn shut_down(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

#[tokio::test]
async fn the_generated_client_calls_the_generated_server() {
    let counter = std::sync::Arc::new(Counter::default());
    let server = start(TallyServer::from_arc(counter.clone())).await;
    let client = Client::connect(&server.addr.to_string()).await.unwrap();
    let tally = TallyClient::new(client).with_timeout(Duration::from_secs(10));

    assert_eq!(tally.add(2).await.unwrap(), 2);
    assert_eq!(tally.add(3).await.unwrap(), 5);
    assert_eq!(tally.div(7, 2).await.unwrap(), 3);
    assert_eq!(tally.double(21).await.unwrap(), 42);
    assert!(tally.has_peer().await.unwrap());
    assert_eq!(tally.zero().await.unwrap(), 0);

    let err = tally.div(1, 0).await.unwrap_err();
    assert_eq!(err.code(), Some(codes::APP_MIN), "{err}");

    let noted = counter.noted.notified();
    tally.note("hello".to_owned()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), noted)
        .await
        .expect("the notification arrives");
    assert_eq!(tally.notes().await.unwrap(), ["hello"]);

    // An unknown method on the same connection answers method not found.
    let err = tally
        .client()
        .call::<_, i64>("zero", &[(); 0])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::METHOD_NOT_FOUND), "{err}");

    server.shut_down().await;
}

/// Handlers that finish at once beside ones that wait.
#[shoal::service]
pub trait Turns {
    /// Records `i`, after the gate opens when `wait`.
    #[shoal(notify)]
    async fn step(&self, i: u32, wait: bool);

    /// `i` back; a multiple of 3 after a turn of the runtime (it is not done at its first
    /// poll, so it runs as a task).
    async fn echo(&self, i: u32) -> u32;

    #[shoal(idempotent)]
    async fn steps(&self) -> Vec<u32>;

    /// Records `i` from the blocking pool, with whether the caller set a deadline.
    #[shoal(notify, blocking)]
    fn mark(&self, ctx: &Context, i: u32);
}

#[derive(Default)]
struct Steps {
    seen: Mutex<Vec<u32>>,
    gate: Notify,
    last: Notify,
    marks: Mutex<Vec<(u32, bool)>>,
    marked: Notify,
}

const STEPS: u32 = 100;

impl Turns for Steps {
    async fn step(&self, i: u32, wait: bool) {
        if wait {
            self.gate.notified().await;
        }
        self.seen.lock().unwrap().push(i);
        if i == STEPS - 1 {
            self.last.notify_one();
        }
    }

    async fn echo(&self, i: u32) -> u32 {
        if i % 3 == 0 {
            tokio::task::yield_now().await;
        }
        i
    }

    async fn steps(&self) -> Vec<u32> {
        self.seen.lock().unwrap().clone()
    }

    fn mark(&self, ctx: &Context, i: u32) {
        self.marks
            .lock()
            .unwrap()
            .push((i, ctx.deadline().is_some()));
        self.marked.notify_one();
    }
}

/// The server polls a handler where it reads the call and keeps the memory of one that
/// finished for the next call: notifications behind one that waits still wait their turn,
/// and calls to one method, some done at once and some not, each get their own answer.
#[tokio::test]
async fn handlers_done_at_once_keep_the_order_and_answers_of_those_that_wait() {
    let steps = Arc::new(Steps::default());
    let server = start(TurnsServer::from_arc(steps.clone())).await;
    let client = Client::connect(&server.addr.to_string()).await.unwrap();
    let turns = TurnsClient::new(client).with_timeout(Duration::from_secs(10));

    turns.step(0, true).await.unwrap();
    for i in 1..STEPS {
        turns.step(i, false).await.unwrap();
    }
    let calls = (0..300).map(|i| turns.echo(i));
    let answers = futures_util::future::join_all(calls).await;
    for (i, answer) in (0..).zip(answers) {
        assert_eq!(answer.unwrap(), i);
    }
    // Every step has been read by now, and none has run while the first waits.
    assert_eq!(turns.steps().await.unwrap(), [0u32; 0]);
    steps.gate.notify_one();
    tokio::time::timeout(Duration::from_secs(10), steps.last.notified())
        .await
        .expect("the last step runs");
    let seen = turns.steps().await.unwrap();
    assert_eq!(seen, (0..STEPS).collect::<Vec<_>>());

    // A one-way method on the blocking pool, with the call's context.
    let marked = steps.marked.notified();
    turns.mark(5).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), marked)
        .await
        .expect("the mark is made");
    assert_eq!(*steps.marks.lock().unwrap(), [(5, false)]);

    server.shut_down().await;
}
