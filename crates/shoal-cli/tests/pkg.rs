//! `shoal pkg build` and `shoal pkg inspect` as a user runs them: a package built from a
//! temporary directory, inspected as text and as JSON, and the errors for a bad manifest and
//! a damaged archive.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

const MANIFEST: &str = r#"
[package]
name = "calculate"
version = "1.10.0"
kind = "service"

[run]
command = "bin/calculate"
args = ["--config", "calculate.toml"]
start_after = ["cache"]

[health]
port = 3000
ping = true

[hooks]
verify = "bin/check --quick"

[[cron]]
name = "report"
schedule = "0 */5 * * * *"
command = "bin/report"
"#;

/// A directory removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("shoal-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shoal(args: &[&str], cwd: &Path) -> Output {
    Command::new(SHOAL)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run shoal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn build_then_inspect() {
    let tmp = Dir::new("pkg");
    let src = tmp.0.join("calculate");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("shoal.toml"), MANIFEST).unwrap();
    std::fs::write(src.join("bin/calculate"), "#!/bin/sh\nexec sleep 1000\n").unwrap();
    std::fs::write(
        src.join("calculate.toml"),
        "[rpc]\nlisten = \"127.0.0.1:3000\"\n",
    )
    .unwrap();

    let out = shoal(&["pkg", "build", "calculate", "-o", "dist"], &tmp.0);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("built calculate 1.10.0 (service): 4 files, "),
        "{stdout}"
    );
    assert!(
        stdout.contains("archive:  dist/calculate-1.10.0.tar.gz\n"),
        "{stdout}"
    );
    let archive = tmp.0.join("dist/calculate-1.10.0.tar.gz");
    let checksum =
        std::fs::read_to_string(tmp.0.join("dist/calculate-1.10.0.tar.gz.sha256")).unwrap();
    let (sha256, name) = checksum.trim_end().split_once("  ").unwrap();
    assert_eq!(name, "calculate-1.10.0.tar.gz");
    assert!(
        stdout.contains(&format!("sha256:   {sha256}\n")),
        "{stdout}"
    );

    let out = shoal(&["pkg", "inspect", archive.to_str().unwrap()], &tmp.0);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "name:     calculate".to_owned(),
        "version:  1.10.0".to_owned(),
        "kind:     service".to_owned(),
        format!("sha256:   {sha256}"),
        "files:    4".to_owned(),
        "run:      bin/calculate --config calculate.toml".to_owned(),
        "          restart always; stop with SIGTERM, then SIGKILL after 10s".to_owned(),
        "          start after cache".to_owned(),
        "health:   shoal.ping on port 3000; every 10s, timeout 2s, restart after 3 failures, \
         grace 30s"
            .to_owned(),
        "hooks:    verify: bin/check --quick".to_owned(),
        "cron:     report \"0 */5 * * * *\" bin/report (overlap forbid, timeout 1h)".to_owned(),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }

    let out = shoal(
        &["pkg", "inspect", "--json", archive.to_str().unwrap()],
        &tmp.0,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["name"], "calculate");
    assert_eq!(json["version"], "1.10.0");
    assert_eq!(json["kind"], "service");
    assert_eq!(json["sha256"], sha256);
    assert_eq!(json["files"], 4);
    assert_eq!(json["manifest"]["run"]["command"], "bin/calculate");
    assert_eq!(json["manifest"]["run"]["restart"], "always");
    assert_eq!(json["manifest"]["health"]["interval"], "10s");
    assert_eq!(json["manifest"]["cron"][0]["schedule"], "0 */5 * * * *");
}

#[test]
fn errors_name_the_file_and_what_is_wrong() {
    let tmp = Dir::new("pkg-errors");
    let src = tmp.0.join("bad");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("shoal.toml"),
        MANIFEST.replace("[run]\n", "[run]\nrestart = \"sometimes\"\n"),
    )
    .unwrap();
    let out = shoal(&["pkg", "build", "bad"], &tmp.0);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "error: cannot build a package from bad: bad/shoal.toml: run.restart: \"sometimes\" is \
         not one of always, on-failure, never"
    );
    assert_eq!(
        std::fs::read_dir(&tmp.0).unwrap().count(),
        1,
        "wrote something"
    );

    std::fs::write(tmp.0.join("damaged.tar.gz"), b"\x1f\x8b\x08\x00 not really").unwrap();
    let out = shoal(&["pkg", "inspect", "damaged.tar.gz"], &tmp.0);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error: damaged.tar.gz: not a readable .tar.gz: "),
        "{}",
        text(&out.stderr)
    );
}
