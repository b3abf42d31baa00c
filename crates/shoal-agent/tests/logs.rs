//! `GET /v1/apps/{name}/logs` through the real API on a real agent: log files written
//! straight into the data directory (and through `RotatingFile`, rotated while followed), read
//! back with `grep`, `since`, `tail` and `follow`.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::Scratch;
use shoal::logging::{RotatingFile, Rotation};
use shoal_agent::api::{AgentClient, ClientError};
use shoal_agent::{Config, Programs, Running};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a wait for followed lines may take.
const LIMIT: Duration = Duration::from_secs(20);

/// An agent serving its API, with one installed app (`app`, a crontab package whose job runs
/// once a year) whose log directory the test writes.
struct Served {
    running: Running,
    stop: CancellationToken,
    client: AgentClient,
    /// `logs/app` in the data directory.
    logs: PathBuf,
    _dir: Scratch,
}

impl Served {
    async fn new(name: &str) -> Served {
        let dir = Scratch::new(&format!("logs-{name}"));
        let data = dir.0.join("data");
        let stop = CancellationToken::new();
        let config = Config {
            at_exit: Programs::Stop,
            ..Config::new(&data)
        };
        let running = shoal_agent::run(config, stop.clone()).await.unwrap();
        let pkg = dir.0.join("pkg");
        std::fs::create_dir_all(pkg.join("bin")).unwrap();
        std::fs::write(pkg.join("bin/job"), "#!/bin/sh\n").unwrap();
        std::fs::write(
            pkg.join("shoal.toml"),
            "[package]\nname = \"app\"\nversion = \"1.0.0\"\nkind = \"crontab\"\n\n\
             [[cron]]\nname = \"yearly\"\nschedule = \"0 0 0 1 1 *\"\ncommand = \"bin/job\"\n",
        )
        .unwrap();
        let built = shoal_pkg::build(&pkg, &dir.0.join("out")).unwrap();
        running
            .agent()
            .install(&built.archive, &built.sha256)
            .await
            .unwrap();
        let client = AgentClient::open(&data).unwrap();
        let logs = data.join("logs/app");
        std::fs::create_dir_all(&logs).unwrap();
        Served {
            running,
            stop,
            client,
            logs,
            _dir: dir,
        }
    }

    /// Writes `lines` (each gets a newline) as the file `name` in the app's log directory.
    fn write(&self, name: &str, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(self.logs.join(name), text).unwrap();
    }

    /// The answer to `GET /v1/apps/app/logs?QUERY`.
    async fn get(&self, query: &str) -> Result<String, ClientError> {
        let mut out = Vec::new();
        self.client
            .stream(&format!("/v1/apps/app/logs?{query}"), |chunk| {
                out.extend_from_slice(chunk)
            })
            .await?;
        Ok(String::from_utf8(out).unwrap())
    }

    /// `GET /v1/apps/app/logs?QUERY&follow=true`, read as it arrives.
    fn follow(&self, query: &str) -> Followed {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.client.clone();
        let path = format!("/v1/apps/app/logs?{query}&follow=true");
        let task = tokio::spawn(async move {
            let _ = client
                .stream(&path, |chunk| {
                    let _ = tx.send(chunk.to_vec());
                })
                .await;
        });
        Followed {
            task,
            rx,
            pending: Vec::new(),
            lines: Vec::new(),
        }
    }

    async fn close(self) {
        self.stop.cancel();
        self.running.stopped().await;
    }
}

/// A followed log: the whole lines received so far.
struct Followed {
    task: tokio::task::JoinHandle<()>,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Vec<u8>,
    lines: Vec<String>,
}

impl Followed {
    /// Receives until `done` holds for the lines so far, or panics after [`LIMIT`].
    async fn until(&mut self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !done(&self.lines) {
            let chunk = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out waiting for {what}; {} lines received, the last {:?}",
                        self.lines.len(),
                        self.lines.last()
                    )
                })
                .expect("the followed answer ended");
            self.pending.extend_from_slice(&chunk);
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                self.lines
                    .push(String::from_utf8_lossy(&line[..end]).into_owned());
            }
        }
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `2026-01-01T10:00:00.000Z` plus `ms` milliseconds, as the capture writes times.
fn at(ms: i64) -> String {
    let start: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
    stamp(start + chrono::Duration::milliseconds(ms))
}

