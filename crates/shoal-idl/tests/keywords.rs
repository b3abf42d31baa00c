//! Every Rust and Python keyword (strict, reserved and weak; hard and soft) as a proto field, an
//! argument and a method name (`tests/keywords.json`, with a proto named `self` and a `K:V`
//! dict): the generated Rust (`generated/keywords.rs`, checked to be what the generator writes)
//! compiles, serves and is called through its typed client; the wire keeps the IDL's names;
//! the generated Python module imports and calls every method by its Python name.

// Kept byte for byte as generated; the IDL's names keep their case (`None`, `Self_`).
#[rustfmt::skip]
#[allow(dead_code, non_snake_case)]
#[path = "generated/keywords.rs"]
mod keywords;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use keywords::{Holder, Keywords, KeywordsClient, KeywordsServer, Self_};
use shoal::rpc::Listener;
use shoal::{Addr, Client, RpcError, Server, Value};

const IDL: &str = include_str!("keywords.json");

/// The methods' Rust names, in the IDL's order (checked against the generator's).
macro_rules! every_method {
    ($apply:ident) => {
        $apply! {
            r#as, r#async, r#await, r#break, r#const, r#continue, crate_, r#dyn, r#else, r#enum,
            r#extern, r#false, r#fn, r#for, r#if, r#impl, r#in, r#let, r#loop, r#match, r#mod,
            r#move, r#mut, r#pub, r#ref, r#return, self_, Self_, r#static, r#struct, super_,
            r#trait, r#true, r#type, r#unsafe, r#use, r#where, r#while, r#abstract, r#become,
            r#box, r#do, r#final, r#gen, r#macro, r#override, r#priv, r#try, r#typeof, r#unsized,
            r#virtual, r#yield, union, macro_rules, raw, safe, False, None, True, and, assert,
            class, def, del, elif, except, finally, from, global, import, is, lambda, nonlocal,
            not, or, pass, raise, with, __, case
        }
    };
}

/// Each method answers `[its Rust name, its argument]`, so a caller sees which one ran.
macro_rules! answering_methods {
    ($($m:ident),*) => {
        $(
            #[allow(non_snake_case)]
            async fn $m(&self, value: i64) -> Result<Value, RpcError> {
                Ok(Value::Array(vec![Value::from(stringify!($m)), Value::from(value)]))
            }
        )*
    };
}

macro_rules! method_list {
    ($($m:ident),*) => {
        vec![$(stringify!($m)),*]
    };
}

struct Handlers;

impl Keywords for Handlers {
    every_method!(answering_methods);

    async fn echo(&self, mut req: Holder) -> Result<Holder, RpcError> {
        let copy = req.Self_.clone();
        req.crate_.insert(8, copy);
        Ok(req)
    }
}

/// The IDL's api names but `echo`, in order.
fn wire_names() -> Vec<String> {
    let idl = shoal_idl::parse(IDL, "keywords.json").unwrap();
    let apis = idl.rpc_server.unwrap().apis;
    apis.iter()
        .map(|a| a.name.clone())
        .filter(|n| n != "echo")
        .collect()
}

#[test]
fn the_rust_is_what_the_generator_writes_for_every_keyword() {
    let idl = shoal_idl::parse(IDL, "keywords.json").unwrap();
    assert_eq!(
        shoal_idl::rust::generate(&idl, "keywords.json"),
        include_str!("generated/keywords.rs")
    );
    let apis = &idl.rpc_server.as_ref().unwrap().apis;
    let methods = shoal_idl::rust::method_names(apis);
    assert_eq!(&methods[..methods.len() - 1], every_method!(method_list));
    // Rust cannot take these even raw: each has a name of its own, the wire keeps the IDL's.
    let code = include_str!("generated/keywords.rs");
    for line in [
        "    #[serde(rename = \"self\")]\n    pub self_: i64,",
        "    #[serde(rename = \"Self\")]\n    pub Self_: i64,",
        "    #[serde(rename = \"_\")]\n    pub __: i64,",
        "    #[shoal(name = \"super\")]\n    async fn super_(&self, super_: i64)",
        "    async fn None(&self, None_: i64)",
        "    async fn echo(&self, req: Holder) -> ::core::result::Result<Holder, ::shoal::RpcError>;",
        "    #[serde(rename = \"crate\")]\n    pub crate_: ::std::collections::HashMap<i64, Self_>,",
    ] {
        assert!(code.contains(line), "{line}");
    }
}

/// A `Self_` whose field `i` (in IDL order) holds `i`, built from its wire names.
fn numbered() -> Self_ {
    let map: serde_json::Map<String, serde_json::Value> = wire_names()
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n, serde_json::Value::from(i)))
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).unwrap()
}

