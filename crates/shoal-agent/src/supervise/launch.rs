//! What a program's process is started with, in the form `posix_spawn` takes: its argument
//! vector, its environment, its directory, and the files its command may name, looked up as
//! `execvp` looks them up (a bare name on the program's own `PATH`, a file the kernel cannot
//! execute handed to `/bin/sh`).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::Pid;

use super::spawn;

/// The shell a file without an executable format is run with, as `execvp` does (a script
/// without a `#!` line).
const SHELL: &CStr = c"/bin/sh";

/// Where `execvp` looks for a bare name when `PATH` is unset.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// A program's command, arguments, environment and directory, checked and converted once.
#[derive(Debug)]
pub(crate) struct Launch {
    argv: Vec<CString>,
    envp: Vec<CString>,
    dir: CString,
    /// The files the command may be, tried in order: the command itself when it is a path;
    /// for a bare name, each existing file of that name in the directories of the program's
    /// `PATH`.
    candidates: Vec<CString>,
}

impl Launch {
    /// `program` with `args` (`program` is also the argument vector's first element) in
    /// `dir` with exactly `env`. Err when a string holds a NUL byte, naming it.
    pub fn new(
        program: &Path,
        args: &[String],
        env: &BTreeMap<OsString, OsString>,
        dir: &Path,
    ) -> io::Result<Launch> {
        let argv = std::iter::once(program.as_os_str())
            .chain(args.iter().map(OsStr::new))
            .map(|arg| c_string(arg, "an argument"))
            .collect::<io::Result<_>>()?;
        let envp = env
            .iter()
            .map(|(name, value)| {
                let mut pair = name.clone();
                pair.push("=");
                pair.push(value);
                c_string(&pair, "the environment variable")
            })
            .collect::<io::Result<_>>()?;
        let search = env.get(OsStr::new("PATH")).map(OsString::as_os_str);
        let candidates = candidates(program, search, dir)
            .iter()
            .map(|path| c_string(path.as_os_str(), "the program"))
            .collect::<io::Result<_>>()?;
        Ok(Launch {
            argv,
            envp,
            dir: c_string(dir.as_os_str(), "the directory")?,
            candidates,
        })
    }

    /// Starts the first candidate that the kernel executes (see [`spawn::spawn`]); a file the
    /// kernel finds no executable format in is run with `/bin/sh`. The error is `execvp`'s:
    /// permission denied if some candidate was not executable, else the last failure, and no
    /// such file when there was no candidate at all.
    pub fn start(&self, stdio: &spawn::Stdio) -> io::Result<Pid> {
        let mut denied = false;
        let mut last = io::Error::from(Errno::ENOENT);
        for path in &self.candidates {
            let exec = spawn::Exec {
                path,
                argv: &self.argv,
                envp: &self.envp,
                dir: &self.dir,
            };
            let error = match spawn::spawn(&exec, stdio) {
                Ok(pid) => return Ok(pid),
                Err(error) => error,
            };
            match error.raw_os_error().map(Errno::from_raw) {
                Some(Errno::ENOEXEC) => return self.start_with_shell(path, stdio),
                Some(Errno::EACCES) => denied = true,
                Some(
                    Errno::ENOENT
                    | Errno::ENOTDIR
                    | Errno::ESTALE
                    | Errno::ENODEV
                    | Errno::EHOSTUNREACH
                    | Errno::ETIMEDOUT,
                ) => {}
                _ => return Err(error),
            }
            last = error;
        }
        Err(if denied { Errno::EACCES.into() } else { last })
    }

    /// `/bin/sh PATH ARGS...`, as `execvp` runs a file without an executable format.
    fn start_with_shell(&self, path: &CStr, stdio: &spawn::Stdio) -> io::Result<Pid> {
        let argv: Vec<CString> = [SHELL.to_owned(), path.to_owned()]
            .into_iter()
            .chain(self.argv.iter().skip(1).cloned())
            .collect();
        let exec = spawn::Exec {
            path: SHELL,
            argv: &argv,
            envp: &self.envp,
            dir: &self.dir,
        };
        spawn::spawn(&exec, stdio)
    }
}

/// The files `program` may be: itself when it is a path (or empty); else `DIR/program` for
/// each directory of `search` (`PATH`) where that exists, an empty entry meaning `dir`, the
/// directory the program runs in.
fn candidates(program: &Path, search: Option<&OsStr>, dir: &Path) -> Vec<PathBuf> {
    let bytes = program.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.contains(&b'/') {
        return vec![program.to_owned()];
    }
    search
        .unwrap_or(OsStr::new(DEFAULT_PATH))
        .as_bytes()
        .split(|&b| b == b':')
        // An empty entry joins to the bare name, which the exec resolves against `dir`.
        .map(|entry| Path::new(OsStr::from_bytes(entry)).join(program))
        .filter(|file| dir.join(file).exists())
        .collect()
}

fn c_string(s: &OsStr, what: &str) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {:?} holds a NUL byte", s.to_string_lossy()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_looked_up_on_the_given_path_and_paths_are_kept() {
        let root = std::env::temp_dir().join(format!("shoal-launch-{}", std::process::id()));
        let (first, second, dir) = (root.join("a"), root.join("b"), root.join("dir"));
        for d in [&first, &second, &dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        for file in [second.join("tool"), first.join("other"), dir.join("tool")] {
            std::fs::write(file, "").unwrap();
        }
        let search = |s: &Path| -> OsString {
            let mut path = first.clone().into_os_string();
            path.push(":");
            path.push(s);
            path.push(":");
            path
        };
        let check = |program: &str, search: Option<&OsStr>, expected: &[PathBuf]| {
            assert_eq!(
                candidates(Path::new(program), search, &dir),
                expected,
                "{program}"
            );
        };
        check(
            "tool",
            Some(&search(&second)),
            &[second.join("tool"), "tool".into()],
        );
        check("other", Some(&search(&second)), &[first.join("other")]);
        check("absent", Some(&search(&second)), &[]);
        check("./tool", Some(&search(&second)), &["./tool".into()]);
        check("/x/y", None, &["/x/y".into()]);
        check("", None, &["".into()]);
        let default = candidates(Path::new("sh"), None, &dir);
        assert_eq!(default.first(), Some(&PathBuf::from("/bin/sh")));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_nul_byte_is_refused_with_its_place() {
        let env = BTreeMap::from([("A".into(), "x\0y".into())]);
        let e = Launch::new(Path::new("/bin/true"), &[], &env, Path::new("/")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            r#"the environment variable "A=x\0y" holds a NUL byte"#
        );
        let e = Launch::new(
            Path::new("/bin/true"),
            &["a\0".into()],
            &BTreeMap::new(),
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), r#"an argument "a\0" holds a NUL byte"#);
    }
}