fn stamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The lines of an answer with their times taken off.
fn messages(text: &str) -> Vec<&str> {
    text.lines()
        .map(|l| match l.split_once(' ') {
            Some((time, rest)) if DateTime::parse_from_rfc3339(time).is_ok() => rest,
            _ => l,
        })
        .collect()
}

#[tokio::test]
async fn a_since_further_back_than_time_goes_keeps_every_line() {
    let t = Served::new("since").await;
    let now = Utc::now();
    t.write(
        "stdout.log",
        &[
            format!("{} two hours ago", stamp(now - chrono::Duration::hours(2))),
            format!("{} just now", stamp(now)),
        ],
    );
    let check = |since: &'static str, expected: &'static [&'static str]| {
        let t = &t;
        async move {
            let got = t.get(&format!("since={since}")).await.unwrap();
            assert_eq!(messages(&got), expected, "since {since}");
        }
    };
    check("1h", &["just now"]).await;
    check("3h", &["two hours ago", "just now"]).await;
    check("300000y", &["two hours ago", "just now"]).await;
    check("600000000y", &["two hours ago", "just now"]).await;
    match t.get("since=soon").await {
        Err(ClientError::Api {
            status: 400,
            message,
        }) => {
            assert!(message.contains("since \"soon\""), "{message}")
        }
        other => panic!("{other:?}"),
    }
    t.close().await;
}

#[tokio::test]
async fn grep_looks_past_the_time() {
    let t = Served::new("grep").await;
    t.write(
        "stdout.log",
        &[
            format!("{} NEWEST release is out", at(0)),
            format!("{} the job began at 10:00 sharp", at(1000)),
            format!("{} nothing to see", at(2000)),
            // The rest of a line too long for one record: no time of its own.
            "NEWEST and untimed".to_owned(),
        ],
    );
    let check = |grep: &'static str, expected: &'static [&'static str]| {
        let t = &t;
        async move {
            let got = t.get(&format!("grep={grep}")).await.unwrap();
            assert_eq!(messages(&got), expected, "grep {grep}");
        }
    };
    check(
        "%5ENEWEST",
        &["NEWEST release is out", "NEWEST and untimed"],
    )
    .await;
    check("10%3A00", &["the job began at 10:00 sharp"]).await;
    check("%5Ethe%20job", &["the job began at 10:00 sharp"]).await;
    check("%5E2026", &[]).await;
    t.close().await;
}

#[tokio::test]
async fn a_busy_stream_does_not_crowd_out_the_other_ones_newest_lines() {
    let t = Served::new("merge").await;
    // The newest five lines are on stdout; stderr has many more, all older.
    let newest: Vec<String> = (0..5)
        .map(|i| format!("{} NEWEST {i}", at(3_600_000 + i)))
        .collect();
    t.write("stdout.log", &newest);
    let older: Vec<String> = (0..250_000).map(|i| format!("{} err {i}", at(i))).collect();
    t.write("stderr.log", &older);
    let got = t.get("tail=5").await.unwrap();
    assert_eq!(
        messages(&got),
        ["NEWEST 0", "NEWEST 1", "NEWEST 2", "NEWEST 3", "NEWEST 4"]
    );
    // Interleaved by time, each stream's own order kept.
    t.write(
        "stdout.log",
        &[format!("{} out 1", at(1)), format!("{} out 3", at(3))],
    );
    t.write(
        "stderr.log",
        &[format!("{} err 2", at(2)), format!("{} err 4", at(4))],
    );
    let got = t.get("tail=3").await.unwrap();
    assert_eq!(messages(&got), ["err 2", "out 3", "err 4"]);
    t.close().await;
}

#[tokio::test]
async fn rotated_files_are_read_once_each_in_order() {
    let t = Served::new("rotated").await;
    let gz = |name: &str, lines: &[String]| {
        use std::io::Write as _;
        let file = std::fs::File::create(t.logs.join(name)).unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        for line in lines {
            writeln!(gz, "{line}").unwrap();
        }
        gz.finish().unwrap();
    };
    let line = |n: i64| format!("{} line {n}", at(n));
    // An earlier version's local-time name, then UTC ones, a second rotation within a second.
    gz("stdout.log.20251231-235959.gz", &[line(0), line(1)]);
    gz("stdout.log.20260101T100000Z.gz", &[line(2), line(3)]);
    // Compressed while the request looks: the rotated file and its whole `.gz` are both there,
    // and the `.gz.tmp` of another compression under way.
    t.write("stdout.log.20260101T100000Z-1", &[line(4), line(5)]);
    gz("stdout.log.20260101T100000Z-1.gz", &[line(4), line(5)]);
    std::fs::write(t.logs.join("stdout.log.20260101T100000Z-2.gz.tmp"), "half").unwrap();
    t.write("stdout.log.20260101T100000Z-2", &[line(6)]);
    t.write("stdout.log", &[line(7), line(8)]);
    let all: Vec<String> = (0..9).map(|n| format!("line {n}")).collect();
    let got = t.get("tail=100").await.unwrap();
    assert_eq!(messages(&got), all);
    let got = t.get("tail=4").await.unwrap();
    assert_eq!(messages(&got), all[5..]);
    let got = t.get("tail=0").await.unwrap();
    assert_eq!(got, "");
    t.close().await;
}

