//! Central configuration end to end on loopback, through the `shoal` CLI as an operator types
//! it: a center and three agents, each running the SDK's hello service on its own address
//! (the third labelled `role=canary`), whose `greet` answers with the `[hello] greeting` in
//! force. A pushed version changes every instance's answer; a gray release to the label
//! changes the canary's alone; `promote` gives it to all; `rollback` brings the earlier
//! greeting back everywhere; a version the service's check refuses is rejected on every
//! instance with its reason in `config status`, each instance answering as before; and a
//! rollback after it is applied everywhere again.

mod common;

use common::fleet::{free_port, hello_package, Center};
use common::Agent;
use common::{wait_showing, Scratch};
use shoal_api::center::{ConfigStatus, InstanceState};
use shoal_rpc::Client;

/// Where the instances listen, one per agent, all on the same port.
const HOSTS: [&str; 3] = ["127.0.0.1", "127.0.0.12", "127.0.0.13"];

/// The agents' labels: the third is the gray release's target.
const LABELS: [&str; 3] = ["role=web", "role=web", "role=canary"];

#[test]
fn a_configuration_reaches_every_instance_gray_promoted_rolled_back_and_refused_whole() {
    let dir = Scratch::new("config-fleet");
    let fleet = Fleet::start(&dir);
    let push = |file: &str, text: &str, more: &[&str]| {
        let path = dir.0.join(file);
        std::fs::write(&path, text).unwrap();
        let mut args = vec!["config", "push", "hello", path.to_str().unwrap()];
        args.extend_from_slice(more);
        fleet.center.ok(&args);
    };
    fleet.wait_answers("the package's own greeting", ["Hello"; 3]);

    // (a) A push reaches every instance.
    push("v1.toml", "[hello]\ngreeting = \"Bonjour\"\n", &[]);
    fleet.wait_answers("version 1 everywhere", ["Bonjour"; 3]);
    fleet.wait_states("version 1 applied", [applied(1), applied(1), applied(1)]);

    // (b) A gray release to a label reaches its agent alone.
    push(
        "v2.toml",
        "[hello]\ngreeting = \"Hola\"\n",
        &["--gray", "--label", "role=canary"],
    );
    fleet.wait_states(
        "version 2 on the canary",
        [applied(1), applied(1), applied(2)],
    );
    assert_eq!(fleet.answers(), ["Bonjour", "Bonjour", "Hola"]);

    // (d) Promoted, it reaches the rest.
    fleet.center.ok(&["config", "promote", "hello"]);
    fleet.wait_answers("version 2 everywhere", ["Hola"; 3]);
    fleet.wait_states("version 2 applied", [applied(2), applied(2), applied(2)]);

    // (e) A rollback (version 3, version 1's content) brings the old greeting back.
    fleet.center.ok(&["config", "rollback", "hello"]);
    fleet.wait_answers("version 1's greeting again", ["Bonjour"; 3]);
    fleet.wait_states("version 3 applied", [applied(3), applied(3), applied(3)]);

    // (c) A version the service refuses (a key [hello] does not have) is rejected on every
    // instance with the service's reason, and each answers as before.
    push("bad.toml", "[hello]\ngreting = \"typo\"\n", &[]);
    let status = fleet.wait_states(
        "version 4 rejected",
        [rejected(4), rejected(4), rejected(4)],
    );
    for instance in &status.instances {
        let InstanceState::Rejected { reason } = &instance.state else {
            unreachable!("waited for rejected")
        };
        assert!(reason.contains("greting"), "{reason}");
        assert_eq!(instance.applied, Some(3), "{instance:?}");
    }
    assert_eq!(fleet.answers(), ["Bonjour"; 3]);

    // Rolled back from it (version 5, version 3's content), every instance is applied again.
    fleet.center.ok(&["config", "rollback", "hello"]);
    fleet.wait_states("version 5 applied", [applied(5), applied(5), applied(5)]);
    assert_eq!(fleet.answers(), ["Bonjour"; 3]);
}

