//! The fleet end to end on loopback, through the `shoal` binary as an operator uses it: a
//! center and three agents with their own data directories and labels join with a token; a
//! package is pushed and installed on a label's agents while the excluded one stays untouched;
//! a fleet restart; fleet logs with a grep; an agent killed shows offline and a command's
//! result for it says so; restarted it is online with the same id; revoked, it cannot
//! reconnect; a center killed with `kill -9` comes back on its data with every agent
//! reconnecting by itself and its history intact, and a command in flight at the kill is
//! interrupted for the targets that had not answered and never run twice; an expired or
//! revoked join token is refused at enrollment; and `fleet logs -f` stops on every agent
//! when its caller goes away.

mod common;

use std::io::BufRead as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::fleet::Center;
use common::Agent;
use common::{text, wait_for, wait_showing, Scratch};
use shoal_api::center::{AuditEntry, CommandView};
use shoal_api::fleet::{AgentInfo, TargetStatus};

/// What the fleet tests ask a center beyond the common commands.
impl Center {
    fn agents(&self) -> Vec<AgentInfo> {
        serde_json::from_str(&self.ok(&["agents", "--json"])).unwrap()
    }

    fn agent(&self, id: &str) -> AgentInfo {
        self.agents().into_iter().find(|a| a.id == id).unwrap()
    }

    fn command(&self, args: &[&str]) -> CommandView {
        let mut all = vec!["fleet"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.shoal(&all);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("shoal {all:?}: {e}: {}", text(&out)))
    }
}

/// A `shoal agent` joined to the center at `link` with `labels`, with a join token the first
/// time.
fn join_agent(data: &Path, link: &str, token: Option<&str>, labels: &[&str]) -> Agent {
    let mut command = Agent::center_command(data, link);
    if let Some(token) = token {
        command.args(["--join", token]);
    }
    for label in labels {
        command.args(["--label", label]);
    }
    Agent::spawn(command, data)
}

/// A service `hello` printing `tick N` lines, built into `out`.
fn hello_package(out: &Path) -> PathBuf {
    let pkg = out.join("hello-src");
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    let script = pkg.join("bin/hello");
    std::fs::write(
        &script,
        "#!/bin/sh\nn=0\nwhile true; do n=$((n+1)); echo \"tick $n\"; echo \"noise $n\"; sleep 0.1; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        pkg.join("shoal.toml"),
        "[package]\nname = \"hello\"\nversion = \"1.0.0\"\nkind = \"service\"\n\n\
         [run]\ncommand = \"bin/hello\"\nrestart = \"always\"\nstop_timeout = \"1s\"\n",
    )
    .unwrap();
    build(&pkg, out, "hello-1.0.0.tar.gz")
}

/// `shoal pkg build PKG -o OUT`, which must succeed; the archive `OUT/NAME`.
fn build(pkg: &Path, out: &Path, name: &str) -> PathBuf {
    common::pkg_build(pkg, out);
    out.join(name)
}

fn statuses(view: &CommandView) -> Vec<(String, TargetStatus)> {
    view.results
        .iter()
        .map(|(id, r)| (id.clone(), r.status))
        .collect()
}

