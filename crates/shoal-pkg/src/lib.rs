//! shoal's package format: the `shoal.toml` manifest, deterministic archives, checksums, and
//! unpacking that treats every archive as hostile.
//!
//! A package is `NAME-VERSION.tar.gz` with `shoal.toml` at its root, published beside
//! `NAME-VERSION.tar.gz.sha256` (one `sha256sum` line). [`build`] makes both from a
//! directory, [`inspect`] reads an archive without writing anything, and [`unpack`] is what
//! the agent installs with. All three are blocking; async callers use `spawn_blocking`.
//!
//! # The manifest
//!
//! ```toml
//! [package]
//! name = "calculate"            # required; 1-64 of a-z 0-9 - _, starting with a letter or digit
//! version = "1.3.0"             # required; semver, ordered as versions (1.10.0 > 1.9.0)
//! kind = "service"              # required; "service" or "crontab"
//!
//! [run]                         # required for a service, refused for a crontab
//! command = "bin/calculate"     # required; a program, never a shell line (see below)
//! args = ["--config", "calculate.toml"]   # default []
//! env = { RUST_LOG = "info" }   # default {}; values are strings
//! stop_signal = "TERM"          # TERM (default), INT, QUIT, HUP, USR1, USR2, WINCH, KILL
//! stop_timeout = "10s"          # default 10s; then SIGKILL to the process group
//! restart = "always"            # always (default), on-failure, never
//! start_after = ["cache"]       # default []; package names
//! ports = [3000]                # default []; TCP ports it listens on (see below)
//! shutdown_delay = "2s"         # default 0, at most 10m; endpoints withdrawn, then the stop signal
//!
//! [health]                      # optional; at least one of port, ping, http
//! port = 3000                   # alone: a TCP connection to 127.0.0.1:port
//! ping = true                   # shoal.ping on port (needs port)
//! http = "/healthz"             # GET on port (needs port), or "http://host:port/path"; 2xx, 3xx
//! interval = "10s"              # default 10s
//! timeout = "2s"                # default 2s, at most interval
//! failures = 3                  # default 3; consecutive failures before a restart
//! grace = "30s"                 # default 30s after a start
//!
//! [hooks]                       # optional; run in the version directory, without a shell
//! install = "pip install -r requirements.txt -t vendor"
//! verify = ["bin/check", "--quick"]
//!
//! [logs]
//! max_size = "100MB"            # default 100MB; B, KB, MB, GB, TB or KiB, MiB, GiB, TiB
//! keep = 10                     # default 10
//!
//! [backup]                      # optional
//! paths = ["data"]              # required; relative, below the app's directory
//! every = "1d"                  # default 1d
//! keep = 7                      # default 7
//!
//! [config]                      # optional, services only: a program not built with the SDK
//! path = "app.conf"             # required; where the agent writes the center's configuration,
//!                               # relative, below the app's data directory (apps/NAME/data)
//! reload_signal = "HUP"         # a signal (not KILL) for the main process; without it the
//!                               # program is restarted to read a new file
//!
//! [[cron]]                      # any number; at least one for a crontab
//! name = "report"               # required; unique, same characters as package names
//! schedule = "0 */5 * * * *"    # required; six fields, seconds first (croner's syntax)
//! command = "bin/report"        # required; args = [...] as in [run]
//! overlap = "forbid"            # forbid (default: a tick is skipped while a run goes on), allow
//! timeout = "1h"                # default 1h
//! ```
//!
//! Durations are humantime's (`"90s"`, `"1m 30s"`, `"1d"`). Unknown keys are errors. Every
//! error names the file, the key and what is expected: `shoal.toml: run.restart:
//! "sometimes" is not one of always, on-failure, never`.
//!
//! Commands are argv: `command` is one program, and its arguments go in `args`; a `command`
//! with whitespace is refused. A program with a `/` that does not start with one is inside the
//! version directory and may not use `..`; an absolute path or a bare name (looked up on
//! `PATH`) is used as it is. Hooks may also be written as one string, which is split at
//! whitespace and never given to a shell: a string with shell syntax in it (quotes, `|`, `&`,
//! `;`, `<`, `>`, `$`, `` ` ``, `*`, `?`, `\`) is refused rather than run with a meaning it
//! does not have. A step that needs a shell goes in a script the package ships.
//!
//! `run.ports` lists the TCP ports the program serves (each once, 1 to 65535). They are the
//! service's endpoints for discovery: while the program runs and passes its `[health]`
//! checks (without checks: while it runs), its agent reports `HOST:PORT` for each, under the
//! package's name, and the center's registry hands them to clients that follow the service
//! (`GET /api/v1/services/NAME/endpoints`). Only a service has `[run]`, so only a service
//! declares ports. A stop withdraws the endpoints first; `run.shutdown_delay` is how long it
//! then waits before the stop signal, so clients move away while the instance still answers.
//!
//! # The archive
//!
//! [`build`] writes entries depth first, each directory's children sorted by name, with
//! mtime 0, uid and gid 0, no owner names and mode 0755 (directories, and files with an
//! executable bit) or 0644, GNU long-name records for paths over 100 bytes, in a gzip stream
//! with no name or time: the same tree gives the same bytes with the same shoal binary.
//! Symlinks are stored as symlinks; sockets, fifos and devices are refused. The archive is
//! read back through [`inspect`] before it is kept, so what builds is what the agent accepts.
//!
//! # Unpacking hostile archives
//!
//! [`unpack`] hashes the whole file and compares it with the expected SHA-256 before it
//! writes anything. It then reads the archive as a stream, checking each entry before it is
//! written, into a hidden directory beside the destination, which is renamed into place only
//! when everything has passed; on any error that directory is removed and the destination
//! does not exist. [`inspect`] applies the same checks and writes nothing. An entry is refused,
//! with its path and the [`Rule`] it broke, when:
//!
//! - its path is absolute, has a `..` component, is not UTF-8, holds NUL, or is over
//!   [`MAX_PATH_LEN`] bytes (`.` components and repeated `/` are dropped, `./` is the root);
//! - it is a symlink whose target is absolute, or climbs above the root from the link's
//!   directory, or does so once the links in the archive are followed through each other as
//!   the kernel would (after `a -> .`, the target `a/..` is the root's parent), or resolves
//!   through more than 40 links, or climbs with `..` out of a name the archive does not hold
//!   (what that is on disk is never looked at);
//! - it is a hard link (any: the builder never writes them, so none is needed), a character
//!   or block device, a fifo, a GNU sparse file, or of any other type than file, directory
//!   and symlink;
//! - something would be written below a symlink or a file, or the same path comes twice
//!   (so nothing is ever written through a link);
//! - the files, directories and symlinks created (implied directories included) exceed
//!   [`Limits::max_files`], or the file contents exceed [`Limits::max_size`], counted as they
//!   are read (a header claiming more than the archive holds is an error too);
//! - its extension records are oversized (GNU long names over [`MAX_PATH_LEN`], pax headers
//!   over 64 KiB), repeated for one entry, or set a pax `size` (readers disagree on it); pax
//!   global headers are limited to 16;
//! - `shoal.toml` at the root is missing, is not a regular file, is over 64 KiB, or is not a
//!   valid manifest.
//!
//! The defaults are 100 000 files and 1 GiB ([`Limits::default`]). Reading takes time linear
//! in the entries, and no extension header is read into memory beyond its cap; an error
//! quotes at most the first 200 bytes of a path.
//!
//! The same walk ([`archive::walk`]) reads the agent's backups, with [`archive::Options`]
//! that require no manifest and keep modes, and a [`archive::Sink`] that admits only the
//! backup's paths. Permissions are not taken
//! from the archive: files are 0755 if the archive marks them executable and 0644 otherwise,
//! directories 0755, so setuid, setgid and sticky bits are never set; owners are never
//! changed and modification times are not restored. Files and directories are synced before
//! the rename. The file is hashed a second time while it is unpacked, and a difference (it
//! changed on disk meanwhile) fails the unpack.

pub mod archive;
mod build;
mod digest;
mod inspect;
pub mod manifest;
mod unpack;

pub use archive::{ArchiveError, Limits, Rule, MAX_PATH_LEN};
pub use build::{build, BuildError, Built};
pub use digest::{BadDigest, Hasher, Sha256};
pub use inspect::{inspect, Inspection};
pub use manifest::units::format_size;
pub use manifest::{Manifest, ManifestError, ManifestExt, Version};
pub use unpack::{unpack, Unpacked};
