//! Backups of real directories: a round trip with modes and symlinks, pruning, the schedule
//! at explicit times, and restores refused for tampered and hand-made hostile archives (header
//! by header: escaping paths and links, huge extension headers, sparse files, paths outside
//! the manifest's, archives over the limits), which must leave the app's files as they were.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;
use shoal_agent::backup::{self, BackupError};
use shoal_agent::DataDir;
use shoal_pkg::manifest::{Backup, Name};
use shoal_pkg::{Limits, Rule, Sha256};
use tar::{EntryType, Header};

mod common;
use common::Scratch;

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn a_backup_round_trips_files_modes_and_symlinks() {
    let t = Setup::new("round-trip");
    let data = t.app_dir.join("data");
    t.file("data/a/b/c.txt", 0o640, "deep");
    t.file("data/run.sh", 0o750, "#!/bin/sh\n");
    t.file("conf.toml", 0o600, "x = 1\n");
    mkdir(&data.join("private"), 0o700);
    symlink("b/c.txt", &data.join("a/link"));
    symlink("../conf.toml", &data.join("conf"));
    symlink("../../../etc", &data.join("outside"));
    let _socket = std::os::unix::net::UnixListener::bind(data.join("app.sock")).unwrap();
    let before = snapshot(&t.app_dir);

    let config = Backup {
        paths: vec!["data".into(), "./conf.toml".into(), "missing".into()],
        every: DAY,
        keep: 3,
    };
    let created = backup::create(&t.data, &t.app, &config).unwrap();
    assert_eq!(
        created.notes,
        [
            "missing: missing: not in the backup",
            "data/app.sock: a socket: left out",
            "data/outside: a symlink to \"../../../etc\", which points outside the app's \
             directory: left out",
        ]
    );
    let info = &created.backup;
    let file = t.data.backups(&t.app).join(&info.id);
    assert_eq!(info.sha256, Sha256::of_file(&file).unwrap());
    assert_eq!(info.size, std::fs::metadata(&file).unwrap().len());
    assert_eq!(
        std::fs::read_to_string(file.with_extension("gz.sha256")).unwrap(),
        format!("{}  {}\n", info.sha256, info.id)
    );
    assert_eq!(
        backup::list(&t.data, &t.app).unwrap(),
        std::slice::from_ref(info)
    );

    // Damage everything the backup holds, and make what it does not hold.
    std::fs::remove_dir_all(data.join("a")).unwrap();
    t.file("data/new.txt", 0o644, "new");
    t.file("conf.toml", 0o644, "x = 2\n");
    std::fs::set_permissions(data.join("run.sh"), std::fs::Permissions::from_mode(0o600)).unwrap();
    t.file("missing", 0o644, "made later");
    // A directory the restore must be able to replace although it cannot write into it.
    mkdir(&data.join("locked"), 0o500);

    backup::restore(&t.data, &t.app, &config, &info.id, &Limits::default()).unwrap();
    let mut expected = before;
    expected.remove("data/app.sock");
    expected.remove("data/outside");
    expected.insert("missing".into(), Kind::File(0o644, "made later".into()));
    assert_eq!(snapshot(&t.app_dir), expected);
    let mtime = std::fs::metadata(data.join("a/b/c.txt")).unwrap().mtime();
    assert_eq!(mtime, t.mtime);
}