#[test]
fn a_center_and_three_agents_join_install_restart_grep_go_offline_and_are_revoked() {
    let dir = Scratch::new("fleet");
    let center = Center::start(&dir.0.join("center"));
    let join = center.join_token(3);
    let labels = [
        ["role=web", "zone=a"],
        ["role=web", "zone=b"],
        ["role=db", "zone=a"],
    ];
    let mut members: Vec<Agent> = labels
        .iter()
        .enumerate()
        .map(|(n, l)| {
            join_agent(
                &dir.0.join(format!("agent{n}")),
                &center.link,
                Some(&join),
                l,
            )
        })
        .collect();
    let ids: Vec<String> = members.iter().map(Agent::id).collect();
    wait_for("three agents online", || {
        (center.agents().iter().filter(|a| a.online).count() == 3).then_some(())
    });
    assert_eq!(center.agent(&ids[2]).labels["role"], "db");

    // Push, then install on the web agents only.
    let archive = hello_package(&dir.0);
    center.ok(&["push", archive.to_str().unwrap()]);
    assert!(center.ok(&["packages", "hello"]).contains("1.0.0"));
    let installed = center.command(&["install", "hello", "--label", "role=web"]);
    let mut web = vec![
        (ids[0].clone(), TargetStatus::Ok),
        (ids[1].clone(), TargetStatus::Ok),
    ];
    web.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(statuses(&installed), web, "{installed:?}");
    wait_for("hello reported by the web agents", || {
        let agents = center.agents();
        let runs = |id: &str| {
            agents
                .iter()
                .find(|a| a.id == id)
                .is_some_and(|a| a.apps.iter().any(|app| app.name == "hello"))
        };
        (runs(&ids[0]) && runs(&ids[1])).then_some(())
    });
    assert!(
        center.agent(&ids[2]).apps.is_empty(),
        "the db agent was touched"
    );

    // Restart everywhere it runs; the shown command is the same.
    let restarted = center.command(&["restart", "hello", "--label", "role=web"]);
    assert!(
        restarted
            .results
            .values()
            .all(|r| r.status == TargetStatus::Ok),
        "{restarted:?}"
    );
    let shown: CommandView =
        serde_json::from_str(&center.ok(&["fleet", "show", &restarted.command, "--json"])).unwrap();
    assert_eq!(shown.results.len(), 2);

    // Logs with a grep, prefixed with their agent.
    let logs = center.ok(&[
        "fleet", "logs", "hello", "--grep", "tick", "--tail", "5", "--label", "role=web",
    ]);
    for id in &ids[..2] {
        assert!(
            logs.lines()
                .any(|l| l.starts_with(&format!("{id}: ")) && l.contains("tick")),
            "{logs}"
        );
    }
    assert!(!logs.contains("noise"), "{logs}");

    // Killed: offline, and a command's result for it says so.
    let killed = members.remove(1);
    killed.kill9();
    wait_for("the killed agent offline", || {
        (!center.agent(&ids[1]).online).then_some(())
    });
    let ps = center.command(&["ps", "--ids", &ids[1], "--timeout", "500ms"]);
    assert_eq!(ps.results[&ids[1]].status, TargetStatus::Offline, "{ps:?}");
    // Back, without a token: online with the same id.
    members.insert(
        1,
        join_agent(&dir.0.join("agent1"), &center.link, None, &labels[1]),
    );
    assert_eq!(members[1].id(), ids[1]);
    wait_for("the agent back online", || {
        center.agent(&ids[1]).online.then_some(())
    });

    // Revoked: its link closes at once, and it cannot come back.
    center.ok(&["agents", "revoke", &ids[0]]);
    let revoked = center.agent(&ids[0]);
    assert!(revoked.revoked && !revoked.online);
    let ps = center.command(&["ps", "--all", "--timeout", "2s"]);
    assert!(
        !ps.results.contains_key(&ids[0]),
        "a revoked agent is no target: {ps:?}"
    );
    assert!(!center.agent(&ids[0]).online);

    // The audit log has the operator's requests, and no secret.
    let audit: Vec<AuditEntry> = serde_json::from_str(&center.ok(&["audit", "--json"])).unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    for action in [
        "token.create",
        "package.push",
        "command.install",
        "command.restart",
        "agent.revoke",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    let secret = join.split('_').nth(2).unwrap();
    assert!(!serde_json::to_string(&audit).unwrap().contains(secret));
    // Nor in the center's log, at debug, nor the admin token's.
    let log = std::fs::read_to_string(dir.0.join("center.log")).unwrap();
    assert!(!log.is_empty());
    assert!(!log.contains(secret), "a join secret in the center's log");
    assert!(
        !log.contains(center.token.split('_').nth(2).unwrap()),
        "the admin secret in the log"
    );
}

#[test]
fn a_center_killed_comes_back_on_its_data_and_every_agent_reconnects_by_itself() {
    let dir = Scratch::new("fleet-kill");
    let center = Center::start(&dir.0.join("center"));
    let link = center.link.clone();
    let join = center.join_token(2);
    let members: Vec<Agent> = (0..2)
        .map(|n| {
            join_agent(
                &dir.0.join(format!("agent{n}")),
                &link,
                Some(&join),
                &["role=web"],
            )
        })
        .collect();
    let ids: Vec<String> = members.iter().map(Agent::id).collect();
    wait_for("two agents online", || {
        (center.agents().iter().filter(|a| a.online).count() == 2).then_some(())
    });
    let archive = hello_package(&dir.0);
    center.ok(&["push", archive.to_str().unwrap()]);
    let ps = center.command(&["ps", "--all"]);
    let token = center.token.clone();
    let data = center.kill9();

    // Same data, same port: the agents come back by themselves.
    let center = Center::start_on(&data, &link);
    assert_eq!(center.token, token);
    wait_for("both agents back", || {
        (center.agents().iter().filter(|a| a.online).count() == 2).then_some(())
    });
    let mut back: Vec<String> = center.agents().into_iter().map(|a| a.id).collect();
    back.sort();
    let mut before = ids.clone();
    before.sort();
    assert_eq!(back, before);
    assert!(center.ok(&["packages"]).contains("hello"));
    assert!(center.ok(&["token", "ls"]).contains("join"));
    let shown: CommandView =
        serde_json::from_str(&center.ok(&["fleet", "show", &ps.command, "--json"])).unwrap();
    assert_eq!(shown.results.len(), 2);
    let audit: Vec<AuditEntry> = serde_json::from_str(&center.ok(&["audit", "--json"])).unwrap();
    assert!(audit.iter().any(|e| e.action == "package.push"));
    drop(members);
}

/// A service `slow` whose install hook notes each run in `marker`, then takes `secs`.
fn slow_package(out: &Path, marker: &Path, secs: u32) -> PathBuf {
    let pkg = out.join("slow-src");
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    for (name, text) in [
        ("bin/slow", "#!/bin/sh\nexec sleep 1000\n".to_owned()),
        (
            "bin/install",
            format!(
                "#!/bin/sh\necho run >> {}\nsleep {secs}\n",
                marker.display()
            ),
        ),
    ] {
        std::fs::write(pkg.join(name), text).unwrap();
        std::fs::set_permissions(pkg.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        pkg.join("shoal.toml"),
        "[package]\nname = \"slow\"\nversion = \"1.0.0\"\nkind = \"service\"\n\n\
         [run]\ncommand = \"bin/slow\"\n\n[hooks]\ninstall = \"bin/install\"\n",
    )
    .unwrap();
    build(&pkg, out, "slow-1.0.0.tar.gz")
}

#[test]
fn an_agent_killed_in_the_middle_of_a_command_reports_it_interrupted_and_never_runs_it_twice() {
    let dir = Scratch::new("fleet-agent-kill");
    let center = Center::start(&dir.0.join("center"));
    let join = center.join_token(1);
    let data = dir.0.join("agent");
    let member = join_agent(&data, &center.link, Some(&join), &[]);
    let id = member.id();
    wait_for("the agent online", || {
        center.agent(&id).online.then_some(())
    });
    let marker = dir.0.join("hook-runs");
    let archive = slow_package(&dir.0, &marker, 3);
    center.ok(&["push", archive.to_str().unwrap()]);
    // The install runs in the background while the agent is killed under its hook.
    let mut install = center
        .cli(&[
            "fleet",
            "install",
            "slow",
            "--all",
            "--timeout",
            "60s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the install hook to run", || marker.exists().then_some(()));
    member.kill9();
    common::kill_under(&data.join("apps"));
    let member = join_agent(&data, &center.link, None, &[]);
    let done = wait_for("the install command to end", || install.try_wait().unwrap());
    let mut answer = String::new();
    std::io::Read::read_to_string(install.stdout.as_mut().unwrap(), &mut answer).unwrap();
    assert_eq!(done.code(), Some(1), "{answer}");
    let view: CommandView = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        view.results[&id].status,
        TargetStatus::Interrupted,
        "{view:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().lines().count(),
        1,
        "the hook ran twice"
    );
    drop(member);
}

/// `shoal token create --role join ARGS`: (its id, its expiry if any, its text).
fn join_token_with(
    center: &Center,
    args: &[&str],
) -> (String, Option<chrono::DateTime<chrono::Utc>>, String) {
    let mut all = vec!["token", "create", "--role", "join"];
    all.extend_from_slice(args);
    let out = center.ok(&all);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::to_owned)
    };
    let id = field("id: ").expect("the token's id");
    let expires = field("expires: ").map(|e| e.parse().unwrap());
    (id, expires, out.lines().last().unwrap().to_owned())
}

