//! The log sinks from outside: a rotating file under concurrent writers (no line lost, torn or
//! repeated), pruning and time rotation, deleted or moved by someone else, failing to rotate,
//! with a clock set back, and with a crashed process's leftovers; per-sink levels and formats;
//! reload (and the `log` crate's records); syslog frames read by a UDP and a Unix listener;
//! mail read by an SMTP server started here; and a real process whose file sink follows a
//! SIGHUP.

mod common;

use std::collections::HashSet;
#[cfg(feature = "email")]
use std::io::{BufRead, BufReader};
use std::io::{Read, Write};
use std::net::UdpSocket;
#[cfg(feature = "email")]
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, TimeZone, Utc};
use common::Scratch;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal::config::{Config, LogConfig};
use shoal::logging::{LogHandle, LogLayer, RotatingFile, Rotation};
use shoal::timer::{Clock, Unit};
use syslog_rfc5424::{SyslogFacility, SyslogSeverity};
use tracing::level_filters::LevelFilter;
use tracing::{debug, error, info, info_span, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const LIMIT: Duration = Duration::from_secs(20);

/// The `[log]` part of a config file.
fn log_config(text: &str) -> LogConfig {
    match Config::from_toml(text, Path::new("test.toml"), Vec::new()) {
        Ok(config) => config.runtime().log.clone(),
        Err(e) => panic!("{text}: {e}"),
    }
}

/// Our layer on a registry, as this thread's subscriber while the guard lives.
fn subscribe(text: &str) -> (LogHandle, tracing::subscriber::DefaultGuard) {
    let layer = LogLayer::new(&log_config(text), "testapp").unwrap();
    let handle = layer.handle();
    let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    (handle, guard)
}

/// Polls `check` until it returns Some, or panics naming `what` after [`LIMIT`].
fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The rotated files of `active` (`NAME.YYYYMMDDTHHMMSSZ[-N][.gz]`), oldest first.
fn rotated(active: &Path) -> Vec<PathBuf> {
    let dir = active.parent().unwrap();
    let base = format!("{}.", active.file_name().unwrap().to_str().unwrap());
    let mut found: Vec<((String, u32), PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            let rest = name.strip_prefix(&base)?;
            let stem = rest.strip_suffix(".gz").unwrap_or(rest);
            let (stamp, suffix) = match stem.get(16..)? {
                "" => (stem, 0),
                n => (&stem[..16], n.strip_prefix('-')?.parse().ok()?),
            };
            stamp.ends_with('Z').then_some(())?;
            Some(((stamp.to_owned(), suffix), path))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, path)| path).collect()
}

/// A file's text, gunzipped when its name ends in `.gz`.
fn read_text(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        text
    } else {
        String::from_utf8(bytes).unwrap()
    }
}

#[test]
fn rotation_under_concurrent_writes_loses_no_line() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 5000;
    let dir = Scratch::new("log-concurrent");
    let path = dir.join("app.log");
    // Something from before: opening appends.
    std::fs::write(&path, "old line\n").unwrap();
    let file = RotatingFile::open(
        &path,
        Rotation {
            max_size: Some(16 << 10),
            every: None,
            keep: 10_000,
            compress: true,
        },
    )
    .unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let file = file.clone();
            s.spawn(move || {
                for n in 0..PER_THREAD {
                    let line = format!("thread {t} line {n:05} {}\n", "x".repeat(n % 40));
                    file.write_record(line.as_bytes()).unwrap();
                }
            });
        }
    });
    file.wait_idle();

    let rotations = rotated(&path);
    // ~1.4 MB through 16 KiB files.
    assert!(rotations.len() > 50, "{} rotations", rotations.len());
    assert!(
        rotations
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "gz")),
        "every rotated file is compressed: {rotations:?}"
    );
    assert!(
        !std::fs::read_dir(dir.path.clone()).unwrap().any(|e| e
            .unwrap()
            .path()
            .to_string_lossy()
            .ends_with(".tmp")),
        "no compression left half done"
    );
    let mut all = String::new();
    for file in rotations.iter().chain([&path]) {
        let text = read_text(file);
        assert!(text.ends_with('\n'), "{} ends mid-line", file.display());
        all.push_str(&text);
    }
    let mut next = [0usize; THREADS];
    let mut seen = HashSet::new();
    let mut lines = all.lines();
    assert_eq!(lines.next(), Some("old line"));
    for line in lines {
        let words: Vec<&str> = line.split(' ').collect();
        let (t, n): (usize, usize) = match words[..] {
            ["thread", t, "line", n, pad] => {
                let (t, n) = (t.parse().unwrap(), n.parse().unwrap());
                assert_eq!(pad, "x".repeat(n % 40), "torn line {line:?}");
                (t, n)
            }
            _ => panic!("torn line {line:?}"),
        };
        assert!(seen.insert((t, n)), "repeated line {line:?}");
        // Oldest file first: each thread's lines come in the order it wrote them.
        assert_eq!(n, next[t], "thread {t} out of order");
        next[t] += 1;
    }
    assert_eq!(seen.len(), THREADS * PER_THREAD, "lines lost");
    let active = std::fs::metadata(&path).unwrap().len();
    assert!(active <= 16 << 10, "the active file is {active} bytes");
}

