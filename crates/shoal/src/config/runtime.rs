//! The runtime's own keys (`[rpc]`, `[admin]`, `[services]`, `[shutdown]`, `[control]`,
//! `[watchdog]`, `[summary]`, `[log]`, `[metrics]`, `[monitor]`, `[status]`, `[workers]`): their
//! defaults, and their validation into [`RuntimeConfig`]. Other top-level tables belong to
//! the services.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use shoal_rpc::Addr;

use super::keys;
use super::sinks::{self, SinkConfig};
use super::{describe, ConfigError, Document, Source};

/// The runtime's settings, validated; every field is at its default when its key is unset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeConfig {
    pub rpc: RpcConfig,
    pub admin: AdminConfig,
    pub services: ServicesConfig,
    pub shutdown: ShutdownConfig,
    pub control: ControlConfig,
    pub watchdog: WatchdogConfig,
    pub summary: SummaryConfig,
    pub log: LogConfig,
    pub workers: WorkersConfig,
    pub metrics: MetricsConfig,
    pub monitor: MonitorConfig,
    pub status: StatusConfig,
}

/// `[rpc]`: the RPC listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcConfig {
    /// `listen`: `host:port` or `unix:PATH`; None = no RPC listener.
    pub listen: Option<Addr>,
    /// `max_message`: the largest message accepted, in bytes (1024 to 1 GiB; 16 MiB).
    pub max_message: usize,
    /// `max_in_flight`: calls served at once on one connection (1 to 1,000,000; 1024).
    pub max_in_flight: usize,
    /// `blocking_threads`: threads for blocking handlers (1 to 4096; 64).
    pub blocking_threads: usize,
    /// `processes`: process mode, N worker processes serving the listener (0 to 1024; 0 = serve
    /// in this process; 0).
    pub processes: usize,
    /// `max_unsent`: bytes of replies queued for a peer that has not taken them, past which
    /// the server stops reading from it (64 KiB to 1 GiB; 4 MiB).
    pub max_unsent: usize,
    /// `max_values`: values one incoming message may hold (1024 to 268,435,456; 1,048,576).
    pub max_values: usize,
    /// `stall_timeout`: a connection that left a message half sent, or took none of our
    /// bytes, for this long is closed (above zero, at most 24h; 30s).
    pub stall_timeout: Duration,
    /// `idle_timeout`: a connection with nothing read or written and no call in progress for
    /// this long is closed (above zero, at most 24h; 10m).
    pub idle_timeout: Duration,
    /// `max_connections`: connections the listener keeps open at once; more are closed as
    /// they come (1 to 1,000,000; 4096).
    pub max_connections: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            listen: None,
            max_message: 16 << 20,
            max_in_flight: 1024,
            blocking_threads: 64,
            processes: 0,
            max_unsent: shoal_rpc::conn::DEFAULT_MAX_UNSENT,
            max_values: shoal_rpc::codec::DEFAULT_MAX_VALUES,
            stall_timeout: shoal_rpc::conn::DEFAULT_STALL_TIMEOUT,
            idle_timeout: shoal_rpc::server::DEFAULT_IDLE_TIMEOUT,
            max_connections: shoal_rpc::server::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `[admin]`: the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminConfig {
    /// `listen`: `unix:PATH` only, so that file permissions guard it; None = no admin socket.
    pub listen: Option<PathBuf>,
}

/// `[services]`: which of the registered services this process runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServicesConfig {
    /// `enabled`: service names; None = all registered services.
    pub enabled: Option<Vec<String>>,
}

/// `[shutdown]`: graceful close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// `grace`: how long in-flight work may take to drain (0s to 24h; 10s).
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: Duration::from_secs(10),
        }
    }
}

/// `[control]`: zero-downtime re-exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// `handover_timeout`: how long a re-executed binary has to become ready (above zero, at
    /// most 24h; 30s).
    pub handover_timeout: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            handover_timeout: Duration::from_secs(30),
        }
    }
}

