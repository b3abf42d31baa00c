//! The JSON IDL of pysvrkit (`svr.json`), read unchanged: [`parse`] checks a file whole and
//! says what is wrong at a JSON path and a line:column; [`rust`] turns the result into Rust
//! (structs for `protos`, a `#[shoal::service]` trait for `rpc_server.apis`) and [`python`]
//! into a Python client module (dataclasses for `protos`, a client balancing as shoal's Rust
//! client does).
//!
//! ```
//! let idl = shoal_idl::parse(r#"{"app": "echo",
//!   "protos": [{"name": "echomsg", "fields": [{"name": "value", "type": "string"}]}],
//!   "rpc_server": {"port": 3000, "apis": [
//!     {"name": "echo", "args": [{"name": "msg", "type": "echomsg"}], "ret": true}]}}"#,
//!   "svr.json").unwrap();
//! assert_eq!(idl.app, "echo");
//! assert_eq!(idl.rpc_server.as_ref().unwrap().apis[0].name, "echo");
//! ```
//!
//! The format: `app`; `protos[{name, fields[{name, type, subtype?}]}]` where a type is
//! `string`, `bool`, `int`, `float`, `list`, `tuple`, `dict` or the name of a proto, and
//! `subtype` gives the element type of a `list` or `tuple` or the value type of a `dict`
//! (string keys), or for a `dict` `"K:V"`, its key type (`int` or `string`) and value type;
//! `rpc_client{mode: hashring|sharding}`; `rpc_server{ip, port, worker_type: process|thread,
//! worker_sum, apis[{name, args[{name, type, subtype?}]?, req_proto?, res_proto?, ret}]}`;
//! `self_server{dispatch_type: simple|custom, worker_type:
//! process|thread|process_coroutine|coroutine, worker_sum, coroutine_sum, groups[{group_name,
//! worker_sum, coroutine_sum}]}`. Keys the format does not have are errors (a typo would
//! otherwise be ignored).
//!
//! An api is in the older form (positional `args`, any value answered) or the later one,
//! msgpack-svrkit's: `req_proto` names the type of its one argument and `res_proto` the type
//! of its result (a proto or a basic type); either may be absent (no argument; a reply
//! without a value). `args` beside `req_proto` is an error, as is `res_proto` with `ret: false`
//! (a notification). [`Api::inputs`] and [`Api::answer`] read both forms.

mod locate;
pub mod python;
pub mod rust;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use locate::{line_column, locate, Step};

/// A checked IDL file.
#[derive(Debug, Clone, PartialEq)]
pub struct Idl {
    pub app: String,
    pub protos: Vec<Proto>,
    pub rpc_client: Option<RpcClient>,
    pub rpc_server: Option<RpcServer>,
    pub self_server: Option<SelfServer>,
}

/// A message type: a struct with named fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proto {
    pub name: String,
    #[serde(default)]
    pub fields: Vec<Field>,
}

/// A proto's field or an api's argument.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// The element type of a `list` or `tuple`, the value type of a `dict`; for a `dict`
    /// also `"K:V"`, its key type (`int` or `string`) and value type.
    #[serde(default)]
    pub subtype: Option<String>,
}

impl Field {
    /// The element type of a `list` or `tuple`, or the value type of a `dict`, as written
    /// (`None`: any value).
    pub fn element(&self) -> Option<&str> {
        let sub = self.subtype.as_deref()?;
        Some(sub.split_once(':').map_or(sub, |(_, value)| value))
    }

    /// The key type of a `dict`: a `"K:V"` subtype's `K`, else `string`.
    pub fn key(&self) -> DictKey {
        match self.subtype.as_deref().and_then(|s| s.split_once(':')) {
            Some(("int", _)) => DictKey::Int,
            _ => DictKey::String,
        }
    }
}

/// The keys a `dict` may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictKey {
    /// `string` (the older form's only keys).
    String,
    /// `int`: `"int:V"`.
    Int,
}

/// How the generated client balances over several servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcClient {
    pub mode: ClientMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientMode {
    /// Weighted consistent hashing.
    Hashring,
    /// `id % shardsum` onto ranges, with backups.
    Sharding,
}

/// The RPC server: where it listens, how it runs handlers, and its methods.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcServer {
    #[serde(default = "any_address")]
    pub ip: String,
    pub port: u16,
    #[serde(default)]
    pub worker_type: Option<ServerWorkers>,
    #[serde(default)]
    pub worker_sum: Option<u32>,
    #[serde(default)]
    pub apis: Vec<Api>,
}

