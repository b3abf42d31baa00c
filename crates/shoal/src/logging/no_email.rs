//! The email sink's stand-in in a build without the `email` feature: an email sink in the
//! configuration fails to start (naming its key and the feature), so no mailer ever exists.
//! The feature adds an SMTP client with TLS, about 0.7 MB of code a service that does not mail
//! need not carry.

use std::sync::Arc;
use std::time::Duration;

use crate::config::EmailSink;

/// When the last mail went out: nothing to remember without mail.
#[derive(Debug, Default)]
pub(super) struct LastSent;

/// No mailer can be made in this build.
#[derive(Debug)]
pub(super) enum Mailer {}

impl Mailer {
    pub(super) fn start(
        _config: &EmailSink,
        _app: &str,
        _host: &str,
        _last_sent: Arc<LastSent>,
    ) -> Result<Mailer, String> {
        Err(
            "this build of shoal has no email sink: turn on the shoal crate's `email` feature \
             (shoal = { features = [\"email\"] })"
                .into(),
        )
    }

    pub(super) fn last_sent(&self) -> Arc<LastSent> {
        match *self {}
    }

    pub(super) fn push(&self, _line: &[u8]) {
        match *self {}
    }

    pub(super) fn close(&self, _timeout: Duration) {
        match *self {}
    }
}