#[test]
fn an_expired_or_revoked_join_token_is_refused_at_enrollment_and_the_agent_keeps_nothing() {
    let dir = Scratch::new("fleet-join-refused");
    let center = Center::start(&dir.0.join("center"));
    let (_, expires, expired) = join_token_with(&center, &["--ttl", "1s"]);
    let (id, _, revoked) = join_token_with(&center, &[]);
    center.ok(&["token", "revoke", &id]);
    let expires = expires.expect("a token with a ttl expires");
    wait_for("the token's expiry", || {
        (chrono::Utc::now() > expires).then_some(())
    });

    for (token, reason) in [(&expired, "has expired"), (&revoked, "was revoked")] {
        let data = dir.0.join(format!("agent-{}", reason.replace(' ', "-")));
        let mut agent = join_agent(&data, &center.link, Some(token), &[]);
        let status = wait_for("the refused agent to exit", || {
            agent.child.try_wait().unwrap()
        });
        assert!(!status.success(), "{reason}: the agent started");
        let said = std::fs::read_to_string(data.with_extension("log")).unwrap();
        assert!(
            said.contains(&format!("the join token {reason}")),
            "{reason}: {said}"
        );
        assert!(said.contains("refused to enroll"), "{reason}: {said}");
        let secret = token.split('_').nth(2).unwrap();
        assert!(
            !said.contains(secret),
            "{reason}: the secret in the agent's output"
        );
        let kept: Vec<_> = std::fs::read_dir(data.join("link"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(kept.is_empty(), "{reason}: the agent kept {kept:?}");
    }
    assert!(center.agents().is_empty(), "{:?}", center.agents());
}

/// A service `gated` whose install hook adds a line to `$SHOAL_TEST_HOOK_RUNS`, then, when
/// `$SHOAL_TEST_GATE` is set, waits for that file to exist.
fn gated_package(out: &Path) -> PathBuf {
    let pkg = out.join("gated-src");
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    for (name, text) in [
        ("bin/gated", "#!/bin/sh\nexec sleep 1000\n"),
        (
            "bin/install",
            "#!/bin/sh\necho run >> \"$SHOAL_TEST_HOOK_RUNS\"\n\
             if [ -n \"$SHOAL_TEST_GATE\" ]; then\n\
             \x20 while [ ! -e \"$SHOAL_TEST_GATE\" ]; do sleep 0.05; done\nfi\n",
        ),
    ] {
        std::fs::write(pkg.join(name), text).unwrap();
        std::fs::set_permissions(pkg.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        pkg.join("shoal.toml"),
        "[package]\nname = \"gated\"\nversion = \"1.0.0\"\nkind = \"service\"\n\n\
         [run]\ncommand = \"bin/gated\"\nstop_timeout = \"1s\"\n\n\
         [hooks]\ninstall = \"bin/install\"\n",
    )
    .unwrap();
    build(&pkg, out, "gated-1.0.0.tar.gz")
}

/// The newest command `center` holds, through its API.
fn newest_command(center: &Center) -> Option<CommandView> {
    let client = shoal_center::client::CenterClient::new(&center.url, &center.token).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let views: Vec<CommandView> = rt.block_on(client.get("/api/v1/commands?limit=1")).unwrap();
    views.into_iter().next()
}

fn hook_runs(marker: &Path) -> usize {
    std::fs::read_to_string(marker).map_or(0, |t| t.lines().count())
}

#[test]
fn a_center_killed_with_a_command_in_flight_reports_it_interrupted_and_never_runs_it_twice() {
    let dir = Scratch::new("fleet-kill-in-flight");
    let center = Center::start(&dir.0.join("center"));
    let link = center.link.clone();
    let join = center.join_token(2);
    let gate = dir.0.join("gate");
    let runs = |who: &str| dir.0.join(format!("{who}-hook-runs"));
    let start = |who: &str, gated: bool| {
        let data = dir.0.join(who);
        let mut command = Agent::center_command(&data, &link);
        command
            .args(["--join", &join])
            .env("SHOAL_TEST_HOOK_RUNS", runs(who));
        if gated {
            command.env("SHOAL_TEST_GATE", &gate);
        }
        Agent::spawn(command, &data)
    };
    let (slow, fast) = (start("slow", true), start("fast", false));
    let (slow_id, fast_id) = (slow.id(), fast.id());
    wait_for("both agents online", || {
        (center.agents().iter().filter(|a| a.online).count() == 2).then_some(())
    });
    let archive = gated_package(&dir.0);
    center.ok(&["push", archive.to_str().unwrap()]);

    // The install runs everywhere: the fast agent answers, the slow one waits on the gate.
    let mut install = center
        .cli(&[
            "fleet",
            "install",
            "gated",
            "--all",
            "--timeout",
            "5m",
            "--json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let command = wait_for("the fast agent's answer stored", || {
        let view = newest_command(&center)?;
        (view.results.get(&fast_id)?.status == TargetStatus::Ok).then_some(view.command)
    });
    wait_for("the slow agent's hook to run", || {
        (hook_runs(&runs("slow")) == 1).then_some(())
    });
    let data = center.kill9();
    let ended = wait_for("the caller to see the center go", || {
        install.try_wait().unwrap()
    });
    assert!(!ended.success());

    // Back on its data: the unanswered target is interrupted, the answered one kept; the
    // command is shown as failed.
    let center = Center::start_on(&data, &link);
    let shown = center.command(&["show", &command]);
    assert_eq!(
        shown.state,
        shoal_api::center::CommandState::Interrupted,
        "{shown:?}"
    );
    assert_eq!(
        shown.results[&slow_id].status,
        TargetStatus::Interrupted,
        "{shown:?}"
    );
    assert_eq!(
        shown.results[&fast_id].status,
        TargetStatus::Ok,
        "{shown:?}"
    );
    let table = center.shoal(&["fleet", "show", &command]);
    assert_eq!(table.status.code(), Some(1), "{}", text(&table));
    assert!(text(&table).contains("interrupted"), "{}", text(&table));

    // The slow agent reconnects with its hook still waiting; let go, the install ends there
    // once, and nothing sends it again.
    wait_for("both agents back", || {
        (center.agents().iter().filter(|a| a.online).count() == 2).then_some(())
    });
    std::fs::write(&gate, "go").unwrap();
    wait_for("gated running on the slow agent", || {
        center
            .agent(&slow_id)
            .apps
            .iter()
            .any(|a| a.name == "gated" && a.state == shoal_api::agent::AppState::Running)
            .then_some(())
    });
    let ps = center.command(&["ps", "--all"]);
    assert!(
        ps.results.values().all(|r| r.status == TargetStatus::Ok),
        "{ps:?}"
    );
    assert_eq!(
        hook_runs(&runs("slow")),
        1,
        "the slow agent ran the install twice"
    );
    assert_eq!(
        hook_runs(&runs("fast")),
        1,
        "the fast agent ran the install twice"
    );
    assert_eq!(center.command(&["show", &command]), shown);
    drop((slow, fast));
}

/// `line` without the terminal's colour codes.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// The agent's debug lines about its link's log streams: (started, ended, the last ended).
fn log_streams(data: &Path) -> (usize, usize, Option<String>) {
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
    let lines: Vec<String> = log.lines().map(plain).collect();
    let started = lines
        .iter()
        .filter(|l| l.contains("log stream started"))
        .count();
    let ended: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("log stream ended"))
        .collect();
    (started, ended.len(), ended.last().map(|l| (*l).clone()))
}

#[test]
fn fleet_logs_follow_stops_on_every_agent_when_its_caller_goes_away() {
    let dir = Scratch::new("fleet-logs-gone");
    let center = Center::start(&dir.0.join("center"));
    let join = center.join_token(2);
    let datas: Vec<PathBuf> = (0..2).map(|n| dir.0.join(format!("agent{n}"))).collect();
    let members: Vec<Agent> = datas
        .iter()
        .map(|data| {
            let mut command = Agent::center_command(data, &center.link);
            command
                .args(["--join", &join])
                .env("RUST_LOG", "warn,shoal_agent::link::logs=debug");
            Agent::spawn(command, data)
        })
        .collect();
    let ids: Vec<String> = members.iter().map(Agent::id).collect();
    wait_for("two agents online", || {
        (center.agents().iter().filter(|a| a.online).count() == 2).then_some(())
    });
    let archive = hello_package(&dir.0);
    center.ok(&["push", archive.to_str().unwrap()]);
    center.fleet(&["install", "hello", "--all"]);

    let mut follow = center
        .cli(&["fleet", "logs", "hello", "-f", "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (send, lines) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    let mut heard: Vec<&String> = Vec::new();
    wait_for("lines from both agents", || {
        while let Ok(line) = lines.try_recv() {
            if let Some(id) = ids.iter().find(|id| line.starts_with(&format!("{id}: "))) {
                if !heard.contains(&id) {
                    heard.push(id);
                }
            }
        }
        (heard.len() == 2).then_some(())
    });
    for data in &datas {
        assert_eq!(log_streams(data).0, 1, "{}", data.display());
    }

    // The caller killed: every agent ends its stream, the center having said stop.
    follow.kill().unwrap();
    follow.wait().unwrap();
    reader.join().unwrap();
    for data in &datas {
        let last = wait_showing("the agent's log stream to end", || {
            match log_streams(data) {
                (1, 1, Some(last)) => Ok(last),
                seen => Err(format!("{seen:?}")),
            }
        });
        assert!(last.contains("open=0"), "{last}");
        assert!(last.contains("ended=Stopped"), "{last}");
    }
    assert!(center.agents().iter().all(|a| a.online), "a link dropped");
    drop(members);
}
