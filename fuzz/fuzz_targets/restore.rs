//! libFuzzer target for the agent's backup reader: the input is a tar stream, gzipped here so
//! that the fuzzer works on tar headers rather than on deflate, restored as a backup of `app`
//! whose manifest backs up `data`. A refused restore changes nothing; an accepted one changes
//! nothing but `data`, and leaves no symlink there that resolves outside the app's directory,
//! even through the link to itself that an installed version holds.

#![no_main]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;
use shoal_agent::{backup, DataDir};
use shoal_pkg::manifest::{Backup, Name};
use shoal_pkg::{Limits, Sha256};

/// Small limits, so that inputs reach them.
const LIMITS: Limits = Limits {
    max_files: 64,
    max_size: 64 * 1024,
};

const ID: &str = "app-20240101T000000Z.tar.gz";

fuzz_target!(|tar: &[u8]| {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(tar).unwrap();
    let bytes = gz.finish().unwrap();

    let root = scratch();
    let data = DataDir::create(root.join("data")).unwrap();
    let app = Name::new("app").unwrap();
    let app_dir = data.app(&app);
    // What a restore must leave alone: the installed version (with a link to itself, which
    // resolves `self/..` one level higher than it reads) and a file beside `data`.
    let version = app_dir.join("versions/1.0.0");
    std::fs::create_dir_all(&version).unwrap();
    std::os::unix::fs::symlink(".", version.join("self")).unwrap();
    std::fs::write(app_dir.join("conf.toml"), "mine").unwrap();
    std::fs::create_dir_all(app_dir.join("data")).unwrap();
    std::fs::write(app_dir.join("data/x"), "mine").unwrap();
    let backups = data.backups(&app);
    std::fs::create_dir_all(&backups).unwrap();
    std::fs::write(backups.join(ID), &bytes).unwrap();
    let sha256 = Sha256::of_reader(bytes.as_slice()).unwrap();
    std::fs::write(backups.join(format!("{ID}.sha256")), sha256.checksum_line(ID)).unwrap();

    let before = snapshot(&app_dir);
    let config = Backup {
        paths: vec!["data".into()],
        every: Duration::from_secs(86_400),
        keep: 7,
    };
    let restored = backup::restore(&data, &app, &config, ID, &LIMITS);
    let mut after = snapshot(&app_dir);
    let mut before = before;
    if restored.is_ok() {
        let in_data = |path: &String| path == "data" || path.starts_with("data/");
        before.retain(|path, _| !in_data(path));
        after.retain(|path, _| !in_data(path));
        check_inside(&app_dir, &app_dir.join("data"));
    }
    assert_eq!(after, before, "{restored:?}");
    make_writable(&root);
    std::fs::remove_dir_all(&root).unwrap();
});

/// A fresh directory for this input.
fn scratch() -> PathBuf {
    let root = std::env::temp_dir().join(format!("shoal-fuzz-restore-{}", std::process::id()));
    if root.exists() {
        make_writable(&root);
        std::fs::remove_dir_all(&root).unwrap();
    }
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// Every path below `dir` and what it is (mode, contents or target), hidden names included,
/// so leftovers show.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = path.symlink_metadata().unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                walk(root, &path, out);
                "dir".to_owned()
            } else {
                format!("{:?}", std::fs::read(&path).unwrap())
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Every symlink below `dir` that resolves, resolves inside `root`.
fn check_inside(root: &Path, dir: &Path) {
    let root = root.canonicalize().unwrap();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_symlink() {
                if let Ok(resolved) = path.canonicalize() {
                    assert!(
                        resolved.starts_with(&root),
                        "{path:?} resolves to {resolved:?}"
                    );
                }
            }
        }
    }
}

/// Restored directories may have any mode; the owner gets them back to remove them.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = dir.symlink_metadata() {
        if meta.is_dir() {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                make_writable(&entry.path());
            }
        }
    }
}
