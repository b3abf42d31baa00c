//! Endpoint sets: the servers a client calls, with their balancing, as one value that
//! discovery ([`crate::discover`]) hands a client whole, and the TOML file that writes one down.
//!
//! # Format
//!
//! ```toml
//! balance = "hashring"   # round_robin (default) | least_pending | hashring | shard
//! shard_count = 8        # shard only: ranges hold values of key % shard_count
//!
//! [[endpoint]]
//! addr = "10.0.0.1:3000" # host:port or unix:PATH; the identity hashring hashes, as written
//! weight = 2             # 1 to 100, default 1; round_robin, least_pending, hashring
//!
//! [[endpoint]]
//! addr = "10.0.0.2:3000"
//! ```
//!
//! With `balance = "shard"`, every endpoint has an inclusive range of `key % shard_count`,
//! and may name a backup that serves the range while it is down (the backup need not be listed
//! as an endpoint of its own):
//!
//! ```toml
//! balance = "shard"
//! shard_count = 8
//!
//! [[endpoint]]
//! addr = "10.0.0.1:3000"
//! shard = [0, 3]
//! backup = "10.0.0.9:3000"
//!
//! [[endpoint]]
//! addr = "10.0.0.2:3000"
//! shard = [4, 7]
//! ```
//!
//! The ranges must lie within `0..shard_count`, must not overlap, and must cover every value.
//! Errors name the file, the line, and the key at fault, with endpoints counted from 0 in
//! file order: `clients.toml:9: endpoint[1].shard: 10.0.0.2:3000: shard range [4, 8] goes
//! past 7: ...`.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::{Spanned, Value};

use crate::balance::{Balance, Invalid, Picker, MAX_WEIGHT};
use crate::endpoint::{EndpointConfig, RouteKey};
use crate::error::Error;
use crate::transport::Addr;

/// The servers a client calls and how it balances over them: the contents of an endpoint file,
/// checked, or one item of a [`Discover`](crate::Discover) stream.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSet {
    pub balance: Balance,
    /// In file order.
    pub endpoints: Vec<EndpointConfig>,
}

impl EndpointSet {
    /// The set of `addrs`, in that order, balanced by `balance`; with [`Balance::Shard`],
    /// `0..count` is cut into contiguous ranges over the first `count` addresses, each range
    /// backed up by the next address's endpoint (what discovery makes of a service's list).
    pub fn spread(addrs: Vec<Addr>, balance: Balance) -> EndpointSet {
        let mut endpoints: Vec<EndpointConfig> =
            addrs.into_iter().map(EndpointConfig::new).collect();
        if let Balance::Shard { count } = balance {
            shard(&mut endpoints, count);
        }
        EndpointSet { balance, endpoints }
    }

    /// Reads and checks the endpoint file at `path`. Reads synchronously: meant for startup.
    pub fn load(path: impl AsRef<Path>) -> Result<EndpointSet, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("read endpoint file {}", path.display()), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Like [`load`](Self::load), but a file without a `balance` key balances by `default`
    /// instead of round robin (a generated client's default, e.g. its IDL's `hashring`). Only
    /// the strategy is taken from `default`: a shard count still comes from the file.
    pub fn load_or(path: impl AsRef<Path>, default: &Balance) -> Result<EndpointSet, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("read endpoint file {}", path.display()), e))?;
        Self::parse_or(&text, &path.display().to_string(), default)
    }

    /// Checks endpoint-file `text`; `origin` (usually the file's path) starts every error.
    pub fn parse(text: &str, origin: &str) -> Result<EndpointSet, Error> {
        Self::parse_or(text, origin, &Balance::RoundRobin)
    }

    /// Like [`parse`](Self::parse), with `default` for a file that has no `balance` key.
    pub fn parse_or(text: &str, origin: &str, default: &Balance) -> Result<EndpointSet, Error> {
        let at = Locator { text, origin };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end().replace('\n', "; ");
            match e.span() {
                Some(span) => at.error(&span, None, &message),
                None => Error::Config(format!("{origin}: {message}")),
            }
        })?;
        if raw.endpoint.is_empty() {
            return Err(Error::Config(format!(
                "{origin}: no endpoints; add at least one [[endpoint]] table with an addr"
            )));
        }
        let balance = balance(&raw, &at, default.name())?;
        let mut endpoints = Vec::with_capacity(raw.endpoint.len());
        for (i, table) in raw.endpoint.iter().enumerate() {
            endpoints.push(endpoint(i, table, &at)?);
        }
        // The checks every client makes at build time, pointed at the file's lines (the key
        // only routes calls, which this picker never makes).
        Picker::new(balance.clone(), endpoints.clone(), RouteKey::Int(0))
            .map_err(|e| at.invalid(&raw, e))?;
        Ok(EndpointSet { balance, endpoints })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    balance: Option<Spanned<Value>>,
    shard_count: Option<Spanned<Value>>,
    #[serde(default)]
    endpoint: Vec<Spanned<RawEndpoint>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    addr: Option<Spanned<Value>>,
    weight: Option<Spanned<Value>>,
    shard: Option<Spanned<Value>>,
    backup: Option<Spanned<Value>>,
}