#[test]
fn only_the_newest_rotations_are_kept() {
    let dir = Scratch::new("log-keep");
    let path = dir.join("app.log");
    let file = RotatingFile::open(
        &path,
        Rotation {
            max_size: None,
            every: None,
            keep: 2,
            compress: false,
        },
    )
    .unwrap();
    for generation in 0..6 {
        if generation > 0 {
            file.rotate().unwrap();
        }
        file.write_record(format!("generation {generation}\n").as_bytes())
            .unwrap();
    }
    // An empty file is not rotated.
    file.rotate().unwrap();
    file.rotate().unwrap();
    file.wait_idle();
    let kept = rotated(&path);
    let texts: Vec<String> = kept.iter().map(|p| read_text(p)).collect();
    assert_eq!(texts, ["generation 4\n", "generation 5\n"], "{kept:?}");
    assert!(kept.iter().all(|p| p.extension().is_none_or(|e| e != "gz")));
    assert_eq!(read_text(&path), "");

    // Writing through io::Write: each write is a record.
    (&file).write_all(b"through io::Write\n").unwrap();
    assert_eq!(read_text(&path), "through io::Write\n");
}

#[test]
fn a_deleted_file_is_opened_again_at_its_path() {
    let dir = Scratch::new("log-deleted");
    let path = dir.join("app.log");
    let file = RotatingFile::open(
        &path,
        Rotation {
            max_size: None,
            every: None,
            keep: 5,
            compress: false,
        },
    )
    .unwrap();
    file.write_record(b"before\n").unwrap();
    std::fs::remove_file(&path).unwrap();
    // A write about a second after the last look notices and opens the path again; the
    // records before it went to the deleted file.
    let mut n = 0;
    wait_until("a new file at the path", || {
        n += 1;
        file.write_record(format!("after {n}\n").as_bytes())
            .unwrap();
        path.exists().then_some(())
    });
    file.write_record(b"last\n").unwrap();
    assert_eq!(read_text(&path), format!("after {n}\nlast\n"));
}

#[test]
fn a_file_moved_aside_by_someone_else_is_followed_at_the_next_rotation() {
    let dir = Scratch::new("log-moved");
    let path = dir.join("app.log");
    let file = RotatingFile::open(
        &path,
        Rotation {
            max_size: None,
            every: None,
            keep: 5,
            compress: false,
        },
    )
    .unwrap();
    file.write_record(b"one\n").unwrap();
    // logrotate's way: rename, then create an empty file at the path.
    let moved = dir.join("app.log.1");
    std::fs::rename(&path, &moved).unwrap();
    std::fs::write(&path, "").unwrap();
    // The rotation finds its file gone from the path: it renames nothing (that would move
    // the new file aside) and opens the path.
    file.rotate().unwrap();
    file.write_record(b"two\n").unwrap();
    file.wait_idle();
    assert_eq!(read_text(&moved), "one\n");
    assert_eq!(read_text(&path), "two\n");
    assert!(rotated(&path).is_empty(), "{:?}", rotated(&path));
}