/// `[watchdog]`: heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchdogConfig {
    /// `timeout`: no heartbeat for this long ends the process (above zero, at most 24h); None
    /// (unset) = off. "0s" is refused, as it is for `monitor.every` and `summary.every`.
    pub timeout: Option<Duration>,
}

/// `[summary]`: the periodic summary log line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SummaryConfig {
    /// `every`: "minute", "hour", "day" or a duration above zero, at most 24h; None (unset) = a
    /// summary only at close.
    pub every: Option<Period>,
}

/// How often the summary is logged: at minute, hour or day boundaries, or every duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Minute,
    Hour,
    Day,
    Every(Duration),
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `level`: a filter like `info` or `info,shoal_rpc=debug` ("info"), for the sinks that
    /// set none of their own.
    pub level: String,
    /// `[[log.sinks]]`: where events go; none = one console sink (stderr, text) at `level`.
    pub sinks: Vec<SinkConfig>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            sinks: Vec::new(),
        }
    }
}

/// `[workers]`: group sizes that replace the ones the setup declares, `NAME = COUNT` (0 to
/// 1024).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkersConfig {
    pub counts: Vec<(String, usize)>,
}

impl WorkersConfig {
    /// The configured size of group `name`, if the configuration sets one.
    pub fn count(&self, name: &str) -> Option<usize> {
        self.counts.iter().find(|(n, _)| n == name).map(|(_, c)| *c)
    }
}

/// `[metrics]`: the Prometheus exporter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// `listen`: `host:port` to serve `GET /metrics` on over HTTP; None = no exporter (the
    /// metrics are still answered by `shoal.metrics`).
    pub listen: Option<String>,
}

/// `[status]`: what `shoal.status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusConfig {
    /// `public_config`: whether `shoal.status` on the RPC port carries the (redacted)
    /// configuration; the admin socket's always does (false).
    pub public_config: bool,
}

/// `[monitor]`: the status snapshot published on a ZeroMQ PUB socket (see `shoal::monitor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// `publish`: where to bind the PUB socket; None = no feed.
    pub publish: Option<MonitorAddr>,
    /// `every`: how often a snapshot goes out (above zero, at most 24h; 10s).
    pub every: Duration,
    /// `format`: how the snapshot is encoded ("msgpack").
    pub format: MonitorFormat,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            publish: None,
            every: Duration::from_secs(10),
            format: MonitorFormat::Msgpack,
        }
    }
}

/// A ZeroMQ endpoint the monitor feed binds: `tcp://HOST:PORT` (HOST an IPv4 address, an IPv6
/// address in brackets, a host name, or `*` for every interface; port 0 picks a free port) or
/// `ipc://PATH` (a Unix socket). It displays as ZeroMQ spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorAddr {
    /// `host` without brackets; `*` is read as `0.0.0.0`.
    Tcp {
        host: String,
        port: u16,
    },
    Ipc(PathBuf),
}

impl std::str::FromStr for MonitorAddr {
    type Err = String;

    /// Parses an endpoint; the error says what is wrong with it, or is empty when it is not
    /// of either form at all.
    fn from_str(text: &str) -> Result<MonitorAddr, String> {
        if let Some(rest) = text.strip_prefix("tcp://") {
            let (host, port) = rest.rsplit_once(':').ok_or("no port")?;
            let port = port
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| port.parse::<u16>().ok())
                .flatten()
                .ok_or_else(|| format!("the port {port:?} is not a number from 0 to 65535"))?;
            let host = match host {
                "*" => "0.0.0.0".to_owned(),
                _ if host.starts_with('[') && host.ends_with(']') => {
                    let inner = &host[1..host.len() - 1];
                    inner
                        .parse::<std::net::Ipv6Addr>()
                        .map_err(|_| format!("{host} is not an IPv6 address"))?;
                    inner.to_owned()
                }
                _ if !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
                {
                    host.to_owned()
                }
                _ => {
                    return Err(format!(
                        "the host {host:?} is not an IP address, [IPv6 address], host name or *"
                    ))
                }
            };
            Ok(MonitorAddr::Tcp { host, port })
        } else if let Some(path) = text.strip_prefix("ipc://") {
            match path {
                "" => Err("no path".to_owned()),
                "*" => Err("a wildcard path is not supported".to_owned()),
                _ if path.starts_with('@') => {
                    Err("abstract sockets (@NAME) are not supported".to_owned())
                }
                _ => Ok(MonitorAddr::Ipc(PathBuf::from(path))),
            }
        } else {
            Err(String::new())
        }
    }
}

