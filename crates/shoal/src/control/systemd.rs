//! The systemd notification protocol (`sd_notify`): `READY=1` once serving, `RELOADING=1`,
//! `STOPPING=1`, and `WATCHDOG=1` keep-alives, sent as datagrams to `$NOTIFY_SOCKET` (a path,
//! or an abstract name written with a leading `@`).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tracing::debug;

/// Where to send notifications; absent when not started by systemd with `Type=notify`.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half of `$WATCHDOG_USEC`: systemd expects a keep-alive well within the full period.
    watchdog_every: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from `env`. The watchdog is
    /// ours when `WATCHDOG_PID` is this process or the `predecessor` it replaced (systemd set
    /// it for the process started first).
    pub(crate) fn from_env(env: &[(String, String)], predecessor: Option<u32>) -> Option<Notifier> {
        let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let path = var("NOTIFY_SOCKET").filter(|p| !p.is_empty())?;
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())
            }
            None => SocketAddr::from_pathname(path),
        };
        let socket = UnixDatagram::unbound().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        });
        let (Ok(addr), Ok(socket)) = (addr, socket) else {
            debug!(path, "NOTIFY_SOCKET is not usable");
            return None;
        };
        let for_us = var("WATCHDOG_PID")
            .map(|pid| {
                let pid = pid.parse::<u32>().ok();
                pid == Some(std::process::id()) || (pid.is_some() && pid == predecessor)
            })
            .unwrap_or(true);
        let watchdog_every = var("WATCHDOG_USEC")
            .filter(|_| for_us)
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0)
            .map(|usec| Duration::from_micros(usec / 2));
        Some(Notifier {
            socket,
            addr,
            watchdog_every,
        })
    }

    /// How often systemd wants `WATCHDOG=1`, if it watches this process.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    /// Sends one notification, such as `"READY=1"`. A lost notification is logged, not fatal.
    pub(crate) fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            debug!(state, error = %e, "systemd notification not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("shoal-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        let env = vec![
            ("NOTIFY_SOCKET".to_string(), path.display().to_string()),
            ("WATCHDOG_USEC".to_string(), "4000000".to_string()),
        ];
        let notifier = Notifier::from_env(&env, None).unwrap();
        assert_eq!(notifier.watchdog_every(), Some(Duration::from_secs(2)));
        notifier.send("READY=1");
        notifier.send("WATCHDOG=1");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn watchdog_for_another_pid_is_ignored_and_no_socket_means_none() {
        assert!(Notifier::from_env(&[], None).is_none());
        let env = vec![
            (
                "NOTIFY_SOCKET".to_string(),
                "@shoal-test-abstract".to_string(),
            ),
            ("WATCHDOG_USEC".to_string(), "4000000".to_string()),
            ("WATCHDOG_PID".to_string(), "1".to_string()),
        ];
        let notifier = Notifier::from_env(&env, None).unwrap();
        assert_eq!(notifier.watchdog_every(), None);
        // After a re-execution the watchdog systemd set up for the first process is ours.
        let notifier = Notifier::from_env(&env, Some(1)).unwrap();
        assert_eq!(notifier.watchdog_every(), Some(Duration::from_secs(2)));
    }
}