#[test]
fn a_rotation_that_cannot_rename_loses_no_record_and_is_not_an_error() {
    let dir = Scratch::new("log-no-rename");
    // A name so long that no rotated name fits (NAME_MAX is 255 bytes): the rename fails,
    // root or not.
    let path = dir.join(&format!("{}.log", "a".repeat(236)));
    let file = RotatingFile::open(
        &path,
        Rotation {
            max_size: Some(100),
            every: None,
            keep: 5,
            compress: false,
        },
    )
    .unwrap();
    let mut expected = String::new();
    for n in 0..20 {
        let line = format!("line {n:02} {}\n", "x".repeat(20));
        // Ok with the whole record: a caller that retries on Err would write it twice.
        assert_eq!((&file).write(line.as_bytes()).unwrap(), line.len());
        expected.push_str(&line);
    }
    // io::copy goes on to the end.
    let rest = "copied 1\ncopied 2\n".repeat(10);
    let copied = std::io::copy(&mut rest.as_bytes(), &mut &file).unwrap();
    assert_eq!(copied, rest.len() as u64);
    expected.push_str(&rest);
    // An explicit rotation says why it failed.
    let e = file.rotate().unwrap_err();
    assert!(e.to_string().contains("cannot rename it to"), "{e}");
    file.wait_idle();
    assert_eq!(read_text(&path), expected);
    let names: Vec<_> = std::fs::read_dir(&dir.path).unwrap().collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn leftovers_of_a_stopped_process_are_cleaned_up_at_open() {
    let dir = Scratch::new("log-leftovers");
    let path = dir.join("app.log");
    let name = |stamp: &str, ext: &str| dir.join(&format!("app.log.{stamp}{ext}"));
    let gz = |text: &str| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    };
    // Rotated, never compressed.
    std::fs::write(name("20261122T100000Z", ""), "old 1\n").unwrap();
    // Its compression stopped half-way, an hour ago.
    std::fs::write(name("20261122T110000Z", ""), "old 2\n").unwrap();
    let stale = name("20261122T110000Z", ".gz.tmp");
    std::fs::write(&stale, b"\x1f\x8b half").unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    // Stopped after the .gz was in place, before the plain file was removed.
    std::fs::write(name("20261122T120000Z", ".gz"), gz("old 3\n")).unwrap();
    std::fs::write(name("20261122T120000Z", ""), "old 3\n").unwrap();
    // Being compressed right now by another process sharing the path: left to it.
    std::fs::write(name("20261122T130000Z", ""), "old 4\n").unwrap();
    let busy = name("20261122T130000Z", ".gz.tmp");
    std::fs::write(&busy, b"\x1f\x8b busy").unwrap();

    let file = RotatingFile::open(
        &path,
        Rotation {
            max_size: None,
            every: None,
            keep: 10,
            compress: true,
        },
    )
    .unwrap();
    file.wait_idle();

    assert!(
        !stale.exists(),
        "the stopped compression's .gz.tmp is removed"
    );
    assert!(busy.exists(), "a .gz.tmp being written is left alone");
    let kept: Vec<String> = rotated(&path)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        kept,
        [
            "app.log.20261122T100000Z.gz",
            "app.log.20261122T110000Z.gz",
            "app.log.20261122T120000Z.gz",
            "app.log.20261122T130000Z",
        ]
    );
    let texts: Vec<String> = rotated(&path).iter().map(|p| read_text(p)).collect();
    assert_eq!(texts, ["old 1\n", "old 2\n", "old 3\n", "old 4\n"]);
}

/// A wall clock the test moves by hand.
#[derive(Debug)]
struct HandClock(Mutex<DateTime<Utc>>);

impl HandClock {
    fn set(&self, local: (u32, u32, u32)) {
        *self.0.lock().unwrap() = at(local);
    }
}

