//! Unpacking hand-made archives: a good one lands with the modes it should have, and each
//! malicious one is refused by the rule it breaks, naming the entry, with nothing left behind.
//! Inspection makes the same checks, so every case is also run through it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{gzip, sha256, tree, Raw, TempDir, MANIFEST};
use shoal_pkg::{inspect, unpack, ArchiveError, Limits, Rule, Unpacked};
use tar::EntryType;

/// A place to unpack into: the archive in `pkg/`, the destination `apps/dest`, and an
/// `outside/` directory beside it that escaping entries would reach.
struct Scene {
    _dir: TempDir,
    archive: PathBuf,
    apps: PathBuf,
    dest: PathBuf,
    outside: PathBuf,
}

impl Scene {
    fn new(bytes: &[u8]) -> Scene {
        let dir = TempDir::new("unpack");
        let pkg = dir.path().join("pkg");
        let apps = dir.path().join("apps");
        let outside = dir.path().join("outside");
        for d in [&pkg, &apps, &outside] {
            std::fs::create_dir(d).unwrap();
        }
        let archive = pkg.join("reports-0.1.0.tar.gz");
        std::fs::write(&archive, bytes).unwrap();
        Scene {
            archive,
            dest: apps.join("dest"),
            apps,
            outside,
            _dir: dir,
        }
    }

    fn unpack(&self, limits: &Limits) -> Result<Unpacked, ArchiveError> {
        let bytes = std::fs::read(&self.archive).unwrap();
        unpack(&self.archive, &sha256(&bytes), &self.dest, limits)
    }

