//! The one place the CLI turns OS signals into a shutdown future.

use tokio::signal::unix::{signal, SignalKind};

/// Completes on the first SIGINT or SIGTERM.
pub async fn shutdown() {
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