fn at((h, m, s): (u32, u32, u32)) -> DateTime<Utc> {
    Local
        .with_ymd_and_hms(2026, 11, 22, h, m, s)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

impl Clock for HandClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    fn sleep_until(&self, _: DateTime<Utc>) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[test]
fn time_rotation_happens_at_local_boundaries() {
    let dir = Scratch::new("log-time");
    let path = dir.join("app.log");
    let clock = Arc::new(HandClock(Mutex::new(at((10, 14, 30)))));
    let file = RotatingFile::open_with_clock(
        &path,
        Rotation {
            max_size: None,
            every: Some(Unit::Minute),
            keep: 10,
            compress: false,
        },
        clock.clone(),
    )
    .unwrap();
    let write = |line: &str| file.write_record(format!("{line}\n").as_bytes()).unwrap();
    write("a");
    clock.set((10, 14, 59));
    write("b");
    assert!(rotated(&path).is_empty());
    clock.set((10, 15, 0));
    write("c");
    // 10:16 passes with nothing written: no empty file for it.
    clock.set((10, 17, 30));
    write("d");
    clock.set((11, 0, 0));
    file.set_rotation(Rotation {
        max_size: None,
        every: Some(Unit::Hour),
        keep: 10,
        compress: false,
    });
    write("e");
    clock.set((11, 59, 59));
    write("f");
    clock.set((12, 0, 0));
    write("g");
    file.wait_idle();
    let names: Vec<String> = rotated(&path)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // Named by the UTC time of the rotation.
    let expected: Vec<String> = [(10, 15, 0), (10, 17, 30), (12, 0, 0)]
        .into_iter()
        .map(|t| at(t).format("app.log.%Y%m%dT%H%M%SZ").to_string())
        .collect();
    assert_eq!(names, expected);
    let texts: Vec<String> = rotated(&path).iter().map(|p| read_text(p)).collect();
    assert_eq!(texts, ["a\nb\n", "c\n", "d\ne\nf\n"]);
    assert_eq!(read_text(&path), "g\n");
}

#[test]
fn rotated_names_keep_their_order_when_the_clock_goes_back() {
    let dir = Scratch::new("log-clock-back");
    let path = dir.join("app.log");
    // Left by an earlier version (local-time stamp): older than any UTC name, whatever it says.
    std::fs::write(dir.join("app.log.20991231-235959"), "legacy\n").unwrap();
    let rotation = Rotation {
        max_size: None,
        every: None,
        keep: 3,
        compress: false,
    };
    let clock = Arc::new(HandClock(Mutex::new(at((10, 20, 0)))));
    let file = RotatingFile::open_with_clock(&path, rotation.clone(), clock.clone()).unwrap();
    let generation = |file: &RotatingFile, n: usize| {
        file.write_record(format!("generation {n}\n").as_bytes())
            .unwrap();
    };
    generation(&file, 0);
    file.rotate().unwrap();
    generation(&file, 1);
    // The clock is set back (or summer time ends, for a local stamp): the names stay in order.
    clock.set((9, 0, 0));
    file.rotate().unwrap();
    generation(&file, 2);
    clock.set((9, 30, 0));
    file.rotate().unwrap();
    generation(&file, 3);
    file.wait_idle();
    drop(file);

    // After a restart, too: the next name sorts after the newest on disk.
    clock.set((8, 0, 0));
    let file = RotatingFile::open_with_clock(&path, rotation, clock.clone()).unwrap();
    file.rotate().unwrap();
    generation(&file, 4);
    file.wait_idle();

    let stamp = at((10, 20, 0)).format("%Y%m%dT%H%M%SZ");
    let names: Vec<String> = rotated(&path)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            format!("app.log.{stamp}-1"),
            format!("app.log.{stamp}-2"),
            format!("app.log.{stamp}-3"),
        ]
    );
    // The newest three are kept; the oldest UTC one and the legacy one are pruned.
    let texts: Vec<String> = rotated(&path).iter().map(|p| read_text(p)).collect();
    assert_eq!(
        texts,
        ["generation 1\n", "generation 2\n", "generation 3\n"]
    );
    assert!(!dir.join("app.log.20991231-235959").exists());
    assert_eq!(read_text(&path), "generation 4\n");
}

