//! Config from text and a map of variables: file and environment precedence, the override
//! rules, every runtime key's default and error, typed sections, redaction and provenance.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shoal_rpc::Addr;

use super::*;

const FILE: &str = "hello.toml";

/// An environment: (variable, value) pairs.
type Vars<'a> = &'a [(&'a str, &'a str)];

/// Loads `text` as `hello.toml` with `vars` as the whole environment.
fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::from_toml(text, Path::new(FILE), env)
}

/// A TOML value written the way a file writes it: `1`, `"x"`, `["a"]`.
fn toml(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}")).unwrap()["v"].clone()
}

/// `key` in the config loaded from `text` and `vars` is `expected` (TOML text; None = absent).
fn check_value(text: &str, vars: &[(&str, &str)], key: &str, expected: Option<&str>) {
    let config = load(text, vars).unwrap_or_else(|e| panic!("{text:?} {vars:?}: {e}"));
    assert_eq!(
        config.value(key),
        expected.map(toml).as_ref(),
        "key {key} of {text:?} with {vars:?}"
    );
}

/// Loading `text` with `vars` fails with exactly `expected`.
fn check_error(text: &str, vars: &[(&str, &str)], expected: &str) {
    match load(text, vars) {
        Ok(config) => panic!("{text:?} with {vars:?} loaded: {config:?}"),
        Err(e) => assert_eq!(e.to_string(), expected, "{text:?} with {vars:?}"),
    }
}

/// The runtime config loaded from `text` and `vars`, or a panic naming the error.
fn runtime(text: &str, vars: &[(&str, &str)]) -> RuntimeConfig {
    match load(text, vars) {
        Ok(config) => config.runtime().clone(),
        Err(e) => panic!("{text:?} with {vars:?}: {e}"),
    }
}

fn file(line: usize) -> Source {
    Source::File {
        path: PathBuf::from(FILE),
        line,
        included_from: None,
    }
}

fn env(var: &str) -> Source {
    Source::Env {
        var: var.to_owned(),
    }
}

#[test]
fn the_environment_overrides_the_file() {
    let text = "[hello]\ngreeting = \"Hi\"\nport = 1\n";
    check_value(text, &[], "hello.port", Some("1"));
    check_value(text, &[("SHOAL_HELLO__PORT", "2")], "hello.port", Some("2"));
    check_value(
        text,
        &[("SHOAL_HELLO__PORT", "2")],
        "hello.greeting",
        Some("\"Hi\""),
    );
    check_value(text, &[("SHOAL_HELLO__NEW", "3")], "hello.new", Some("3"));
    check_value(text, &[("SHOAL_HELLO__NEW", "3")], "hello.port", Some("1"));
    check_value(
        "[rpc]\nlisten = \"127.0.0.1:1\"\n",
        &[("SHOAL_RPC__LISTEN", "127.0.0.1:2")],
        "rpc.listen",
        Some("\"127.0.0.1:2\""),
    );
    let config = load(
        "[rpc]\nmax_in_flight = 8\n",
        &[("SHOAL_RPC__MAX_IN_FLIGHT", "16")],
    )
    .unwrap();
    assert_eq!(config.runtime().rpc.max_in_flight, 16);
}

