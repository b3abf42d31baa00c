//! `shoal center` as a process: the first admin token written 0600 and printed on the first
//! start only, and the client commands finding it through `--center` and `--token` as well as
//! the environment; `shoal push` sending the archive's sha256 checked against its `.sha256`.

mod common;

use std::io::{BufRead as _, BufReader, Lines};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use common::{pkg_build, text, Scratch, SHOAL};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A `shoal center` started on ephemeral ports, and what it has printed so far.
struct Started {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    url: String,
    said: String,
}

impl Started {
    /// Starts `shoal center` on `data` and reads its lines up to where the token file is named.
    fn start(data: &Path) -> Started {
        let mut child = Command::new(SHOAL)
            .args(["center", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut url, mut said) = (None, String::new());
        loop {
            let line = lines.next().expect("the center's first lines").unwrap();
            said.push_str(&line);
            said.push('\n');
            if let Some(addr) = line.strip_prefix("HTTP API: ") {
                url = Some(addr.to_owned());
            }
            if line.starts_with("admin token: in ") {
                break;
            }
        }
        Started {
            child,
            lines,
            url: url.expect("the center names its HTTP API"),
            said,
        }
    }

    /// Stops it with SIGTERM; everything it printed.
    fn stop(mut self) -> String {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        for line in self.lines.by_ref() {
            self.said.push_str(&line.unwrap());
            self.said.push('\n');
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the center ended with {status}");
        std::mem::take(&mut self.said)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `shoal ARGS` with neither `SHOAL_CENTER` nor `SHOAL_TOKEN` in its environment.
fn shoal_bare(args: &[&str]) -> Output {
    Command::new(SHOAL)
        .args(args)
        .env_remove("SHOAL_CENTER")
        .env_remove("SHOAL_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn the_admin_token_is_written_0600_and_printed_on_the_first_start_only() {
    let scratch = Scratch::new("center-token");
    let data = scratch.path().join("center");
    let first = Started::start(&data);
    let file = data.join("admin.token");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let said = first.stop();
    assert_eq!(said.matches(&token).count(), 1, "{said}");
    assert!(said.contains("shown once"), "{said}");

    let again = Started::start(&data);
    let said = again.stop();
    assert!(
        !said.contains(&token),
        "a restart printed the token: {said}"
    );
    assert!(!said.contains("shown once"), "{said}");
    assert!(said.contains(&format!("admin token: in {}", file.display())));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
}

#[test]
fn clients_take_center_and_token_flags_and_push_checks_the_sha256_file() {
    let scratch = Scratch::new("center-flags");
    let center = Started::start(&scratch.path().join("center"));
    let token = std::fs::read_to_string(scratch.path().join("center/admin.token")).unwrap();
    let token = token.trim();
    let flags = ["--center", center.url.as_str(), "--token", token];
    // The flags alone, with nothing in the environment.
    let listed = shoal_bare(&[&["token", "ls"][..], &flags[..]].concat());
    assert!(listed.status.success(), "{}", text(&listed));
    // The flags over the environment.
    let over = Command::new(SHOAL)
        .args(["token", "ls", "--token", token])
        .env("SHOAL_CENTER", &center.url)
        .env("SHOAL_TOKEN", "shoal_nope_nope")
        .output()
        .unwrap();
    assert!(over.status.success(), "{}", text(&over));
    let none = shoal_bare(&["token", "ls", "--center", center.url.as_str()]);
    assert!(!none.status.success());
    assert!(text(&none).contains("no token"), "{}", text(&none));

    // A checksum file that is another archive's: refused before anything is sent.
    let archive = crontab_package(scratch.path());
    let sums = format!("{}.sha256", archive.display());
    let written = std::fs::read_to_string(&sums).unwrap();
    let right = written.split_whitespace().next().unwrap().to_owned();
    let wrong = "0".repeat(64);
    std::fs::write(&sums, written.replace(&right, &wrong)).unwrap();
    let push = [&["push", archive.to_str().unwrap()][..], &flags[..]].concat();
    let refused = shoal_bare(&push);
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(said.contains(&format!("its sha256 is {right}")), "{said}");
    assert!(said.contains(&format!("says {wrong}")), "{said}");
    let packages = [&["packages", "--json"][..], &flags[..]].concat();
    let listed = shoal_bare(&packages);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
    // Without the file, the digest is computed and sent.
    std::fs::remove_file(&sums).unwrap();
    let pushed = shoal_bare(&push);
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert!(
        text(&pushed).contains(&format!("sha256 {right}")),
        "{}",
        text(&pushed)
    );
    center.stop();
}

/// A small crontab package built by `shoal pkg build` under `dir`: its archive.
fn crontab_package(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("yearly");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("shoal.toml"),
        "[package]\nname = \"yearly\"\nversion = \"1.0.0\"\nkind = \"crontab\"\n\n\
         [[cron]]\nname = \"yearly\"\nschedule = \"0 0 0 1 1 *\"\ncommand = \"/bin/true\"\n",
    )
    .unwrap();
    pkg_build(&src, dir);
    dir.join("yearly-1.0.0.tar.gz")
}
