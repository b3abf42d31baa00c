//! Reading an app's captured output: filtered in the agent (a regex, no shell), from the
//! rotated files (compressed ones included) through the active one, and when followed, what
//! is written next, across rotations.
//!
//! Each captured line starts with the time the agent read it (RFC 3339, UTC, milliseconds)
//! and a space; `since=10m` keeps the lines of the last ten minutes, and `grep` looks at what
//! follows the time.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::Stream;
use regex::Regex;
use shoal::logging::{rotation_order, RotationOrder};
use shoal_api::agent::{LogQuery, LogStream};
use tokio_util::sync::CancellationToken;

use crate::error::{failed, AgentError};

/// How often a followed log is checked for new lines when the last look found none.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// The most lines one answer holds without `follow` (the newest are kept).
const MAX_LINES: usize = 100_000;

/// The most read from one file in one look while following: a chunk of the answer stays
/// small however much was written since the last look.
const FOLLOW_CHUNK: usize = 1 << 20;

/// A [`LogQuery`] checked: its pattern compiled, its `since` a time.
#[derive(Debug)]
pub(crate) struct Query {
    streams: &'static [Captured],
    filter: Filter,
    follow: bool,
    lines: usize,
}

impl Query {
    /// Checks `query`, asked at `now`.
    pub(crate) fn parse(query: &LogQuery, now: DateTime<Utc>) -> Result<Query, AgentError> {
        let streams: &'static [Captured] = match query.stream {
            LogStream::Both => &[Captured::Stdout, Captured::Stderr],
            LogStream::Stdout => &[Captured::Stdout],
            LogStream::Stderr => &[Captured::Stderr],
        };
        let grep = match &query.grep {
            Some(pattern) => Some(
                regex::RegexBuilder::new(pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| AgentError::invalid(format!("grep {pattern:?}: {e}")))?,
            ),
            None => None,
        };
        let since = match &query.since {
            Some(text) => since_time(text, now)?,
            None => None,
        };
        Ok(Query {
            streams,
            filter: Filter { grep, since },
            follow: query.follow,
            lines: query.lines.min(MAX_LINES),
        })
    }
}

/// What a log query answers: the last lines, and when followed, what is written next.
#[derive(Debug)]
pub struct Logs {
    /// The newest lines that pass the query, oldest first, without their newlines.
    pub lines: Vec<String>,
    /// With `follow`: the lines written from now on.
    pub follow: Option<Follow>,
}

/// The lines written to a followed log from now on, until the agent closes.
pub struct Follow {
    following: Option<Following>,
    closing: CancellationToken,
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow").finish_non_exhaustive()
    }
}

impl Follow {
    /// The next lines written, as soon as there are some; `None` once the agent closes (or a
    /// read failed beyond repair).
    pub async fn next(&mut self) -> Option<Vec<String>> {
        let mut wait = false;
        loop {
            if wait {
                tokio::select! {
                    () = self.closing.cancelled() => return None,
                    () = tokio::time::sleep(FOLLOW_EVERY) => {}
                }
            }
            if self.closing.is_cancelled() {
                return None;
            }
            let mut following = self.following.take()?;
            // File reads stay off the executor; a panic in one ends the answer.
            let (back, lines, more) = tokio::task::spawn_blocking(move || {
                let (lines, more) = following.look();
                (following, lines, more)
            })
            .await
            .ok()?;
            self.following = Some(back);
            if !lines.is_empty() {
                return Some(lines);
            }
            wait = !more;
        }
    }

    /// [`Follow::next`] as a stream.
    pub fn into_stream(self) -> impl Stream<Item = Vec<String>> + Send {
        futures_util::stream::unfold(self, |mut follow| async move {
            let lines = follow.next().await?;
            Some((lines, follow))
        })
    }
}

/// A stream the agent captures of each program, which its log files are named after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Captured {
    Stdout,
    Stderr,
}

impl Captured {
    fn as_str(self) -> &'static str {
        match self {
            Captured::Stdout => "stdout",
            Captured::Stderr => "stderr",
        }
    }
}

