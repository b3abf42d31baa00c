//! A property test over random archives: paths and symlink targets drawn from an alphabet
//! that includes `..`, `.`, absolute paths and names that collide, entries of every kind, and
//! small limits. Unpacking either succeeds with everything inside the destination, or fails
//! leaving nothing at all; inspection agrees with it every time.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{sha256, tree, Raw, TempDir, MANIFEST};
use proptest::prelude::*;
use shoal_pkg::{inspect, unpack, Limits};
use tar::EntryType;

#[derive(Debug, Clone)]
enum Entry {
    File {
        path: String,
        mode: u32,
        size: usize,
    },
    Dir(String),
    Symlink {
        path: String,
        target: String,
    },
    HardLink {
        path: String,
        target: String,
    },
    Fifo(String),
    Manifest,
}

fn path() -> impl Strategy<Value = String> {
    // Weighted so that about half of the archives are acceptable: each hostile feature is
    // rare, and an archive has several entries.
    let part = prop_oneof![
        90 => prop::sample::select(vec!["a", "b", "c"]),
        2 => Just(".."),
        3 => Just("."),
        1 => Just("shoal.toml"),
    ];
    (
        prop::collection::vec(part, 1..4),
        prop::bool::weighted(0.02),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(parts, absolute, trailing)| {
            let mut path = parts.join("/");
            if absolute {
                path.insert(0, '/');
            }
            if trailing {
                path.push('/');
            }
            path
        })
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => path(),
        // Relative targets that climb, so that chains through other links can escape.
        6 => (1usize..3, path()).prop_map(|(up, rest)| format!("{}{rest}", "../".repeat(up))),
        1 => Just("../outside".to_owned()),
        1 => Just("../../outside".to_owned()),
        1 => Just("/etc".to_owned()),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        24 => (path(), prop::sample::select(vec![0o644u32, 0o755, 0o4755, 0o2777, 0o1666]), 0usize..300)
            .prop_map(|(path, mode, size)| Entry::File { path, mode, size }),
        9 => path().prop_map(Entry::Dir),
        12 => (path(), target()).prop_map(|(path, target)| Entry::Symlink { path, target }),
        1 => (path(), target()).prop_map(|(path, target)| Entry::HardLink { path, target }),
        1 => path().prop_map(Entry::Fifo),
        1 => Just(Entry::Manifest),
    ]
}

fn archive(manifest_first: bool, entries: &[Entry]) -> Vec<u8> {
    let mut raw = Raw::new();
    if manifest_first {
        raw = raw.file("shoal.toml", MANIFEST.as_bytes());
    }
    for entry in entries {
        raw = match entry {
            Entry::File { path, mode, size } => raw.file_mode(path, *mode, &vec![b'x'; *size]),
            Entry::Dir(path) => raw.dir(path),
            Entry::Symlink { path, target } => raw.symlink(path, target),
            Entry::HardLink { path, target } => raw.hard_link(path, target),
            Entry::Fifo(path) => raw.special(EntryType::Fifo, path),
            Entry::Manifest => raw.file("shoal.toml", MANIFEST.as_bytes()),
        };
    }
    raw.gz()
}

/// Everything below `dest` is inside it: no setuid, setgid or sticky bit, nothing writable by
/// others, and every symlink that resolves resolves inside.
fn check_inside(dest: &Path) -> Result<(), TestCaseError> {
    let root = dest.canonicalize().unwrap();
    for relative in tree(dest) {
        let path = dest.join(&relative);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            if let Ok(resolved) = path.canonicalize() {
                prop_assert!(
                    resolved.starts_with(&root),
                    "{relative} -> {:?} resolves to {resolved:?}",
                    std::fs::read_link(&path).unwrap()
                );
            }
        } else {
            prop_assert!(meta.file_type().is_file() || meta.file_type().is_dir());
            prop_assert_eq!(meta.permissions().mode() & 0o7002, 0, "{}", relative);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn unpack_is_all_inside_or_nothing(
        manifest_first in prop::bool::weighted(0.9),
        entries in prop::collection::vec(entry(), 0..10),
        max_files in 4u64..40,
        max_size in 100u64..2000,
    ) {
        let dir = TempDir::new("props");
        let (apps, outside) = (dir.path().join("apps"), dir.path().join("outside"));
        std::fs::create_dir(&apps).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let file = dir.path().join("p.tar.gz");
        let bytes = archive(manifest_first, &entries);
        std::fs::write(&file, &bytes).unwrap();
        let dest = apps.join("dest");
        let limits = Limits { max_files, max_size };

        let unpacked = unpack(&file, &sha256(&bytes), &dest, &limits);
        let inspected = inspect(&file, &limits);
        prop_assert_eq!(
            unpacked.is_ok(),
            inspected.is_ok(),
            "unpack: {:?}; inspect: {:?}",
            unpacked.as_ref().err().map(ToString::to_string),
            inspected.as_ref().err().map(ToString::to_string)
        );
        prop_assert_eq!(tree(&outside), Vec::<String>::new());
        match unpacked {
            Ok(unpacked) => {
                let on_disk = tree(&dest);
                prop_assert_eq!(unpacked.files, on_disk.len() as u64);
                prop_assert!(tree(&apps).iter().all(|p| p.starts_with("dest")));
                check_inside(&dest)?;
            }
            Err(_) => {
                prop_assert!(!dest.exists());
                prop_assert_eq!(tree(&apps), Vec::<String>::new());
            }
        }
    }
}
