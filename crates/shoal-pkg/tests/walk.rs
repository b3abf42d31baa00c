//! The archive walk through its public parameters, as the agent's restore uses it: no
//! manifest, modes kept or reset, a sink that refuses entries by rules of its own; and the
//! bounds that hold whatever the parameters (headers read only under their caps, long paths
//! quoted short, time linear in the entries).

mod common;

use std::io::Read;

use common::Raw;
use shoal_pkg::archive::{
    walk, EntryKind, ManifestRule, Modes, Options, Sink, SinkError, Summary, WalkError,
};
use shoal_pkg::{Limits, Rule};
use tar::EntryType;

/// Records what it is handed; refuses paths that start with `refuse`.
#[derive(Default)]
struct Record {
    refuse: Option<&'static str>,
    seen: Vec<String>,
}

impl Sink for Record {
    fn admit(&mut self, path: &str, _kind: EntryKind, _size: u64) -> Result<(), String> {
        match self.refuse {
            Some(prefix) if path.starts_with(prefix) => Err(format!("not below {prefix}")),
            _ => Ok(()),
        }
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<(), SinkError> {
        self.seen.push(format!("dir {path} {mode:o}"));
        Ok(())
    }

    fn file(
        &mut self,
        path: &str,
        mode: u32,
        mtime: u64,
        data: &mut dyn Read,
    ) -> Result<u64, SinkError> {
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes)?;
        self.seen.push(format!("file {path} {mode:o} {mtime}"));
        Ok(bytes.len() as u64)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), SinkError> {
        self.seen.push(format!("symlink {path} {target}"));
        Ok(())
    }
}

fn options(manifest: ManifestRule, modes: Modes) -> Options {
    Options {
        limits: Limits::default(),
        manifest,
        modes,
    }
}

fn run(raw: &Raw, options: &Options, sink: &mut Record) -> Result<Summary, WalkError> {
    walk(raw.tar().as_slice(), options, sink)
}

fn rejected(result: Result<Summary, WalkError>) -> (String, Rule) {
    match result {
        Err(WalkError::Rejected { path, rule }) => (path, rule),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn modes_are_kept_or_reset_and_the_manifest_required_or_not() {
    let raw = Raw::new()
        .header(EntryType::Directory, b"d", b"", 0o4750, 0, b"")
        .file_mode("d/run", 0o6711, b"x")
        .file_mode("d/conf", 0o640, b"y")
        .symlink("d/l", "conf");

    let mut kept = Record::default();
    let summary = run(
        &raw,
        &options(ManifestRule::NotRead, Modes::Kept),
        &mut kept,
    )
    .unwrap();
    assert!(summary.manifest.is_none());
    assert_eq!((summary.files, summary.size), (4, 2));
    assert_eq!(
        kept.seen,
        [
            "dir d 750",
            "file d/run 711 0",
            "file d/conf 640 0",
            "symlink d/l conf"
        ]
    );

    let mut reset = Record::default();
    run(
        &raw,
        &options(ManifestRule::NotRead, Modes::Reset),
        &mut reset,
    )
    .unwrap();
    assert_eq!(
        reset.seen,
        [
            "dir d 755",
            "file d/run 755 0",
            "file d/conf 644 0",
            "symlink d/l conf"
        ]
    );

    let required = run(
        &raw,
        &options(ManifestRule::Required, Modes::Reset),
        &mut Record::default(),
    );
    assert!(
        matches!(required, Err(WalkError::NoManifest)),
        "{required:?}"
    );
    // Without a manifest to read, `shoal.toml` is a file like another, even a directory.
    let odd = Raw::new().dir("shoal.toml");
    run(
        &odd,
        &options(ManifestRule::NotRead, Modes::Kept),
        &mut Record::default(),
    )
    .unwrap();
    let with = raw.clone().manifest();
    let summary = run(
        &with,
        &options(ManifestRule::Required, Modes::Reset),
        &mut Record::default(),
    )
    .unwrap();
    assert_eq!(summary.manifest.unwrap().package.name.as_str(), "reports");
}

#[test]
fn a_sink_refuses_entries_by_its_own_rules() {
    let raw = Raw::new().file("data/a", b"").file("versions/1/bin", b"");
    let mut sink = Record {
        refuse: Some("versions"),
        ..Record::default()
    };
    let (path, rule) = rejected(run(
        &raw,
        &options(ManifestRule::NotRead, Modes::Kept),
        &mut sink,
    ));
    assert_eq!(
        (path.as_str(), rule),
        ("versions/1/bin", Rule::Refused("not below versions".into()))
    );
    // Refused before anything of it was handed over, its implied directories included.
    assert_eq!(sink.seen, ["dir data 755", "file data/a 644 0"]);
}

#[test]
fn a_link_never_climbs_out_of_what_the_archive_does_not_hold() {
    let opts = options(ManifestRule::NotRead, Modes::Kept);
    // `versions/1.0.0/self` may be `-> .` on disk: climbing out of it could land anywhere.
    let raw = Raw::new().symlink("data/l", "../versions/1.0.0/self/../../../other");
    let (path, rule) = rejected(run(&raw, &opts, &mut Record::default()));
    assert_eq!(path, "data/l");
    assert_eq!(
        rule,
        Rule::LinkThroughUnknown {
            target: "../versions/1.0.0/self/../../../other".into(),
            through: "versions".into(),
        }
    );
    // Into it, or climbing only through what the archive holds, is fine.
    let raw = Raw::new()
        .dir("data/sub")
        .symlink("data/a", "../current/bin")
        .symlink("data/b", "sub/../a");
    run(&raw, &opts, &mut Record::default()).unwrap();
}

#[test]
fn headers_are_read_only_under_their_caps_and_long_paths_quoted_short() {
    let opts = options(ManifestRule::NotRead, Modes::Kept);
    // A pax header claiming 1 GiB with nothing after it: refused by its size, never read.
    let huge = Raw::new().header(EntryType::XHeader, b"PaxHeader", b"", 0o644, 1 << 30, b"");
    let (path, rule) = rejected(walk(huge.bytes.as_slice(), &opts, &mut Record::default()));
    assert_eq!(
        (path.as_str(), rule),
        (
            "PaxHeader",
            Rule::ExtensionTooLarge {
                size: 1 << 30,
                limit: 64 * 1024
            }
        )
    );
    // A path within the pax cap but over the path limit: the error quotes its start.
    let long = "a".repeat(60_000);
    let raw = Raw::new().pax(&[("path", &long)], false).file("x", b"");
    let (path, rule) = rejected(run(&raw, &opts, &mut Record::default()));
    assert_eq!(rule, Rule::PathTooLong);
    assert_eq!(path, format!("{}... (60000 bytes)", "a".repeat(200)));
}

#[test]
fn directories_named_again_cost_one_lookup_each() {
    // 60 000 directories, each listed twice: one pass, each entry a lookup in the tree.
    let mut raw = Raw::new();
    for _ in 0..2 {
        for i in 0..60_000 {
            raw = raw.dir(&format!("d{i:05}"));
        }
    }
    let mut sink = Record::default();
    let summary = run(
        &raw,
        &options(ManifestRule::NotRead, Modes::Kept),
        &mut sink,
    )
    .unwrap();
    assert_eq!(summary.files, 60_000);
    assert_eq!(sink.seen.len(), 60_000);
}
