//! shoal: typed MessagePack-RPC services and the runtime around them. Declare a service with
//! [`service`], run it in an [`App`] (lifecycle [`Hooks`], configuration, signals, timers,
//! watchdog, status), and call it with the generated client over a [`Client`]; [`rpc`] holds
//! the RPC layer.
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
//! `--config FILE` (or `$SHOAL_CONFIG`; `--check` only validates it), loads the configuration,
//! runs the setup, binds the listeners, calls [`Hooks::on_start`] and serves until told to
//! close. See `examples/hello.rs`, `examples/calculator.rs` and `examples/lifecycle.rs`.
//!
//! ## Configuration
//!
//! A TOML file; a variable `SHOAL_SECTION__KEY=value` overrides `section.key` (see
//! [`config`]). The runtime's own keys, all optional:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `rpc.listen` | none | `host:port` or `unix:PATH` to serve the services on |
//! | `rpc.max_message`, `rpc.max_in_flight`, `rpc.blocking_threads` | 16 MiB, 1024, 64 | limits |
//! | `admin.listen` | none | `unix:PATH` of the admin socket (mode 0600) |
//! | `services.enabled` | all | services to start; what they `require` starts too |
//! | `shutdown.grace` | `"10s"` | how long closing may take before exit code 3 |
//! | `control.handover_timeout` | `"30s"` | how long a re-executed binary has to serve |
//! | `watchdog.timeout` | off | no `heartbeat()` for this long: exit code 4 |
//! | `summary.every` | off | `"minute"`, `"hour"`, `"day"` or a duration; also logged at close |
//! | `log.level` | `"info"` | a `tracing` filter such as `"info,shoal_rpc=debug"`; changes on reload |
//! | `monitor.publish` | off | `tcp://HOST:PORT` (HOST may be `*`) or `ipc://PATH`: publish the status snapshot there on a ZeroMQ PUB socket ([`monitor`]); port 0 picks a free port |
//! | `monitor.every` | `"10s"` | how often a snapshot is published (above zero) |
//! | `monitor.format` | `"msgpack"` | `"msgpack"` (the map `shoal.status` returns) or `"json"` (the same object) |
//!
//! Every other top-level table belongs to the application: [`Setup::section`] parses one
//! into a type and returns a [`Live`] that follows reloads. `shoal config explain FILE` prints
//! every effective value and where it came from.
//!
//! ## Control
//!
//! | signal | admin method | action |
//! |---|---|---|
//! | SIGHUP | `shoal.reload` | re-read the configuration through the start-up path; a rejected one leaves the old in force and shows in status |
//! | SIGTERM, SIGINT | `shoal.close` | close gracefully: stop accepting, `on_close`, in-flight calls finish within `shutdown.grace`; a second signal exits at once |
//! | SIGUSR2 | `shoal.restart` | start the binary at the same path again with the listening sockets; once it serves, this process drains and exits 0 (shoal clients are told `shoal.goaway` and lose no call; a third-party client's unread request is lost with its connection) |
//!
//! `shoal.status` ([`status::Status`]) is answered on every listener; the control methods
//! only on the admin socket. Under systemd (`Type=notify`) the runtime sends `READY=1`,
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
//! ## Exit codes
//!
//! See [`Exit`]: 0 closed, 1 failed, 2 bad configuration or command line, 3 grace period over,
//! 4 watchdog, 128 + N a second close signal N.

mod app;
pub mod config;
pub mod control;
pub mod events;
mod hooks;
mod live;
mod logging;
pub mod monitor;
pub mod status;
pub mod timer;
mod watchdog;

/// The error type hooks, setup functions and timers return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use app::{App, Handle, Running, ServiceEntry, Setup};
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