#[tokio::test]
async fn following_goes_on_from_exactly_where_the_first_read_stopped() {
    let t = Served::new("follow-start").await;
    let log = RotatingFile::open(
        t.logs.join("stdout.log"),
        Rotation {
            max_size: None,
            ..Rotation::default()
        },
    )
    .unwrap();
    // A writer that never pauses long, so that lines land while the request reads.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 1_000_000 {
                log.write_record(format!("{} line {n}\n", stamp(Utc::now())).as_bytes())
                    .unwrap();
                n += 1;
                if n % 64 == 0 {
                    // Paced, not synchronised: keeps the file from growing too fast.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            n
        })
    };
    let number = |line: &String| -> u64 { line.rsplit_once(' ').unwrap().1.parse().unwrap() };
    let deadline = Instant::now() + LIMIT;
    while std::fs::metadata(t.logs.join("stdout.log")).map_or(0, |m| m.len()) < 40_000 {
        assert!(Instant::now() < deadline, "the writer wrote nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut followed = t.follow("tail=100000");
    followed
        .until("the first lines", |lines| !lines.is_empty())
        .await;
    let first = number(&followed.lines[0]);
    followed
        .until("lines written after the first read", |lines| {
            lines.last().is_some_and(|l| number(l) > first + 2000)
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    followed
        .until("the last line written", |lines| {
            lines.last().is_some_and(|l| number(l) == written - 1)
        })
        .await;
    let numbers: Vec<u64> = followed.lines.iter().map(number).collect();
    let expected: Vec<u64> = (first..written).collect();
    if numbers != expected {
        let gap = numbers.windows(2).find(|w| w[1] != w[0] + 1);
        panic!(
            "{} lines from {first} to {}, not {}; first break: {gap:?}",
            numbers.len(),
            written - 1,
            expected.len()
        );
    }
    drop(followed);
    t.close().await;
}

#[tokio::test]
async fn following_reads_each_file_to_its_end_across_rotations() {
    let t = Served::new("follow-rotate").await;
    let log = RotatingFile::open(
        t.logs.join("stdout.log"),
        Rotation {
            max_size: None,
            keep: 100,
            ..Rotation::default()
        },
    )
    .unwrap();
    // Numbered lines from `from` on.
    let write = |from: usize, count: usize| {
        for i in from..from + count {
            log.write_record(format!("{} line {i}\n", stamp(Utc::now())).as_bytes())
                .unwrap();
        }
        from + count
    };
    let mut n = write(0, 3);
    let mut followed = t.follow("tail=100");
    followed
        .until("the lines there before", |l| l.len() == 3)
        .await;
    let rounds = 12;
    for round in 0..rounds {
        // Lines written to the old file just before it is rotated, then more in the new one
        // than the old one held (a new file longer than the old offset), and one line in two
        // records, which arrives whole.
        n = write(n, 5);
        log.rotate().unwrap();
        n = write(n, 10 * (round + 2));
        log.write_record(format!("{} line {n}", stamp(Utc::now())).as_bytes())
            .unwrap();
        log.write_record(b" and its end\n").unwrap();
        n += 1;
        followed
            .until(&format!("round {round}'s lines"), |l| l.len() == n)
            .await;
    }
    let got: Vec<&str> = followed
        .lines
        .iter()
        .map(|l| l.split_once(' ').unwrap().1)
        .collect();
    let numbered: Vec<&str> = got
        .iter()
        .map(|l| l.trim_end_matches(" and its end"))
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("line {i}")).collect();
    assert_eq!(numbered, expected);
    let whole = got.iter().filter(|l| l.ends_with(" and its end")).count();
    assert_eq!(whole, rounds);
    log.wait_idle();
    drop(followed);
    t.close().await;
}
