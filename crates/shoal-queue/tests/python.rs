//! The Python module (`python/shoal_queue.py`, plain `msgpack` from PyPI) against a real queue
//! on loopback: `tests/python/exercise.py` drives every call and asserts each answer, then
//! the Rust client reads what it left.
//!
//! The interpreter is `$SHOAL_TEST_PYTHON` (a venv with `msgpack`, as `.ci/run` makes);
//! without it the test prints `skipped:` and passes, unless `SHOAL_REQUIRE_TOOLS=1`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use shoal_queue::{Client, Config, Queue};

const PYTHON: &str = "SHOAL_TEST_PYTHON";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_module_speaks_every_call() {
    let Some(python) = python().await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("shoal-queue-python-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let queue = Queue::bind(Config::new(&dir, "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let addr = queue.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(queue.serve(async move {
        let _ = stopped.await;
    }));

    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python)
            .arg(crate_dir.join("tests/python/exercise.py"))
            .arg(addr.to_string())
            .env("PYTHONPATH", crate_dir.join("python"))
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the Python client finishes")
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "python client: ok\n");

    // What Python published and acked reads the same from Rust.
    let client = Client::connect(&addr).await.unwrap();
    let stats = client.stats(Some("py")).await.unwrap();
    assert_eq!(stats[0].subs.len(), 1, "{stats:?}");
    assert_eq!(stats[0].subs[0].name, "keeper");
    let got = client
        .fetch("py", "keeper", 3, Duration::ZERO)
        .await
        .unwrap();
    let got: Vec<(u64, Vec<u8>)> = got.into_iter().map(|m| (m.seq, m.data)).collect();
    assert_eq!(
        got,
        [
            (1, b"one".to_vec()),
            (2, b"two".to_vec()),
            (3, b"three".to_vec())
        ]
    );
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The interpreter, or `None` after printing why the test is skipped; under
/// `SHOAL_REQUIRE_TOOLS=1` (as `.ci/run` sets it) a missing interpreter fails the test.
async fn python() -> Option<PathBuf> {
    let skip = |why: String| {
        let why = format!(
            "Python queue client: {why} (set {PYTHON} to a venv with msgpack, see .ci/run)"
        );
        if std::env::var_os("SHOAL_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
            panic!("{why}; SHOAL_REQUIRE_TOOLS=1 requires every tool the tests use");
        }
        println!("skipped: {why}");
        None
    };
    let Some(exe) = std::env::var_os(PYTHON) else {
        return skip(format!("{PYTHON} is not set"));
    };
    let status = tokio::process::Command::new(&exe)
        .args(["-c", "import msgpack"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => Some(exe.into()),
        _ => skip(format!("{exe:?} cannot import msgpack")),
    }
}
