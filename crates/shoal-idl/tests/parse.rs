//! The IDL read as pysvrkit users write it: the echo example from pysvrkit's documentation,
//! unchanged, and bad files failing at a JSON path and line:column.

use shoal_idl::{
    parse, Answer, ClientMode, DictKey, Dispatch, GroupPlan, GroupWorkers, ServerWorkers,
};

/// pysvrkit's documented echo example, verbatim.
const ECHO: &str = include_str!("echo.json");

#[test]
fn the_echo_example_reads_whole() {
    let idl = parse(ECHO, "svr.json").unwrap();
    assert_eq!(idl.app, "echo");
    assert_eq!(idl.protos[0].name, "echomsg");
    assert_eq!(idl.rpc_client.unwrap().mode, ClientMode::Hashring);
    let server = idl.rpc_server.as_ref().unwrap();
    assert_eq!((server.ip.as_str(), server.port), ("0.0.0.0", 3000));
    assert_eq!(server.worker_type, Some(ServerWorkers::Thread));
    assert_eq!(server.worker_sum, Some(4));
    assert_eq!(server.apis[0].args[0].ty, "echomsg");
    assert!(server.apis[0].ret);
    let workers = idl.self_server.as_ref().unwrap();
    assert_eq!(workers.dispatch_type, Some(Dispatch::Custom));
    assert_eq!(workers.worker_type, Some(GroupWorkers::ProcessCoroutine));
    let groups: Vec<(&str, u32, Option<u32>)> = workers
        .groups
        .iter()
        .map(|g| (g.group_name.as_str(), g.worker_sum, g.coroutine_sum))
        .collect();
    assert_eq!(groups, [("event", 2, Some(3)), ("value", 2, Some(3))]);
}

#[test]
fn the_echo_example_becomes_rust() {
    let idl = parse(ECHO, "svr.json").unwrap();
    let code = shoal_idl::rust::generate(&idl, "svr.json");
    // The golden file generated_code.rs compiles, serves and calls.
    assert_eq!(code, include_str!("generated/echo.rs"));
    // worker_type thread: blocking handlers; the client balances by hashring by default.
    assert!(code.contains("    #[shoal(blocking)]\n    fn echo(&self, msg: Echomsg)"));
    assert!(code.contains(".endpoints_file_or(path, &::shoal::rpc::Balance::HashRing)?"));
}

#[test]
fn self_server_becomes_groups_with_their_defaults() {
    let idl = parse(ECHO, "svr.json").unwrap();
    let plan = idl.self_server.as_ref().unwrap().plan();
    assert_eq!(
        plan,
        [
            GroupPlan {
                name: "event".into(),
                kind: GroupWorkers::ProcessCoroutine,
                workers: 2,
                coroutines: 3
            },
            GroupPlan {
                name: "value".into(),
                kind: GroupWorkers::ProcessCoroutine,
                workers: 2,
                coroutines: 3
            },
        ]
    );
    // simple: one group of worker_sum, named "worker"; worker_type defaults to process.
    let simple = parse(
        r#"{"app": "x", "self_server": {"dispatch_type": "simple", "worker_sum": 3}}"#,
        "svr.json",
    )
    .unwrap();
    assert_eq!(
        simple.self_server.unwrap().plan(),
        [GroupPlan {
            name: "worker".into(),
            kind: GroupWorkers::Process,
            workers: 3,
            coroutines: 1
        }]
    );
    // Without dispatch_type, groups mean custom; a group's coroutine_sum defaults to the
    // self_server's.
    let custom = parse(
        r#"{"app": "x", "self_server": {"worker_type": "thread", "coroutine_sum": 2,
            "groups": [{"group_name": "fast-lane", "worker_sum": 1}]}}"#,
        "svr.json",
    )
    .unwrap();
    let plan = custom.self_server.as_ref().unwrap().plan();
    assert_eq!(
        (plan[0].kind, plan[0].coroutines),
        (GroupWorkers::Thread, 2)
    );
    let code = shoal_idl::rust::generate(&custom, "svr.json");
    assert!(code.contains(
        "    fn fast_lane(&self, worker: ::shoal::Worker) -> ::core::result::Result<(), ::shoal::BoxError>;"
    ));
    assert!(
        code.contains("app.thread_workers(\"fast-lane\", 1, move |worker| w.fast_lane(worker));")
    );
}

