//! The files a configuration version becomes, each written whole or not at all (a temporary
//! file beside it, fsync, rename, fsync of the directory): the center layer of a service built
//! with the SDK (`apps/NAME/center/vVERSION.toml` and the `config.toml` link naming the one
//! to run), and a program's own file where its manifest's `[config] path` says. Blocking: the
//! caller runs these off the async threads.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use shoal_api::config::ConfigVersion;
use shoal_api::program::{center_file_name, center_file_version};

/// The link a service's `SHOAL_CENTER_CONFIG` names, in `dir` (`apps/NAME/center`).
pub(crate) use crate::layout::CENTER_LINK as LINK;

/// Writes `data` as version `version` in `dir` and points the link at it; removes the other
/// versions but `keep`.
pub(crate) fn offer(
    dir: &Path,
    version: ConfigVersion,
    data: &[u8],
    keep: Option<ConfigVersion>,
) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    write_atomic(&dir.join(center_file_name(version)), data)?;
    point(dir, Some(version))?;
    prune(dir, &[Some(version), keep])
}

/// Points the link in `dir` at `version`'s file (`None`: removes it), atomically.
pub(crate) fn point(dir: &Path, version: Option<ConfigVersion>) -> io::Result<()> {
    let link = dir.join(LINK);
    match version {
        Some(version) => {
            let temp = dir.join(format!(".{LINK}.{}", std::process::id()));
            let _ = fs::remove_file(&temp);
            std::os::unix::fs::symlink(center_file_name(version), &temp)?;
            fs::rename(&temp, &link)?;
        }
        None => match fs::remove_file(&link) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        },
    }
    File::open(dir)?.sync_all()
}

/// The version the link in `dir` names, if any.
pub(crate) fn pointed(dir: &Path) -> Option<ConfigVersion> {
    let target = fs::read_link(dir.join(LINK)).ok()?;
    center_file_version(target.file_name()?.to_str()?)
}

/// Removes every version file in `dir` but those in `keep`.
fn prune(dir: &Path, keep: &[Option<ConfigVersion>]) -> io::Result<()> {
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(center_file_version) else {
            continue;
        };
        if !keep.contains(&Some(version)) {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Where `[config] path` puts a program's file: below `data` (`apps/NAME/data`), refusing a
/// path that leaves it lexically or through a symlink already there.
pub(crate) fn program_file(data: &Path, path: &str) -> io::Result<PathBuf> {
    let relative = Path::new(path);
    let lexical = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !lexical || path.is_empty() {
        return Err(io::Error::other(format!(
            "[config] path {path:?} leaves the app's data directory"
        )));
    }
    let target = data.join(relative);
    let parent = target.parent().unwrap_or(data);
    fs::create_dir_all(parent)?;
    let (root, parent_real) = (fs::canonicalize(data)?, fs::canonicalize(parent)?);
    if !parent_real.starts_with(&root) {
        return Err(io::Error::other(format!(
            "[config] path {path:?} leads out of the app's data directory through a symlink"
        )));
    }
    if target
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(io::Error::other(format!(
            "[config] path {path:?} is a symlink; the agent does not write through one"
        )));
    }
    Ok(target)
}

/// Writes `data` to `path` whole: a temporary file beside it, fsynced, renamed over it, then
/// the directory fsynced. A reader sees the old file or the new one.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("config");
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_offered_through_the_link_and_old_ones_go() {
        let dir = std::env::temp_dir().join(format!("shoal-central-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        offer(&dir, 1, b"a = 1\n", None).unwrap();
        offer(&dir, 2, b"a = 2\n", Some(1)).unwrap();
        assert_eq!(pointed(&dir), Some(2));
        assert_eq!(fs::read_to_string(dir.join(LINK)).unwrap(), "a = 2\n");
        offer(&dir, 3, b"a = 3\n", Some(2)).unwrap();
        assert!(!dir.join("v1.toml").exists());
        point(&dir, Some(2)).unwrap();
        assert_eq!(fs::read_to_string(dir.join(LINK)).unwrap(), "a = 2\n");
        point(&dir, None).unwrap();
        assert_eq!(pointed(&dir), None);

        let data = dir.join("data");
        fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink("/tmp", data.join("out")).unwrap();
        assert!(program_file(&data, "out/x.conf").is_err());
        assert!(program_file(&data, "../x.conf").is_err());
        let inside = program_file(&data, "etc/app.conf").unwrap();
        write_atomic(&inside, b"x").unwrap();
        assert_eq!(fs::read(&inside).unwrap(), b"x");
        fs::remove_dir_all(&dir).unwrap();
    }
}
