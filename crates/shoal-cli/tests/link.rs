//! The agent's link against a real center link in one process, on 127.0.0.1: joining with a
//! token and coming back without one, a wrong pin refused before anything is sent, an agent's
//! certificate posing as a center refused before anything is sent, a command id run once
//! across a dropped link, a download whose sha256 is not the package's refused before it is
//! unpacked, and a log query streamed back.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::Scratch;
use futures_util::StreamExt;
use shoal_agent::link::{self, LinkError, LinkOptions};
use shoal_agent::{Config, Programs, RunError, Running};
use shoal_api::agent::LogQuery;
use shoal_api::fleet::{Action, Exec, PackageRef, TargetStatus};
use shoal_api::token::TokenText;
use shoal_center::link::{
    JoinAuthority, JoinGrant, JoinRefused, LinkConfig, LinkDeps, Links, PackageSource,
};
use shoal_center::pki::Pki;
use shoal_store::{Kv, Sqlite, StoreError};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Join {
    redeemed: AtomicUsize,
}

#[async_trait]
impl JoinAuthority for Join {
    async fn redeem(&self, credential: &str) -> Result<JoinGrant, JoinRefused> {
        self.redeemed.fetch_add(1, Ordering::SeqCst);
        match credential {
            "shoal_tok1_s3cret" => Ok(JoinGrant {
                token_id: "tok1".into(),
                namespace: None,
            }),
            _ => Err(JoinRefused::Unknown),
        }
    }
}

#[derive(Default)]
struct Packages(Mutex<HashMap<String, Bytes>>);

#[async_trait]
impl PackageSource for Packages {
    async fn fetch(&self, sha256: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.0.lock().unwrap().get(sha256).cloned())
    }
}

/// A center's link on 127.0.0.1, which can drop every link and serve again on the same port.
struct Center {
    links: Links,
    pki: Arc<Pki>,
    join: Arc<Join>,
    packages: Arc<Packages>,
    addr: String,
    serving: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Center {
    async fn start(dir: &std::path::Path) -> Center {
        Center::start_with(dir, LinkConfig::default().agent_lifetime).await
    }

    /// A center whose agents' certificates last `lifetime`.
    async fn start_with(dir: &std::path::Path, lifetime: Duration) -> Center {
        let store = Sqlite::open(dir.join("center/store.db")).unwrap();
        let kv: Arc<dyn Kv> = Arc::new(store.clone());
        let pki = Arc::new(Pki::load(&dir.join("center"), vec![]).await.unwrap());
        let join = Arc::new(Join::default());
        let packages = Arc::new(Packages::default());
        let deps = LinkDeps {
            configs: shoal_center::config::Configs::new(kv.clone(), Arc::new(store)),
            kv,
            pki: pki.clone(),
            join: join.clone(),
            packages: packages.clone(),
        };
        let config = LinkConfig {
            heartbeat: Duration::from_millis(200),
            agent_lifetime: lifetime,
            ..LinkConfig::default()
        };
        let links = Links::new(deps, config).await.unwrap();
        let mut center = Center {
            links,
            pki,
            join,
            packages,
            addr: "127.0.0.1:0".into(),
            serving: None,
        };
        center.serve().await;
        center
    }

    /// Serves on `addr` (the same port again after [`Center::drop_links`]).
    async fn serve(&mut self) {
        let listener = tokio::net::TcpListener::bind(&self.addr).await.unwrap();
        self.addr = listener.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        let served = tokio::spawn(shoal_center::link::serve(
            self.links.clone(),
            listener,
            stop.clone(),
        ));
        let served = tokio::spawn(async move { served.await.unwrap().unwrap() });
        self.serving = Some((stop, served));
    }

    /// Stops serving (every link closes), then serves again on the same port.
    async fn drop_links(&mut self) {
        self.stop().await;
        self.serve().await;
    }

    async fn stop(&mut self) {
        if let Some((stop, served)) = self.serving.take() {
            stop.cancel();
            tokio::time::timeout(WAIT, served).await.unwrap().unwrap();
        }
    }

    /// Puts a package in the repository the link fetches from.
    fn hold(&self, package: &PackageRef, bytes: Bytes) {
        self.packages
            .0
            .lock()
            .unwrap()
            .insert(package.sha256.clone(), bytes);
    }

    /// An agent on `data` joined with this center's token, and its id once it is online.
    async fn joined(&self, data: &std::path::Path) -> ((Running, CancellationToken), String) {
        let running = agent(data, self.options(Some(self.token()))).await.unwrap();
        let id = running.0.link().unwrap().agent_id().to_owned();
        assert!(self.links.wait_online(&id, WAIT).await);
        (running, id)
    }

    fn token(&self) -> TokenText {
        format!("shoal_tok1_s3cret_{}", self.pki.pin())
            .parse()
            .unwrap()
    }

    fn options(&self, join: Option<TokenText>) -> LinkOptions {
        let mut options = LinkOptions::new(self.addr.clone());
        options.join = join;
        options.labels = [("role".to_owned(), "web".to_owned())].into();
        options.backoff = (Duration::from_millis(20), Duration::from_millis(200));
        options
    }
}

/// An agent on `data` linked with `options`.
async fn agent(
    data: &std::path::Path,
    options: LinkOptions,
) -> Result<(Running, CancellationToken), RunError> {
    let stop = CancellationToken::new();
    let config = Config {
        at_exit: Programs::Stop,
        link: Some(options),
        ..Config::new(data)
    };
    shoal_agent::run(config, stop.clone())
        .await
        .map(|running| (running, stop))
}

async fn stop_agent((running, stop): (Running, CancellationToken)) {
    stop.cancel();
    tokio::time::timeout(WAIT, running.stopped()).await.unwrap();
}

#[tokio::test]
async fn an_agent_joins_once_and_comes_back_with_its_id_and_no_token() {
    let dir = Scratch::new("link-join");
    let center = Center::start(dir.path()).await;
    let data = dir.path().join("agent");

    let first = agent(&data, center.options(Some(center.token())))
        .await
        .unwrap();
    let id = first.0.link().unwrap().agent_id().to_owned();
    assert!(center.links.wait_online(&id, WAIT).await);
    let info = center.links.agent(&id).await.unwrap().unwrap();
    assert_eq!(info.labels.get("role").map(String::as_str), Some("web"));
    let identity = data.join("link/identity.json");
    let mode = std::fs::metadata(&identity).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&identity).unwrap();
    assert!(!text.contains("s3cret"), "the join token is not kept");
    stop_agent(first).await;
    let mut changes = center.links.changes();
    while center.links.is_online(&id) {
        tokio::time::timeout(WAIT, changes.changed())
            .await
            .unwrap()
            .unwrap();
    }

