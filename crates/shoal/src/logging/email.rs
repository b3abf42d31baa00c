//! The email sink's [`Mailer`]: lines gathered in memory and sent by a background thread over
//! SMTP, at most one mail per interval, each mail carrying every line since the last one (up to
//! `max_lines` and [`MAX_BYTES`]).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};

use crate::config::{EmailSink, SmtpTls};

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The most text one mail carries (and so the most a mailer holds), besides `max_lines`: a
/// burst of long lines must not fill memory, nor make a mail that servers refuse.
pub(super) const MAX_BYTES: usize = 1 << 20;

/// Gathers lines and mails them from its own thread. Dropping it (or [`Mailer::close`]) sends
/// what is pending in a last mail, whatever the interval.
#[derive(Debug)]
pub(super) struct Mailer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// When the last mail went out. A mailer that a reload puts in place of another shares the
/// old one's, so that one mail per interval holds across the change: the old mailer's last
/// mail counts for the new one.
#[derive(Debug, Default)]
pub(super) struct LastSent(Mutex<Option<Instant>>);

impl LastSent {
    fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, at: Instant) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signals new lines and closing to the thread, and the thread's end to [`Mailer::close`].
    changed: Condvar,
    max_lines: usize,
    last_sent: Arc<LastSent>,
}

#[derive(Debug, Default)]
struct State {
    batch: Batch,
    closing: bool,
    done: bool,
}

/// The lines of the next mail: at most `max_lines` and [`MAX_BYTES`]; lines past either are
/// counted, not kept.
#[derive(Debug, Default)]
struct Batch {
    lines: Vec<String>,
    bytes: usize,
    left_out: usize,
}