impl std::fmt::Display for MonitorAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MonitorAddr::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            MonitorAddr::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            MonitorAddr::Ipc(path) => write!(f, "ipc://{}", path.display()),
        }
    }
}

/// The encoding of a published snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorFormat {
    /// `"msgpack"`: a MessagePack map with the field names of `shoal.status`.
    Msgpack,
    /// `"json"`: a JSON object with the same fields, UTF-8.
    Json,
}

impl MonitorFormat {
    /// As the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MonitorFormat::Msgpack => "msgpack",
            MonitorFormat::Json => "json",
        }
    }
}

/// The runtime's tables and the keys each one takes.
const TABLES: &[(&str, &[&str])] = &[
    (
        "rpc",
        &[
            "listen",
            "max_message",
            "max_in_flight",
            "blocking_threads",
            "processes",
            "max_unsent",
            "max_values",
            "stall_timeout",
            "idle_timeout",
            "max_connections",
        ],
    ),
    ("admin", &["listen"]),
    ("services", &["enabled"]),
    ("shutdown", &["grace"]),
    ("control", &["handover_timeout"]),
    ("watchdog", &["timeout"]),
    ("summary", &["every"]),
    ("log", &["level", "sinks"]),
    ("metrics", &["listen"]),
    ("monitor", &["publish", "every", "format"]),
    ("status", &["public_config"]),
];

