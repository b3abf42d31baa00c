//! A `shoal center` and `shoal agent`s joined to it, each a process on loopback with its own
//! data directory and ephemeral ports, for the end-to-end tests of the fleet; the SDK's hello
//! example packaged for them.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use shoal_api::center::CommandView;
use shoal_api::fleet::TargetStatus;

use super::{text, wait_for, Agent, SHOAL};

/// The heartbeat the tests run with: an agent is offline after three missed.
pub const HEARTBEAT: &str = "200ms";

/// A port free on each of `hosts` now.
pub fn free_port(hosts: &[&str]) -> u16 {
    wait_for("a port free on every address", || {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        hosts
            .iter()
            .all(|h| TcpListener::bind(format!("{h}:{port}")).is_ok())
            .then_some(port)
    })
}

/// The SDK's hello example as a package that declares its port; `health` is added to the
/// manifest as it is.
pub fn hello_package(dir: &Path, port: u16, health: &str) -> PathBuf {
    let pkg = dir.join("hello-src");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("shoal.toml"),
        format!(
            "[package]\nname = \"hello\"\nversion = \"1.0.0\"\nkind = \"service\"\n\n\
             [run]\ncommand = \"{SHOAL}\"\nargs = [\"example\", \"hello\", \"--config\", \"hello.toml\"]\n\
             ports = [{port}]\nshutdown_delay = \"300ms\"\nstop_timeout = \"5s\"\n{health}"
        ),
    )
    .unwrap();
    std::fs::write(
        pkg.join("hello.toml"),
        format!("[rpc]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    super::pkg_build(&pkg, dir);
    dir.join("hello-1.0.0.tar.gz")
}

/// A running `shoal center`: its addresses and admin token; killed when dropped. It logs at
/// debug to `DATA.log`.
pub struct Center {
    pub child: Child,
    pub data: PathBuf,
    /// The agents' port.
    pub link: String,
    /// The HTTP API.
    pub url: String,
    pub token: String,
}

impl Center {
    pub fn start(data: &Path) -> Center {
        Center::start_on(data, "127.0.0.1:0")
    }

    /// On the agents' port `listen`: a center started again on its data keeps its address.
    pub fn start_on(data: &Path, listen: &str) -> Center {
        std::fs::create_dir_all(data).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let mut child = Command::new(SHOAL)
            .args(["center", "--listen", listen, "--http", "127.0.0.1:0"])
            .args(["--heartbeat", HEARTBEAT, "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut link, mut url) = (None, None);
        while link.is_none() || url.is_none() {
            let line = lines.next().expect("the center's first lines").unwrap();
            if let Some(addr) = line.strip_prefix("agents' port: ") {
                link = Some(addr.to_owned());
            } else if let Some(addr) = line.strip_prefix("HTTP API: ") {
                url = Some(addr.to_owned());
            }
        }
        let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
        Center {
            child,
            data: data.to_owned(),
            link: link.unwrap(),
            url: url.unwrap(),
            token: token.trim().to_owned(),
        }
    }

    /// `shoal ARGS` against this center.
    pub fn shoal(&self, args: &[&str]) -> Output {
        self.cli(args).output().unwrap()
    }

    /// `shoal ARGS` against this center with its admin token, to start in the background.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut command = Command::new(SHOAL);
        command
            .args(args)
            .env("SHOAL_CENTER", &self.url)
            .env("SHOAL_TOKEN", &self.token);
        command
    }

    /// As [`Center::shoal`], which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        assert!(out.status.success(), "shoal {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// As [`Center::shoal`], which must fail; its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        assert!(
            !out.status.success(),
            "shoal {args:?} succeeded: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `shoal fleet ARGS --json`, which must succeed on every target.
    pub fn fleet(&self, args: &[&str]) {
        let mut all = vec!["fleet"];
        all.extend_from_slice(args);
        all.push("--json");
        let view: CommandView = serde_json::from_str(&self.ok(&all)).unwrap();
        assert!(
            view.results.values().all(|r| r.status == TargetStatus::Ok),
            "shoal {all:?}: {view:?}"
        );
    }

    /// A join token good for `uses` agents.
    pub fn join_token(&self, uses: u32) -> String {
        let out = self.ok(&[
            "token",
            "create",
            "--role",
            "join",
            "--uses",
            &uses.to_string(),
        ]);
        out.lines().last().unwrap().to_owned()
    }

    /// SIGKILL; answers its data directory, to start it again on.
    pub fn kill9(mut self) -> PathBuf {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let data = self.data.clone();
        std::mem::forget(self);
        data
    }
}

impl Drop for Center {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An [`Agent`] joined to a center: started from a command, known by the id it is given.
impl Agent {
    /// `shoal agent --center LINK --data-dir DATA`, for the caller to add flags and
    /// environment to (the programs it starts inherit the environment).
    pub fn center_command(data: &Path, link: &str) -> Command {
        let mut command = Command::new(SHOAL);
        command
            .args(["agent", "--center", link, "--data-dir"])
            .arg(data);
        command
    }

    /// Starts `command` (from [`Agent::center_command`]), its standard error in `DATA.log`.
    pub fn spawn(mut command: Command, data: &Path) -> Agent {
        std::fs::create_dir_all(data.parent().unwrap()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let child = command.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        Agent {
            child,
            data: data.to_owned(),
        }
    }

    /// The id the center gave it, once it has one.
    pub fn id(&self) -> String {
        wait_for("the agent to enroll", || {
            let text = std::fs::read_to_string(self.data.join("link/identity.json")).ok()?;
            let identity: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some(identity["agent_id"].as_str()?.to_owned())
        })
    }
}