#[test]
fn backups_are_listed_newest_first_and_pruned_to_keep() {
    let t = Setup::new("prune");
    t.file("data/x", 0o644, "x");
    let config = Backup {
        paths: vec!["data".into()],
        every: DAY,
        keep: 2,
    };
    let start = at(2024, 3, 1, 12);
    let mut ids = Vec::new();
    for day in 0..3 {
        let now = start + chrono::TimeDelta::days(day);
        let created = backup::create_if_due(&t.data, &t.app, &config, now)
            .unwrap()
            .expect("due");
        assert_eq!(created.backup.created_at, now);
        ids.push(created.backup.id);
        let expected_pruned: &[&str] = if day == 2 { &[ids[0].as_str()] } else { &[] };
        assert_eq!(created.pruned, expected_pruned);
    }
    assert_eq!(ids[0], "app-20240301T120000Z.tar.gz");
    let listed: Vec<String> = backup::list(&t.data, &t.app)
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(listed, [ids[2].clone(), ids[1].clone()]);
    let dir = t.data.backups(&t.app);
    assert!(!dir.join(&ids[0]).exists());
    assert!(!dir.join(format!("{}.sha256", ids[0])).exists());

    // Two in one second get distinct names, the later listed first.
    let now = start + chrono::TimeDelta::days(10);
    let first = backup::create_if_due(&t.data, &t.app, &config, now)
        .unwrap()
        .unwrap();
    let second = backup::create_if_due(
        &t.data,
        &t.app,
        &Backup {
            every: Duration::ZERO,
            ..config.clone()
        },
        now,
    )
    .unwrap()
    .unwrap();
    assert_eq!(second.backup.id, "app-20240311T120000Z-2.tar.gz");
    let listed = backup::list(&t.data, &t.app).unwrap();
    assert_eq!(listed[0].id, second.backup.id);
    assert_eq!(listed[1].id, first.backup.id);
    // Left by a crash: a temporary file and a checksum without its archive; neither is
    // listed, and the next backup removes them.
    std::fs::write(dir.join(".app-20240312T000000Z.tar.gz.tmp"), "partial").unwrap();
    std::fs::write(dir.join("app-20240101T000000Z.tar.gz.sha256"), "stray").unwrap();
    assert_eq!(backup::list(&t.data, &t.app).unwrap().len(), 2);
    backup::create(&t.data, &t.app, &config).unwrap();
    assert!(!dir.join(".app-20240312T000000Z.tar.gz.tmp").exists());
    assert!(!dir.join("app-20240101T000000Z.tar.gz.sha256").exists());
}

#[test]
fn the_schedule_follows_the_newest_backup() {
    let newest = at(2024, 3, 1, 12);
    let check = |newest: Option<DateTime<Utc>>, now: DateTime<Utc>, due: bool| {
        assert_eq!(backup::is_due(newest, DAY, now), due, "{newest:?} {now}");
    };
    let hours = chrono::TimeDelta::hours;
    check(None, newest, true);
    check(Some(newest), newest + hours(23), false);
    check(Some(newest), newest + hours(24), true);
    check(Some(newest), newest + hours(24 * 30), true);
    // A clock set back waits for the newest backup's time plus `every`: no burst.
    check(Some(newest), newest - hours(5), false);

    // The decision reads the backups on disk, so a restarted agent takes no extra one.
    let t = Setup::new("schedule");
    t.file("data/x", 0o644, "x");
    let config = Backup {
        paths: vec!["data".into()],
        every: DAY,
        keep: 7,
    };
    let due = |now| {
        backup::create_if_due(&t.data, &t.app, &config, now)
            .unwrap()
            .is_some()
    };
    assert!(due(newest));
    assert!(!due(newest + hours(1)));
    assert!(!due(newest + hours(23)));
    assert!(due(newest + hours(24)));
    assert!(!due(newest + hours(25)));
    assert_eq!(backup::list(&t.data, &t.app).unwrap().len(), 2);
}

#[test]
fn a_tampered_backup_is_refused_and_changes_nothing() {
    let t = Setup::new("tampered");
    t.file("data/x", 0o644, "original");
    let config = Backup {
        paths: vec!["data".into()],
        every: DAY,
        keep: 7,
    };
    let id = backup::create(&t.data, &t.app, &config).unwrap().backup.id;
    t.file("data/x", 0o644, "current");
    let before = snapshot(&t.app_dir);

    let file = t.data.backups(&t.app).join(&id);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let refused = t.restore(&["data"], &id).unwrap_err();
    assert!(matches!(refused, BackupError::Checksum { .. }), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("the backup is damaged or was changed"),
        "{refused}"
    );
    assert_eq!(snapshot(&t.app_dir), before);

    for id in [
        "app-20240101T000000Z.tar.gz",
        "../../etc/passwd",
        "other-x.tar.gz",
    ] {
        let refused = t.restore(&["data"], id).unwrap_err();
        assert!(matches!(refused, BackupError::NotFound { .. }), "{refused}");
    }
    assert_eq!(
        t.restore(&["data"], "nope").unwrap_err().to_string(),
        "app has no backup \"nope\": `shoal backups app` lists them"
    );
}

