//! A ZeroMQ PUB socket: ZMTP 3.0 with the NULL mechanism (ZeroMQ RFC 23), only as much of it
//! as the monitor feed needs: accept subscribers, follow their subscriptions, send them
//! multipart messages.
//!
//! Written here rather than taken from the `zeromq` crate because that crate believes the
//! frame sizes peers announce: a 9-byte frame header saying 16 TiB makes it allocate 16 TiB
//! and abort the process. This one bounds everything a peer can make it hold: frames
//! ([`MAX_FRAME`]), subscriptions per peer, messages queued per peer, peers at once, and the
//! time a peer may take to complete its handshake, to subscribe, and to read each message.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{broadcast, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::config::MonitorAddr;

/// The longest frame a subscriber may send (a subscription or a handshake command); a longer
/// one ends its connection.
pub(crate) const MAX_FRAME: usize = 1024;
/// Subscriptions kept per peer; further ones are ignored.
const MAX_SUBSCRIPTIONS: usize = 32;
/// Peers served at once; further connections are closed at once.
const MAX_PEERS: usize = 64;
/// Messages queued per peer: one further behind loses the oldest, as PUB sockets do, so a
/// slow subscriber never holds the publisher up.
const QUEUE: usize = 16;
/// How long a peer has to send its greeting and READY.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a peer may go without a subscription, after its handshake or its last
/// cancellation: it would receive nothing, yet hold one of the [`MAX_PEERS`] places.
const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(10);
/// How long writing one message (or a PONG) to a peer may take: a peer that stops reading is
/// dropped then rather than holding its place for ever.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// The pause after a failed accept (out of descriptors, say), so the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
const FLAG_COMMAND: u8 = 0x04;

/// A bound PUB socket.
pub(crate) struct Publisher {
    endpoint: String,
    messages: Option<broadcast::Sender<Arc<Message>>>,
    /// Stops taking connections (the listener closes with the accept loop).
    accepting: CancellationToken,
    /// Ends every connection at once.
    stop: CancellationToken,
    tasks: TaskTracker,
    /// The Unix socket file to remove at close.
    file: Option<SocketFile>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A message as sent: its topic (first frame) for matching, and its bytes on the wire.
#[derive(Debug)]
struct Message {
    topic: Vec<u8>,
    wire: Vec<u8>,
}

impl Publisher {
    /// Binds `addr`. An `ipc://` socket file left by a process that died (nobody accepts on
    /// it) is replaced; one that a live process serves is `AddrInUse`, and a file there that is
    /// not a socket (a typo naming a file of the application's, say) is an error and left
    /// alone.
    pub(crate) async fn bind(addr: &MonitorAddr) -> io::Result<Publisher> {
        let (messages, _) = broadcast::channel(QUEUE);
        let accepting = CancellationToken::new();
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let peers = Peers {
            messages: messages.clone(),
            stop: stop.clone(),
            tasks: tasks.clone(),
            permits: Arc::new(Semaphore::new(MAX_PEERS)),
        };
        let (endpoint, file) = match addr {
            MonitorAddr::Tcp { host, port } => {
                let listener = TcpListener::bind((host.as_str(), *port)).await?;
                let endpoint = format!("tcp://{}", listener.local_addr()?);
                tasks.spawn(peers.accept_tcp(listener, accepting.clone()));
                (endpoint, None)
            }
            MonitorAddr::Ipc(path) => {
                let listener = bind_unix(path).await?;
                let file = SocketFile::of(path)?;
                tasks.spawn(peers.accept_unix(listener, accepting.clone()));
                (addr.to_string(), Some(file))
            }
        };
        Ok(Publisher {
            endpoint,
            messages: Some(messages),
            accepting,
            stop,
            tasks,
            file,
        })
    }

    /// Where the socket is bound: `tcp://IP:PORT` with the real port, or `ipc://PATH`.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Queues a message of `frames` (the first is its topic) for every peer subscribed to a
    /// prefix of the topic.
    pub(crate) fn send(&self, frames: &[&[u8]]) {
        let (Some(messages), Some(topic)) = (&self.messages, frames.first()) else {
            return;
        };
        let message = Message {
            topic: topic.to_vec(),
            wire: encode_message(frames),
        };
        // An error only says that nobody is connected.
        let _ = messages.send(Arc::new(message));
    }