    // Again without a token: the stored certificate, the same id, no second join.
    let second = agent(&data, center.options(None)).await.unwrap();
    assert_eq!(second.0.link().unwrap().agent_id(), id);
    assert!(center.links.wait_online(&id, WAIT).await);
    assert_eq!(center.join.redeemed.load(Ordering::SeqCst), 1);
    assert_eq!(center.links.agents().await.unwrap().len(), 1);
    stop_agent(second).await;
}

#[tokio::test]
async fn a_wrong_pin_is_refused_before_anything_is_sent() {
    let dir = Scratch::new("link-pin");
    let center = Center::start(dir.path()).await;
    let wrong: TokenText = format!("shoal_tok1_s3cret_{}", "0".repeat(64))
        .parse()
        .unwrap();

    let err = link::enroll(&center.options(None), &wrong)
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::PinMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&center.addr), "{text}");
    assert!(text.contains(center.pki.pin()), "{text}");
    assert!(text.contains("shoal token create --role join"), "{text}");

    // Through the agent's start: refused, nothing joined, the token never reached the center.
    let data = dir.path().join("agent");
    let refused = agent(&data, center.options(Some(wrong))).await.unwrap_err();
    assert!(
        matches!(refused, RunError::Link(LinkError::PinMismatch { .. })),
        "{refused:?}"
    );
    assert_eq!(center.join.redeemed.load(Ordering::SeqCst), 0);
    assert!(center.links.agents().await.unwrap().is_empty());
    assert!(!data.join("link/identity.json").exists());

    // No token at all on a first start says what to do.
    let missing = agent(&data, center.options(None)).await.unwrap_err();
    assert!(missing.to_string().contains("--join"), "{missing}");
}

