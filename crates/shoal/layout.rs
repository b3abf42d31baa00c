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
//!
//! Their jump tables (`.rodata.NAME`) go together the same way, before `.rodata`. The sections
//! start at the symbols `__shoal_text_layout_start` and `__shoal_rodata_layout_start`, and the
//! package is compiled with `cfg(shoal_layout)` where they exist. A list
//! may put first the functions that run once start-up is over, then a line `@mapped-end`; the
//! symbol `__shoal_text_layout_mapped_end` marks it in the code. An empty section after
//! `.rodata` puts `__shoal_rodata_end` where it ends. The agent keeps mapped the code before
//! `__shoal_text_layout_mapped_end` and all the read-only data from
//! `__shoal_rodata_layout_start` to `__shoal_rodata_end` (`shoal_agent::resident`).

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
    println!("cargo::rustc-check-cfg=cfg(shoal_layout)");
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
    println!("cargo::rustc-cfg=shoal_layout");
    // Relative relocations packed (DT_RELR): the dynamic loader reads all of them at start,
    // and packed they take a few kB where they took hundreds. The binary then needs glibc
    // 2.36 or later to run, and binutils 2.38 or later if the linker is GNU ld.
    println!("cargo::rustc-link-arg-{kind}=-Wl,-z,pack-relative-relocs");
}

/// An output section before `.text` that takes each listed function's section, in the list's
/// order, and one before `.rodata` that takes their jump tables. A function's section is
/// `.text.NAME`, or `.text.unlikely.NAME` when it is cold, and its jump tables are in
/// `.rodata.NAME`; each may end in `.llvm.N`, a number that changes from build to build.
/// Symbols mark where each section starts, where the code's kept part ends, and where
/// `.rodata` ends.
fn linker_script(names: &str) -> String {
    let names: Vec<&str> = names
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut script = String::from("SECTIONS {\n");
    // The agent keeps mapped the code up to the list's mark, and all the read-only data.
    section(
        &mut script,
        "text",
        &["text", "text.unlikely"],
        &names,
        Some("__shoal_text_layout_mapped_end"),
    );
    script.push_str("}\nINSERT BEFORE .text;\nSECTIONS {\n");
    section(&mut script, "rodata", &["rodata"], &names, None);
    script.push_str("}\nINSERT BEFORE .rodata;\n");
    // An empty section whose symbol marks where `.rodata` ends.
    script.push_str(
        "SECTIONS {\n  .rodata.end : { __shoal_rodata_end = .; }\n}\nINSERT AFTER .rodata;\n",
    );
    script
}

/// The output section `.KIND.layout`, starting at `__shoal_KIND_layout_start`, that takes the
/// input sections `.PREFIX.NAME` of each name; the symbol `mapped_end`, when given, is where
/// the list's [`MAPPED_END`] line is (the end where there is none).
fn section(
    script: &mut String,
    kind: &str,
    prefixes: &[&str],
    names: &[&str],
    mapped_end: Option<&str>,
) {
    let _ = writeln!(
        script,
        "  .{kind}.layout : {{\n    __shoal_{kind}_layout_start = .;"
    );
    let mapped_end = mapped_end
        .map(|symbol| format!("    {symbol} = .;\n"))
        .unwrap_or_default();
    for name in names {
        if *name == MAPPED_END {
            script.push_str(&mapped_end);
            continue;
        }
        script.push_str("    *(");
        for (i, prefix) in prefixes.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(script, "{sep}.{prefix}.{name} .{prefix}.{name}.llvm.*");
        }
        script.push_str(")\n");
    }
    if !names.contains(&MAPPED_END) {
        script.push_str(&mapped_end);
    }
    script.push_str("  }\n");
}

/// The line of a list after the functions that run once the program's start-up is over:
/// those before it are what the agent keeps mapped.
const MAPPED_END: &str = "@mapped-end";

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_default()
}
