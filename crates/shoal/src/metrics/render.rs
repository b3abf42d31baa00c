//! A [`Snapshot`] as Prometheus text exposition format 0.0.4: families sorted by name, one
//! `# HELP` and `# TYPE` each, series sorted by labels, names and label names made valid,
//! label values and help text escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::snapshot::{Bucket, HistogramValue, Process, Snapshot};

/// The `Content-Type` of the text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) fn render(snapshot: &Snapshot) -> String {
    let mut families: BTreeMap<String, Family<'_>> = BTreeMap::new();
    if let Some(process) = &snapshot.process {
        add_process(&mut families, process);
    }
    for c in &snapshot.counters {
        let mut name = metric_name(&c.name);
        if !name.ends_with("_total") {
            name.push_str("_total");
        }
        add(
            &mut families,
            name,
            Type::Counter,
            help(c.help.as_deref(), &c.name),
            labels(&c.labels),
            Sample::Integer(c.value),
        );
    }
    for g in &snapshot.gauges {
        add(
            &mut families,
            metric_name(&g.name),
            Type::Gauge,
            help(g.help.as_deref(), &g.name),
            labels(&g.labels),
            Sample::Float(g.value),
        );
    }
    for h in &snapshot.histograms {
        // `le` is the buckets' own label.
        let mut labels = labels(&h.labels);
        labels.retain(|(k, _)| k != "le");
        add(
            &mut families,
            metric_name(&h.name),
            Type::Histogram,
            help(h.help.as_deref(), &h.name),
            labels,
            Sample::Histogram(h),
        );
    }

    let mut out = String::new();
    for (name, family) in &families {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
        for (labels, sample) in &family.series {
            match sample {
                Sample::Integer(n) => {
                    let _ = writeln!(out, "{name}{} {n}", label_set(labels, None));
                }
                Sample::Float(x) => {
                    let _ = writeln!(out, "{name}{} {}", label_set(labels, None), float(*x));
                }
                Sample::Histogram(h) => histogram(&mut out, name, labels, h),
            }
        }
    }
    out
}

/// `name` made valid: `[a-zA-Z_:][a-zA-Z0-9_:]*`, every other character an underscore.
pub(super) fn metric_name(name: &str) -> String {
    valid(name, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A label name made valid: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(super) fn label_name(name: &str) -> String {
    valid(name, |c| c.is_ascii_alphanumeric() || c == '_')
}

/// A label value inside its double quotes: backslash, double quote and newline escaped.
pub(super) fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Help text on its line: backslash and newline escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn valid(name: &str, allowed: impl Fn(char) -> bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    if !out.starts_with(|c: char| !c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Counter,
    Gauge,
    Histogram,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        }
    }
}

struct Family<'a> {
    kind: Type,
    help: String,
    /// By the series' valid label names and raw values, sorted.
    series: BTreeMap<Vec<(String, &'a str)>, Sample<'a>>,
}

enum Sample<'a> {
    Integer(u64),
    Float(f64),
    Histogram(&'a HistogramValue),
}

/// Adds one series to its family. A family name already taken by another type, or a series
/// whose labels are already there (two raw names or label names that become the same), is
/// left out: the text must not contradict itself.
fn add<'a>(
    families: &mut BTreeMap<String, Family<'a>>,
    name: String,
    kind: Type,
    help: String,
    labels: Vec<(String, &'a str)>,
    sample: Sample<'a>,
) {
    let family = families.entry(name).or_insert_with(|| Family {
        kind,
        help,
        series: BTreeMap::new(),
    });
    if family.kind == kind {
        family.series.entry(labels).or_insert(sample);
    }
}

fn add_process(families: &mut BTreeMap<String, Family<'_>>, p: &Process) {
    let figures = [
        (
            "process_resident_memory_bytes",
            Type::Gauge,
            "Resident memory size in bytes",
            p.resident_memory_bytes as f64,
        ),
        (
            "process_cpu_seconds_total",
            Type::Counter,
            "Total user and system CPU time spent in seconds",
            p.cpu_seconds,
        ),
        (
            "process_open_fds",
            Type::Gauge,
            "Number of open file descriptors",
            p.open_fds as f64,
        ),
        (
            "process_start_time_seconds",
            Type::Gauge,
            "Start time of the process since unix epoch in seconds",
            p.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in figures {
        add(
            families,
            name.to_owned(),
            kind,
            help.to_owned(),
            Vec::new(),
            Sample::Float(value),
        );
    }
}

fn help(described: Option<&str>, raw_name: &str) -> String {
    match described {
        Some(text) => text.to_owned(),
        None => format!("{raw_name} (no description)"),
    }
}

fn labels(labels: &BTreeMap<String, String>) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = labels
        .iter()
        .map(|(k, v)| (label_name(k), v.as_str()))
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// `{a="x",b="y"}`, with `le` last when given; empty without labels.
fn label_set(labels: &[(String, &str)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn histogram(out: &mut String, name: &str, labels: &[(String, &str)], h: &HistogramValue) {
    let mut below = 0;
    for Bucket { le, count } in &h.buckets {
        // Cumulative whatever the snapshot says, and never above the count.
        below = (*count).max(below).min(h.count);
        let set = label_set(labels, Some(&float(*le)));
        let _ = writeln!(out, "{name}_bucket{set} {below}");
    }
    let set = label_set(labels, Some("+Inf"));
    let _ = writeln!(out, "{name}_bucket{set} {}", h.count);
    let set = label_set(labels, None);
    let _ = writeln!(out, "{name}_sum{set} {}", float(h.sum));
    let _ = writeln!(out, "{name}_count{set} {}", h.count);
}

/// A sample value as Prometheus reads it: `NaN`, `+Inf`, `-Inf`, or the shortest decimal.
pub(super) fn float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        x.to_string()
    }
}