#[test]
fn each_sink_has_its_own_level_and_format() {
    let dir = Scratch::new("log-levels");
    let (warn_json, info_text) = (dir.join("warn.json"), dir.join("info.log"));
    let (_handle, _guard) = subscribe(&format!(
        r#"
[log]
level = "info"
[[log.sinks]]
kind = "file"
path = "{}"
level = "warn"
format = "json"
[[log.sinks]]
kind = "file"
path = "{}"
"#,
        warn_json.display(),
        info_text.display()
    ));
    let span = info_span!("request", id = 7, user = tracing::field::Empty);
    span.record("user", "ann");
    span.in_scope(|| {
        debug!("debug line");
        info!("info line");
        warn!(answer = 42, "warn line");
    });

    let json = lines(&warn_json);
    assert_eq!(json.len(), 1, "{json:?}");
    let event: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(event["level"], "WARN");
    assert_eq!(event["fields"]["message"], "warn line");
    assert_eq!(event["fields"]["answer"], 42);
    assert_eq!(event["span"]["name"], "request");
    assert_eq!(event["span"]["id"], 7);
    assert_eq!(event["span"]["user"], "ann");

    let text = lines(&info_text);
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].contains(" INFO ") && text[0].ends_with("info line"),
        "{text:?}"
    );
    assert!(
        text[1].contains(" WARN ") && text[1].ends_with("warn line answer=42"),
        "{text:?}"
    );
    for line in &text {
        // A recorded span field shows once, however many sinks format the span.
        assert!(line.contains(r#"request{id=7 user="ann"}"#), "{line}");
        assert!(!line.contains('\u{1b}'), "no colours in a file: {line:?}");
    }
}

/// One callsite, so that the test sees its interest change.
fn note(text: &str) {
    info!(note = text, "noted");
}

#[test]
fn a_reload_replaces_the_sinks() {
    let dir = Scratch::new("log-reload");
    let (a, b) = (dir.join("a.log"), dir.join("b.log"));
    let file_sink = |path: &Path, level: &str| {
        format!(
            "[[log.sinks]]\nkind = \"file\"\npath = \"{}\"\nlevel = \"{level}\"\n",
            path.display()
        )
    };
    let (handle, _guard) = subscribe(&file_sink(&a, "warn"));
    // What this shows (a reload rebuilds which callsites are enabled, and the most verbose
    // level) holds only while no other subscriber enables `note` anyway. Under `cargo test`,
    // which runs tests as threads of one process, another test's subscriber may; nextest, which
    // CI runs, gives each test a process of its own, where this subscriber is alone: `note`
    // is then off until the reload rebuilds the interest cache.
    let alone = LevelFilter::current() == LevelFilter::WARN;
    assert!(
        alone || std::env::var_os("NEXTEST_RUN_ID").is_none(),
        "another subscriber is live in this nextest process: {}",
        LevelFilter::current()
    );
    note("while warn");
    warn!("first warning");

    // The same file at another level: kept open, and the callsite disabled so far is enabled.
    handle.reload(&log_config(&file_sink(&a, "info"))).unwrap();
    if alone {
        assert_eq!(LevelFilter::current(), LevelFilter::INFO);
    }
    note("while info");

    // Elsewhere, and JSON.
    let config = format!("{}format = \"json\"\n", file_sink(&b, "warn"));
    handle.reload(&log_config(&config)).unwrap();
    note("after the move");
    warn!("second warning");

    let a_lines = lines(&a);
    assert_eq!(a_lines.len(), 2, "{a_lines:?}");
    assert!(a_lines[0].ends_with("first warning"), "{a_lines:?}");
    assert!(
        a_lines[1].ends_with(r#"noted note="while info""#),
        "{a_lines:?}"
    );
    let b_lines = lines(&b);
    assert_eq!(b_lines.len(), 1, "{b_lines:?}");
    let event: serde_json::Value = serde_json::from_str(&b_lines[0]).unwrap();
    assert_eq!(event["fields"]["message"], "second warning");

    // A sink that cannot be built rejects the new set; the old one stays.
    let bad = log_config(&file_sink(Path::new("/proc/no-such-dir/c.log"), "info"));
    let e = handle.prepare(&bad).unwrap_err();
    assert_eq!(e.key(), "log.sinks[0].path");
    assert!(e.message().contains("/proc/no-such-dir/c.log"), "{e}");
    warn!("third warning");
    assert_eq!(lines(&b).len(), 2);
}

#[test]
fn records_through_the_log_crate_follow_a_reload() {
    let dir = Scratch::new("log-facade");
    let path = dir.join("app.log");
    let sink = |level: &str| {
        log_config(&format!(
            "[[log.sinks]]\nkind = \"file\"\npath = \"{}\"\nlevel = \"{level}\"\n",
            path.display()
        ))
    };
    let layer = LogLayer::new(&sink("warn"), "testapp").unwrap();
    let handle = layer.handle();
    // As an application run as a process has it: the global subscriber, with tracing-log's
    // LogTracer taking `log` records (nextest gives each test a process of its own).
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .unwrap();
    log::info!("below warn");
    log::warn!("a log warning");
    handle.reload(&sink("info")).unwrap();
    log::info!("a log info");
    let got = lines(&path);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].ends_with("a log warning"), "{got:?}");
    assert!(got[1].ends_with("a log info"), "{got:?}");
    // Nothing more from this global subscriber for the other tests in this process, if any.
    handle
        .reload(&log_config("[log]\nlevel = \"off\"\n"))
        .unwrap();
}

#[test]
fn no_sinks_means_the_console_at_log_level() {
    let config = log_config("[log]\nlevel = \"warn\"\n");
    assert!(config.sinks.is_empty());
    let layer = LogLayer::new(&config, "testapp").unwrap();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    assert!(tracing::enabled!(tracing::Level::WARN));
    assert!(!tracing::enabled!(tracing::Level::INFO));
}

