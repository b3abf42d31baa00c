//! The MessagePack-RPC wire format: the three message types back to back on a byte stream,
//! a streaming decoder that scans each byte once, and encoders that write straight into the
//! connection's buffer.

use std::fmt;

use bytes::{Buf, BufMut, BytesMut};
use rmpv::Value;
use serde::Serialize;

use crate::error::{text, RpcError};

/// Default limit on one message, in bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Default limit on how deeply arrays and maps may nest in one message.
pub const DEFAULT_MAX_DEPTH: usize = 256;
/// Default limit on the values one message holds (every scalar, string, array, map key and
/// map value counts one). A decoded value takes tens of bytes however few bytes carried it
/// (a nil is one byte on the wire), so without this a 16 MiB frame of nils would expand to
/// hundreds of MiB; with it a message expands to at most a few tens of MiB beside its bytes.
pub const DEFAULT_MAX_VALUES: usize = 1 << 20;
/// Largest buffer the decoder reads a message from without scanning it first (see
/// [`Decoder::decode`]): a pipeline's worth of small messages, and few enough values that a
/// message cut short costs little to try.
const DIRECT_READ_MAX: usize = 64 * 1024;

const TYPE_REQUEST: u64 = 0;
const TYPE_RESPONSE: u64 = 1;
const TYPE_NOTIFICATION: u64 = 2;

/// One MessagePack-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `[0, msgid, method, params]`; shoal peers may add a fifth element, [`RequestExt`].
    Request {
        id: Value,
        method: String,
        params: Vec<Value>,
        ext: Option<RequestExt>,
    },
    /// `[1, msgid, error, result]`.
    Response {
        id: Value,
        error: Value,
        result: Value,
    },
    /// `[2, method, params]`.
    Notification { method: String, params: Vec<Value> },
    /// A request read up to its msgid that breaks the protocol's rules (params that are not
    /// an array): answered with an invalid-params error saying `why`, and the connection
    /// goes on.
    Invalid { id: Value, why: String },
}

/// What a shoal peer adds to a request once both sides have agreed to it: the time left
/// until the call's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestExt {
    pub deadline_ms: Option<u64>,
}

