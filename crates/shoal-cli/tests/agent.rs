//! The agent end to end, through the `shoal` binary as an operator uses it: packages built
//! with `shoal pkg build` and installed with `shoal install`; an upgrade whose verify hook
//! fails rolled back; a rollback on request; logs grepped in the agent; a crontab run and
//! its history; `kill -9` of the agent leaving every service running, re-adopted by the next
//! agent; an agent killed in the middle of an upgrade coming back to the old version; SIGTERM
//! during an install's hook, the agent ending only once the install has; an install on a full
//! filesystem said as one; names that are no app's answered by the agent, not by the URL
//! parser; a hostile package refused with nothing installed; `shoal up` running a service
//! and a crontab until Ctrl-C, its center answering `shoal agents` and `shoal fleet ps`.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{shoal, shoal_ok, text, wait_for, Agent, Scratch, LIMIT, SHOAL};

fn json(data: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&shoal_ok(data, &all)).unwrap()
}

fn python() -> Option<String> {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("python3".into());
    }
    let why = "python3 is not on PATH (the test services are Python scripts)";
    if std::env::var_os("SHOAL_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
        panic!("{why}; SHOAL_REQUIRE_TOOLS=1 requires every tool the tests use");
    }
    println!("skipped: {why}");
    None
}

/// A service package `web` at `version`: a Python TCP server on `port` that prints a line
/// per connection; `verify` is its verify hook's exit code.
fn web_package(dir: &Path, version: &str, port: u16, verify: i32) -> PathBuf {
    let pkg = dir.join(format!("web-{version}"));
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    let server = format!(
        "#!/usr/bin/env python3
import socket, sys
print('web {version} listening', flush=True)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', {port}))
s.listen(16)
while True:
    c, _ = s.accept()
    print('web {version} served a connection', flush=True)
    c.close()
"
    );
    write_exec(&pkg.join("bin/web"), &server);
    write_exec(
        &pkg.join("bin/verify"),
        &format!("#!/bin/sh\necho verifying {version}\nexit {verify}\n"),
    );
    std::fs::write(
        pkg.join("shoal.toml"),
        format!(
            "[package]\nname = \"web\"\nversion = \"{version}\"\nkind = \"service\"\n\n\
             [run]\ncommand = \"bin/web\"\nrestart = \"always\"\nstop_timeout = \"2s\"\n\n\
             [health]\nport = {port}\n\n[hooks]\nverify = \"bin/verify\"\n\n\
             [backup]\npaths = [\"data\"]\nevery = \"1d\"\nkeep = 3\n"
        ),
    )
    .unwrap();
    build(&pkg, dir)
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `shoal pkg build`, returning the archive.
fn build(pkg: &Path, out: &Path) -> PathBuf {
    common::pkg_build(pkg, out);
    let manifest = std::fs::read_to_string(pkg.join("shoal.toml")).unwrap();
    let field = |key: &str| {
        manifest
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .unwrap()
            .trim_end_matches('"')
            .to_owned()
    };
    out.join(format!("{}-{}.tar.gz", field("name"), field("version")))
}

/// An agent on `dir/data` running `web` 1.0.0 on a free port.
fn with_web(dir: &Scratch) -> (PathBuf, u16, Agent) {
    let data = dir.0.join("data");
    let port = free_port();
    let agent = Agent::start(&data);
    let v1 = web_package(&dir.0, "1.0.0", port, 0);
    shoal_ok(&data, &["install", v1.to_str().unwrap()]);
    (data, port, agent)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn app<'a>(ps: &'a Value, name: &str) -> &'a Value {
    ps.as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {ps}"))
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(") ")
            .next()
            .is_some_and(|rest| !rest.starts_with('Z'))
    })
}

