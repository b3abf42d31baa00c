//! Staging a package: checked whole and checksum first, unpacked once into its version
//! directory, never over an installed version, nothing written when refused.

mod common;

use common::Scratch;
use shoal_agent::versions::{stage, StageError};
use shoal_agent::DataDir;
use shoal_pkg::{Limits, Sha256};

#[test]
fn a_package_is_staged_once_and_a_bad_checksum_writes_nothing() {
    let dir = Scratch::new("stage");
    let pkg = dir.0.join("pkg");
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    std::fs::write(
        pkg.join("shoal.toml"),
        "[package]\nname = \"web\"\nversion = \"1.10.0\"\nkind = \"service\"\n\n[run]\ncommand = \"bin/web\"\n",
    )
    .unwrap();
    std::fs::write(pkg.join("bin/web"), "#!/bin/sh\nexec sleep 1000\n").unwrap();
    let built = shoal_pkg::build(&pkg, &dir.0).unwrap();
    let data = DataDir::create(dir.0.join("data")).unwrap();

    let wrong = Sha256([7; 32]);
    let e = stage(&data, &built.archive, &wrong, &Limits::default()).unwrap_err();
    assert!(matches!(e, StageError::Archive(_)), "{e}");
    assert!(e.to_string().contains("sha256"), "{e}");
    assert!(!data.root().join("apps/web").exists());

    let (manifest, version_dir) =
        stage(&data, &built.archive, &built.sha256, &Limits::default()).unwrap();
    assert_eq!(manifest.package.version.to_string(), "1.10.0");
    assert_eq!(version_dir, data.root().join("apps/web/versions/1.10.0"));
    assert!(version_dir.join("bin/web").is_file());
    assert!(data.root().join("apps/web/data").is_dir());

    let e = stage(&data, &built.archive, &built.sha256, &Limits::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "web 1.10.0 is already installed; build it with a new version (shoal.toml package.version)"
    );
}