/// Why bytes could not be read as messages. Each one closes the connection that sent them.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// A message is larger than the limit. `id` is the request's msgid when it could be read,
    /// so the peer can be answered before the connection closes.
    FrameTooLarge {
        size: usize,
        max: usize,
        id: Option<Value>,
    },
    /// Arrays and maps nest deeper than the limit.
    TooDeep { max: usize },
    /// A message holds more values than the limit ([`DEFAULT_MAX_VALUES`]). `id` is the
    /// request's msgid when it could be read.
    TooManyValues { max: usize, id: Option<Value> },
    /// A byte that starts no MessagePack value (0xc1), or a message that is not an RPC message.
    Malformed(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::FrameTooLarge { size, max, .. } => {
                write!(
                    f,
                    "message of at least {size} bytes exceeds the limit of {max} bytes"
                )
            }
            DecodeError::TooDeep { max } => write!(f, "message nests deeper than {max} levels"),
            DecodeError::TooManyValues { max, .. } => write!(
                f,
                "message holds more than {max} values, the limit of values per message"
            ),
            DecodeError::Malformed(why) => write!(f, "malformed message: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A streaming decoder. Feed it the connection's read buffer; it returns each complete message
/// and keeps its place in a partial one, so every byte is scanned once however the stream is cut.
#[derive(Debug)]
pub struct Decoder {
    max_size: usize,
    max_depth: usize,
    max_values: usize,
    /// Values scanned so far in the current message.
    values: usize,
    /// Offset in the buffer of the next byte to scan; may run past the buffer's end while the
    /// body of a long string is still arriving.
    pos: usize,
    /// Items still expected by each open array or map, innermost last.
    open: Vec<u64>,
    /// The message ends at `pos`: its last bytes may still be on their way.
    complete: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl Decoder {
    pub fn new(max_size: usize) -> Self {
        Self {
            max_size,
            max_depth: DEFAULT_MAX_DEPTH,
            max_values: DEFAULT_MAX_VALUES,
            values: 0,
            pos: 0,
            open: Vec::new(),
            complete: false,
        }
    }

    /// The same decoder, refusing messages of more than `max` values.
    pub fn with_max_values(mut self, max: usize) -> Self {
        self.max_values = max;
        self
    }

    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// The next complete message at the front of `buf`, removing its bytes; `Ok(None)` when
    /// more bytes are needed. After an error the stream cannot be resynchronised.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        // A new message in a buffer within both limits is read straight away: however its
        // bytes nest (bounded by the reader) it has fewer values and bytes than the buffer.
        // Short of a whole, well-formed message it falls back to the scan, which then keeps
        // its place, so a message cut across reads is tried this way once at most. Only up
        // to `DIRECT_READ_MAX` bytes: what a failed try builds and drops stays small.
        let direct = DIRECT_READ_MAX.min(self.max_size).min(self.max_values);
        if self.pos == 0 && buf.len() <= direct {
            if let Ok((msg, len)) = parse_message(buf) {
                buf.advance(len);
                return Ok(Some(msg));
            }
        }
        match self.frame_len(buf)? {
            Some(len) => {
                // Parse in place, then drop the bytes: splitting the frame off would cost a
                // shared allocation and reference counting per message.
                let msg = parse_message(&buf[..len]);
                buf.advance(len);
                msg.map(|(msg, _)| Some(msg))
            }
            None => Ok(None),
        }
    }

    /// The front of `buf` a message may be read from in place (see [`read_call`]): `None`
    /// while part of a message has been scanned (its bytes are the scan's to finish). At
    /// most `DIRECT_READ_MAX` bytes within both limits, as for [`Decoder::decode`]'s direct
    /// reading, so what is read from it is bounded the same way.
    pub(crate) fn window<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        let direct = DIRECT_READ_MAX.min(self.max_size).min(self.max_values);
        (self.pos == 0).then(|| &buf[..buf.len().min(direct)])
    }

    /// Scans from where the last call stopped; returns the length of the first message once it
    /// is complete, and resets for the next one.
    fn frame_len(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        loop {
            if self.complete {
                if self.pos > buf.len() {
                    return Ok(None);
                }
                let len = self.pos;
                self.pos = 0;
                self.values = 0;
                self.complete = false;
                return Ok(Some(len));
            }
            if self.pos >= buf.len() {
                return Ok(None);
            }
            let Some(item) = scan_item(&buf[self.pos..])? else {
                return Ok(None);
            };
            // Counted as scanned, before anything is built: what a frame may expand to is
            // bounded before the first allocation.
            self.values += 1;
            if self.values > self.max_values {
                return Err(DecodeError::TooManyValues {
                    max: self.max_values,
                    id: request_id(buf),
                });
            }
            let end = self.pos as u64 + item.header as u64 + item.body;
            if end > self.max_size as u64 {
                return Err(DecodeError::FrameTooLarge {
                    size: usize::try_from(end).unwrap_or(usize::MAX),
                    max: self.max_size,
                    id: request_id(buf),
                });
            }
            self.pos = end as usize;
            if item.children > 0 {
                if self.open.len() >= self.max_depth {
                    return Err(DecodeError::TooDeep {
                        max: self.max_depth,
                    });
                }
                self.open.push(item.children);
                continue;
            }
            // A complete value: it fills one slot of each container it closes.
            loop {
                match self.open.last_mut() {
                    None => {
                        self.complete = true;
                        break;
                    }
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// One scanned MessagePack item: header bytes, body bytes that follow it, and the number of
/// child items (for arrays and maps) still to come.
struct Item {
    header: usize,
    body: u64,
    children: u64,
}

/// Inlined into its readers where they are optimized, as [`read_value_in`] is.
#[cfg_attr(not(debug_assertions), inline(always))]
fn scan_item(b: &[u8]) -> Result<Option<Item>, DecodeError> {
    let m = b[0];
    let fixed = |header: usize, body: u64| {
        Ok(Some(Item {
            header,
            body,
            children: 0,
        }))
    };
    let len_at = |n: usize| -> Option<u64> {
        let bytes = b.get(1..1 + n)?;
        Some(bytes.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    };
    let sized = |n: usize, extra: usize| match len_at(n) {
        Some(len) => Ok(Some(Item {
            header: 1 + n + extra,
            body: len,
            children: 0,
        })),
        None => Ok(None),
    };
    let container = |n: usize, per: u64| match len_at(n) {
        Some(len) => Ok(Some(Item {
            header: 1 + n,
            body: 0,
            children: len * per,
        })),
        None => Ok(None),
    };
    match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => fixed(1, 0),
        0x80..=0x8f => Ok(Some(Item {
            header: 1,
            body: 0,
            children: (m & 0x0f) as u64 * 2,
        })),
        0x90..=0x9f => Ok(Some(Item {
            header: 1,
            body: 0,
            children: (m & 0x0f) as u64,
        })),
        0xa0..=0xbf => fixed(1, (m & 0x1f) as u64),
        0xc1 => Err(DecodeError::Malformed(
            "byte 0xc1 is never used in MessagePack".into(),
        )),
        0xc4 | 0xd9 => sized(1, 0),
        0xc5 | 0xda => sized(2, 0),
        0xc6 | 0xdb => sized(4, 0),
        0xc7 => sized(1, 1),
        0xc8 => sized(2, 1),
        0xc9 => sized(4, 1),
        0xca => fixed(5, 0),
        0xcb => fixed(9, 0),
        0xcc | 0xd0 => fixed(2, 0),
        0xcd | 0xd1 => fixed(3, 0),
        0xce | 0xd2 => fixed(5, 0),
        0xcf | 0xd3 => fixed(9, 0),
        0xd4 => fixed(3, 0),
        0xd5 => fixed(4, 0),
        0xd6 => fixed(6, 0),
        0xd7 => fixed(10, 0),
        0xd8 => fixed(18, 0),
        0xdc => container(2, 1),
        0xdd => container(4, 1),
        0xde => container(2, 2),
        0xdf => container(4, 2),
    }
}

/// Reads the message at the front of `frame` without building the outer array: the
/// envelope's fields are read in place and only the payload becomes [`Value`]s. Returns it
/// with the bytes it took.
fn parse_message(frame: &[u8]) -> Result<(Message, usize), DecodeError> {
    let mut rd = frame;
    let msg = parse_envelope(&mut rd)?;
    Ok((msg, frame.len() - rd.len()))
}

fn parse_envelope(rd: &mut &[u8]) -> Result<Message, DecodeError> {
    let len = match rd.first() {
        Some(&m @ 0x90..=0x9f) => {
            *rd = &rd[1..];
            (m & 0x0f) as usize
        }
        // Long array headers for a 3-5 element message are legal, just unusual.
        _ => return Message::from_value(read_value_in(rd, DEFAULT_MAX_DEPTH)?),
    };
    // The type is a positive fixint in every message a peer sends.
    let kind = match rd.split_first() {
        Some((&kind @ 0x00..=0x7f, rest)) => {
            *rd = rest;
            Some(kind as u64)
        }
        _ => read_value(rd)?.as_u64(),
    };
    match (kind, len) {
        (Some(TYPE_REQUEST), 4 | 5) => {
            let id = msgid(read_value(rd)?)?;
            let method = read_method(rd)?;
            let params = params(read_value(rd)?);
            let ext = if len == 5 { Some(read_ext(rd)?) } else { None };
            let params = match params {
                Ok(params) => params,
                Err(why) => return Ok(Message::Invalid { id, why }),
            };
            Ok(Message::Request {
                id,
                method,
                params,
                ext,
            })
        }
        (Some(TYPE_RESPONSE), 4) => {
            let id = msgid(read_value(rd)?)?;
            let error = read_value(rd)?;
            let result = read_value(rd)?;
            Ok(Message::Response { id, error, result })
        }
        (Some(TYPE_NOTIFICATION), 3) => {
            let method = read_method(rd)?;
            let params = params(read_value(rd)?).map_err(DecodeError::Malformed)?;
            Ok(Message::Notification { method, params })
        }
        (kind, n) => Err(DecodeError::Malformed(format!(
            "not an RPC message: type {kind:?} with {n} elements"
        ))),
    }
}

/// A request or notification read in place: its method name and arguments are borrowed
/// from the bytes the peer sent, so a handler can decode its arguments straight from them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CallBytes<'a> {
    /// The msgid; `None` for a notification.
    pub id: Option<Value>,
    /// The name as sent (a `str`, UTF-8 or not): a router takes only the names it knows.
    pub method: &'a [u8],
    /// The params array as sent, its header included.
    pub params: &'a [u8],
    pub ext: Option<RequestExt>,
}

/// The request or notification at the front of `buf` read in place, with the bytes it
/// takes. `None` for anything else: another kind of message, one not whole yet, one that
/// breaks a rule or is written in an unusual way (long array headers, a `bin` method name).
/// [`Decoder::decode`] reads those, and says what is wrong with them.
#[inline(always)]
pub(crate) fn read_call(buf: &[u8]) -> Option<(CallBytes<'_>, usize)> {
    let mut rd = buf;
    let (&head, rest) = rd.split_first()?;
    let (&kind, rest) = rest.split_first()?;
    rd = rest;
    let id = match (head, kind as u64) {
        (0x94 | 0x95, TYPE_REQUEST) => Some(match read_uint(&mut rd) {
            Some(id) => Value::from(id),
            None => msgid(read_value(&mut rd).ok()?).ok()?,
        }),
        (0x93, TYPE_NOTIFICATION) => None,
        _ => return None,
    };
    let method = match rd.split_first()? {
        // A method's name is most often a fixstr, taken here in line.
        (&m @ 0xa0..=0xbf, rest) => {
            let (name, rest) = rest.split_at_checked((m & 0x1f) as usize)?;
            rd = rest;
            name
        }
        (0xd9..=0xdb, _) => read_text(&mut rd).ok()??,
        _ => return None,
    };
    let start = rd;
    if !matches!(rd.first()?, 0x90..=0x9f | 0xdc | 0xdd) {
        return None;
    }
    skip_value(&mut rd, DEFAULT_MAX_DEPTH - 1).ok()?;
    let params = &start[..start.len() - rd.len()];
    let ext = match head {
        0x95 => Some(read_ext(&mut rd).ok()?),
        _ => None,
    };
    let call = CallBytes {
        id,
        method,
        params,
        ext,
    };
    Some((call, buf.len() - rd.len()))
}

/// The response at the front of `buf` to a call this end could have made, read in place:
/// the call's number ([`response_key`]), the answer (the result, or the error sent), and
/// the bytes it takes. `None` for anything else, left to [`Decoder::decode`] as in
/// [`read_call`].
pub(crate) fn read_answer(buf: &[u8]) -> Option<(u32, Result<Value, Value>, usize)> {
    let ([0x94, 0x01], mut rd) = buf.split_first_chunk::<2>()? else {
        return None;
    };
    // The msgids this end sends are unsigned integers, most often written as one.
    let key = match read_uint(&mut rd) {
        Some(id) => u32::try_from(id).ok()?,
        None => response_key(&msgid(read_value(&mut rd).ok()?).ok()?)?,
    };
    let answer = match rd.split_first()? {
        (0xc0, rest) => {
            rd = rest;
            Ok(read_value(&mut rd).ok()?)
        }
        _ => {
            let error = read_value(&mut rd).ok()?;
            read_value(&mut rd).ok()?;
            Err(error)
        }
    };
    Some((key, answer, buf.len() - rd.len()))
}

/// Moves past one value of at most `depth` levels of arrays and maps, building nothing.
/// Inlined where optimized, as [`read_value_in`] is: a value that holds no others is
/// passed where it is read, and only the items of an array or map take a call
/// ([`skip_items`]).
#[cfg_attr(not(debug_assertions), inline(always))]
fn skip_value(rd: &mut &[u8], depth: usize) -> Result<(), DecodeError> {
    if rd.is_empty() {
        return Err(truncated_value());
    }
    let item = scan_item(rd)?.ok_or_else(truncated_value)?;
    let end = usize::try_from(item.header as u64 + item.body)
        .ok()
        .filter(|&end| end <= rd.len())
        .ok_or_else(truncated_value)?;
    *rd = &rd[end..];
    let mut n = item.children;
    // The items most arrays hold, one-byte values and short strings, are stepped over in
    // line; from the first other one on, the rest are scanned.
    while n > 0 && depth > 0 {
        let step = match rd.first() {
            Some(0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3) => 1,
            Some(&m @ 0xa0..=0xbf) => 1 + (m & 0x1f) as usize,
            _ => break,
        };
        *rd = rd.get(step..).ok_or_else(truncated_value)?;
        n -= 1;
    }
    match n {
        0 => Ok(()),
        n => skip_items(rd, n, depth),
    }
}

/// Moves past the `n` items of an array or map (a map's keys and values counted apart)
/// whose header [`skip_value`] took, each of at most `depth - 1` levels.
#[inline(never)]
fn skip_items(rd: &mut &[u8], n: u64, depth: usize) -> Result<(), DecodeError> {
    let depth = depth.checked_sub(1).ok_or_else(too_deep)?;
    for _ in 0..n {
        skip_value(rd, depth)?;
    }
    Ok(())
}

/// The method name: `str` (valid UTF-8 or not) or `bin`, read straight from the frame.
fn read_method(rd: &mut &[u8]) -> Result<String, DecodeError> {
    let bytes = match read_text(rd)? {
        Some(bytes) => bytes,
        None => return method(read_value(rd)?),
    };
    Ok(match std::str::from_utf8(bytes) {
        Ok(name) => name.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    })
}

/// The bytes of a `str` or `bin` at the front of `rd`, or `None` (consuming nothing) when
/// the next value is something else.
fn read_text<'a>(rd: &mut &'a [u8]) -> Result<Option<&'a [u8]>, DecodeError> {
    let Some(&m) = rd.first() else {
        return Err(DecodeError::Malformed("message ends early".into()));
    };
    let header = match m {
        0xa0..=0xbf => 1,
        0xd9 | 0xc4 => 2,
        0xda | 0xc5 => 3,
        0xdb | 0xc6 => 5,
        _ => return Ok(None),
    };
    let len = match rd.get(1..header) {
        _ if header == 1 => (m & 0x1f) as usize,
        Some(b) => b.iter().fold(0usize, |acc, &x| (acc << 8) | x as usize),
        None => return Err(DecodeError::Malformed("message ends early".into())),
    };
    let end = header.saturating_add(len);
    let Some(bytes) = rd.get(header..end) else {
        return Err(DecodeError::Malformed(
            "string runs past the end of its message".into(),
        ));
    };
    *rd = &rd[end..];
    Ok(Some(bytes))
}

/// The fifth element of a request between shoal peers: a map; unknown keys are skipped.
fn read_ext(rd: &mut &[u8]) -> Result<RequestExt, DecodeError> {
    let mut ext = RequestExt::default();
    let n = match rd.first() {
        Some(&m @ 0x80..=0x8f) => {
            *rd = &rd[1..];
            (m & 0x0f) as usize
        }
        _ => return Ok(RequestExt::from_value(&read_value(rd)?)),
    };
    for _ in 0..n {
        let key = match read_text(rd)? {
            Some(key) => Some(key),
            None => {
                read_value(rd)?;
                None
            }
        };
        if key != Some(b"deadline_ms".as_slice()) {
            read_value(rd)?;
            continue;
        }
        ext.deadline_ms = match read_uint(rd) {
            Some(ms) => Some(ms),
            None => read_value(rd)?.as_u64(),
        };
    }
    Ok(ext)
}

/// The unsigned integer at the front of `rd`, if it is one written as such (a positive
/// fixint or `uint 8` to `uint 64`); `None`, consuming nothing, otherwise.
fn read_uint(rd: &mut &[u8]) -> Option<u64> {
    let (&m, rest) = rd.split_first()?;
    let (value, len) = match m {
        0x00..=0x7f => (m as u64, 0),
        0xcc..=0xcf => {
            let len = 1 << (m - 0xcc);
            let bytes = rest.get(..len)?;
            (
                bytes.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64),
                len,
            )
        }
        _ => return None,
    };
    *rd = &rest[len..];
    Some(value)
}

/// Decodes one argument from within a request's params array.
#[inline(always)]
pub(crate) fn read_arg(rd: &mut &[u8]) -> Result<Value, DecodeError> {
    read_value_in(rd, DEFAULT_MAX_DEPTH - 2)
}

/// Decodes one value inside a message's envelope (see [`read_value_in`]).
fn read_value(rd: &mut &[u8]) -> Result<Value, DecodeError> {
    read_value_in(rd, DEFAULT_MAX_DEPTH - 1)
}

/// Decodes one value with at most `depth` levels of arrays and maps. Every length is checked
/// against the bytes left, so containers are sized up front without trusting the peer, and
/// the values it builds are at most the bytes it reads.
///
/// Numbers, text and the other values that hold no others are decoded here, inlined into
/// the caller: the value is built in the caller's frame instead of written by a call and
/// read back from memory (a read of a value just written in smaller pieces waits for the
/// writes). Arrays, maps, binaries and extensions go to [`read_nested`]. Debug builds do
/// not inline it: there each inlined copy keeps stack of its own, and nesting to the depth
/// limit must fit a thread's stack in them too.
#[cfg_attr(not(debug_assertions), inline(always))]
fn read_value_in(rd: &mut &[u8], depth: usize) -> Result<Value, DecodeError> {
    let (&m, tail) = rd.split_first().ok_or_else(truncated_value)?;
    *rd = tail;
    Ok(match m {
        0x00..=0x7f => Value::from(m),
        0xe0..=0xff => Value::from(m as i8),
        0xc0 => Value::Nil,
        0xc2 => Value::Boolean(false),
        0xc3 => Value::Boolean(true),
        0xcc => Value::from(be(rd, 1)?),
        0xcd => Value::from(be(rd, 2)?),
        0xce => Value::from(be(rd, 4)?),
        0xcf => Value::from(be(rd, 8)?),
        0xd0 => Value::from(be(rd, 1)? as u8 as i8),
        0xd1 => Value::from(be(rd, 2)? as u16 as i16),
        0xd2 => Value::from(be(rd, 4)? as u32 as i32),
        0xd3 => Value::from(be(rd, 8)? as i64),
        0xca => Value::F32(f32::from_bits(be(rd, 4)? as u32)),
        0xcb => Value::F64(f64::from_bits(be(rd, 8)?)),
        0xa0..=0xbf | 0xd9 | 0xda | 0xdb => {
            let len = match m {
                0xd9 => be(rd, 1)?,
                0xda => be(rd, 2)?,
                0xdb => be(rd, 4)?,
                _ => (m & 0x1f) as u64,
            };
            let head = front(rd, len as usize)?;
            match std::str::from_utf8(head) {
                Ok(s) => Value::from(s),
                // Kept as sent; rmpv builds the value that remembers the bad bytes.
                Err(_) => raw_str_value(head),
            }
        }
        _ => return read_nested(m, rd, depth),
    })
}

/// [`read_value_in`] for a value whose first byte `m` is taken off `rd` already: an array,
/// a map, a binary or an extension (and 0xc1, which is refused).
#[inline(never)]
fn read_nested(m: u8, rd: &mut &[u8], depth: usize) -> Result<Value, DecodeError> {
    let take = |rd: &mut &[u8], n: usize| Ok::<_, DecodeError>(front(rd, n)?.to_vec());
    Ok(match m {
        0xc4..=0xc6 => {
            let len = be(rd, 1 << (m - 0xc4))?;
            Value::Binary(take(rd, len as usize)?)
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            let len = match m {
                0xdc => be(rd, 2)?,
                0xdd => be(rd, 4)?,
                _ => (m & 0x0f) as u64,
            };
            Value::Array(read_items(rd, len as usize, depth)?)
        }
        0x80..=0x8f | 0xde | 0xdf => {
            let len = match m {
                0xde => be(rd, 2)?,
                0xdf => be(rd, 4)?,
                _ => (m & 0x0f) as u64,
            };
            Value::Map(read_entries(rd, len as usize, depth)?)
        }
        0xd4..=0xd8 | 0xc7..=0xc9 => {
            let len = match m {
                0xc7 => be(rd, 1)? as usize,
                0xc8 => be(rd, 2)? as usize,
                0xc9 => be(rd, 4)? as usize,
                _ => 1 << (m - 0xd4),
            };
            let tag = be(rd, 1)? as u8 as i8;
            Value::Ext(tag, take(rd, len)?)
        }
        _ => {
            return Err(DecodeError::Malformed(
                "byte 0xc1 is never used in MessagePack".into(),
            ))
        }
    })
}

/// The `len` items of an array, one level below `depth`: a function of its own, so that a
/// level of nesting takes only the frames of what it reads.
#[inline(never)]
fn read_items(rd: &mut &[u8], len: usize, depth: usize) -> Result<Vec<Value>, DecodeError> {
    let depth = depth.checked_sub(1).ok_or_else(too_deep)?;
    let mut items = Vec::with_capacity(len.min(rd.len()));
    for _ in 0..len {
        items.push(read_value_in(rd, depth)?);
    }
    Ok(items)
}

/// The `len` entries of a map, as [`read_items`].
#[inline(never)]
fn read_entries(
    rd: &mut &[u8],
    len: usize,
    depth: usize,
) -> Result<Vec<(Value, Value)>, DecodeError> {
    let depth = depth.checked_sub(1).ok_or_else(too_deep)?;
    let mut entries = Vec::with_capacity(len.min(rd.len() / 2));
    for _ in 0..len {
        let k = read_value_in(rd, depth)?;
        entries.push((k, read_value_in(rd, depth)?));
    }
    Ok(entries)
}

fn too_deep() -> DecodeError {
    DecodeError::TooDeep {
        max: DEFAULT_MAX_DEPTH,
    }
}

/// The next `n` bytes of `rd` as a big-endian number.
#[inline]
fn be(rd: &mut &[u8], n: usize) -> Result<u64, DecodeError> {
    Ok(front(rd, n)?
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | b as u64))
}

/// The next `n` bytes of a value, taken off the front of `rd`.
#[inline]
fn front<'a>(rd: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    let (head, tail) = rd.split_at_checked(n).ok_or_else(truncated_value)?;
    *rd = tail;
    Ok(head)
}

