//! OS signals as [`Command`]s: the one place the runtime installs signal handlers. A second
//! SIGTERM or SIGINT ends the process here, at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Command;

/// Forwards SIGHUP, SIGTERM, SIGINT and SIGUSR2 to `commands` until `stop` fires. Handlers
/// are installed before this returns, so a signal sent once it has returned is never lost.
/// With `second_exits`, a second close signal ends the process at once; a worker process
/// passes false, because its parent's SIGTERM often follows one sent to the whole group (a
/// service manager's stop), and the parent enforces the grace period itself.
pub(crate) fn forward(
    commands: mpsc::UnboundedSender<Command>,
    stop: CancellationToken,
    second_exits: bool,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    Ok(async move {
        let mut closing = false;
        loop {
            let command = tokio::select! {
                _ = stop.cancelled() => return,
                _ = hup.recv() => {
                    info!(signal = "SIGHUP", "reload requested");
                    Command::Reload(None)
                }
                _ = term.recv() => {
                    info!(signal = "SIGTERM", "close requested");
                    Command::Close { signal: Some(libc_signal::SIGTERM) }
                }
                _ = int.recv() => {
                    info!(signal = "SIGINT", "close requested");
                    Command::Close { signal: Some(libc_signal::SIGINT) }
                }
                _ = usr2.recv() => {
                    info!(signal = "SIGUSR2", "re-execution requested");
                    Command::Restart(None)
                }
            };
            if let Command::Close {
                signal: Some(signal),
            } = command
            {
                // Here rather than in the control loop, which may be busy (a reload, a
                // handover): a second close signal must work whatever the application does.
                if closing {
                    if !second_exits {
                        continue;
                    }
                    warn!(signal, "second close signal: exiting now");
                    super::exit_now(super::Exit::Signal(signal));
                }
                closing = true;
            }
            if commands.send(command).is_err() {
                return;
            }
        }
    })
}

/// Signal numbers for exit codes (128 + N).
mod libc_signal {
    pub const SIGINT: i32 = nix::sys::signal::Signal::SIGINT as i32;
    pub const SIGTERM: i32 = nix::sys::signal::Signal::SIGTERM as i32;
}
