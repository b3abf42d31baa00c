//! `shoal idl python SVR.JSON -o DIR`: code from a pysvrkit JSON IDL, checked whole first so a
//! bad file writes nothing. Today the Python client; other targets join `IdlCommand`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use crate::out::outln;

#[derive(Subcommand, Debug)]
pub enum IdlCommand {
    /// Write DIR/<app>_client.py, a Python client for the IDL's service.
    ///
    /// Either form of the IDL: positional `args`, or a `req_proto` and a `res_proto` (the
    /// method returns the result built as its dataclass).
    ///
    /// The module needs Python 3.11 and `msgpack` from PyPI. Its client reads shoal's endpoint
    /// files and balances as shoal's Rust client does; without a `balance` in the file, the
    /// IDL's rpc_client.mode applies.
    Python {
        /// The IDL file (pysvrkit's svr.json).
        idl: PathBuf,
        /// Where to write the module; created if missing.
        #[arg(short, long, value_name = "DIR")]
        out: PathBuf,
    },
}

pub fn run(cmd: IdlCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        IdlCommand::Python { idl, out } => {
            let path = python(&idl, &out)?;
            outln!("wrote {}", path.display())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes the Python client of the IDL at `idl` into `out`; returns the file's path.
fn python(idl: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let text =
        std::fs::read_to_string(idl).with_context(|| format!("read IDL file {}", idl.display()))?;
    let parsed = shoal_idl::parse(&text, &idl.display().to_string())?;
    // The header names the file alone, so the module does not change with where it was built.
    let source = idl
        .file_name()
        .map_or_else(|| idl.display().to_string(), |f| f.to_string_lossy().into());
    let code = shoal_idl::python::generate(&parsed, &source);
    std::fs::create_dir_all(out)
        .with_context(|| format!("create output directory {}", out.display()))?;
    let path = out.join(shoal_idl::python::file_name(&parsed));
    // Written aside and renamed, so a program importing the module never reads half of it.
    let partial = out.join(format!(
        ".{}.partial",
        shoal_idl::python::file_name(&parsed)
    ));
    std::fs::write(&partial, code).with_context(|| format!("write {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}