fn truncated_value() -> DecodeError {
    DecodeError::Malformed("value runs past the end of its message".into())
}

/// A `str` value holding bytes that are not UTF-8, as rmpv represents it.
fn raw_str_value(bytes: &[u8]) -> Value {
    let mut enc = Vec::with_capacity(bytes.len() + 5);
    let _ = rmp::encode::write_str_len(&mut enc, bytes.len() as u32);
    enc.extend_from_slice(bytes);
    rmpv::decode::read_value(&mut &enc[..]).unwrap_or_else(|_| Value::Binary(bytes.to_vec()))
}

/// The msgid of a request at the front of `buf`, if its first bytes are there.
fn request_id(buf: &[u8]) -> Option<Value> {
    let mut rd = buf;
    let len = rmp::decode::read_array_len(&mut rd).ok()?;
    if !(4..=5).contains(&len) {
        return None;
    }
    let kind: u64 = rmp::decode::read_int(&mut rd).ok()?;
    if kind != TYPE_REQUEST {
        return None;
    }
    rmpv::decode::read_value_with_max_depth(&mut rd, 1).ok()
}

impl Message {
    /// Reads a decoded value as a message. Tolerant where peers differ: any integer or float
    /// msgid, `str` with bad UTF-8 or `bin` for the method name. Params must be an array: a
    /// request with others is [`Message::Invalid`], a notification with others malformed.
    pub fn from_value(value: Value) -> Result<Message, DecodeError> {
        let Value::Array(items) = value else {
            return Err(DecodeError::Malformed(format!(
                "expected an array, got {value}"
            )));
        };
        let kind = items.first().and_then(Value::as_u64);
        let mut it = items.into_iter();
        let _ = it.next();
        match (kind, it.len()) {
            (Some(TYPE_REQUEST), 3 | 4) => {
                let id = msgid(it.next().unwrap())?;
                let method = method(it.next().unwrap())?;
                let params = match params(it.next().unwrap()) {
                    Ok(params) => params,
                    Err(why) => return Ok(Message::Invalid { id, why }),
                };
                let ext = it.next().map(|v| RequestExt::from_value(&v));
                Ok(Message::Request {
                    id,
                    method,
                    params,
                    ext,
                })
            }
            (Some(TYPE_RESPONSE), 3) => {
                let id = msgid(it.next().unwrap())?;
                let error = it.next().unwrap();
                let result = it.next().unwrap();
                Ok(Message::Response { id, error, result })
            }
            (Some(TYPE_NOTIFICATION), 2) => {
                let method = method(it.next().unwrap())?;
                let params = params(it.next().unwrap()).map_err(DecodeError::Malformed)?;
                Ok(Message::Notification { method, params })
            }
            (kind, n) => Err(DecodeError::Malformed(format!(
                "not an RPC message: type {kind:?} with {} elements",
                n + 1
            ))),
        }
    }
}

