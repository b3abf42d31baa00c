//! One sink: its level filter, its `fmt` layer (text or JSON), and the writer that takes each
//! formatted event, whole, to the console, a file, a syslog socket or the mailer.

use std::collections::VecDeque;
use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{Layer, Registry};

use super::email::{LastSent, Mailer};
use super::file::{RotatingFile, Rotation};
use super::syslog::{Framer, SyslogSocket};
use super::SinkError;
use crate::config::{EmailSink, LogConfig, LogFormat, SinkConfig, SinkKind, SyslogAddress};

/// A sink ready to take events.
pub(super) struct Sink {
    pub(super) filter: Targets,
    pub(super) layer: Box<dyn Layer<Registry> + Send + Sync>,
    pub(super) out: Out,
}

/// Where a sink's records go. The stateful ones are shared with the sink set a reload
/// replaces when their settings stay the same, so a reload reopens no file and does not reset
/// the mail interval.
#[derive(Clone)]
pub(super) enum Out {
    Console,
    File {
        file: RotatingFile,
        /// Applied to `file` when the set is installed (a shared file keeps the settings in
        /// force until then).
        rotation: Rotation,
    },
    Syslog {
        socket: Arc<SyslogSocket>,
        address: SyslogAddress,
        framer: Arc<Framer>,
    },
    Email {
        mailer: Arc<Mailer>,
        config: EmailSink,
    },
}

/// The sinks `config` asks for, sharing destinations with `previous` where their settings are
/// the same.
pub(super) fn build(
    config: &LogConfig,
    app: &str,
    previous: &[Sink],
) -> Result<Vec<Sink>, SinkError> {
    if config.sinks.is_empty() {
        let filter = targets(&config.level, "log.level")?;
        return Ok(vec![sink(filter, LogFormat::Text, Out::Console)]);
    }
    // When the mailers of the current email sinks that the new set does not keep last mailed,
    // in order: each new mailer takes the next, so that a reload that changes the mail
    // settings does not mail at once beside the old mailer's last mail.
    let mut mail_clocks: VecDeque<Arc<LastSent>> = previous
        .iter()
        .filter_map(|sink| match &sink.out {
            Out::Email {
                mailer,
                config: old,
            } => {
                let kept = config
                    .sinks
                    .iter()
                    .any(|s| matches!(&s.kind, SinkKind::Email(e) if e == old));
                (!kept).then(|| mailer.last_sent())
            }
            _ => None,
        })
        .collect();
    let mut built: Vec<Sink> = Vec::with_capacity(config.sinks.len());
    for (i, sink_config) in config.sinks.iter().enumerate() {
        let key = |name: &str| format!("log.sinks[{i}].{name}");
        let level = match (&sink_config.level, &sink_config.kind) {
            (Some(level), _) => level.as_str(),
            (None, SinkKind::Email(_)) => "error",
            (None, _) => config.level.as_str(),
        };
        let level_key = match sink_config.level {
            Some(_) => key("level"),
            None => "log.level".to_owned(),
        };
        let filter = targets(level, &level_key)?;
        let known = || previous.iter().chain(built.iter()).map(|s| &s.out);
        let out = open(sink_config, app, known, &mut mail_clocks).map_err(|(name, message)| {
            SinkError {
                key: key(name),
                message,
            }
        })?;
        built.push(sink(filter, sink_config.format, out));
    }
    Ok(built)
}

