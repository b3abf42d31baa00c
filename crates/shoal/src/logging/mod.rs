//! Console logging for applications run as processes: `tracing` events to stderr, filtered by
//! `log.level`, which a reload changes in place. [`RotatingFile`] keeps a rotated log file.

mod file;

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

pub use file::{RotatingFile, Rotation};

/// Changes the level of the subscriber [`init`] installed.
#[derive(Debug, Clone)]
pub(crate) struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
}

/// Installs the console subscriber at `level`, unless the process already has one (a test
/// harness, or an application that set up its own).
pub(crate) fn init(level: &str) -> Option<Logging> {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init()
        .ok()?;
    Some(Logging { filter: handle })
}

impl Logging {
    pub(crate) fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}
