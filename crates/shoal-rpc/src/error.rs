//! Errors: the `{"code", "message", "data"}` objects that travel on the wire, and the
//! client-side [`Error`] that says why a call failed.

use std::fmt;
use std::io;

use rmpv::Value;

/// Error codes shoal sends. Applications use codes at or above [`codes::APP_MIN`].
pub mod codes {
    /// No method of that name is served.
    pub const METHOD_NOT_FOUND: i64 = 1;
    /// The parameters do not match the method's signature.
    pub const INVALID_PARAMS: i64 = 2;
    /// The call's deadline passed before the handler finished.
    pub const DEADLINE_EXCEEDED: i64 = 3;
    /// The server (or the chosen endpoint) is unavailable or over its limits.
    pub const OVERLOADED: i64 = 4;
    /// A message was larger than the configured maximum.
    pub const FRAME_TOO_LARGE: i64 = 5;
    /// The handler failed unexpectedly (for example it panicked).
    pub const INTERNAL: i64 = 6;
    /// The caller cancelled the call.
    pub const CANCELLED: i64 = 7;
    /// The method exists but has no implementation yet.
    pub const NOT_IMPLEMENTED: i64 = 8;
    /// The first code free for applications.
    pub const APP_MIN: i64 = 1000;
}

/// An error a handler returns and shoal sends as `{"code", "message", "data"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Names the method, cut to its first 256 bytes: the name is the caller's, and may be
    /// as long as a message.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            codes::METHOD_NOT_FOUND,
            format!("method not found: {}", cut_name(method)),
        )
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMS, message)
    }

    pub fn deadline_exceeded() -> Self {
        Self::new(codes::DEADLINE_EXCEEDED, "deadline exceeded")
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(codes::OVERLOADED, message)
    }

    pub fn frame_too_large(size: usize, max: usize) -> Self {
        Self::new(
            codes::FRAME_TOO_LARGE,
            format!("message of {size} bytes exceeds the limit of {max} bytes"),
        )
    }

    /// A message holds more values than the limit (see [`crate::codec::DEFAULT_MAX_VALUES`]).
    pub fn too_many_values(max: usize) -> Self {
        Self::new(
            codes::FRAME_TOO_LARGE,
            format!("message holds more than {max} values, the limit of values per message"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL, message)
    }

    pub fn not_implemented(method: &str) -> Self {
        Self::new(
            codes::NOT_IMPLEMENTED,
            format!("method not implemented: {}", cut_name(method)),
        )
    }

    /// The wire form: a map with `code`, `message` and, when present, `data`.
    pub fn to_value(&self) -> Value {
        let mut map = vec![
            (Value::from("code"), Value::from(self.code)),
            (Value::from("message"), Value::from(self.message.as_str())),
        ];
        if let Some(data) = &self.data {
            map.push((Value::from("data"), data.clone()));
        }
        Value::Map(map)
    }
}

/// A name from a peer as it may appear in a message: whole up to 256 bytes, else its start
/// and its length.
fn cut_name(name: &str) -> std::borrow::Cow<'_, str> {
    const KEEP: usize = 256;
    if name.len() <= KEEP {
        return name.into();
    }
    let end = (0..=KEEP)
        .rev()
        .find(|&i| name.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}... ({} bytes)", &name[..end], name.len()).into()
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// An error object received from a peer. shoal peers send `{"code", "message", "data"}`;
/// others send strings, `[kind, message]` pairs or maps of their own. All of them are kept as
/// they came in `raw`, with the best reading of a code and a message beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteError {
    pub code: Option<i64>,
    pub message: String,
    pub data: Option<Value>,
    pub raw: Value,
}

