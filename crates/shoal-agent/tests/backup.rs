//! Backups of real directories: a round trip with modes and symlinks, pruning, the schedule
//! at explicit times, and restores refused for tampered and hand-made hostile archives, which
//! must leave the app's files as they were.

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
use shoal_pkg::Sha256;
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

    backup::restore(&t.data, &t.app, &info.id).unwrap();
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
    let refused = backup::restore(&t.data, &t.app, &id).unwrap_err();
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
        let refused = backup::restore(&t.data, &t.app, id).unwrap_err();
        assert!(matches!(refused, BackupError::NotFound { .. }), "{refused}");
    }
    assert_eq!(
        backup::restore(&t.data, &t.app, "nope")
            .unwrap_err()
            .to_string(),
        "app has no backup \"nope\": `shoal backups app` lists them"
    );
}

#[test]
fn hostile_archives_are_refused_and_change_nothing() {
    let index = |app: &str, paths: &[&str]| {
        let paths: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
        format!(
            "{{\"app\":{app:?},\"created_at\":\"2024-01-01T00:00:00Z\",\"paths\":[{}]}}",
            paths.join(",")
        )
    };
    let ok = || {
        Raw::new().file(
            ".shoal-backup.json",
            0o644,
            index("app", &["data"]).as_bytes(),
        )
    };
    let cases: Vec<(&str, Raw, &str)> = vec![
        (
            "parent",
            ok().dir("data").file("data/../../evil", 0o644, b"x"),
            "'..' in the path",
        ),
        (
            "absolute",
            ok().dir("data").file("/tmp/evil", 0o644, b"x"),
            "an absolute path",
        ),
        (
            "outside the roots",
            ok().dir("data").file("conf.toml", 0o644, b"x"),
            "outside the paths the backup holds",
        ),
        (
            "escaping link",
            ok().dir("data").symlink("data/l", "../../../etc"),
            "points outside the app's directory",
        ),
        (
            "absolute link",
            ok().dir("data").symlink("data/l", "/etc"),
            "absolute path \"/etc\"",
        ),
        (
            "links through links",
            ok().dir("data")
                .symlink("data/a", "..")
                .symlink("data/b", "a/.."),
            "resolves outside the app's directory",
        ),
        (
            "below a link",
            ok().dir("data")
                .symlink("data/l", "x")
                .file("data/l/f", 0o644, b"x"),
            "\"data/l\" is a file or a symlink",
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
            "a hard link",
        ),
        (
            "device",
            ok().dir("data")
                .entry(EntryType::Char, "data/tty", "", 0, b""),
            "a character device",
        ),
        (
            "fifo",
            ok().dir("data")
                .entry(EntryType::Fifo, "data/p", "", 0, b""),
            "a fifo",
        ),
        (
            "twice",
            ok().dir("data")
                .file("data/f", 0o644, b"x")
                .file("data/f", 0o644, b"y"),
            "appears twice",
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
            "holds a backup of \"other\"",
        ),
        (
            "no index",
            Raw::new().dir("data").file("data/f", 0o644, b"x"),
            "its first entry is \"data\"",
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
        t.file("data/x", 0o644, "mine");
        t.file("conf.toml", 0o644, "mine");
        let before = snapshot(&t.app_dir);
        let dir = t.data.backups(&t.app);
        std::fs::create_dir_all(&dir).unwrap();
        let id = "app-20240101T000000Z.tar.gz";
        // Whoever wrote the archive rewrote its checksum too.
        let bytes = raw.gz();
        std::fs::write(dir.join(id), &bytes).unwrap();
        let sha = Sha256::of_reader(bytes.as_slice()).unwrap();
        std::fs::write(dir.join(format!("{id}.sha256")), sha.checksum_line(id)).unwrap();

        let refused = backup::restore(&t.data, &t.app, id).unwrap_err();
        assert!(refused.to_string().contains(expected), "{what}: {refused}");
        assert_eq!(
            snapshot(&t.app_dir),
            before,
            "{what}: the app's files changed"
        );
        assert!(
            !t.dir.0.join("evil").exists() && !Path::new("/tmp/evil").exists(),
            "{what}"
        );
        let apps = t.app_dir.parent().unwrap();
        assert_eq!(std::fs::read_dir(apps).unwrap().count(), 1, "{what}");
    }
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
                Kind::File(mode, std::fs::read_to_string(&path).unwrap())
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

    fn gz(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0, 1024));
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(&self.0).unwrap();
        encoder.finish().unwrap()
    }
}
