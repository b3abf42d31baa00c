//! MessagePack-RPC for shoal: the wire codec, connections where either side may call, a server
//! with tower middleware, and a multiplexed client with balancing over endpoints that discovery
//! may change while it runs.

pub mod accept;
pub mod balance;
pub mod blocking;
mod calls;
pub mod client;
pub mod codec;
pub mod conn;
pub mod decode;
pub mod discover;
pub mod endpoint;
pub mod endpoints;
pub mod error;
pub mod extensions;
mod in_place;
pub mod middleware;
pub mod pipeline;
pub mod server;
pub mod service;
mod throttle;
pub mod transport;
mod woken;

pub use balance::Balance;
pub use client::{CallOptions, Client, ClientBuilder};
pub use conn::Peer;
pub use discover::Discover;
pub use endpoint::{EndpointConfig, EndpointStatus, RouteKey};
pub use endpoints::EndpointSet;
pub use error::{codes, Error, RemoteError, RpcError};
pub use extensions::Extensions;
pub use in_place::{Answered, CallInPlace, InPlace};
pub use pipeline::Pipeline;
pub use rmpv::Value;
pub use server::{Server, ServerBuilder};
pub use service::{Args, BoxReply, Context, Dispatch, MethodInfo, Reply, Request, Router};
pub use transport::{Addr, ClientTls, Listener};
