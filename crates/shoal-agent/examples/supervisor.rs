//! A supervisor on a data directory, driven line by line on stdin: what the adoption tests
//! run as an agent of its own, kill with SIGKILL and start again.
//!
//! `supervisor DATA_DIR`, then commands, each answered with one line on stdout:
//!
//! - `add NAME DIR`: registers `DIR/run.sh` as program NAME (restart always) and starts it;
//!   answers `ok` or `error: ...`.
//! - `status`: answers the status of every program as one JSON array.
//! - `shutdown` (or the end of stdin): stops every program, answers `ok`, exits.
//! - `detach`: leaves every program running, answers `ok`, exits.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_agent::{DataDir, ProgramSpec, State, Supervisor};
use shoal_pkg::manifest::{Command, Logs, Name, Restart, StopSignal};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let root = std::env::args().nth(1).expect("usage: supervisor DATA_DIR");
    let data = DataDir::create(&root).expect("data directory");
    let state = State::open(&data.database()).expect("state database");
    let supervisor = Supervisor::open(data, state).await.expect("supervisor");
    let mut stdout = tokio::io::stdout();
    // Ready once adoption is done.
    answer(&mut stdout, "ready").await;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["add", name, dir] => {
                let added = add(&supervisor, name, dir).await;
                answer(
                    &mut stdout,
                    &added.map_or_else(|e| format!("error: {e}"), |()| "ok".into()),
                )
                .await;
            }
            ["status"] => {
                let status = serde_json::to_string(&supervisor.status()).unwrap();
                answer(&mut stdout, &status).await;
            }
            ["detach"] => {
                supervisor.detach().await;
                answer(&mut stdout, "ok").await;
                return;
            }
            ["shutdown"] => break,
            _ => answer(&mut stdout, &format!("error: unknown command {line:?}")).await,
        }
    }
    supervisor.shutdown().await;
    answer(&mut stdout, "ok").await;
}

async fn add(supervisor: &Supervisor, name: &str, dir: &str) -> Result<(), String> {
    let spec = ProgramSpec {
        name: Name::new(name)?,
        version: "1.0.0".parse().unwrap(),
        dir: dir.into(),
        command: Command {
            program: "./run.sh".into(),
            args: Vec::new(),
        },
        env: BTreeMap::new(),
        stop_signal: StopSignal::Term,
        stop_timeout: Duration::from_secs(1),
        shutdown_delay: Duration::ZERO,
        restart: Restart::Always,
        health: None,
        logs: Logs::default(),
        start_after: Vec::new(),
    };
    let name = spec.name.clone();
    supervisor.add(spec).await.map_err(|e| e.to_string())?;
    supervisor.start(&name).await.map_err(|e| e.to_string())
}

async fn answer(stdout: &mut tokio::io::Stdout, line: &str) {
    stdout
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    stdout.flush().await.unwrap();
}
