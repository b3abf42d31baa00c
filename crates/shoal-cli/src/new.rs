//! `shoal new NAME [--path DIR] [--idl svr.json]`: a service crate that builds, runs and
//! passes its test as written: the service, its configuration, a test that calls it through
//! its generated client, a package manifest and a README.
//!
//! Without `--idl` the crate holds a small `#[shoal::service]` written in Rust. With `--idl`
//! it is built from a pysvrkit JSON IDL: the IDL is copied to `svr.json`, `build.rs` turns it
//! into Rust in `OUT_DIR` on every build (`shoal_idl::build`), and the files a user fills in
//! (`src/handlers.rs`, `src/workers.rs`) start as not-implemented answers and idle workers.
//!
//! A file that already exists is never overwritten: running `shoal new` again over a crate
//! adds only what is missing and says what it kept. The crate depends on the shoal crates by
//! path, from the checkout this `shoal` was built from (or `--shoal-path`), and starts from
//! that checkout's `Cargo.lock`, so it builds with the versions shoal was tested with;
//! `--shoal-version` depends on published crates instead.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Args;
use shoal_idl::{GroupWorkers, Idl, ServerWorkers};

use crate::out::{errln, outln};

#[derive(Args, Debug)]
pub struct NewArgs {
    /// The crate's name (also its binary's, its package's and its config file's).
    name: String,
    /// Where to create it (default: ./NAME).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Build the service from a pysvrkit JSON IDL (copied into the crate as svr.json).
    #[arg(long, value_name = "SVR.JSON")]
    idl: Option<PathBuf>,
    /// Depend on the shoal crates of this checkout (default: the one this shoal was built
    /// from).
    #[arg(long, value_name = "DIR", conflicts_with = "shoal_version")]
    shoal_path: Option<PathBuf>,
    /// Depend on this published version of the shoal crates instead of a checkout.
    #[arg(long, value_name = "VERSION")]
    shoal_version: Option<String>,
}

/// Where the scaffold's shoal crates come from.
enum Source {
    Checkout(PathBuf),
    Version(String),
}

/// What the templates are filled with.
struct Names {
    /// The crate and package name: `hello-svc`.
    name: String,
    /// As a Rust path: `hello_svc`.
    krate: String,
    /// The service trait: `HelloSvc`, or the IDL app's.
    service: String,
}

pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let idl = match &args.idl {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read the IDL {}", path.display()))?;
            let idl = shoal_idl::parse(&text, &path.display().to_string())?;
            Some((idl, text))
        }
        None => None,
    };
    let source = match (args.shoal_path, args.shoal_version) {
        (_, Some(version)) => Source::Version(version),
        (Some(path), None) => Source::Checkout(checkout(&path)?),
        (None, None) => Source::Checkout(checkout(&built_from()).with_context(|| {
            "this shoal was built from a checkout that is gone; pass --shoal-path CHECKOUT or \
             --shoal-version VERSION"
        })?),
    };
    let dir = args.path.unwrap_or_else(|| PathBuf::from(&args.name));
    let krate = args.name.replace('-', "_");
    let service = match &idl {
        Some((idl, _)) => shoal_idl::rust::type_name(&idl.app),
        None => shoal_idl::rust::type_name(&krate),
    };
    let names = Names {
        name: args.name.clone(),
        krate,
        service,
    };
    let files = match &idl {
        Some((idl, text)) => idl_files(&names, &source, idl, text),
        None => plain_files(&names, &source),
    };
    let lock = match &source {
        Source::Checkout(root) => std::fs::read_to_string(root.join("Cargo.lock")).ok(),
        Source::Version(_) => None,
    };
    let written = write_all(&dir, files, lock)?;
    format(&dir, &written);
    for (path, new) in &written {
        let what = if *new { "wrote" } else { "kept " };
        outln!("{what} {}", dir.join(path).display())?;
    }
    outln!(
        "\n{} is ready: cd {} && cargo test && cargo run",
        names.name,
        dir.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Lays out the Rust files just written as `cargo fmt` would (their generated parts vary with
/// the IDL). Each goes through rustfmt's stdin, which formats that text alone and never a
/// module it declares (a kept file is the user's). Without rustfmt they stay as generated,
/// which compiles the same.
fn format(dir: &Path, written: &[(PathBuf, bool)]) {
    for (path, new) in written {
        if !new || path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let path = dir.join(path);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match rustfmt(&text) {
            Some(formatted) => {
                let _ = std::fs::write(&path, formatted);
            }
            None => {
                errln!("note: rustfmt did not run; the new Rust files are left as generated");
                return;
            }
        }
    }
}

fn rustfmt(text: &str) -> Option<String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = text.to_owned();
    // Written from a thread: rustfmt may fill its stdout before it has read all of stdin.
    let feeding = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().ok()?;
    feeding.join().ok()?.ok()?;
    (out.status.success() && !out.stdout.is_empty())
        .then(|| String::from_utf8(out.stdout).ok())
        .flatten()
}

/// A crate name cargo accepts that is also a safe file name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64;
    if !ok {
        bail!(
            "{name:?} cannot name a service crate: use lowercase ASCII letters, digits, '-' and \
             '_', starting with a letter (at most 64)"
        );
    }
    if matches!(name, "shoal" | "shoal-idl" | "shoal-rpc" | "test" | "build") {
        bail!("{name:?} is taken (a shoal crate or a cargo target name); pick another name");
    }
    Ok(())
}