    /// Stops accepting (the port or file is free when this returns), gives peers up to
    /// `linger` to receive what is queued, then ends their connections.
    pub(crate) async fn close(mut self, linger: Duration) {
        self.accepting.cancel();
        // Peers see the end of the queue after what is in it, and close their side.
        self.messages = None;
        self.tasks.close();
        if tokio::time::timeout(linger, self.tasks.wait())
            .await
            .is_err()
        {
            self.stop.cancel();
            self.tasks.wait().await;
        }
        if let Some(file) = self.file.take() {
            file.remove();
        }
    }
}

impl Drop for Publisher {
    /// Ends everything when the publisher goes away without `close` (its task was dropped).
    fn drop(&mut self) {
        self.accepting.cancel();
        self.stop.cancel();
        if let Some(file) = self.file.take() {
            file.remove();
        }
    }
}

/// The socket file a publisher bound, known by its device and inode so that what is removed
/// at close is that socket and nothing that took its path meanwhile.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    fn of(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_owned(),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Removes the file if it is still our socket.
    fn remove(self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.file_type().is_socket() && (meta.dev(), meta.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What the accept loop needs to start a peer.
struct Peers {
    messages: broadcast::Sender<Arc<Message>>,
    stop: CancellationToken,
    tasks: TaskTracker,
    permits: Arc<Semaphore>,
}

impl Peers {
    async fn accept_tcp(self, listener: TcpListener, accepting: CancellationToken) {
        loop {
            tokio::select! {
                _ = accepting.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, from)) => {
                        let _ = stream.set_nodelay(true);
                        self.start(stream, &from.to_string());
                    }
                    Err(error) => self.pause(error).await,
                },
            }
        }
    }

    async fn accept_unix(self, listener: UnixListener, accepting: CancellationToken) {
        loop {
            tokio::select! {
                _ = accepting.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => self.start(stream, "unix peer"),
                    Err(error) => self.pause(error).await,
                },
            }
        }
    }

    fn start<S>(&self, stream: S, peer: &str)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            debug!(
                peer,
                "monitor: {MAX_PEERS} subscribers already; connection closed"
            );
            return;
        };
        let messages = self.messages.subscribe();
        let stop = self.stop.clone();
        let peer = peer.to_owned();
        self.tasks.spawn(async move {
            if let Err(error) = serve(stream, messages, stop).await {
                debug!(peer, %error, "monitor: subscriber dropped");
            }
            drop(permit);
        });
    }

    async fn pause(&self, error: io::Error) {
        debug!(%error, "monitor: accept failed");
        tokio::time::sleep(ACCEPT_PAUSE).await;
    }
}

/// Binds a Unix socket at `path`. What is there already is removed only when it is a socket
/// nobody accepts on: connecting to a file that is not a socket is refused just as connecting
/// to a dead socket is, so the refusal alone would remove any file.
async fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let is_socket =
                std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket());
            if !is_socket {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "monitor.publish: {} exists and is not a socket, so it is left alone; \
                         remove it or set monitor.publish to another path",
                        path.display()
                    ),
                ));
            }
            if !stale(path).await {
                return Err(e);
            }
            debug!(path = %path.display(), "monitor: replacing a stale socket file");
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