/// The index a backup of `app` holding `paths` starts with.
fn index(app: &str, paths: &[&str]) -> String {
    let paths: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "{{\"app\":{app:?},\"created_at\":\"2024-01-01T00:00:00Z\",\"paths\":[{}]}}",
        paths.join(",")
    )
}

/// A backup of `app`'s `data` so far: its index.
fn backup_of_data() -> Raw {
    Raw::new().file(
        ".shoal-backup.json",
        0o644,
        index("app", &["data"]).as_bytes(),
    )
}

#[test]
fn hostile_archives_are_refused_and_change_nothing() {
    let ok = backup_of_data;
    let cases: Vec<(&str, Raw, &str)> = vec![
        (
            "parent",
            ok().dir("data").file("data/../../evil", 0o644, b"x"),
            "data/../../evil: '..' in the path",
        ),
        (
            "absolute",
            ok().dir("data").file("/tmp/evil", 0o644, b"x"),
            "/tmp/evil: absolute path",
        ),
        (
            "outside the roots",
            ok().dir("data").file("conf.toml", 0o644, b"x"),
            "conf.toml: outside the paths the backup holds (data)",
        ),
        (
            "escaping link",
            ok().dir("data").symlink("data/l", "../../../etc"),
            "data/l: symlink to \"../../../etc\", which points outside the archive's root",
        ),
        (
            "absolute link",
            ok().dir("data").symlink("data/l", "/etc"),
            "data/l: symlink to the absolute path \"/etc\"",
        ),
        (
            "links through links",
            ok().dir("data")
                .symlink("data/a", "..")
                .symlink("data/b", "a/.."),
            "data/b: symlink to \"a/..\", which points outside",
        ),
        (
            "below a link",
            ok().dir("data")
                .symlink("data/l", "x")
                .file("data/l/f", 0o644, b"x"),
            "data/l/f: \"data/l\" is a file or a symlink",
        ),
        (
            "hard link",
            ok().dir("data").file("data/f", 0o644, b"x").entry(
                EntryType::Link,
                "data/h",
                "data/f",
                0,
                b"",
            ),
            "data/h: hard link to \"data/f\"",
        ),
        (
            "escaping hard link",
            ok().dir("data")
                .entry(EntryType::Link, "data/h", "../../../etc/shadow", 0, b""),
            "data/h: hard link to \"../../../etc/shadow\"",
        ),
        (
            "character device",
            ok().dir("data")
                .entry(EntryType::Char, "data/tty", "", 0, b""),
            "data/tty: character device",
        ),
        (
            "block device",
            ok().dir("data")
                .entry(EntryType::Block, "data/sda", "", 0, b""),
            "data/sda: block device",
        ),
        (
            "fifo",
            ok().dir("data")
                .entry(EntryType::Fifo, "data/p", "", 0, b""),
            "data/p: fifo",
        ),
        (
            "twice",
            ok().dir("data")
                .file("data/f", 0o644, b"x")
                .file("data/f", 0o644, b"y"),
            "data/f: appears twice",
        ),
        (
            "through a long name",
            ok().dir("data")
                .long_name(b"data/../../evil")
                .file("data/fine", 0o644, b"x"),
            "data/../../evil: '..' in the path",
        ),
        (
            "through a pax path",
            ok().dir("data")
                .pax(&[("path", "/etc/cron.d/evil")])
                .file("data/fine", 0o644, b"x"),
            "/etc/cron.d/evil: absolute path",
        ),
        (
            "another app",
            Raw::new()
                .file(
                    ".shoal-backup.json",
                    0o644,
                    index("other", &["data"]).as_bytes(),
                )
                .dir("data"),
            ".shoal-backup.json: it holds a backup of \"other\", not of app",
        ),
        (
            "no index",
            Raw::new().dir("data").file("data/f", 0o644, b"x"),
            "data: the first entry of a backup is its index, .shoal-backup.json",
        ),
        (
            "index names a path",
            ok(),
            "its index names \"data\", which it does not hold",
        ),
        (
            "index path",
            Raw::new().file(
                ".shoal-backup.json",
                0o644,
                index("app", &["../x"]).as_bytes(),
            ),
            "leaves the app's directory",
        ),
    ];

    for (what, raw, expected) in cases {
        let t = Setup::new(&format!("hostile-{}", what.replace(' ', "-")));
        let refused = t.refuse(raw, &["data"], &Limits::default());
        assert!(refused.to_string().contains(expected), "{what}: {refused}");
        assert!(!Path::new("/tmp/evil").exists(), "{what}");
    }
}