/// A syslog datagram, parsed.
fn receive_syslog(
    recv: impl Fn(&mut [u8]) -> std::io::Result<usize>,
) -> syslog_rfc5424::SyslogMessage {
    let mut buf = vec![0u8; 65536];
    let n = recv(&mut buf).expect("a syslog datagram within the time limit");
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    syslog_rfc5424::parse_message(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn syslog_frames_over_udp_parse_as_rfc_5424() {
    let text_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let json_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for socket in [&text_socket, &json_socket] {
        socket.set_read_timeout(Some(LIMIT)).unwrap();
    }
    let (_handle, _guard) = subscribe(&format!(
        r#"
[[log.sinks]]
kind = "syslog"
address = "udp://{}"
facility = "local3"
app_name = "shoaltest"
[[log.sinks]]
kind = "syslog"
address = "udp://{}"
level = "warn"
format = "json"
"#,
        text_socket.local_addr().unwrap(),
        json_socket.local_addr().unwrap()
    ));
    error!(disk = "sda", "disk full");
    warn!("running low");
    info!("all fine");
    debug!("not sent");
    info!("the end");

    let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let expected = [
        (SyslogSeverity::SEV_ERR, "disk full disk=\"sda\""),
        (SyslogSeverity::SEV_WARNING, "running low"),
        (SyslogSeverity::SEV_INFO, "all fine"),
        (SyslogSeverity::SEV_INFO, "the end"),
    ];
    for (severity, message) in expected {
        let frame = receive_syslog(|buf| text_socket.recv(buf));
        assert_eq!(frame.facility, SyslogFacility::LOG_LOCAL3);
        assert_eq!(frame.severity, severity, "{frame:?}");
        assert_eq!(frame.version, 1);
        assert_eq!(frame.appname.as_deref(), Some("shoaltest"));
        assert_eq!(frame.hostname.as_deref(), Some(hostname.as_str()));
        assert_eq!(
            frame.procid,
            Some(syslog_rfc5424::message::ProcId::PID(
                std::process::id() as i32
            ))
        );
        assert!(frame.timestamp.is_some() && frame.timestamp_nanos.is_some());
        // The text line without its own time and level: `target: message fields`.
        assert_eq!(frame.msg, format!("logging: {message}"), "{frame:?}");
    }

    for (severity, message) in [
        (SyslogSeverity::SEV_ERR, "disk full"),
        (SyslogSeverity::SEV_WARNING, "running low"),
    ] {
        let frame = receive_syslog(|buf| json_socket.recv(buf));
        assert_eq!(frame.facility, SyslogFacility::LOG_USER);
        assert_eq!(frame.severity, severity);
        assert_eq!(frame.appname.as_deref(), Some("testapp"));
        let event: serde_json::Value = serde_json::from_str(&frame.msg).unwrap();
        assert_eq!(event["fields"]["message"], message);
        assert!(event.get("timestamp").is_none(), "{event}");
    }
}

#[test]
fn syslog_frames_over_a_unix_socket_parse_as_rfc_5424() {
    let dir = Scratch::new("log-syslog");
    let path = dir.join("log.sock");
    let missing = log_config(&format!(
        "[[log.sinks]]\nkind = \"syslog\"\naddress = \"unix:{}\"\n",
        path.display()
    ));
    let e = LogLayer::new(&missing, "testapp").unwrap_err();
    assert_eq!(e.key(), "log.sinks[0].address");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");

    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    let (_handle, _guard) = subscribe(&format!(
        "[[log.sinks]]\nkind = \"syslog\"\naddress = \"{}\"\nfacility = \"daemon\"\n",
        path.display()
    ));
    warn!("over a unix socket");
    let frame = receive_syslog(|buf| socket.recv(buf));
    assert_eq!(frame.facility, SyslogFacility::LOG_DAEMON);
    assert_eq!(frame.severity, SyslogSeverity::SEV_WARNING);
    assert_eq!(frame.appname.as_deref(), Some("testapp"));
    assert_eq!(frame.msg, "logging: over a unix socket");
}

// The email sink's tests: built with the `email` feature (the workspace build turns it on).
#[cfg(feature = "email")]
/// A mail as the SMTP server received it.
#[derive(Debug, Clone)]
struct Mail {
    at: Instant,
    from: String,
    to: Vec<String>,
    data: String,
}

#[cfg(feature = "email")]
/// Just enough of an SMTP server: every connection on its own thread, every mail kept.
struct SmtpServer {
    addr: std::net::SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
}

#[cfg(feature = "email")]
impl SmtpServer {
    fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let kept = mails.clone();
        // Ends with the test process; each connection ends with its client.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let _ = converse(stream, &kept);
                });
            }
        });
        SmtpServer { addr, mails }
    }

    fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits until `n` mails have arrived.
    fn wait_for(&self, n: usize) -> Vec<Mail> {
        wait_until(&format!("{n} mails"), || {
            let mails = self.mails();
            (mails.len() >= n).then_some(mails)
        })
    }
}