/// Whether nobody accepts on the Unix socket at `path`.
async fn stale(path: &Path) -> bool {
    matches!(
        tokio::net::UnixStream::connect(path).await,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

/// One peer: the handshake, then its subscriptions in and the messages it subscribed to out.
async fn serve<S>(
    stream: S,
    mut messages: broadcast::Receiver<Arc<Message>>,
    stop: CancellationToken,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut frames = FrameReader::default();
    let mut chunk = [0; MAX_FRAME];
    let handshake = handshake(&mut reader, &mut writer, &mut frames, &mut chunk);
    tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        done = tokio::time::timeout(HANDSHAKE, handshake) => done.map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "no handshake in time")
        })??,
    }
    let mut subscriptions = Subscriptions::default();
    // Since when the peer has had no subscription.
    let mut unsubscribed_since = Some(Instant::now());
    loop {
        // Frames first: the handshake's last read may have brought the first subscription.
        while let Some(frame) = frames.next().map_err(invalid)? {
            if let Some(reply) = subscriptions.take(&frame) {
                write(&mut writer, &reply, &stop).await?;
            }
        }
        match (subscriptions.is_empty(), unsubscribed_since) {
            (false, Some(_)) => unsubscribed_since = None,
            (true, None) => unsubscribed_since = Some(Instant::now()),
            _ => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            () = expire(unsubscribed_since.map(|since| since + SUBSCRIBE_WITHIN)) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no subscription within {SUBSCRIBE_WITHIN:?}"),
                ));
            }
            // `read` is cancel-safe: what it read is in `chunk` only when it returns.
            read = reader.read(&mut chunk) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                frames.push(&chunk[..n]);
            }
            message = messages.recv() => match message {
                Ok(message) => {
                    if subscriptions.matches(&message.topic) {
                        write(&mut writer, &message.wire, &stop).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    debug!(missed, "monitor: a slow subscriber missed messages");
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // The publisher closes: everything is written; say so. Unread bytes at
                    // close would make the kernel reset the connection, which can cut off
                    // what the peer has not read yet, so read what has arrived first.
                    writer.shutdown().await?;
                    while let Some(Ok(1..)) = reader.read(&mut chunk).now_or_never() {}
                    return Ok(());
                }
            },
        }
    }
}

/// Writes `bytes` whole within [`WRITE_DEADLINE`].
async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    stop: &CancellationToken,
) -> io::Result<()> {
    tokio::select! {
        _ = stop.cancelled() => Err(io::Error::new(io::ErrorKind::Interrupted, "closing")),
        written = tokio::time::timeout(WRITE_DEADLINE, writer.write_all(bytes)) => {
            written.unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("a message not read within {WRITE_DEADLINE:?}"),
                ))
            })
        }
    }
}

/// Completes at `at`, never without one.
async fn expire(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Greetings and READY commands both ways; the peer must be a SUB or XSUB socket.
async fn handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    frames: &mut FrameReader,
    chunk: &mut [u8],
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer.write_all(&greeting()).await?;
    let mut theirs = [0; 64];
    reader.read_exact(&mut theirs).await?;
    check_greeting(&theirs).map_err(invalid)?;
    writer
        .write_all(&encode_frame(FLAG_COMMAND, &ready()))
        .await?;
    let frame = loop {
        if let Some(frame) = frames.next().map_err(invalid)? {
            break frame;
        }
        let n = reader.read(chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        frames.push(&chunk[..n]);
    };
    check_ready(&frame).map_err(invalid)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Our greeting: ZMTP 3.0, mechanism NULL, not as server (NULL ignores it).
fn greeting() -> [u8; 64] {
    let mut greeting = [0; 64];
    greeting[0] = 0xff;
    greeting[9] = 0x7f;
    greeting[10] = 3;
    greeting[11] = 0;
    greeting[12..16].copy_from_slice(b"NULL");
    greeting
}

fn check_greeting(greeting: &[u8; 64]) -> Result<(), String> {
    if greeting[0] != 0xff || greeting[9] != 0x7f {
        return Err("not a ZMTP greeting".into());
    }
    if greeting[10] < 3 {
        return Err(format!(
            "ZMTP {}.{} is not supported",
            greeting[10], greeting[11]
        ));
    }
    let mechanism = &greeting[12..32];
    if mechanism[..4] != *b"NULL" || mechanism[4..].iter().any(|&b| b != 0) {
        return Err("only the NULL security mechanism is supported".into());
    }
    Ok(())
}

/// The body of our READY command: `Socket-Type: PUB`.
fn ready() -> Vec<u8> {
    let mut body = command_name(b"READY");
    property(&mut body, b"Socket-Type", b"PUB");
    body
}

fn command_name(name: &[u8]) -> Vec<u8> {
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body
}

fn property(body: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    body.push(name.len() as u8);
    body.extend_from_slice(name);
    body.extend_from_slice(&(value.len() as u32).to_be_bytes());
    body.extend_from_slice(value);
}

/// The peer's READY: a command, and its `Socket-Type` property says SUB or XSUB.
fn check_ready(frame: &Frame) -> Result<(), String> {
    let (name, mut data) = frame.command().ok_or("expected the READY command first")?;
    if name != b"READY" {
        return Err("expected the READY command first".into());
    }
    let mut socket_type = None;
    while !data.is_empty() {
        let (name, rest) = split_short(data).ok_or("a malformed READY property")?;
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or("a malformed READY property")?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err("a malformed READY property".into());
        }
        let (value, rest) = rest.split_at(len);
        if name.eq_ignore_ascii_case(b"Socket-Type") {
            socket_type = Some(value);
        }
        data = rest;
    }
    match socket_type {
        Some(b"SUB" | b"XSUB") => Ok(()),
        Some(other) => Err(format!(
            "a {} socket cannot subscribe",
            String::from_utf8_lossy(other)
        )),
        None => Err("READY without a Socket-Type".into()),
    }
}

/// A byte saying how long, then that many bytes.
fn split_short(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = data.split_first()?;
    (rest.len() >= len as usize).then(|| rest.split_at(len as usize))
}

/// A message's frames as sent: each but the last flagged MORE.
fn encode_message(frames: &[&[u8]]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(frames.iter().map(|f| f.len() + 9).sum());
    for (i, frame) in frames.iter().enumerate() {
        let more = if i + 1 < frames.len() { FLAG_MORE } else { 0 };
        wire.extend_from_slice(&encode_frame(more, frame));
    }
    wire
}

fn encode_frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(body.len() + 9);
    match u8::try_from(body.len()) {
        Ok(len) => wire.extend_from_slice(&[flags, len]),
        Err(_) => {
            wire.push(flags | FLAG_LONG);
            wire.extend_from_slice(&(body.len() as u64).to_be_bytes());
        }
    }
    wire.extend_from_slice(body);
    wire
}

