//! Tower middleware for shoal's dispatch services: deadlines, load shedding, tracing,
//! per-method statistics and panic containment, each a `Layer` over any
//! `Service<Request, Response = Reply, Error = RpcError>`.
//!
//! # Readiness
//!
//! shoal's dispatch services are always ready: `poll_ready` returns `Ready` (these layers only
//! pass it through to the service they wrap). A connection runs many calls at once over one
//! service, so a layer that limits work does it inside the call's future or by answering the
//! call with an error, never by holding back readiness: one slow method must not stall every
//! other call on the connection.
//!
//! # Order
//!
//! With `ServerBuilder::layer` and `tower::ServiceBuilder` the first layer added is the
//! outermost. The order that lets each layer see what it should:
//!
//! ```text
//! TraceLayer             one span per call, around everything below, refusals included
//! StatsLayer             counts refusals and deadline errors as well as handler results
//! ConcurrencyLimitLayer  a refused call never starts a timer or reaches a handler
//! TimeoutLayer           the deadline handlers see in `ctx.deadline()`
//! CatchPanicLayer        innermost, so a panic is an ordinary error to every layer above
//! ```
//!
//! Statistics stay in process; metrics through the `metrics` facade belong to the service
//! runtime (the `shoal` crate), whose own layer records them beside this one.

pub mod limit;
pub mod panic;
pub mod stats;
pub mod timeout;
pub mod trace;

pub use limit::{ConcurrencyLimit, ConcurrencyLimitLayer};
pub use panic::{CatchPanic, CatchPanicLayer};
pub use stats::{LatencySummary, MethodStats, Stats, StatsLayer, StatsService};
pub use timeout::{Timeout, TimeoutLayer};
pub use trace::{Trace, TraceLayer};

#[cfg(test)]
mod tests;