impl Batch {
    fn push(&mut self, line: String, max_lines: usize) {
        // With the newline that joins it to the next.
        let bytes = line.len() + 1;
        if self.lines.len() < max_lines && self.bytes + bytes <= MAX_BYTES {
            self.bytes += bytes;
            self.lines.push(line);
        } else {
            self.left_out += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.left_out == 0
    }
}

/// What the thread needs to send a mail.
struct Post {
    transport: SmtpTransport,
    place: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject: String,
    interval: Duration,
    max_lines: usize,
}

impl Mailer {
    /// Starts the thread for `config`; `app` and `host` go into the default subject. The first
    /// mail waits an interval from `last_sent` (the replaced mailer's), or goes at once.
    pub(super) fn start(
        config: &EmailSink,
        app: &str,
        host: &str,
        last_sent: Arc<LastSent>,
    ) -> Result<Mailer, String> {
        let server = &config.server;
        let place = match server.tls {
            SmtpTls::Tls => format!("smtps://{}:{}", server.host, server.port),
            _ => format!("smtp://{}:{}", server.host, server.port),
        };
        let builder = match server.tls {
            SmtpTls::None => Ok(SmtpTransport::builder_dangerous(&server.host)),
            SmtpTls::StartTls => SmtpTransport::starttls_relay(&server.host),
            SmtpTls::Tls => SmtpTransport::relay(&server.host),
        };
        let mut builder = builder
            .map_err(|e| format!("cannot set up TLS for {place}: {e}"))?
            .port(server.port)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((user, password)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
        }
        // Validation parsed the mailboxes already.
        let mailbox = |text: &str| {
            text.parse::<Mailbox>()
                .map_err(|e| format!("invalid mailbox {text:?}: {e}"))
        };
        let post = Post {
            transport: builder.build(),
            place,
            from: mailbox(&config.from)?,
            to: config
                .to
                .iter()
                .map(|t| mailbox(t))
                .collect::<Result<_, _>>()?,
            subject: config
                .subject
                .clone()
                .unwrap_or_else(|| format!("[{app}] errors on {host}")),
            interval: config.interval,
            max_lines: config.max_lines,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            max_lines: config.max_lines,
            last_sent,
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("shoal-log-mail".into())
                .spawn(move || post.run(&shared))
                .map_err(|e| format!("cannot start the mail thread: {e}"))?
        };
        Ok(Mailer {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// When this mailer's last mail went out, for the mailer that replaces it.
    pub(super) fn last_sent(&self) -> Arc<LastSent> {
        self.shared.last_sent.clone()
    }

    /// Adds one formatted event (its trailing newline removed).
    pub(super) fn push(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = String::from_utf8_lossy(line).into_owned();
        self.shared.lock().batch.push(line, self.shared.max_lines);
        self.shared.changed.notify_all();
    }

    /// Sends what is pending and ends the thread, waiting up to `timeout` for that; later
    /// lines are not mailed.
    pub(super) fn close(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        state.closing = true;
        self.shared.changed.notify_all();
        while !state.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // The last resort, as for a failed send.
                eprintln!("shoal: the last log mail is still being sent; not waiting for it");
                return;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(state);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Mailer {
    /// Tells the thread to send what is pending and end, without waiting for it.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closing = true;
        if !state.batch.is_empty() {
            // The last mail goes out now: a mailer that takes over waits its interval from
            // here, even before that mail is through.
            self.shared.last_sent.set(Instant::now());
        }
        drop(state);
        self.shared.changed.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Post {
    fn run(self, shared: &Shared) {
        loop {
            let mut state = shared.lock();
            loop {
                let pending = !state.batch.is_empty();
                if state.closing {
                    break;
                }
                if pending {
                    // None until the first mail: the first error is mailed at once.
                    match shared.last_sent.get().map(|t| t + self.interval) {
                        None => break,
                        Some(due) => match due.checked_duration_since(Instant::now()) {
                            None => break,
                            Some(left) => {
                                state = shared
                                    .changed
                                    .wait_timeout(state, left)
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .0;
                            }
                        },
                    }
                } else {
                    state = shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            let batch = std::mem::take(&mut state.batch);
            let closing = state.closing;
            drop(state);
            if !batch.is_empty() {
                let sent = self.send(&batch);
                shared.last_sent.set(Instant::now());
                // On stderr, the last resort: the log is what failed (see `logging`'s docs).
                if let Err(e) = sent {
                    if closing {
                        eprintln!(
                            "shoal: cannot send the last log mail through {}: {e}; {} lines \
                             are lost",
                            self.place,
                            batch.lines.len() + batch.left_out
                        );
                    } else {
                        eprintln!(
                            "shoal: cannot send a log mail through {}: {e}; trying again in {}",
                            self.place,
                            humantime::format_duration(self.interval)
                        );
                        self.keep_for_later(shared, batch);
                    }
                }
            }
            if closing {
                break;
            }
        }
        shared.lock().done = true;
        shared.changed.notify_all();
    }

    /// Puts unsent lines back in front of the newer ones, within the limits.
    fn keep_for_later(&self, shared: &Shared, mut unsent: Batch) {
        let mut state = shared.lock();
        let newer = std::mem::take(&mut state.batch);
        for line in newer.lines {
            unsent.push(line, self.max_lines);
        }
        unsent.left_out += newer.left_out;
        state.batch = unsent;
    }

    fn send(&self, batch: &Batch) -> Result<(), String> {
        let mut text = batch.lines.join("\n");
        text.push('\n');
        if batch.left_out > 0 {
            text.push_str(&format!(
                "\n({} more lines were left out: a mail carries at most {} lines and {} MiB)\n",
                batch.left_out,
                self.max_lines,
                MAX_BYTES >> 20
            ));
        }
        // 7bit keeps ASCII log lines readable as they are (lettre's own choice would
        // quote-print every line over 76 characters); anything else is left to lettre.
        let body = Body::new_with_encoding(text, ContentTransferEncoding::SevenBit)
            .unwrap_or_else(Body::new);
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(&self.subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message.body(body).map_err(|e| e.to_string())?;
        self.transport
            .send(&message)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_lines_within_the_line_and_byte_limits() {
        let mut batch = Batch::default();
        for n in 0..5 {
            batch.push(format!("line {n}"), 3);
        }
        assert_eq!(batch.lines, ["line 0", "line 1", "line 2"]);
        assert_eq!(batch.left_out, 2);

        // Lines of 100 KiB (with their newline): ten fit in 1 MiB, the rest are counted.
        let mut batch = Batch::default();
        let long = "x".repeat((100 << 10) - 1);
        for _ in 0..12 {
            batch.push(long.clone(), 1000);
        }
        assert_eq!(batch.lines.len(), 10);
        assert_eq!(batch.left_out, 2);
        assert!(batch.bytes <= MAX_BYTES);
        // A short line that still fits goes in.
        batch.push("short".into(), 1000);
        assert_eq!(batch.lines.len(), 11);
        assert!(!batch.is_empty() && Batch::default().is_empty());
    }
}
