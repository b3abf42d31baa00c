//! An app's versions on disk: each unpacked once into `apps/NAME/versions/VERSION` and never
//! changed, `apps/NAME/current` a symlink to one of them, switched by renaming a new symlink
//! over it (atomic: a reader sees the old target or the new, never none), and old versions
//! pruned to a count while the current and the previous are always kept.

use std::io;
use std::path::{Path, PathBuf};

use shoal_pkg::manifest::{Name, Version};
use shoal_pkg::{ArchiveError, Limits, Sha256};

use crate::DataDir;

/// Unpacks `archive` (whose sha256 must be `expected`) as a new version of its app, after
/// checking it whole; returns the manifest and the version directory. Nothing is written
/// when the archive is refused, and an installed version is never replaced.
///
/// Blocking: call it from `spawn_blocking` in async code.
pub fn stage(
    data: &DataDir,
    archive: &Path,
    expected: &Sha256,
    limits: &Limits,
) -> Result<(shoal_pkg::manifest::Manifest, PathBuf), StageError> {
    let actual = Sha256::of_file(archive).map_err(|e| StageError::Read {
        archive: archive.to_owned(),
        source: e,
    })?;
    if actual != *expected {
        return Err(StageError::Archive(ArchiveError::Checksum {
            archive: archive.to_owned(),
            expected: *expected,
            actual,
        }));
    }
    let inspected = shoal_pkg::inspect(archive, limits).map_err(StageError::Archive)?;
    let manifest = inspected.manifest;
    let name = &manifest.package.name;
    let version = &manifest.package.version;
    let dest = data.version(name, version);
    if dest.symlink_metadata().is_ok() {
        return Err(StageError::AlreadyInstalled {
            name: name.as_str().to_owned(),
            version: version.to_string(),
        });
    }
    std::fs::create_dir_all(data.versions(name)).map_err(|e| StageError::Read {
        archive: data.versions(name),
        source: e,
    })?;
    std::fs::create_dir_all(data.data(name)).map_err(|e| StageError::Read {
        archive: data.data(name),
        source: e,
    })?;
    shoal_pkg::unpack(archive, expected, &dest, limits).map_err(StageError::Archive)?;
    Ok((manifest, dest))
}

/// Why a package could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Archive(ArchiveError),
    #[error("{name} {version} is already installed; build it with a new version (shoal.toml package.version)")]
    AlreadyInstalled { name: String, version: String },
    #[error("{}: {source}", archive.display())]
    Read { archive: PathBuf, source: io::Error },
}

/// The installed versions of `name`, newest first.
pub fn list(data: &DataDir, name: &Name) -> io::Result<Vec<Version>> {
    let mut versions = Vec::new();
    let dir = match std::fs::read_dir(data.versions(name)) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(versions),
        Err(e) => return Err(e),
    };
    for entry in dir {
        let entry = entry?;
        // Hidden entries are unpacks in progress (or left by a crash); not versions.
        if let Some(v) = entry
            .file_name()
            .to_str()
            .filter(|n| !n.starts_with('.'))
            .and_then(|n| n.parse::<Version>().ok())
        {
            versions.push(v);
        }
    }
    versions.sort_by(|a, b| b.cmp(a));
    Ok(versions)
}

/// The version `current` points to, if any.
pub fn current(data: &DataDir, name: &Name) -> io::Result<Option<Version>> {
    match std::fs::read_link(data.current(name)) {
        Ok(target) => Ok(target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Points `current` at `version` atomically: a new symlink renamed over the old one, then the
/// directory synced, so after a crash `current` is the old target or the new one.
pub fn switch(data: &DataDir, name: &Name, version: &Version) -> io::Result<()> {
    let app = data.app(name);
    let target = Path::new("versions").join(version.to_string());
    if !app.join(&target).is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} {version} is not installed"),
        ));
    }
    let temp = app.join(".current.new");
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(&target, &temp)?;
    std::fs::rename(&temp, data.current(name))?;
    std::fs::File::open(&app)?.sync_all()
}

/// Removes the oldest versions beyond `keep`, never `protect`ed ones (the current and the
/// previous); returns the removed versions. Also clears unpacks a crash left behind.
pub fn prune(
    data: &DataDir,
    name: &Name,
    keep: usize,
    protect: &[&Version],
) -> io::Result<Vec<Version>> {
    let dir = data.versions(name);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let mut removed = Vec::new();
    for (i, version) in list(data, name)?.into_iter().enumerate() {
        if i < keep || protect.contains(&&version) {
            continue;
        }
        std::fs::remove_dir_all(dir.join(version.to_string()))?;
        removed.push(version);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    #[test]
    fn switch_list_and_prune() {
        let root =
            std::env::temp_dir().join(format!("shoal-agent-versions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = DataDir::create(&root).unwrap();
        let name = Name::new("web").unwrap();
        for version in ["1.9.0", "1.10.0", "1.2.0", "2.0.0-rc.1"] {
            std::fs::create_dir_all(data.version(&name, &v(version))).unwrap();
        }
        std::fs::create_dir_all(data.versions(&name).join(".web.unpack-1-0")).unwrap();
        assert_eq!(
            list(&data, &name).unwrap(),
            [v("2.0.0-rc.1"), v("1.10.0"), v("1.9.0"), v("1.2.0")]
        );
        assert_eq!(current(&data, &name).unwrap(), None);
        switch(&data, &name, &v("1.9.0")).unwrap();
        assert_eq!(current(&data, &name).unwrap(), Some(v("1.9.0")));
        switch(&data, &name, &v("1.10.0")).unwrap();
        assert_eq!(current(&data, &name).unwrap(), Some(v("1.10.0")));
        assert_eq!(
            std::fs::read_link(data.current(&name)).unwrap(),
            Path::new("versions/1.10.0")
        );
        let e = switch(&data, &name, &v("3.0.0")).unwrap_err();
        assert!(e.to_string().contains("web 3.0.0 is not installed"), "{e}");

        // Keep 1: the newest stays, and so do the protected current and previous.
        let (current_v, previous) = (v("1.10.0"), v("1.9.0"));
        let removed = prune(&data, &name, 1, &[&current_v, &previous]).unwrap();
        assert_eq!(removed, [v("1.2.0")]);
        assert_eq!(
            list(&data, &name).unwrap(),
            [v("2.0.0-rc.1"), v("1.10.0"), v("1.9.0")]
        );
        assert!(!data.versions(&name).join(".web.unpack-1-0").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
