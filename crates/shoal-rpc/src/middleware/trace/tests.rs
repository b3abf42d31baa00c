//! Tests for [`Trace`](super::Trace): a subscriber that records spans and events shows which
//! span each event fell in and with which fields.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{service_fn, Layer, ServiceExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use super::*;
use crate::middleware::tests::request;

type Fields = BTreeMap<&'static str, String>;

/// What the subscriber saw of one event: its level, the fields of the span it fell in
/// (empty outside any span) and its own fields, `message` included.
#[derive(Debug, PartialEq)]
struct Seen {
    level: Level,
    span: Fields,
    fields: Fields,
}

#[derive(Default)]
struct State {
    spans: Vec<Fields>,
    entered: Vec<usize>,
    events: Vec<Seen>,
}

/// A subscriber that keeps everything; span ids are indexes into `spans` plus one.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<State>>);

struct FieldsVisitor<'a>(&'a mut Fields);

impl Visit for FieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = Fields::from([("span", attrs.metadata().name().to_owned())]);
        attrs.record(&mut FieldsVisitor(&mut fields));
        let mut state = self.0.lock().unwrap();
        state.spans.push(fields);
        Id::from_u64(state.spans.len() as u64)
    }

    fn record(&self, id: &Id, values: &Record<'_>) {
        let mut state = self.0.lock().unwrap();
        values.record(&mut FieldsVisitor(
            &mut state.spans[id.into_u64() as usize - 1],
        ));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut FieldsVisitor(&mut fields));
        let mut state = self.0.lock().unwrap();
        let span = state
            .entered
            .last()
            .map(|&i| state.spans[i].clone())
            .unwrap_or_default();
        state.events.push(Seen {
            level: *event.metadata().level(),
            span,
            fields,
        });
    }

    fn enter(&self, id: &Id) {
        self.0
            .lock()
            .unwrap()
            .entered
            .push(id.into_u64() as usize - 1);
    }

    fn exit(&self, id: &Id) {
        let mut state = self.0.lock().unwrap();
        let index = id.into_u64() as usize - 1;
        if let Some(at) = state.entered.iter().rposition(|&i| i == index) {
            state.entered.remove(at);
        }
    }
}

fn seen(level: Level, method: &str, fields: &[(&'static str, &str)]) -> Seen {
    Seen {
        level,
        span: Fields::from([("span", "rpc".to_owned()), ("method", method.to_owned())]),
        fields: fields.iter().map(|&(k, v)| (k, v.to_owned())).collect(),
    }
}

#[tokio::test(start_paused = true)]
async fn each_call_gets_a_span_and_its_outcome_is_logged_in_it() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());
    let inner = service_fn(|req: Request| {
        tracing::trace!("called");
        async move {
            match req.method.as_str() {
                "ok" => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    tracing::info!(step = "handler", "working");
                    Reply::encode("fine")
                }
                "bad" => Err(RpcError::invalid_params("wants a number")),
                _ => Err(RpcError::internal("disk on fire")),
            }
        }
    });
    let svc = TraceLayer::new().layer(inner);
    for method in ["ok", "bad", "broken"] {
        let _ = svc.clone().oneshot(request(method)).await;
    }
    // An event after the calls is outside every span: the span was exited each time.
    tracing::info!("after");

    let events = std::mem::take(&mut recorder.0.lock().unwrap().events);
    let expected = [
        seen(Level::TRACE, "ok", &[("message", "called")]),
        seen(
            Level::INFO,
            "ok",
            &[("message", "working"), ("step", "handler")],
        ),
        seen(
            Level::DEBUG,
            "ok",
            &[("message", "call succeeded"), ("elapsed_us", "25000")],
        ),
        seen(Level::TRACE, "bad", &[("message", "called")]),
        seen(
            Level::DEBUG,
            "bad",
            &[
                ("message", "call failed"),
                ("code", "2"),
                ("error", "wants a number"),
                ("elapsed_us", "0"),
            ],
        ),
        seen(Level::TRACE, "broken", &[("message", "called")]),
        seen(
            Level::WARN,
            "broken",
            &[
                ("message", "call failed"),
                ("code", "6"),
                ("error", "disk on fire"),
                ("elapsed_us", "0"),
            ],
        ),
        Seen {
            level: Level::INFO,
            span: Fields::new(),
            fields: Fields::from([("message", "after".to_owned())]),
        },
    ];
    assert_eq!(events, expected);
}