#[tokio::test]
async fn every_keyword_serves_and_keeps_its_wire_name() {
    let (addr, stop, serving) = serve().await;
    let client = Client::connect(&addr).await.unwrap();
    let typed = KeywordsClient::new(client.clone());
    let rust_names = every_method!(method_list);
    let wire = wire_names();
    macro_rules! call_each {
        ($($m:ident),*) => {{
            let mut answers = Vec::new();
            $( answers.push(typed.$m(answers.len() as i64).await.unwrap()); )*
            answers
        }};
    }
    let answers: Vec<Value> = every_method!(call_each);
    for (i, (answer, (rust, wire))) in answers.iter().zip(rust_names.iter().zip(&wire)).enumerate()
    {
        let expected = Value::Array(vec![Value::from(*rust), Value::from(i)]);
        assert_eq!(answer, &expected, "{wire}");
        // The same method by its wire name, as another language's client calls it.
        let raw: Value = client.call(wire, &(i,)).await.unwrap();
        assert_eq!(raw, expected, "{wire}");
    }

    // A typed request and result, with a K:V dict of int keys; the fields travel by the
    // IDL's names.
    let s = numbered();
    assert_eq!((s.self_, s.Self_, s.__, s.r#type), (26, 27, 78, 33));
    let holder = Holder {
        Self_: s.clone(),
        crate_: HashMap::from([(7, s.clone())]),
        super_: vec![s.clone()],
    };
    let answer = typed.echo(holder.clone()).await.unwrap();
    assert_eq!(answer.crate_.get(&8), Some(&s));
    assert_eq!(answer.super_, holder.super_);
    let raw: Value = client.call("echo", &(holder,)).await.unwrap();
    let keys: Vec<String> = field(&raw, "Self")
        .as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, wire);
    let int_keys: Vec<i64> = field(&raw, "crate")
        .as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_i64().unwrap())
        .collect();
    assert!(
        int_keys.contains(&7) && int_keys.contains(&8),
        "{int_keys:?}"
    );

    if let Some(python) = python() {
        python_calls_every_method(&python, &addr).await;
    }
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

fn field<'a>(map: &'a Value, name: &str) -> &'a Value {
    map.as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} in {map}"))
}

/// The generated Python module: every method by its Python name (a keyword gains a `_`), the
/// dataclasses built by their Python names and sent by the IDL's.
async fn python_calls_every_method(python: &std::path::Path, addr: &str) {
    let idl = shoal_idl::parse(IDL, "keywords.json").unwrap();
    let dir = std::env::temp_dir().join(format!("shoal-idl-keywords-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(shoal_idl::python::file_name(&idl)),
        shoal_idl::python::generate(&idl, "keywords.json"),
    )
    .unwrap();
    let script = r#"
import json, keyword, sys
sys.path.insert(0, sys.argv[1])
import keywords_client as m
addr, wire, rust = sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
py = lambda n: n + "_" if keyword.iskeyword(n) else n
c = m.KeywordsClient([addr])
for i, n in enumerate(wire):
    got = getattr(c, py(n))(i)
    assert got == [rust[i], i], (n, got)
s = m.Self_(**{py(n): i for i, n in enumerate(wire)})
assert list(s.to_dict()) == wire and s.to_dict()["_"] == wire.index("_")
h = m.Holder(Self=s, crate={7: s}, super=[s])
got = c.echo(h)
assert isinstance(got, m.Holder) and isinstance(got.Self, m.Self_), got
assert got.crate == {7: s, 8: s} and got.super == [s] and got.Self == s, got
print("ok")
"#;
    let rust: Vec<String> = every_method!(method_list)
        .into_iter()
        .map(String::from)
        .collect();
    let out = tokio::process::Command::new(python)
        .args(["-c", script])
        .arg(&dir)
        .arg(addr)
        .arg(serde_json::to_string(&wire_names()).unwrap())
        .arg(serde_json::to_string(&rust).unwrap())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

type Serving = tokio::task::JoinHandle<Result<(), shoal::Error>>;

async fn serve() -> (String, tokio::sync::oneshot::Sender<()>, Serving) {
    let server = Server::builder()
        .service(KeywordsServer::new(Handlers))
        .build()
        .unwrap();
    let listener = Listener::bind(&"127.0.0.1:0".parse::<Addr>().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    (addr, stop, serving)
}

/// `SHOAL_TEST_PYTHON` (a venv with msgpack), or `None` after printing that the Python leg is
/// skipped; under `SHOAL_REQUIRE_TOOLS=1` a missing interpreter fails the test.
fn python() -> Option<PathBuf> {
    match std::env::var_os("SHOAL_TEST_PYTHON") {
        Some(python) => Some(python.into()),
        None => {
            let why = "SHOAL_TEST_PYTHON is not set (a venv with msgpack, see .ci/run)";
            if std::env::var_os("SHOAL_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
                panic!("{why}; SHOAL_REQUIRE_TOOLS=1 requires every tool the tests use");
            }
            println!("skipped: the Python client: {why}");
            None
        }
    }
}