#[test]
fn huge_extension_headers_are_refused_unread() {
    // Each header claims far more than follows it (nothing does): read, it would fail as
    // truncated or take the memory it claims; refused by its size, it is never read.
    for (what, kind, path, size, limit) in [
        (
            "pax 200 MB",
            EntryType::XHeader,
            "PaxHeader",
            200 << 20,
            64 * 1024,
        ),
        (
            "pax 1 GiB",
            EntryType::XHeader,
            "PaxHeader",
            1 << 30,
            64 * 1024,
        ),
        (
            "long name 1 GiB",
            EntryType::GNULongName,
            "././@LongLink",
            1 << 30,
            1025,
        ),
        (
            "long link 1 GiB",
            EntryType::GNULongLink,
            "././@LongLink",
            1 << 30,
            1025,
        ),
        (
            "global pax 1 GiB",
            EntryType::XGlobalHeader,
            "PaxHeader",
            1 << 30,
            64 * 1024,
        ),
    ] {
        let t = Setup::new(&format!("huge-{}", what.replace(' ', "-")));
        let raw = backup_of_data().dir("data").claim(kind, path, size);
        let refused = t.refuse(raw, &["data"], &Limits::default());
        match &refused {
            BackupError::Rejected { path: p, rule, .. } => assert_eq!(
                (p.as_str(), rule),
                (path, &Rule::ExtensionTooLarge { size, limit }),
                "{what}"
            ),
            other => panic!("{what}: {other}"),
        }
    }
}

#[test]
fn a_long_path_is_refused_and_quoted_short() {
    let t = Setup::new("long-path");
    let long = format!("data/{}", "a".repeat(60_000));
    let raw = backup_of_data()
        .dir("data")
        .pax(&[("path", &long)])
        .file("data/fine", 0o644, b"x");
    let refused = t.refuse(raw, &["data"], &Limits::default());
    let BackupError::Rejected { path, rule, .. } = &refused else {
        panic!("{refused}");
    };
    assert_eq!(rule, &Rule::PathTooLong);
    assert!(path.starts_with("data/aaaa"), "{path}");
    assert!(path.ends_with("... (60005 bytes)"), "{path}");
    assert!(refused.to_string().len() < 500, "{refused}");
}

#[test]
fn sparse_files_are_refused_at_their_header() {
    // GNU sparse: a header marked extended, then blocks of more sparse map; the map is never
    // read, so its length does not matter.
    let t = Setup::new("sparse-gnu");
    let raw = backup_of_data().dir("data").gnu_sparse("data/s", 4_000);
    let refused = t.refuse(raw, &["data"], &Limits::default());
    assert!(
        matches!(&refused, BackupError::Rejected { path, rule: Rule::UnsupportedType('S'), .. } if path == "data/s"),
        "{refused}"
    );

    // pax sparse, in each of its versions' keys.
    let t = Setup::new("sparse-pax");
    let raw = backup_of_data()
        .dir("data")
        .pax(&[("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0")])
        .file("data/s", 0o644, b"x");
    let refused = t.refuse(raw, &["data"], &Limits::default());
    assert!(
        refused
            .to_string()
            .contains("PaxHeader: pax header key \"GNU.sparse.major\" is not supported"),
        "{refused}"
    );
}