/// A crontab package `app` at `version`, as the repository holds it.
fn package(dir: &std::path::Path, version: &str) -> (PackageRef, Bytes) {
    let src = dir.join(format!("pkg-{version}"));
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/job"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        src.join("shoal.toml"),
        format!(
            "[package]\nname = \"app\"\nversion = \"{version}\"\nkind = \"crontab\"\n\n\
             [[cron]]\nname = \"yearly\"\nschedule = \"0 0 0 1 1 *\"\ncommand = \"bin/job\"\n"
        ),
    )
    .unwrap();
    let built = shoal_pkg::build(&src, &dir.join(format!("out-{version}"))).unwrap();
    let bytes = Bytes::from(std::fs::read(&built.archive).unwrap());
    let package = PackageRef {
        name: "app".into(),
        version: version.into(),
        sha256: built.sha256.to_string(),
        size: bytes.len() as u64,
    };
    (package, bytes)
}

fn install(command: &str, package: &PackageRef) -> Exec {
    Exec {
        command: command.into(),
        action: Action::Install {
            name: "app".into(),
            version: Some(package.version.clone()),
        },
        package: Some(package.clone()),
    }
}

#[tokio::test]
async fn a_command_id_runs_once_across_a_dropped_link() {
    let dir = Scratch::new("link-once");
    let mut center = Center::start(dir.path()).await;
    let (pkg, bytes) = package(dir.path(), "1.0.0");
    center.hold(&pkg, bytes);
    let data = dir.path().join("agent");
    let (running, id) = center.joined(&data).await;

    let first = center
        .links
        .exec(&id, install("cmd-1", &pkg), WAIT)
        .await
        .unwrap();
    assert_eq!(first.status, TargetStatus::Ok, "{first:?}");

    // The link drops and comes back; the same command id again is answered, not run.
    center.drop_links().await;
    assert!(center.links.wait_online(&id, WAIT).await);
    let again = center
        .links
        .exec(&id, install("cmd-1", &pkg), WAIT)
        .await
        .unwrap();
    assert_eq!(again, first);

    // A new id does run: the version is installed already, so it fails, which shows the
    // repeat above was not run.
    let other = center
        .links
        .exec(&id, install("cmd-2", &pkg), WAIT)
        .await
        .unwrap();
    assert_eq!(other.status, TargetStatus::Error, "{other:?}");
    assert!(other.message.contains("installed"), "{other:?}");

    // A package whose bytes do not match its reference is refused before it is unpacked.
    let (mut bad, _) = package(dir.path(), "3.0.0");
    bad.sha256 = pkg.sha256.clone();
    bad.size = pkg.size + 1;
    let refused = center
        .links
        .exec(&id, install("cmd-3", &bad), WAIT)
        .await
        .unwrap();
    assert_eq!(refused.status, TargetStatus::Error, "{refused:?}");

    // The same new id twice at once: one run, both answered with its result.
    let (v2, v2_bytes) = package(dir.path(), "2.0.0");
    center.hold(&v2, v2_bytes);
    let (a, b) = tokio::join!(
        center.links.exec(&id, install("cmd-4", &v2), WAIT),
        center.links.exec(&id, install("cmd-4", &v2), WAIT),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.status, TargetStatus::Ok, "{a:?}");
    assert_eq!(a, b);

    // Logs of the app come back over the link.
    let logs = data.join("logs/app");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join("stdout.log"),
        "2026-01-01T00:00:00.000Z one\n2026-01-01T00:00:01.000Z two\n",
    )
    .unwrap();
    let query = LogQuery {
        lines: 10,
        ..LogQuery::default()
    };
    let stream = center.links.logs(&id, "app", query, WAIT).await.unwrap();
    let lines: Vec<String> = tokio::time::timeout(WAIT, stream.map(|l| l.line).collect())
        .await
        .unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].ends_with("two"), "{lines:?}");

    // More lines than the first credit: they keep coming as the reader takes them.
    let many: String = (0..1000)
        .map(|n| format!("2026-01-01T00:00:00.{:03}Z line {n}\n", n % 1000))
        .collect();
    std::fs::write(logs.join("stdout.log"), many).unwrap();
    let query = LogQuery {
        lines: 1000,
        ..LogQuery::default()
    };
    let stream = center.links.logs(&id, "app", query, WAIT).await.unwrap();
    let lines: Vec<String> = tokio::time::timeout(WAIT, stream.map(|l| l.line).collect())
        .await
        .unwrap();
    assert_eq!(lines.len(), 1000);
    assert!(lines[999].ends_with("line 999"), "{:?}", lines.last());

    stop_agent(running).await;
    center.stop().await;
}

