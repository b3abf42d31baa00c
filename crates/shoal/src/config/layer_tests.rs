//! Layers from real files: the order of files, includes relative to their file, include
//! cycles, the environment over the files, and where each value came from.

use std::path::{Path, PathBuf};

use super::*;

/// A directory of config files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("shoal-layers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(path: &Path, line: usize, included_from: Option<&Path>) -> Source {
    Source::File {
        path: path.to_owned(),
        line,
        included_from: included_from.map(Path::to_owned),
    }
}

/// The value and the source of `key`.
fn explained(config: &Config, key: &str) -> (String, Source) {
    let e = config
        .explain()
        .into_iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {config:?}"));
    (e.value.to_string(), e.source)
}

#[test]
fn later_files_win_key_by_key_and_tables_merge() {
    let dir = Dir::new("order");
    let base = dir.write(
        "base.toml",
        "[hello]\ngreeting = \"Hello\"\nports = [1, 2]\n\n[hello.limits]\nrate = 1\nburst = 5\n",
    );
    let local = dir.write(
        "local.toml",
        "[hello]\nports = [3]\n\n[hello.limits]\nrate = 2\n",
    );
    let config = Config::load_files(&[base.clone(), local.clone()], Vec::new()).unwrap();
    let cases = [
        ("hello.greeting", "\"Hello\"", file(&base, 2, None)),
        // An array is replaced whole, not merged.
        ("hello.ports", "[3]", file(&local, 2, None)),
        ("hello.limits.rate", "2", file(&local, 5, None)),
        ("hello.limits.burst", "5", file(&base, 7, None)),
    ];
    for (key, value, source) in cases {
        assert_eq!(explained(&config, key), (value.to_owned(), source), "{key}");
    }
    assert_eq!(config.files(), [base.clone(), local.clone()]);
    assert_eq!(config.path(), Some(local.as_path()));

    // The other order, the other winner.
    let config = Config::load_files(&[local, base.clone()], Vec::new()).unwrap();
    assert_eq!(
        explained(&config, "hello.limits.rate"),
        ("1".to_owned(), file(&base, 6, None))
    );
    assert_eq!(
        config.value("hello.ports"),
        Some(&toml::Value::from(vec![1, 2]))
    );
}

#[test]
fn a_bad_value_is_placed_in_the_file_it_came_from() {
    let dir = Dir::new("placed");
    let base = dir.write("base.toml", "[rpc]\nlisten = \"nowhere\"\n");
    let local = dir.write("local.toml", "[hello]\ngreeting = \"Hi\"\n");
    let e = Config::load_files(&[base.clone(), local], Vec::new()).unwrap_err();
    assert_eq!(e.file(), Some(base.as_path()));
    assert_eq!(e.line(), Some(2));
    assert_eq!(e.key(), Some("rpc.listen"));
    assert!(e
        .to_string()
        .starts_with(&format!("{}:2: key `rpc.listen`", base.display())));
}

#[test]
fn includes_are_relative_to_their_file_and_read_first() {
    let dir = Dir::new("include");
    dir.write(
        "conf/shared/base.toml",
        "include = [\"../../common.toml\"]\n[hello]\ngreeting = \"Hello\"\nname = \"base\"\n",
    );
    dir.write("common.toml", "[hello]\nname = \"common\"\nport = 7\n");
    let local = dir.write(
        "conf/local.toml",
        "include = [\"shared/base.toml\"]\n\n[hello]\ngreeting = \"Hi\"\n",
    );
    let config = Config::load_files(std::slice::from_ref(&local), Vec::new()).unwrap();
    let base = dir.0.join("conf/shared/base.toml");
    let common = dir.0.join("conf/shared/../../common.toml");
    let cases = [
        // The including file's own keys win over what it includes.
        ("hello.greeting", "\"Hi\"", file(&local, 4, None)),
        ("hello.name", "\"base\"", file(&base, 4, Some(&local))),
        ("hello.port", "7", file(&common, 3, Some(&base))),
    ];
    for (key, value, source) in cases {
        assert_eq!(explained(&config, key), (value.to_owned(), source), "{key}");
    }
    // `include` names files; it is not a value.
    assert_eq!(config.value("include"), None);
    assert_eq!(config.files(), [local]);
}