#[test]
fn a_link_that_escapes_only_through_a_link_on_disk_is_refused() {
    let t = Setup::new("disk-link");
    // An installed version's link to itself, as a package may hold.
    let version = t.app_dir.join("versions/1.0.0");
    std::fs::create_dir_all(&version).unwrap();
    symlink(".", &version.join("self"));
    let target = "../versions/1.0.0/self/../../../other/secret";
    // Read as written, the target stays in the app's directory; the kernel, through `self`,
    // takes it to the app's parent.
    std::fs::create_dir_all(t.app_dir.join("data")).unwrap();
    symlink(target, &t.app_dir.join("data/probe"));
    let apps = t.app_dir.parent().unwrap();
    std::fs::create_dir_all(apps.join("other")).unwrap();
    std::fs::write(apps.join("other/secret"), "x").unwrap();
    assert_eq!(
        t.app_dir.join("data/probe").canonicalize().unwrap(),
        apps.join("other/secret").canonicalize().unwrap()
    );
    std::fs::remove_file(t.app_dir.join("data/probe")).unwrap();

    let raw = backup_of_data().dir("data").symlink("data/l", target);
    let refused = t.refuse(raw, &["data"], &Limits::default());
    match &refused {
        BackupError::Rejected { path, rule, .. } => assert_eq!(
            (path.as_str(), rule),
            (
                "data/l",
                &Rule::LinkThroughUnknown {
                    target: target.into(),
                    through: "versions".into()
                }
            )
        ),
        other => panic!("{other}"),
    }
    // A link into what the backup does not hold, without climbing back out, is kept.
    let raw = backup_of_data()
        .dir("data")
        .symlink("data/bin", "../current/bin");
    let id = t.plant(raw);
    t.restore(&["data"], &id).unwrap();
    assert_eq!(
        std::fs::read_link(t.app_dir.join("data/bin")).unwrap(),
        Path::new("../current/bin")
    );
}

#[test]
fn a_restore_writes_only_the_manifests_backup_paths() {
    let t = Setup::new("scope");
    t.file(
        "versions/1.0.0/bin/app",
        0o755,
        "#!/bin/sh\necho verified\n",
    );
    // An index that names the versions, with a program in them that was never verified.
    let raw = Raw::new()
        .file(
            ".shoal-backup.json",
            0o644,
            index("app", &["data", "versions"]).as_bytes(),
        )
        .dir("data")
        .dir("versions")
        .file("versions/1.0.0/bin/app", 0o755, b"#!/bin/sh\necho evil\n");
    let refused = t.refuse(raw, &["data"], &Limits::default());
    assert!(
        refused.to_string().contains(
            ".shoal-backup.json: its index names \"versions\", which is not in the [backup] \
             paths of app's manifest (data): a restore writes only those"
        ),
        "{refused}"
    );

    // A manifest that now backs up less than the backup holds: refused too, not cut down.
    let raw = backup_of_data().dir("data").file("data/x", 0o644, b"x");
    let refused = t.refuse(raw, &["data/db"], &Limits::default());
    assert!(
        refused
            .to_string()
            .contains("its index names \"data\", which is not in the [backup] paths"),
        "{refused}"
    );

    // A backup of a path inside the manifest's is restored, and only that path changes.
    t.file("data/keep", 0o644, "kept");
    let raw = Raw::new()
        .file(
            ".shoal-backup.json",
            0o644,
            index("app", &["data/db"]).as_bytes(),
        )
        .file("data/db/rows", 0o600, b"restored");
    let id = t.plant(raw);
    t.restore(&["data"], &id).unwrap();
    assert_eq!(
        std::fs::read_to_string(t.app_dir.join("data/db/rows")).unwrap(),
        "restored"
    );
    assert_eq!(
        std::fs::read_to_string(t.app_dir.join("data/keep")).unwrap(),
        "kept"
    );
}

#[test]
fn directories_listed_twice_are_read_in_one_pass() {
    // Each directory is looked up in a tree by its path, so a name seen again costs what a
    // new one does; the restore ends, with every directory in place.
    const DIRS: usize = 60_000;
    let t = Setup::new("twice");
    let mut raw = backup_of_data().dir("data");
    for _ in 0..2 {
        for i in 0..DIRS {
            raw = raw.dir(&format!("data/d{i:05}"));
        }
    }
    let id = t.plant(raw);
    t.restore(&["data"], &id).unwrap();
    let restored = std::fs::read_dir(t.app_dir.join("data")).unwrap().count();
    assert_eq!(restored, DIRS);
}