impl RemoteError {
    pub fn from_value(raw: Value) -> Self {
        let mut code = None;
        let mut message = None;
        let mut data = None;
        match &raw {
            Value::Map(entries) => {
                for (k, v) in entries {
                    match text(k).as_deref() {
                        Some("code") => code = v.as_i64(),
                        Some("message") => message = text(v),
                        Some("data") => data = Some(v.clone()),
                        _ => {}
                    }
                }
            }
            Value::Array(items) if items.len() == 2 => {
                if let (Some(kind), Some(msg)) = (text(&items[0]), text(&items[1])) {
                    message = Some(format!("{kind}: {msg}"));
                } else if let (Some(kind), Some(msg)) = (items[0].as_i64(), text(&items[1])) {
                    // Neovim's [kind, message]: the kind is its own, not an error code.
                    message = Some(format!("{msg} (kind {kind})"));
                }
            }
            other => message = text(other),
        }
        let message = message.unwrap_or_else(|| raw.to_string());
        Self {
            code,
            message,
            data,
            raw,
        }
    }

    /// The same error as a [`RpcError`], for relaying it onwards.
    pub fn to_rpc_error(&self) -> RpcError {
        RpcError {
            code: self.code.unwrap_or(codes::INTERNAL),
            message: self.message.clone(),
            data: self.data.clone(),
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} (code {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Text of a `str` (valid UTF-8 or not) or `bin` value, decoded lossily.
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(match s.as_str() {
            Some(s) => s.to_owned(),
            None => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        }),
        Value::Binary(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Why a call failed, as seen by the caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer answered with an error object.
    #[error("remote error: {0}")]
    Remote(Box<RemoteError>),
    /// The call's deadline passed before an answer came.
    #[error("deadline exceeded after {0:?}")]
    DeadlineExceeded(std::time::Duration),
    /// The request would be larger than the maximum message size.
    #[error("request of {size} bytes exceeds the maximum message size of {max} bytes")]
    FrameTooLarge { size: usize, max: usize },
    /// The connection closed before the answer came; the request may have been handled.
    #[error("connection to {addr} closed before the reply came")]
    Closed { addr: String },
    /// The request was never sent: no connection could be made or none was usable.
    #[error("{addr}: not sent: {reason}")]
    NotSent { addr: String, reason: String },
    /// No endpoint is available to take the call.
    #[error("no endpoint available: {0}")]
    Unavailable(String),
    /// The arguments could not be encoded.
    #[error("cannot encode arguments: {0}")]
    Encode(String),
    /// The answer could not be read as the expected type.
    #[error("cannot decode the result: {0}")]
    Decode(String),
    /// Connecting or configuring failed.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    /// A configuration value is wrong.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The error code when the peer answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Error::Remote(e) => e.code,
            Error::DeadlineExceeded(_) => Some(codes::DEADLINE_EXCEEDED),
            Error::FrameTooLarge { .. } => Some(codes::FRAME_TOO_LARGE),
            _ => None,
        }
    }

    /// True when the request provably never reached a server, so a retry cannot duplicate it.
    pub fn never_sent(&self) -> bool {
        matches!(self, Error::NotSent { .. } | Error::Unavailable(_))
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: Value, code: Option<i64>, message: &str) {
        let e = RemoteError::from_value(raw.clone());
        assert_eq!(e.code, code, "{raw}");
        assert_eq!(e.message, message, "{raw}");
        assert_eq!(e.raw, raw);
    }

    #[test]
    fn foreign_error_objects_are_read_not_rejected() {
        check(RpcError::new(5, "too big").to_value(), Some(5), "too big");
        check(Value::from("boom"), None, "boom");
        check(Value::Binary(b"bin boom".to_vec()), None, "bin boom");
        check(
            Value::Array(vec![Value::from("ValueError"), Value::from("bad")]),
            None,
            "ValueError: bad",
        );
        check(
            Value::Array(vec![Value::from(0), Value::from("E15")]),
            None,
            "E15 (kind 0)",
        );
        check(Value::from(42), None, "42");
        check(
            Value::Map(vec![(Value::from("error"), Value::from("x"))]),
            None,
            "{\"error\": \"x\"}",
        );
        check(
            crate::codec::tests::raw_str(&[0xff, b'a']),
            None,
            "\u{fffd}a",
        );
    }
}