/// The checkout `shoal` was compiled from: this crate's manifest is `ROOT/crates/shoal-cli`.
fn built_from() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `path`, checked to be a shoal checkout, made absolute.
fn checkout(path: &Path) -> anyhow::Result<PathBuf> {
    let root = path
        .canonicalize()
        .with_context(|| format!("{}: no such directory", path.display()))?;
    for krate in ["shoal", "shoal-idl"] {
        let manifest = root.join("crates").join(krate).join("Cargo.toml");
        if !manifest.is_file() {
            bail!(
                "{} is not a shoal checkout: {} is missing",
                root.display(),
                manifest.display()
            );
        }
    }
    Ok(root)
}

/// A dependency on shoal crate `krate`, as Cargo.toml writes it.
fn dependency(source: &Source, krate: &str) -> String {
    match source {
        Source::Checkout(root) => {
            let path = root.join("crates").join(krate);
            format!("{{ path = {:?} }}", path.display().to_string())
        }
        Source::Version(version) => format!("{version:?}"),
    }
}

/// Writes each file that does not exist yet (and the lock file, when there is none); returns
/// every path with whether it was written.
fn write_all(
    dir: &Path,
    files: Vec<(String, String)>,
    lock: Option<String>,
) -> anyhow::Result<Vec<(PathBuf, bool)>> {
    let mut done = Vec::new();
    let lock = lock.map(|text| ("Cargo.lock".to_owned(), text));
    for (path, text) in files.into_iter().chain(lock) {
        let target = dir.join(&path);
        if target.exists() {
            done.push((PathBuf::from(path), false));
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        // create_new: a file that appeared meanwhile is not overwritten either.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .with_context(|| format!("create {}", target.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .with_context(|| format!("write {}", target.display()))?;
        done.push((PathBuf::from(path), true));
    }
    Ok(done)
}

fn fill(template: &str, names: &Names) -> String {
    template
        .replace("@NAME@", &names.name)
        .replace("@CRATE@", &names.krate)
        .replace("@SERVICE@", &names.service)
}

/// Files both kinds of crate share.
fn common_files(names: &Names, source: &str, extra: &str, config: String) -> Vec<(String, String)> {
    vec![
        (
            "Cargo.toml".into(),
            fill(CARGO_TOML, names)
                .replace("@DEPENDENCIES@", source)
                .replace("@EXTRA@", extra),
        ),
        (".cargo/config.toml".into(), fill(CARGO_CONFIG, names)),
        (".gitignore".into(), "/target\n".into()),
        ("src/main.rs".into(), fill(MAIN_RS, names)),
        (format!("{}.toml", names.name), config),
    ]
}

fn plain_files(names: &Names, source: &Source) -> Vec<(String, String)> {
    let deps = format!(
        "shoal = {}\ntokio = {{ version = \"1\", features = [\"macros\", \"rt-multi-thread\"] }}\n",
        dependency(source, "shoal")
    );
    let config = fill(PLAIN_CONFIG, names).replace("@LISTEN@", "127.0.0.1:3000");
    let mut files = common_files(names, &deps, "", config);
    files.extend([
        ("src/lib.rs".into(), fill(PLAIN_LIB_RS, names)),
        (
            "tests/service.rs".into(),
            fill(TEST_RS, names)
                .replace("@SERVER_CONFIG@", "")
                .replace("@CALLS@", &fill(PLAIN_CALLS, names)),
        ),
        (
            "README.md".into(),
            fill(&format!("{PLAIN_README}{PACKAGING}"), names),
        ),
        ("shoal.toml".into(), manifest(names, 3000)),
    ]);
    files
}

fn idl_files(names: &Names, source: &Source, idl: &Idl, text: &str) -> Vec<(String, String)> {
    let deps = format!(
        "serde = {{ version = \"1\", features = [\"derive\"] }}\nshoal = {}\ntokio = {{ version \
         = \"1\", features = [\"macros\", \"rt-multi-thread\"] }}\ntracing = \"0.1\"\n",
        dependency(source, "shoal")
    );
    let build_deps = format!(
        "\n[build-dependencies]\nshoal-idl = {}\n",
        dependency(source, "shoal-idl")
    );
    let port = idl.rpc_server.as_ref().map_or(3000, |s| s.port);
    let ip = idl
        .rpc_server
        .as_ref()
        .map_or("127.0.0.1", |s| s.ip.as_str());
    let workers = idl.self_server.is_some();
    let config = fill(IDL_CONFIG, names)
        .replace("@LISTEN@", &format!("{ip}:{port}"))
        .replace("@SERVER@", &server_config(idl, true))
        .replace("@WORKERS@", &workers_config(idl));
    let mut files = common_files(names, &deps, &build_deps, config);
    let calls = match &idl.rpc_server {
        Some(server) => idl_calls(idl, server),
        None => String::new(),
    };
    // The test's config, inside a Rust string given to format!.
    let test_server = server_config(idl, false).replace('\n', "\\n");
    files.extend([
        ("svr.json".into(), text.to_owned()),
        ("build.rs".into(), BUILD_RS.into()),
        (
            "src/lib.rs".into(),
            fill(IDL_LIB_RS, names)
                .replace(
                    "@MODULES@",
                    if workers {
                        "mod handlers;\nmod workers;\n"
                    } else {
                        "mod handlers;\n"
                    },
                )
                .replace(
                    "@DECLARE@",
                    if workers {
                        "        declare_workers(app, workers::Workers::default());\n"
                    } else {
                        ""
                    },
                ),
        ),
        (
            "src/handlers.rs".into(),
            shoal_idl::rust::handlers(idl, "svr.json", "crate::svr"),
        ),
        (
            "tests/service.rs".into(),
            fill(TEST_RS, names)
                .replace("@SERVER_CONFIG@", &test_server)
                .replace("@CALLS@", &fill(&calls, names)),
        ),
        ("clients.toml".into(), clients_toml(names, idl, port)),
        (
            "README.md".into(),
            fill(&format!("{IDL_README}{PACKAGING}"), names),
        ),
        ("shoal.toml".into(), manifest(names, port)),
    ]);
    if workers {
        files.push((
            "src/workers.rs".into(),
            shoal_idl::rust::workers(idl, "svr.json", "crate::svr"),
        ));
    }
    files
}

/// `[rpc]` lines from `rpc_server.worker_type` and `worker_sum`; `comments`: with a line
/// saying where they come from.
fn server_config(idl: &Idl, comments: bool) -> String {
    let Some(server) = &idl.rpc_server else {
        return String::new();
    };
    let sum = server.worker_sum.unwrap_or(4).max(1);
    let (key, comment) = match server.worker_type {
        Some(ServerWorkers::Thread) => (
            "blocking_threads",
            format!("# rpc_server worker_type \"thread\", worker_sum {sum}: handlers run on {sum} threads.\n"),
        ),
        Some(ServerWorkers::Process) => (
            "processes",
            format!("# rpc_server worker_type \"process\", worker_sum {sum}: {sum} processes serve the port.\n"),
        ),
        None => return String::new(),
    };
    let comment = if comments { comment } else { String::new() };
    format!("{comment}{key} = {sum}\n")
}

/// `[workers]` from `self_server`.
fn workers_config(idl: &Idl) -> String {
    let Some(self_server) = &idl.self_server else {
        return String::new();
    };
    let mut out = String::from(
        "\n[workers]\n# The self_server groups and their sizes (worker_sum); a change applies at the next \
         reload.\n",
    );
    for group in self_server.plan() {
        let how = match group.kind {
            GroupWorkers::Thread => "threads".to_owned(),
            GroupWorkers::Process => "processes".to_owned(),
            GroupWorkers::ProcessCoroutine => {
                format!("processes of {} coroutines each", group.coroutines)
            }
            GroupWorkers::Coroutine => "coroutines in the service's process".to_owned(),
        };
        out.push_str(&format!(
            "{} = {}  # {how}\n",
            toml_key(&group.name),
            group.workers
        ));
    }
    out
}

/// A group name as a TOML key (bare when it can be).
fn toml_key(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// The endpoint file a client reads: this machine's server, balanced as the IDL says.
fn clients_toml(names: &Names, idl: &Idl, port: u16) -> String {
    let head = format!(
        "# The servers a {name} client calls: `{krate}::client_from_file(\"clients.toml\")` in Rust,\n\
         # `{app}_client.py` from `shoal idl python svr.json` in Python.\n",
        name = names.name,
        krate = names.krate,
        app = idl.app,
    );
    match idl.rpc_client.map(|c| c.mode) {
        Some(shoal_idl::ClientMode::Sharding) => format!(
            "{head}# Without `balance`, calls are balanced as svr.json's rpc_client.mode says: sharding,\n\
             # a call's key % shard_count picking the endpoint whose range holds it.\n\
             # From a pysvrkit client config: shardsum -> shard_count, ip and port -> addr,\n\
             # [shardbegin, shardend] -> shard, ip_bak and port_bak -> backup.\n\
             shard_count = 1\n\n[[endpoint]]\naddr = \"127.0.0.1:{port}\"\nshard = [0, 0]\n\
             # backup = \"127.0.0.2:{port}\"\n"
        ),
        Some(shoal_idl::ClientMode::Hashring) => format!(
            "{head}# Without `balance`, calls are balanced as svr.json's rpc_client.mode says: hashring.\n\
             # From a pysvrkit client config: ip and port -> addr, weight -> weight (1 to 100).\n\
             [[endpoint]]\naddr = \"127.0.0.1:{port}\"\nweight = 1\n"
        ),
        None => format!(
            "{head}# svr.json has no rpc_client.mode: calls go round robin unless `balance` says.\n\
             [[endpoint]]\naddr = \"127.0.0.1:{port}\"\n"
        ),
    }
}

/// The test's calls: each api with default arguments; until its handler is filled in, a
/// call answers not implemented.
fn idl_calls(idl: &Idl, server: &shoal_idl::RpcServer) -> String {
    let mut out = String::new();
    let methods = shoal_idl::rust::method_names(&server.apis);
    for (api, method) in server.apis.iter().zip(methods) {
        let inputs = api.inputs();
        let args: Vec<String> = inputs.iter().map(|a| default_value(&a.ty, idl)).collect();
        if api.ret {
            out.push_str(&format!(
                "    // Until `{name}` is filled in (src/handlers.rs) it answers not implemented;\n    \
                 // then assert what it answers here.\n    \
                 match client.{method}({args}).await {{\n        \
                 Err(e) => assert!(e.to_string().contains(\"not implemented: {name}\"), \"{{e}}\"),\n        \
                 Ok(answer) => println!(\"{name} answered {{answer:?}}\"),\n    }}\n",
                name = api.name,
                args = args.join(", "),
            ));
        } else {
            out.push_str(&format!(
                "    // `{name}` is a notification: sent, never answered.\n    \
                 client.{method}({args}).await.unwrap();\n",
                name = api.name,
                args = args.join(", "),
            ));
        }
    }
    if let Some(self_server) = &idl.self_server {
        out.push_str("\n    // The worker groups run with the sizes svr.json declares.\n");
        for group in self_server.plan() {
            out.push_str(&format!(
                "    wait_for_workers(&admin, {:?}, {}).await;\n",
                group.name, group.workers
            ));
        }
    }
    out
}

/// A Rust expression of IDL type `ty`: a proto's `Default`-like value built field by field.
fn default_value(ty: &str, idl: &Idl) -> String {
    match ty {
        "string" => "String::new()".into(),
        "bool" => "false".into(),
        "int" => "0".into(),
        "float" => "0.0".into(),
        "list" | "tuple" => "Vec::new()".into(),
        "dict" => "Default::default()".into(),
        proto => {
            let Some(p) = idl.protos.iter().find(|p| p.name == proto) else {
                return "Default::default()".into();
            };
            let fields: Vec<String> = p
                .fields
                .iter()
                .zip(shoal_idl::rust::field_names(&p.fields))
                .map(|(f, name)| format!("{name}: {}", default_value(&f.ty, idl)))
                .collect();
            format!(
                "@CRATE@::{} {{ {} }}",
                shoal_idl::rust::type_name(proto),
                fields.join(", ")
            )
        }
    }
}

fn manifest(names: &Names, port: u16) -> String {
    fill(MANIFEST, names).replace("@PORT@", &port.to_string())
}

const CARGO_TOML: &str = r#"[package]
name = "@NAME@"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
@DEPENDENCIES@@EXTRA@
# A workspace of its own; remove this table to make the crate a member of an enclosing one.
[workspace]
"#;

const CARGO_CONFIG: &str = r#"# `cargo run` starts the service with its configuration file.
[env]
SHOAL_CONFIG = { value = "@NAME@.toml", relative = true }
"#;

const MAIN_RS: &str = r#"//! The @NAME@ service: `cargo run` (which reads @NAME@.toml), or `@NAME@ --config FILE`.

#[tokio::main]
async fn main() -> shoal::Exit {
    @CRATE@::app().run().await
}
"#;

const PLAIN_LIB_RS: &str = r#"//! The @NAME@ service: its RPC interface, its implementation, and the application that
//! serves it. Made by `shoal new`; it is yours to change.

/// What @NAME@ answers. `#[shoal::service]` makes `@SERVICE@Server` (serves an
/// implementation) and `@SERVICE@Client` (calls one) from it.
#[shoal::service]
pub trait @SERVICE@ {
    /// Answers "Hello, NAME!".
    async fn greet(&self, name: String) -> String;
}

/// The implementation: add what the methods share as fields.
#[derive(Debug, Default)]
pub struct Service {}

impl @SERVICE@ for Service {
    async fn greet(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

/// The application, for `main` and the tests.
pub fn app() -> shoal::App {
    shoal::App::new("@NAME@", env!("CARGO_PKG_VERSION")).setup(|app| {
        app.serve(@SERVICE@Server::new(Service::default()));
        Ok(())
    })
}
"#;

const IDL_LIB_RS: &str = r#"//! The @NAME@ service, made by `shoal new` from svr.json. What svr.json describes is
//! generated into `svr` by build.rs on every change to it; the handlers (src/handlers.rs) and
//! the rest are yours to change.

@MODULES@
/// What svr.json describes: its protos, the `@SERVICE@` service (`@SERVICE@Server`,
/// `@SERVICE@Client`, `client_from_file`) and its worker groups. Names keep svr.json's case.
#[allow(non_snake_case)]
pub mod svr {
    include!(concat!(env!("OUT_DIR"), "/svr.rs"));
}

pub use svr::*;

/// The application, for `main` and the tests.
pub fn app() -> shoal::App {
    shoal::App::new("@NAME@", env!("CARGO_PKG_VERSION")).setup(|app| {
        app.serve(@SERVICE@Server::new(handlers::Handlers::default()));
@DECLARE@        Ok(())
    })
}
"#;

const BUILD_RS: &str = r#"//! Generates the service's code from svr.json into OUT_DIR, again whenever svr.json changes.
//! A bad svr.json stops the build with its error at a JSON path and line:column.

fn main() {
    println!("cargo::rerun-if-changed=svr.json");
    let out_dir = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    if let Err(e) = shoal_idl::build("svr.json", out_dir.as_ref()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
"#;

const PLAIN_CALLS: &str = r#"    let answer = client.greet("world".into()).await.unwrap();
    assert_eq!(answer, "Hello, world!");
"#;

const TEST_RS: &str = r#"//! Starts the built service with a test configuration (a free port, an admin socket), calls
//! it through its generated client, and closes it.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shoal::status::Status;
use shoal::workers::WorkerState;
use shoal::{Addr, Client};

/// How long the service may take to start or stop.
const LIMIT: Duration = Duration::from_secs(30);

/// The running service, killed if a test fails before closing it.
struct Service {
    child: Child,
    dir: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the binary and waits until it says it is ready (the `NOTIFY_SOCKET` protocol).
fn start() -> (Service, Addr) {
    let dir = std::env::temp_dir().join(format!("@NAME@-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let admin = dir.join("admin.sock");
    let config = dir.join("test.toml");
    std::fs::write(
        &config,
        format!(
            "[rpc]\nlisten = \"127.0.0.1:0\"\n@SERVER_CONFIG@\n[admin]\nlisten = \"unix:{}\"\n",
            admin.display()
        ),
    )
    .unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(LIMIT)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_@NAME@"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .spawn()
        .unwrap();
    let service = Service { child, dir };
    let mut buf = [0u8; 64];
    let n = notify
        .recv(&mut buf)
        .expect("the service did not say it was ready");
    assert_eq!(&buf[..n], b"READY=1");
    let admin = format!("unix:{}", admin.display()).parse().unwrap();
    (service, admin)
}

async fn status(admin: &Client) -> Status {
    admin.call("shoal.status", &()).await.unwrap()
}

/// Waits until `count` workers of `group` run.
#[allow(dead_code)]
async fn wait_for_workers(admin: &Client, group: &str, count: usize) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let workers = status(admin).await.workers;
        let running = workers
            .iter()
            .filter(|w| w.group == group && w.state == WorkerState::Running)
            .count();
        if running == count {
            return;
        }
        assert!(Instant::now() < deadline, "{group}: {workers:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Two threads: the clients' connections keep running while this one waits for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_answers_through_its_client() {
    let (mut service, admin_addr) = start();
    let admin = Client::connect(&admin_addr.to_string()).await.unwrap();
    let rpc = status(&admin)
        .await
        .rpc_addr
        .expect("the service listens for RPC");
    let client = @CRATE@::@SERVICE@Client::new(Client::connect(&rpc).await.unwrap());

@CALLS@
    // A clean close: exit status 0.
    let _: shoal::Value = admin.call("shoal.close", &()).await.unwrap();
    let exit = tokio::task::block_in_place(|| service.child.wait()).unwrap();
    assert!(exit.success(), "{exit}");
}
"#;

const PLAIN_CONFIG: &str = r#"# The @NAME@ service's configuration. `cargo run` reads it (see .cargo/config.toml); the
# package runs `@NAME@ --config @NAME@.toml`. `shoal config explain @NAME@.toml` shows every
# value and where it came from.

[rpc]
listen = "@LISTEN@"
"#;

const IDL_CONFIG: &str = r#"# The @NAME@ service's configuration, from svr.json's rpc_server and self_server.
# `cargo run` reads it (see .cargo/config.toml); the package runs `@NAME@ --config
# @NAME@.toml`. `shoal config explain @NAME@.toml` shows every value and where it came from.

[rpc]
# rpc_server.ip and port.
listen = "@LISTEN@"
@SERVER@@WORKERS@"#;

const MANIFEST: &str = r#"# The package the agent installs: `cargo build --release`, then put the binary in bin/
# beside this file and the config, and `shoal pkg build DIR` (see README.md).
[package]
name = "@NAME@"
version = "0.1.0"
kind = "service"

[run]
command = "bin/@NAME@"
args = ["--config", "@NAME@.toml"]
stop_signal = "TERM"
stop_timeout = "10s"
restart = "always"

[health]
port = @PORT@
ping = true

[logs]
max_size = "100MB"
keep = 10
"#;

const PLAIN_README: &str = r#"# @NAME@

A shoal service, made by `shoal new`.

```sh
cargo run                                      # serves on 127.0.0.1:3000 (@NAME@.toml)
shoal call 127.0.0.1:3000 greet '"world"'      # "Hello, world!"
cargo test                                     # starts it and calls it through its client
```

| File | What it is |
|------|------------|
| `src/lib.rs` | The service: its `#[shoal::service]` trait, its implementation, the app. |
| `src/main.rs` | The binary. |
| `tests/service.rs` | Starts the binary and calls it through `@SERVICE@Client`. |
| `@NAME@.toml` | The configuration (`shoal config explain @NAME@.toml`). |
| `shoal.toml` | The package manifest for the shoal agent. |
"#;

const PACKAGING: &str = r#"
Package it for the agent:

```sh
cargo build --release
mkdir -p pkg/bin && cp target/release/@NAME@ pkg/bin/ && cp @NAME@.toml shoal.toml pkg/
shoal pkg build pkg
```
"#;

const IDL_README: &str = r#"# @NAME@

A shoal service, made by `shoal new` from the JSON IDL in `svr.json`.

```sh
cargo run      # serves as @NAME@.toml says (from svr.json's rpc_server)
cargo test     # starts it and calls it through its generated client
```

| File | What it is | Who writes it |
|------|------------|---------------|
| `svr.json` | The IDL: protos, apis, worker groups. | you |
| `build.rs` | Generates `svr` (OUT_DIR/svr.rs) from svr.json on every change. | shoal new |
| `src/handlers.rs` | One method per api; each answers "not implemented" until filled in. | you |
| `src/workers.rs` | One method per worker group (if svr.json has self_server). | you |
| `src/lib.rs`, `src/main.rs` | The application and its binary. | you |
| `tests/service.rs` | Starts the binary and calls every api. | you |
| `@NAME@.toml` | The configuration (`shoal config explain @NAME@.toml`). | you |
| `clients.toml` | The servers a client calls, balanced as `rpc_client.mode` says. | you |
| `shoal.toml` | The package manifest for the shoal agent. | you |

`shoal new` never overwrites a file: run it again to restore one you deleted. A change to
svr.json (a new api, a changed argument, a new group) is a compile error in the file that
must follow it.

Clients: in Rust, `@CRATE@::client_from_file("clients.toml")`; in Python,
`shoal idl python svr.json -o DIR` writes a module with plain `msgpack`.
"#;
