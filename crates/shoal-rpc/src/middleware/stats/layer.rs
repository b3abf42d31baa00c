//! The [`StatsLayer`], which hands its services one shared [`Stats`] table.

use tower::Layer;

use super::{Stats, StatsService};

/// Wraps services in [`StatsService`], all recording into the same [`Stats`].
#[derive(Debug, Clone, Default)]
pub struct StatsLayer {
    stats: Stats,
}

impl StatsLayer {
    /// Records into a new, empty table; read it through [`StatsLayer::stats`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Records into `stats`, for one table over several stacks (the RPC server and the HTTP
    /// API, say).
    pub fn with_stats(stats: Stats) -> Self {
        Self { stats }
    }

    /// A handle on the table this layer records into.
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }
}

impl<S> Layer<S> for StatsLayer {
    type Service = StatsService<S>;

    fn layer(&self, inner: S) -> StatsService<S> {
        StatsService::new(inner, self.stats.clone())
    }
}