fn any_address() -> String {
    "0.0.0.0".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerWorkers {
    Process,
    Thread,
}

/// One method: positional `args` (the older form) or one `req_proto` (the later form).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub name: String,
    #[serde(default)]
    pub args: Vec<Field>,
    /// False: a notification, no reply.
    #[serde(default = "yes")]
    pub ret: bool,
    /// The type of the one request argument (a proto or a basic type); never with `args`.
    #[serde(default)]
    pub req_proto: Option<String>,
    /// The type of the result (a proto or a basic type).
    #[serde(default)]
    pub res_proto: Option<String>,
}

/// The name the one argument of a `req_proto` api has in generated code.
pub const REQUEST_ARG: &str = "req";

impl Api {
    /// What the method takes, in wire order: its `args`, or its `req_proto` as one argument
    /// named [`REQUEST_ARG`].
    pub fn inputs(&self) -> Vec<Field> {
        match &self.req_proto {
            Some(ty) => vec![Field {
                name: REQUEST_ARG.into(),
                ty: ty.clone(),
                subtype: None,
            }],
            None => self.args.clone(),
        }
    }

    /// What the method answers.
    pub fn answer(&self) -> Answer<'_> {
        match (self.ret, &self.res_proto, &self.req_proto) {
            (false, _, _) => Answer::Nothing,
            (true, Some(ty), _) => Answer::Typed(ty),
            (true, None, Some(_)) => Answer::Nil,
            (true, None, None) => Answer::Any,
        }
    }
}

/// What an api answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// `ret: false`: a notification, never answered.
    Nothing,
    /// The older form: any value (the IDL gives no type).
    Any,
    /// A `res_proto`: a value of that type.
    Typed(&'a str),
    /// The later form without a `res_proto`: a reply without a value (nil).
    Nil,
}

fn yes() -> bool {
    true
}

/// Background workers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfServer {
    #[serde(default)]
    pub dispatch_type: Option<Dispatch>,
    #[serde(default)]
    pub worker_type: Option<GroupWorkers>,
    #[serde(default)]
    pub worker_sum: Option<u32>,
    #[serde(default)]
    pub coroutine_sum: Option<u32>,
    #[serde(default)]
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    /// One group of `worker_sum` workers.
    Simple,
    /// The named `groups`.
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupWorkers {
    Process,
    Thread,
    ProcessCoroutine,
    /// `worker_sum` coroutines (async tasks) in the service's own process.
    Coroutine,
}

/// A named group of workers (`dispatch_type: custom`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub group_name: String,
    pub worker_sum: u32,
    #[serde(default)]
    pub coroutine_sum: Option<u32>,
}

/// A worker group as it runs: `self_server` with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlan {
    /// The group's name: its `group_name`, or [`SIMPLE_GROUP`] for `dispatch_type: simple`.
    pub name: String,
    pub kind: GroupWorkers,
    /// Workers in the group (`worker_sum`).
    pub workers: u32,
    /// Coroutines per worker (`coroutine_sum`, default 1); only `process_coroutine` runs more
    /// than one.
    pub coroutines: u32,
}

/// The name of the one group of `dispatch_type: simple`.
pub const SIMPLE_GROUP: &str = "worker";

impl SelfServer {
    /// The groups to start. `dispatch_type` defaults to `custom` when `groups` are given and
    /// to `simple` otherwise; `worker_type` to `process`; `worker_sum` (simple) and
    /// `coroutine_sum` to 1; a group without `coroutine_sum` takes the `self_server`'s.
    pub fn plan(&self) -> Vec<GroupPlan> {
        let kind = self.worker_type.unwrap_or(GroupWorkers::Process);
        let coroutines = self.coroutine_sum.unwrap_or(1);
        let custom = match self.dispatch_type {
            Some(Dispatch::Custom) => true,
            Some(Dispatch::Simple) => false,
            None => !self.groups.is_empty(),
        };
        if custom {
            self.groups
                .iter()
                .map(|g| GroupPlan {
                    name: g.group_name.clone(),
                    kind,
                    workers: g.worker_sum,
                    coroutines: g.coroutine_sum.unwrap_or(coroutines),
                })
                .collect()
        } else {
            vec![GroupPlan {
                name: SIMPLE_GROUP.into(),
                kind,
                workers: self.worker_sum.unwrap_or(1),
                coroutines,
            }]
        }
    }
}

