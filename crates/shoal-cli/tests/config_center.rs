//! `shoal config push|versions|show|diff|promote|rollback|status` against a `shoal center`
//! process on loopback, as an operator types them: what each prints, the gray flags, and the
//! errors that name the file or the flag at fault.

mod common;

use common::fleet::Center;
use common::Scratch;
use shoal_api::center::ConfigStatus;

#[test]
fn the_config_commands_push_list_show_diff_promote_roll_back_and_report() {
    let scratch = Scratch::new("config-center");
    let center = Center::start(&scratch.path().join("center"));
    let write = |name: &str, text: &str| {
        let path = scratch.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let v1 = write("v1.toml", "[shop]\ngreeting = \"hello\"\nport = 7000\n");
    let v2 = write("v2.toml", "[shop]\ngreeting = \"hi\"\nport = 7000\n");

    let out = center.ok(&["config", "push", "shop", &v1, "--message", "first"]);
    assert!(out.starts_with("pushed shop version 1, sha256 "), "{out}");
    assert!(
        out.contains("release (namespace default): version 1 to every instance"),
        "{out}"
    );
    let out = center.ok(&[
        "config", "push", "shop", &v2, "--gray", "--label", "role=web",
    ]);
    assert!(
        out.contains("version 2 to label role=web, version 1 to every instance else"),
        "{out}"
    );

    let out = center.ok(&["config", "versions", "shop"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0][..3], ["VERSION", "RELEASE", "SHA256"]);
    assert_eq!(lines[1][..2], ["2", "gray"]);
    assert_eq!(lines[2][..2], ["1", "stable"]);
    assert_eq!(lines[2].last(), Some(&"first"));

    assert_eq!(
        center.ok(&["config", "show", "shop"]),
        "[shop]\ngreeting = \"hello\"\nport = 7000\n"
    );
    assert_eq!(
        center.ok(&["config", "show", "shop", "--version", "2"]),
        "[shop]\ngreeting = \"hi\"\nport = 7000\n"
    );
    assert_eq!(
        center.ok(&["config", "diff", "shop", "1", "2"]),
        "--- shop v1\n+++ shop v2\n@@ -1,3 +1,3 @@\n [shop]\n-greeting = \"hello\"\n+greeting = \"hi\"\n port = 7000\n"
    );

    let out = center.ok(&["config", "promote", "shop"]);
    assert_eq!(
        out,
        "promoted shop version 2 to every instance (namespace default)\n"
    );
    let out = center.ok(&["config", "rollback", "shop"]);
    assert!(
        out.starts_with("rolled back shop version 3 (the content of version 1), sha256 "),
        "{out}"
    );
    let out = center.ok(&["config", "rollback", "shop", "--to", "2"]);
    assert!(
        out.contains("version 4 (the content of version 2)"),
        "{out}"
    );

    let status: ConfigStatus =
        serde_json::from_str(&center.ok(&["config", "status", "shop", "--json"])).unwrap();
    assert_eq!((status.release.stable, status.release.latest), (Some(4), 4));
    assert!(status.instances.is_empty(), "no agent runs shop");
    let out = center.ok(&["config", "status", "shop"]);
    assert!(out.starts_with("shop: release (namespace default): version 4 to every instance\n"));
    assert!(out.contains("AGENT"), "{out}");

    // Other namespaces are apart.
    let err = center.fails(&["config", "versions", "shop", "--namespace", "blue"]);
    assert!(
        err.contains("no configuration shop in namespace blue"),
        "{err}"
    );

    // Refusals that name what is wrong.
    let empty = write("empty.toml", "");
    let err = center.fails(&["config", "push", "shop", &empty]);
    assert!(err.contains(&format!("{empty} is empty")), "{err}");
    let err = center.fails(&["config", "push", "shop", &v1, "--percent", "5"]);
    assert!(err.contains("--gray"), "{err}");
    let err = center.fails(&["config", "push", "shop", &v1, "--gray"]);
    assert!(err.contains("--ids"), "{err}");
    let err = center.fails(&["config", "push", "shop", &v1, "--gray", "--percent", "101"]);
    assert!(err.contains("101"), "{err}");
    let err = center.fails(&["config", "promote", "shop"]);
    assert!(err.contains("no gray release"), "{err}");
    let err = center.fails(&["config", "show", "shop", "--version", "9"]);
    assert!(err.contains("has no version 9"), "{err}");
    // `explain` is still there, beside them.
    let out = center.ok(&["config", "explain", &v1]);
    assert!(out.contains("shop.greeting"), "{out}");
}