#[test]
fn install_upgrade_rollback_logs_and_a_verify_failure_rolled_back() {
    if python().is_none() {
        return;
    }
    let dir = Scratch::new("upgrade");
    let data = dir.0.join("data");
    let port = free_port();
    let agent = Agent::start(&data);

    let v1 = web_package(&dir.0, "1.9.0", port, 0);
    let said = shoal_ok(&data, &["install", v1.to_str().unwrap()]);
    assert_eq!(said, "web 1.9.0: installed\n");
    let ps = json(&data, &["ps"]);
    let web = app(&ps, "web");
    assert_eq!(
        (web["version"].as_str(), web["state"].as_str()),
        (Some("1.9.0"), Some("running"))
    );
    assert_eq!(web["health"], "ok");
    let table = shoal_ok(&data, &["ps"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("web   1.9.0"), "{table}");

    // The app's data, which the upgrade backs up first.
    std::fs::write(data.join("apps/web/data/state.txt"), "before the upgrade").unwrap();

    // 1.10.0 is newer than 1.9.0 (versions, not numbers).
    let v2 = web_package(&dir.0, "1.10.0", port, 0);
    let said = shoal_ok(&data, &["install", v2.to_str().unwrap()]);
    assert_eq!(said, "web 1.10.0: upgraded from 1.9.0\n");
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let backups = json(&data, &["backups", "web"]);
    assert_eq!(backups.as_array().unwrap().len(), 1, "{backups}");
    let upgrade_backup = backups[0]["id"].as_str().unwrap().to_owned();
    // Restoring it puts the data back as it was, the service stopped meanwhile.
    std::fs::write(data.join("apps/web/data/state.txt"), "changed since").unwrap();
    let said = shoal_ok(&data, &["restore", "web", &upgrade_backup]);
    assert_eq!(said, format!("web: restored {upgrade_backup}\n"));
    assert_eq!(
        std::fs::read_to_string(data.join("apps/web/data/state.txt")).unwrap(),
        "before the upgrade"
    );
    wait_for("web to run after the restore", || {
        (app(&json(&data, &["ps"]), "web")["state"] == "running").then_some(())
    });
    let out = shoal(&data, &["restore", "web", "web-20000101T000000Z.tar.gz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("web-20000101T000000Z.tar.gz"),
        "{}",
        text(&out)
    );

    // A verify hook that fails: rolled back to 1.10.0, which runs again.
    let v3 = web_package(&dir.0, "1.11.0", port, 3);
    let out = shoal(&data, &["install", v3.to_str().unwrap()]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("the verify hook of web 1.11.0 `bin/verify` exited with 3"),
        "{said}"
    );
    assert!(said.contains("verifying 1.11.0"), "{said}");
    assert!(
        said.contains("rolled back: web 1.10.0 runs again"),
        "{said}"
    );
    let web = app(&json(&data, &["ps"]), "web").clone();
    assert_eq!(web["version"], "1.10.0");
    assert_eq!(web["state"], "running");
    let versions = json(&data, &["versions", "web"]);
    let listed: Vec<(&str, bool)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap(),
                v["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [("1.10.0", true), ("1.9.0", false)]);

    // Rollback on request, to the previous version.
    let said = shoal_ok(&data, &["rollback", "web"]);
    assert_eq!(said, "web 1.9.0: rolled back from 1.10.0\n");
    assert_eq!(app(&json(&data, &["ps"]), "web")["version"], "1.9.0");
    // Installing an installed version again says how to switch to it.
    let out = shoal(&data, &["install", v2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("web 1.10.0 is installed already (current: 1.9.0); `shoal rollback web --to 1.10.0` switches to it"),
        "{}",
        text(&out)
    );

    // Logs, grepped in the agent.
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let served = wait_for("a logged connection", || {
        let out = shoal_ok(&data, &["logs", "web", "--grep", "1\\.9\\.0 served"]);
        (!out.is_empty()).then_some(out)
    });
    assert!(
        served
            .lines()
            .all(|l| l.contains("web 1.9.0 served a connection")),
        "{served}"
    );
    // Followed: a line written later arrives.
    let mut follow = Command::new(SHOAL)
        .args([
            "logs",
            "web",
            "-f",
            "--tail",
            "0",
            "--grep",
            "served",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let followed = std::io::BufReader::new(follow.stdout.take().unwrap());
    let (lines, arrived) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(followed).map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    // Connections until one made after the follow began shows up.
    let line = wait_for("a followed line", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        arrived.recv_timeout(Duration::from_millis(500)).ok()
    });
    assert!(line.ends_with("web 1.9.0 served a connection"), "{line:?}");
    follow.kill().unwrap();
    follow.wait().unwrap();

    let bad = shoal(&data, &["logs", "web", "--grep", "("]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("grep \"(\""), "{}", text(&bad));

    // Stop and start.
    shoal_ok(&data, &["stop", "web"]);
    assert_eq!(app(&json(&data, &["ps"]), "web")["state"], "stopped");
    shoal_ok(&data, &["start", "web"]);
    wait_for("web to run again", || {
        (app(&json(&data, &["ps"]), "web")["state"] == "running").then_some(())
    });
    let out = shoal(&data, &["stop", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no app named nope"), "{}", text(&out));

    // Closing the agent with SIGTERM leaves the service running.
    let pid = app(&json(&data, &["ps"]), "web")["pid"].as_u64().unwrap();
    agent.stop();
    assert!(alive(pid));
    let agent = Agent::start(&data);
    assert_eq!(app(&json(&data, &["ps"]), "web")["pid"].as_u64(), Some(pid));
    shoal_ok(&data, &["stop", "web"]);
    drop(agent);
}

#[test]
fn a_killed_agent_leaves_services_running_and_the_next_adopts_them() {
    if python().is_none() {
        return;
    }
    let dir = Scratch::new("kill9");
    let (data, port, agent) = with_web(&dir);
    let pid = app(&json(&data, &["ps"]), "web")["pid"].as_u64().unwrap();

    agent.kill9();
    assert!(alive(pid), "the service died with the agent");
    // While no agent runs, the service keeps answering and writing output.
    for _ in 0..3 {
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    }

    let agent = Agent::start(&data);
    let web = app(&json(&data, &["ps"]), "web").clone();
    assert_eq!(
        web["pid"].as_u64(),
        Some(pid),
        "re-adopted, not restarted: {web}"
    );
    // The lines written while no agent ran are captured.
    wait_for("the connections made without an agent in the log", || {
        let out = shoal_ok(&data, &["logs", "web", "--grep", "served a connection"]);
        (out.lines().count() >= 3).then_some(())
    });
    // And the restart policy holds for an adopted process.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = wait_for("web to be restarted", || {
        let web = app(&json(&data, &["ps"]), "web").clone();
        (web["state"] == "running" && web["pid"].as_u64() != Some(pid)).then_some(web)
    });
    assert!(restarted["restarts"].as_u64().unwrap() >= 1, "{restarted}");
    shoal_ok(&data, &["stop", "web"]);
    drop(agent);
}

#[test]
fn an_agent_killed_during_an_upgrade_comes_back_on_the_old_version() {
    if python().is_none() {
        return;
    }
    let dir = Scratch::new("killed-upgrade");
    let (data, port, agent) = with_web(&dir);

    // 2.0.0's verify hook says it started, then waits: the agent is killed while it runs,
    // after the switch to 2.0.0.
    let pkg = dir.0.join("web-2.0.0");
    web_package(&dir.0, "2.0.0", port, 0);
    let marker = dir.0.join("verifying");
    write_exec(
        &pkg.join("bin/verify"),
        &format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 1000\n",
            marker.display()
        ),
    );
    let v2 = build(&pkg, &dir.0);
    let mut install = Command::new(SHOAL)
        .args(["install", v2.to_str().unwrap(), "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hook: u64 = wait_for("the verify hook to run", || {
        std::fs::read_to_string(&marker).ok()?.trim().parse().ok()
    });
    agent.kill9();
    let _ = install.wait();

    let agent = Agent::start(&data);
    let web = wait_for("web to run on the old version", || {
        let web = app(&json(&data, &["ps"]), "web").clone();
        (web["state"] == "running").then_some(web)
    });
    assert_eq!(web["version"], "1.0.0", "{web}");
    assert!(!alive(hook), "the killed agent's verify hook still runs");
    let versions = json(&data, &["versions", "web"]);
    assert_eq!(
        versions,
        serde_json::json!([{"version": "1.0.0", "current": true}])
    );
    shoal_ok(&data, &["stop", "web"]);
    drop(agent);
}

#[test]
fn a_crontab_runs_and_hostile_names_and_packages_are_refused() {
    let dir = Scratch::new("cron");
    let data = dir.0.join("data");
    let agent = Agent::start(&data);
    let pkg = dir.0.join("report");
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    write_exec(
        &pkg.join("bin/report"),
        "#!/bin/sh\necho \"report from $(pwd)\"\nexit 4\n",
    );
    std::fs::write(
        pkg.join("shoal.toml"),
        "[package]\nname = \"report\"\nversion = \"1.0.0\"\nkind = \"crontab\"\n\n\
         [[cron]]\nname = \"daily\"\nschedule = \"0 0 3 * * *\"\ncommand = \"bin/report\"\n\
         overlap = \"forbid\"\ntimeout = \"10s\"\n",
    )
    .unwrap();
    let archive = build(&pkg, &dir.0);
    shoal_ok(&data, &["install", archive.to_str().unwrap()]);
    let said = shoal_ok(&data, &["cron", "run", "report", "daily"]);
    assert!(said.starts_with("report/daily: run "), "{said}");
    assert!(said.contains(": exit 4"), "{said}");
    assert!(said.contains("report from "), "{said}");
    let run = json(&data, &["cron", "run", "report", "daily"]);
    assert_eq!(
        (run["status"].as_str(), run["code"].as_i64()),
        (Some("exited"), Some(4))
    );
    let history = json(&data, &["cron", "history", "report"]);
    assert_eq!(history[0]["status"], "exited");
    assert_eq!(history[0]["code"], 4);
    let listed = shoal_ok(&data, &["cron", "ls"]);
    assert!(listed.contains("report/daily  0 0 3 * * *"), "{listed}");
    assert_eq!(app(&json(&data, &["ps"]), "report")["kind"], "crontab");

    // Names go into the URL percent-encoded: the agent says what is wrong with them.
    for args in [
        &["logs", "a b"][..],
        &["versions", "a/b"],
        &["start", "a?b"],
        &["backups", "a#b"],
    ] {
        let out = shoal(&data, args);
        assert!(!out.status.success(), "{args:?}");
        let name = args[1];
        assert!(
            text(&out).contains(&format!("app name {name:?}")),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = shoal(&data, &["cron", "run", "report", "dai ly"]);
    assert!(
        text(&out).contains("cron job name \"dai ly\""),
        "{}",
        text(&out)
    );

    // A package whose archive holds a path out of its directory: refused, nothing installed.
    let evil = dir.0.join("evil-1.0.0.tar.gz");
    {
        let file = std::fs::File::create(&evil).unwrap();
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let manifest = b"[package]\nname = \"evil\"\nversion = \"1.0.0\"\nkind = \"service\"\n\n[run]\ncommand = \"bin/x\"\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(manifest.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "shoal.toml", &manifest[..])
            .unwrap();
        let mut header = tar::Header::new_gnu();
        let payload = b"owned";
        {
            let name = b"../../escaped";
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
        }
        header.set_size(payload.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append(&header, &payload[..]).unwrap();
        tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    }
    let digest = {
        use sha2::Digest as _;
        let bytes = std::fs::read(&evil).unwrap();
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    std::fs::write(
        dir.0.join("evil-1.0.0.tar.gz.sha256"),
        format!("{digest}  evil-1.0.0.tar.gz\n"),
    )
    .unwrap();
    let out = shoal(&data, &["install", evil.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("../../escaped"), "{}", text(&out));
    assert!(!text(&out).contains("/incoming/"), "{}", text(&out));
    assert!(!data.join("apps/evil").exists());
    assert!(!dir.0.join("escaped").exists() && !data.join("escaped").exists());
    drop(agent);
}

#[test]
fn shoal_up_runs_a_service_and_a_crontab_until_ctrl_c_stops_everything() {
    use std::io::BufRead as _;
    let dir = Scratch::new("up");
    let data = dir.0.join("up");
    let mut up = Command::new(SHOAL)
        .args(["up", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Killed (with what it started, through their own test guard) if the test fails.
    struct Up(Child);
    impl Drop for Up {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = self.0.wait();
        }
    }
    let stdout = up.stdout.take().unwrap();
    let mut up = Up(up);
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = send.send(line);
        }
    });
    let (mut service_pid, mut job_ran, mut center) = (None, false, None);
    let deadline = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    while service_pid.is_none() || !job_ran || center.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            panic!("shoal up showed:\n{}", seen.join("\n"));
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"hello")
            && words.get(2) == Some(&"running")
            && words.last() == Some(&"ok")
        {
            service_pid = words.get(3).and_then(|p| p.parse::<u64>().ok());
        }
        if line.starts_with("greeter/greet") && line.contains("exit 0 at") {
            job_ran = true;
        }
        if let Some(said) = line.strip_prefix("center: ") {
            center = Some(said.to_owned());
        }
        seen.push(line);
    }
    let pid = service_pid.unwrap();
    assert!(alive(pid));
    the_center_of_up_answers(&center.unwrap(), &data);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(up.0.wait().unwrap().success());
    let rest: Vec<String> = lines.iter().collect();
    assert_eq!(rest.last().map(String::as_str), Some("stopped"), "{rest:?}");
    assert!(!alive(pid), "the service outlived shoal up");

    // A second shoal up refuses a directory it did not make.
    let foreign = dir.0.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
    let out = Command::new(SHOAL)
        .args(["up", "--data-dir"])
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a directory shoal up made"),
        "{}",
        text(&out)
    );
    assert!(foreign.join("keep.txt").exists());
}

/// What `shoal up` said of its center (`agents' port ADDR, API URL; its admin token is in
/// FILE`): the token file is the center's, private, and `shoal agents` and `shoal fleet ps`
/// with that address and token show the agent and its two apps.
fn the_center_of_up_answers(said: &str, data: &Path) {
    let between = |from: &str, to: &str| {
        let rest = &said[said
            .find(from)
            .unwrap_or_else(|| panic!("{from:?} in {said:?}"))
            + from.len()..];
        rest[..rest.find(to).unwrap_or(rest.len())]
            .trim()
            .to_owned()
    };
    let url = between("API ", ";");
    let token_file = PathBuf::from(between("its admin token is in ", "\n"));
    assert!(url.starts_with("http://127.0.0.1:"), "{said}");
    assert_eq!(token_file, data.join("center/admin.token"), "{said}");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", token_file.display());
    let token = std::fs::read_to_string(&token_file).unwrap();
    let center = |args: &[&str]| -> Value {
        let out = Command::new(SHOAL)
            .args(args)
            .args(["--json", "--center", &url, "--token", token.trim()])
            .output()
            .unwrap();
        assert!(out.status.success(), "shoal {args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let names = |apps: &Value| -> Vec<String> {
        let mut names: Vec<String> = apps
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    let agent = wait_for("the up agent with its apps at the center", || {
        let agents = center(&["agents"]);
        let agent = match agents.as_array()?.as_slice() {
            [] => return None,
            [agent] => agent,
            _ => panic!("one agent: {agents}"),
        };
        (agent["online"] == true && names(&agent["apps"]) == ["greeter", "hello"])
            .then(|| agent["id"].as_str().unwrap().to_owned())
    });
    let ps = center(&["fleet", "ps", "--all"]);
    let result = &ps["results"][&agent];
    assert_eq!(result["status"], "ok", "{ps}");
    assert_eq!(names(&result["detail"]), ["greeter", "hello"], "{ps}");
}

/// A package `flaky` at `version` without `[health]`, whose program runs `body`.
fn flaky_package(dir: &Path, version: &str, body: &str) -> PathBuf {
    let pkg = dir.join(format!("flaky-{version}"));
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    write_exec(&pkg.join("bin/flaky"), &format!("#!/bin/sh\n{body}\n"));
    std::fs::write(
        pkg.join("shoal.toml"),
        format!(
            "[package]\nname = \"flaky\"\nversion = \"{version}\"\nkind = \"service\"\n\n\
             [run]\ncommand = \"bin/flaky\"\nrestart = \"always\"\n"
        ),
    )
    .unwrap();
    build(&pkg, dir)
}

#[test]
fn a_version_that_crashes_soon_after_it_starts_is_rolled_back() {
    let dir = Scratch::new("flaky");
    let data = dir.0.join("data");
    let agent = Agent::start(&data);
    let good = flaky_package(&dir.0, "1.0.0", "exec sleep 1000");
    shoal_ok(&data, &["install", good.to_str().unwrap()]);
    // Runs for half a second, then fails: "running" when first looked at, not for long.
    let bad = flaky_package(&dir.0, "2.0.0", "sleep 0.5\nexit 1");
    let out = shoal(&data, &["install", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("did not stay up for 2s"), "{said}");
    assert!(
        said.contains("rolled back: flaky 1.0.0 runs again"),
        "{said}"
    );
    let flaky = app(&json(&data, &["ps"]), "flaky").clone();
    assert_eq!(
        (flaky["version"].as_str(), flaky["state"].as_str()),
        (Some("1.0.0"), Some("running"))
    );
    drop(agent);
}

/// A service package `calm` at `version` that sleeps; `install_hook`, when given, is its
/// install hook's shell body.
fn calm_package(dir: &Path, version: &str, install_hook: Option<&str>) -> PathBuf {
    let pkg = dir.join(format!("calm-{version}"));
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    write_exec(&pkg.join("bin/calm"), "#!/bin/sh\nexec sleep 1000\n");
    let mut manifest = format!(
        "[package]\nname = \"calm\"\nversion = \"{version}\"\nkind = \"service\"\n\n\
         [run]\ncommand = \"bin/calm\"\nrestart = \"always\"\n"
    );
    if let Some(body) = install_hook {
        write_exec(&pkg.join("bin/install"), &format!("#!/bin/sh\n{body}\n"));
        manifest.push_str("\n[hooks]\ninstall = \"bin/install\"\n");
    }
    std::fs::write(pkg.join("shoal.toml"), manifest).unwrap();
    build(&pkg, dir)
}

#[test]
fn sigterm_during_an_install_waits_for_it_and_leaves_nothing_to_recover() {
    let dir = Scratch::new("term-install");
    let data = dir.0.join("data");
    let agent = Agent::start(&data);
    let v1 = calm_package(&dir.0, "1.0.0", None);
    shoal_ok(&data, &["install", v1.to_str().unwrap()]);
    // Killed with their groups if the test fails while no agent answers for them.
    let calm_v1 = app(&json(&data, &["ps"]), "calm")["pid"].as_i64().unwrap();
    let mut groups = Groups(vec![calm_v1 as i32]);

    // 2.0.0's install hook says it runs, then waits for a line on a FIFO the test holds.
    let started = dir.0.join("hook-started");
    let gate = dir.0.join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let v2 = calm_package(
        &dir.0,
        "2.0.0",
        Some(&format!(
            "echo $$ > {}\nread line < {}",
            started.display(),
            gate.display()
        )),
    );
    let install = Command::new(SHOAL)
        .args(["install", v2.to_str().unwrap(), "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hook: i32 = wait_for("the install hook to run", || {
        std::fs::read_to_string(&started)
            .ok()
            .filter(|s| s.ends_with('\n'))?
            .trim()
            .parse()
            .ok()
    });
    groups.0.push(hook);

    let mut agent = agent;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // The API closes at once; the agent itself waits for the install.
    wait_for("the agent's API to close", || {
        (!shoal(&data, &["ps"]).status.success()).then_some(())
    });
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited with an install in progress"
    );

    // Let the hook finish: the install completes, then the agent exits.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&gate)
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    let installed = install.wait_with_output().unwrap();
    assert!(installed.status.success(), "{}", text(&installed));
    assert_eq!(
        String::from_utf8_lossy(&installed.stdout),
        "calm 2.0.0: upgraded from 1.0.0\n"
    );
    let exited = wait_for("the agent to exit", || agent.child.try_wait().unwrap());
    assert!(exited.success(), "{exited:?}");
    drop(agent);

    // The next agent finds no upgrade to put back: it says nothing of one, and 2.0.0 runs.
    let log = dir.0.join("next-agent.log");
    let child = Command::new(SHOAL)
        .args(["agent", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let next = Agent {
        child,
        data: data.clone(),
    };
    wait_for("the next agent to answer", || {
        shoal(&data, &["ps"]).status.success().then_some(())
    });
    let calm = app(&json(&data, &["ps"]), "calm").clone();
    assert_eq!(
        (calm["version"].as_str(), calm["state"].as_str()),
        (Some("2.0.0"), Some("running")),
        "{calm}"
    );
    groups.0.push(calm["pid"].as_i64().unwrap() as i32);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!said.contains("interrupted"), "{said}");
    shoal_ok(&data, &["stop", "calm"]);
    // All gone: nothing for the guard to kill (their ids may be reused from now on).
    groups.0.clear();
    drop(next);
}

/// Process groups the test started through an agent, killed if the test fails before it
/// clears them, so that a failed test leaves nothing running.
struct Groups(Vec<i32>);

impl Drop for Groups {
    fn drop(&mut self) {
        for &pgid in &self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A tmpfs of `size` mounted on a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// None (after saying why) when this test cannot mount one: not root, or no `mount`.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        let why = if nix::unistd::geteuid().is_root() {
            let mounted = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(at)
                .output();
            match mounted {
                Ok(out) if out.status.success() => return Some(Tmpfs(at.to_owned())),
                Ok(out) => format!("mount -t tmpfs failed: {}", text(&out)),
                Err(e) => format!("mount: {e}"),
            }
        } else {
            "mounting a small filesystem needs root".to_owned()
        };
        if std::env::var_os("SHOAL_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
            panic!("{why}; SHOAL_REQUIRE_TOOLS=1 requires every tool the tests use");
        }
        println!("skipped: {why}");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn an_install_on_a_full_disk_says_so_and_names_the_path() {
    let dir = Scratch::new("full-disk");
    let data = dir.0.join("data");
    let incoming = data.join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    let Some(_tmpfs) = Tmpfs::mount(&incoming, "2m") else {
        return;
    };
    let agent = Agent::start(&data);
    // 3 MB that do not compress: the upload cannot fit.
    let pkg = dir.0.join("big");
    std::fs::create_dir_all(&pkg).unwrap();
    let mut noise = vec![0u8; 3 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut noise))
        .unwrap();
    std::fs::write(pkg.join("noise.bin"), noise).unwrap();
    std::fs::write(
        pkg.join("shoal.toml"),
        "[package]\nname = \"big\"\nversion = \"1.0.0\"\nkind = \"crontab\"\n\n\
         [[cron]]\nname = \"yearly\"\nschedule = \"0 0 0 1 1 *\"\ncommand = \"/bin/true\"\n",
    )
    .unwrap();
    let archive = build(&pkg, &dir.0);
    let out = shoal(&data, &["install", archive.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("the disk is full"), "{said}");
    assert!(said.contains(incoming.to_str().unwrap()), "{said}");
    assert!(!said.contains("sha256"), "{said}");
    assert!(!data.join("apps/big").exists());
    drop(agent);
}
