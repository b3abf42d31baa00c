//! `GET /v1/apps/{name}/logs`: an app's captured output, filtered in the agent (a regex, no
//! shell), from the rotated files (compressed ones included) through the active one, and
//! with `follow=1` kept open to send what is written next.
//!
//! Each captured line starts with the time the agent read it (RFC 3339, UTC, milliseconds)
//! and a space; `since=10m` keeps the lines of the last ten minutes, and `grep` looks at what
//! follows the time.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use regex::Regex;
use serde::Deserialize;

use super::routes::name;
use super::ApiError;
use crate::agent::Agent;

/// How often a followed log is checked for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// The most lines one answer holds without `follow` (the newest are kept).
const MAX_LINES: usize = 100_000;

#[derive(Debug, Deserialize)]
pub(crate) struct LogQuery {
    /// `stdout`, `stderr` or `both` (the default).
    stream: Option<String>,
    grep: Option<String>,
    /// A duration: `90s`, `10m`, `2h`.
    since: Option<String>,
    #[serde(default)]
    follow: bool,
    /// Lines from the end (default 200; `since` and `grep` apply first).
    tail: Option<usize>,
}

pub(crate) async fn logs(
    State(agent): State<Agent>,
    Path(app): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let name = name(&app)?;
    agent.manifest(&name)?;
    let streams: &[&str] = match query.stream.as_deref().unwrap_or("both") {
        "both" => &["stdout", "stderr"],
        "stdout" => &["stdout"],
        "stderr" => &["stderr"],
        other => {
            return Err(ApiError::bad_request(format!(
                "stream {other:?}: use stdout, stderr or both"
            )))
        }
    };
    let grep = match &query.grep {
        Some(pattern) => Some(
            regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| ApiError::bad_request(format!("grep {pattern:?}: {e}")))?,
        ),
        None => None,
    };
    let since = match &query.since {
        Some(text) => since_time(text, Utc::now())?,
        None => None,
    };
    let filter = Filter { grep, since };
    let dir = agent.data().logs(&name);
    let paths: Vec<PathBuf> = streams
        .iter()
        .map(|s| dir.join(format!("{s}.log")))
        .collect();
    let tail = query.tail.unwrap_or(200).min(MAX_LINES);
    let (filter, dir2, streams2) = (filter, dir.clone(), streams.to_vec());
    let (lines, filter) = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for stream in &streams2 {
            read_all(&dir2, stream, &filter, &mut lines);
        }
        // Both streams merged by time; a stable sort keeps each file's order.
        lines.sort_by(|a: &(String, String), b| a.0.cmp(&b.0));
        let start = lines.len().saturating_sub(tail);
        (lines.split_off(start), filter)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut text = String::new();
    for (_, line) in &lines {
        text.push_str(line);
        text.push('\n');
    }
    if !query.follow {
        return Ok(Response::new(Body::from(text)));
    }
    let ends: Vec<(PathBuf, u64)> = paths
        .iter()
        .map(|p| {
            (
                p.clone(),
                std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            )
        })
        .collect();
    let first = Some(Bytes::from(text));
    let stream = futures_util::stream::unfold(
        (first, ends, filter),
        |(first, mut ends, filter)| async move {
            if let Some(first) = first {
                return Some((Ok::<_, std::io::Error>(first), (None, ends, filter)));
            }
            loop {
                tokio::time::sleep(FOLLOW_EVERY).await;
                let mut out = String::new();
                for (path, offset) in &mut ends {
                    read_new(path, offset, &filter, &mut out);
                }
                if !out.is_empty() {
                    return Some((Ok(Bytes::from(out)), (None, ends, filter)));
                }
            }
        },
    );
    Ok(Response::new(Body::from_stream(stream)))
}

/// The time `text` (a duration) before `now`; None when that is further back than a time can
/// be, which keeps every line.
fn since_time(text: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let ago = humantime::parse_duration(text)
        .map_err(|e| ApiError::bad_request(format!("since {text:?}: {e}; e.g. 10m")))?;
    Ok(chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| now.checked_sub_signed(ago)))
}

struct Filter {
    grep: Option<Regex>,
    since: Option<DateTime<Utc>>,
}