/// What is wrong with an IDL file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdlError {
    pub file: String,
    /// `$.protos[0].fields[1].type`; `$` for the file as a whole.
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for IdlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.path, self.message
        )
    }
}

impl std::error::Error for IdlError {}

/// The file as it is written, before the names and types are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    app: String,
    #[serde(default)]
    protos: Vec<Proto>,
    #[serde(default)]
    rpc_client: Option<RpcClient>,
    #[serde(default)]
    rpc_server: Option<RpcServer>,
    #[serde(default)]
    self_server: Option<SelfServer>,
}

/// For a `build.rs`: reads the IDL at `path` (relative to the crate) and writes its Rust
/// ([`rust::generate`]) to `out_dir/<file stem>.rs` for the crate to `include!`; returns that
/// file's path. A bad IDL is an error naming the file, JSON path and line:column
/// (`svr.json:3:25: $.protos[0].fields[0].type: unknown type "str"; ...`).
///
/// It only reads and writes files: the build script itself reads `OUT_DIR`, tells cargo to
/// run it again when the IDL changes and fails the build, so this library, like every other
/// shoal library, never reads the environment or ends the process.
///
/// `build.rs`'s `main`:
///
/// ```no_run
/// println!("cargo::rerun-if-changed=svr.json");
/// let out_dir = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
/// if let Err(e) = shoal_idl::build("svr.json", out_dir.as_ref()) {
///     eprintln!("error: {e}");
///     std::process::exit(1);
/// }
/// ```
///
/// and in the crate, `include!(concat!(env!("OUT_DIR"), "/svr.rs"));`.
pub fn build(path: &str, out_dir: &Path) -> Result<PathBuf, BuildError> {
    let text = std::fs::read_to_string(path).map_err(|source| BuildError::Read {
        path: path.to_owned(),
        source,
    })?;
    let idl = parse(&text, path)?;
    let stem = Path::new(path)
        .file_stem()
        .ok_or_else(|| BuildError::NotAFile {
            path: path.to_owned(),
        })?;
    let out = out_dir.join(stem).with_extension("rs");
    std::fs::write(&out, rust::generate(&idl, path)).map_err(|source| BuildError::Write {
        path: out.clone(),
        source,
    })?;
    Ok(out)
}

/// Why [`build`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read the IDL {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Idl(#[from] IdlError),
    #[error("{path} names no file: give the IDL's file, such as svr.json")]
    NotAFile { path: String },
    #[error("cannot write the generated Rust to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The types every field may have besides a proto's name.
pub const BASIC_TYPES: &[&str] = &["string", "bool", "int", "float", "list", "tuple", "dict"];

/// Reads and checks the IDL in `text`; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Idl, IdlError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let raw: Raw = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = json_path(&e.path().to_string());
        let inner = e.into_inner();
        let (line, column) = (inner.line(), inner.column());
        IdlError {
            file: file.to_owned(),
            path,
            line,
            column,
            message: serde_message(&inner),
        }
    })?;
    de.end().map_err(|e| IdlError {
        file: file.to_owned(),
        path: "$".into(),
        line: e.line(),
        column: e.column(),
        message: serde_message(&e),
    })?;
    let idl = Idl {
        app: raw.app,
        protos: raw.protos,
        rpc_client: raw.rpc_client,
        rpc_server: raw.rpc_server,
        self_server: raw.self_server,
    };
    check(&idl).map_err(|(path, message)| {
        let (line, column) = locate(text, &path);
        IdlError {
            file: file.to_owned(),
            path: path_text(&path),
            line,
            column,
            message,
        }
    })?;
    Ok(idl)
}

/// serde_json's message without its own " at line L column C".
fn serde_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// serde_path_to_error's `protos[0].fields` as `$.protos[0].fields`.
fn json_path(path: &str) -> String {
    if path == "." || path.is_empty() {
        "$".into()
    } else {
        format!("$.{path}")
    }
}

