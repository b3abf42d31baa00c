//! Logging: `tracing` events to the sinks `[log]` configures (console, rotating file, syslog,
//! email), each with its own level and format; a reload replaces the sinks in place.
//!
//! An application run as a process gets this subscriber installed by the runtime (unless the
//! process has one already). [`LogLayer`] is public so that tests and other programs (the
//! agent) can put the same sinks under their own `Registry`, and [`RotatingFile`] so that
//! anything can keep a rotated log.
//!
//! # Sinks
//!
//! With no `[[log.sinks]]` there is one console sink (stderr, text) at `log.level`. Each
//! `[[log.sinks]]` table has a `kind`, a `level` (a filter such as `"warn"` or
//! `"info,shoal_rpc=debug"`: a level for all targets and per target prefix; `log.level` when
//! unset, `"error"` for email) and a `format`, `"text"` (the `tracing_subscriber` line) or
//! `"json"` (one object per event).
//!
//! - `console`: standard error, coloured when it is a terminal.
//! - `file`: `path` (relative to the working directory), appended to, never truncated; it
//!   must be a regular file (a FIFO or a device there is refused, naming the path). It
//!   rotates before a record would take it past `rotate_size` (`"10MB"`, in powers of 1024;
//!   `"0"` = never by size) and at the first write after each local-time boundary of
//!   `rotate_every` (`"minute"`, `"hour"`, `"day"`; unset = never by time). Rotating renames
//!   `PATH` to `PATH.YYYYMMDDTHHMMSSZ` (UTC, so that names sort in rotation order across a
//!   change of summer time; `-1`, `-2`, … when taken or when the clock was set back) and opens
//!   a fresh `PATH`, so the active file's name never changes. A background thread gzips
//!   rotated files to `PATH.YYYYMMDDTHHMMSSZ.gz` (`compress`, default true) and keeps the
//!   newest `keep` (default 7). A `PATH` deleted or renamed by someone else is opened again
//!   within about a second. See [`RotatingFile`].
//! - `syslog`: one RFC 5424 datagram per event to `address`, a Unix datagram socket
//!   (`"/dev/log"`, `"unix:PATH"`) or `"udp://host:port"`:
//!   `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - - MSG`, where PRI = facility × 8 +
//!   severity (error 3, warn 4, info 6, debug and trace 7), `facility` is a name (`"user"` by
//!   default, `"daemon"`, `"local0"`, …), TIMESTAMP is local time with microseconds, APP-NAME
//!   is `app_name` (default the application's name), PROCID the pid, and MSG the text line
//!   without its timestamp and level (or the JSON object), cut to fit 8 KiB. A datagram the
//!   receiver cannot take at once is dropped and counted, never waited for.
//! - `email`: `from`, `to` (an array), `smtp` (`"smtp://host:port"`, with `starttls = true`
//!   to upgrade, or `"smtps://host:port"`), optional `username`/`password` (only over TLS:
//!   `smtps://` or `starttls`), `subject` (default `"[APP] errors on HOST"`). Lines are
//!   mailed by a background thread: when there are lines and `interval` (default `"5m"`) has
//!   passed since the last mail, one mail carries every line since the last one, so the first
//!   error goes out at once and later ones in batches at most one `interval` apart. A mail
//!   carries at most `max_lines` (1000) lines and 1 MiB of text, and says how many more were
//!   left out. A failed send is reported on stderr and its lines are tried again with the next
//!   mail. When the sink goes away (a reload that drops or changes it, or the application
//!   closing) the pending lines go out in a last mail at once; an email sink that a reload
//!   changes waits its `interval` from the old one's last mail.
//!
//! # Reload
//!
//! The new sinks are built while the new configuration is validated (a file that cannot be
//! opened rejects the reload, and the old sinks stay), then swapped in whole. A file, syslog
//! address or email sink whose settings stay the same is kept, not reopened: the mail interval
//! and the pending lines carry over. Records of crates that log through the `log` crate follow
//! the new levels too when `log` is bridged to `tracing` (as the runtime's subscriber does):
//! installing sinks sets `log`'s max level.
//!
//! # When the log itself fails
//!
//! A sink that cannot deliver (a full disk, a syslog socket gone, an SMTP server refusing)
//! says so on standard error itself, once per failure and once when it recovers. That is the
//! last resort and the only printing the library does besides `App::run`: reporting through
//! `tracing` would go back into the sinks that are failing.

