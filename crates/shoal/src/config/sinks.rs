//! The `[[log.sinks]]` tables: where log events go (console, file, syslog, email), each with
//! its own level and format, validated into [`SinkConfig`]s whose errors name
//! `log.sinks[N].key`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{describe, ConfigError, Document};
use crate::logging::Rotation;
use crate::timer::Unit;

/// One `[[log.sinks]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// `level`: the sink's own filter; None = `log.level` (`"error"` for an email sink).
    pub level: Option<String>,
    /// `format`: `"text"` (the default) or `"json"`.
    pub format: LogFormat,
    /// `kind` and the keys that go with it.
    pub kind: SinkKind,
}

/// How a sink writes an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `tracing_subscriber`'s full text line.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// `kind`: where a sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    /// `"console"`: standard error.
    Console,
    /// `"file"`: a rotating file.
    File(FileSink),
    /// `"syslog"`: RFC 5424 datagrams.
    Syslog(SyslogSink),
    /// `"email"`: batched mails over SMTP.
    Email(EmailSink),
}

/// `kind = "file"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSink {
    /// `path`: the active file; relative paths are relative to the working directory.
    pub path: PathBuf,
    /// `rotate_size` ("10MB"; "0" = none; at most 1024GB), `rotate_every` (none), `keep` (0 to
    /// 1000; 7), `compress` (true).
    pub rotation: Rotation,
}

/// `kind = "syslog"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSink {
    /// `address`: a Unix datagram socket (`"/dev/log"`, `"unix:PATH"`) or `"udp://host:port"`.
    pub address: SyslogAddress,
    /// `facility` ("user").
    pub facility: Facility,
    /// `app_name`: the APP-NAME field; None = the application's name.
    pub app_name: Option<String>,
}

/// Where syslog datagrams go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SyslogAddress {
    /// A Unix datagram socket, such as `/dev/log`.
    Unix(PathBuf),
    /// `host:port`, over UDP.
    Udp(String),
}

/// A syslog facility (RFC 5424 section 6.2.1), 0 (`kern`) to 23 (`local7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

/// `kind = "email"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSink {
    /// `smtp`: `"smtp://host[:port]"` (port 25, or 587 with `starttls`) or
    /// `"smtps://host[:port]"` (TLS from the start; port 465).
    pub server: SmtpServer,
    /// `username` and `password`, when the server wants them; only over TLS (`smtps://` or
    /// `starttls`).
    pub credentials: Option<(String, Secret)>,
    /// `from`: a mailbox, `"ops@example.com"` or `"Ops <ops@example.com>"`.
    pub from: String,
    /// `to`: one mailbox or more.
    pub to: Vec<String>,
    /// `subject`: None = `"[APP] errors on HOST"`.
    pub subject: Option<String>,
    /// `interval`: at most one mail per interval (above zero, at most 24h; "5m").
    pub interval: Duration,
    /// `max_lines`: lines in one mail at most (1 to 100,000); the mail says how many more were
    /// left out (1000).
    pub max_lines: usize,
}

/// An SMTP server and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtp://`: plain text.
    None,
    /// `smtp://` with `starttls = true`: upgraded before anything is sent, or not sent.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Tls,
}

/// A password: compared and cloned like a string, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(super::REDACTED)
    }
}

/// The facility names, in code order.
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// The facility names accepted in `facility`: codes 12 to 15 have no common name.
const FACILITY_NAMES: &str = "kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, \
                              authpriv, ftp, local0 to local7";

impl Facility {
    /// `user`, the default.
    pub const USER: Facility = Facility(1);

    /// The facility called `name` (`"daemon"`, `"local3"`).
    pub fn from_name(name: &str) -> Option<Facility> {
        let code = FACILITIES
            .iter()
            .position(|&f| f == name)
            .filter(|&code| !(12..16).contains(&code))?;
        u8::try_from(code).ok().map(Facility)
    }

    /// The numeric code, 0 to 23.
    pub fn code(self) -> u8 {
        self.0
    }
}