/// One frame a peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) more: bool,
    pub(crate) command: bool,
    pub(crate) body: Vec<u8>,
}

impl Frame {
    /// A command's name and data.
    fn command(&self) -> Option<(&[u8], &[u8])> {
        self.command.then(|| split_short(&self.body)).flatten()
    }
}

/// Frames from the bytes a peer sends, holding at most one frame's worth: a header announcing
/// more than [`MAX_FRAME`] is an error before anything is allocated for it.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buffer: Vec<u8>,
}

impl FrameReader {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, None until one is, or why the stream is not ZMTP.
    pub(crate) fn next(&mut self) -> Result<Option<Frame>, String> {
        let Some(&flags) = self.buffer.first() else {
            return Ok(None);
        };
        if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
            return Err(format!("a frame with reserved flags {flags:#04x}"));
        }
        let (header, len) = if flags & FLAG_LONG != 0 {
            match self.buffer.get(1..9) {
                Some(len) => (9, u64::from_be_bytes(len.try_into().expect("8 bytes"))),
                None => return Ok(None),
            }
        } else {
            match self.buffer.get(1) {
                Some(&len) => (2, u64::from(len)),
                None => return Ok(None),
            }
        };
        if len > MAX_FRAME as u64 {
            return Err(format!(
                "a frame of {len} bytes (a subscriber sends at most {MAX_FRAME})"
            ));
        }
        let end = header + len as usize;
        if self.buffer.len() < end {
            return Ok(None);
        }
        let body = self.buffer[header..end].to_vec();
        self.buffer.drain(..end);
        let frame = Frame {
            more: flags & FLAG_MORE != 0,
            command: flags & FLAG_COMMAND != 0,
            body,
        };
        if frame.command && frame.more {
            return Err("a command frame flagged MORE".into());
        }
        Ok(Some(frame))
    }
}

/// A peer's subscriptions: topic prefixes, a multiset as ZeroMQ keeps them.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    prefixes: Vec<Vec<u8>>,
    /// Whether the last message frame had MORE set: its successor is not a subscription.
    in_message: bool,
}