fn path_text(path: &[Step]) -> String {
    let mut out = String::from("$");
    for step in path {
        match step {
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

type Checked = Result<(), (Vec<Step>, String)>;

fn key(k: &str) -> Step {
    Step::Key(k.into())
}

/// Names are identifiers, unique where they must be; every type is known.
fn check(idl: &Idl) -> Checked {
    identifier(&idl.app, vec![key("app")], "the app name")?;
    let protos: Vec<&str> = idl.protos.iter().map(|p| p.name.as_str()).collect();
    for (i, proto) in idl.protos.iter().enumerate() {
        let at = vec![key("protos"), Step::Index(i)];
        let name_at = [at.clone(), vec![key("name")]].concat();
        identifier(&proto.name, name_at.clone(), "a proto name")?;
        if BASIC_TYPES.contains(&proto.name.as_str()) {
            return Err((
                name_at,
                format!("{:?} is a basic type; name the proto otherwise", proto.name),
            ));
        }
        if protos[..i].contains(&proto.name.as_str()) {
            return Err((name_at, format!("proto {:?} is defined twice", proto.name)));
        }
        fields(&proto.fields, &at, "fields", &protos)?;
        let rust = rust::type_name(&proto.name);
        let app = rust::type_name(&idl.app);
        let taken = [
            app.clone(),
            format!("{app}Server"),
            format!("{app}Client"),
            format!("{app}Workers"),
        ];
        if let Some(other) = idl.protos[..i]
            .iter()
            .find(|p| rust::type_name(&p.name) == rust)
        {
            return Err((
                name_at,
                format!(
                    "proto {:?} and proto {:?} would both be the Rust type {rust}; rename one",
                    other.name, proto.name
                ),
            ));
        }
        if taken.contains(&rust) {
            return Err((
                name_at,
                format!(
                    "proto {:?} would be the Rust type {rust}, which the service's code uses",
                    proto.name
                ),
            ));
        }
    }
    if let Some((i, cycle)) = direct_cycle(idl) {
        return Err((
            vec![key("protos"), Step::Index(i), key("fields")],
            format!(
                "proto {:?} contains itself ({}), which no value can hold; make one of those fields a list",
                idl.protos[i].name,
                cycle.join(" -> ")
            ),
        ));
    }
    if let Some(server) = &idl.rpc_server {
        let mut seen = HashSet::new();
        for (i, api) in server.apis.iter().enumerate() {
            let at = vec![key("rpc_server"), key("apis"), Step::Index(i)];
            let name_at = [at.clone(), vec![key("name")]].concat();
            identifier(&api.name, name_at.clone(), "an api name")?;
            if !seen.insert(api.name.as_str()) {
                return Err((name_at, format!("api {:?} is defined twice", api.name)));
            }
            fields(&api.args, &at, "args", &protos)?;
            typed_api(api, &at, &protos)?;
        }
    }
    if let Some(workers) = &idl.self_server {
        let mut seen = HashSet::new();
        for (i, group) in workers.groups.iter().enumerate() {
            let name_at = vec![
                key("self_server"),
                key("groups"),
                Step::Index(i),
                key("group_name"),
            ];
            if group.group_name.is_empty()
                || !group
                    .group_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err((
                    name_at,
                    format!(
                        "group name {:?}: use ASCII letters, digits, '_' or '-'",
                        group.group_name
                    ),
                ));
            }
            if group.group_name == "rpc" {
                return Err((
                    name_at,
                    "the group name \"rpc\" is taken by the RPC server's worker processes".into(),
                ));
            }
            if !seen.insert(group.group_name.as_str()) {
                return Err((
                    name_at,
                    format!("group {:?} is defined twice", group.group_name),
                ));
            }
            let method = rust::group_method(&group.group_name);
            if let Some(other) = workers.groups[..i]
                .iter()
                .find(|g| rust::group_method(&g.group_name) == method)
            {
                return Err((
                    name_at,
                    format!(
                        "groups {:?} and {:?} would both be the Rust method {method}; rename one",
                        other.group_name, group.group_name
                    ),
                ));
            }
        }
        if workers.dispatch_type == Some(Dispatch::Custom) && workers.groups.is_empty() {
            return Err((
                vec![key("self_server"), key("groups")],
                "dispatch_type \"custom\" needs groups: [{\"group_name\": ..., \"worker_sum\": N}]"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// A proto that contains itself through fields that are protos (not lists or dicts of them):
/// its index and the chain of proto names.
fn direct_cycle(idl: &Idl) -> Option<(usize, Vec<String>)> {
    fn walk<'a>(idl: &'a Idl, name: &'a str, chain: &mut Vec<&'a str>) -> bool {
        let Some(proto) = idl.protos.iter().find(|p| p.name == name) else {
            return false;
        };
        for field in &proto.fields {
            if !BASIC_TYPES.contains(&field.ty.as_str()) {
                if field.ty == chain[0] {
                    chain.push(&field.ty);
                    return true;
                }
                if !chain.contains(&field.ty.as_str()) {
                    chain.push(&field.ty);
                    if walk(idl, &field.ty, chain) {
                        return true;
                    }
                    chain.pop();
                }
            }
        }
        false
    }
    idl.protos.iter().enumerate().find_map(|(i, p)| {
        let mut chain = vec![p.name.as_str()];
        walk(idl, &p.name, &mut chain).then(|| (i, chain.iter().map(|s| s.to_string()).collect()))
    })
}

/// The later form's `req_proto` and `res_proto`: known types, the request never beside
/// `args`, the result never on a notification.
fn typed_api(api: &Api, at: &[Step], protos: &[&str]) -> Checked {
    let here = |k: &str| [at.to_vec(), vec![key(k)]].concat();
    for (name, ty) in [("req_proto", &api.req_proto), ("res_proto", &api.res_proto)] {
        if let Some(ty) = ty {
            if !BASIC_TYPES.contains(&ty.as_str()) && !protos.contains(&ty.as_str()) {
                return Err((here(name), unknown_type(ty, protos)));
            }
        }
    }
    if api.req_proto.is_some() && !api.args.is_empty() {
        return Err((
            here("req_proto"),
            format!(
                "api {:?} has both args and req_proto: it takes either positional args (the \
                 older form) or one req_proto; drop one",
                api.name
            ),
        ));
    }
    if api.res_proto.is_some() && !api.ret {
        return Err((
            here("res_proto"),
            format!(
                "api {:?} has ret: false (a notification, never answered) and a res_proto; \
                 drop one",
                api.name
            ),
        ));
    }
    Ok(())
}

/// The fields (or args) at `at.list`: identifiers, unique, of known types.
fn fields(list: &[Field], at: &[Step], name: &str, protos: &[&str]) -> Checked {
    for (i, field) in list.iter().enumerate() {
        let here = [at.to_vec(), vec![key(name), Step::Index(i)]].concat();
        let name_at = [here.clone(), vec![key("name")]].concat();
        identifier(&field.name, name_at.clone(), "a field name")?;
        if list[..i].iter().any(|f| f.name == field.name) {
            return Err((name_at, format!("{:?} appears twice in {name}", field.name)));
        }
        let known = |ty: &str| BASIC_TYPES.contains(&ty) || protos.contains(&ty);
        if !known(&field.ty) {
            return Err((
                [here.clone(), vec![key("type")]].concat(),
                unknown_type(&field.ty, protos),
            ));
        }
        if let Some(sub) = &field.subtype {
            subtype(field, sub, [here, vec![key("subtype")]].concat(), protos)?;
        }
    }
    Ok(())
}

/// A field's `subtype` at `at`: on a container, of a known type; a `"K:V"` one on a dict,
/// with `int` or `string` keys.
fn subtype(field: &Field, sub: &str, at: Vec<Step>, protos: &[&str]) -> Checked {
    let known = |ty: &str| BASIC_TYPES.contains(&ty) || protos.contains(&ty);
    if !matches!(field.ty.as_str(), "list" | "tuple" | "dict") {
        let message = format!(
            "a subtype belongs to a list, tuple or dict; {:?} has none",
            field.ty
        );
        return Err((at, message));
    }
    let message = match sub.split_once(':') {
        Some(_) if field.ty != "dict" => format!(
            "a \"K:V\" subtype belongs to a dict; a {} takes its element type alone",
            field.ty
        ),
        Some((key, _)) if !matches!(key, "int" | "string") => {
            format!("the key type of {sub:?} must be int or string, got {key:?}")
        }
        Some((_, value)) if !known(value) => unknown_type(value, protos),
        None if !known(sub) => unknown_type(sub, protos),
        Some(_) | None => return Ok(()),
    };
    Err((at, message))
}

fn unknown_type(ty: &str, protos: &[&str]) -> String {
    let mut known: Vec<&str> = BASIC_TYPES.to_vec();
    known.extend(protos);
    format!(
        "unknown type {ty:?}; expected one of {} (a proto must be defined in protos)",
        known.join(", ")
    )
}

fn identifier(name: &str, at: Vec<Step>, what: &str) -> Checked {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err((
            at,
            format!("{what} must be an identifier (letters, digits, '_'), got {name:?}"),
        ))
    }
}
