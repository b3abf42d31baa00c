//! The syslog sink's two halves: [`Framer`] turns a formatted event into one RFC 5424
//! datagram, and [`SyslogSocket`] sends datagrams to a Unix socket or a UDP address without
//! ever blocking the caller.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{Local, SecondsFormat};
use tracing::Level;

use crate::config::{Facility, SyslogAddress};

/// The largest datagram sent; longer messages are cut (on a character boundary). Every
/// syslog daemon takes this much over a Unix socket, and it fits one UDP datagram on loopback
/// and on most networks once fragmented.
pub(super) const MAX_DATAGRAM: usize = 8192;

/// Builds `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - - MSG`.
#[derive(Debug, Clone)]
pub(super) struct Framer {
    facility: u8,
    hostname: String,
    app_name: String,
    pid: u32,
}

impl Framer {
    pub(super) fn new(facility: Facility, app_name: &str) -> Framer {
        Framer {
            facility: facility.code(),
            hostname: header_field(&super::hostname(), 255),
            app_name: header_field(app_name, 48),
            pid: std::process::id(),
        }
    }

    /// One datagram for an event at `level` whose formatted text is `message`.
    pub(super) fn frame(&self, level: Level, message: &[u8]) -> Vec<u8> {
        let severity = match level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        let pri = u32::from(self.facility) * 8 + severity;
        let timestamp = Local::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut out = format!(
            "<{pri}>1 {timestamp} {} {} {} - - ",
            self.hostname, self.app_name, self.pid
        )
        .into_bytes();
        let message = message.strip_suffix(b"\n").unwrap_or(message);
        let message = message.strip_suffix(b"\r").unwrap_or(message);
        let room = MAX_DATAGRAM.saturating_sub(out.len());
        out.extend_from_slice(cut(message, room));
        out
    }
}

/// A header field: printable ASCII without spaces, at most `max` bytes, `-` when empty.
fn header_field(text: &str, max: usize) -> String {
    let field: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if field.is_empty() {
        "-".to_owned()
    } else {
        field
    }
}

/// At most `room` bytes of `message`, not splitting a UTF-8 character.
fn cut(message: &[u8], room: usize) -> &[u8] {
    if message.len() <= room {
        return message;
    }
    let mut end = room;
    // Back up over continuation bytes (10xxxxxx) to the start of the character cut in half.
    while end > 0 && (message[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &message[..end]
}

/// Where datagrams go. Sends never block: a datagram the receiver has no room for is dropped
/// and counted, and the first failure of a run is reported on stderr.
#[derive(Debug)]
pub(super) struct SyslogSocket {
    to: Destination,
    dropped: AtomicU64,
    failing: AtomicBool,
}

#[derive(Debug)]
enum Destination {
    /// Unconnected, so that a restarted syslog daemon's new socket is found by its path.
    Unix(UnixDatagram, PathBuf),
    Udp(UdpSocket, SocketAddr),
}

impl SyslogSocket {
    /// Resolves and checks `address`: a Unix socket must exist and take datagrams now.
    pub(super) fn open(address: &SyslogAddress) -> io::Result<SyslogSocket> {
        let to = match address {
            SyslogAddress::Unix(path) => {
                UnixDatagram::unbound()?.connect(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot reach {}: {e}", path.display()))
                })?;
                let socket = UnixDatagram::unbound()?;
                socket.set_nonblocking(true)?;
                Destination::Unix(socket, path.clone())
            }
            SyslogAddress::Udp(addr) => {
                let target = addr
                    .to_socket_addrs()
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {addr}: {e}")))?
                    .next()
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, format!("{addr} has no address"))
                    })?;
                let local: SocketAddr = if target.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = UdpSocket::bind(local)?;
                socket.set_nonblocking(true)?;
                Destination::Udp(socket, target)
            }
        };
        Ok(SyslogSocket {
            to,
            dropped: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        })
    }

    /// Sends one frame. Failing and recovering are said on stderr, once each: the last resort,
    /// since the log is what fails (see the module docs of `logging`).
    pub(super) fn send(&self, datagram: &[u8]) {
        let sent = match &self.to {
            Destination::Unix(socket, path) => socket.send_to(datagram, path),
            Destination::Udp(socket, addr) => socket.send_to(datagram, addr),
        };
        match sent {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    let dropped = self.dropped.swap(0, Ordering::Relaxed);
                    eprintln!(
                        "shoal: syslog {}: sending again; {dropped} messages were dropped",
                        self.place()
                    );
                }
            }
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "shoal: syslog {}: {e}; messages are dropped until it takes them again",
                        self.place()
                    );
                }
            }
        }
    }

    fn place(&self) -> String {
        match &self.to {
            Destination::Unix(_, path) => path.display().to_string(),
            Destination::Udp(_, addr) => format!("udp://{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_on_character_boundaries() {
        assert_eq!(cut(b"abc", 5), b"abc");
        assert_eq!(cut(b"abc", 2), b"ab");
        let text = "aé€".as_bytes(); // 1 + 2 + 3 bytes
        assert_eq!(cut(text, 2), b"a");
        assert_eq!(cut(text, 3), "aé".as_bytes());
        assert_eq!(cut(text, 5), "aé".as_bytes());
        assert_eq!(cut(text, 6), text);
    }

    #[test]
    fn long_messages_fit_one_datagram() {
        let framer = Framer::new(Facility::USER, "app name");
        let frame = framer.frame(Level::INFO, &vec![b'x'; 3 * MAX_DATAGRAM]);
        assert_eq!(frame.len(), MAX_DATAGRAM);
        let text = String::from_utf8(frame).unwrap();
        assert!(text.starts_with("<14>1 "), "{text}");
        assert!(text.contains(" app_name "), "{text}");
    }
}
