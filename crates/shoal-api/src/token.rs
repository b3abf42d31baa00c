//! token.rs: how a center's tokens are written. An API token is `shoal_<id>_<secret>`; a join
//! token adds the pin of the center's root key, `shoal_<id>_<secret>_<pin>`, which an agent
//! checks before it sends anything secret.

use std::fmt;

/// A token as typed: its id (public, names it in lists and the audit log), its secret (only
/// its hash is stored) and, for a join token, the pin.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenText {
    pub id: String,
    pub secret: String,
    /// sha256 of the center root's public key (SubjectPublicKeyInfo), lowercase hex.
    pub pin: Option<String>,
}

/// Why a token's text is refused; never carries the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenTextError {
    #[error("a token starts with `shoal_`")]
    Prefix,
    #[error("a token is `shoal_<id>_<secret>` (a join token adds `_<pin>`): it has {0} parts")]
    Parts(usize),
    #[error("the token's {0} is empty or holds other than lowercase letters and digits")]
    Field(&'static str),
}

impl TokenText {
    /// The text without the pin: what is sent to the center.
    pub fn credential(&self) -> String {
        format!("shoal_{}_{}", self.id, self.secret)
    }
}

impl std::str::FromStr for TokenText {
    type Err = TokenTextError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text
            .trim()
            .strip_prefix("shoal_")
            .ok_or(TokenTextError::Prefix)?;
        let parts: Vec<&str> = rest.split('_').collect();
        let field = |value: &str, name: &'static str| {
            let fine = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            fine.then(|| value.to_owned())
                .ok_or(TokenTextError::Field(name))
        };
        match parts.as_slice() {
            [id, secret] => Ok(TokenText {
                id: field(id, "id")?,
                secret: field(secret, "secret")?,
                pin: None,
            }),
            [id, secret, pin] => Ok(TokenText {
                id: field(id, "id")?,
                secret: field(secret, "secret")?,
                pin: Some(field(pin, "pin")?),
            }),
            other => Err(TokenTextError::Parts(other.len() + 1)),
        }
    }
}

impl fmt::Display for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shoal_{}_{}", self.id, self.secret)?;
        if let Some(pin) = &self.pin {
            write!(f, "_{pin}")?;
        }
        Ok(())
    }
}

/// Shows the id only: a secret never reaches a log through `{:?}`.
impl fmt::Debug for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenText")
            .field("id", &self.id)
            .field("secret", &"<hidden>")
            .field("pin", &self.pin)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_read_back_as_written_and_bad_ones_say_why() {
        let join: TokenText = "shoal_ab12_s3cr3t_0f0f".parse().unwrap();
        assert_eq!(join.pin.as_deref(), Some("0f0f"));
        assert_eq!(join.credential(), "shoal_ab12_s3cr3t");
        assert_eq!(join.to_string(), "shoal_ab12_s3cr3t_0f0f");
        let api: TokenText = "shoal_ab12_s3cr3t".parse().unwrap();
        assert_eq!(api.pin, None);
        assert!(!format!("{api:?}").contains("s3cr3t"));
        assert_eq!("bearer".parse::<TokenText>(), Err(TokenTextError::Prefix));
        assert_eq!(
            "shoal_a".parse::<TokenText>(),
            Err(TokenTextError::Parts(2))
        );
        assert_eq!(
            "shoal_A_b".parse::<TokenText>(),
            Err(TokenTextError::Field("id"))
        );
    }
}