#[tokio::test]
async fn an_agent_renews_its_certificate_over_the_link_and_links_with_the_new_one() {
    let dir = Scratch::new("link-renew");
    let mut center = Center::start_with(dir.path(), Duration::from_secs(6)).await;
    let data = dir.path().join("agent");
    let (running, id) = center.joined(&data).await;
    let identity = data.join("link/identity.json");
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&identity).unwrap()).unwrap()
    };
    let first = read();

    // Two thirds into six seconds, over the live link: a new key and certificate.
    let deadline = std::time::Instant::now() + WAIT;
    let renewed = loop {
        let now = read();
        if now["cert_pem"] != first["cert_pem"] {
            break now;
        }
        assert!(std::time::Instant::now() < deadline, "no renewal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(renewed["key_pem"], first["key_pem"]);
    assert_eq!(renewed["agent_id"], first["agent_id"]);

    // The next link comes up with what is stored now.
    center.drop_links().await;
    assert!(center.links.wait_online(&id, WAIT).await);
    stop_agent(running).await;
    center.stop().await;
}

/// A service package `svc` 1.0.0 whose program sleeps; an install waits for it to settle.
fn service_package(dir: &std::path::Path) -> (PackageRef, Bytes) {
    let src = dir.join("svc-src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    let script = src.join("bin/svc");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 1000\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        src.join("shoal.toml"),
        "[package]\nname = \"svc\"\nversion = \"1.0.0\"\nkind = \"service\"\n\n\
         [run]\ncommand = \"bin/svc\"\nstop_timeout = \"1s\"\n",
    )
    .unwrap();
    let built = shoal_pkg::build(&src, &dir.join("svc-out")).unwrap();
    let bytes = Bytes::from(std::fs::read(&built.archive).unwrap());
    let package = PackageRef {
        name: "svc".into(),
        version: "1.0.0".into(),
        sha256: built.sha256.to_string(),
        size: bytes.len() as u64,
    };
    (package, bytes)
}

#[tokio::test]
async fn a_link_dropped_in_the_middle_of_a_command_does_not_run_it_twice() {
    let dir = Scratch::new("link-midway");
    let mut center = Center::start(dir.path()).await;
    let (svc, bytes) = service_package(dir.path());
    center.hold(&svc, bytes);
    let data = dir.path().join("agent");
    let (running, id) = center.joined(&data).await;

    let exec = Exec {
        command: "midway".into(),
        action: Action::Install {
            name: "svc".into(),
            version: None,
        },
        package: Some(svc.clone()),
    };
    let links = center.links.clone();
    let (first, agent_id) = (exec.clone(), id.clone());
    let sent = tokio::spawn(async move { links.exec(&agent_id, first, WAIT).await });

    // Once the version is unpacked (the install then waits for the program to settle), the
    // link drops.
    let unpacked = data.join("apps/svc/versions/1.0.0");
    let deadline = std::time::Instant::now() + WAIT;
    while !unpacked.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the install never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    center.drop_links().await;
    let dropped = sent.await.unwrap();
    assert!(
        matches!(dropped, Err(shoal_center::link::LinkError::Dropped(_))),
        "{dropped:?}"
    );

    // Sent again once the agent is back: the run going on is waited for, not started again.
    assert!(center.links.wait_online(&id, WAIT).await);
    let again = center.links.exec(&id, exec, WAIT).await.unwrap();
    assert_eq!(again.status, TargetStatus::Ok, "{again:?}");
    let other = Exec {
        command: "other".into(),
        action: Action::Install {
            name: "svc".into(),
            version: None,
        },
        package: Some(svc),
    };
    let other = center.links.exec(&id, other, WAIT).await.unwrap();
    assert_eq!(other.status, TargetStatus::Error, "{other:?}");
    stop_agent(running).await;
    center.stop().await;
}

/// What a stand-in center saw of one connection.
#[derive(Debug)]
enum Handshake {
    /// The client ended the handshake: nothing of its own was sent.
    Refused,
    /// The handshake completed, and this many bytes came first.
    Completed(usize),
}

/// A TLS server on 127.0.0.1 holding a certificate chain and its key, posing as a center; it
/// reports each connection's handshake.
struct Impostor {
    addr: String,
    seen: tokio::sync::mpsc::UnboundedReceiver<Handshake>,
    served: tokio::task::JoinHandle<()>,
}

impl Impostor {
    async fn start(chain_pem: &str, key_pem: &str) -> Impostor {
        use tokio::io::AsyncReadExt as _;
        let config =
            shoal_rpc::transport::server_tls(chain_pem.as_bytes(), key_pem.as_bytes()).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (report, seen) = tokio::sync::mpsc::unbounded_channel();
        let served = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let seen = match acceptor.accept(tcp).await {
                    Err(_) => Handshake::Refused,
                    Ok(mut tls) => {
                        let mut buf = [0u8; 4096];
                        let read = tokio::time::timeout(WAIT, tls.read(&mut buf)).await;
                        Handshake::Completed(read.ok().and_then(Result::ok).unwrap_or(0))
                    }
                };
                if report.send(seen).is_err() {
                    return;
                }
            }
        });
        Impostor { addr, seen, served }
    }

    /// The next connection's handshake, which the client must have refused.
    async fn refused(&mut self, what: &str) {
        let seen = tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: no connection came"))
            .unwrap();
        match seen {
            Handshake::Refused => {}
            Handshake::Completed(bytes) => {
                panic!("{what}: the handshake completed and {bytes} bytes were sent")
            }
        }
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.served.abort();
    }
}

