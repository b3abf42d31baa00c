//! schemathesis against a running center's API with an admin token: generated requests for
//! every operation of `/api/v1/openapi.json`; no answer is a 5xx, and every answer matches the
//! document. The tool comes from `SHOAL_TEST_SCHEMATHESIS` (CI installs it pinned into a venv).

mod common;

use std::process::Command;

use common::{serve, Fleet};
use shoal_center::Limits;

/// The schemathesis command, or `None` (skipped) when it is not installed here.
fn schemathesis() -> Option<String> {
    match std::env::var("SHOAL_TEST_SCHEMATHESIS") {
        Ok(path) if !path.is_empty() => Some(path),
        _ if std::env::var("SHOAL_REQUIRE_TOOLS").as_deref() == Ok("1") => {
            panic!("SHOAL_TEST_SCHEMATHESIS is not set; SHOAL_REQUIRE_TOOLS=1 requires it")
        }
        _ => {
            println!("skipped: SHOAL_TEST_SCHEMATHESIS is not set (a schemathesis executable)");
            None
        }
    }
}

/// Runs schemathesis against the API at `base` with `token`; panics with its report when it
/// finds a problem.
async fn check(tool: String, base: &str, token: &str) {
    let url = format!("{base}/api/v1/openapi.json");
    let header = format!("Authorization: Bearer {token}");
    // schemathesis keeps a cache in its working directory: a scratch one, not the crate's.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "shoal-st-cwd-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&scratch).unwrap();
    let cwd = scratch.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(tool)
            .current_dir(cwd)
            .args(["run", &url, "--header", &header])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--max-examples",
                "30",
                "--seed",
                "1",
            ])
            .env("NO_COLOR", "1")
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(!text.contains(token), "the token was printed");
}

/// The API over agents that answer (a stand-in link), so commands run to their results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_no_5xx_and_answers_match_the_document() {
    let Some(tool) = schemathesis() else {
        return;
    };
    let served = serve(
        Fleet::with(&[
            ("a1", "prod", &[("role", "web")], true),
            ("b1", "staging", &[], true),
        ]),
        Limits::default(),
    )
    .await;
    check(tool, &served.url, &served.admin).await;
}

/// A running center, as `shoal center` starts it, with its first admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_center_gets_no_5xx_and_its_answers_match_the_document() {
    let Some(tool) = schemathesis() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("shoal-center-st-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = shoal_center::Config::new(&dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.http = "127.0.0.1:0".parse().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = shoal_center::run(config, shutdown.clone()).await.unwrap();
    let token = running
        .admin_token
        .clone()
        .expect("a first start makes the admin token");
    check(tool, &format!("http://{}", running.http), &token).await;
    shutdown.cancel();
    running.stopped().await;
    let _ = std::fs::remove_dir_all(&dir);
}