#[test]
fn an_include_cycle_is_refused_naming_the_files() {
    let dir = Dir::new("cycle");
    let a = dir.write("a.toml", "include = [\"b.toml\"]\n[hello]\nx = 1\n");
    let b = dir.0.join("b.toml");
    dir.write("b.toml", "[hello]\ny = 2\ninclude = 3\n\n# then\n");
    // Not a cycle yet: `include` inside a table is a plain key.
    Config::load_files(std::slice::from_ref(&a), Vec::new()).unwrap();

    dir.write("b.toml", "\ninclude = [\"./a.toml\"]\n");
    let e = Config::load_files(std::slice::from_ref(&a), Vec::new()).unwrap_err();
    let again = dir.0.join("./a.toml");
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2: key `include`: include cycle: {} includes {}, which includes {}; remove one \
             of these includes",
            b.display(),
            a.display(),
            b.display(),
            again.display()
        )
    );
    assert_eq!(e.file(), Some(b.as_path()));

    let me = dir.write("me.toml", "include = [\"me.toml\"]\n");
    let e = Config::load_files(std::slice::from_ref(&me), Vec::new()).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("include cycle: {0} includes {0}", me.display())),
        "{e}"
    );

    // The same file twice, not inside itself, is no cycle.
    dir.write("shared.toml", "[hello]\nz = 1\n");
    let left = dir.write("left.toml", "include = [\"shared.toml\"]\n");
    let both = dir.write("both.toml", "include = [\"left.toml\", \"shared.toml\"]\n");
    let config = Config::load_files(&[both, left], Vec::new()).unwrap();
    assert_eq!(config.value("hello.z"), Some(&toml::Value::Integer(1)));
}