/// A center and three agents joined to it, each running hello at its host in [`HOSTS`].
struct Fleet {
    center: Center,
    /// Kept for their drop, which kills them and their programs.
    _members: Vec<Agent>,
    ids: Vec<String>,
    port: u16,
    runtime: tokio::runtime::Runtime,
}

impl Fleet {
    fn start(dir: &Scratch) -> Fleet {
        let port = free_port(&HOSTS);
        let center = Center::start(&dir.0.join("center"));
        let join = center.join_token(3);
        let members: Vec<Agent> = HOSTS
            .iter()
            .zip(LABELS)
            .enumerate()
            .map(|(n, (host, label))| {
                let data = dir.0.join(format!("agent{n}"));
                let mut command = Agent::center_command(&data, &center.link);
                command
                    .args(["--join", &join, "--label", label])
                    // hello inherits it: the SDK reads SHOAL_… overrides.
                    .env("SHOAL_RPC__LISTEN", format!("{host}:{port}"));
                Agent::spawn(command, &data)
            })
            .collect();
        let ids = members.iter().map(Agent::id).collect();
        let archive = hello_package(&dir.0, port, "");
        center.ok(&["push", archive.to_str().unwrap()]);
        center.fleet(&["install", "hello", "--all"]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Fleet {
            center,
            _members: members,
            ids,
            port,
            runtime,
        }
    }

    /// Each instance's greeting (`greet("x")` answers "GREETING, x"), or what went wrong.
    fn answers(&self) -> Vec<String> {
        HOSTS
            .iter()
            .map(|host| {
                let addr = format!("{host}:{}", self.port);
                let answer: Result<String, _> = self.runtime.block_on(async {
                    let client = Client::connect(&addr).await?;
                    client.call("greet", &("x",)).await
                });
                match answer {
                    Ok(text) => text.strip_suffix(", x").unwrap_or(&text).to_owned(),
                    Err(e) => format!("{addr}: {e}"),
                }
            })
            .collect()
    }

    fn wait_answers(&self, what: &str, expected: [&str; 3]) {
        wait_showing(what, || {
            let answers = self.answers();
            (answers == expected)
                .then_some(())
                .ok_or_else(|| format!("{answers:?}"))
        });
    }

    /// `shoal config status hello --json`.
    fn status(&self) -> ConfigStatus {
        serde_json::from_str(&self.center.ok(&["config", "status", "hello", "--json"])).unwrap()
    }

    /// Waits until the center shows each agent's instance (in the order of [`HOSTS`]) as
    /// `expected` says; answers the status that did.
    fn wait_states(&self, what: &str, expected: [Expect; 3]) -> ConfigStatus {
        wait_showing(what, || {
            let status = self.status();
            let matches = self.ids.iter().zip(&expected).all(|(id, expect)| {
                status
                    .instances
                    .iter()
                    .any(|i| i.agent == *id && expect.matches(i.desired, &i.state))
            });
            if matches {
                Ok(status)
            } else {
                Err(format!("{:#?}", status.instances))
            }
        })
    }
}

/// What an instance should be: its desired version and where it stands.
#[derive(Debug, Clone, Copy)]
struct Expect {
    desired: u64,
    state: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    Rejected,
}

impl Expect {
    fn matches(&self, desired: u64, state: &InstanceState) -> bool {
        let outcome = match state {
            InstanceState::Applied => Outcome::Applied,
            InstanceState::Rejected { .. } => Outcome::Rejected,
            InstanceState::Pending | InstanceState::Offline => return false,
        };
        desired == self.desired && outcome == self.state
    }
}

fn applied(desired: u64) -> Expect {
    Expect {
        desired,
        state: Outcome::Applied,
    }
}

fn rejected(desired: u64) -> Expect {
    Expect {
        desired,
        state: Outcome::Rejected,
    }
}