#[test]
fn archives_over_the_limits_are_refused_with_the_limit_named() {
    let limits = Limits {
        max_files: 10,
        max_size: 64 * 1024,
    };
    let t = Setup::new("limit-files");
    let many = (0..10).fold(backup_of_data().dir("data"), |raw, i| {
        raw.file(&format!("data/f{i}"), 0o644, b"")
    });
    let refused = t.refuse(many, &["data"], &limits);
    assert!(
        refused.to_string().contains(
            "data/f8: more than 10 files, directories and symlinks (the file-count limit)"
        ),
        "{refused}"
    );

    // A file whose header claims more than the limit is refused before a byte is written...
    let t = Setup::new("limit-claim");
    let raw = backup_of_data()
        .dir("data")
        .claim(EntryType::Regular, "data/big", 1 << 30);
    let refused = t.refuse(raw, &["data"], &limits);
    assert!(
        refused
            .to_string()
            .contains("data/big: files add up to more than 65536 bytes (the size limit)"),
        "{refused}"
    );
    // ...and many files that add up to more, as they are read.
    let t = Setup::new("limit-size");
    let chunk = vec![0u8; 20_000];
    let raw = (0..4).fold(backup_of_data().dir("data"), |raw, i| {
        raw.file(&format!("data/z{i}"), 0o644, &chunk)
    });
    let refused = t.refuse(raw, &["data"], &limits);
    assert!(
        refused
            .to_string()
            .contains("data/z3: files add up to more than 65536 bytes (the size limit)"),
        "{refused}"
    );
}

// ---- helpers ----

struct Setup {
    dir: Scratch,
    data: DataDir,
    app: Name,
    app_dir: PathBuf,
    /// The modification time given to the files written.
    mtime: i64,
}

impl Setup {
    fn new(test: &str) -> Setup {
        let dir = Scratch::new(&format!("backup-{test}"));
        let data = DataDir::create(dir.0.join("data")).unwrap();
        let app = Name::new("app").unwrap();
        let app_dir = data.app(&app);
        std::fs::create_dir_all(&app_dir).unwrap();
        Setup {
            dir,
            data,
            app,
            app_dir,
            mtime: 1_700_000_000,
        }
    }

    /// Writes `rel` below the app's directory with `mode` and a fixed modification time.
    fn file(&self, rel: &str, mode: u32, text: &str) {
        let path = self.app_dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let time = std::time::UNIX_EPOCH + Duration::from_secs(self.mtime as u64);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(time)
            .unwrap();
    }
}

impl Setup {
    /// Puts `raw`, gzipped, in the app's backups with a matching checksum (whoever wrote the
    /// archive rewrote its checksum too); returns its id.
    fn plant(&self, raw: Raw) -> String {
        let dir = self.data.backups(&self.app);
        std::fs::create_dir_all(&dir).unwrap();
        let id = "app-20240101T000000Z.tar.gz";
        let bytes = raw.gz();
        std::fs::write(dir.join(id), &bytes).unwrap();
        let sha = Sha256::of_reader(bytes.as_slice()).unwrap();
        std::fs::write(dir.join(format!("{id}.sha256")), sha.checksum_line(id)).unwrap();
        id.to_owned()
    }

    /// Restores `id` for a manifest whose `[backup] paths` are `paths`, with the default
    /// limits.
    fn restore(&self, paths: &[&str], id: &str) -> Result<(), BackupError> {
        self.restore_within(paths, id, &Limits::default())
    }

    fn restore_within(&self, paths: &[&str], id: &str, limits: &Limits) -> Result<(), BackupError> {
        let config = Backup {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            every: DAY,
            keep: 7,
        };
        backup::restore(&self.data, &self.app, &config, id, limits)
    }