#[cfg(feature = "email")]
fn converse(stream: TcpStream, mails: &Mutex<Vec<Mail>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    out.write_all(b"220 test.invalid ESMTP\r\n")?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => out.write_all(b"250 test.invalid\r\n")?,
            "MAIL" => {
                from = command.clone();
                to.clear();
                out.write_all(b"250 OK\r\n")?;
            }
            "RCPT" => {
                to.push(command.clone());
                out.write_all(b"250 OK\r\n")?;
            }
            "DATA" => {
                out.write_all(b"354 go on\r\n")?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    // Undo dot-stuffing.
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                mails.lock().unwrap().push(Mail {
                    at: Instant::now(),
                    from: from.clone(),
                    to: to.clone(),
                    data,
                });
                out.write_all(b"250 queued\r\n")?;
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"250 OK\r\n")?,
        }
    }
}

#[cfg(feature = "email")]
fn email_sink(server: &SmtpServer, extra: &str) -> String {
    format!(
        r#"
[[log.sinks]]
kind = "email"
smtp = "{}"
from = "app@example.com"
to = ["ops@example.com", "dev@example.com"]
{extra}
"#,
        server.url()
    )
}

#[cfg(feature = "email")]
#[test]
fn errors_are_mailed_at_once_then_at_most_once_per_interval() {
    let server = SmtpServer::start();
    // Long enough that a stalled machine does not split the second and third error (sent one
    // after the other) into two mails.
    let interval = Duration::from_secs(3);
    let (_handle, _guard) = subscribe(&email_sink(&server, "interval = \"3s\""));
    error!("first failure");
    let mails = server.wait_for(1);
    warn!("a warning is not mailed");
    info!("nor is news");
    error!("second failure");
    error!("third failure");
    let mails_now = server.wait_for(2);
    assert_eq!(mails_now.len(), 2, "{mails_now:#?}");
    let (first, second) = (&mails[0], &mails_now[1]);

    assert!(first.data.contains("first failure"), "{}", first.data);
    assert!(!first.data.contains("second failure"), "{}", first.data);
    assert!(
        second.data.contains("second failure") && second.data.contains("third failure"),
        "{}",
        second.data
    );
    // The mailer waits out the interval from the end of the last mail; the server stores a
    // mail before it answers, so this holds whatever the scheduling.
    assert!(
        second.at - first.at >= interval,
        "{:?}",
        second.at - first.at
    );
    for mail in [first, second] {
        assert!(!mail.data.contains("warning") && !mail.data.contains("news"));
        assert!(mail.from.contains("<app@example.com>"), "{}", mail.from);
        assert_eq!(mail.to.len(), 2, "{:?}", mail.to);
        let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert!(
            mail.data
                .contains(&format!("Subject: [testapp] errors on {hostname}")),
            "{}",
            mail.data
        );
    }
}

#[cfg(feature = "email")]
#[test]
fn pending_lines_are_mailed_when_the_sink_goes_away() {
    let server = SmtpServer::start();
    let (handle, _guard) = subscribe(&email_sink(&server, "interval = \"1h\""));
    error!("one");
    server.wait_for(1);
    error!("two");
    error!("three");
    error!("four");
    // Within the hour only because the sink is replaced.
    handle
        .reload(&log_config("[log]\nlevel = \"off\"\n"))
        .unwrap();
    let mails = server.wait_for(2);
    let last = &mails[1].data;
    for line in ["two", "three", "four"] {
        assert!(last.contains(&format!("logging: {line}")), "{last}");
    }
}

#[cfg(feature = "email")]
#[test]
fn a_mail_says_how_many_lines_it_left_out() {
    let server = SmtpServer::start();
    let (handle, _guard) = subscribe(&email_sink(
        &server,
        "interval = \"1h\"\nmax_lines = 3\nsubject = \"trouble\"",
    ));
    error!("line 0");
    server.wait_for(1);
    for n in 1..=5 {
        error!("line {n}");
    }
    // close sends the pending lines and returns once they are sent.
    handle.close(LIMIT);
    let mails = server.mails();
    assert_eq!(mails.len(), 2);
    let last = &mails[1].data;
    assert!(last.contains("Subject: trouble"), "{last}");
    for n in 1..=3 {
        assert!(last.contains(&format!("line {n}")), "{last}");
    }
    assert!(
        !last.contains("line 4") && !last.contains("line 5"),
        "{last}"
    );
    assert!(last.contains("(2 more lines were left out"), "{last}");
}