impl RawEndpoint {
    fn field(&self, key: &str) -> Option<&Spanned<Value>> {
        match key {
            "addr" => self.addr.as_ref(),
            "weight" => self.weight.as_ref(),
            "shard" => self.shard.as_ref(),
            "backup" => self.backup.as_ref(),
            _ => None,
        }
    }
}

/// Turns byte offsets into `origin:line:` prefixes.
struct Locator<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Locator<'_> {
    fn error(&self, span: &Range<usize>, key: Option<&str>, message: &str) -> Error {
        let start = span.start.min(self.text.len());
        let line = self.text[..start].matches('\n').count() + 1;
        match key {
            Some(key) => Error::Config(format!("{}:{line}: {key}: {message}", self.origin)),
            None => Error::Config(format!("{}:{line}: {message}", self.origin)),
        }
    }

    /// An error about `key` of the whole file, at its line when it is present.
    fn top(&self, value: Option<&Spanned<Value>>, key: &str, message: &str) -> Error {
        match value {
            Some(v) => self.error(&v.span(), Some(key), message),
            None => Error::Config(format!("{}: {key}: {message}", self.origin)),
        }
    }

    fn invalid(&self, raw: &RawFile, e: Invalid) -> Error {
        match e.endpoint {
            Some(i) => {
                let table = &raw.endpoint[i];
                let span = table
                    .get_ref()
                    .field(e.key)
                    .map_or_else(|| table.span(), |v| v.span());
                self.error(&span, Some(&format!("endpoint[{i}].{}", e.key)), &e.message)
            }
            None => {
                let value = match e.key {
                    "shard_count" => raw.shard_count.as_ref(),
                    _ => raw.balance.as_ref(),
                };
                self.top(value, e.key, &e.message)
            }
        }
    }
}

fn balance(raw: &RawFile, at: &Locator<'_>, default: &str) -> Result<Balance, Error> {
    let names = "expected one of \"round_robin\", \"least_pending\", \"hashring\", \"shard\"";
    let name = match &raw.balance {
        None => default,
        Some(v) => match v.get_ref() {
            Value::String(s) => s.as_str(),
            other => return Err(at.top(Some(v), "balance", &format!("{names}, got {other}"))),
        },
    };
    let balance = match name {
        "round_robin" => Balance::RoundRobin,
        "least_pending" => Balance::LeastPending,
        "hashring" => Balance::HashRing,
        "shard" => {
            let Some(count) = &raw.shard_count else {
                let default = if raw.balance.is_none() {
                    " (this client's default)"
                } else {
                    ""
                };
                return Err(at.top(
                    raw.balance.as_ref(),
                    "balance",
                    &format!(
                        "shard balancing{default} needs shard_count = N (ranges hold values of key % N)"
                    ),
                ));
            };
            match count.get_ref() {
                Value::Integer(n) if *n >= 1 => Balance::Shard { count: *n as u64 },
                other => {
                    return Err(at.top(
                        Some(count),
                        "shard_count",
                        &format!("expected an integer of at least 1, got {other}"),
                    ))
                }
            }
        }
        other => {
            return Err(at.top(
                raw.balance.as_ref(),
                "balance",
                &format!("{names}, got {other:?}"),
            ))
        }
    };
    if let (Some(count), false) = (&raw.shard_count, matches!(balance, Balance::Shard { .. })) {
        return Err(at.top(
            Some(count),
            "shard_count",
            &format!("shard_count is only used with balance = \"shard\", not {name:?}"),
        ));
    }
    Ok(balance)
}