#[tokio::test]
async fn an_agent_certificate_posing_as_a_center_is_refused_before_anything_is_sent() {
    let dir = Scratch::new("link-impostor");
    let center = Center::start(dir.path()).await;
    let data = dir.path().join("agent");
    let (running, id) = center.joined(&data).await;
    stop_agent(running).await;
    // A valid agent certificate of the real authority, with its key and the real root in the
    // chain: the pin of a join token matches it.
    let text = std::fs::read_to_string(data.join("link/identity.json")).unwrap();
    let identity: link::Identity = serde_json::from_str(&text).unwrap();
    let chain = format!("{}{}", identity.cert_pem, identity.ca_pem);
    let mut impostor = Impostor::start(&chain, &identity.key_pem).await;

    // Enrolling with the real center's token: the handshake fails, the token is never sent.
    let mut options = center.options(None);
    options.center = impostor.addr.clone();
    let err = link::enroll(&options, &center.token()).await.unwrap_err();
    assert!(matches!(err, LinkError::Connect { .. }), "{err:?}");
    let said = err.to_string();
    assert!(said.contains(&impostor.addr), "{said}");
    assert!(said.contains("server authentication"), "{said}");
    impostor.refused("enrolling").await;

    // The enrolled agent's link (only the stored root trusted, its own certificate shown on
    // request) refuses it too, on each try, and never says hello.
    let back = agent(&data, options).await.unwrap();
    assert_eq!(back.0.link().unwrap().agent_id(), id);
    impostor.refused("the link").await;
    impostor.refused("the link, again").await;
    assert_eq!(*back.0.link().unwrap().linked().borrow(), 0);
    stop_agent(back).await;
    assert_eq!(center.join.redeemed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_download_of_the_right_size_and_another_sha256_is_refused_before_it_is_unpacked() {
    let dir = Scratch::new("link-sha256");
    let center = Center::start(dir.path()).await;
    let (pkg, bytes) = package(dir.path(), "1.0.0");
    // One byte changed: the size the reference says, another sha256.
    let mut tampered = bytes.to_vec();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    center.hold(&pkg, Bytes::from(tampered));
    let data = dir.path().join("agent");
    let (running, id) = center.joined(&data).await;

    let refused = center
        .links
        .exec(&id, install("tampered", &pkg), WAIT)
        .await
        .unwrap();
    assert_eq!(refused.status, TargetStatus::Error, "{refused:?}");
    let said = &refused.message;
    assert!(said.contains("sha256"), "{said}");
    assert!(said.contains(&pkg.sha256), "{said}");
    assert!(said.contains("app 1.0.0"), "not naming the package: {said}");
    assert!(!data.join("apps/app").exists(), "something was unpacked");
    let incoming = data.join("incoming");
    let left: Vec<_> = std::fs::read_dir(&incoming)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the download was kept: {left:?}");

    // The right bytes then install: the refusal left nothing in the way.
    center.hold(&pkg, bytes);
    let installed = center
        .links
        .exec(&id, install("untampered", &pkg), WAIT)
        .await
        .unwrap();
    assert_eq!(installed.status, TargetStatus::Ok, "{installed:?}");
    stop_agent(running).await;
}
