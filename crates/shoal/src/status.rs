//! What `shoal.status` answers: who the process is, what happened to it last (reload, error,
//! summary), its effective configuration with secrets redacted, and per-method call counts.
//! The types are `shoal_api::status`'s, re-exported here, so a reader decodes them without the
//! runtime; the records are kept in a `Recorder`, which every part of the runtime writes to.

use std::sync::Mutex;

pub use shoal_api::status::{
    ErrorRecord, MethodCount, ReloadRecord, ServiceState, Status, SummaryRecord,
};

/// The mutable part of status, shared by the runtime's tasks.
#[derive(Debug)]
pub(crate) struct Recorder {
    inner: Mutex<Records>,
}

#[derive(Debug, Clone)]
pub(crate) struct Records {
    pub state: ServiceState,
    pub last_reload: Option<ReloadRecord>,
    pub last_error: Option<ErrorRecord>,
    pub errors: u64,
    pub last_summary: Option<SummaryRecord>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Records {
                state: ServiceState::Starting,
                last_reload: None,
                last_error: None,
                errors: 0,
                last_summary: None,
            }),
        }
    }

    pub(crate) fn read(&self) -> Records {
        self.lock().clone()
    }

    pub(crate) fn set_state(&self, state: ServiceState) {
        self.lock().state = state;
    }

    pub(crate) fn error(&self, record: ErrorRecord) {
        let mut records = self.lock();
        records.errors += 1;
        records.last_error = Some(record);
    }

    pub(crate) fn reload(&self, record: ReloadRecord) {
        self.lock().last_reload = Some(record);
    }

    pub(crate) fn summary(&self, record: SummaryRecord) {
        self.lock().last_summary = Some(record);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The causes of `error`, outermost first, one per line.
pub(crate) fn trace_of(error: &(dyn std::error::Error + 'static)) -> String {
    let mut lines = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        lines.push(format!("caused by: {cause}"));
        source = cause.source();
    }
    lines.join("\n")
}