fn msgid(v: Value) -> Result<Value, DecodeError> {
    match v {
        Value::Integer(_) | Value::F32(_) | Value::F64(_) => Ok(v),
        other => Err(DecodeError::Malformed(format!(
            "msgid must be a number, got {other}"
        ))),
    }
}

fn method(v: Value) -> Result<String, DecodeError> {
    let v = match v {
        Value::String(s) if s.is_str() => return Ok(s.into_str().unwrap_or_default()),
        other => other,
    };
    text(&v).ok_or_else(|| DecodeError::Malformed(format!("method must be a string, got {v}")))
}

/// The params of a request or notification: an array, as the specification says. Anything
/// else is the reason it is refused.
fn params(v: Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(format!(
            "params must be an array of the arguments, got {}",
            kind_of(&other)
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "binary",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an extension value",
    }
}

impl RequestExt {
    fn from_value(v: &Value) -> Self {
        let mut ext = RequestExt::default();
        if let Value::Map(entries) = v {
            for (k, v) in entries {
                if k.as_str() == Some("deadline_ms") {
                    ext.deadline_ms = v.as_u64();
                }
            }
        }
        ext
    }
}

/// The msgid a response carries as our own request number, when it is one we could have sent:
/// an integer below 2^32, or a float holding one (some peers echo large ids as floats).
pub fn response_key(id: &Value) -> Option<u32> {
    match id {
        Value::Integer(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::F64(f) if f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64 => Some(*f as u32),
        Value::F32(f) if f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f32 => Some(*f as u32),
        _ => None,
    }
}

/// Appends `[0, id, method, params]` (and the shoal extension when given). `params` must
/// serialize as a sequence (a tuple, slice or `Vec`); structs inside travel as maps. `()`
/// goes out as no arguments (`[]`): params are always an array on the wire.
pub fn encode_request<P: Serialize + ?Sized>(
    buf: &mut BytesMut,
    id: u32,
    method: &str,
    params: &P,
    ext: Option<RequestExt>,
) -> Result<(), rmp_serde::encode::Error> {
    let ext = EncodedExt::new(ext);
    request_head(buf, id, ext.is_some());
    encode_body(buf, method, params)?;
    buf.put_slice(ext.as_bytes());
    Ok(())
}

/// Appends `method` and `params` as they follow a msgid in a request or the type in a
/// notification: the body a [`crate::Pipeline`] keeps for each message it will send.
pub fn encode_body<P: Serialize + ?Sized>(
    buf: &mut BytesMut,
    method: &str,
    params: &P,
) -> Result<(), rmp_serde::encode::Error> {
    let _ = rmp::encode::write_str(&mut buf.writer(), method);
    write_params(buf, params)
}

/// Appends a request like [`encode_request`] whose method and params are already `body`
/// (see [`encode_body`]).
pub fn encode_request_body(buf: &mut BytesMut, id: u32, body: &[u8], ext: Option<RequestExt>) {
    encode_request_parts(buf, id, body, &EncodedExt::new(ext));
}

/// Appends a request whose method and params are `body` and whose extension, if any, is
/// already encoded: a pipeline encodes it once for all its calls.
pub(crate) fn encode_request_parts(buf: &mut BytesMut, id: u32, body: &[u8], ext: &EncodedExt) {
    request_head(buf, id, ext.is_some());
    buf.put_slice(body);
    buf.put_slice(ext.as_bytes());
}

/// A request's fifth element ([`RequestExt`]) as MessagePack; empty for a request without one.
pub(crate) struct EncodedExt {
    bytes: [u8; 24],
    len: usize,
}

impl EncodedExt {
    pub(crate) fn new(ext: Option<RequestExt>) -> Self {
        let mut out = EncodedExt {
            bytes: [0; 24],
            len: 0,
        };
        // At most 1 + 12 + 9 bytes: a map of one, the key, a u64.
        let mut w = &mut out.bytes[..];
        if let Some(ext) = ext {
            match ext.deadline_ms {
                Some(ms) => {
                    let _ = rmp::encode::write_map_len(&mut w, 1);
                    let _ = rmp::encode::write_str(&mut w, "deadline_ms");
                    let _ = rmp::encode::write_uint(&mut w, ms);
                }
                None => {
                    let _ = rmp::encode::write_map_len(&mut w, 0);
                }
            }
        }
        out.len = 24 - w.len();
        out
    }

    fn is_some(&self) -> bool {
        self.len > 0
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Appends a notification like [`encode_notification`] whose method and params are already
/// `body` (see [`encode_body`]).
pub fn encode_notification_body(buf: &mut BytesMut, body: &[u8]) {
    notification_head(buf);
    buf.put_slice(body);
}

fn notification_head(buf: &mut BytesMut) {
    let mut w = buf.writer();
    let _ = rmp::encode::write_array_len(&mut w, 3);
    let _ = rmp::encode::write_uint(&mut w, TYPE_NOTIFICATION);
}

/// `[0, id, ` of a request of four elements, or five when `extended`, written in one piece.
fn request_head(buf: &mut BytesMut, id: u32, extended: bool) {
    let mut head = [
        if extended { 0x95 } else { 0x94 },
        TYPE_REQUEST as u8,
        0,
        0,
        0,
        0,
        0,
    ];
    let len = 2 + put_uint(&mut head[2..], id.into());
    buf.put_slice(&head[..len]);
}

/// Writes `n` at the front of `out` as `rmp::encode::write_uint` does (the shortest form);
/// returns its length. `out` has room for 5 bytes, or 9 for a `n` past `u32::MAX`.
fn put_uint(out: &mut [u8], n: u64) -> usize {
    match n {
        0..=0x7f => {
            out[0] = n as u8;
            1
        }
        0x80..=0xff => {
            out[..2].copy_from_slice(&[0xcc, n as u8]);
            2
        }
        0x100..=0xffff => {
            out[0] = 0xcd;
            out[1..3].copy_from_slice(&(n as u16).to_be_bytes());
            3
        }
        0x1_0000..=0xffff_ffff => {
            out[0] = 0xce;
            out[1..5].copy_from_slice(&(n as u32).to_be_bytes());
            5
        }
        _ => {
            out[0] = 0xcf;
            out[1..9].copy_from_slice(&n.to_be_bytes());
            9
        }
    }
}

/// Appends `[2, method, params]`, `()` as `[]` like [`encode_request`].
pub fn encode_notification<P: Serialize + ?Sized>(
    buf: &mut BytesMut,
    method: &str,
    params: &P,
) -> Result<(), rmp_serde::encode::Error> {
    notification_head(buf);
    encode_body(buf, method, params)
}

/// Appends `params`; a nil (what `()` serializes as) becomes the empty array, since a peer
/// must refuse params that are not an array.
fn write_params<P: Serialize + ?Sized>(
    buf: &mut BytesMut,
    params: &P,
) -> Result<(), rmp_serde::encode::Error> {
    let start = buf.len();
    rmp_serde::encode::write_named(&mut buf.writer(), params)?;
    if buf[start..] == [0xc0] {
        buf[start] = 0x90;
    }
    Ok(())
}

/// Appends `[1, id, nil, result]` where `result` is already MessagePack.
pub fn encode_response_ok(buf: &mut BytesMut, id: &Value, result: &[u8]) {
    response_head(buf, id);
    buf.put_u8(0xc0);
    buf.put_slice(result);
}

/// Appends `[1, id, error, nil]`.
pub fn encode_response_err(buf: &mut BytesMut, id: &Value, error: &RpcError) {
    response_head(buf, id);
    let mut w = buf.writer();
    let _ = rmpv::encode::write_value(&mut w, &error.to_value());
    w.into_inner().put_u8(0xc0);
}

/// `[1, id, `, in one piece when the msgid is an unsigned integer (as every shoal peer's is).
fn response_head(buf: &mut BytesMut, id: &Value) {
    let mut head = [0x94, TYPE_RESPONSE as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    match id.as_u64() {
        Some(n) => {
            let len = 2 + put_uint(&mut head[2..], n);
            buf.put_slice(&head[..len]);
        }
        None => {
            buf.put_slice(&head[..2]);
            let _ = rmpv::encode::write_value(&mut buf.writer(), id);
        }
    }
}

/// Encodes one value as MessagePack, structs as maps.
pub fn to_msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut out = Vec::with_capacity(64);
    rmp_serde::encode::write_named(&mut out, value)?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `str` value holding exactly these bytes, valid UTF-8 or not.
    pub(crate) fn raw_str(bytes: &[u8]) -> Value {
        raw_str_value(bytes)
    }

    fn frames(msgs: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            rmpv::encode::write_value(&mut out, m).unwrap();
        }
        out
    }

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    fn sample() -> Vec<Value> {
        vec![
            arr(vec![
                0.into(),
                7.into(),
                "add".into(),
                arr(vec![1.into(), 2.into()]),
            ]),
            arr(vec![
                2.into(),
                "log".into(),
                arr(vec!["x".repeat(300).into()]),
            ]),
            arr(vec![1.into(), 7.into(), Value::Nil, 3.into()]),
            arr(vec![
                0.into(),
                Value::from(u32::MAX),
                Value::Binary(b"bin".to_vec()),
                arr(vec![Value::Map(vec![("k".into(), arr(vec![]))])]),
            ]),
        ]
    }

    #[test]
    fn decodes_back_to_back_messages_cut_at_every_byte() {
        let msgs = sample();
        let bytes = frames(&msgs);
        for cut in 0..=bytes.len() {
            let mut dec = Decoder::default();
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut got = Vec::new();
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got.push(m);
            }
            buf.extend_from_slice(&bytes[cut..]);
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got.push(m);
            }
            assert_eq!(got.len(), msgs.len(), "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn byte_at_a_time_scans_each_byte_once() {
        // A large string fed one byte at a time: the decoder must not rescan from the start,
        // so its position only moves forward.
        let body = "y".repeat(100_000);
        let bytes = frames(&[arr(vec![2.into(), "log".into(), arr(vec![body.into()])])]);
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut done = 0;
        let mut last_pos = 0;
        for b in &bytes {
            buf.put_u8(*b);
            if dec.decode(&mut buf).unwrap().is_some() {
                done += 1;
            } else {
                assert!(dec.pos >= last_pos);
                last_pos = dec.pos;
            }
        }
        assert_eq!(done, 1);
    }

    #[test]
    fn tolerant_reading_of_ids_and_names() {
        let bad_utf8 = raw_str(&[b'e', 0xff]);
        let msg = Message::from_value(arr(vec![
            0.into(),
            Value::F64(5.0),
            bad_utf8,
            arr(vec![Value::from("single")]),
        ]))
        .unwrap();
        let Message::Request {
            id,
            method,
            params,
            ext,
        } = msg
        else {
            panic!()
        };
        assert_eq!(id, Value::F64(5.0));
        assert_eq!(method, "e\u{fffd}");
        assert_eq!(params, vec![Value::from("single")]);
        assert_eq!(ext, None);
        assert_eq!(response_key(&Value::F64(2147483648.0)), Some(1 << 31));
        assert_eq!(response_key(&Value::from(-1)), None);
    }

    #[test]
    fn params_that_are_not_an_array_are_refused() {
        for (params, named) in [
            (Value::Nil, "nil"),
            (Value::from("single"), "a string"),
            (Value::Map(vec![]), "a map"),
        ] {
            let req = arr(vec![0.into(), 4.into(), "m".into(), params.clone()]);
            let want = Message::Invalid {
                id: 4.into(),
                why: format!("params must be an array of the arguments, got {named}"),
            };
            let mut buf = BytesMut::from(&frames(std::slice::from_ref(&req))[..]);
            assert_eq!(
                Decoder::default().decode(&mut buf).unwrap(),
                Some(want.clone())
            );
            assert_eq!(Message::from_value(req).unwrap(), want);
            // A notification has no msgid to answer: it is malformed.
            let note = arr(vec![2.into(), "m".into(), params]);
            let mut buf = BytesMut::from(&frames(&[note])[..]);
            let err = Decoder::default().decode(&mut buf).unwrap_err();
            assert!(err.to_string().contains("params must be an array"), "{err}");
        }
    }

    #[test]
    fn envelope_read_in_place_matches_the_general_reading() {
        let ext = Value::Map(vec![
            (1.into(), 2.into()),
            ("other".into(), arr(vec![1.into()])),
            ("deadline_ms".into(), 9.into()),
        ]);
        let req = arr(vec![0.into(), 1.into(), "m".into(), arr(vec![]), ext]);
        let mut buf = BytesMut::from(&frames(&[req])[..]);
        let Some(Message::Request { ext, .. }) = Decoder::default().decode(&mut buf).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            ext,
            Some(RequestExt {
                deadline_ms: Some(9)
            })
        );
        // The same notification with a long (0xdc) array header.
        let mut long = vec![0xdc, 0x00, 0x03, 0x02, 0xa3, b'l', b'o', b'g', 0x91, 0x07];
        let mut buf = BytesMut::from(&long[..]);
        let want = Message::Notification {
            method: "log".into(),
            params: vec![7.into()],
        };
        assert_eq!(
            Decoder::default().decode(&mut buf).unwrap(),
            Some(want.clone())
        );
        long.drain(..3);
        long.insert(0, 0x93);
        let mut buf = BytesMut::from(&long[..]);
        assert_eq!(Decoder::default().decode(&mut buf).unwrap(), Some(want));
    }

    #[test]
    fn rejects_what_is_not_rpc() {
        let check = |v: Value| {
            let mut buf = BytesMut::from(&frames(&[v])[..]);
            let err = Decoder::default().decode(&mut buf).unwrap_err();
            assert!(matches!(err, DecodeError::Malformed(_)), "{err}");
        };
        check(Value::from(1));
        check(arr(vec![3.into(), 1.into(), "m".into(), arr(vec![])]));
        check(arr(vec![0.into(), "id".into(), "m".into(), arr(vec![])]));
        check(arr(vec![0.into(), 1.into(), 2.into(), arr(vec![])]));
        let mut buf = BytesMut::from(&[0xc1u8][..]);
        assert!(Decoder::default().decode(&mut buf).is_err());
    }

    #[test]
    fn too_large_is_reported_with_the_msgid_before_the_body_arrives() {
        let mut head = BytesMut::new();
        head.put_slice(&[0x94, 0x00, 0xcd, 0x01, 0x00, 0xa1, b'm', 0x91, 0xdb]);
        head.put_u32(1 << 30);
        let err = Decoder::new(1024).decode(&mut head).unwrap_err();
        assert_eq!(
            err,
            DecodeError::FrameTooLarge {
                size: 13 + (1 << 30),
                max: 1024,
                id: Some(256.into())
            }
        );
    }

    #[test]
    fn values_per_message_are_bounded_before_any_is_built() {
        // A request whose params are 2,000 nils (2,005 values with the envelope) against a limit of
        // 1,000: refused with its msgid, so the peer can be told which limit it hit.
        let mut frame = vec![0x94, 0x00, 0x2a, 0xa1, b'm', 0xdc, 0x07, 0xd0];
        frame.extend_from_slice(&[0xc0; 2000]);
        let mut buf = BytesMut::from(&frame[..]);
        let err = Decoder::default()
            .with_max_values(1000)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooManyValues {
                max: 1000,
                id: Some(42.into())
            }
        );
        assert!(err.to_string().contains("more than 1000 values"), "{err}");
        // The same frame of empty arrays, and one just under the limit that decodes.
        frame[8..].fill(0x90);
        let mut buf = BytesMut::from(&frame[..]);
        let err = Decoder::default().with_max_values(1000).decode(&mut buf);
        assert!(matches!(err, Err(DecodeError::TooManyValues { .. })));
        let mut buf = BytesMut::from(&frame[..]);
        let msg = Decoder::default().with_max_values(2005).decode(&mut buf);
        assert!(matches!(msg, Ok(Some(Message::Request { .. }))), "{msg:?}");
        // The default limit stops a frame of nils well under the frame size limit.
        let n = DEFAULT_MAX_VALUES + 1;
        let mut frame = vec![0x94, 0x00, 0x01, 0xa1, b'm', 0xdd];
        frame.extend_from_slice(&(n as u32).to_be_bytes());
        frame.resize(frame.len() + n, 0xc0);
        assert!(frame.len() < DEFAULT_MAX_MESSAGE);
        let mut buf = BytesMut::from(&frame[..]);
        let err = Decoder::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, DecodeError::TooManyValues { .. }), "{err}");
    }

    #[test]
    fn nesting_is_bounded() {
        let mut buf = BytesMut::from(&vec![0x91u8; 10_000][..]);
        let err = Decoder::default().decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooDeep {
                max: DEFAULT_MAX_DEPTH
            }
        );
    }

    /// A message read straight from the buffer and one found by the scan (the buffer is
    /// over the values limit, so the direct read is not tried) meet the same depth limit.
    #[test]
    fn the_direct_read_and_the_scan_bound_nesting_alike() {
        // [0, 1, "m", [[...[]...]]] with the envelope at depth 1: `levels` in all.
        let request = |levels: usize| {
            let mut frame = vec![0x94, 0x00, 0x01, 0xa1, b'm'];
            frame.resize(frame.len() + levels - 2, 0x91);
            frame.push(0x90);
            frame
        };
        for (levels, fits) in [(DEFAULT_MAX_DEPTH, true), (DEFAULT_MAX_DEPTH + 1, false)] {
            let frame = request(levels);
            for max_values in [DEFAULT_MAX_VALUES, frame.len() - 1] {
                let mut buf = BytesMut::from(&frame[..]);
                let got = Decoder::default()
                    .with_max_values(max_values)
                    .decode(&mut buf);
                match got {
                    Ok(Some(Message::Request { .. })) if fits => assert!(buf.is_empty()),
                    Err(DecodeError::TooDeep { max }) if !fits => {
                        assert_eq!(max, DEFAULT_MAX_DEPTH)
                    }
                    other => panic!("{levels} levels, max_values {max_values}: {other:?}"),
                }
            }
        }
    }

    /// A request refused for its params takes its whole frame, the extension included: the
    /// message behind it is read from its own first byte.
    #[test]
    fn a_refused_request_with_an_extension_leaves_the_next_message_whole() {
        let ext = Value::Map(vec![("deadline_ms".into(), 5.into())]);
        let bad = arr(vec![0.into(), 3.into(), "m".into(), "x".into(), ext]);
        let next = arr(vec![2.into(), "n".into(), arr(vec![])]);
        let mut buf = BytesMut::from(&frames(&[bad, next])[..]);
        let mut decoder = Decoder::default();
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(Message::Invalid { .. }))
        ));
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Message::Notification {
                method: "n".into(),
                params: vec![]
            })
        );
        assert!(buf.is_empty());
    }

    /// Reads what `read_call` took as the message the decoder reads from the same bytes.
    fn as_message(call: CallBytes<'_>) -> Message {
        let mut rd = call.params;
        let Value::Array(params) = read_value(&mut rd).unwrap() else {
            panic!("params are an array")
        };
        assert!(rd.is_empty(), "params are the array and nothing more");
        let method = String::from_utf8(call.method.to_vec()).unwrap();
        match call.id {
            Some(id) => Message::Request {
                id,
                method,
                params,
                ext: call.ext,
            },
            None => Message::Notification { method, params },
        }
    }

    #[test]
    fn a_call_read_in_place_is_the_message_decoded() {
        let deadline = Value::Map(vec![
            ("other".into(), arr(vec![1.into()])),
            ("deadline_ms".into(), 250.into()),
        ]);
        // The sample's request and notification, and two more.
        let mut calls = sample()[..2].to_vec();
        calls.extend([
            arr(vec![
                0.into(),
                Value::F64(9.0),
                "f".into(),
                arr(vec![]),
                deadline,
            ]),
            arr(vec![
                0.into(),
                Value::from(u32::MAX),
                "deep".into(),
                arr(vec![Value::Map(vec![(
                    "k".into(),
                    arr(vec![raw_str(&[0xff])]),
                )])]),
            ]),
            // Params stepped over a byte or a short string at a time, then scanned from
            // the first of another kind.
            arr(vec![
                2.into(),
                "mixed".into(),
                arr(vec![
                    1.into(),
                    (-1).into(),
                    Value::Nil,
                    true.into(),
                    "abc".into(),
                    "".into(),
                    1000.into(),
                    "x".repeat(40).into(),
                    false.into(),
                ]),
            ]),
        ]);
        for msg in calls {
            let bytes = frames(std::slice::from_ref(&msg));
            let mut tail = bytes.clone();
            tail.extend_from_slice(&bytes);
            let (call, len) = read_call(&tail).expect("read in place");
            assert_eq!(len, bytes.len(), "{msg}");
            let decoded = Decoder::default()
                .decode(&mut BytesMut::from(&bytes[..]))
                .unwrap()
                .unwrap();
            assert_eq!(as_message(call), decoded, "{msg}");
            // Short of the whole message, nothing is read.
            for cut in 0..bytes.len() {
                assert_eq!(read_call(&bytes[..cut]), None, "{msg} cut at {cut}");
            }
        }
    }

    #[test]
    fn an_answer_read_in_place_is_the_response_decoded() {
        let error = Value::Map(vec![
            ("code".into(), 1.into()),
            ("message".into(), "no".into()),
        ]);
        let answers = [
            arr(vec![1.into(), 7.into(), Value::Nil, "x".repeat(40).into()]),
            arr(vec![
                1.into(),
                Value::from(u32::MAX),
                error.clone(),
                Value::Nil,
            ]),
            arr(vec![
                1.into(),
                Value::F64(300.0),
                Value::Nil,
                arr(vec![1.into()]),
            ]),
        ];
        for msg in answers {
            let bytes = frames(std::slice::from_ref(&msg));
            let (key, answer, len) = read_answer(&bytes).expect("read in place");
            assert_eq!(len, bytes.len());
            let Message::Response { id, error, result } = Decoder::default()
                .decode(&mut BytesMut::from(&bytes[..]))
                .unwrap()
                .unwrap()
            else {
                panic!("{msg} is a response")
            };
            assert_eq!(Some(key), response_key(&id), "{msg}");
            let expected = if error.is_nil() {
                Ok(result)
            } else {
                Err(error)
            };
            assert_eq!(answer, expected, "{msg}");
            for cut in 0..bytes.len() {
                assert_eq!(read_answer(&bytes[..cut]), None, "{msg} cut at {cut}");
            }
        }
        // Ids this end never sends are left to the decoder (and the reader, which logs them).
        for id in [Value::from(-1), Value::from(1u64 << 40), "7".into()] {
            let bytes = frames(&[arr(vec![1.into(), id, Value::Nil, Value::Nil])]);
            assert_eq!(read_answer(&bytes), None);
        }
    }

    #[test]
    fn what_is_not_a_plain_call_is_left_to_the_decoder() {
        let mut long_header = vec![0xdc, 0x00, 0x04];
        long_header.extend(frames(&[0.into(), 1.into(), "add".into(), arr(vec![])]));
        let cases = [
            // A response, and a request whose method is `bin`.
            frames(&[arr(vec![1.into(), 7.into(), Value::Nil, 3.into()])]),
            frames(&[arr(vec![
                0.into(),
                1.into(),
                Value::Binary(b"add".to_vec()),
                arr(vec![]),
            ])]),
            // Params that are not an array, and a msgid that is not a number.
            frames(&[arr(vec![0.into(), 1.into(), "add".into(), 5.into()])]),
            frames(&[arr(vec![0.into(), "id".into(), "add".into(), arr(vec![])])]),
            frames(&[arr(vec![2.into(), "log".into(), Value::Nil])]),
            long_header,
            // Nesting past the limit.
            {
                let mut deep = frames(&[0.into(), 1.into(), "f".into()]);
                deep.insert(0, 0x94);
                deep.extend(std::iter::repeat_n(0x91, DEFAULT_MAX_DEPTH));
                deep.push(0xc0);
                deep
            },
        ];
        for bytes in cases {
            assert_eq!(read_call(&bytes), None, "{bytes:02x?}");
        }
    }

    #[test]
    fn requests_and_responses_are_written_as_rmpv_writes_them() {
        let exts = [
            None,
            Some(RequestExt { deadline_ms: None }),
            Some(RequestExt {
                deadline_ms: Some(0),
            }),
            Some(RequestExt {
                deadline_ms: Some(300),
            }),
            Some(RequestExt {
                deadline_ms: Some(u64::MAX),
            }),
        ];
        for id in [0, 127, 128, 255, 256, 65_535, 65_536, 0x7fff_ffff] {
            for ext in exts {
                let mut items = vec![0.into(), id.into(), "m".into(), arr(vec![1.into()])];
                match ext {
                    Some(RequestExt { deadline_ms: None }) => items.push(Value::Map(vec![])),
                    Some(RequestExt {
                        deadline_ms: Some(ms),
                    }) => items.push(Value::Map(vec![("deadline_ms".into(), ms.into())])),
                    None => {}
                }
                let mut buf = BytesMut::new();
                encode_request(&mut buf, id, "m", &(1,), ext).unwrap();
                assert_eq!(buf[..], frames(&[arr(items)])[..], "{id} {ext:?}");
            }
        }
        let ids = [
            Value::from(0),
            Value::from(127),
            Value::from(128),
            Value::from(65_536),
            Value::from(u32::MAX),
            Value::from(u64::MAX),
            Value::from(-1),
            Value::F64(1.5),
        ];
        for id in ids {
            let mut buf = BytesMut::new();
            encode_response_ok(&mut buf, &id, &[0x05]);
            let expected = arr(vec![1.into(), id.clone(), Value::Nil, 5.into()]);
            assert_eq!(buf[..], frames(&[expected])[..], "{id}");
        }
    }

    #[test]
    fn encoders_round_trip() {
        #[derive(Serialize)]
        struct Point {
            x: i32,
        }
        let mut buf = BytesMut::new();
        let ext = RequestExt {
            deadline_ms: Some(250),
        };
        encode_request(&mut buf, 9, "move", &(Point { x: 3 }, "a"), Some(ext)).unwrap();
        encode_notification(&mut buf, "tick", &[(); 0]).unwrap();
        // `()` is nil to serde; it goes out as no arguments.
        encode_request(&mut buf, 10, "ping", &(), None).unwrap();
        encode_response_ok(&mut buf, &Value::from(u32::MAX), &to_msgpack(&5).unwrap());
        encode_response_err(&mut buf, &Value::F64(1.0), &RpcError::internal("x"));
        let mut dec = Decoder::default();
        let Some(Message::Request {
            id,
            method,
            params,
            ext: got,
        }) = dec.decode(&mut buf).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (id, method.as_str(), got),
            (Value::from(9), "move", Some(ext))
        );
        assert_eq!(params[0], Value::Map(vec![("x".into(), 3.into())]));
        assert!(matches!(
            dec.decode(&mut buf).unwrap(),
            Some(Message::Notification { .. })
        ));
        let Some(Message::Request { id, params, .. }) = dec.decode(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!((id, params), (Value::from(10), vec![]));
        let Some(Message::Response { id, result, .. }) = dec.decode(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!((id, result), (Value::from(u32::MAX), Value::from(5)));
        let Some(Message::Response { error, .. }) = dec.decode(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(error, RpcError::internal("x").to_value());
    }
}