/// Reads the logs in `dir` as `query` asks; a follow ends when `closing` is cancelled.
pub(crate) async fn read(
    dir: PathBuf,
    query: Query,
    closing: CancellationToken,
) -> Result<Logs, AgentError> {
    let Query {
        streams,
        filter,
        follow,
        lines: tail,
    } = query;
    let filter = Arc::new(filter);
    let (lines, following) = tokio::task::spawn_blocking(move || {
        let mut kept = Vec::new();
        let mut followers = Vec::new();
        for stream in streams {
            let read = read_stream(&dir, *stream, &filter, tail);
            let mut lines = read.lines;
            if follow {
                // A last line still being written is sent once it is whole.
                followers.push(read.follower);
            } else if let Some(partial) = read.partial {
                lines.push_back(partial);
                if lines.len() > tail {
                    lines.pop_front();
                }
            }
            kept.push(lines);
        }
        let mut lines = merge(kept);
        let start = lines.len().saturating_sub(tail);
        let lines: Vec<String> = lines.drain(start..).map(|l| l.text).collect();
        (lines, Following { followers, filter })
    })
    .await
    .map_err(failed("reading the logs"))?;
    Ok(Logs {
        lines,
        follow: follow.then(|| Follow {
            following: Some(following),
            closing,
        }),
    })
}

/// The time `text` (a duration) before `now`; None when that is further back than a time can
/// be, which keeps every line.
fn since_time(text: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, AgentError> {
    let ago = humantime::parse_duration(text)
        .map_err(|e| AgentError::invalid(format!("since {text:?}: {e}; e.g. 10m")))?;
    Ok(chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| now.checked_sub_signed(ago)))
}

#[derive(Debug)]
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

/// A kept line and the time it was captured (that of the line it continues when it has
/// none), for merging streams.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    time: String,
    text: String,
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

/// Turns raw lines of one file into kept [`Line`]s.
#[derive(Default)]
struct Stamper {
    /// The newest time seen: a line without one (the rest of a line too long for one record)
    /// takes it.
    last_time: String,
}

impl Stamper {
    fn line(&mut self, raw: &[u8], filter: &Filter) -> Option<Line> {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (time, message) = split(&text);
        if let Some(time) = time {
            time.clone_into(&mut self.last_time);
        }
        filter.keeps(&self.last_time, message).then(|| Line {
            time: self.last_time.clone(),
            text,
        })
    }

    /// [`Stamper::line`] without moving on the last time: the line is read again later.
    fn clone_line(&self, raw: &[u8], filter: &Filter) -> Option<Line> {
        Stamper {
            last_time: self.last_time.clone(),
        }
        .line(raw, filter)
    }
}

/// What reading one stream's files found.
struct StreamRead {
    /// The newest `tail` kept lines, oldest first, all ending in a newline in their file.
    lines: VecDeque<Line>,
    /// The active file's last line when it has no newline yet (being written), if kept.
    partial: Option<Line>,
    /// Goes on from where the active file's complete lines end.
    follower: Follower,
}

/// The last `tail` lines of `stream` in `dir` that `filter` keeps: the active file's, then
/// the rotated files' newest first until there are `tail` (older ones cannot change which
/// lines are the last).
fn read_stream(dir: &FsPath, stream: Captured, filter: &Filter, tail: usize) -> StreamRead {
    let path = dir.join(format!("{}.log", stream.as_str()));
    let mut follower = Follower {
        path: path.clone(),
        open: None,
        stamper: Stamper::default(),
    };
    let mut lines = VecDeque::new();
    let mut partial = None;
    // The active file first, so that one rotated in the meantime is known by its identity.
    if let Ok(file) = File::open(&path) {
        if let Ok(meta) = file.metadata() {
            let scan = scan(BufReader::new(&file), filter, tail);
            lines = scan.lines;
            follower.stamper.last_time = scan.last_time;
            partial = scan
                .partial
                .and_then(|raw| follower.stamper.clone_line(&raw, filter));
            follower.open = Some(Open {
                file,
                id: identity(&meta),
                offset: scan.complete,
            });
        }
    }
    let active = follower.open.as_ref().map(|open| open.id);
    for stem in rotations(dir, stream).into_iter().rev() {
        let need = tail.saturating_sub(lines.len());
        if need == 0 {
            break;
        }
        let Some(reader) = open_rotated(&stem, active) else {
            continue;
        };
        let scan = scan(BufReader::new(reader), filter, need);
        let mut older = scan.lines;
        // A rotated file is finished: a last line without a newline is a line.
        let mut stamper = Stamper {
            last_time: scan.last_time,
        };
        if let Some(line) = scan.partial.and_then(|raw| stamper.line(&raw, filter)) {
            older.push_back(line);
            if older.len() > need {
                older.pop_front();
            }
        }
        older.extend(lines);
        lines = older;
    }
    StreamRead {
        lines,
        partial,
        follower,
    }
}

