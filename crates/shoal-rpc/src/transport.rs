//! Byte streams RPC runs over: TCP, Unix sockets, TLS on either, and in-memory pipes for
//! tests. Addresses are written `host:port` or `unix:PATH`. Listeners can also be taken over
//! from an inherited file descriptor, for handing a listening socket to a new process.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::error::Error;

/// The read half of a connection.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Where a server listens or a client connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// `host:port`; the host may be a name.
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl FromStr for Addr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(Error::Config(format!("address {s:?}: write unix:PATH")));
            }
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        let s = s.strip_prefix("tcp://").unwrap_or(s);
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Addr::Tcp(s.to_owned()))
            }
            _ => Err(Error::Config(format!(
                "address {s:?}: expected host:port (like 127.0.0.1:7000) or unix:PATH"
            ))),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(hp) => f.write_str(hp),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Addr {
    /// The host part, for TLS server-name checks.
    pub fn host(&self) -> Option<&str> {
        match self {
            Addr::Tcp(hp) => hp.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])),
            Addr::Unix(_) => None,
        }
    }
}

/// TLS for clients: which roots to trust and which name to expect.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    /// The name to check the server's certificate against; defaults to the address's host.
    pub server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Trusts the certificates in `ca_pem` (PEM text).
    pub fn from_ca_pem(ca_pem: &[u8]) -> Result<ClientTls, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Config("CA file holds no PEM certificate".into()));
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: None,
        })
    }
}