impl RuntimeConfig {
    /// Validates the runtime's keys in `doc`; the first bad one is the error.
    pub(super) fn from_document(doc: &Document) -> Result<RuntimeConfig, ConfigError> {
        for (name, known) in TABLES {
            check_table(doc, name, known)?;
        }
        let d = RuntimeConfig::default();
        Ok(RuntimeConfig {
            rpc: RpcConfig {
                listen: read(doc, "rpc.listen", rpc_addr)?,
                max_message: read(doc, "rpc.max_message", |v| {
                    integer(v, MAX_MESSAGE, "a size in bytes")
                })?
                .unwrap_or(d.rpc.max_message),
                max_in_flight: read(doc, "rpc.max_in_flight", |v| {
                    integer(v, MAX_IN_FLIGHT, "an integer")
                })?
                .unwrap_or(d.rpc.max_in_flight),
                blocking_threads: read(doc, "rpc.blocking_threads", |v| {
                    integer(v, BLOCKING_THREADS, "an integer")
                })?
                .unwrap_or(d.rpc.blocking_threads),
                processes: read(doc, "rpc.processes", |v| {
                    integer(v, PROCESSES, "a number of processes")
                })?
                .unwrap_or(d.rpc.processes),
                max_unsent: read(doc, "rpc.max_unsent", |v| {
                    integer(v, MAX_UNSENT, "a size in bytes")
                })?
                .unwrap_or(d.rpc.max_unsent),
                max_values: read(doc, "rpc.max_values", |v| {
                    integer(v, MAX_VALUES, "a number of values")
                })?
                .unwrap_or(d.rpc.max_values),
                stall_timeout: read(doc, "rpc.stall_timeout", positive_duration)?
                    .unwrap_or(d.rpc.stall_timeout),
                idle_timeout: read(doc, "rpc.idle_timeout", positive_duration)?
                    .unwrap_or(d.rpc.idle_timeout),
                max_connections: read(doc, "rpc.max_connections", |v| {
                    integer(v, MAX_CONNECTIONS, "a number of connections")
                })?
                .unwrap_or(d.rpc.max_connections),
            },
            admin: AdminConfig {
                listen: read(doc, "admin.listen", admin_socket)?,
            },
            services: ServicesConfig {
                enabled: read(doc, "services.enabled", service_names)?,
            },
            shutdown: ShutdownConfig {
                grace: read(doc, "shutdown.grace", duration)?.unwrap_or(d.shutdown.grace),
            },
            control: ControlConfig {
                handover_timeout: read(doc, "control.handover_timeout", positive_duration)?
                    .unwrap_or(d.control.handover_timeout),
            },
            watchdog: WatchdogConfig {
                timeout: read(doc, "watchdog.timeout", |v| {
                    positive_duration(v)
                        .map_err(|e| format!("{e}; leave watchdog.timeout unset for no watchdog"))
                })?,
            },
            summary: SummaryConfig {
                every: read(doc, "summary.every", period)?,
            },
            log: LogConfig {
                level: read(doc, "log.level", log_filter)?.unwrap_or(d.log.level),
                sinks: sinks::read_sinks(doc)?,
            },
            workers: worker_counts(doc)?,
            metrics: MetricsConfig {
                listen: read(doc, "metrics.listen", metrics_addr)?,
            },
            monitor: MonitorConfig {
                publish: read(doc, "monitor.publish", zmq_endpoint)?,
                every: read(doc, "monitor.every", positive_duration)?.unwrap_or(d.monitor.every),
                format: read(doc, "monitor.format", monitor_format)?.unwrap_or(d.monitor.format),
            },
            status: StatusConfig {
                public_config: read(doc, "status.public_config", boolean)?
                    .unwrap_or(d.status.public_config),
            },
        })
    }
}

/// `[workers]`: every key a group name, every value a count.
fn worker_counts(doc: &Document) -> Result<WorkersConfig, ConfigError> {
    let mut counts = Vec::new();
    match doc.table.get("workers") {
        None => {}
        Some(toml::Value::Table(table)) => {
            for (name, value) in table {
                let key = keys::child("workers", name);
                let count = integer(value, WORKERS, "a number of workers for the group")
                    .map_err(|message| doc.error_at(&key, message))?;
                counts.push((name.clone(), count));
            }
        }
        Some(other) => {
            return Err(doc.error_at(
                "workers",
                format!(
                    "expected a table of worker group sizes ([workers] NAME = COUNT), got {}",
                    describe(other)
                ),
            ))
        }
    }
    Ok(WorkersConfig { counts })
}

/// Writes the runtime keys that have a default and are unset into `doc`, in their config
/// spelling, so the effective config shows them; their source is [`Source::Default`].
pub(super) fn fill_defaults(doc: &mut Document) {
    let d = RuntimeConfig::default();
    let defaults = [
        ("rpc", "max_message", count(d.rpc.max_message)),
        ("rpc", "max_in_flight", count(d.rpc.max_in_flight)),
        ("rpc", "blocking_threads", count(d.rpc.blocking_threads)),
        ("rpc", "processes", count(d.rpc.processes)),
        ("rpc", "max_unsent", count(d.rpc.max_unsent)),
        ("rpc", "max_values", count(d.rpc.max_values)),
        ("rpc", "stall_timeout", spelled(d.rpc.stall_timeout)),
        ("rpc", "idle_timeout", spelled(d.rpc.idle_timeout)),
        ("rpc", "max_connections", count(d.rpc.max_connections)),
        ("shutdown", "grace", spelled(d.shutdown.grace)),
        (
            "control",
            "handover_timeout",
            spelled(d.control.handover_timeout),
        ),
        ("log", "level", toml::Value::String(d.log.level)),
        ("monitor", "every", spelled(d.monitor.every)),
        (
            "monitor",
            "format",
            toml::Value::String(d.monitor.format.as_str().to_owned()),
        ),
    ];
    for (table, key, value) in defaults {
        let entry = doc
            .table
            .entry(table)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        // Validation has made every runtime entry a table.
        if let toml::Value::Table(entry) = entry {
            if !entry.contains_key(key) {
                entry.insert(key.to_owned(), value);
                doc.sources.insert(keys::child(table, key), Source::Default);
            }
        }
    }
}

