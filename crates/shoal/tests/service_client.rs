//! The generated `<Trait>Client` against the generated `<Trait>Server`, end to end over a real
//! loopback socket: typed results, error replies, notifications and call options.

use std::sync::Mutex;
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

async fn start(counter: std::sync::Arc<Counter>) -> Running {
    let server = Server::builder()
        .service(TallyServer::from_arc(counter))
        .build()
        .unwrap();
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
    let server = start(counter.clone()).await;
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
