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

/// A signal that asks `shoal up` to stop everything it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT: Ctrl-C.
    Interrupt,
    /// SIGTERM: `kill`, a service manager.
    Terminate,
    /// SIGHUP: the terminal closed, which takes the output with it.
    Hangup,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
            Stop::Hangup => "SIGHUP",
        })
    }
}

/// The first SIGINT, SIGTERM or SIGHUP. Their handlers are installed when this is first
/// polled and stay for the rest of the process, so that a second Ctrl-C cannot cut short the
/// stopping the first one began.
pub async fn stop() -> std::io::Result<Stop> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(tokio::select! {
        _ = interrupt.recv() => Stop::Interrupt,
        _ = terminate.recv() => Stop::Terminate,
        _ = hangup.recv() => Stop::Hangup,
    })
}