impl Default for Facility {
    fn default() -> Self {
        Facility::USER
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(FACILITIES[usize::from(self.0)])
    }
}

/// `keep`: rotated files kept, 0 to 1000.
const KEEP: std::ops::RangeInclusive<usize> = 0..=1000;
/// `max_lines`: lines in one mail, 1 to 100,000.
const MAX_LINES: std::ops::RangeInclusive<usize> = 1..=100_000;
/// `rotate_size`: at most 1 TiB.
const MAX_ROTATE_SIZE: u64 = 1 << 40;

const KINDS: &str = r#"expected "console", "file", "syslog" or "email""#;
const COMMON: &[&str] = &["kind", "level", "format"];
const FILE_KEYS: &[&str] = &["path", "rotate_size", "rotate_every", "keep", "compress"];
const SYSLOG_KEYS: &[&str] = &["address", "facility", "app_name"];
const EMAIL_KEYS: &[&str] = &[
    "smtp",
    "starttls",
    "username",
    "password",
    "from",
    "to",
    "subject",
    "interval",
    "max_lines",
];

/// Reads `log.sinks`: None when unset.
pub(super) fn read_sinks(doc: &Document) -> Result<Vec<SinkConfig>, ConfigError> {
    let Some(value) = doc.get("log.sinks") else {
        return Ok(Vec::new());
    };
    let items = value.as_array().ok_or_else(|| {
        doc.error_at(
            "log.sinks",
            format!(
                "expected an array of tables ([[log.sinks]] with kind = \"console\", …), got {}",
                describe(value)
            ),
        )
    })?;
    (0..items.len())
        .map(|i| Sink::new(doc, i).and_then(Sink::read))
        .collect()
}

/// One `[[log.sinks]]` element while it is read.
struct Sink<'a> {
    doc: &'a Document,
    prefix: String,
    table: &'a toml::Table,
}

