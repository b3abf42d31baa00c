//! Where a value sits in JSON text: a small scanner that follows a path (object keys and
//! array indexes) through text serde_json has already accepted, to put a line and column on
//! errors found after parsing (an unknown type, a duplicate name).

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// The 1-based line and column of the value at `path` in `text`, or of the deepest value on
/// the path that exists.
pub fn locate(text: &str, path: &[Step]) -> (usize, usize) {
    let bytes = text.as_bytes();
    let mut pos = skip_ws(bytes, 0);
    for step in path {
        match find_child(bytes, pos, step) {
            Some(child) => pos = child,
            None => break,
        }
    }
    line_column(text, pos)
}

/// The 1-based line and column of byte `offset`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The offset of `step`'s value inside the object or array at `pos`.
fn find_child(bytes: &[u8], pos: usize, step: &Step) -> Option<usize> {
    match (bytes.get(pos)?, step) {
        (b'{', Step::Key(key)) => {
            let mut at = skip_ws(bytes, pos + 1);
            while bytes.get(at) == Some(&b'"') {
                let end = string_end(bytes, at)?;
                let name: String = serde_json::from_slice(&bytes[at..end]).ok()?;
                at = skip_ws(bytes, end);
                if bytes.get(at) != Some(&b':') {
                    return None;
                }
                let value = skip_ws(bytes, at + 1);
                if &name == key {
                    return Some(value);
                }
                at = skip_ws(bytes, value_end(bytes, value)?);
                if bytes.get(at) == Some(&b',') {
                    at = skip_ws(bytes, at + 1);
                }
            }
            None
        }
        (b'[', Step::Index(index)) => {
            let mut at = skip_ws(bytes, pos + 1);
            let mut i = 0;
            while at < bytes.len() && bytes[at] != b']' {
                if i == *index {
                    return Some(at);
                }
                at = skip_ws(bytes, value_end(bytes, at)?);
                if bytes.get(at) == Some(&b',') {
                    at = skip_ws(bytes, at + 1);
                }
                i += 1;
            }
            None
        }
        _ => None,
    }
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
        at += 1;
    }
    at
}

/// The offset just past the string starting at `at` (its opening quote).
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The offset just past the value starting at `at`.
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let mut i = at;
            while i < bytes.len()
                && !matches!(bytes[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            Some(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_key_and_index() {
        let text = "{\n  \"a\": [1, {\"b\": \"x\\\"y\"}, [2, 3]],\n  \"c\": {\"d\": true}\n}";
        let key = |k: &str| Step::Key(k.into());
        assert_eq!(locate(text, &[key("a")]), (2, 8));
        assert_eq!(locate(text, &[key("a"), Step::Index(1), key("b")]), (2, 18));
        assert_eq!(
            locate(text, &[key("a"), Step::Index(2), Step::Index(1)]),
            (2, 31)
        );
        assert_eq!(locate(text, &[key("c"), key("d")]), (3, 14));
        // A missing step stops at the deepest value found.
        assert_eq!(locate(text, &[key("c"), key("zz")]), (3, 8));
    }
}
