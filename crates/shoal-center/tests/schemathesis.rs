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
    let url = format!("{}/api/v1/openapi.json", served.url);
    let header = format!("Authorization: Bearer {}", served.admin);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(tool)
            .args(["run", &url, "--header", &header])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--max-examples",
                "30",
                "--seed",
                "1",
            ])
            .env("SCHEMATHESIS_HOOKS", "")
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
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(!text.contains(&served.admin), "the token was printed");
}