impl<'a> Sink<'a> {
    fn new(doc: &'a Document, i: usize) -> Result<Sink<'a>, ConfigError> {
        let prefix = format!("log.sinks[{i}]");
        match doc.get(&prefix) {
            Some(toml::Value::Table(table)) => Ok(Sink { doc, prefix, table }),
            other => Err(doc.error_at(
                &prefix,
                format!(
                    "expected a table with kind = \"console\", \"file\", \"syslog\" or \
                     \"email\", got {}",
                    other.map_or("nothing".to_owned(), describe)
                ),
            )),
        }
    }

    fn read(self) -> Result<SinkConfig, ConfigError> {
        let kind = match self.table.get("kind") {
            None => return Err(self.error("kind", format!("missing; {KINDS}"))),
            Some(value) => match value.as_str() {
                Some(kind @ ("console" | "file" | "syslog" | "email")) => kind,
                _ => return Err(self.error("kind", format!("{KINDS}, got {value}"))),
            },
        };
        let own: &[&str] = match kind {
            "file" => FILE_KEYS,
            "syslog" => SYSLOG_KEYS,
            "email" => EMAIL_KEYS,
            _ => &[],
        };
        if let Some(unknown) = self
            .table
            .keys()
            .find(|k| !COMMON.contains(&k.as_str()) && !own.contains(&k.as_str()))
        {
            let known: Vec<&str> = COMMON.iter().chain(own).copied().collect();
            return Err(self.error(
                unknown,
                format!("unknown key; a {kind} sink takes {}", known.join(", ")),
            ));
        }
        let level = self.optional("level", super::runtime::log_filter)?;
        let format = self
            .optional("format", |v| match v.as_str() {
                Some("text") => Ok(LogFormat::Text),
                Some("json") => Ok(LogFormat::Json),
                _ => Err(format!(r#"expected "text" or "json", got {v}"#)),
            })?
            .unwrap_or_default();
        let kind = match kind {
            "file" => SinkKind::File(self.file()?),
            "syslog" => SinkKind::Syslog(self.syslog()?),
            "email" => SinkKind::Email(self.email()?),
            _ => SinkKind::Console,
        };
        Ok(SinkConfig {
            level,
            format,
            kind,
        })
    }

    fn file(&self) -> Result<FileSink, ConfigError> {
        let d = Rotation::default();
        let path = self.required("path", "path = \"app.log\"", |v| {
            v.as_str()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| format!("expected a file path like \"app.log\", got {v}"))
        })?;
        Ok(FileSink {
            path,
            rotation: Rotation {
                max_size: self
                    .optional("rotate_size", size)?
                    .map_or(d.max_size, Some)
                    .filter(|&n| n > 0),
                every: self.optional("rotate_every", |v| match v.as_str() {
                    Some("minute") => Ok(Unit::Minute),
                    Some("hour") => Ok(Unit::Hour),
                    Some("day") => Ok(Unit::Day),
                    _ => Err(format!(r#"expected "minute", "hour" or "day", got {v}"#)),
                })?,
                keep: self
                    .optional("keep", |v| {
                        v.as_integer()
                            .and_then(|n| usize::try_from(n).ok())
                            .filter(|n| KEEP.contains(n))
                            .ok_or_else(|| {
                                format!(
                                    "expected how many rotated files to keep, from {} to {}, \
                                     got {v}",
                                    KEEP.start(),
                                    KEEP.end()
                                )
                            })
                    })?
                    .unwrap_or(d.keep),
                compress: self.optional("compress", boolean)?.unwrap_or(d.compress),
            },
        })
    }

    fn syslog(&self) -> Result<SyslogSink, ConfigError> {
        Ok(SyslogSink {
            address: self.required("address", "address = \"/dev/log\"", syslog_address)?,
            facility: self
                .optional("facility", |v| {
                    v.as_str().and_then(Facility::from_name).ok_or_else(|| {
                        format!("expected a syslog facility ({FACILITY_NAMES}), got {v}")
                    })
                })?
                .unwrap_or_default(),
            app_name: self.optional("app_name", |v| {
                v.as_str()
                    .filter(|s| {
                        (1..=48).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
                    })
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        format!(
                            "expected 1 to 48 printable ASCII characters without spaces, got {v}"
                        )
                    })
            })?,
        })
    }

    fn email(&self) -> Result<EmailSink, ConfigError> {
        let (tls, host, port) = self.required("smtp", "smtp = \"smtp://host:25\"", smtp_url)?;
        let starttls = self.optional("starttls", boolean)?.unwrap_or(false);
        let tls = match (tls, starttls) {
            (SmtpTls::Tls, true) => {
                return Err(self.error(
                    "starttls",
                    "starttls upgrades a plain smtp:// connection; an smtps:// one is TLS \
                     already: remove starttls or use smtp://",
                ))
            }
            (SmtpTls::None, true) => SmtpTls::StartTls,
            (tls, _) => tls,
        };
        let port = port.unwrap_or(match tls {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        });
        let username = self.optional("username", string)?;
        let password = self.optional("password", string)?;
        let credentials = match (username, password) {
            (Some(user), Some(password)) => Some((user, Secret(password))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.error("password", "missing; a username needs a password"))
            }
            (None, Some(_)) => {
                return Err(self.error("username", "missing; a password needs a username"))
            }
        };
        if credentials.is_some() && tls == SmtpTls::None {
            return Err(self.error(
                "username",
                "the username and password would cross the network in clear text over \
                 smtp://: set starttls = true, or use smtps://",
            ));
        }
        let to = self.required("to", "to = [\"ops@example.com\"]", |v| {
            let expected =
                || format!("expected an array of mailboxes like [\"ops@example.com\"], got {v}");
            let items = v
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(expected)?;
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .ok_or_else(expected)
                        .and_then(|s| mailbox(s, v))
                })
                .collect()
        })?;
        Ok(EmailSink {
            server: SmtpServer { host, port, tls },
            credentials,
            from: self.required("from", "from = \"app@example.com\"", |v| {
                v.as_str()
                    .ok_or_else(|| format!("expected a mailbox like \"app@example.com\", got {v}"))
                    .and_then(|s| mailbox(s, v))
            })?,
            to,
            subject: self.optional("subject", string)?,
            interval: self
                .optional("interval", super::runtime::positive_duration)?
                .unwrap_or(Duration::from_secs(300)),
            max_lines: self
                .optional("max_lines", |v| {
                    v.as_integer()
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|n| MAX_LINES.contains(n))
                        .ok_or_else(|| {
                            format!(
                                "expected an integer from {} to {}, got {v}",
                                MAX_LINES.start(),
                                MAX_LINES.end()
                            )
                        })
                })?
                .unwrap_or(1000),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn error(&self, name: &str, message: impl Into<String>) -> ConfigError {
        self.doc.error_at(&self.key(name), message)
    }

    fn optional<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&toml::Value) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.table
            .get(name)
            .map(|v| parse(v).map_err(|message| self.error(name, message)))
            .transpose()
    }

    fn required<T>(
        &self,
        name: &str,
        example: &str,
        parse: impl FnOnce(&toml::Value) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let kind = self.table.get("kind").and_then(toml::Value::as_str);
        self.optional(name, parse)?.ok_or_else(|| {
            self.error(
                name,
                format!("missing; a {} sink needs {example}", kind.unwrap_or("")),
            )
        })
    }
}