/// What [`scan`] found in one file.
struct Scan {
    /// The newest kept lines that end in a newline, at most the number asked for.
    lines: VecDeque<Line>,
    /// Bytes up to and including the last newline.
    complete: u64,
    /// What follows the last newline, if anything.
    partial: Option<Vec<u8>>,
    last_time: String,
}

/// Reads a file from its start, keeping the newest `max` lines that `filter` keeps.
fn scan(mut reader: impl BufRead, filter: &Filter, max: usize) -> Scan {
    let mut stamper = Stamper::default();
    let mut first_time = None;
    let mut lines = VecDeque::new();
    let mut complete = 0;
    let mut partial = None;
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if raw.last() != Some(&b'\n') {
                    partial = Some(raw.clone());
                    break;
                }
                complete += n as u64;
                let kept = stamper.line(&raw[..n - 1], filter);
                if first_time.is_none() && !stamper.last_time.is_empty() {
                    first_time = Some(stamper.last_time.clone());
                }
                if let Some(line) = kept.filter(|_| max > 0) {
                    lines.push_back(line);
                    if lines.len() > max {
                        lines.pop_front();
                    }
                }
            }
        }
    }
    // Lines before the file's first time continue one from the file before; the first time
    // here is the closest known, and keeps them in place when streams are merged.
    if let Some(first) = first_time {
        for line in lines.iter_mut().take_while(|l| l.time.is_empty()) {
            line.time.clone_from(&first);
        }
    }
    Scan {
        lines,
        complete,
        partial,
        last_time: stamper.last_time,
    }
}

/// The rotated files of `stream` in `dir` in the order they were rotated, each as its
/// uncompressed path (its `.gz` may be what is there).
fn rotations(dir: &FsPath, stream: Captured) -> Vec<PathBuf> {
    let prefix = format!("{}.log.", stream.as_str());
    let mut found: Vec<(RotationOrder, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let rest = name.to_str()?.strip_prefix(&prefix)?;
            let stem = rest.strip_suffix(".gz").unwrap_or(rest);
            let order = rotation_order(stem)?;
            Some((order, dir.join(format!("{prefix}{stem}"))))
        })
        .collect();
    found.sort();
    // While a rotation is compressed it has both names.
    found.dedup();
    found.into_iter().map(|(_, path)| path).collect()
}

/// One rotation's content: the uncompressed file while it is there (it is whole: the `.gz`
/// is made from it, and renamed into place only once whole), else the `.gz`. None when
/// neither opens, or the file is the active one read already (rotated since).
fn open_rotated(stem: &FsPath, active: Option<(u64, u64)>) -> Option<Box<dyn Read>> {
    match File::open(stem) {
        Ok(file) => {
            let id = file.metadata().ok().map(|m| identity(&m));
            (active.is_none() || id != active).then(|| Box::new(file) as Box<dyn Read>)
        }
        Err(_) => {
            let mut gz = stem.as_os_str().to_owned();
            gz.push(".gz");
            let file = File::open(gz).ok()?;
            Some(Box::new(flate2::read::GzDecoder::new(file)))
        }
    }
}

/// The streams' lines in one sequence by time, each stream's own order kept (on equal times
/// the earlier stream's line first).
fn merge(mut streams: Vec<VecDeque<Line>>) -> Vec<Line> {
    let mut out = Vec::with_capacity(streams.iter().map(VecDeque::len).sum());
    loop {
        let next = streams
            .iter()
            .enumerate()
            .filter_map(|(i, lines)| Some((i, &lines.front()?.time)))
            // The first of equal minimums.
            .min_by(|a, b| a.1.cmp(b.1))
            .map(|(i, _)| i);
        match next.and_then(|i| streams[i].pop_front()) {
            Some(line) => out.push(line),
            None => return out,
        }
    }
}

/// What identifies a file across renames: (device, inode).
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// The followed streams of one answer.
struct Following {
    followers: Vec<Follower>,
    filter: Arc<Filter>,
}

