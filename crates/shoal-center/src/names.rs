//! names.rs: what a namespace, label or app name given to the center may be written as.

/// Letters, digits, `-`, `_` and `.`, 1 to 63 of them, starting with a letter or digit.
pub fn check(what: &str, name: &str) -> Result<(), String> {
    let fine = (1..=63).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} is not a name: use 1 to 63 letters, digits, '-', '_' or '.'"
        ))
    }
}