#[test]
fn the_files_a_user_fills_in_start_as_not_implemented() {
    let idl = parse(ECHO, "svr.json").unwrap();
    let handlers = shoal_idl::rust::handlers(&idl, "svr.json", "crate::svr");
    assert!(handlers.starts_with("//! "));
    assert!(handlers.contains("use crate::svr::{Echo, Echomsg};"));
    assert!(handlers.contains(
        "impl Echo for Handlers {\n    fn echo(&self, msg: Echomsg) -> Result<Value, RpcError> {"
    ));
    assert!(handlers.contains("Err(RpcError::not_implemented(\"echo\"))"));
    let workers = shoal_idl::rust::workers(&idl, "svr.json", "crate::svr");
    assert!(workers.contains("impl EchoWorkers for Workers {"));
    assert!(workers.contains(
        "async fn event(&self, worker: Worker, coroutine: usize) -> Result<(), BoxError> {"
    ));
    assert!(workers.contains("worker.closing().await;"));

    // A notification has nothing to answer: it logs that it is not implemented.
    let notify = parse(
        r#"{"app": "x", "rpc_server": {"port": 1, "apis": [{"name": "log", "args": [{"name": "line", "type": "string"}], "ret": false}]}}"#,
        "svr.json",
    )
    .unwrap();
    let handlers = shoal_idl::rust::handlers(&notify, "svr.json", "crate::svr");
    assert!(handlers.contains("async fn log(&self, line: ::std::string::String) {"));
    assert!(handlers.contains("tracing::warn!(method = \"log\", \"method not implemented\");"));
    assert!(!handlers.contains("use shoal::{RpcError, Value};"));
}

#[test]
fn subtypes_nested_protos_notifications_and_keywords_map_to_rust() {
    let text = r#"{"app": "shop_api",
      "protos": [
        {"name": "item", "fields": [{"name": "type", "type": "string"}, {"name": "tags", "type": "list", "subtype": "string"}]},
        {"name": "cart", "fields": [{"name": "items", "type": "list", "subtype": "item"},
                                    {"name": "owner", "type": "item"},
                                    {"name": "meta", "type": "dict"},
                                    {"name": "prices", "type": "dict", "subtype": "float"},
                                    {"name": "pair", "type": "tuple"}]}],
      "rpc_server": {"port": 1, "apis": [{"name": "log", "args": [{"name": "line", "type": "string"}], "ret": false}]}}"#;
    let code = shoal_idl::rust::generate(&parse(text, "x.json").unwrap(), "x.json");
    for line in [
        "pub r#type: ::std::string::String,",
        "pub tags: ::std::vec::Vec<::std::string::String>,",
        "pub items: ::std::vec::Vec<Item>,",
        "pub owner: Item,",
        "pub meta: ::std::collections::HashMap<::std::string::String, ::shoal::Value>,",
        "pub prices: ::std::collections::HashMap<::std::string::String, f64>,",
        "pub pair: ::std::vec::Vec<::shoal::Value>,",
        "pub trait ShopApi {",
        "    #[shoal(notify)]\n    async fn log(&self, line: ::std::string::String);",
    ] {
        assert!(code.contains(line), "{line}\n---\n{code}");
    }
}