    /// Nothing was written: no destination, no staging directory, nothing outside.
    fn assert_untouched(&self) {
        assert!(!self.dest.exists(), "the destination exists");
        assert_eq!(tree(&self.apps), Vec::<String>::new(), "left in apps/");
        assert_eq!(tree(&self.outside), Vec::<String>::new(), "written outside");
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn a_good_archive_unpacks_with_modes_normalised() {
    let long = format!("lib/{}/deep.txt", "d".repeat(120));
    let raw = Raw::new()
        .dir("bin/")
        .manifest()
        .file_mode("bin/daily", 0o4755, b"#!/bin/sh\necho daily\n")
        .file_mode("bin/helper", 0o2711, b"x")
        .file_mode("notes.txt", 0o666, b"hello")
        .file_mode("secret", 0o600, b"s")
        .file("lib/a/b/c.txt", b"deep")
        .long_name(long.as_bytes())
        .file("ignored-header-name", b"long")
        .pax(&[("path", "pax/named.txt"), ("mtime", "1.5")], false)
        .file("also-ignored", b"pax")
        .pax(&[("comment", "from git archive")], true)
        .symlink("bin/run", "../lib/a/b/c.txt")
        .symlink("current", ".")
        .dir("./");
    let scene = Scene::new(&raw.gz());
    let unpacked = scene.unpack(&Limits::default()).unwrap();

    assert_eq!(unpacked.manifest.package.name.as_str(), "reports");
    let d = &scene.dest;
    assert_eq!(
        std::fs::read_to_string(d.join("shoal.toml")).unwrap(),
        MANIFEST
    );
    // Executable bit kept, setuid/setgid/sticky dropped, others' write dropped.
    assert_eq!(mode(&d.join("bin/daily")), 0o755);
    assert_eq!(mode(&d.join("bin/helper")), 0o755);
    assert_eq!(mode(&d.join("notes.txt")), 0o644);
    assert_eq!(mode(&d.join("secret")), 0o644);
    assert_eq!(mode(&d.join("lib/a/b")), 0o755);
    assert_eq!(mode(d), 0o755);
    assert_eq!(std::fs::read(d.join(&long)).unwrap(), b"long");
    assert_eq!(std::fs::read(d.join("pax/named.txt")).unwrap(), b"pax");
    assert_eq!(std::fs::read(d.join("bin/run")).unwrap(), b"deep");
    assert_eq!(
        std::fs::read_link(d.join("current")).unwrap(),
        Path::new(".")
    );
    assert!(!d.join("ignored-header-name").exists());
    // bin, lib, lib/a, lib/a/b, lib/dd.., pax; 8 files; 2 symlinks.
    assert_eq!(unpacked.files, 6 + 8 + 2);
    assert_eq!(
        unpacked.size,
        (MANIFEST.len() + 21 + 1 + 5 + 1 + 4 + 4 + 3) as u64
    );
    assert_eq!(tree(&scene.apps)[0], "dest");
    assert_eq!(
        tree(&scene.apps)
            .iter()
            .filter(|p| !p.starts_with("dest"))
            .count(),
        0
    );

    let inspection = inspect(&scene.archive, &Limits::default()).unwrap();
    assert_eq!(
        (inspection.files, inspection.size),
        (unpacked.files, unpacked.size)
    );
    assert_eq!(
        inspection.sha256,
        sha256(&std::fs::read(&scene.archive).unwrap())
    );
}

#[test]
fn a_wrong_checksum_writes_nothing() {
    // Hostile content and a wrong digest: refused on the digest, before any entry is read.
    let raw = Raw::new().manifest().file("../escaped", b"x");
    let scene = Scene::new(&raw.gz());
    let wrong = sha256(b"something else");
    let err = unpack(&scene.archive, &wrong, &scene.dest, &Limits::default()).unwrap_err();
    let ArchiveError::Checksum {
        expected, actual, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(*expected, wrong);
    assert_eq!(*actual, sha256(&raw.gz()));
    assert!(
        err.to_string().contains("reports-0.1.0.tar.gz: sha256 is "),
        "{err}"
    );
    scene.assert_untouched();
}

#[test]
fn an_existing_destination_is_left_alone() {
    let scene = Scene::new(&Raw::new().manifest().gz());
    std::fs::create_dir(&scene.dest).unwrap();
    std::fs::write(scene.dest.join("keep"), b"mine").unwrap();
    let err = scene.unpack(&Limits::default()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::DestinationExists { .. }),
        "{err}"
    );
    assert_eq!(tree(&scene.apps), ["dest", "dest/keep"]);
}

/// Runs `raw` through unpack and inspect, expects `rule` at `path` from both, and checks
/// nothing was left behind.
fn check_rejected(raw: Raw, limits: Limits, path: &str, rule: Rule) {
    check_rejected_bytes(&raw.gz(), limits, path, rule);
}

fn check_rejected_bytes(bytes: &[u8], limits: Limits, path: &str, rule: Rule) {
    let scene = Scene::new(bytes);
    let err = scene.unpack(&limits).unwrap_err();
    match &err {
        ArchiveError::Rejected {
            path: p, rule: r, ..
        } => assert_eq!((p.as_str(), r), (path, &rule), "{err}"),
        other => panic!("expected {rule:?} at {path}, got: {other}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("{}: {path}: ", scene.archive.display())),
        "{err}"
    );
    scene.assert_untouched();
    let err = inspect(&scene.archive, &limits).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Rejected { rule: r, .. } if *r == rule),
        "inspect: {err}"
    );
}

#[test]
fn paths_that_leave_the_package_are_refused() {
    let ok = Limits::default();
    check_rejected(
        Raw::new().manifest().file("../evil", b"x"),
        ok,
        "../evil",
        Rule::ParentDir,
    );
    check_rejected(
        Raw::new().manifest().file("a/../../evil", b"x"),
        ok,
        "a/../../evil",
        Rule::ParentDir,
    );
    check_rejected(
        Raw::new().manifest().dir("a/.."),
        ok,
        "a/..",
        Rule::ParentDir,
    );
    check_rejected(
        Raw::new().manifest().file("/tmp/evil", b"x"),
        ok,
        "/tmp/evil",
        Rule::Absolute,
    );
    // The same through the long-name and pax records, which replace the header's name.
    check_rejected(
        Raw::new()
            .manifest()
            .long_name(b"../../evil")
            .file("fine", b"x"),
        ok,
        "../../evil",
        Rule::ParentDir,
    );
    check_rejected(
        Raw::new()
            .manifest()
            .pax(&[("path", "/etc/cron.d/evil")], false)
            .file("fine", b"x"),
        ok,
        "/etc/cron.d/evil",
        Rule::Absolute,
    );
    check_rejected(
        Raw::new()
            .manifest()
            .header(EntryType::Regular, b"bad\xffname", b"", 0o644, 0, b""),
        ok,
        "bad\u{fffd}name",
        Rule::BadBytes,
    );
    check_rejected(
        Raw::new()
            .manifest()
            .header(EntryType::Regular, b"./", b"", 0o644, 0, b""),
        ok,
        "./",
        Rule::EmptyPath,
    );
}

#[test]
fn symlinks_that_point_outside_are_refused() {
    let ok = Limits::default();
    let absolute = |t: &str| Rule::AbsoluteLink { target: t.into() };
    let escaping = |t: &str| Rule::EscapingLink { target: t.into() };
    check_rejected(
        Raw::new().manifest().symlink("etc", "/etc"),
        ok,
        "etc",
        absolute("/etc"),
    );
    check_rejected(
        Raw::new().manifest().symlink("up", ".."),
        ok,
        "up",
        escaping(".."),
    );
    check_rejected(
        Raw::new().manifest().symlink("a/b/up", "../../../outside"),
        ok,
        "a/b/up",
        escaping("../../../outside"),
    );
    // Each target alone stays inside; followed through `here -> .`, `up` is the parent.
    check_rejected(
        Raw::new()
            .manifest()
            .symlink("here", ".")
            .symlink("up", "here/.."),
        ok,
        "up",
        escaping("here/.."),
    );
    // The same with the links in the other order, and through a directory link.
    check_rejected(
        Raw::new()
            .manifest()
            .symlink("x/up", "../d/..")
            .symlink("d", "x/.."),
        ok,
        "x/up",
        escaping("../d/.."),
    );
    check_rejected(
        Raw::new().manifest().symlink("a", "b").symlink("b", "a"),
        ok,
        "a",
        Rule::LinkLoop { target: "b".into() },
    );
    check_rejected(
        Raw::new().manifest().symlink("empty", ""),
        ok,
        "empty",
        Rule::EmptyLink,
    );
    // Through the long-link record too.
    let raw = Raw::new().manifest();
    let mut long_link = raw.clone();
    long_link = long_link.header(
        EntryType::GNULongLink,
        b"././@LongLink",
        b"",
        0o644,
        12,
        b"/etc/shadow\0",
    );
    check_rejected(
        long_link.symlink("shadow", "fine"),
        ok,
        "shadow",
        absolute("/etc/shadow"),
    );
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let ok = Limits::default();
    // An inside link, then a file below it: refused, whatever the link points at.
    check_rejected(
        Raw::new()
            .manifest()
            .dir("sub/")
            .symlink("a", "sub")
            .file("a/x", b"x"),
        ok,
        "a/x",
        Rule::ParentNotDir { parent: "a".into() },
    );
    // A link, then a file of the same name (which opening would follow).
    check_rejected(
        Raw::new()
            .manifest()
            .file("target", b"t")
            .symlink("a", "target")
            .file("a", b"overwrite"),
        ok,
        "a",
        Rule::Duplicate,
    );
    check_rejected(
        Raw::new().manifest().file("a", b"1").file("a", b"2"),
        ok,
        "a",
        Rule::Duplicate,
    );
    check_rejected(
        Raw::new().manifest().file("a", b"1").file("a/b", b"2"),
        ok,
        "a/b",
        Rule::ParentNotDir { parent: "a".into() },
    );
    check_rejected(
        Raw::new().manifest().file("a/b", b"1").symlink("a", "."),
        ok,
        "a",
        Rule::Duplicate,
    );
}

#[test]
fn hard_links_and_special_files_are_refused() {
    let ok = Limits::default();
    check_rejected(
        Raw::new().manifest().hard_link("copy", "shoal.toml"),
        ok,
        "copy",
        Rule::HardLink {
            target: "shoal.toml".into(),
        },
    );
    check_rejected(
        Raw::new().manifest().hard_link("passwd", "/etc/passwd"),
        ok,
        "passwd",
        Rule::HardLink {
            target: "/etc/passwd".into(),
        },
    );
    for (kind, name) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
    ] {
        check_rejected(
            Raw::new().manifest().special(kind, "dev/x"),
            ok,
            "dev/x",
            Rule::Special { kind: name },
        );
    }
    check_rejected(
        Raw::new()
            .manifest()
            .special(EntryType::GNUSparse, "sparse"),
        ok,
        "sparse",
        Rule::UnsupportedType('S'),
    );
    check_rejected(
        Raw::new()
            .manifest()
            .header(EntryType::Directory, b"d/", b"", 0o755, 5, b"12345"),
        ok,
        "d",
        Rule::UnexpectedData { size: 5 },
    );
}