impl Subscriptions {
    /// Follows one frame from the peer: a subscription (ZMTP 3.0 message `\x01TOPIC`, or 3.1
    /// command SUBSCRIBE), a cancellation (`\x00TOPIC`, CANCEL), or a PING, whose PONG it
    /// returns to send. Anything else is ignored.
    pub(crate) fn take(&mut self, frame: &Frame) -> Option<Vec<u8>> {
        if let Some((name, data)) = frame.command() {
            match name {
                b"SUBSCRIBE" => self.subscribe(data),
                b"CANCEL" => self.cancel(data),
                b"PING" if data.len() >= 2 => {
                    // PONG carries the PING's context back (at most 16 bytes).
                    let context = &data[2..data.len().min(18)];
                    let mut pong = command_name(b"PONG");
                    pong.extend_from_slice(context);
                    return Some(encode_frame(FLAG_COMMAND, &pong));
                }
                _ => {}
            }
            return None;
        }
        if frame.command {
            return None;
        }
        let part_of_message = self.in_message || frame.more;
        self.in_message = frame.more;
        if part_of_message {
            return None;
        }
        match frame.body.split_first() {
            Some((1, topic)) => self.subscribe(topic),
            Some((0, topic)) => self.cancel(topic),
            _ => {}
        }
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Whether a message with this topic goes to the peer.
    pub(crate) fn matches(&self, topic: &[u8]) -> bool {
        self.prefixes.iter().any(|p| topic.starts_with(p))
    }

    fn subscribe(&mut self, prefix: &[u8]) {
        if self.prefixes.len() < MAX_SUBSCRIPTIONS {
            self.prefixes.push(prefix.to_vec());
        }
    }

    fn cancel(&mut self, prefix: &[u8]) {
        if let Some(i) = self.prefixes.iter().position(|p| p == prefix) {
            self.prefixes.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flags: u8, body: &[u8]) -> Frame {
        Frame {
            more: flags & FLAG_MORE != 0,
            command: flags & FLAG_COMMAND != 0,
            body: body.to_vec(),
        }
    }

    /// Every frame `bytes` holds, fed one byte at a time, then the error if there is one.
    fn read_all(bytes: &[u8]) -> (Vec<Frame>, Option<String>) {
        let mut reader = FrameReader::default();
        let mut frames = Vec::new();
        for &byte in bytes {
            reader.push(&[byte]);
            loop {
                match reader.next() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        (frames, None)
    }

    #[test]
    fn frames_are_read_whole_however_the_bytes_arrive() {
        let mut bytes = encode_frame(0, b"\x01shoal.status");
        bytes.extend(encode_frame(FLAG_MORE, &[7; 300]));
        bytes.extend(encode_frame(FLAG_COMMAND, b"\x04PING\x00\x0aabc"));
        bytes.extend(encode_frame(0, b""));
        let (frames, error) = read_all(&bytes);
        assert_eq!(error, None);
        assert_eq!(
            frames,
            [
                frame(0, b"\x01shoal.status"),
                frame(FLAG_MORE, &[7; 300]),
                frame(FLAG_COMMAND, b"\x04PING\x00\x0aabc"),
                frame(0, b""),
            ]
        );
        // All at once, too.
        let mut reader = FrameReader::default();
        reader.push(&bytes);
        let mut count = 0;
        while reader.next().unwrap().is_some() {
            count += 1;
        }
        assert_eq!(count, 4);
    }

    #[test]
    fn hostile_frames_are_refused_before_anything_is_allocated_for_them() {
        let mut huge = vec![FLAG_LONG | FLAG_COMMAND];
        huge.extend_from_slice(&(1u64 << 44).to_be_bytes());
        let mut max = vec![FLAG_LONG];
        max.extend_from_slice(&u64::MAX.to_be_bytes());
        let mut just_over = vec![FLAG_LONG];
        just_over.extend_from_slice(&(MAX_FRAME as u64 + 1).to_be_bytes());
        for (bytes, expected) in [
            (
                huge,
                "a frame of 17592186044416 bytes (a subscriber sends at most 1024)",
            ),
            (
                max,
                "a frame of 18446744073709551615 bytes (a subscriber sends at most 1024)",
            ),
            (
                just_over,
                "a frame of 1025 bytes (a subscriber sends at most 1024)",
            ),
            (vec![0x08, 0], "a frame with reserved flags 0x08"),
            (vec![0xff], "a frame with reserved flags 0xff"),
            (
                vec![FLAG_COMMAND | FLAG_MORE, 0],
                "a command frame flagged MORE",
            ),
        ] {
            let (frames, error) = read_all(&bytes);
            assert_eq!(frames, []);
            assert_eq!(error.as_deref(), Some(expected));
        }
        // The largest allowed frame is read.
        let (frames, error) = read_all(&encode_frame(0, &[1; MAX_FRAME]));
        assert_eq!((frames.len(), error), (1, None));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_buffer_more_than_a_frame() {
        // A small deterministic generator: the reader must stop at an error or hold at most
        // one header, one frame and one read's worth.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut reader = FrameReader::default();
            for _ in 0..64 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let len = (state % 64) as usize;
                let chunk: Vec<u8> = (0..len)
                    .map(|i| (state.rotate_left(i as u32 * 8) & 0xff) as u8 & 0x07)
                    .collect();
                reader.push(&chunk);
                let mut failed = false;
                loop {
                    match reader.next() {
                        Ok(Some(frame)) => assert!(frame.body.len() <= MAX_FRAME),
                        Ok(None) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    break;
                }
                assert!(reader.buffer.len() <= 9 + MAX_FRAME + 64);
            }
        }
    }

    #[test]
    fn greetings_other_than_zmtp_3_null_are_refused() {
        let ours = greeting();
        assert_eq!(check_greeting(&ours), Ok(()));
        let mut newer = ours;
        newer[11] = 1;
        assert_eq!(check_greeting(&newer), Ok(()));
        // (where, what is written there, the error)
        let cases = [
            (0, &b"\0"[..], "not a ZMTP greeting"),
            (9, b"\0", "not a ZMTP greeting"),
            (10, b"\x02", "ZMTP 2.0 is not supported"),
            (
                12,
                b"PLAIN",
                "only the NULL security mechanism is supported",
            ),
            (16, b"X", "only the NULL security mechanism is supported"),
        ];
        for (at, bytes, expected) in cases {
            let mut greeting = ours;
            greeting[at..at + bytes.len()].copy_from_slice(bytes);
            assert_eq!(check_greeting(&greeting).unwrap_err(), expected);
        }
    }

    #[test]
    fn ready_must_come_from_a_subscriber() {
        let ready_of = |socket_type: &[u8]| {
            let mut body = command_name(b"READY");
            property(&mut body, b"Identity", b"");
            property(&mut body, b"Socket-Type", socket_type);
            frame(FLAG_COMMAND, &body)
        };
        assert_eq!(check_ready(&ready_of(b"SUB")), Ok(()));
        assert_eq!(check_ready(&ready_of(b"XSUB")), Ok(()));
        assert_eq!(
            check_ready(&ready_of(b"REQ")).unwrap_err(),
            "a REQ socket cannot subscribe"
        );
        assert_eq!(
            check_ready(&frame(FLAG_COMMAND, &command_name(b"READY"))).unwrap_err(),
            "READY without a Socket-Type"
        );
        for (bad, expected) in [
            (frame(0, b"\x05READY"), "expected the READY command first"),
            (
                frame(FLAG_COMMAND, b"\x05HELLO"),
                "expected the READY command first",
            ),
            (
                frame(FLAG_COMMAND, b"\x09READY"),
                "expected the READY command first",
            ),
            (
                frame(FLAG_COMMAND, b"\x05READY\x0bSocket-Type\x00\x00\x00\x09SUB"),
                "a malformed READY property",
            ),
            (
                frame(FLAG_COMMAND, b"\x05READY\x0bSocket-Type\x00\x00"),
                "a malformed READY property",
            ),
            (
                frame(FLAG_COMMAND, b"\x05READY\x20Socket"),
                "a malformed READY property",
            ),
        ] {
            assert_eq!(check_ready(&bad).unwrap_err(), expected, "{bad:?}");
        }
    }

    #[test]
    fn subscriptions_follow_both_protocol_versions_and_stay_bounded() {
        let mut subs = Subscriptions::default();
        assert!(!subs.matches(b"shoal.status"));
        subs.take(&frame(0, b"\x01shoal."));
        assert!(subs.matches(b"shoal.status"));
        assert!(!subs.matches(b"other"));
        // A multiset: subscribed twice, cancelled once, still subscribed.
        subs.take(&frame(FLAG_COMMAND, b"\x09SUBSCRIBEshoal."));
        subs.take(&frame(0, b"\x00shoal."));
        assert!(subs.matches(b"shoal.status"));
        subs.take(&frame(FLAG_COMMAND, b"\x06CANCELshoal."));
        assert!(!subs.matches(b"shoal.status"));
        // The empty prefix is everything.
        subs.take(&frame(0, b"\x01"));
        assert!(subs.matches(b"anything"));
        subs.take(&frame(0, b"\x00"));
        // Frames of a multipart message are not subscriptions.
        subs.take(&frame(FLAG_MORE, b"\x01x"));
        subs.take(&frame(0, b"\x01shoal"));
        assert!(!subs.matches(b"shoal.status"));
        assert!(!subs.matches(b"x"));
        // A PING gets its context back in a PONG.
        let pong = subs.take(&frame(FLAG_COMMAND, b"\x04PING\x00\x0actx"));
        assert_eq!(pong, Some(encode_frame(FLAG_COMMAND, b"\x04PONGctx")));
        // Endless subscriptions hold a bounded number.
        for i in 0..10_000u32 {
            subs.take(&frame(0, &[&[1][..], &i.to_be_bytes()].concat()));
        }
        assert_eq!(subs.prefixes.len(), MAX_SUBSCRIPTIONS);
    }

    /// A directory of its own under the system's temporary one, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let path = std::env::temp_dir().join(format!("shoal-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn an_ipc_path_is_replaced_or_removed_only_when_it_is_a_socket() {
        let dir = Scratch::new("zmtp-ipc");
        let ipc = |path: &Path| MonitorAddr::Ipc(path.to_owned());

        // A file that is not a socket (connecting to it is refused too): an error, and the
        // file is left as it was.
        let config = dir.0.join("app.toml");
        std::fs::write(&config, "[app]\n").unwrap();
        let error = Publisher::bind(&ipc(&config)).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "monitor.publish: {} exists and is not a socket, so it is left alone; remove it \
                 or set monitor.publish to another path",
                config.display()
            )
        );
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "[app]\n");

        // A socket nobody accepts on, as a process that died leaves it: replaced.
        let socket = dir.0.join("feed.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let publisher = Publisher::bind(&ipc(&socket)).await.unwrap();
        // One that is served: busy, and left alone.
        let error = Publisher::bind(&ipc(&socket)).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        publisher.close(Duration::ZERO).await;
        assert!(!socket.exists(), "close removes the socket it bound");

        // What took the socket's path meanwhile is not the publisher's to remove, at close or
        // when it is dropped.
        for close in [true, false] {
            let publisher = Publisher::bind(&ipc(&socket)).await.unwrap();
            std::fs::remove_file(&socket).unwrap();
            std::fs::write(&socket, "not ours").unwrap();
            if close {
                publisher.close(Duration::ZERO).await;
            } else {
                drop(publisher);
            }
            assert_eq!(std::fs::read_to_string(&socket).unwrap(), "not ours");
            std::fs::remove_file(&socket).unwrap();
        }
    }

    #[test]
    fn messages_are_framed_with_more_flags_and_long_sizes() {
        let wire = encode_message(&[b"shoal.status", &[9; 256]]);
        let mut expected = vec![FLAG_MORE, 12];
        expected.extend_from_slice(b"shoal.status");
        expected.push(FLAG_LONG);
        expected.extend_from_slice(&256u64.to_be_bytes());
        expected.extend_from_slice(&[9; 256]);
        assert_eq!(wire, expected);
        assert_eq!(encode_message(&[b"t"]), [0, 1, b't']);
    }
}
