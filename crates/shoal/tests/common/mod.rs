//! Helpers shared by the runtime's tests: scratch directories, waiting on a condition with a
//! deadline (never a sleep as synchronisation), and skipping a check whose tool is missing.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A directory removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "shoal-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path.join(name);
        // Write then rename, so a reader never sees half a file.
        let tmp = self.path.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `limit`.
pub async fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The path of a file given to `--config`.
pub fn config_args(path: &Path) -> Vec<String> {
    vec!["--config".into(), path.display().to_string()]
}

pub fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

/// Says why a test leaves out a check whose tool is missing (`skipped: WHY` on stdout), or,
/// where `SHOAL_REQUIRE_TOOLS=1` (as `.ci/run` sets it), fails the test: in CI a missing tool
/// means a broken install step, which must not pass as a skip.
pub fn skip(why: &str) {
    if std::env::var_os("SHOAL_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
        panic!("{why}; SHOAL_REQUIRE_TOOLS=1 requires every tool the tests use (see .ci/run)");
    }
    println!("skipped: {why}");
}
