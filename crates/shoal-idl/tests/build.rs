//! `shoal_idl::build`, the build scripts' entry: the Rust it writes into the given directory,
//! and errors that name the file at fault, with nothing written.

use std::path::{Path, PathBuf};

use shoal_idl::BuildError;

/// A directory of its own under the system's temporary directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("shoal-idl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("out")).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn out(&self) -> PathBuf {
        self.0.join("out")
    }

    fn written(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.out())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn writes_the_rust_for_the_idl_into_the_directory_given() {
    let scratch = Scratch::new("build");
    let text = include_str!("echo.json");
    let path = scratch.write("svr.json", text);
    let out = shoal_idl::build(&path, &scratch.out()).unwrap();
    assert_eq!(out, scratch.out().join("svr.rs"));
    let expected = shoal_idl::rust::generate(&shoal_idl::parse(text, &path).unwrap(), &path);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
}

#[test]
fn errors_name_the_file_and_write_nothing() {
    let scratch = Scratch::new("build-errors");
    let bad = scratch.write(
        "svr.json",
        r#"{"app": "echo", "protos": [{"name": "m", "fields": [{"name": "v", "type": "strng"}]}]}"#,
    );
    let error = shoal_idl::build(&bad, &scratch.out()).unwrap_err();
    assert!(matches!(error, BuildError::Idl(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "{bad}:1:75: $.protos[0].fields[0].type: unknown type \"strng\"; expected one of \
             string, bool, int, float, list, tuple, dict, m (a proto must be defined in protos)"
        )
    );

    let missing = scratch.0.join("absent.json");
    let error = shoal_idl::build(missing.to_str().unwrap(), &scratch.out()).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot read the IDL {}: ", missing.display())),
        "{error}"
    );

    let good = scratch.write("svr.json", include_str!("echo.json"));
    let nowhere = Path::new("/nonexistent/out");
    let error = shoal_idl::build(&good, nowhere).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot write the generated Rust to /nonexistent/out/svr.rs: "),
        "{error}"
    );
    assert_eq!(scratch.written(), Vec::<PathBuf>::new());
}
