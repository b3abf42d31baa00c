//! The email sink's [`Mailer`]: lines gathered in memory and sent by a background thread over
//! SMTP, at most one mail per interval, each mail carrying every line since the last one.

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

/// Gathers lines and mails them from its own thread. Dropping it (or [`Mailer::close`]) sends
/// what is pending in a last mail, whatever the interval.
#[derive(Debug)]
pub(super) struct Mailer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signals new lines and closing to the thread, and the thread's end to [`Mailer::close`].
    changed: Condvar,
    max_lines: usize,
}

#[derive(Debug, Default)]
struct State {
    lines: Vec<String>,
    /// Lines past `max_lines` since the last mail, counted but not kept.
    left_out: usize,
    closing: bool,
    done: bool,
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
    /// Starts the thread for `config`; `app` and `host` go into the default subject.
    pub(super) fn start(config: &EmailSink, app: &str, host: &str) -> Result<Mailer, String> {
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

    /// Adds one formatted event (its trailing newline removed).
    pub(super) fn push(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut state = self.shared.lock();
        if state.lines.len() < self.shared.max_lines {
            state.lines.push(String::from_utf8_lossy(line).into_owned());
        } else {
            state.left_out += 1;
        }
        drop(state);
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
        self.shared.lock().closing = true;
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
        // None until the first mail: the first error is mailed at once.
        let mut last_sent: Option<Instant> = None;
        loop {
            let mut state = shared.lock();
            loop {
                let pending = !state.lines.is_empty() || state.left_out > 0;
                if state.closing {
                    break;
                }
                if pending {
                    match last_sent.map(|t| t + self.interval) {
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
            let lines = std::mem::take(&mut state.lines);
            let left_out = std::mem::take(&mut state.left_out);
            let closing = state.closing;
            drop(state);
            if !lines.is_empty() || left_out > 0 {
                let sent = self.send(&lines, left_out);
                last_sent = Some(Instant::now());
                if let Err(e) = sent {
                    if closing {
                        eprintln!(
                            "shoal: cannot send the last log mail through {}: {e}; {} lines \
                             are lost",
                            self.place,
                            lines.len() + left_out
                        );
                    } else {
                        eprintln!(
                            "shoal: cannot send a log mail through {}: {e}; trying again in {}",
                            self.place,
                            humantime::format_duration(self.interval)
                        );
                        self.keep_for_later(shared, lines, left_out);
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

    /// Puts unsent lines back in front of the newer ones, within `max_lines`.
    fn keep_for_later(&self, shared: &Shared, mut lines: Vec<String>, left_out: usize) {
        let mut state = shared.lock();
        lines.append(&mut state.lines);
        let over = lines.len().saturating_sub(self.max_lines);
        lines.truncate(self.max_lines);
        state.lines = lines;
        state.left_out += left_out + over;
    }

    fn send(&self, lines: &[String], left_out: usize) -> Result<(), String> {
        let mut text = lines.join("\n");
        text.push('\n');
        if left_out > 0 {
            text.push_str(&format!(
                "\n({left_out} more lines were left out: a mail carries at most {})\n",
                self.max_lines
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
