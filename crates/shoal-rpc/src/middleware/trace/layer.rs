//! The [`TraceLayer`] that wraps services in [`Trace`].

use tower::Layer;

use super::Trace;

/// Wraps services so every call runs in its own `rpc` span and its outcome is logged.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer {
    _private: (),
}

impl TraceLayer {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace::new(inner)
    }
}