/// The destination of one sink: a shared one, or a new one (a new mailer takes over the first
/// of `mail_clocks`). The error names the key at fault.
fn open<'a, I: Iterator<Item = &'a Out>>(
    config: &SinkConfig,
    app: &str,
    known: impl Fn() -> I,
    mail_clocks: &mut VecDeque<Arc<LastSent>>,
) -> Result<Out, (&'static str, String)> {
    Ok(match &config.kind {
        SinkKind::Console => Out::Console,
        SinkKind::File(f) => {
            let shared = known().find_map(|out| match out {
                Out::File { file, .. } if file.path() == f.path => Some(file.clone()),
                _ => None,
            });
            let file = match shared {
                Some(file) => file,
                None => RotatingFile::open(&f.path, f.rotation.clone())
                    .map_err(|e| ("path", format!("cannot open {}: {e}", f.path.display())))?,
            };
            Out::File {
                file,
                rotation: f.rotation.clone(),
            }
        }
        SinkKind::Syslog(s) => {
            let shared = known().find_map(|out| match out {
                Out::Syslog {
                    socket, address, ..
                } if *address == s.address => Some(socket.clone()),
                _ => None,
            });
            let socket = match shared {
                Some(socket) => socket,
                None => Arc::new(
                    SyslogSocket::open(&s.address).map_err(|e| ("address", e.to_string()))?,
                ),
            };
            Out::Syslog {
                socket,
                address: s.address.clone(),
                framer: Arc::new(Framer::new(
                    s.facility,
                    s.app_name.as_deref().unwrap_or(app),
                )),
            }
        }
        SinkKind::Email(e) => {
            let shared = known().find_map(|out| match out {
                Out::Email { mailer, config } if config == e => Some(mailer.clone()),
                _ => None,
            });
            let mailer = match shared {
                Some(mailer) => mailer,
                None => {
                    let last_sent = mail_clocks.pop_front().unwrap_or_default();
                    Arc::new(
                        Mailer::start(e, app, &super::hostname(), last_sent)
                            .map_err(|m| ("smtp", m))?,
                    )
                }
            };
            Out::Email {
                mailer,
                config: e.clone(),
            }
        }
    })
}

impl Sink {
    /// Puts settings that belong to a shared destination in force.
    pub(super) fn install(&self) {
        if let Out::File { file, rotation } = &self.out {
            file.set_rotation(rotation.clone());
        }
    }

    /// Sends pending mail, waiting up to `timeout`.
    pub(super) fn close(&self, timeout: Duration) {
        if let Out::Email { mailer, .. } = &self.out {
            mailer.close(timeout);
        }
    }
}

fn targets(level: &str, key: &str) -> Result<Targets, SinkError> {
    level.parse().map_err(|e| SinkError {
        key: key.to_owned(),
        message: format!("invalid log filter {level:?}: {e}"),
    })
}

fn sink(filter: Targets, format: LogFormat, out: Out) -> Sink {
    let ansi = matches!(out, Out::Console) && io::stderr().is_terminal();
    // A syslog frame has its own timestamp and severity.
    let bare = matches!(out, Out::Syslog { .. });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(SinkWriter(out.clone()))
        .with_ansi(ansi);
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match (format, bare) {
        (LogFormat::Text, false) => Box::new(fmt),
        (LogFormat::Text, true) => Box::new(fmt.without_time().with_level(false)),
        (LogFormat::Json, false) => Box::new(fmt.json()),
        (LogFormat::Json, true) => Box::new(fmt.json().without_time()),
    };
    Sink { filter, layer, out }
}

/// The `fmt` layer's writer: one [`Record`] per event.
struct SinkWriter(Out);

impl<'a> MakeWriter<'a> for SinkWriter {
    type Writer = Record<'a>;

    fn make_writer(&'a self) -> Record<'a> {
        Record {
            out: &self.0,
            level: Level::INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Record<'a> {
        Record {
            out: &self.0,
            level: *meta.level(),
            buf: Vec::new(),
        }
    }
}

/// One formatted event, gathered and then delivered whole when dropped, however many writes
/// the formatter made.
struct Record<'a> {
    out: &'a Out,
    level: Level,
    buf: Vec<u8>,
}

impl Write for Record<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.out {
            Out::Console => {
                let _ = io::stderr().lock().write_all(&self.buf);
            }
            // Failures are reported by the file, once.
            Out::File { file, .. } => {
                let _ = file.write_record(&self.buf);
            }
            Out::Syslog { socket, framer, .. } => {
                socket.send(&framer.frame(self.level, &self.buf));
            }
            Out::Email { mailer, .. } => mailer.push(&self.buf),
        }
    }
}
