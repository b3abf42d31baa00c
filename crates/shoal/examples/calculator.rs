//! Two services in one process: `Calculator` records every result in `History`, which it
//! requires, through state shared by type. A timer beats the watchdog's heart; a cron timer
//! trims the history to `[history] keep` entries; a group of auditor workers re-checks the
//! history's arithmetic, each its own share; the summary counts calculations. Custom
//! metrics count operations by kind, gauge the history's length and keep a histogram of
//! operand sizes, beside the runtime's per-method ones.
//!
//! ```text
//! cargo run -p shoal --example calculator -- --config crates/shoal/examples/calculator.toml
//! shoal call 127.0.0.1:7001 add 2 3
//! shoal call 127.0.0.1:7001 recent 10
//! shoal call 127.0.0.1:7001 shoal.metrics
//! curl http://127.0.0.1:9464/metrics
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use shoal::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use shoal::rpc::{codes, RpcError};
use shoal::timer::{Schedule, Timer};
use shoal::{App, Context, Hooks};

#[shoal::service]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn sub(&self, a: i64, b: i64) -> i64;
    async fn mul(&self, a: i64, b: i64) -> Result<i64, RpcError>;
    async fn div(&self, a: i64, b: i64) -> Result<i64, RpcError>;
}

#[shoal::service]
pub trait History {
    /// The last `n` calculations, newest first.
    async fn recent(&self, cx: &Context, n: u32) -> Vec<String>;
    /// Calculations since start.
    async fn total(&self, cx: &Context) -> u64;
}

/// The `[history]` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Entries kept after each trim.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// When to trim: a timer schedule such as `"cron: 0 * * * * *"` or `"every 10m"`.
    #[serde(default = "default_trim")]
    pub trim: String,
}

fn default_keep() -> usize {
    100
}

fn default_trim() -> String {
    "cron: 0 * * * * *".into()
}

/// The history both services share.
#[derive(Debug, Default)]
pub struct Log {
    entries: Mutex<VecDeque<String>>,
    total: AtomicU64,
    /// Entries the auditors re-checked, and those that were wrong.
    audited: AtomicU64,
    wrong: AtomicU64,
}

impl Log {
    fn record(&self, line: String) {
        let mut entries = self.entries.lock().unwrap();
        entries.push_front(line);
        gauge!(HISTORY_ENTRIES).set(entries.len() as f64);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Re-checks every `count`-th entry starting at `index`: one auditor's share.
    fn audit(&self, index: usize, count: usize) {
        let entries: Vec<String> = {
            let entries = self.entries.lock().unwrap();
            entries.iter().skip(index).step_by(count).cloned().collect()
        };
        for entry in entries {
            self.audited.fetch_add(1, Ordering::Relaxed);
            if !recheck(&entry) {
                self.wrong.fetch_add(1, Ordering::Relaxed);
                tracing::error!(entry, "the history holds a wrong result");
            }
        }
    }

    fn trim(&self, keep: usize) -> usize {
        let mut entries = self.entries.lock().unwrap();
        let before = entries.len();
        entries.truncate(keep);
        gauge!(HISTORY_ENTRIES).set(entries.len() as f64);
        before - entries.len()
    }
}

const OPERATIONS: &str = "calculator_operations_total";
const HISTORY_ENTRIES: &str = "calculator_history_entries";
const OPERAND_DIGITS: &str = "calculator_operand_digits";

/// What the metrics mean (their `# HELP` lines), and buckets that suit digit counts: an
/// `i64` has at most 19.
fn describe_metrics() -> Result<(), shoal::metrics::InvalidBuckets> {
    describe_counter!(OPERATIONS, "Calculations asked for, by operation");
    describe_gauge!(HISTORY_ENTRIES, "Calculations kept in the history");
    describe_histogram!(
        OPERAND_DIGITS,
        "Decimal digits of each operand, a measure of how big the numbers are"
    );
    match shoal::metrics::global() {
        Some(registry) => registry.set_buckets(OPERAND_DIGITS, &[1.0, 2.0, 4.0, 8.0, 12.0, 16.0]),
        // Another recorder has the values; its buckets are its own business.
        None => Ok(()),
    }
}

/// Counts a calculation and the sizes of its operands.
fn measure(op: &'static str, a: i64, b: i64) {
    counter!(OPERATIONS, "op" => op).increment(1);
    for operand in [a, b] {
        let digits = operand.unsigned_abs().checked_ilog10().map_or(1, |d| d + 1);
        histogram!(OPERAND_DIGITS, "op" => op).record(f64::from(digits));
    }
}

struct Calc {
    log: Arc<Log>,
}

impl Calc {
    fn done(
        &self,
        op: &str,
        a: i64,
        b: i64,
        result: Result<i64, RpcError>,
    ) -> Result<i64, RpcError> {
        if let Ok(value) = &result {
            self.log.record(format!("{a} {op} {b} = {value}"));
        }
        result
    }
}

/// Whether a history line `A OP B = R` is right.
fn recheck(line: &str) -> bool {
    let parts: Vec<&str> = line.split(' ').collect();
    let [a, op, b, "=", r] = parts[..] else {
        return false;
    };
    let (Ok(a), Ok(b), Ok(r)) = (a.parse::<i64>(), b.parse::<i64>(), r.parse::<i64>()) else {
        return false;
    };
    let expected = match op {
        "+" => Some(a.wrapping_add(b)),
        "-" => Some(a.wrapping_sub(b)),
        "*" => a.checked_mul(b),
        "/" => a.checked_div(b),
        _ => None,
    };
    expected == Some(r)
}

fn overflow() -> RpcError {
    RpcError::new(codes::APP_MIN + 1, "overflow")
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        measure("add", a, b);
        let sum = a.wrapping_add(b);
        self.log.record(format!("{a} + {b} = {sum}"));
        sum
    }