impl Following {
    /// The kept lines written since the last look, merged by time, and whether there is
    /// more to read at once.
    fn look(&mut self) -> (Vec<String>, bool) {
        let mut more = false;
        let mut streams = Vec::new();
        for follower in &mut self.followers {
            let mut lines = Vec::new();
            more |= follower.look(&self.filter, &mut lines);
            streams.push(VecDeque::from(lines));
        }
        (merge(streams).into_iter().map(|l| l.text).collect(), more)
    }
}

/// One stream's active file, followed across rotations: the file stays open, so that what
/// was written to it before it was renamed aside is read before the new one.
struct Follower {
    path: PathBuf,
    /// None until the path names a file.
    open: Option<Open>,
    stamper: Stamper,
}

struct Open {
    file: File,
    id: (u64, u64),
    /// Where the next unread line starts.
    offset: u64,
}

/// Whether a followed file may still grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// It is the active file: a last line without its newline waits for it.
    Continue,
    /// It was rotated away: what is there is all there will be.
    Ended,
}

impl Follower {
    /// Appends the kept lines written since the last look to `out`; true when there is more
    /// to read at once.
    fn look(&mut self, filter: &Filter, out: &mut Vec<Line>) -> bool {
        // The path is looked at before the open file is read: once it names another file,
        // everything written to the open one is there to read, and after that the open one
        // is done.
        let at_path = std::fs::metadata(&self.path).ok().map(|m| identity(&m));
        if let Some(open) = &mut self.open {
            let rotated = at_path.is_some_and(|id| id != open.id);
            let writes = if rotated {
                Writes::Ended
            } else {
                Writes::Continue
            };
            let more = open.read(filter, &mut self.stamper, writes, out);
            if more || !rotated {
                return more;
            }
            self.open = None;
        }
        if at_path.is_none() {
            return false;
        }
        // A file rotated in and out between two looks is not seen: more than a rotation's
        // size written within one look.
        let Ok(file) = File::open(&self.path) else {
            return false;
        };
        let Ok(meta) = file.metadata() else {
            return false;
        };
        let open = self.open.insert(Open {
            file,
            id: identity(&meta),
            offset: 0,
        });
        open.read(filter, &mut self.stamper, Writes::Continue, out)
    }
}

impl Open {
    /// Reads on from `offset`, at most [`FOLLOW_CHUNK`]: the lines that end in a newline, and
    /// when the file's writes `Ended`, a last line without one. True when it stopped short of
    /// the end.
    fn read(
        &mut self,
        filter: &Filter,
        stamper: &mut Stamper,
        writes: Writes,
        out: &mut Vec<Line>,
    ) -> bool {
        let Ok(len) = self.file.metadata().map(|m| m.len()) else {
            return false;
        };
        if len < self.offset {
            // Cut short in place (`truncate`): start over.
            self.offset = 0;
        }
        if len == self.offset || self.file.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let want = (len - self.offset).min(FOLLOW_CHUNK as u64);
        let mut buf = Vec::new();
        if (&self.file).take(want).read_to_end(&mut buf).is_err() || buf.is_empty() {
            return false;
        }
        let at_end = self.offset + buf.len() as u64 >= len;
        let end = match buf.iter().rposition(|&b| b == b'\n') {
            _ if at_end && writes == Writes::Ended => buf.len(),
            Some(i) => i + 1,
            // A line longer than a chunk goes out in pieces.
            None if buf.len() == FOLLOW_CHUNK => buf.len(),
            None => return false,
        };
        self.offset += end as u64;
        let read = &buf[..end];
        for raw in read
            .strip_suffix(b"\n")
            .unwrap_or(read)
            .split(|&b| b == b'\n')
        {
            out.extend(stamper.line(raw, filter));
        }
        !at_end
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

    #[test]
    fn merging_keeps_each_streams_order() {
        let line = |time: &str, text: &str| Line {
            time: time.into(),
            text: text.into(),
        };
        let out = vec![
            line("1", "o1"),
            line("3", "o3"),
            line("3", "o3b"),
            line("2", "o2"),
        ];
        let err = vec![line("2", "e2"), line("3", "e3")];
        let merged: Vec<String> = merge(vec![out.into(), err.into()])
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(merged, ["o1", "e2", "o3", "o3b", "o2", "e3"]);
    }
}