#[cfg(feature = "email")]
mod email;
#[cfg(not(feature = "email"))]
#[path = "no_email.rs"]
mod email;
mod file;
mod sink;
mod syslog;

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{DefaultFields, JsonFields};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

pub(crate) use file::file_kind;
pub use file::{rotation_order, RotatingFile, Rotation, RotationOrder};

use crate::config::LogConfig;
use sink::Sink;

/// The `tracing` layer that writes events to the configured sinks. It sits directly on a
/// [`Registry`]:
///
/// ```no_run
/// use tracing_subscriber::layer::SubscriberExt;
///
/// # fn demo(config: &shoal::config::LogConfig) -> Result<(), shoal::logging::SinkError> {
/// let layer = shoal::logging::LogLayer::new(config, "hello")?;
/// let handle = layer.handle();
/// let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
/// tracing::warn!("to every sink at warn or below");
/// handle.reload(config)?;
/// # Ok(())
/// # }
/// ```
pub struct LogLayer {
    shared: Arc<Shared>,
}

/// Changes the sinks of a [`LogLayer`], from any thread.
#[derive(Clone)]
pub struct LogHandle {
    shared: Arc<Shared>,
}

/// A set of sinks built from a [`LogConfig`] by [`LogHandle::prepare`], not yet in force.
pub struct Sinks {
    sinks: Vec<Sink>,
}

/// A sink that cannot be set up (a file that cannot be opened, a syslog socket that is not
/// there), with the config key at fault: `log.sinks[1].path`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct SinkError {
    key: String,
    message: String,
}

impl SinkError {
    /// The key at fault, such as `log.sinks[1].path`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What went wrong, without the key.
    pub fn message(&self) -> &str {
        &self.message
    }
}

struct Shared {
    app: String,
    sinks: RwLock<Arc<Vec<Sink>>>,
}

impl LogLayer {
    /// Builds the sinks of `config` for the application `app` (the default syslog APP-NAME
    /// and mail subject).
    pub fn new(config: &LogConfig, app: &str) -> Result<LogLayer, SinkError> {
        let sinks = sink::build(config, app, &[])?;
        for sink in &sinks {
            sink.install();
        }
        Ok(LogLayer {
            shared: Arc::new(Shared {
                app: app.to_owned(),
                sinks: RwLock::new(Arc::new(sinks)),
            }),
        })
    }

    /// A handle that replaces this layer's sinks.
    pub fn handle(&self) -> LogHandle {
        LogHandle {
            shared: self.shared.clone(),
        }
    }
}

impl LogHandle {
    /// Builds the sinks of `config` without putting them in force: files are opened and
    /// sockets resolved now, so that a failure can reject a reload. Destinations the current
    /// sinks share are reused.
    pub fn prepare(&self, config: &LogConfig) -> Result<Sinks, SinkError> {
        let current = self.shared.current();
        let sinks = sink::build(config, &self.shared.app, &current)?;
        Ok(Sinks { sinks })
    }

    /// Puts `sinks` in force. Mail pending in a sink that is gone is sent at once.
    pub fn install(&self, sinks: Sinks) {
        for sink in &sinks.sinks {
            sink.install();
        }
        let old = std::mem::replace(
            &mut *self
                .shared
                .sinks
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            Arc::new(sinks.sinks),
        );
        // Which callsites are enabled, and the most verbose level, follow the new sinks.
        tracing::callsite::rebuild_interest_cache();
        // `log` records reach the sinks through tracing-log's LogTracer (installed with the
        // subscriber by `try_init`), but the `log` macros first check the `log` crate's own
        // max level, which `try_init` sets once: keep it in step, or a level raised here would
        // never see them. tracing's max level covers every subscriber in the process, so
        // another one's `log` records are not cut off.
        log::set_max_level(log_level(LevelFilter::current()));
        drop(old);
    }