#[test]
fn override_values_are_toml_or_else_strings() {
    let greeting = "[hello]\ngreeting = \"Hi\"\n";
    let table = "[hello.nested]\na = 1\n";
    // (file, variable, value, key, expected TOML)
    let cases = [
        ("", "SHOAL_HELLO__PORT", "8080", "hello.port", "8080"),
        ("", "SHOAL_HELLO__ON", "true", "hello.on", "true"),
        ("", "SHOAL_HELLO__RATIO", "0.5", "hello.ratio", "0.5"),
        (
            "",
            "SHOAL_HELLO__NAMES",
            r#"["a","b"]"#,
            "hello.names",
            r#"["a", "b"]"#,
        ),
        (
            "",
            "SHOAL_HELLO__QUOTED",
            r#""quoted""#,
            "hello.quoted",
            r#""quoted""#,
        ),
        (
            "",
            "SHOAL_HELLO__INLINE",
            "{ a = 1 }",
            "hello.inline.a",
            "1",
        ),
        (
            "",
            "SHOAL_HELLO__ADDR",
            "127.0.0.1:7000",
            "hello.addr",
            r#""127.0.0.1:7000""#,
        ),
        ("", "SHOAL_HELLO__WAIT", "10s", "hello.wait", r#""10s""#),
        (
            "",
            "SHOAL_HELLO__WORDS",
            "two words",
            "hello.words",
            r#""two words""#,
        ),
        ("", "SHOAL_HELLO__EMPTY", "", "hello.empty", r#""""#),
        // A second line would be a second key: the whole text is a string.
        (
            "",
            "SHOAL_HELLO__SNEAKY",
            "1\nx = 2",
            "hello.sneaky",
            "\"1\\nx = 2\"",
        ),
        // The file holds a string here, so the text stays one.
        (
            greeting,
            "SHOAL_HELLO__GREETING",
            "123",
            "hello.greeting",
            r#""123""#,
        ),
        (
            greeting,
            "SHOAL_HELLO__GREETING",
            "true",
            "hello.greeting",
            r#""true""#,
        ),
        // Segments are lowercased and split on `__` only.
        (
            "",
            "SHOAL_RPC__MAX_IN_FLIGHT",
            "8",
            "rpc.max_in_flight",
            "8",
        ),
        ("", "SHOAL_HeLLo__GrEEting", "x", "hello.greeting", r#""x""#),
        ("", "SHOAL_HELLO__A__B__C", "1", "hello.a.b.c", "1"),
        // A table may replace a table.
        (
            table,
            "SHOAL_HELLO__NESTED",
            "{ b = 2 }",
            "hello.nested",
            "{ b = 2 }",
        ),
    ];
    for (text, var, raw, key, expected) in cases {
        check_value(text, &[(var, raw)], key, Some(expected));
    }
}

#[test]
fn variables_that_are_not_overrides_are_ignored() {
    for var in [
        "SHOAL_DATA_DIR",
        "SHOAL_TEST_PYTHON",
        "SHOAL_LISTEN_FDS",
        "HELLO__GREETING",
        "shoal_hello__greeting",
        "XSHOAL_HELLO__GREETING",
    ] {
        let config = load("", &[(var, "x")]).unwrap();
        assert_eq!(config.value("hello"), None, "{var}");
        assert_eq!(
            config.section::<toml::Table>("hello").unwrap(),
            toml::Table::new()
        );
    }
}

#[test]
fn bad_overrides_name_the_variable() {
    let cases = [
        (
            "",
            ("SHOAL_RPC__", "1"),
            "env SHOAL_RPC__: empty key segment: write SHOAL_<TABLE>__<KEY>, with `__` between \
             segments",
        ),
        (
            "[hello]\ngreeting = \"Hi\"\n",
            ("SHOAL_HELLO__GREETING__X", "1"),
            "env SHOAL_HELLO__GREETING__X: key `hello.greeting.x`: cannot set it: \
             `hello.greeting` holds a string, not a table",
        ),
        (
            "[[hello.upstreams]]\naddr = \"a\"\n",
            ("SHOAL_HELLO__UPSTREAMS__ADDR", "b"),
            "env SHOAL_HELLO__UPSTREAMS__ADDR: key `hello.upstreams.addr`: cannot set it: \
             `hello.upstreams` holds an array, not a table",
        ),
        (
            "[hello.nested]\na = 1\n",
            ("SHOAL_HELLO__NESTED", "1"),
            "env SHOAL_HELLO__NESTED: key `hello.nested`: `hello.nested` is a table: set its \
             keys one by one (SHOAL_HELLO__NESTED__<KEY>) or give a whole table like \
             { name = \"value\" }",
        ),
    ];
    for (text, var, expected) in cases {
        check_error(text, &[var], expected);
    }
    check_error(
        "",
        &[("SHOAL_HELLO__X", "1"), ("SHOAL_hello__x", "2")],
        "env SHOAL_hello__x: key `hello.x`: also set by SHOAL_HELLO__X; set it once",
    );
}

#[test]
fn overrides_apply_in_key_order_whatever_the_order_of_the_environment() {
    let whole = ("SHOAL_HELLO__T", "{ a = 1, b = 1 }");
    let part = ("SHOAL_HELLO__T__B", "2");
    for vars in [[whole, part], [part, whole]] {
        check_value("", &vars, "hello.t", Some("{ a = 1, b = 2 }"));
    }
}

#[test]
fn runtime_defaults() {
    let expected = RuntimeConfig {
        rpc: RpcConfig {
            listen: None,
            max_message: 16 * 1024 * 1024,
            max_in_flight: 1024,
            blocking_threads: 64,
            processes: 0,
            max_unsent: 4 * 1024 * 1024,
            max_values: 1024 * 1024,
            stall_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_connections: 4096,
        },
        admin: AdminConfig { listen: None },
        services: ServicesConfig { enabled: None },
        shutdown: ShutdownConfig {
            grace: Duration::from_secs(10),
        },
        control: ControlConfig {
            handover_timeout: Duration::from_secs(30),
        },
        watchdog: WatchdogConfig { timeout: None },
        summary: SummaryConfig { every: None },
        log: LogConfig {
            level: "info".to_owned(),
            sinks: Vec::new(),
        },
        workers: WorkersConfig::default(),
        metrics: MetricsConfig { listen: None },
        monitor: MonitorConfig {
            publish: None,
            every: Duration::from_secs(10),
            format: MonitorFormat::Msgpack,
        },
        status: StatusConfig {
            public_config: false,
        },
    };
    assert_eq!(RuntimeConfig::default(), expected);
    assert_eq!(runtime("", &[]), expected);
    assert_eq!(
        runtime("[rpc]\n[shutdown]\n[hello]\nx = 1\n", &[]),
        expected
    );
    let config = Config::load(None, Vec::new()).unwrap();
    assert_eq!(config.path(), None);
    assert_eq!(config.runtime(), &expected);
    // Defaults are in the effective config, as the file would spell them.
    assert_eq!(config.value("shutdown.grace"), Some(&toml("\"10s\"")));
    assert_eq!(config.value("rpc.max_message"), Some(&toml("16777216")));
    assert_eq!(config.value("rpc.listen"), None);
    assert_eq!(config.value("monitor.every"), Some(&toml("\"10s\"")));
    assert_eq!(config.value("monitor.format"), Some(&toml("\"msgpack\"")));
    assert_eq!(config.value("monitor.publish"), None);
}

#[test]
fn runtime_keys_are_read() {
    let text = r#"
[rpc]
listen = "127.0.0.1:7000"
max_message = 1024
max_in_flight = 1
blocking_threads = 2
processes = 4
max_unsent = 65536
max_values = 5000
stall_timeout = "5s"
idle_timeout = "1h"
max_connections = 10

[admin]
listen = "unix:/run/hello/admin.sock"

[services]
enabled = ["hello", "world"]

[shutdown]
grace = "1m 30s"

[control]
handover_timeout = "5s"

[watchdog]
timeout = "20s"

[summary]
every = "hour"

[log]
level = "info,shoal_rpc=debug"

[workers]
pollers = 3
[metrics]
listen = "127.0.0.1:9464"
[monitor]
publish = "tcp://127.0.0.1:5558"
every = "2s"
format = "json"
[status]
public_config = true
"#;
    let expected = RuntimeConfig {
        rpc: RpcConfig {
            listen: Some(Addr::Tcp("127.0.0.1:7000".to_owned())),
            max_message: 1024,
            max_in_flight: 1,
            blocking_threads: 2,
            processes: 4,
            max_unsent: 64 * 1024,
            max_values: 5000,
            stall_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(3600),
            max_connections: 10,
        },
        admin: AdminConfig {
            listen: Some(PathBuf::from("/run/hello/admin.sock")),
        },
        services: ServicesConfig {
            enabled: Some(vec!["hello".to_owned(), "world".to_owned()]),
        },
        shutdown: ShutdownConfig {
            grace: Duration::from_secs(90),
        },
        control: ControlConfig {
            handover_timeout: Duration::from_secs(5),
        },
        watchdog: WatchdogConfig {
            timeout: Some(Duration::from_secs(20)),
        },
        summary: SummaryConfig {
            every: Some(Period::Hour),
        },
        log: LogConfig {
            level: "info,shoal_rpc=debug".to_owned(),
            sinks: Vec::new(),
        },
        workers: WorkersConfig {
            counts: vec![("pollers".to_owned(), 3)],
        },
        metrics: MetricsConfig {
            listen: Some("127.0.0.1:9464".to_owned()),
        },
        monitor: MonitorConfig {
            publish: Some(MonitorAddr::Tcp {
                host: "127.0.0.1".to_owned(),
                port: 5558,
            }),
            every: Duration::from_secs(2),
            format: MonitorFormat::Json,
        },
        status: StatusConfig {
            public_config: true,
        },
    };
    assert_eq!(runtime(text, &[]), expected);

    // One key at a time.
    let rt = |text: &str| runtime(text, &[]);
    assert_eq!(
        rt("[rpc]\nlisten = \"unix:/tmp/x.sock\"").rpc.listen,
        Some(Addr::Unix(PathBuf::from("/tmp/x.sock")))
    );
    assert_eq!(
        rt("[services]\nenabled = []").services.enabled,
        Some(vec![])
    );
    // No watchdog is an unset key; "0s" is refused, as for every other period.
    assert!(load("[watchdog]\ntimeout = \"0s\"", &[]).is_err());
    assert_eq!(
        rt("[shutdown]\ngrace = \"0s\"").shutdown.grace,
        Duration::ZERO
    );
    for (every, period) in [
        ("minute", Period::Minute),
        ("hour", Period::Hour),
        ("day", Period::Day),
        ("15m", Period::Every(Duration::from_secs(900))),
    ] {
        let text = format!("[summary]\nevery = \"{every}\"");
        assert_eq!(rt(&text).summary.every, Some(period), "{every}");
    }
    // Monitor endpoints as the runtime binds them.
    for (publish, bound) in [
        ("tcp://*:5558", "tcp://0.0.0.0:5558"),
        ("tcp://localhost:0", "tcp://localhost:0"),
        ("tcp://[::1]:7", "tcp://[::1]:7"),
        (
            "tcp://monitor-1.example.com:65535",
            "tcp://monitor-1.example.com:65535",
        ),
        (
            "ipc:///run/hello/monitor.sock",
            "ipc:///run/hello/monitor.sock",
        ),
    ] {
        let text = format!("[monitor]\npublish = \"{publish}\"");
        assert_eq!(
            rt(&text).monitor.publish.map(|a| a.to_string()).as_deref(),
            Some(bound),
            "{publish}"
        );
    }
    assert_eq!(
        rt("[monitor]\npublish = \"tcp://[::1]:7\"").monitor.publish,
        Some(MonitorAddr::Tcp {
            host: "::1".to_owned(),
            port: 7
        })
    );
    assert_eq!(
        rt("[monitor]\nformat = \"msgpack\"").monitor.format,
        MonitorFormat::Msgpack
    );
    let from_env = runtime(
        "",
        &[
            ("SHOAL_RPC__LISTEN", "127.0.0.1:7001"),
            ("SHOAL_SHUTDOWN__GRACE", "3s"),
            ("SHOAL_SERVICES__ENABLED", r#"["hello"]"#),
        ],
    );
    assert_eq!(
        from_env.rpc.listen,
        Some(Addr::Tcp("127.0.0.1:7001".to_owned()))
    );
    assert_eq!(from_env.shutdown.grace, Duration::from_secs(3));
    assert_eq!(from_env.services.enabled, Some(vec!["hello".to_owned()]));
}

#[test]
fn bad_runtime_keys_name_file_line_key_and_what_is_expected() {
    // (file, expected error); each bad value is on line 2.
    let cases = [
        (
            "[rpc]\nlisten = \"nowhere\"",
            r#"hello.toml:2: key `rpc.listen`: expected host:port or unix:PATH, got "nowhere""#,
        ),
        (
            "[rpc]\nlisten = 7000",
            "hello.toml:2: key `rpc.listen`: expected host:port or unix:PATH, got 7000",
        ),
        (
            "[rpc]\nmax_message = 100",
            "hello.toml:2: key `rpc.max_message`: expected a size in bytes from 1024 to 1073741824, got \
             100",
        ),
        (
            "[rpc]\nmax_in_flight = 0",
            "hello.toml:2: key `rpc.max_in_flight`: expected an integer from 1 to 1000000, got 0",
        ),
        (
            "[rpc]\nmax_in_flight = \"8\"",
            r#"hello.toml:2: key `rpc.max_in_flight`: expected an integer from 1 to 1000000, got "8""#,
        ),
        (
            "[rpc]\nblocking_threads = -1",
            "hello.toml:2: key `rpc.blocking_threads`: expected an integer from 1 to 4096, got -1",
        ),
        (
            "[admin]\nlisten = \"127.0.0.1:9000\"",
            "hello.toml:2: key `admin.listen`: the admin socket must be a Unix socket \
             (unix:PATH) so that file permissions guard who may control the service, got \
             \"127.0.0.1:9000\"",
        ),
        (
            "[admin]\nlisten = \"unix:\"",
            r#"hello.toml:2: key `admin.listen`: expected unix:PATH, got "unix:""#,
        ),
        (
            "[services]\nenabled = \"hello\"",
            r#"hello.toml:2: key `services.enabled`: expected an array of service names like ["hello"], got "hello""#,
        ),
        (
            "[services]\nenabled = [\"hello\", 1]",
            r#"hello.toml:2: key `services.enabled`: expected an array of service names like ["hello"], got ["hello", 1]"#,
        ),
        (
            "[shutdown]\ngrace = \"soon\"",
            r#"hello.toml:2: key `shutdown.grace`: expected a duration like "10s", at most 24h, got "soon""#,
        ),
        (
            "[shutdown]\ngrace = 10",
            r#"hello.toml:2: key `shutdown.grace`: expected a duration like "10s", at most 24h, got 10"#,
        ),
        (
            "[control]\nhandover_timeout = \"0s\"",
            r#"hello.toml:2: key `control.handover_timeout`: expected a duration above zero like "30s", at most 24h, got "0s""#,
        ),
        (
            "[watchdog]\ntimeout = \"never\"",
            r#"hello.toml:2: key `watchdog.timeout`: expected a duration above zero like "30s", at most 24h, got "never"; leave watchdog.timeout unset for no watchdog"#,
        ),
        (
            "[summary]\nevery = \"weekly\"",
            r#"hello.toml:2: key `summary.every`: expected "minute", "hour", "day" or a duration above zero like "15m", at most 24h, got "weekly""#,
        ),
        (
            "[summary]\nevery = \"0s\"",
            r#"hello.toml:2: key `summary.every`: expected "minute", "hour", "day" or a duration above zero like "15m", at most 24h, got "0s""#,
        ),
        (
            "[log]\nlevel = 3",
            r#"hello.toml:2: key `log.level`: expected a log filter like "info" or "info,shoal_rpc=debug", got 3"#,
        ),
        (
            "[rpc]\nprocesses = -2",
            "hello.toml:2: key `rpc.processes`: expected a number of processes from 0 to 1024, got -2",
        ),
        (
            "[workers]\npollers = \"four\"",
            r#"hello.toml:2: key `workers.pollers`: expected a number of workers for the group from 0 to 1024, got "four""#,
        ),
        (
            "workers = 3",
            "hello.toml:1: key `workers`: expected a table of worker group sizes ([workers] NAME = COUNT), got an integer",
        ),
        (
            "[metrics]\nlisten = \"unix:/tmp/metrics.sock\"",
            "hello.toml:2: key `metrics.listen`: the metrics exporter serves HTTP on TCP: expected \
             host:port like \"127.0.0.1:9464\", got \"unix:/tmp/metrics.sock\"",
        ),
        (
            "[metrics]\nlisten = 9464",
            r#"hello.toml:2: key `metrics.listen`: expected host:port like "127.0.0.1:9464", got 9464"#,
        ),
        (
            "[metrics]\nport = 9464",
            "hello.toml:2: key `metrics.port`: unknown key; [metrics] takes listen",
        ),
        (
            "[monitor]\npublish = \"127.0.0.1:5558\"",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got \"127.0.0.1:5558\"",
        ),
        (
            "[monitor]\npublish = \"tcp://127.0.0.1\"",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got \"tcp://127.0.0.1\" (no port)",
        ),
        (
            "[monitor]\npublish = \"tcp://127.0.0.1:65536\"",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got \"tcp://127.0.0.1:65536\" (the port \"65536\" is not a number from 0 to 65535)",
        ),
        (
            "[monitor]\npublish = \"tcp://127.0.0.1:+1\"",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got \"tcp://127.0.0.1:+1\" (the port \"+1\" is not a number from 0 to 65535)",
        ),
        (
            "[monitor]\npublish = \"tcp://no host:5558\"",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got \"tcp://no host:5558\" (the host \"no host\" is not an IP address, [IPv6 address], host name or *)",
        ),
        (
            "[monitor]\npublish = \"tcp://::1:5558\"",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got \"tcp://::1:5558\" (the host \"::1\" is not an IP address, [IPv6 address], host name or *)",
        ),
        (
            "[monitor]\npublish = \"tcp://[nope]:5558\"",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got \"tcp://[nope]:5558\" ([nope] is not an IPv6 address)",
        ),
        (
            "[monitor]\npublish = \"ipc://\"",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got \"ipc://\" (no path)",
        ),
        (
            "[monitor]\npublish = \"ipc://*\"",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got \"ipc://*\" (a wildcard path is not supported)",
        ),
        (
            "[monitor]\npublish = \"ipc://@feed\"",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got \"ipc://@feed\" (abstract sockets (@NAME) are not supported)",
        ),
        (
            "[monitor]\npublish = \"inproc://feed\"",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got \"inproc://feed\"",
        ),
        (
            "[monitor]\npublish = 5558",
            "hello.toml:2: key `monitor.publish`: expected a ZeroMQ endpoint tcp://HOST:PORT (HOST may be *) or ipc://PATH, got 5558",
        ),
        (
            "[monitor]\nevery = \"0s\"",
            r#"hello.toml:2: key `monitor.every`: expected a duration above zero like "30s", at most 24h, got "0s""#,
        ),
        (
            "[monitor]\nformat = \"yaml\"",
            r#"hello.toml:2: key `monitor.format`: expected "msgpack" or "json", got "yaml""#,
        ),
        (
            "[monitor]\npublsh = \"tcp://127.0.0.1:5558\"",
            "hello.toml:2: key `monitor.publsh`: unknown key; [monitor] takes publish, every, format",
        ),
        (
            "[rpc]\nlistn = \"127.0.0.1:7000\"",
            "hello.toml:2: key `rpc.listn`: unknown key; [rpc] takes listen, max_message, \
             max_in_flight, blocking_threads, processes, max_unsent, max_values, stall_timeout, \
             idle_timeout, max_connections",
        ),
        (
            "[shutdown.grace]\nseconds = 10",
            "hello.toml:1: key `shutdown.grace`: expected a duration like \"10s\", at most 24h, got { seconds \
             = 10 }",
        ),
        (
            "x = 1\nrpc = \"127.0.0.1:7000\"",
            "hello.toml:2: key `rpc`: expected a table of runtime settings ([rpc]), got a string",
        ),
    ];
    for (text, expected) in cases {
        check_error(text, &[], expected);
    }

    // A bad filter also says what tracing found wrong with it.
    let e = load("[log]\nlevel = \"shoal=loud\"", &[]).unwrap_err();
    let prefix = r#"hello.toml:2: key `log.level`: expected a log filter like "info" or "info,shoal_rpc=debug", got "shoal=loud": "#;
    assert!(e.to_string().starts_with(prefix), "{e}");

    // The accessors say the same.
    let e = load("\n[rpc]\nlisten = \"nowhere\"", &[]).unwrap_err();
    assert_eq!(e.file(), Some(Path::new(FILE)));
    assert_eq!(e.key(), Some("rpc.listen"));
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.env_var(), None);
    assert_eq!(
        e.message(),
        r#"expected host:port or unix:PATH, got "nowhere""#
    );
}

#[test]
fn bad_runtime_keys_from_the_environment_name_the_variable() {
    let cases = [
        (
            ("SHOAL_SHUTDOWN__GRACE", "soon"),
            r#"env SHOAL_SHUTDOWN__GRACE: key `shutdown.grace`: expected a duration like "10s", at most 24h, got "soon""#,
        ),
        (
            ("SHOAL_RPC__MAX_IN_FLIGHT", "0"),
            "env SHOAL_RPC__MAX_IN_FLIGHT: key `rpc.max_in_flight`: expected an integer from 1 to \
             1000000, got 0",
        ),
        (
            ("SHOAL_RPC__LISTN", "127.0.0.1:7000"),
            "env SHOAL_RPC__LISTN: key `rpc.listn`: unknown key; [rpc] takes listen, \
             max_message, max_in_flight, blocking_threads, processes, max_unsent, max_values, \
             stall_timeout, idle_timeout, max_connections",
        ),
    ];
    for (var, expected) in cases {
        check_error("[shutdown]\ngrace = \"5s\"\n", &[var], expected);
    }
    let e = load("", &[("SHOAL_SHUTDOWN__GRACE", "soon")]).unwrap_err();
    assert_eq!(e.env_var(), Some("SHOAL_SHUTDOWN__GRACE"));
    assert_eq!(e.line(), None);
    assert_eq!(e.file(), Some(Path::new(FILE)));
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello {
    greeting: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    upstreams: Vec<Upstream>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Upstream {
    addr: String,
    weight: u32,
}

#[derive(Debug, PartialEq, Deserialize, Default)]
#[serde(default)]
struct Optional {
    greeting: Option<String>,
    port: u16,
}

const HELLO: &str = r#"[hello]
greeting = "Hi"
port = 7000

[[hello.upstreams]]
addr = "a:1"
weight = 1

[[hello.upstreams]]
addr = "b:1"
weight = 2
"#;

#[test]
fn sections_deserialize_into_typed_structs() {
    let config = load(HELLO, &[("SHOAL_HELLO__PORT", "7001")]).unwrap();
    let hello: Hello = config.section("hello").unwrap();
    assert_eq!(
        hello,
        Hello {
            greeting: "Hi".to_owned(),
            port: 7001,
            upstreams: vec![
                Upstream {
                    addr: "a:1".to_owned(),
                    weight: 1
                },
                Upstream {
                    addr: "b:1".to_owned(),
                    weight: 2
                },
            ],
        }
    );
    // An absent table is an empty one.
    assert_eq!(
        config.section::<Optional>("absent").unwrap(),
        Optional::default()
    );
    assert_eq!(
        Config::load(None, Vec::new())
            .unwrap()
            .section::<Optional>("hello")
            .unwrap(),
        Optional::default()
    );
    // Runtime tables can be read as sections too, defaults included.
    #[derive(Deserialize)]
    struct Shutdown {
        grace: String,
    }
    assert_eq!(config.section::<Shutdown>("shutdown").unwrap().grace, "10s");
}

#[test]
fn bad_sections_name_the_full_key_and_where_it_came_from() {
    let upstream_weight = HELLO.replace("weight = 2", "weight = -2");
    // (file, environment, expected error)
    let cases: [(&str, Vars<'_>, &str); 8] = [
        (
            "[hello]\ngreeting = \"Hi\"\ngreting = \"Hi\"",
            &[],
            "hello.toml:3: key `hello.greting`: unknown field `greting`, expected one of \
             `greeting`, `port`, `upstreams`",
        ),
        (
            "[hello]\ngreeting = 5",
            &[],
            "hello.toml:2: key `hello.greeting`: invalid type: integer `5`, expected a string",
        ),
        (
            "\n[hello]\nport = 1",
            &[],
            "hello.toml:2: key `hello`: missing field `greeting`",
        ),
        (
            &upstream_weight,
            &[],
            "hello.toml:11: key `hello.upstreams[1].weight`: invalid value: integer `-2`, \
             expected u32",
        ),
        (
            "[hello]\ngreeting = \"Hi\"\nport = 1",
            &[("SHOAL_HELLO__PORT", "big")],
            "env SHOAL_HELLO__PORT: key `hello.port`: invalid type: string \"big\", expected u16",
        ),
        (
            "",
            &[("SHOAL_HELLO__GREETING", "123")],
            "env SHOAL_HELLO__GREETING: key `hello.greeting`: invalid type: integer `123`, \
             expected a string",
        ),
        (
            "hello = 5",
            &[],
            "hello.toml:1: key `hello`: invalid type: integer `5`, expected struct Hello",
        ),
        ("", &[], "hello.toml: key `hello`: missing field `greeting`"),
    ];
    for (text, vars, expected) in cases {
        let config = load(text, vars).unwrap();
        let e = config.section::<Hello>("hello").unwrap_err();
        assert_eq!(e.to_string(), expected, "{text:?} with {vars:?}");
    }

    let config = load(&upstream_weight, &[]).unwrap();
    let e = config.section::<Hello>("hello").unwrap_err();
    assert_eq!(e.key(), Some("hello.upstreams[1].weight"));
    assert_eq!(e.line(), Some(11));

    // Without a file there is no place to name, only the key.
    let e = Config::load(None, Vec::new())
        .unwrap()
        .section::<Hello>("hello")
        .unwrap_err();
    assert_eq!(e.to_string(), "key `hello`: missing field `greeting`");
    assert_eq!(e.file(), None);
}

#[test]
fn durations_in_typed_sections_read_like_the_runtime_keys() {
    #[derive(Debug, Deserialize)]
    struct Worker {
        #[serde(with = "super::duration")]
        every: Duration,
    }
    let config = load("[worker]\nevery = \"1m 30s\"\n", &[]).unwrap();
    let worker = config.section::<Worker>("worker").unwrap();
    assert_eq!(worker.every, Duration::from_secs(90));
    let config = load("[worker]\nevery = \"soon\"\n", &[]).unwrap();
    let e = config.section::<Worker>("worker").unwrap_err();
    assert_eq!(
        e.to_string(),
        "hello.toml:2: key `worker.every`: expected a duration like \"10s\", got \"soon\""
    );
}

#[test]
fn secrets_are_redacted() {
    let text = r#"
[db]
user = "app"
password = "p1"
api_token = "t1"
key_id = "k1"
private_key = "k2"
keys = ["k3"]
max_tokens = 3

[db.credentials]
user = "c1"

[tls]
Key = "k4"
client-key = "k5"
passwd = "k6"
MY_SECRET = "k7"
"#;
    let config = load(text, &[("SHOAL_HELLO__AUTH_TOKEN", "t2")]).unwrap();
    let redacted = config.redacted();
    let expected = toml::from_str::<toml::Table>(
        r#"
[db]
user = "app"
password = "<redacted>"
api_token = "<redacted>"
key_id = "k1"
private_key = "<redacted>"
keys = ["k3"]
max_tokens = "<redacted>"
credentials = "<redacted>"

[tls]
Key = "<redacted>"
client-key = "<redacted>"
passwd = "<redacted>"
MY_SECRET = "<redacted>"

[hello]
auth_token = "<redacted>"
"#,
    )
    .unwrap();
    for (table, values) in &expected {
        assert_eq!(redacted.get(table), Some(values), "[{table}]");
    }
    // The real values are still there for the service.
    assert_eq!(config.value("db.password"), Some(&toml("\"p1\"")));

    let explained = config.explain();
    let shown = |key: &str| explained.iter().find(|e| e.key == key).map(|e| &e.value);
    assert_eq!(shown("db.password"), Some(&toml("\"<redacted>\"")));
    assert_eq!(shown("db.credentials"), Some(&toml("\"<redacted>\"")));
    assert_eq!(shown("db.credentials.user"), None);
    assert_eq!(shown("hello.auth_token"), Some(&toml("\"<redacted>\"")));
    assert_eq!(shown("db.user"), Some(&toml("\"app\"")));

    let debug = format!("{config:?}");
    for secret in ["p1", "t1", "t2", "k2", "k4", "k5", "k6", "k7", "c1"] {
        assert!(
            !debug.contains(&format!("\"{secret}\"")),
            "{secret} in {debug}"
        );
    }
}

#[test]
fn passwords_inside_values_are_redacted_whatever_the_key() {
    let text = r#"
[db]
url = "postgres://user:secretpw@h/db"
replicas = ["redis://:pw1@r1", "amqp://u:pw2@mq"]
dsn = "host=db user=app password=pw3 dbname=app"
plain = "postgres://user@h/db"

[[jobs]]
queue = "amqp://u:pw4@mq/jobs"
"#;
    let config = load(text, &[("SHOAL_CACHE__URL", "redis://:pw5@cache:6379")]).unwrap();
    let redacted = config.redacted();
    let expected = toml::from_str::<toml::Table>(
        r#"
[db]
url = "postgres://user:<redacted>@h/db"
replicas = ["redis://:<redacted>@r1", "amqp://u:<redacted>@mq"]
dsn = "host=db user=app password=<redacted> dbname=app"
plain = "postgres://user@h/db"

[[jobs]]
queue = "amqp://u:<redacted>@mq/jobs"

[cache]
url = "redis://:<redacted>@cache:6379"
"#,
    )
    .unwrap();
    for (table, values) in &expected {
        assert_eq!(redacted.get(table), Some(values), "[{table}]");
    }
    // The service still reads the real value.
    assert_eq!(
        config.value("db.url"),
        Some(&toml("\"postgres://user:secretpw@h/db\""))
    );
    // `shoal config explain` shows what `explain` returns.
    let explained = config.explain();
    let shown = |key: &str| {
        explained
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.clone())
    };
    assert_eq!(
        shown("db.url"),
        Some(toml("\"postgres://user:<redacted>@h/db\""))
    );
    assert_eq!(
        shown("jobs[0].queue"),
        Some(toml("\"amqp://u:<redacted>@mq/jobs\""))
    );
    let everything = format!("{explained:?} {config:?}");
    for secret in ["secretpw", "pw1", "pw2", "pw3", "pw4", "pw5"] {
        assert!(!everything.contains(secret), "{secret} in {everything}");
    }
}

#[test]
fn explain_says_where_each_value_came_from() {
    let text = r#"[rpc]
listen = "127.0.0.1:7000"

[hello]
greeting = "Hi"
limits = { burst = 5, rate = 1.5 }
ports = [
  1,
  2,
]

[[hello.upstreams]]
addr = "a:1"
"#;
    let config = load(
        text,
        &[
            ("SHOAL_HELLO__GREETING", "Hello"),
            ("SHOAL_SHUTDOWN__GRACE", "3s"),
            ("SHOAL_DATA_DIR", "/var/lib/hello"),
        ],
    )
    .unwrap();
    let explained: Vec<(String, String, Source)> = config
        .explain()
        .into_iter()
        .map(|e| (e.key, e.value.to_string(), e.source))
        .collect();
    let expected = [
        ("control.handover_timeout", "\"30s\"", Source::Default),
        ("hello.greeting", "\"Hello\"", env("SHOAL_HELLO__GREETING")),
        ("hello.limits.burst", "5", file(6)),
        ("hello.limits.rate", "1.5", file(6)),
        ("hello.ports", "[1, 2]", file(7)),
        ("hello.upstreams[0].addr", "\"a:1\"", file(13)),
        ("log.level", "\"info\"", Source::Default),
        ("monitor.every", "\"10s\"", Source::Default),
        ("monitor.format", "\"msgpack\"", Source::Default),
        ("rpc.blocking_threads", "64", Source::Default),
        ("rpc.idle_timeout", "\"10m\"", Source::Default),
        ("rpc.listen", "\"127.0.0.1:7000\"", file(2)),
        ("rpc.max_connections", "4096", Source::Default),
        ("rpc.max_in_flight", "1024", Source::Default),
        ("rpc.max_message", "16777216", Source::Default),
        ("rpc.max_unsent", "4194304", Source::Default),
        ("rpc.max_values", "1048576", Source::Default),
        ("rpc.processes", "0", Source::Default),
        ("rpc.stall_timeout", "\"30s\"", Source::Default),
        ("shutdown.grace", "\"3s\"", env("SHOAL_SHUTDOWN__GRACE")),
    ]
    .map(|(k, v, s)| (k.to_owned(), v.to_owned(), s));
    assert_eq!(explained, expected);

    // Without a file, only the defaults.
    let keys: Vec<String> = Config::load(None, Vec::new())
        .unwrap()
        .explain()
        .into_iter()
        .map(|e| format!("{} = {} # {}", e.key, e.value, e.source))
        .collect();
    assert_eq!(
        keys,
        [
            "control.handover_timeout = \"30s\" # default",
            "log.level = \"info\" # default",
            "monitor.every = \"10s\" # default",
            "monitor.format = \"msgpack\" # default",
            "rpc.blocking_threads = 64 # default",
            "rpc.idle_timeout = \"10m\" # default",
            "rpc.max_connections = 4096 # default",
            "rpc.max_in_flight = 1024 # default",
            "rpc.max_message = 16777216 # default",
            "rpc.max_unsent = 4194304 # default",
            "rpc.max_values = 1048576 # default",
            "rpc.processes = 0 # default",
            "rpc.stall_timeout = \"30s\" # default",
            "shutdown.grace = \"10s\" # default",
        ]
    );
}

#[test]
fn sources_display_as_explain_prints_them() {
    assert_eq!(Source::Default.to_string(), "default");
    assert_eq!(file(3).to_string(), "file hello.toml, line 3");
    let included = Source::File {
        path: PathBuf::from("conf/base.toml"),
        line: 2,
        included_from: Some(PathBuf::from("local.toml")),
    };
    assert_eq!(
        included.to_string(),
        "file conf/base.toml, line 2, included from local.toml"
    );
    assert_eq!(
        env("SHOAL_RPC__LISTEN").to_string(),
        "environment SHOAL_RPC__LISTEN"
    );
    let layers: Vec<Layer> = [Source::Default, file(1), env("SHOAL_A__B")]
        .iter()
        .map(Source::layer)
        .collect();
    assert_eq!(layers, [Layer::Default, Layer::File, Layer::Environment]);
}

#[test]
fn values_by_dotted_key() {
    let config = load(HELLO, &[]).unwrap();
    let cases = [
        ("hello.greeting", Some("\"Hi\"")),
        ("hello.upstreams[1].addr", Some("\"b:1\"")),
        ("hello.upstreams[2].addr", None),
        ("hello.upstreams.addr", None),
        ("hello.greeting.x", None),
        ("hello.port[0]", None),
        ("nothing", None),
        ("", None),
        ("log.level", Some("\"info\"")),
    ];
    for (key, expected) in cases {
        assert_eq!(config.value(key), expected.map(toml).as_ref(), "{key}");
    }
}

#[test]
fn files_are_read_from_disk() {
    let dir = std::env::temp_dir().join(format!("shoal-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let missing = dir.join("missing.toml");
    let e = Config::load(Some(&missing), Vec::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            missing.display()
        )
    );
    assert_eq!(e.file(), Some(missing.as_path()));
    assert_eq!(e.key(), None);

    let path = dir.join("hello.toml");
    std::fs::write(&path, "[rpc]\nlisten = \"127.0.0.1:7000\"\n").unwrap();
    let config = Config::load(Some(&path), Vec::new()).unwrap();
    assert_eq!(config.path(), Some(path.as_path()));
    let listen = config
        .explain()
        .into_iter()
        .find(|e| e.key == "rpc.listen")
        .unwrap();
    assert_eq!(
        listen.source,
        Source::File {
            path: path.clone(),
            line: 2,
            included_from: None,
        }
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn syntax_errors_give_line_and_column() {
    // (file, expected line, column)
    let cases = [
        ("[hello]\ngreeting = \"Hi\"\nport = = 1\n", 3, 8),
        ("[hello\n", 1, 7),
        ("a = 1\na = 2\n", 2, 1),
        ("x = \"unterminated\n", 1, 18),
        ("x = \"é\" é\n", 1, 9),
    ];
    for (text, line, column) in cases {
        let e = load(text, &[]).unwrap_err();
        let prefix = format!("hello.toml:{line}:{column}: TOML syntax: ");
        let shown = e.to_string();
        assert!(shown.starts_with(&prefix), "{text:?}: {shown}");
        assert!(!shown.contains('\n'), "{text:?}: {shown}");
        assert_eq!((e.line(), e.column()), (Some(line), Some(column)));
    }
}

#[test]
fn a_path_that_is_not_a_regular_file_is_refused_naming_it() {
    let dir = std::env::temp_dir().join(format!("shoal-config-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("app.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Nobody writes to the FIFO: a read would wait forever, so this returning at all is half
    // the point.
    let e = Config::load(Some(&fifo), Vec::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: is a FIFO, not a regular file; give the path of a TOML configuration file",
            fifo.display()
        )
    );
    assert_eq!(e.file(), Some(fifo.as_path()));
    let e = Config::load(Some(&dir), Vec::new()).unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_number_and_duration_is_refused_out_of_its_range_naming_file_line_and_key() {
    const HUGE: &str = "\"18446744073709551615s\"";
    let runtime_keys: &[(&str, &[&str])] = &[
        (
            "rpc.max_message",
            &["1023", "1073741825", "9223372036854775807", "-1"],
        ),
        (
            "rpc.max_in_flight",
            &["0", "1000001", "2305843009213693952"],
        ),
        ("rpc.blocking_threads", &["0", "4097"]),
        ("rpc.processes", &["-1", "1025"]),
        ("rpc.max_unsent", &["65535", "1073741825", "-1"]),
        ("rpc.max_values", &["1023", "268435457", "\"many\""]),
        ("rpc.stall_timeout", &["\"0s\"", "\"25h\"", HUGE]),
        ("rpc.idle_timeout", &["\"0s\"", "\"25h\"", HUGE]),
        ("rpc.max_connections", &["0", "1000001"]),
        ("shutdown.grace", &["\"300000000000y\"", "\"25h\"", HUGE]),
        ("control.handover_timeout", &["\"0s\"", "\"25h\"", HUGE]),
        ("watchdog.timeout", &["\"0s\"", "\"25h\"", HUGE]),
        ("summary.every", &["\"0s\"", "\"25h\"", HUGE]),
        ("monitor.every", &["\"0s\"", "\"25h\"", HUGE]),
        ("workers.pollers", &["-1", "1025"]),
    ];
    let mut cases = Vec::new();
    for (key, values) in runtime_keys {
        let (table, name) = key.split_once('.').unwrap();
        for value in *values {
            cases.push((format!("[{table}]\n{name} = {value}\n"), key.to_string(), 2));
        }
    }
    let file_sink = "[[log.sinks]]\nkind = \"file\"\npath = \"a.log\"\n";
    let email_sink = "[[log.sinks]]\nkind = \"email\"\nsmtp = \"smtp://x\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n";
    let sink_keys: &[(&str, &str, &[&str])] = &[
        (
            file_sink,
            "rotate_size",
            &["\"1025GB\"", "1099511627777", "-1"],
        ),
        (file_sink, "keep", &["-1", "1001"]),
        (email_sink, "max_lines", &["0", "100001"]),
        (email_sink, "interval", &["\"0s\"", "\"25h\"", HUGE]),
    ];
    for (sink, name, values) in sink_keys {
        for value in *values {
            let line = sink.lines().count() + 1;
            cases.push((
                format!("{sink}{name} = {value}\n"),
                format!("log.sinks[0].{name}"),
                line,
            ));
        }
    }
    for (text, key, line) in cases {
        let e = match load(&text, &[]) {
            Ok(config) => panic!("{text:?} loaded: {:?}", config.runtime()),
            Err(e) => e,
        };
        assert_eq!(
            (e.file(), e.key(), e.line()),
            (Some(Path::new(FILE)), Some(key.as_str()), Some(line)),
            "{text:?}: {e}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("{FILE}:{line}: key `{key}`: expected")),
            "{e}"
        );
    }
}

#[test]
fn the_ends_of_every_range_load() {
    let text = r#"
[rpc]
max_message = 1073741824
max_in_flight = 1000000
blocking_threads = 4096
processes = 1024
max_unsent = 1073741824
max_values = 268435456
stall_timeout = "24h"
idle_timeout = "24h"
max_connections = 1000000
[shutdown]
grace = "24h"
[control]
handover_timeout = "24h"
[watchdog]
timeout = "24h"
[summary]
every = "24h"
[monitor]
every = "24h"
[workers]
pollers = 1024
"#;
    let rt = runtime(text, &[]);
    assert_eq!(rt.rpc.max_in_flight, 1_000_000);
    assert_eq!(rt.watchdog.timeout, Some(Duration::from_secs(86400)));
    let low = runtime(
        "[rpc]\nmax_message = 1024\nmax_in_flight = 1\nblocking_threads = 1\nprocesses = 0\n\
         max_unsent = 65536\nmax_values = 1024\nstall_timeout = \"1ms\"\nidle_timeout = \"1ms\"\n\
         max_connections = 1\n[shutdown]\ngrace = \"0s\"\n[watchdog]\ntimeout = \"1ms\"\n",
        &[],
    );
    assert_eq!(low.shutdown.grace, Duration::ZERO);
    assert_eq!(low.rpc.max_connections, 1);
    assert_eq!(low.rpc.stall_timeout, Duration::from_millis(1));
    assert_eq!(low.watchdog.timeout, Some(Duration::from_millis(1)));
}

#[test]
fn an_error_quoting_a_value_does_not_repeat_its_password() {
    let e = load("[rpc]\nlisten = \"postgres://user:secretpw@h/db\"\n", &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "hello.toml:2: key `rpc.listen`: expected host:port or unix:PATH, got \
         \"postgres://user:<redacted>@h/db\""
    );
}