#[test]
fn archives_over_the_limits_are_refused() {
    let limits = Limits {
        max_files: 4,
        max_size: 1000,
    };
    let many = (0..4).fold(Raw::new().manifest(), |raw, i| {
        raw.file(&format!("f{i}"), b"")
    });
    check_rejected(many, limits, "f3", Rule::TooManyFiles { limit: 4 });
    // Directories that entries imply count too.
    check_rejected(
        Raw::new().manifest().file("a/b/c/d", b""),
        limits,
        "a/b/c/d",
        Rule::TooManyFiles { limit: 4 },
    );
    let big = vec![b'x'; 600];
    check_rejected(
        Raw::new().manifest().file("one", &big).file("two", &big),
        limits,
        "two",
        Rule::TooLarge { limit: 1000 },
    );
    // A header that claims more than the archive holds (no end-of-archive blocks after it).
    let short =
        Raw::new()
            .manifest()
            .header(EntryType::Regular, b"short", b"", 0o644, 800, b"only this");
    check_rejected_bytes(&gzip(&short.bytes), limits, "short", Rule::Truncated);
    // An extension record claiming a huge size is refused before it is read.
    check_rejected(
        Raw::new().manifest().header(
            EntryType::GNULongName,
            b"././@LongLink",
            b"",
            0o644,
            1 << 40,
            b"",
        ),
        limits,
        "././@LongLink",
        Rule::ExtensionTooLarge {
            size: 1 << 40,
            limit: 1025,
        },
    );
    // A size taken from a pax record is one readers disagree on.
    check_rejected(
        Raw::new()
            .manifest()
            .pax(&[("size", "10")], false)
            .file("f", b""),
        limits,
        "PaxHeader",
        Rule::UnsupportedPax { key: "size".into() },
    );
    // Extension headers are bounded by the entries they describe, and global ones by count.
    check_rejected(
        Raw::new()
            .manifest()
            .long_name(b"a")
            .long_name(b"b")
            .file("f", b""),
        limits,
        "././@LongLink",
        Rule::RepeatedExtension,
    );
    let globals = (0..17).fold(Raw::new(), |raw, _| raw.pax(&[("comment", "x")], true));
    check_rejected(globals, limits, "PaxHeader", Rule::TooManyGlobalHeaders);
}

