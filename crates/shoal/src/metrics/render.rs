//! A [`Snapshot`] as Prometheus text exposition format 0.0.4: families sorted by name, one
//! `# HELP` and `# TYPE` each, series sorted by labels, names and label names made valid,
//! label values and help text escaped, and no sample name claimed by two families.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use super::snapshot::{Bucket, HistogramValue, Process, Snapshot};

/// The `Content-Type` of the text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) fn render(snapshot: &Snapshot) -> String {
    let mut families = Families::default();
    if let Some(process) = &snapshot.process {
        add_process(&mut families, process);
    }
    for c in &snapshot.counters {
        let mut name = metric_name(&c.name);
        if !name.ends_with("_total") {
            name.push_str("_total");
        }
        families.add(
            name,
            Type::Counter,
            help(c.help.as_deref(), &c.name),
            labels(&c.labels),
            Sample::Integer(c.value),
        );
    }
    for g in &snapshot.gauges {
        families.add(
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
        families.add(
            metric_name(&h.name),
            Type::Histogram,
            help(h.help.as_deref(), &h.name),
            labels,
            Sample::Histogram(h),
        );
    }

    let mut out = String::new();
    for (name, family) in &families.by_name {
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

/// The families to write, by name.
#[derive(Default)]
struct Families<'a> {
    by_name: BTreeMap<String, Family<'a>>,
    /// `NAME_bucket`, `NAME_sum` and `NAME_count` of every histogram `NAME`: its samples are
    /// written under these names, so no family may have one of them.
    derived: HashSet<String>,
}

impl<'a> Families<'a> {
    /// Adds one series to its family. What would make the text contradict itself is left out,
    /// and the first to come kept: a family whose name another type has; a family named like
    /// a histogram's samples (`x_count` beside histogram `x`), or a histogram whose samples
    /// would be named like a family there already; a series whose labels are there already
    /// (two raw names or label names that become the same).
    fn add(
        &mut self,
        name: String,
        kind: Type,
        help: String,
        labels: Vec<(String, &'a str)>,
        sample: Sample<'a>,
    ) {
        if !self.by_name.contains_key(&name) {
            let derived = derived_names(&name, kind);
            if self.derived.contains(&name) || derived.iter().any(|d| self.by_name.contains_key(d))
            {
                return;
            }
            self.derived.extend(derived);
        }
        let family = self.by_name.entry(name).or_insert_with(|| Family {
            kind,
            help,
            series: BTreeMap::new(),
        });
        if family.kind == kind {
            family.series.entry(labels).or_insert(sample);
        }
    }
}

/// The sample names a family of `kind` writes other than its own name: a histogram's
/// `NAME_bucket`, `NAME_sum` and `NAME_count`.
fn derived_names(name: &str, kind: Type) -> Vec<String> {
    match kind {
        Type::Histogram => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{name}{suffix}"))
            .collect(),
        Type::Counter | Type::Gauge => Vec::new(),
    }
}

fn add_process(families: &mut Families<'_>, p: &Process) {
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
        families.add(
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