#[test]
fn a_bad_include_names_its_file() {
    let dir = Dir::new("bad-include");
    let cases = [
        (
            "include = \"base.toml\"\n",
            "key `include`: expected an array of file paths like [\"base.toml\"], got a string",
        ),
        (
            "\ninclude = [1]\n",
            "key `include`: expected an array of file paths like [\"base.toml\"], got 1",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.write("local.toml", text);
        let e = Config::load_files(std::slice::from_ref(&path), Vec::new()).unwrap_err();
        let line = text.lines().position(|l| l.starts_with("include")).unwrap() + 1;
        assert_eq!(
            e.to_string(),
            format!("{}:{line}: {expected}", path.display()),
            "{text:?}"
        );
    }
    let path = dir.write("local.toml", "include = [\"gone.toml\"]\n");
    let e = Config::load_files(&[path], Vec::new()).unwrap_err();
    let gone = dir.0.join("gone.toml");
    assert_eq!(e.file(), Some(gone.as_path()));
    assert!(e.to_string().contains("cannot read"), "{e}");

    let broken = dir.write("broken.toml", "[hello\n");
    let path = dir.write("local.toml", "include = [\"broken.toml\"]\n");
    let e = Config::load_files(&[path], Vec::new()).unwrap_err();
    assert_eq!((e.file(), e.line()), (Some(broken.as_path()), Some(1)));
}

#[test]
fn the_environment_wins_over_every_file() {
    let dir = Dir::new("env");
    let base = dir.write("base.toml", "[rpc]\nlisten = \"127.0.0.1:7000\"\n");
    let local = dir.write(
        "local.toml",
        "include = [\"base.toml\"]\n[rpc]\nlisten = \"127.0.0.1:7001\"\n",
    );
    let env = vars(&[("SHOAL_RPC__LISTEN", "127.0.0.1:7002")]);
    let config = Config::load_files(&[base, local.clone()], env).unwrap();
    let (value, source) = explained(&config, "rpc.listen");
    assert_eq!(value, "\"127.0.0.1:7002\"");
    assert_eq!(source.layer(), Layer::Environment);
    assert_eq!(source.to_string(), "environment SHOAL_RPC__LISTEN");
    assert_eq!(
        explained(&config, "shutdown.grace").1.layer(),
        Layer::Default
    );
    assert_eq!(config.path(), Some(local.as_path()));
}

#[test]
fn the_layers_are_in_their_order() {
    let mut sorted = Layer::ORDER;
    sorted.sort();
    assert_eq!(sorted, Layer::ORDER);
    assert!(Layer::File < Layer::Center && Layer::Center < Layer::Environment);
}

/// The center's layer: above the files, below the environment, its version from the name of
/// the file its link names, re-read by every load, and absent when its file is.
#[test]
fn the_centers_layer_sits_between_the_files_and_the_environment() {
    let dir = Dir::new("center");
    let base = dir.write(
        "base.toml",
        "[hello]\ngreeting = \"file\"\nname = \"file\"\nextra = 1\n",
    );
    let v3 = dir.write(
        "center/v3.toml",
        "[hello]\ngreeting = \"center\"\nname = \"center\"\n",
    );
    let link = dir.0.join("center/config.toml");
    std::os::unix::fs::symlink("v3.toml", &link).unwrap();
    let env = vars(&[
        ("SHOAL_CENTER_CONFIG", link.to_str().unwrap()),
        ("SHOAL_HELLO__NAME", "env"),
    ]);
    let config = Config::load_files(std::slice::from_ref(&base), env.clone()).unwrap();
    assert_eq!(config.center_version(), Some(3));
    let center = Source::Center {
        path: v3.clone(),
        line: 2,
        version: Some(3),
    };
    assert_eq!(
        explained(&config, "hello.greeting"),
        ("\"center\"".into(), center.clone())
    );
    assert_eq!(center.layer(), Layer::Center);
    assert_eq!(
        center.to_string(),
        format!("center v3, file {}, line 2", v3.display())
    );
    assert_eq!(
        explained(&config, "hello.name").1.layer(),
        Layer::Environment
    );
    assert_eq!(explained(&config, "hello.extra").1.layer(), Layer::File);

    // A new version: the link moves, and the next load reads it.
    dir.write("center/v4.toml", "[hello]\ngreeting = \"four\"\n");
    std::os::unix::fs::symlink("v4.toml", dir.0.join("center/next")).unwrap();
    std::fs::rename(dir.0.join("center/next"), &link).unwrap();
    let config = Config::load_files(std::slice::from_ref(&base), env.clone()).unwrap();
    assert_eq!(config.center_version(), Some(4));
    assert_eq!(explained(&config, "hello.greeting").0, "\"four\"");
    assert_eq!(explained(&config, "hello.name").0, "\"env\"");

    // A bad value in it names its file and line; an include in it is refused.
    dir.write("center/v4.toml", "[rpc]\nlisten = \"nowhere\"\n");
    let e = Config::load_files(std::slice::from_ref(&base), env.clone()).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "{}:2: key `rpc.listen`",
            dir.0.join("center/v4.toml").display()
        )),
        "{e}"
    );
    dir.write("center/v4.toml", "include = [\"x.toml\"]\n");
    let e = Config::load_files(std::slice::from_ref(&base), env.clone()).unwrap_err();
    assert!(e.to_string().contains("includes no files"), "{e}");

    // No file at the path: no center layer.
    std::fs::remove_file(&link).unwrap();
    let config = Config::load_files(std::slice::from_ref(&base), env).unwrap();
    assert_eq!(config.center_version(), None);
    assert_eq!(explained(&config, "hello.greeting").0, "\"file\"");
}