fn string(value: &toml::Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("expected a string, got {}", describe(value)))
}

fn boolean(value: &toml::Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("expected true or false, got {value}"))
}

/// `"10MB"`, `"512K"`, `1048576`: bytes, with units in powers of 1024.
fn size(value: &toml::Value) -> Result<u64, String> {
    let expected = || {
        format!(
            "expected a size like \"10MB\" (B, KB, MB or GB, in powers of 1024) of at most \
             1024GB, or \"0\" for no size rotation, got {value}"
        )
    };
    let bytes = match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => parse_size(s),
        _ => None,
    };
    bytes.filter(|&n| n <= MAX_ROTATE_SIZE).ok_or_else(expected)
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let unit = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(unit)
}

fn syslog_address(value: &toml::Value) -> Result<SyslogAddress, String> {
    let expected = || {
        format!(
            "expected a Unix datagram socket (\"/dev/log\", \"unix:PATH\") or \
             \"udp://host:port\", got {value}"
        )
    };
    let text = value
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(expected)?;
    if let Some(addr) = text.strip_prefix("udp://") {
        let (host, port) = addr.rsplit_once(':').ok_or_else(expected)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(expected());
        }
        return Ok(SyslogAddress::Udp(addr.to_owned()));
    }
    if text.contains("://") {
        return Err(expected());
    }
    let path = text.strip_prefix("unix:").unwrap_or(text);
    if path.is_empty() {
        return Err(expected());
    }
    Ok(SyslogAddress::Unix(PathBuf::from(path)))
}

/// `smtp://host[:port]` or `smtps://host[:port]`; `[v6]` hosts in brackets.
fn smtp_url(value: &toml::Value) -> Result<(SmtpTls, String, Option<u16>), String> {
    let expected =
        || format!("expected \"smtp://host:port\" or \"smtps://host:port\", got {value}");
    let text = value.as_str().ok_or_else(expected)?;
    let (tls, rest) = if let Some(rest) = text.strip_prefix("smtp://") {
        (SmtpTls::None, rest)
    } else if let Some(rest) = text.strip_prefix("smtps://") {
        (SmtpTls::Tls, rest)
    } else {
        return Err(expected());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => {
            (host, Some(port.parse::<u16>().map_err(|_| expected())?))
        }
        _ => (rest, None),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(expected());
    }
    Ok((tls, host.to_owned(), port))
}