fn endpoint(
    i: usize,
    table: &Spanned<RawEndpoint>,
    at: &Locator<'_>,
) -> Result<EndpointConfig, Error> {
    let raw = table.get_ref();
    let fail = |v: &Spanned<Value>, key: &str, message: String| {
        at.error(&v.span(), Some(&format!("endpoint[{i}].{key}")), &message)
    };
    let addr_of = |v: &Spanned<Value>, key: &str| match v.get_ref() {
        Value::String(s) => s.parse::<Addr>().map_err(|e| fail(v, key, e.to_string())),
        other => Err(fail(
            v,
            key,
            format!("expected an address string (host:port or unix:PATH), got {other}"),
        )),
    };
    let Some(addr) = &raw.addr else {
        return Err(at.error(
            &table.span(),
            Some(&format!("endpoint[{i}]")),
            "missing addr; write addr = \"host:port\" or \"unix:PATH\"",
        ));
    };
    let mut config = EndpointConfig::new(addr_of(addr, "addr")?);
    if let Some(v) = &raw.weight {
        config.weight = match v.get_ref() {
            Value::Integer(w) if (1..=i64::from(MAX_WEIGHT)).contains(w) => *w as u32,
            other => {
                return Err(fail(
                    v,
                    "weight",
                    format!("expected an integer from 1 to {MAX_WEIGHT}, got {other}"),
                ))
            }
        };
    }
    if let Some(v) = &raw.shard {
        let range = match v.get_ref() {
            Value::Array(items) => match items.as_slice() {
                [Value::Integer(b), Value::Integer(e)] if *b >= 0 && *e >= 0 => {
                    Some((*b as u64, *e as u64))
                }
                _ => None,
            },
            _ => None,
        };
        let Some(range) = range else {
            return Err(fail(
                v,
                "shard",
                format!(
                    "expected [begin, end], two integers of at least 0, got {}",
                    v.get_ref()
                ),
            ));
        };
        config.shard = Some(range);
    }
    if let Some(v) = &raw.backup {
        config.backup = Some(addr_of(v, "backup")?);
    }
    Ok(config)
}

