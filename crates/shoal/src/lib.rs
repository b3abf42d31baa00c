//! shoal: typed MessagePack-RPC services. Declare a service with [`service`], serve it with a
//! [`Server`] and call it with the generated client over a [`Client`]; [`rpc`] holds the rest.
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

pub mod config;
pub mod timer;

pub use shoal_macros::service;
pub use shoal_rpc as rpc;
pub use shoal_rpc::{
    codes, Addr, CallOptions, Client, ClientBuilder, Context, Error, Listener, Peer, RouteKey,
    RpcError, Server, ServerBuilder, Value,
};
