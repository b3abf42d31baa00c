//! `GET /v1/apps/{name}/logs` through the real API on a real agent: log files written
//! straight into the data directory, read back with `grep`, `since` and `tail`.

mod common;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use common::Scratch;
use shoal_agent::api::{AgentClient, ClientError};
use shoal_agent::{Agent, Options};
use tokio_util::sync::CancellationToken;

/// An agent serving its API, with one installed app (`app`, a crontab package whose job runs
/// once a year) whose log directory the test writes.
struct Served {
    agent: Agent,
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
        let agent = Agent::open(&data, Options::default()).await.unwrap();
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
        agent.install(&built.archive, &built.sha256).await.unwrap();
        let stop = CancellationToken::new();
        agent.serve(stop.clone()).await.unwrap();
        let client = AgentClient::open(&data).unwrap();
        let logs = data.join("logs/app");
        std::fs::create_dir_all(&logs).unwrap();
        Served {
            agent,
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

    async fn close(self) {
        self.stop.cancel();
        self.agent.close(true).await;
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