impl Filter {
    /// Whether a line captured at `time` whose text after the time is `message` is kept.
    fn keeps(&self, time: &str, message: &str) -> bool {
        if let Some(since) = self.since {
            match DateTime::parse_from_rfc3339(time) {
                Ok(t) if t < since => return false,
                _ => {}
            }
        }
        self.grep.as_ref().is_none_or(|re| re.is_match(message))
    }
}

/// The time a line was captured, if it starts with one, and the rest of the line after the
/// space (the whole line without a time).
fn split(line: &str) -> (Option<&str>, &str) {
    match line.split_once(' ') {
        Some((time, message)) if is_stamp(time) => (Some(time), message),
        _ => (None, line),
    }
}

/// `2026-11-22T11:00:00.123Z` and the like: RFC 3339 in UTC, as the capture writes it.
fn is_stamp(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 20
        && text.ends_with('Z')
        && b[..19].iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// Every line of `stream`'s files in `dir`, oldest file first, that `filter` keeps.
fn read_all(dir: &FsPath, stream: &str, filter: &Filter, out: &mut Vec<(String, String)>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{stream}.log.")) && !n.ends_with(".tmp"))
        })
        .collect();
    // Rotated names carry their UTC time, and a number for a second rotation in the same
    // second (`stdout.log.20261122T110000Z.gz`, then `...Z-1.gz`).
    files.sort_by_key(|path| rotation_order(path));
    files.push(dir.join(format!("{stream}.log")));
    let mut last_time = String::new();
    for path in files {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        for line in BufReader::new(reader).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line).into_owned();
            let (time, message) = split(&line);
            if let Some(time) = time {
                last_time = time.to_owned();
            }
            if filter.keeps(&last_time, message) {
                out.push((last_time.clone(), line));
                if out.len() > 2 * MAX_LINES {
                    out.drain(..MAX_LINES);
                }
            }
        }
    }
}

/// A rotated file's place in time: its stamp, then its number within that second.
fn rotation_order(path: &FsPath) -> (String, u32) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let stem = name.trim_end_matches(".gz");
    match stem
        .rsplit_once('-')
        .map(|(stamp, n)| (stamp, n.parse::<u32>()))
    {
        Some((stamp, Ok(n))) => (stamp.to_owned(), n),
        _ => (stem.to_owned(), 0),
    }
}

/// Appends to `out` the kept lines written to `path` after `offset`, moving it on; starts
/// over when the file was rotated (it is shorter than before). A partial last line waits.
fn read_new(path: &FsPath, offset: &mut u64, filter: &Filter, out: &mut String) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < *offset {
        *offset = 0;
    }
    if len == *offset || file.seek(SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if file.take(len - *offset).read_to_end(&mut buf).is_err() {
        return;
    }
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    *offset += end as u64 + 1;
    for line in buf[..end].split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let (time, message) = split(&line);
        if filter.keeps(time.unwrap_or(""), message) {
            out.push_str(&line);
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_time_the_capture_writes_is_split_off() {
        let check = |line: &str, expected: (Option<&str>, &str)| {
            assert_eq!(split(line), expected, "{line:?}");
        };
        check(
            "2026-11-22T11:00:00.123Z listening on 3000",
            (Some("2026-11-22T11:00:00.123Z"), "listening on 3000"),
        );
        check(
            "2026-11-22T11:00:00Z bare",
            (Some("2026-11-22T11:00:00Z"), "bare"),
        );
        check(
            "2026-11-22T11:00:00.123Z ",
            (Some("2026-11-22T11:00:00.123Z"), ""),
        );
        check("no time here", (None, "no time here"));
        check("2026-11-22 11:00:00Z x", (None, "2026-11-22 11:00:00Z x"));
        check(
            "ABCD-11-22T11:00:00.1Z x",
            (None, "ABCD-11-22T11:00:00.1Z x"),
        );
        check("", (None, ""));
    }

    #[test]
    fn a_since_too_far_back_keeps_everything() {
        let now = Utc::now();
        assert_eq!(
            since_time("10m", now).unwrap(),
            Some(now - chrono::Duration::minutes(10))
        );
        assert_eq!(since_time("300000y", now).unwrap(), None);
        assert!(since_time("ten", now).is_err());
    }
}