#[cfg(feature = "email")]
#[test]
fn a_changed_email_sink_waits_out_the_interval_from_the_last_mail() {
    let server = SmtpServer::start();
    let interval = Duration::from_secs(3);
    let sink = |subject: &str| {
        log_config(&email_sink(
            &server,
            &format!("interval = \"3s\"\nsubject = \"{subject}\""),
        ))
    };
    let (handle, _guard) = subscribe(&email_sink(&server, "interval = \"3s\"\nsubject = \"old\""));
    error!("one");
    server.wait_for(1);
    error!("two");
    let reloaded = Instant::now();
    // The old mailer sends "two" at once in its last mail; the new one must not send "three"
    // right beside it.
    handle.reload(&sink("new")).unwrap();
    error!("three");
    let mails = server.wait_for(3);
    assert!(mails[1].data.contains("Subject: old"), "{}", mails[1].data);
    assert!(mails[1].data.contains("logging: two"), "{}", mails[1].data);
    assert!(mails[2].data.contains("Subject: new"), "{}", mails[2].data);
    assert!(
        mails[2].data.contains("logging: three"),
        "{}",
        mails[2].data
    );
    // The old mailer's last mail counts from the reload on, whenever it got through.
    assert!(
        mails[2].at - reloaded >= interval,
        "{:?}",
        mails[2].at - reloaded
    );
}

#[cfg(feature = "email")]
#[test]
fn a_mail_carries_at_most_a_mebibyte() {
    let server = SmtpServer::start();
    let (handle, _guard) = subscribe(&email_sink(&server, "interval = \"1h\""));
    error!("first");
    server.wait_for(1);
    let long = "x".repeat(100 << 10);
    for n in 0..12 {
        error!("long {n:02} {long}");
    }
    handle.close(LIMIT);
    let mails = server.mails();
    assert_eq!(mails.len(), 2);
    // Lines this long are sent quoted-printable: undo its soft line breaks.
    let text = mails[1].data.replace("=\r\n", "");
    assert!(text.len() < (1 << 20) + (64 << 10), "{} bytes", text.len());
    let sent = (0..12)
        .filter(|n| text.contains(&format!("long {n:02} x")))
        .count();
    // Each line is 100 KiB and a few dozen bytes: ten fit.
    assert_eq!(sent, 10);
    assert!(
        text.contains("(2 more lines were left out: a mail carries at most 1000 lines and 1 MiB)"),
        "{}",
        &text[text.len() - 200..]
    );
}

/// The example binary `name`, built beside this test by `cargo test` / `cargo nextest`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first (cargo build -p shoal --examples)",
        path.display()
    );
    path
}

fn hello_config(dir: &Scratch, log: &Path, level: &str) -> PathBuf {
    dir.write(
        "hello.toml",
        &format!(
            "[rpc]\nlisten = \"127.0.0.1:0\"\n\n[[log.sinks]]\nkind = \"file\"\npath = \"{}\"\nlevel = \"{level}\"\n",
            log.display()
        ),
    )
}

#[test]
fn a_process_file_sink_follows_sighup() {
    let dir = Scratch::new("log-process");
    let log = dir.join("logs/hello.log");
    let config = hello_config(&dir, &log, "warn");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(LIMIT)).unwrap();
    let next = || {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut child = Command::new(example("hello"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("WATCHDOG_PID")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    assert_eq!(next(), "READY=1");
    assert!(log.exists(), "the file sink opened {}", log.display());
    assert!(!read_text(&log).contains("ready"), "info is below warn");

    hello_config(&dir, &log, "info");
    kill(pid, Signal::SIGHUP).unwrap();
    assert_eq!(next(), "RELOADING=1");
    assert_eq!(next(), "READY=1");
    let text = read_text(&log);
    assert!(text.contains("configuration reloaded"), "{text}");

    kill(pid, Signal::SIGTERM).unwrap();
    assert_eq!(next(), "STOPPING=1");
    let status = wait_until("the exit", || child.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
    // The runtime's last line, at info: only the reload let it through.
    let text = read_text(&log);
    assert!(
        text.lines().any(|line| line.contains(" INFO ")
            && line.ends_with("shoal::app::runtime: closed exit=Closed code=0")),
        "{text}"
    );
}

#[test]
fn a_process_whose_log_file_cannot_be_opened_does_not_start() {
    let dir = Scratch::new("log-process-bad");
    let config = hello_config(&dir, Path::new("/proc/no-such-dir/hello.log"), "info");
    let output = Command::new(example("hello"))
        .arg("--config")
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "hello: {}:6: key `log.sinks[0].path`: cannot open /proc/no-such-dir/hello.log",
        config.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}