/// Unknown keys in a runtime table are typos, not settings for someone else.
fn check_table(doc: &Document, name: &str, known: &[&str]) -> Result<(), ConfigError> {
    match doc.table.get(name) {
        None => Ok(()),
        Some(toml::Value::Table(table)) => {
            match table.keys().find(|k| !known.contains(&k.as_str())) {
                Some(unknown) => Err(doc.error_at(
                    &keys::child(name, unknown),
                    format!("unknown key; [{name}] takes {}", known.join(", ")),
                )),
                None => Ok(()),
            }
        }
        Some(other) => Err(doc.error_at(
            name,
            format!(
                "expected a table of runtime settings ([{name}]), got {}",
                describe(other)
            ),
        )),
    }
}

/// The value at `key` through `parse`, or None when the key is unset.
fn read<T>(
    doc: &Document,
    key: &str,
    parse: impl FnOnce(&toml::Value) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    doc.get(key)
        .map(|value| parse(value).map_err(|message| doc.error_at(key, message)))
        .transpose()
}

fn rpc_addr(value: &toml::Value) -> Result<Addr, String> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("expected host:port or unix:PATH, got {value}"))
}

fn admin_socket(value: &toml::Value) -> Result<PathBuf, String> {
    match value.as_str().map(str::parse::<Addr>) {
        Some(Ok(Addr::Unix(path))) => Ok(path),
        Some(Ok(Addr::Tcp(_))) => Err(format!(
            "the admin socket must be a Unix socket (unix:PATH) so that file permissions guard \
             who may control the service, got {value}"
        )),
        _ => Err(format!("expected unix:PATH, got {value}")),
    }
}

fn metrics_addr(value: &toml::Value) -> Result<String, String> {
    match value.as_str().map(str::parse::<Addr>) {
        Some(Ok(Addr::Tcp(host_port))) => Ok(host_port),
        Some(Ok(Addr::Unix(_))) => Err(format!(
            "the metrics exporter serves HTTP on TCP: expected host:port like \"127.0.0.1:9464\", \
             got {value}"
        )),
        _ => Err(format!(
            "expected host:port like \"127.0.0.1:9464\", got {value}"
        )),
    }
}

/// `rpc.max_message`: 1 KiB to 1 GiB.
const MAX_MESSAGE: RangeInclusive<usize> = 1024..=1 << 30;
/// `rpc.max_in_flight`: 1 to a million calls (the limit is a semaphore's permits).
const MAX_IN_FLIGHT: RangeInclusive<usize> = 1..=1_000_000;
/// `rpc.blocking_threads`: 1 to 4096 threads.
const BLOCKING_THREADS: RangeInclusive<usize> = 1..=4096;
/// `rpc.max_unsent`: 64 KiB to 1 GiB.
const MAX_UNSENT: RangeInclusive<usize> = 64 << 10..=1 << 30;
/// `rpc.max_values`: 1024 to 256 Mi values (a message of the largest size holds at most one
/// value per byte).
const MAX_VALUES: RangeInclusive<usize> = 1024..=1 << 28;
/// `rpc.max_connections`: 1 to a million connections (a semaphore's permits).
const MAX_CONNECTIONS: RangeInclusive<usize> = 1..=1_000_000;
/// `rpc.processes`: 0 to 1024 processes.
const PROCESSES: RangeInclusive<usize> = 0..=1024;
/// `workers.NAME`: 0 to 1024 workers in a group.
const WORKERS: RangeInclusive<usize> = 0..=1024;
/// The longest any runtime duration may be: a day. Durations are added to clock readings
/// (deadlines, next ticks), which a value like "300000000000y" overflows.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// [`MAX_DURATION`] as messages and documentation write it.
const MAX_DURATION_TEXT: &str = "24h";

