//! Secrets inside string values, whatever their key: the password of a URL and the secret
//! fields of a DSN or query string, cut out before a value is shown.

use super::{is_secret, REDACTED};

/// `text` with its secrets replaced by `"<redacted>"`, or None when it holds none.
pub(super) fn in_text(text: &str) -> Option<String> {
    let urls = url_passwords(text);
    let fields = secret_fields(urls.as_deref().unwrap_or(text));
    fields.or(urls)
}

/// `scheme://user:PASSWORD@host…` → `scheme://user:<redacted>@host…`, for every URL in
/// `text`. The authority ends at the first `/`, `?`, `#` or space (RFC 3986 allows none of
/// them unescaped in the user information); its user information at its last `@`.
fn url_passwords(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = rest.find("://") {
        let start = at + 3;
        let after = &rest[start..];
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        let password = authority.rfind('@').and_then(|userinfo_end| {
            let colon = authority[..userinfo_end].find(':')?;
            Some((colon + 1, userinfo_end))
        });
        match password {
            Some((from, to)) => {
                out.push_str(&rest[..start + from]);
                out.push_str(REDACTED);
                rest = &rest[start + to..];
                changed = true;
            }
            None => {
                out.push_str(&rest[..start]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// `NAME=VALUE` where NAME marks a secret (as a key name does, or `pwd`), at the start or
/// after a space, `;`, `&`, `?` or `,`: the value, up to the next space, `;` or `&` or inside
/// its quotes, is replaced. Spaces around `=` are allowed, as libpq allows them.
fn secret_fields(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    let mut changed = false;
    while i < bytes.len() {
        let at_boundary =
            i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b';' | b'&' | b'?' | b',');
        let name_len = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            .count();
        if !at_boundary || name_len == 0 {
            i += 1;
            continue;
        }
        let name = &text[i..i + name_len];
        let mut j = i + name_len;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if j >= bytes.len()
            || bytes[j] != b'='
            || !(is_secret(name) || name.eq_ignore_ascii_case("pwd"))
        {
            i += name_len;
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        let value_end = match bytes.get(j) {
            Some(&quote @ (b'\'' | b'"')) => bytes[j + 1..]
                .iter()
                .position(|&b| b == quote)
                .map_or(bytes.len(), |p| j + 1 + p + 1),
            _ => bytes[j..]
                .iter()
                .position(|b| matches!(b, b' ' | b'\t' | b';' | b'&'))
                .map_or(bytes.len(), |p| j + p),
        };
        if value_end > j {
            out.push_str(&text[copied..j]);
            out.push_str(REDACTED);
            copied = value_end;
            changed = true;
        }
        i = value_end.max(j);
    }
    out.push_str(&text[copied..]);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_inside_values_are_cut_out() {
        let cases = [
            (
                "postgres://user:secretpw@h/db",
                "postgres://user:<redacted>@h/db",
            ),
            ("redis://:pw@h", "redis://:<redacted>@h"),
            ("amqp://u:p@h", "amqp://u:<redacted>@h"),
            (
                "mongodb://u:p@ss@h1:1,h2:2/db?x=1",
                "mongodb://u:<redacted>@h1:1,h2:2/db?x=1",
            ),
            (
                "a=redis://:x@h b=amqp://u:y@m",
                "a=redis://:<redacted>@h b=amqp://u:<redacted>@m",
            ),
            (
                "host=db user=app password=hunter2 dbname=app",
                "host=db user=app password=<redacted> dbname=app",
            ),
            (
                "host=db password = 'two words' port=5432",
                "host=db password = <redacted> port=5432",
            ),
            (
                "Server=db;Uid=app;Pwd=hunter2;Database=x",
                "Server=db;Uid=app;Pwd=<redacted>;Database=x",
            ),
            (
                "https://h/p?access_token=abc&page=2",
                "https://h/p?access_token=<redacted>&page=2",
            ),
            (
                "https://u:p@h/?client_secret=s",
                "https://u:<redacted>@h/?client_secret=<redacted>",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(in_text(text).as_deref(), Some(expected), "{text}");
        }
        for plain in [
            "postgres://user@h/db",
            "127.0.0.1:7000",
            "unix:/run/app.sock",
            "tcp://*:5556",
            "https://h:8443/path?page=2",
            "Hello, world",
            "mypassword",
            "password=",
            "",
        ] {
            assert_eq!(in_text(plain), None, "{plain}");
        }
    }
}
