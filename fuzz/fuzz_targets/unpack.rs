//! libFuzzer target for package unpacking: the input is a tar stream, gzipped here so that the
//! fuzzer works on tar headers rather than on deflate. `inspect` and `unpack` must agree, an
//! unpack that succeeds leaves every path inside its destination, and one that fails leaves
//! nothing at all.

#![no_main]

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;
use shoal_pkg::{inspect, unpack, Limits, Sha256};

/// Small limits, so that inputs reach them.
const LIMITS: Limits = Limits {
    max_files: 64,
    max_size: 64 * 1024,
};

fuzz_target!(|tar: &[u8]| {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(tar).unwrap();
    let bytes = gz.finish().unwrap();

    let root = scratch();
    let archive = root.join("p.tar.gz");
    let apps = root.join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(&archive, &bytes).unwrap();
    let dest = apps.join("dest");
    let sha256 = Sha256::of_reader(bytes.as_slice()).unwrap();

    let inspected = inspect(&archive, &LIMITS);
    let unpacked = unpack(&archive, &sha256, &dest, &LIMITS);
    assert_eq!(
        inspected.is_ok(),
        unpacked.is_ok(),
        "{inspected:?} / {unpacked:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&apps)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    if unpacked.is_ok() {
        assert_eq!(left, ["dest"]);
        check_inside(&dest);
    } else {
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    std::fs::remove_dir_all(&root).unwrap();
});

/// A fresh directory for this input.
fn scratch() -> PathBuf {
    let root = std::env::temp_dir().join(format!("shoal-fuzz-unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// Every symlink below `dest` that resolves, resolves inside it.
fn check_inside(dest: &Path) {
    let root = dest.canonicalize().unwrap();
    let mut dirs = vec![dest.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
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