    /// [`prepare`](LogHandle::prepare) then [`install`](LogHandle::install).
    pub fn reload(&self, config: &LogConfig) -> Result<(), SinkError> {
        let sinks = self.prepare(config)?;
        self.install(sinks);
        Ok(())
    }

    /// Sends the pending mail of every email sink and waits up to `timeout` for it; for the
    /// end of the process, after which nothing more is mailed.
    pub fn close(&self, timeout: Duration) {
        for sink in self.shared.current().iter() {
            sink.close(timeout);
        }
    }
}

impl Shared {
    fn current(&self) -> Arc<Vec<Sink>> {
        self.sinks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.current()
            .iter()
            .any(|s| s.filter.would_enable(meta.target(), meta.level()))
    }
}

/// Installs the subscriber for an application run as a process, unless the process has one
/// already (a test harness, or an application that set up its own): then None.
pub(crate) fn init(config: &LogConfig, app: &str) -> Result<Option<LogHandle>, SinkError> {
    if tracing::dispatcher::has_been_set() {
        return Ok(None);
    }
    let layer = LogLayer::new(config, app)?;
    let handle = layer.handle();
    Ok(tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .ok()
        .map(|()| handle))
}

/// `--check`'s look at the sinks, opening nothing: a file sink whose path holds something
/// other than a regular file (a FIFO, a directory) is an error naming the key and the path,
/// as it is at start. A missing file is fine: the start creates it.
pub(crate) fn check(config: &LogConfig) -> Result<(), SinkError> {
    for (i, sink) in config.sinks.iter().enumerate() {
        if let crate::config::SinkKind::File(file) = &sink.kind {
            file::check_path(&file.path).map_err(|e| SinkError {
                key: format!("log.sinks[{i}].path"),
                message: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// `level` for the `log` crate.
fn log_level(level: LevelFilter) -> log::LevelFilter {
    match level.into_level() {
        None => log::LevelFilter::Off,
        Some(Level::ERROR) => log::LevelFilter::Error,
        Some(Level::WARN) => log::LevelFilter::Warn,
        Some(Level::INFO) => log::LevelFilter::Info,
        Some(Level::DEBUG) => log::LevelFilter::Debug,
        Some(Level::TRACE) => log::LevelFilter::Trace,
    }
}

/// The host's name, for syslog frames and mail subjects.
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Each sink's `fmt` layer gets the events its filter passes. Span fields are formatted here,
/// once per span for text and for JSON, rather than by the sinks' layers: those would each add
/// a span's recorded values to the one shared copy again, and a console layer writing colours
/// would put them in the file's copy too.
impl Layer<Registry> for LogLayer {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.shared.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, Registry>) -> bool {
        self.shared.enabled(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let most = self
            .shared
            .current()
            .iter()
            .filter_map(|s| <Targets as Filter<Registry>>::max_level_hint(&s.filter))
            .max()
            .unwrap_or(LevelFilter::OFF);
        Some(most)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, Registry>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let mut text = FormattedFields::<DefaultFields>::new(String::new());
        if DefaultFields::new()
            .format_fields(text.as_writer(), attrs)
            .is_ok()
        {
            extensions.insert(text);
        }
        let mut json = FormattedFields::<JsonFields>::new(String::new());
        if JsonFields::new()
            .format_fields(json.as_writer(), attrs)
            .is_ok()
        {
            extensions.insert(json);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, Registry>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(text) = extensions.get_mut::<FormattedFields<DefaultFields>>() {
            let _ = DefaultFields::new().add_fields(text, values);
        }
        if let Some(json) = extensions.get_mut::<FormattedFields<JsonFields>>() {
            let _ = JsonFields::new().add_fields(json, values);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, Registry>) {
        let meta = event.metadata();
        for sink in self.shared.current().iter() {
            if sink.filter.would_enable(meta.target(), meta.level()) {
                sink.layer.on_event(event, ctx.clone());
            }
        }
    }
}

impl fmt::Debug for LogLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLayer")
            .field("app", &self.shared.app)
            .field("sinks", &self.shared.current().len())
            .finish()
    }
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("app", &self.shared.app)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Sinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sinks")
            .field("count", &self.sinks.len())
            .finish()
    }
}
