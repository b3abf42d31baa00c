//! Lays out first in a binary's code the functions it runs, from a list that
//! `bench/code-layout.sh` writes; the build scripts of `shoal` (the hello example) and
//! `shoal-cli` (the `shoal` binary, for its agent) include it.
//!
//! A process keeps resident every 64 KiB window of its code it has run from (the kernel maps
//! each fault's neighbours too), and the linker spreads the functions one program runs over
//! its whole binary: hello runs 0.9 MB of a 4 MB `.text` and mapped 3.2 MB of it. Placed
//! first, in one output section, they map as about 1 MB. A function missing from the list
//! (new code; another toolchain or dependency version renames most of them) stays where the
//! linker puts it, and nothing else changes. Release builds for Linux only.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Which of the package's targets the link arguments are for.
#[derive(Clone, Copy)]
#[allow(dead_code)] // each build script that includes this module names one
pub enum Targets {
    Bins,
    Examples,
}

impl Targets {
    fn cargo_name(self) -> &'static str {
        match self {
            Targets::Bins => "bins",
            Targets::Examples => "examples",
        }
    }
}

/// Emits the link arguments for this package's `targets` that lay out the functions in
/// `list` (a path relative to the package) first and pack the relative relocations.
pub fn lay_out(list: &str, targets: Targets) {
    let kind = targets.cargo_name();
    println!("cargo::rerun-if-changed={list}");
    if env("PROFILE") != "release" || env("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let list = PathBuf::from(env("CARGO_MANIFEST_DIR")).join(list);
    let names =
        std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("{}: {e}", list.display()));
    let script = PathBuf::from(env("OUT_DIR")).join("layout.ld");
    std::fs::write(&script, linker_script(&names))
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    println!("cargo::rustc-link-arg-{kind}=-Wl,-T,{}", script.display());
    // Relative relocations packed (DT_RELR): the dynamic loader reads all of them at start,
    // and packed they take a few kB where they took hundreds. The binary then needs glibc
    // 2.36 or later to run, and binutils 2.38 or later if the linker is GNU ld.
    println!("cargo::rustc-link-arg-{kind}=-Wl,-z,pack-relative-relocs");
}

/// An output section before `.text` that takes each listed function's section, in the list's
/// order. A function's section is `.text.NAME`, or `.text.unlikely.NAME` when it is cold;
/// either may end in `.llvm.N`, a number that changes from build to build.
fn linker_script(names: &str) -> String {
    let mut script = String::from("SECTIONS {\n  .text.layout : {\n");
    for name in names
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let _ = writeln!(
            script,
            "    *(.text.{name} .text.{name}.llvm.* .text.unlikely.{name} .text.unlikely.{name}.llvm.*)"
        );
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    script
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_default()
}