    /// Plants `raw` over an app with files of its own, restores it, and checks that it was
    /// refused with nothing changed, nothing left behind and nothing written outside.
    fn refuse(&self, raw: Raw, paths: &[&str], limits: &Limits) -> BackupError {
        self.file("data/x", 0o644, "mine");
        self.file("conf.toml", 0o644, "mine");
        let before = snapshot(&self.app_dir);
        let outside = snapshot(&self.dir.0);
        let id = self.plant(raw);
        let refused = self.restore_within(paths, &id, limits).unwrap_err();
        assert_eq!(
            snapshot(&self.app_dir),
            before,
            "{refused}: the app's files changed"
        );
        let mut after = snapshot(&self.dir.0);
        after.retain(|path, _| !path.starts_with("data/backups/"));
        let mut outside = outside;
        outside.retain(|path, _| !path.starts_with("data/backups/"));
        assert_eq!(after, outside, "{refused}: written outside the app's files");
        refused
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Directories without write permission, which the scratch directory could not remove.
        make_writable(&self.dir.0);
    }
}

fn mkdir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn symlink(target: &str, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

fn make_writable(dir: &Path) {
    if let Ok(meta) = dir.symlink_metadata() {
        if meta.is_dir() {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                make_writable(&entry.path());
            }
        }
    }
}

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Dir(u32),
    File(u32, String),
    Link(String),
    Other,
}

/// Every path below `dir`, what it is, its permission bits and contents or target; hidden
/// names included, so leftovers show.
fn snapshot(dir: &Path) -> BTreeMap<String, Kind> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Kind>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = path.symlink_metadata().unwrap();
            let mode = meta.mode() & 0o7777;
            let kind = if meta.file_type().is_symlink() {
                Kind::Link(std::fs::read_link(&path).unwrap().display().to_string())
            } else if meta.is_dir() {
                walk(root, &path, out);
                Kind::Dir(mode)
            } else if meta.is_file() {
                Kind::File(
                    mode,
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
                )
            } else {
                Kind::Other
            };
            out.insert(rel, kind);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// An uncompressed tar stream written header by header, paths unchecked.
struct Raw(Vec<u8>);

impl Raw {
    fn new() -> Raw {
        Raw(Vec::new())
    }

    fn entry(mut self, kind: EntryType, path: &str, link: &str, mode: u32, data: &[u8]) -> Raw {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        header.set_cksum();
        self.0.extend_from_slice(header.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }

    fn file(self, path: &str, mode: u32, data: &[u8]) -> Raw {
        self.entry(EntryType::Regular, path, "", mode, data)
    }

    fn dir(self, path: &str) -> Raw {
        self.entry(EntryType::Directory, path, "", 0o755, b"")
    }

    fn symlink(self, path: &str, target: &str) -> Raw {
        self.entry(EntryType::Symlink, path, target, 0o777, b"")
    }

    /// A header of `kind` that claims `size` bytes, with nothing after it.
    fn claim(mut self, kind: EntryType, path: &str, size: u64) -> Raw {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(size);
        header.set_mtime(0);
        header.set_cksum();
        self.0.extend_from_slice(header.as_bytes());
        self
    }

    /// A GNU long-name record naming the next entry.
    fn long_name(self, name: &[u8]) -> Raw {
        let mut data = name.to_vec();
        data.push(0);
        self.entry(EntryType::GNULongName, "././@LongLink", "", 0o644, &data)
    }

    /// A pax extended header for the next entry.
    fn pax(self, records: &[(&str, &str)]) -> Raw {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = format!(" {key}={value}\n");
            // The length counts its own digits.
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        self.entry(EntryType::XHeader, "PaxHeader", "", 0o644, &data)
    }

    /// A GNU sparse file whose header is followed by `blocks` blocks of sparse map, each
    /// saying another follows.
    fn gnu_sparse(mut self, path: &str, blocks: usize) -> Raw {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(EntryType::GNUSparse);
        header.set_mode(0o644);
        header.set_size(0);
        header.set_mtime(0);
        header.as_gnu_mut().unwrap().isextended[0] = 1;
        header.set_cksum();
        self.0.extend_from_slice(header.as_bytes());
        let mut block = [0u8; 512];
        // The extension block's "is extended" flag, after 21 sparse entries of 24 bytes.
        block[504] = 1;
        for _ in 0..blocks {
            self.0.extend_from_slice(&block);
        }
        self
    }

    fn gz(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0, 1024));
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(&self.0).unwrap();
        encoder.finish().unwrap()
    }
}
