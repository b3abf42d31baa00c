//! shoal: typed MessagePack-RPC services and the runtime around them. Declare a service with
//! [`service`], run it in an [`App`] (lifecycle [`Hooks`], configuration, signals, timers,
//! watchdog, status, [`metrics`]), and call it with the generated client over a [`Client`];
//! [`rpc`] holds the RPC layer.
//!
//! ```
//! use shoal::rpc::Dispatch;
//!
//! #[shoal::service]
//! pub trait Calculator {
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! struct Calc;
//!
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 {
//!         a + b
//!     }
//! }
//!
//! // `CalculatorServer` goes to a server; `CalculatorClient::new(client)` calls one.
//! let server = CalculatorServer::new(Calc);
//! assert_eq!(server.methods()[0].name, "add");
//! ```
//!
//! # Running an application
//!
//! `App::new(name, version).setup(|app| { app.serve(...); Ok(()) }).run().await` reads
//! `--config FILE`, repeated for layers (or `$SHOAL_CONFIG`; `--check` only validates),
//! loads the configuration,
//! runs the setup, binds the listeners, calls [`Hooks::on_start`] and serves until told to
//! close. A listener that cannot be bound fails the start with an error naming the key
//! (`rpc.listen`, `admin.listen`, `metrics.listen`) and the file. `--check` also tries the
//! addresses: a missing directory or something other than a socket at a Unix path is an
//! error (exit 2); an address in use is noted in the answer (it may be this service, which a
//! re-execution takes over), the exit code staying 0. See `examples/hello.rs`, `examples/calculator.rs` and `examples/lifecycle.rs`.
//! [`App::start`] does the same inside a caller's runtime and prints nothing: a start that
//! ends early is a [`StartError`] carrying the exit code and the cause, which `run` prints.
//!
//! ## Configuration
//!
//! A TOML file; a variable `SHOAL_SECTION__KEY=value` overrides `section.key` (see
//! [`config`]). The runtime's own keys, all optional:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `rpc.listen` | none | `host:port` or `unix:PATH` to serve the services on |
//! | `rpc.max_message`, `rpc.max_in_flight`, `rpc.blocking_threads` | 16 MiB, 1024, 64 | limits: 1024 to 1 GiB bytes, 1 to 1,000,000 calls per connection, 1 to 4096 threads |
//! | `rpc.max_unsent` | 4 MiB | bytes of replies queued for a peer that does not take them, past which the server stops reading from it (64 KiB to 1 GiB) |
//! | `rpc.max_values` | 1,048,576 | values one incoming message may hold, counting every scalar, string, array, map key and value; past it the message is refused naming the limit (1024 to 268,435,456) |
//! | `rpc.stall_timeout` | `"30s"` | a connection that leaves a message half sent, or takes none of the bytes queued for it, for this long is closed; the timer starts over whenever bytes come, so a peer must send something within each period (above zero, at most 24h) |
//! | `rpc.idle_timeout` | `"10m"` | a connection with nothing read or written and no call in progress for this long is closed; a shoal client is told `shoal.goaway` and closes it itself (above zero, at most 24h) |
//! | `rpc.max_connections` | 4096 | connections `rpc.listen` keeps open at once (per process in process mode); more are closed as they come, logged at a bounded rate (1 to 1,000,000) |
//! | `rpc.processes` | 0 | process mode: N (0 to 1024) worker processes serve the listener (see below) |
//! | `admin.listen` | none | `unix:PATH` of the admin socket: mode 0600 from the moment the file exists (bound in a private directory, then renamed into place), and a connection from a user other than the process's own or root is refused by its credentials and logged; every control action is logged with the caller's uid and pid |
//! | `services.enabled` | all | services to start; what they `require` starts too |
//! | `shutdown.grace` | `"10s"` | how long closing may take before exit code 3 (0s to 24h) |
//! | `control.handover_timeout` | `"30s"` | how long a re-executed binary has to serve (above zero, at most 24h) |
//! | `watchdog.timeout` | off | no `heartbeat()` for this long: exit code 4 (above zero, at most 24h; unset = off, `"0s"` is refused) |
//! | `summary.every` | off | `"minute"`, `"hour"`, `"day"` or a duration above zero, at most 24h (unset = off); also logged at close |
//! | `log.level` | `"info"` | a filter such as `"info,shoal_rpc=debug"` (a level, and levels per target prefix) for the sinks that set none |
//! | `[[log.sinks]]` | one console sink at `log.level` | where events go: `kind` = `"console"`, `"file"`, `"syslog"` or `"email"`, each with its own `level` and `format` (`"text"` or `"json"`); see [`logging`] |
//! | file sink | | `path` (relative to the working directory; a regular file), `rotate_size` (`"10MB"`; `"0"` = off; at most `"1024GB"`), `rotate_every` (`"minute"`, `"hour"`, `"day"`; off), `keep` (0 to 1000; 7), `compress` (true) |
//! | syslog sink | | `address` (`"/dev/log"`, `"unix:PATH"`, `"udp://host:port"`), `facility` (`"user"`), `app_name` (the application's name) |
//! | email sink (the crate's `email` feature) | `level = "error"` | `smtp` (`"smtp://host:port"`, `starttls`; `"smtps://host:port"`), `username`, `password` (shown redacted; only over TLS), `from`, `to`, `subject` (`"[APP] errors on HOST"`), `interval` (`"5m"`; above zero, at most 24h), `max_lines` (1 to 100,000; 1000) |
//! | `workers.NAME` | as declared | the size of worker group NAME, 0 to 1024 ([`workers`]) |
//! | `metrics.listen` | none | `host:port` to serve Prometheus text on (`GET /metrics`) |
//! | `monitor.publish` | off | `tcp://HOST:PORT` (HOST may be `*`) or `ipc://PATH`: publish the status snapshot there on a ZeroMQ PUB socket ([`monitor`]); port 0 picks a free port |
//! | `monitor.every` | `"10s"` | how often a snapshot is published (above zero, at most 24h) |
//! | `monitor.format` | `"msgpack"` | `"msgpack"` (the map `shoal.status` returns) or `"json"` (the same object) |
//! | `status.public_config` | false | whether `shoal.status` on `rpc.listen` carries the (redacted) configuration; on the admin socket it always does |
//!
//! Every number and duration is checked against its range when the configuration is loaded
//! (at start, by `--check` and on reload), and a value outside it is an error naming the
//! file, the line and the key. Log levels and sinks change on reload; a sink that cannot be set up (a file that cannot be
//! opened, a syslog socket that is not there) ends the start with exit code 1, or rejects the
//! reload. `--check` opens no sink, but a file sink whose path holds something other than a
//! regular file (a FIFO, a directory) is an error there too, naming the file, line and key.
//!
//! Every other top-level table belongs to the application: [`Setup::section`] parses one
//! into a type and returns a [`Live`] that follows reloads. The configuration comes in layers,
//! each key from the highest that sets it: defaults < the `--config` files in the order given
//! (each after the files its `include = [...]` names) < the center's layer < the `SHOAL_…`
//! environment; see [`config`]. `shoal config explain FILE...` prints every effective value
//! with its layer and file.
//!
//! Under a shoal agent, the center's layer is the file `SHOAL_CENTER_CONFIG` names, and with
//! `SHOAL_AGENT=unix:PATH` the application follows it: it tells the agent the version it
//! started with, waits on the agent's `agent.config.watch` for another, reloads (as SIGHUP
//! does: every layer read again, everything checked, swapped whole or refused) and answers
//! `agent.config.applied`, applied or rejected with the reason. `shoal.status` says the
//! center version in force (`center_version`).
//!
//! ## Control
//!
//! | signal | admin method | action |
//! |---|---|---|
//! | SIGHUP | `shoal.reload` | re-read the configuration through the start-up path; a rejected one leaves the old in force and shows in status |
//! | SIGTERM, SIGINT | `shoal.close` | close gracefully: stop accepting, `on_close`, in-flight calls finish within `shutdown.grace`; a second signal exits at once |
//! | SIGUSR2 | `shoal.restart` | start the binary at the same path again with the listening sockets; once it serves, this process drains and exits 0 (shoal clients are told `shoal.goaway` and lose no call; a third-party client's unread request is lost with its connection) |
//!
//! `shoal.status` ([`status::Status`], no argument) and `shoal.metrics` (a
//! [`metrics::Snapshot`], or with the argument `"prometheus"` the Prometheus text) are
//! answered on every listener; an argument they do not take is an invalid-params error. The
//! control methods are answered only on the admin socket. On `rpc.listen`, the status's `config` is empty
//! unless `status.public_config = true`. Wherever the configuration is shown (status, the
//! monitor feed, `shoal config explain`), secrets are redacted by key name and inside values
//! (a URL's password, a DSN's `password=`): see [`config`]. Metrics are per process: see [`metrics`]. Under systemd (`Type=notify`) the runtime sends `READY=1`,
//! `RELOADING=1`, `STOPPING=1` and `WATCHDOG=1`; after a re-execution the new process sends
//! `MAINPID=` (the unit needs `NotifyAccess=all`).
//!
//! ## Monitor feed
//!
//! With `monitor.publish` set, every `monitor.every` the runtime publishes a two-frame
//! message on a ZeroMQ PUB socket: the topic `shoal.status`, then the [`status::Status`]
//! snapshot encoded as `monitor.format` says; one goes out right after the start and a last
//! one (state `"closing"`) at close. Subscribe to `shoal.status` from any ZeroMQ library, or
//! run `shoal monitor ADDR`. [`monitor`] gives the wire format in full; [`Running::monitor_addr`]
//! says where the feed is bound.
//!
//! ## Worker groups and process mode
//!
//! [`Setup::workers`] and [`Setup::thread_workers`] declare background worker groups (async
//! tasks, OS threads, or with `.processes()` processes), each worker told its group and
//! index, restarted with a backoff when it fails, stopped with the application; see
//! [`workers`].
//!
//! With `rpc.processes = N` (and the application run as a process) the process becomes a
//! master: it binds `rpc.listen`, starts its own binary N times as RPC workers that all
//! accept on that one socket, and serves only the admin socket. The master starts a worker
//! that dies again (after a backoff), forwards SIGHUP to every worker (each re-reads the
//! configuration), and on close sends them SIGTERM and waits for them within
//! `shutdown.grace`. SIGUSR2 re-executes the master, whose successor starts its own workers
//! on the same socket before the old ones drain. The master and every worker run `on_start`
//! and `on_close`; the workers serve the services; the master alone runs timers, the run
//! loop, the watchdog, the summary, the monitor feed and the worker groups. A worker ignores
//! a second SIGTERM (a service manager's stop signals the whole group, then the master
//! forwards its own): the master's grace period bounds the close, then it kills them. Each
//! worker runs the binary the master runs (`/proc/self/exe`), and reads the configuration
//! file when it starts: a worker restarted after the file was edited, before a reload, reads
//! the edited file. `shoal.status` on the admin socket lists every worker (`workers`, group
//! `rpc`); on the RPC port, a worker answers about itself. Metrics are per process, and the
//! exporter (`metrics.listen`) is the master's. A worker process writes each file log sink
//! to a file of its own, the path with its role inserted (`app.log` → `app.rpc-1.log`,
//! `app.sweeper-0.log`), so no two processes rotate one file.
//!
//! ## Exit codes
//!
//! See [`Exit`]: 0 closed, 1 failed, 2 bad configuration or command line, 3 grace period over,
//! 4 watchdog, 128 + N a second close signal N.

mod app;
pub mod config;
pub mod control;
pub mod discover;
pub mod events;
mod hooks;
mod live;
pub mod logging;
mod math;
pub mod metrics;
pub mod monitor;
pub mod status;
pub mod timer;
mod watchdog;
pub mod workers;

/// The error type hooks, setup functions and timers return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use app::{App, Handle, Running, ServiceEntry, Setup, StartCause, StartError};
pub use config::Config;
pub use control::Exit;
pub use hooks::{Hooks, NoHooks};
pub use live::Live;
pub use shoal_macros::service;
pub use shoal_rpc as rpc;
pub use shoal_rpc::{
    codes, Addr, CallOptions, Client, ClientBuilder, Context, Error, Listener, Peer, RouteKey,
    RpcError, Server, ServerBuilder, Value,
};
pub use workers::{Worker, WorkerGroup, WorkerKind};
