//! `build` end to end: the archive and its `.sha256` are named and formatted as promised, the
//! same tree gives the same bytes, what is built unpacks to the same tree, and trees the agent
//! would refuse are refused at build time.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use common::{tree, TempDir, MANIFEST};
use shoal_pkg::{build, inspect, unpack, BuildError, Limits, Rule, Sha256};

/// A package tree at `dir`: manifest, an executable, nested data, an empty directory and an
/// inside symlink. `private` gives files the modes a stricter umask would.
fn make_tree(dir: &Path, private: bool) {
    let (exec, plain) = if private {
        (0o700, 0o600)
    } else {
        (0o755, 0o664)
    };
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("share/doc")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::write(dir.join("shoal.toml"), MANIFEST).unwrap();
    std::fs::write(dir.join("bin/daily"), "#!/bin/sh\necho daily\n").unwrap();
    std::fs::set_permissions(dir.join("bin/daily"), PermissionsExt::from_mode(exec)).unwrap();
    std::fs::write(dir.join("share/doc/README"), "docs\n".repeat(100)).unwrap();
    std::fs::set_permissions(
        dir.join("share/doc/README"),
        PermissionsExt::from_mode(plain),
    )
    .unwrap();
    symlink("share/doc/README", dir.join("README")).unwrap();
}

#[test]
fn builds_a_named_archive_and_a_sha256sum_line() {
    let tmp = TempDir::new("build");
    let src = tmp.path().join("src");
    make_tree(&src, false);
    let out = tmp.path().join("out/dist");
    let built = build(&src, &out).unwrap();

    assert_eq!(
        built.archive,
        out.canonicalize().unwrap().join("reports-0.1.0.tar.gz")
    );
    assert_eq!(
        built.checksum_file,
        out.canonicalize()
            .unwrap()
            .join("reports-0.1.0.tar.gz.sha256")
    );
    let bytes = std::fs::read(&built.archive).unwrap();
    assert_eq!(built.sha256, Sha256::of_reader(bytes.as_slice()).unwrap());
    assert_eq!(
        std::fs::read_to_string(&built.checksum_file).unwrap(),
        format!("{}  reports-0.1.0.tar.gz\n", built.sha256)
    );
    // bin, empty, share, share/doc; shoal.toml, bin/daily, README; the link.
    assert_eq!(built.files, 4 + 3 + 1);
    assert_eq!(built.size, (MANIFEST.len() + 21 + 500) as u64);
    assert_eq!(
        tree(&out),
        ["reports-0.1.0.tar.gz", "reports-0.1.0.tar.gz.sha256"]
    );

    let inspection = inspect(&built.archive, &Limits::default()).unwrap();
    assert_eq!(inspection.sha256, built.sha256);
    assert_eq!(inspection.archive_size, bytes.len() as u64);

    // What was built unpacks to the same tree, the executable still executable.
    let dest = tmp.path().join("unpacked");
    unpack(&built.archive, &built.sha256, &dest, &Limits::default()).unwrap();
    assert_eq!(tree(&dest), tree(&src));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dest.join("bin/daily")), 0o755);
    assert_eq!(mode(&dest.join("share/doc/README")), 0o644);
    assert_eq!(
        std::fs::read_to_string(dest.join("README")).unwrap(),
        "docs\n".repeat(100)
    );
}

#[test]
fn the_same_tree_gives_the_same_bytes() {
    let tmp = TempDir::new("build-same");
    // Two copies made separately (other times, other modes beyond the executable bit).
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    make_tree(&one, false);
    make_tree(&two, true);
    let a = build(&one, &tmp.path().join("out-a")).unwrap();
    let b = build(&two, &tmp.path().join("out-b")).unwrap();
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(
        std::fs::read(&a.archive).unwrap(),
        std::fs::read(&b.archive).unwrap()
    );

    // Built into the tree itself, twice: the first build's files are not packed by the
    // second. Built into a directory inside the tree: that directory is not packed.
    let first = build(&one, &one).unwrap();
    let second = build(&one, &one).unwrap();
    assert_eq!((first.sha256, second.sha256), (a.sha256, a.sha256));
    let inside = build(&two, &two.join("dist")).unwrap();
    assert_eq!(inside.sha256, a.sha256);
}

#[test]
fn trees_the_agent_would_refuse_are_not_built() {
    let tmp = TempDir::new("build-bad");
    let out = tmp.path().join("out");

    let escaping = tmp.path().join("escaping");
    make_tree(&escaping, false);
    symlink("../../etc/passwd", escaping.join("bin/passwd")).unwrap();
    match build(&escaping, &out) {
        Err(BuildError::Rejected { path, rule }) => {
            assert_eq!(path, escaping.join("bin/passwd"));
            assert_eq!(
                rule,
                Rule::EscapingLink {
                    target: "../../etc/passwd".into()
                }
            );
        }
        other => panic!("{other:?}"),
    }

    let socket = tmp.path().join("socket");
    make_tree(&socket, false);
    let _listener = std::os::unix::net::UnixListener::bind(socket.join("bin/sock")).unwrap();
    let err = build(&socket, &out).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: socket: packages hold only files, directories and symlinks",
            socket.canonicalize().unwrap().join("bin/sock").display()
        )
    );

    let invalid = tmp.path().join("invalid");
    make_tree(&invalid, false);
    std::fs::write(invalid.join("shoal.toml"), MANIFEST.replace("0.1.0", "1")).unwrap();
    let err = build(&invalid, &out).unwrap_err();
    assert!(matches!(err, BuildError::Manifest(_)), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "{}: package.version: \"1\" is not a semantic version",
            invalid.join("shoal.toml").display()
        )),
        "{err}"
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = build(&empty, &out).unwrap_err();
    assert!(
        err.to_string().contains("shoal.toml: cannot read: "),
        "{err}"
    );

    // Nothing was left in the output directory by any of them.
    assert_eq!(tree(&out), Vec::<String>::new());
}