/// (file, expected error): each names the JSON path and line:column of the fault.
#[test]
fn bad_files_fail_at_a_json_path_and_line_column() {
    let cases: &[(&str, &str)] = &[
        (
            "{\"app\": \"x\",\n \"protos\": [}",
            "svr.json:2:13: $.protos[0]: expected value",
        ),
        (
            "{\"app\": \"x\"} trailing",
            "svr.json:1:14: $: trailing characters",
        ),
        (
            "{\"protos\": []}",
            "svr.json:1:14: $: missing field `app`",
        ),
        (
            "{\"app\": \"x\",\n \"protos\": [{\"name\": \"p\", \"fields\": [\n  {\"name\": \"a\", \"type\": \"str\"}]}]}",
            "svr.json:3:25: $.protos[0].fields[0].type: unknown type \"str\"; expected one of string, bool, int, float, list, tuple, dict, p (a proto must be defined in protos)",
        ),
        (
            "{\"app\": \"x\", \"protos\": [\n {\"name\": \"p\", \"fields\": [{\"name\": \"q\", \"type\": \"other\"}]}]}",
            "svr.json:2:49: $.protos[0].fields[0].type: unknown type \"other\"; expected one of string, bool, int, float, list, tuple, dict, p (a proto must be defined in protos)",
        ),
        (
            "{\"app\": \"x\", \"protos\": [{\"name\": \"p\"},\n {\"name\": \"p\"}]}",
            "svr.json:2:11: $.protos[1].name: proto \"p\" is defined twice",
        ),
        (
            "{\"app\": \"x\", \"rpc_server\": {\"port\": 1, \"apis\": [{\"name\": \"a\"}, {\"name\": \"a\"}]}}",
            "svr.json:1:73: $.rpc_server.apis[1].name: api \"a\" is defined twice",
        ),
        (
            "{\"app\": \"x\", \"rpc_server\": {\"apis\": []}}",
            "svr.json:1:39: $.rpc_server: missing field `port`",
        ),
        (
            "{\"app\": \"x\", \"rpc_server\": {\"port\": 1, \"worker_type\": \"fiber\"}}",
            "svr.json:1:61: $.rpc_server.worker_type: unknown variant `fiber`, expected `process` or `thread`",
        ),
        (
            "{\"app\": \"x\", \"rpc_client\": {\"mode\": \"random\"}}",
            "svr.json:1:44: $.rpc_client.mode: unknown variant `random`, expected `hashring` or `sharding`",
        ),
        (
            "{\"app\": \"x\", \"rpc_sever\": {}}",
            "svr.json:1:24: $.rpc_sever: unknown field `rpc_sever`, expected one of `app`, `protos`, `rpc_client`, `rpc_server`, `self_server`",
        ),
        (
            "{\"app\": \"x\", \"protos\": [{\"name\": \"p\", \"fields\": [{\"name\": \"a\", \"type\": \"int\", \"subtype\": \"int\"}]}]}",
            "svr.json:1:90: $.protos[0].fields[0].subtype: a subtype belongs to a list, tuple or dict; \"int\" has none",
        ),
        (
            "{\"app\": \"x\", \"protos\": [{\"name\": \"a\", \"fields\": [{\"name\": \"b\", \"type\": \"b\"}]},\n {\"name\": \"b\", \"fields\": [{\"name\": \"a\", \"type\": \"a\"}]}]}",
            "svr.json:1:49: $.protos[0].fields: proto \"a\" contains itself (a -> b -> a), which no value can hold; make one of those fields a list",
        ),
        (
            "{\"app\": \"x\", \"self_server\": {\"dispatch_type\": \"custom\", \"groups\": [{\"group_name\": \"rpc\", \"worker_sum\": 1}]}}",
            "svr.json:1:83: $.self_server.groups[0].group_name: the group name \"rpc\" is taken by the RPC server's worker processes",
        ),
        (
            "{\"app\": \"x\", \"self_server\": {\"groups\": [{\"group_name\": \"a-b\", \"worker_sum\": 1},\n {\"group_name\": \"a_b\", \"worker_sum\": 1}]}}",
            "svr.json:2:17: $.self_server.groups[1].group_name: groups \"a-b\" and \"a_b\" would both be the Rust method a_b; rename one",
        ),
        (
            "{\"app\": \"x\", \"protos\": [{\"name\": \"x_workers\"}]}",
            "svr.json:1:34: $.protos[0].name: proto \"x_workers\" would be the Rust type XWorkers, which the service's code uses",
        ),
        (
            "{\"app\": \"my app\"}",
            "svr.json:1:9: $.app: the app name must be an identifier (letters, digits, '_'), got \"my app\"",
        ),
        (
            "{\"app\": \"x\", \"protos\": [{\"name\": \"x_client\"}]}",
            "svr.json:1:34: $.protos[0].name: proto \"x_client\" would be the Rust type XClient, which the service's code uses",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, expected) in cases {
        let err = parse(text, "svr.json").unwrap_err().to_string();
        if &err != expected {
            wrong.push(format!("{text}\n  got      {err}\n  expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// pysvrkit's later IDL (its msgpack-svrkit form): a typed request and result per api, `K:V`
/// dicts, coroutine workers.
const LATER: &str = include_str!("later.json");

#[test]
fn the_later_form_reads_whole() {
    let idl = parse(LATER, "svr.json").unwrap();
    let apis = &idl.rpc_server.as_ref().unwrap().apis;
    let typed: Vec<(Vec<(String, String)>, Answer<'_>)> = apis
        .iter()
        .map(|a| {
            let inputs = a.inputs().into_iter().map(|f| (f.name, f.ty)).collect();
            (inputs, a.answer())
        })
        .collect();
    let input = |name: &str, ty: &str| vec![(name.to_owned(), ty.to_owned())];
    assert_eq!(
        typed,
        [
            (input("req", "opqueryreq"), Answer::Typed("opqueryres")),
            (input("req", "opmsg"), Answer::Nil),
            (vec![], Answer::Typed("int")),
            (input("msg", "debugmsg"), Answer::Nothing),
        ]
    );
    let res = &idl.protos[3].fields;
    let dicts: Vec<(DictKey, Option<&str>)> =
        res[2..5].iter().map(|f| (f.key(), f.element())).collect();
    assert_eq!(
        dicts,
        [
            (DictKey::Int, Some("opmsg")),
            (DictKey::String, Some("debugmsg")),
            (DictKey::Int, Some("float"))
        ]
    );
    // The older form's dict subtype is the value's type, under string keys.
    let old = parse(
        ECHO.replace(
            "\"value\", \"type\": \"string\"",
            "\"value\", \"type\": \"dict\", \"subtype\": \"int\"",
        )
        .as_str(),
        "svr.json",
    )
    .unwrap();
    assert_eq!(
        (
            old.protos[0].fields[0].key(),
            old.protos[0].fields[0].element()
        ),
        (DictKey::String, Some("int"))
    );

    let plan = idl.self_server.as_ref().unwrap().plan();
    let groups: Vec<(&str, GroupWorkers, u32)> = plan
        .iter()
        .map(|g| (g.name.as_str(), g.kind, g.workers))
        .collect();
    assert_eq!(
        groups,
        [
            ("event", GroupWorkers::Coroutine, 2),
            ("value", GroupWorkers::Coroutine, 3)
        ]
    );
}

#[test]
fn the_later_form_becomes_rust() {
    let idl = parse(LATER, "svr.json").unwrap();
    let code = shoal_idl::rust::generate(&idl, "svr.json");
    for line in [
        "    pub kvs: ::std::collections::HashMap<i64, Opmsg>,",
        "    pub by_user: ::std::collections::HashMap<::std::string::String, Debugmsg>,",
        "    pub counts: ::std::collections::HashMap<i64, f64>,",
        "    #[serde(rename = \"self\")]\n    pub self_: ::std::string::String,",
        "    #[shoal(blocking)]\n    fn opquery(&self, req: Opqueryreq) -> ::core::result::Result<Opqueryres, ::shoal::RpcError>;",
        "    #[shoal(blocking)]\n    fn record(&self, req: Opmsg) -> ::core::result::Result<(), ::shoal::RpcError>;",
        "    #[shoal(blocking)]\n    fn count(&self) -> ::core::result::Result<i64, ::shoal::RpcError>;",
        "    #[shoal(blocking, notify)]\n    fn debug(&self, msg: Debugmsg);",
        "    /// Group `value`: 3 coroutines in the service's process.",
        "    fn value(&self, worker: ::shoal::Worker) -> impl ::core::future::Future<Output = ::core::result::Result<(), ::shoal::BoxError>> + ::core::marker::Send;",
        "    app.workers(\"value\", 3, move |worker| {\n        let w = ::std::sync::Arc::clone(&w);\n        async move { w.value(worker).await }\n    });\n",
    ] {
        assert!(code.contains(line), "{line}\n---\n{code}");
    }
    assert!(!code.contains(".processes()"), "{code}");

    let handlers = shoal_idl::rust::handlers(&idl, "svr.json", "crate::svr");
    for line in [
        "use shoal::RpcError;\n",
        "use crate::svr::{Debugmsg, Logagent, Opmsg, Opqueryreq, Opqueryres};",
        "    fn opquery(&self, req: Opqueryreq) -> Result<Opqueryres, RpcError> {\n        let _ = req;\n        Err(RpcError::not_implemented(\"opquery\"))",
        "    fn count(&self) -> Result<i64, RpcError> {",
    ] {
        assert!(handlers.contains(line), "{line}\n---\n{handlers}");
    }
    let workers = shoal_idl::rust::workers(&idl, "svr.json", "crate::svr");
    assert!(
        workers.contains("    async fn event(&self, worker: Worker) -> Result<(), BoxError> {"),
        "{workers}"
    );
}

/// (file, expected error) for the later form's rules.
#[test]
fn the_later_form_fails_at_a_json_path_and_line_column() {
    let cases: &[(&str, &str)] = &[
        (
            "{\"app\": \"x\", \"protos\": [{\"name\": \"m\"}], \"rpc_server\": {\"port\": 1, \"apis\": [\n {\"name\": \"a\", \"args\": [{\"name\": \"v\", \"type\": \"int\"}], \"req_proto\": \"m\"}]}}",
            "svr.json:2:69: $.rpc_server.apis[0].req_proto: api \"a\" has both args and req_proto: it takes either positional args (the older form) or one req_proto; drop one",
        ),
        (
            "{\"app\": \"x\", \"rpc_server\": {\"port\": 1, \"apis\": [{\"name\": \"a\", \"req_proto\": \"msg\"}]}}",
            "svr.json:1:76: $.rpc_server.apis[0].req_proto: unknown type \"msg\"; expected one of string, bool, int, float, list, tuple, dict (a proto must be defined in protos)",
        ),
        (
            "{\"app\": \"x\", \"rpc_server\": {\"port\": 1, \"apis\": [{\"name\": \"a\", \"res_proto\": \"int\", \"ret\": false}]}}",
            "svr.json:1:76: $.rpc_server.apis[0].res_proto: api \"a\" has ret: false (a notification, never answered) and a res_proto; drop one",
        ),
        (
            "{\"app\": \"x\", \"protos\": [{\"name\": \"p\", \"fields\": [{\"name\": \"d\", \"type\": \"dict\", \"subtype\": \"float:int\"}]}]}",
            "svr.json:1:91: $.protos[0].fields[0].subtype: the key type of \"float:int\" must be int or string, got \"float\"",
        ),
        (
            "{\"app\": \"x\", \"protos\": [{\"name\": \"p\", \"fields\": [{\"name\": \"d\", \"type\": \"list\", \"subtype\": \"int:int\"}]}]}",
            "svr.json:1:91: $.protos[0].fields[0].subtype: a \"K:V\" subtype belongs to a dict; a list takes its element type alone",
        ),
        (
            "{\"app\": \"x\", \"protos\": [{\"name\": \"p\", \"fields\": [{\"name\": \"d\", \"type\": \"dict\", \"subtype\": \"int:q\"}]}]}",
            "svr.json:1:91: $.protos[0].fields[0].subtype: unknown type \"q\"; expected one of string, bool, int, float, list, tuple, dict, p (a proto must be defined in protos)",
        ),
        (
            "{\"app\": \"x\", \"self_server\": {\"worker_type\": \"fiber\"}}",
            "svr.json:1:51: $.self_server.worker_type: unknown variant `fiber`, expected one of `process`, `thread`, `process_coroutine`, `coroutine`",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, expected) in cases {
        let err = parse(text, "svr.json").unwrap_err().to_string();
        if &err != expected {
            wrong.push(format!("{text}\n  got      {err}\n  expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
