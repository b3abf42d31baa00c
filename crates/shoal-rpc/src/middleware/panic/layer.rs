//! The [`CatchPanicLayer`] that wraps services in [`CatchPanic`].

use tower::Layer;

use super::CatchPanic;

/// Wraps services so a panic while handling a call becomes an `internal` error answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer {
    _private: (),
}

impl CatchPanicLayer {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic::new(inner)
    }
}