fn mailbox(text: &str, value: &toml::Value) -> Result<String, String> {
    text.parse::<lettre::message::Mailbox>()
        .map(|_| text.to_owned())
        .map_err(|e| format!("expected a mailbox like \"ops@example.com\", got {value}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("app.toml"), Vec::new())
    }

    fn sinks(text: &str) -> Vec<SinkConfig> {
        match load(text) {
            Ok(config) => config.runtime().log.sinks.clone(),
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn every_kind_is_read() {
        let text = r#"
[log]
level = "debug"

[[log.sinks]]
kind = "console"

[[log.sinks]]
kind = "file"
path = "logs/app.log"
level = "warn,shoal_rpc=info"
format = "json"
rotate_size = "64KB"
rotate_every = "hour"
keep = 3
compress = false

[[log.sinks]]
kind = "syslog"
address = "udp://127.0.0.1:514"
facility = "local3"
app_name = "calc"

[[log.sinks]]
kind = "syslog"
address = "unix:/run/log.sock"

[[log.sinks]]
kind = "email"
smtp = "smtp://mail.example.com"
starttls = true
username = "app"
password = "hunter2"
from = "App <app@example.com>"
to = ["ops@example.com", "dev@example.com"]
subject = "trouble"
interval = "1m"
max_lines = 50
"#;
        let expected = vec![
            SinkConfig {
                level: None,
                format: LogFormat::Text,
                kind: SinkKind::Console,
            },
            SinkConfig {
                level: Some("warn,shoal_rpc=info".into()),
                format: LogFormat::Json,
                kind: SinkKind::File(FileSink {
                    path: PathBuf::from("logs/app.log"),
                    rotation: Rotation {
                        max_size: Some(64 << 10),
                        every: Some(Unit::Hour),
                        keep: 3,
                        compress: false,
                    },
                }),
            },
            SinkConfig {
                level: None,
                format: LogFormat::Text,
                kind: SinkKind::Syslog(SyslogSink {
                    address: SyslogAddress::Udp("127.0.0.1:514".into()),
                    facility: Facility::from_name("local3").unwrap(),
                    app_name: Some("calc".into()),
                }),
            },
            SinkConfig {
                level: None,
                format: LogFormat::Text,
                kind: SinkKind::Syslog(SyslogSink {
                    address: SyslogAddress::Unix(PathBuf::from("/run/log.sock")),
                    facility: Facility::USER,
                    app_name: None,
                }),
            },
            SinkConfig {
                level: None,
                format: LogFormat::Text,
                kind: SinkKind::Email(EmailSink {
                    server: SmtpServer {
                        host: "mail.example.com".into(),
                        port: 587,
                        tls: SmtpTls::StartTls,
                    },
                    credentials: Some(("app".into(), Secret("hunter2".into()))),
                    from: "App <app@example.com>".into(),
                    to: vec!["ops@example.com".into(), "dev@example.com".into()],
                    subject: Some("trouble".into()),
                    interval: Duration::from_secs(60),
                    max_lines: 50,
                }),
            },
        ];
        assert_eq!(sinks(text), expected);
        assert_eq!(Facility::from_name("local3").unwrap().code(), 19);
        assert_eq!(Facility::from_name("local3").unwrap().to_string(), "local3");
    }

    #[test]
    fn unset_keys_take_their_defaults() {
        assert_eq!(sinks(""), Vec::new());
        let text = r#"
[[log.sinks]]
kind = "file"
path = "app.log"
[[log.sinks]]
kind = "file"
path = "b.log"
rotate_size = "0"
[[log.sinks]]
kind = "syslog"
address = "/dev/log"
[[log.sinks]]
kind = "email"
smtp = "smtps://[::1]"
from = "a@example.com"
to = ["b@example.com"]
"#;
        let got = sinks(text);
        let SinkKind::File(file) = &got[0].kind else {
            panic!("{got:?}")
        };
        assert_eq!(file.rotation, Rotation::default());
        assert_eq!(file.rotation.max_size, Some(10 << 20));
        let SinkKind::File(file) = &got[1].kind else {
            panic!("{got:?}")
        };
        assert_eq!(file.rotation.max_size, None);
        let SinkKind::Syslog(syslog) = &got[2].kind else {
            panic!("{got:?}")
        };
        assert_eq!(syslog.address, SyslogAddress::Unix("/dev/log".into()));
        assert_eq!(syslog.facility, Facility::USER);
        let SinkKind::Email(email) = &got[3].kind else {
            panic!("{got:?}")
        };
        assert_eq!(
            email.server,
            SmtpServer {
                host: "::1".into(),
                port: 465,
                tls: SmtpTls::Tls
            }
        );
        assert_eq!(email.interval, Duration::from_secs(300));
        assert_eq!(email.max_lines, 1000);
        assert_eq!(
            (email.credentials.as_ref(), email.subject.as_ref()),
            (None, None)
        );
        assert!(got
            .iter()
            .all(|s| s.level.is_none() && s.format == LogFormat::Text));

        for (size, bytes) in [
            ("512", 512),
            ("2K", 2048),
            ("3 MiB", 3 << 20),
            ("1gb", 1 << 30),
        ] {
            assert_eq!(parse_size(size), Some(bytes), "{size}");
        }
        assert_eq!(parse_size("10XB"), None);
        assert_eq!(parse_size("MB"), None);
    }

    #[test]
    fn bad_sinks_name_file_line_key_and_what_is_expected() {
        let sink = |body: &str| {
            format!("[log]\nlevel = \"info\"\n\n[[log.sinks]]\nkind = \"console\"\n\n[[log.sinks]]\n{body}\n")
        };
        let cases = [
            (
                sink("kind = \"kafka\""),
                r#"app.toml:8: key `log.sinks[1].kind`: expected "console", "file", "syslog" or "email", got "kafka""#,
            ),
            (
                sink("level = \"warn\""),
                r#"app.toml:7: key `log.sinks[1].kind`: missing; expected "console", "file", "syslog" or "email""#,
            ),
            (
                sink("kind = \"syslog\"\naddress = \"/dev/log\"\nfacility = \"local9\""),
                "app.toml:10: key `log.sinks[1].facility`: expected a syslog facility (kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, local0 to local7), got \"local9\"",
            ),
            (
                sink("kind = \"file\""),
                r#"app.toml:7: key `log.sinks[1].path`: missing; a file sink needs path = "app.log""#,
            ),
            (
                sink("kind = \"file\"\npath = \"a.log\"\nlevel = \"shoal=loud\""),
                r#"app.toml:10: key `log.sinks[1].level`: expected a log filter like "info" or "info,shoal_rpc=debug", got "shoal=loud": error parsing level filter: expected one of "off", "error", "warn", "info", "debug", "trace", or a number 0-5"#,
            ),
            (
                sink("kind = \"file\"\npath = \"a.log\"\nrotate_size = \"big\""),
                r#"app.toml:10: key `log.sinks[1].rotate_size`: expected a size like "10MB" (B, KB, MB or GB, in powers of 1024) of at most 1024GB, or "0" for no size rotation, got "big""#,
            ),
            (
                sink("kind = \"file\"\npath = \"a.log\"\nrotate_every = \"week\""),
                r#"app.toml:10: key `log.sinks[1].rotate_every`: expected "minute", "hour" or "day", got "week""#,
            ),
            (
                sink("kind = \"file\"\npath = \"a.log\"\nkeep = -1"),
                "app.toml:10: key `log.sinks[1].keep`: expected how many rotated files to keep, from 0 to 1000, got -1",
            ),
            (
                sink("kind = \"file\"\npath = \"a.log\"\naddress = \"/dev/log\""),
                "app.toml:10: key `log.sinks[1].address`: unknown key; a file sink takes kind, level, format, path, rotate_size, rotate_every, keep, compress",
            ),
            (
                sink("kind = \"console\"\nformat = \"xml\""),
                r#"app.toml:9: key `log.sinks[1].format`: expected "text" or "json", got "xml""#,
            ),
            (
                sink("kind = \"syslog\"\naddress = \"tcp://host:514\""),
                r#"app.toml:9: key `log.sinks[1].address`: expected a Unix datagram socket ("/dev/log", "unix:PATH") or "udp://host:port", got "tcp://host:514""#,
            ),
            (
                sink("kind = \"syslog\"\naddress = \"udp://host\""),
                r#"app.toml:9: key `log.sinks[1].address`: expected a Unix datagram socket ("/dev/log", "unix:PATH") or "udp://host:port", got "udp://host""#,
            ),
            (
                sink("kind = \"syslog\"\naddress = \"/dev/log\"\napp_name = \"my app\""),
                r#"app.toml:10: key `log.sinks[1].app_name`: expected 1 to 48 printable ASCII characters without spaces, got "my app""#,
            ),
            (
                sink("kind = \"email\"\nsmtp = \"http://x\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]"),
                r#"app.toml:9: key `log.sinks[1].smtp`: expected "smtp://host:port" or "smtps://host:port", got "http://x""#,
            ),
            (
                sink("kind = \"email\"\nsmtp = \"smtps://x\"\nstarttls = true\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]"),
                "app.toml:10: key `log.sinks[1].starttls`: starttls upgrades a plain smtp:// connection; an smtps:// one is TLS already: remove starttls or use smtp://",
            ),
            (
                sink("kind = \"email\"\nsmtp = \"smtp://x\"\nfrom = \"a@b.c\"\nto = []"),
                r#"app.toml:11: key `log.sinks[1].to`: expected an array of mailboxes like ["ops@example.com"], got []"#,
            ),
            (
                sink("kind = \"email\"\nsmtp = \"smtp://x\"\nto = [\"d@e.f\"]"),
                r#"app.toml:7: key `log.sinks[1].from`: missing; a email sink needs from = "app@example.com""#,
            ),
            (
                sink("kind = \"email\"\nsmtp = \"smtp://x\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\npassword = \"p\""),
                "app.toml:7: key `log.sinks[1].username`: missing; a password needs a username",
            ),
            (
                sink("kind = \"email\"\nsmtp = \"smtp://x\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nusername = \"u\"\npassword = \"p\""),
                "app.toml:12: key `log.sinks[1].username`: the username and password would cross the network in clear text over smtp://: set starttls = true, or use smtps://",
            ),
            (
                sink("kind = \"email\"\nsmtp = \"smtp://x\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\ninterval = \"0s\""),
                r#"app.toml:12: key `log.sinks[1].interval`: expected a duration above zero like "30s", at most 24h, got "0s""#,
            ),
            (
                "[log]\nsinks = \"console\"".to_owned(),
                "app.toml:2: key `log.sinks`: expected an array of tables ([[log.sinks]] with kind = \"console\", …), got a string",
            ),
            (
                "[log]\nsinks = [1]".to_owned(),
                r#"app.toml:2: key `log.sinks[0]`: expected a table with kind = "console", "file", "syslog" or "email", got an integer"#,
            ),
            (
                "[log]\nlevel = \"info\"\nsink = []".to_owned(),
                "app.toml:3: key `log.sink`: unknown key; [log] takes level, sinks",
            ),
        ];
        for (text, expected) in cases {
            match load(&text) {
                Ok(config) => panic!("{text} loaded: {config:?}"),
                Err(e) => assert_eq!(e.to_string(), expected, "{text}"),
            }
        }
    }

    #[test]
    fn the_mail_password_is_never_shown() {
        let text = r#"
[[log.sinks]]
kind = "email"
smtp = "smtps://x"
from = "a@b.c"
to = ["d@e.f"]
username = "app"
password = "hunter2"
"#;
        let config = load(text).unwrap();
        let shown = format!("{config:?} {:?}", config.redacted());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let explained = config.explain();
        let password = explained
            .iter()
            .find(|e| e.key == "log.sinks[0].password")
            .unwrap();
        assert_eq!(password.value.as_str(), Some("<redacted>"));
    }
}