fn integer(value: &toml::Value, range: RangeInclusive<usize>, what: &str) -> Result<usize, String> {
    value
        .as_integer()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            format!(
                "expected {what} from {} to {}, got {value}",
                range.start(),
                range.end()
            )
        })
}

/// A duration from zero to [`MAX_DURATION`].
fn duration(value: &toml::Value) -> Result<Duration, String> {
    value
        .as_str()
        .and_then(|s| humantime::parse_duration(s).ok())
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| {
            format!("expected a duration like \"10s\", at most {MAX_DURATION_TEXT}, got {value}")
        })
}

/// A duration above zero and at most [`MAX_DURATION`].
pub(super) fn positive_duration(value: &toml::Value) -> Result<Duration, String> {
    duration(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!(
                "expected a duration above zero like \"30s\", at most {MAX_DURATION_TEXT}, got \
                 {value}"
            )
        })
}

fn period(value: &toml::Value) -> Result<Period, String> {
    match value.as_str() {
        Some("minute") => Ok(Period::Minute),
        Some("hour") => Ok(Period::Hour),
        Some("day") => Ok(Period::Day),
        _ => positive_duration(value).map(Period::Every).map_err(|_| {
            format!(
                "expected \"minute\", \"hour\", \"day\" or a duration above zero like \"15m\", \
                 at most {MAX_DURATION_TEXT}, got {value}"
            )
        }),
    }
}

fn service_names(value: &toml::Value) -> Result<Vec<String>, String> {
    value
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| format!("expected an array of service names like [\"hello\"], got {value}"))
}

/// A level for all targets and per target prefix, as `tracing_subscriber`'s `Targets` reads
/// it: each sink filters with one.
pub(super) fn log_filter(value: &toml::Value) -> Result<String, String> {
    let expected = "expected a log filter like \"info\" or \"info,shoal_rpc=debug\"";
    let text = value
        .as_str()
        .ok_or_else(|| format!("{expected}, got {value}"))?;
    match text.parse::<tracing_subscriber::filter::Targets>() {
        Ok(_) => Ok(text.to_owned()),
        Err(e) => Err(format!("{expected}, got {value}: {e}")),
    }
}

/// `monitor.publish`: checked here, so that a typo is a configuration error rather than a
/// bind that fails (and is retried) forever.
fn zmq_endpoint(value: &toml::Value) -> Result<MonitorAddr, String> {
    let expected = "expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH";
    value
        .as_str()
        .ok_or_else(String::new)
        .and_then(|text| text.parse::<MonitorAddr>())
        .map_err(|why| match why.is_empty() {
            true => format!("{expected}, got {value}"),
            false => format!("{expected}, got {value} ({why})"),
        })
}

fn boolean(value: &toml::Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("expected true or false, got {value}"))
}

fn monitor_format(value: &toml::Value) -> Result<MonitorFormat, String> {
    match value.as_str() {
        Some("msgpack") => Ok(MonitorFormat::Msgpack),
        Some("json") => Ok(MonitorFormat::Json),
        _ => Err(format!("expected \"msgpack\" or \"json\", got {value}")),
    }
}

fn count(n: usize) -> toml::Value {
    toml::Value::Integer(i64::try_from(n).expect("default counts are small"))
}

/// A duration as the config writes it: "10s".
fn spelled(d: Duration) -> toml::Value {
    toml::Value::String(humantime::format_duration(d).to_string())
}