    async fn sub(&self, a: i64, b: i64) -> i64 {
        measure("sub", a, b);
        let difference = a.wrapping_sub(b);
        self.log.record(format!("{a} - {b} = {difference}"));
        difference
    }

    async fn mul(&self, a: i64, b: i64) -> Result<i64, RpcError> {
        measure("mul", a, b);
        self.done("*", a, b, a.checked_mul(b).ok_or_else(overflow))
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, RpcError> {
        measure("div", a, b);
        let quotient = a
            .checked_div(b)
            .ok_or_else(|| RpcError::new(codes::APP_MIN + 2, "division by zero"));
        self.done("/", a, b, quotient)
    }
}

/// Reads the shared log from the call's context, by type.
struct Recorder;

impl History for Recorder {
    async fn recent(&self, cx: &Context, n: u32) -> Vec<String> {
        let Some(log) = cx.state::<Log>() else {
            return Vec::new();
        };
        let entries = log.entries.lock().unwrap();
        entries.iter().take(n as usize).cloned().collect()
    }

    async fn total(&self, cx: &Context) -> u64 {
        cx.state::<Log>()
            .map_or(0, |log| log.total.load(Ordering::Relaxed))
    }
}

struct Summary {
    log: Arc<Log>,
}

impl Hooks for Summary {
    fn summary(&self) -> String {
        format!(
            "{} calculations, {} in history, {} audited, {} wrong",
            self.log.total.load(Ordering::Relaxed),
            self.log.entries.lock().unwrap().len(),
            self.log.audited.load(Ordering::Relaxed),
            self.log.wrong.load(Ordering::Relaxed),
        )
    }
}

/// The application, for `main` and for tests.
pub fn app() -> App {
    let log = Arc::new(Log::default());
    App::new("calculator", env!("CARGO_PKG_VERSION"))
        .hooks(Summary { log: log.clone() })
        .setup(move |app| {
            describe_metrics()?;
            let history = app.section::<HistoryConfig>("history")?;
            let trim: Schedule = history
                .get()
                .trim
                .parse()
                .map_err(|e| format!("history.trim: {e}"))?;
            app.service("history", move |app| {
                app.state_arc(log);
                Ok(HistoryServer::new(Recorder))
            });
            app.service("calculator", |app| {
                let log = app
                    .get_state::<Log>()
                    .ok_or("the calculator needs the history service's log")?;
                Ok(CalculatorServer::new(Calc { log }))
            })
            .requires(["history"]);

            let handle = app.handle();
            app.timer(Timer::new("heartbeat", "every 5s".parse()?, move || {
                handle.heartbeat();
                async { Ok(()) }
            }));
            let handle = app.handle();
            app.timer(Timer::new("trim", trim, move || {
                let handle = handle.clone();
                let history = history.clone();
                async move {
                    if let Some(log) = handle.state::<Log>() {
                        let dropped = log.trim(history.get().keep);
                        tracing::debug!(dropped, "history trimmed");
                    }
                    Ok(())
                }
            }));

            // Auditors: worker i of n re-checks every n-th entry, every second
            // (`[workers] auditor = N` changes n).
            let handle = app.handle();
            app.workers("auditor", 2, move |w| {
                let handle = handle.clone();
                async move {
                    loop {
                        if let Some(log) = handle.state::<Log>() {
                            log.audit(w.index(), w.count());
                        }
                        tokio::select! {
                            _ = w.closing() => return Ok(()),
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            });
            Ok(())
        })
}

#[tokio::main]
async fn main() -> shoal::Exit {
    app().run().await
}