#[test]
fn the_manifest_must_be_there_and_valid() {
    let ok = Limits::default();
    let no_manifest = Scene::new(&Raw::new().file("bin/x", b"x").gz());
    let err = no_manifest.unpack(&ok).unwrap_err();
    assert!(matches!(err, ArchiveError::NoManifest { .. }), "{err}");
    no_manifest.assert_untouched();

    let bad = MANIFEST.replace("crontab", "daemon");
    let invalid = Scene::new(&Raw::new().file("shoal.toml", bad.as_bytes()).gz());
    let err = invalid.unpack(&ok).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: shoal.toml: package.kind: \"daemon\" is not one of service, crontab",
            invalid.archive.display()
        )
    );
    invalid.assert_untouched();

    let nested = Scene::new(&Raw::new().file("pkg/shoal.toml", MANIFEST.as_bytes()).gz());
    assert!(matches!(
        nested.unpack(&ok).unwrap_err(),
        ArchiveError::NoManifest { .. }
    ));
    nested.assert_untouched();

    check_rejected(
        Raw::new()
            .file("real.toml", MANIFEST.as_bytes())
            .symlink("shoal.toml", "real.toml"),
        ok,
        "shoal.toml",
        Rule::ManifestNotFile,
    );
    let huge = vec![b'#'; 70_000];
    check_rejected(
        Raw::new().file("shoal.toml", &huge),
        ok,
        "shoal.toml",
        Rule::ManifestTooLarge { size: 70_000 },
    );
}

#[test]
fn input_that_is_not_a_tar_gz_is_refused() {
    for bytes in [
        b"plain text, not gzip".to_vec(),
        gzip(b"gzip, but not a tar header at all, just some words"),
        {
            // A valid archive cut short in its compressed stream.
            let gz = Raw::new().manifest().file("x", &[7; 5000]).gz();
            gz[..gz.len() / 2].to_vec()
        },
    ] {
        let scene = Scene::new(&bytes);
        let err = scene.unpack(&Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::Read { .. }
                    | ArchiveError::Rejected { .. }
                    | ArchiveError::NoManifest { .. }
            ),
            "{err}"
        );
        scene.assert_untouched();
    }
}