/// Builds a server TLS configuration from a PEM certificate chain and private key.
pub fn server_tls(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("TLS certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(
            "TLS certificate file holds no PEM certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Config(format!("TLS private key: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("TLS certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Connects to `addr`, over TLS when `tls` is given.
pub async fn connect(addr: &Addr, tls: Option<&ClientTls>) -> Result<(ReadHalf, WriteHalf), Error> {
    let ctx = || format!("connect to {addr}");
    match addr {
        Addr::Tcp(hp) => {
            let stream = TcpStream::connect(hp.as_str())
                .await
                .map_err(|e| Error::io(ctx(), e))?;
            let _ = stream.set_nodelay(true);
            match tls {
                None => {
                    let (r, w) = stream.into_split();
                    Ok((Box::new(r), Box::new(w)))
                }
                Some(tls) => tls_connect(stream, addr, tls).await,
            }
        }
        Addr::Unix(path) => {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|e| Error::io(ctx(), e))?;
            match tls {
                None => {
                    let (r, w) = stream.into_split();
                    Ok((Box::new(r), Box::new(w)))
                }
                Some(tls) => tls_connect(stream, addr, tls).await,
            }
        }
    }
}

/// A TLS client over a connection already open (`stream`), as [`connect`] makes one: for a
/// caller that needs the socket itself first (its local address, say).
pub async fn tls_connect<S>(
    stream: S,
    addr: &Addr,
    tls: &ClientTls,
) -> Result<(ReadHalf, WriteHalf), Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let name = tls
        .server_name
        .as_deref()
        .or(addr.host())
        .unwrap_or("localhost")
        .to_owned();
    let name = ServerName::try_from(name.clone())
        .map_err(|_| Error::Config(format!("TLS server name {name:?} is not valid")))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(|e| Error::io(format!("TLS handshake with {addr}"), e))?;
    let (r, w) = tokio::io::split(stream);
    Ok((Box::new(r), Box::new(w)))
}

/// A bound listening socket, TCP or Unix.
///
/// A Unix listener made by [`Listener::bind`] removes its socket file when dropped, so the
/// next run can bind the path again; one made by [`Listener::from_fd`] or
/// [`Listener::try_clone`] leaves it, because the file belongs to whoever bound it (often a
/// predecessor process that handed the socket over, or a listener still serving).
/// [`Listener::leave_socket_file`] and [`Listener::remove_socket_file_on_drop`] change that.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    remove_file: bool,
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr`. A Unix socket path left by an earlier run is replaced only when it is a
    /// socket and nothing listens on it; a path that holds anything else is an error.
    pub async fn bind(addr: &Addr) -> Result<Listener, Error> {
        let ctx = || format!("listen on {addr}");
        let socket = match addr {
            Addr::Tcp(hp) => Socket::Tcp(
                TcpListener::bind(hp.as_str())
                    .await
                    .map_err(|e| Error::io(ctx(), e))?,
            ),
            Addr::Unix(path) => {
                // Only a socket file is ever replaced: `unix:app.toml` must not delete the
                // file (connecting to a file that is not a socket fails too).
                let is_socket = std::fs::symlink_metadata(path)
                    .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
                match is_socket {
                    Ok(true) if UnixStream::connect(path).await.is_err() => {
                        let _ = std::fs::remove_file(path);
                    }
                    Ok(false) => {
                        return Err(Error::io(
                            ctx(),
                            std::io::Error::new(
                                std::io::ErrorKind::AlreadyExists,
                                format!(
                                    "{} exists and is not a socket, so it is left alone; remove \
                                     it or listen on another path",
                                    path.display()
                                ),
                            ),
                        ));
                    }
                    _ => {}
                }
                let l = UnixListener::bind(path).map_err(|e| Error::io(ctx(), e))?;
                Socket::Unix(l, path.clone())
            }
        };
        Ok(Listener {
            socket,
            remove_file: true,
        })
    }

    /// Takes over a listening socket by its file descriptor: one inherited from a parent
    /// process (socket handover on re-exec, systemd socket activation) or duplicated from a
    /// listener. It must be a stream socket on which `listen` was called, TCP (IPv4 or IPv6)
    /// or Unix with a path; anything else is an error that says what the descriptor is.
    /// The socket is made non-blocking. A Unix socket's file is left in place on drop (see
    /// [`Listener`]).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as registering the socket with the runtime needs one.
    pub fn from_fd(fd: OwnedFd) -> Result<Listener, Error> {
        let raw = fd.as_raw_fd();
        let fail = |e: io::Error| Error::io(format!("listen on file descriptor {raw}"), e);
        let invalid = |what: String| fail(io::Error::new(io::ErrorKind::InvalidInput, what));
        let kind = socket::getsockopt(&fd, sockopt::SockType).map_err(|e| match e {
            Errno::ENOTSOCK => invalid("it is not a socket".into()),
            e => fail(e.into()),
        })?;
        if kind != SockType::Stream {
            return Err(invalid(format!(
                "it is a {kind:?} socket, not a stream (TCP or Unix) socket"
            )));
        }
        if !socket::getsockopt(&fd, sockopt::AcceptConn).map_err(|e| fail(e.into()))? {
            return Err(invalid(
                "the socket is not listening; call listen() on it before handing it over".into(),
            ));
        }
        let family = socket::getsockname::<SockaddrStorage>(raw)
            .map_err(|e| fail(e.into()))?
            .family();
        let socket = match family {
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                let l = std::net::TcpListener::from(fd);
                l.set_nonblocking(true).map_err(fail)?;
                Socket::Tcp(TcpListener::from_std(l).map_err(fail)?)
            }
            Some(AddressFamily::Unix) => {
                let l = std::os::unix::net::UnixListener::from(fd);
                let path = l
                    .local_addr()
                    .map_err(fail)?
                    .as_pathname()
                    .map(Path::to_path_buf)
                    // An abstract or unnamed socket has no `unix:PATH` to give clients.
                    .ok_or_else(|| invalid("the Unix socket has no path".into()))?;
                l.set_nonblocking(true).map_err(fail)?;
                Socket::Unix(UnixListener::from_std(l).map_err(fail)?, path)
            }
            other => {
                return Err(invalid(format!(
                    "it is a socket of family {other:?}, neither TCP nor Unix"
                )))
            }
        };
        Ok(Listener {
            socket,
            remove_file: false,
        })
    }

    /// A second listener on the same socket (a duplicated descriptor): both accept
    /// connections from the one queue. The clone leaves a Unix socket file on drop.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like [`Listener::from_fd`].
    pub fn try_clone(&self) -> Result<Listener, Error> {
        let fd = self.as_fd().try_clone_to_owned().map_err(|e| {
            Error::io(
                format!("duplicate the listener on {}", self.local_addr()),
                e,
            )
        })?;
        Listener::from_fd(fd)
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> Addr {
        match &self.socket {
            Socket::Tcp(l) => Addr::Tcp(
                l.local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "?:0".into()),
            ),
            Socket::Unix(_, path) => Addr::Unix(path.clone()),
        }
    }

    /// Leaves a Unix socket's file in place when the listener is dropped: for a process that
    /// handed the socket to a successor, which listens on that path now. No effect on TCP.
    pub fn leave_socket_file(&mut self) {
        self.remove_file = false;
    }

    /// Removes a Unix socket's file when the listener is dropped, as a listener from
    /// [`Listener::bind`] does: for a process that took a socket over and is now its last
    /// owner. No effect on TCP.
    pub fn remove_socket_file_on_drop(&mut self) {
        self.remove_file = true;
    }

    pub(crate) async fn accept(&self) -> io::Result<(Stream, String)> {
        match &self.socket {
            Socket::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), peer.to_string()))
            }
            Socket::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), format!("unix:{}", path.display())))
            }
        }
    }
}

/// The listening socket, to duplicate it for a successor process.
impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            Socket::Tcp(l) => l.as_fd(),
            Socket::Unix(l, _) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let (Socket::Unix(_, path), true) = (&self.socket, self.remove_file) {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) async fn split(
        self,
        tls: Option<&tokio_rustls::TlsAcceptor>,
    ) -> io::Result<(ReadHalf, WriteHalf)> {
        match (self, tls) {
            (Stream::Tcp(s), None) => {
                let (r, w) = s.into_split();
                Ok((Box::new(r), Box::new(w)))
            }
            (Stream::Unix(s), None) => {
                let (r, w) = s.into_split();
                Ok((Box::new(r), Box::new(w)))
            }
            (Stream::Tcp(s), Some(acceptor)) => {
                let (r, w) = tokio::io::split(acceptor.accept(s).await?);
                Ok((Box::new(r), Box::new(w)))
            }
            (Stream::Unix(s), Some(acceptor)) => {
                let (r, w) = tokio::io::split(acceptor.accept(s).await?);
                Ok((Box::new(r), Box::new(w)))
            }
        }
    }
}

/// Two connected in-memory ends, for tests: each is a (read, write) pair.
pub fn memory_pair() -> ((ReadHalf, WriteHalf), (ReadHalf, WriteHalf)) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    ((Box::new(ar), Box::new(aw)), (Box::new(br), Box::new(bw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_say_what_is_expected() {
        assert_eq!(
            "127.0.0.1:7000".parse::<Addr>().unwrap(),
            Addr::Tcp("127.0.0.1:7000".into())
        );
        assert_eq!(
            "tcp://h:1".parse::<Addr>().unwrap(),
            Addr::Tcp("h:1".into())
        );
        assert_eq!("[::1]:9".parse::<Addr>().unwrap().host(), Some("::1"));
        assert_eq!(
            "unix:/tmp/x.sock".parse::<Addr>().unwrap(),
            Addr::Unix("/tmp/x.sock".into())
        );
        for bad in ["", "host", "host:", ":80", "h:99999", "unix:"] {
            let err = bad.parse::<Addr>().unwrap_err().to_string();
            assert!(
                err.contains("expected host:port") || err.contains("unix:PATH"),
                "{bad}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_unix_path_is_replaced_only_when_it_is_a_dead_socket() {
        let dir = std::env::temp_dir().join(format!("shoal-bind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();

        // An ordinary file is never deleted.
        let file = dir.join("app.toml");
        std::fs::write(&file, "kept").unwrap();
        let err = Listener::bind(&Addr::Unix(file.clone()))
            .await
            .expect_err("a file is not a socket")
            .to_string();
        assert!(err.contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept");

        // A socket nobody listens on (left by a killed process) is replaced.
        let dead = dir.join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        assert!(dead.exists());
        let listener = Listener::bind(&Addr::Unix(dead.clone())).await.unwrap();

        // One that a live process listens on is not.
        assert!(Listener::bind(&Addr::Unix(dead.clone())).await.is_err());
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