/// Cuts `0..count` into contiguous ranges over the first `count` endpoints, each backed up
/// by the next.
fn shard(endpoints: &mut Vec<EndpointConfig>, count: u64) {
    let used = (endpoints.len() as u64).min(count).max(1);
    endpoints.truncate(used as usize);
    let addrs: Vec<Addr> = endpoints.iter().map(|e| e.addr.clone()).collect();
    for (i, e) in endpoints.iter_mut().enumerate() {
        let i = i as u64;
        let begin = i * count / used;
        let end = ((i + 1) * count / used).saturating_sub(1);
        e.shard = Some((begin, end));
        if used > 1 {
            e.backup = Some(addrs[((i + 1) % used) as usize].clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(
        addr: &str,
        weight: u32,
        shard: Option<(u64, u64)>,
        backup: Option<&str>,
    ) -> EndpointConfig {
        EndpointConfig {
            addr: addr.parse().unwrap(),
            weight,
            shard,
            backup: backup.map(|b| b.parse().unwrap()),
        }
    }

    fn check_ok(text: &str, balance: Balance, endpoints: &[EndpointConfig]) {
        let got =
            EndpointSet::parse(text, "clients.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            got,
            EndpointSet {
                balance,
                endpoints: endpoints.to_vec()
            },
            "{text}"
        );
    }

    fn check_err(text: &str, expected: &str) {
        match EndpointSet::parse(text, "clients.toml") {
            Ok(got) => panic!("accepted {got:?}\n{text}"),
            Err(e) => assert!(
                e.to_string().contains(expected),
                "{e}\n  does not contain: {expected}\n{text}"
            ),
        }
    }

    #[test]
    fn a_file_without_balance_takes_the_default() {
        let text = "[[endpoint]]\naddr = \"a:1\"\n";
        let file = EndpointSet::parse_or(text, "clients.toml", &Balance::HashRing).unwrap();
        assert_eq!(file.balance, Balance::HashRing);
        let said = "balance = \"round_robin\"\n[[endpoint]]\naddr = \"a:1\"\n";
        let file = EndpointSet::parse_or(said, "clients.toml", &Balance::HashRing).unwrap();
        assert_eq!(file.balance, Balance::RoundRobin);
        let shard = "shard_count = 2\n[[endpoint]]\naddr = \"a:1\"\nshard = [0, 1]\n";
        let file =
            EndpointSet::parse_or(shard, "clients.toml", &Balance::Shard { count: 0 }).unwrap();
        assert_eq!(file.balance, Balance::Shard { count: 2 });
        let e = EndpointSet::parse_or(text, "clients.toml", &Balance::Shard { count: 0 })
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "clients.toml: balance: shard balancing (this client's default) needs shard_count"
            ),
            "{e}"
        );
    }

    #[test]
    fn good_files() {
        check_ok(
            "[[endpoint]]\naddr = \"127.0.0.1:3000\"\n",
            Balance::RoundRobin,
            &[ep("127.0.0.1:3000", 1, None, None)],
        );
        check_ok(
            "balance = \"least_pending\"\n[[endpoint]]\naddr = \"a:1\"\n[[endpoint]]\naddr = \"unix:/run/s.sock\"\nweight = 3\n",
            Balance::LeastPending,
            &[ep("a:1", 1, None, None), ep("unix:/run/s.sock", 3, None, None)],
        );
        check_ok(
            "balance = \"hashring\"\n[[endpoint]]\naddr = \"10.0.0.1:3000\"\nweight = 2\n[[endpoint]]\naddr = \"10.0.0.2:3000\"\n",
            Balance::HashRing,
            &[ep("10.0.0.1:3000", 2, None, None), ep("10.0.0.2:3000", 1, None, None)],
        );
        check_ok(
            r#"
balance = "shard"
shard_count = 8
[[endpoint]]
addr = "10.0.0.1:3000"
shard = [0, 3]
backup = "10.0.0.9:3000"
[[endpoint]]
addr = "10.0.0.2:3000"
shard = [4, 7]
backup = "10.0.0.1:3000"
"#,
            Balance::Shard { count: 8 },
            &[
                ep("10.0.0.1:3000", 1, Some((0, 3)), Some("10.0.0.9:3000")),
                ep("10.0.0.2:3000", 1, Some((4, 7)), Some("10.0.0.1:3000")),
            ],
        );
        check_ok(
            "balance = \"shard\"\nshard_count = 1\n[[endpoint]]\naddr = \"a:1\"\nshard = [0, 0]\n",
            Balance::Shard { count: 1 },
            &[ep("a:1", 1, Some((0, 0)), None)],
        );
    }

    #[test]
    fn bad_files() {
        let two = "[[endpoint]]\naddr = \"a:1\"\n[[endpoint]]\naddr = \"b:1\"\n";
        let table: &[(String, &str)] = &[
            ("".into(), "clients.toml: no endpoints"),
            ("balance = \"random\"\n[[endpoint]]\naddr = \"a:1\"\n".into(), "clients.toml:1: balance: expected one of"),
            ("balance = 3\n[[endpoint]]\naddr = \"a:1\"\n".into(), "clients.toml:1: balance: expected one of"),
            ("balance = \"shard\"\n[[endpoint]]\naddr = \"a:1\"\nshard = [0, 0]\n".into(), "clients.toml:1: balance: shard balancing needs shard_count"),
            (format!("balance = \"shard\"\nshard_count = 0\n{two}"), "clients.toml:2: shard_count: expected an integer of at least 1, got 0"),
            (format!("shard_count = 4\n{two}"), "clients.toml:1: shard_count: shard_count is only used with balance = \"shard\""),
            ("[[endpoint]]\nweight = 2\n".into(), "endpoint[0]: missing addr"),
            ("[[endpoint]]\naddr = \"a:1\"\n[[endpoint]]\naddr = \"nope\"\n".into(), "clients.toml:4: endpoint[1].addr: address \"nope\": expected host:port"),
            ("[[endpoint]]\naddr = 5\n".into(), "clients.toml:2: endpoint[0].addr: expected an address string"),
            ("[[endpoint]]\naddr = \"a:1\"\nweight = 0\n".into(), "clients.toml:3: endpoint[0].weight: expected an integer from 1 to 100, got 0"),
            ("[[endpoint]]\naddr = \"a:1\"\nweight = \"two\"\n".into(), "clients.toml:3: endpoint[0].weight: expected an integer from 1 to 100, got \"two\""),
            ("[[endpoint]]\naddr = \"a:1\"\nwieght = 2\n".into(), "clients.toml:3: unknown field `wieght`"),
            ("colour = \"red\"\n[[endpoint]]\naddr = \"a:1\"\n".into(), "clients.toml:1: unknown field `colour`"),
            ("[[endpoint]\naddr = \"a:1\"\n".into(), "clients.toml:1: invalid table header; expected"),
            (format!("{two}[[endpoint]]\naddr = \"a:1\"\n"), "clients.toml:6: endpoint[2].addr: a:1 is listed twice (endpoints 0 and 2)"),
            ("[[endpoint]]\naddr = \"a:1\"\nshard = [0, 1]\n".into(), "clients.toml:3: endpoint[0].shard: a:1: a shard range needs shard balancing, not round_robin"),
            ("balance = \"hashring\"\n[[endpoint]]\naddr = \"a:1\"\nbackup = \"b:1\"\n".into(), "clients.toml:4: endpoint[0].backup: a:1: a backup needs shard balancing, not hashring"),
            (shard(&["a:1", "[0, 3]", "b:1", "[5]"]), "clients.toml:10: endpoint[1].shard: expected [begin, end], two integers of at least 0, got [5]"),
            (shard(&["a:1", "[0, 3]", "b:1", "[-1, 7]"]), "endpoint[1].shard: expected [begin, end], two integers of at least 0"),
            (shard(&["a:1", "[0, 3]", "b:1", "[4, 8]"]), "clients.toml:10: endpoint[1].shard: b:1: shard range [4, 8] goes past 7"),
            (shard(&["a:1", "[0, 3]", "b:1", "[7, 4]"]), "clients.toml:10: endpoint[1].shard: b:1: shard range [7, 4] is backwards"),
            (shard(&["a:1", "[0, 4]", "b:1", "[4, 7]"]), "clients.toml:10: endpoint[1].shard: b:1: shard range [4, 7] overlaps [0, 4] of a:1"),
            (shard(&["a:1", "[1, 2]", "b:1", "[4, 6]"]), "clients.toml:2: shard_count: shard values [0, 0], [3, 3], [7, 7] of 0..8 are not covered"),
            ("balance = \"shard\"\nshard_count = 2\n[[endpoint]]\naddr = \"a:1\"\nshard = [0, 1]\n[[endpoint]]\naddr = \"b:1\"\n".into(), "clients.toml:6: endpoint[1].shard: b:1: shard balancing needs a range [begin, end] on every endpoint"),
            ("balance = \"shard\"\nshard_count = 2\n[[endpoint]]\naddr = \"a:1\"\nshard = [0, 1]\nbackup = \"a:1\"\n".into(), "clients.toml:6: endpoint[0].backup: a:1: an endpoint cannot be its own backup"),
            ("[[endpoint]]\naddr = \"a:1\"\nbackup = \"nope\"\n".into(), "clients.toml:3: endpoint[0].backup: address \"nope\""),
        ];
        for (text, expected) in table {
            check_err(text, expected);
        }
    }

    /// A shard file over 8 values with two endpoints: `[addr, range, addr, range]`.
    fn shard(eps: &[&str; 4]) -> String {
        format!(
            "balance = \"shard\"\nshard_count = 8\n\n[[endpoint]]\naddr = \"{}\"\nshard = {}\n\n[[endpoint]]\naddr = \"{}\"\nshard = {}\n",
            eps[0], eps[1], eps[2], eps[3]
        )
    }

    #[test]
    fn load_names_a_missing_file() {
        let err = EndpointSet::load("/nonexistent/clients.toml").unwrap_err();
        assert!(
            err.to_string()
                .contains("read endpoint file /nonexistent/clients.toml"),
            "{err}"
        );
    }
}
