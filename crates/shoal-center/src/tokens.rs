//! tokens.rs: the center's tokens, `shoal_<id>_<secret>`, stored as a hash of the secret under
//! `tokens/<id>` with a role, an optional namespace, an expiry and (for join tokens) a use count.
//! A use is taken with one compare-and-swap, so racing joins share the count exactly.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use shoal_api::center::{Role, TokenCreated, TokenInfo, TokenRequest};
use shoal_api::token::TokenText;
use shoal_store::{Kv, StoreError};

/// What is kept of a token: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    id: String,
    role: Role,
    namespace: Option<String>,
    /// sha256 of the secret, lowercase hex.
    secret_sha256: String,
    created: DateTime<Utc>,
    expires: Option<DateTime<Utc>>,
    uses_left: Option<u32>,
    revoked: bool,
}

impl Stored {
    fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            role: self.role,
            namespace: self.namespace.clone(),
            created: self.created,
            expires: self.expires,
            uses_left: self.uses_left,
            revoked: self.revoked,
        }
    }

    fn refusal(&self, now: DateTime<Utc>) -> Option<Refused> {
        if self.revoked {
            Some(Refused::Revoked)
        } else if self.expires.is_some_and(|at| at <= now) {
            Some(Refused::Expired)
        } else if self.uses_left == Some(0) {
            Some(Refused::UsedUp)
        } else {
            None
        }
    }
}

/// Who a request's token says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token: String,
    pub role: Role,
    /// The one namespace it may see and act on; every namespace when `None`.
    pub namespace: Option<String>,
}

impl Caller {
    /// The center acting by itself (recovery after a restart).
    pub fn center() -> Caller {
        Caller {
            token: "-".into(),
            role: Role::Admin,
            namespace: None,
        }
    }

    /// Whether this caller may see or act on something in `namespace`.
    pub fn reaches(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|own| own == namespace)
    }
}

/// Why a token is refused. Says nothing of the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the token is not written as shoal_<id>_<secret>")]
    Malformed,
    #[error("no such token: create one with `shoal token create`")]
    Unknown,
    #[error("the token is expired: create a new one with `shoal token create`")]
    Expired,
    #[error("the token is revoked")]
    Revoked,
    #[error("the token has no uses left")]
    UsedUp,
    #[error("a join token only enrolls agents; use a viewer, operator or admin token")]
    JoinOnly,
    #[error("not a join token")]
    NotJoin,
}

/// What a token operation fails with.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{0}")]
    Invalid(String),
    #[error("no token {0}")]
    NotFound(String),
    #[error("a token cannot revoke itself: revoke it with another admin token")]
    Own,
    #[error("the token store: {0}")]
    Store(#[from] StoreError),
    #[error("a stored token is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The tokens, on the center's `Kv`.
#[derive(Debug, Clone)]
pub struct Tokens {
    kv: Arc<dyn Kv>,
    /// Redemptions on this center take turns (in order): compare-and-swaps racing on one
    /// token's record let the unlucky lose again and again, and with hundreds of agents
    /// joining at once the first of them ran out of time. The swap still settles races with
    /// other writers of the store.
    redeeming: Arc<tokio::sync::Mutex<()>>,
}

const PREFIX: &str = "tokens/";

impl Tokens {
    pub fn new(kv: Arc<dyn Kv>) -> Tokens {
        Tokens {
            kv,
            redeeming: Arc::default(),
        }
    }

    /// Creates a token; the answer holds its text, shown this once. A join token's text ends
    /// with `pin`, the center root's key pin.
    pub async fn create(
        &self,
        request: &TokenRequest,
        by: &Caller,
        pin: &str,
    ) -> Result<TokenCreated, TokenError> {
        check_request(request, by)?;
        let id = random_word(12);
        let secret = random_word(32);
        let now = Utc::now();
        let expires = match request.ttl_secs {
            Some(secs) => Some(
                now + chrono::Duration::from_std(Duration::from_secs(secs))
                    .map_err(|_| TokenError::Invalid(format!("ttl of {secs} s is too long")))?,
            ),
            None => None,
        };
        let stored = Stored {
            id: id.clone(),
            role: request.role,
            namespace: request.namespace.clone().or_else(|| by.namespace.clone()),
            secret_sha256: hash(&secret),
            created: now,
            expires,
            uses_left: request.uses,
            revoked: false,
        };
        self.kv
            .create(&key(&id), Bytes::from(serde_json::to_vec(&stored)?))
            .await?;
        let text = TokenText {
            id,
            secret,
            pin: (request.role == Role::Join).then(|| pin.to_owned()),
        };
        Ok(TokenCreated {
            info: stored.info(),
            token: text.to_string(),
        })
    }

    /// Every token `by` may see.
    pub async fn list(&self, by: &Caller) -> Result<Vec<TokenInfo>, TokenError> {
        let mut tokens = Vec::new();
        for entry in self.kv.list(PREFIX).await? {
            let stored: Stored = serde_json::from_slice(&entry.value)?;
            if by.namespace.is_none() || stored.namespace == by.namespace {
                tokens.push(stored.info());
            }
        }
        Ok(tokens)
    }

    /// Revokes a token: refused from now on.
    pub async fn revoke(&self, id: &str, by: &Caller) -> Result<TokenInfo, TokenError> {
        if by.token == id {
            return Err(TokenError::Own);
        }
        self.change(id, |stored| {
            if by.namespace.is_some() && stored.namespace != by.namespace {
                return Err(TokenError::NotFound(id.to_owned()));
            }
            stored.revoked = true;
            Ok(())
        })
        .await
    }

    /// Token `id`, without its secret.
    pub async fn get(&self, id: &str) -> Result<TokenInfo, TokenError> {
        let entry = self
            .kv
            .get(&key(id))
            .await?
            .ok_or_else(|| TokenError::NotFound(id.to_owned()))?;
        Ok(serde_json::from_slice::<Stored>(&entry.value)?.info())
    }

    /// Who a bearer token is; join tokens are refused here.
    pub async fn authenticate(&self, presented: &str) -> Result<Caller, TokenError> {
        let (stored, _) = self.verify(presented).await?;
        if stored.role == Role::Join {
            return Err(Refused::JoinOnly.into());
        }
        Ok(Caller {
            token: stored.id,
            role: stored.role,
            namespace: stored.namespace,
        })
    }

    /// Takes one use of a join token; of racing redemptions of its last use exactly one wins.
    /// Answers the token's id and namespace.
    pub async fn redeem_join(
        &self,
        presented: &str,
    ) -> Result<(String, Option<String>), TokenError> {
        let text = parse(presented)?;
        let (stored, _) = self.verify(&text.credential()).await?;
        if stored.role != Role::Join {
            return Err(Refused::NotJoin.into());
        }
        let now = Utc::now();
        let _turn = self.redeeming.lock().await;
        let taken = self
            .change(&stored.id, |current| {
                if let Some(refused) = current.refusal(now) {
                    return Err(refused.into());
                }
                current.uses_left = current.uses_left.map(|n| n - 1);
                Ok(())
            })
            .await?;
        Ok((taken.id, taken.namespace))
    }

    /// The token whose text is `presented`, if it is valid now.
    async fn verify(&self, presented: &str) -> Result<(Stored, u64), TokenError> {
        let text = parse(presented)?;
        let entry = self.kv.get(&key(&text.id)).await?.ok_or(Refused::Unknown)?;
        let stored: Stored = serde_json::from_slice(&entry.value)?;
        if !same(&hash(&text.secret), &stored.secret_sha256) {
            return Err(Refused::Unknown.into());
        }
        if let Some(refused) = stored.refusal(Utc::now()) {
            return Err(refused.into());
        }
        Ok((stored, entry.revision))
    }

    /// Applies `edit` to token `id` with compare-and-swap, again on a conflict.
    async fn change(
        &self,
        id: &str,
        mut edit: impl FnMut(&mut Stored) -> Result<(), TokenError>,
    ) -> Result<TokenInfo, TokenError> {
        loop {
            let entry = self
                .kv
                .get(&key(id))
                .await?
                .ok_or_else(|| TokenError::NotFound(id.to_owned()))?;
            let mut stored: Stored = serde_json::from_slice(&entry.value)?;
            edit(&mut stored)?;
            let value = Bytes::from(serde_json::to_vec(&stored)?);
            match self.kv.update(&key(id), value, entry.revision).await {
                Ok(_) => return Ok(stored.info()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
    }
}

/// A caller may create tokens up to its own role, within its own namespace.
fn check_request(request: &TokenRequest, by: &Caller) -> Result<(), TokenError> {
    if let (Some(own), Some(asked)) = (&by.namespace, &request.namespace) {
        if own != asked {
            return Err(TokenError::Invalid(format!(
                "a token of namespace {own} cannot create one for namespace {asked}"
            )));
        }
    }
    if let Some(ns) = &request.namespace {
        crate::names::check("namespace", ns).map_err(TokenError::Invalid)?;
    }
    if request.uses == Some(0) {
        return Err(TokenError::Invalid(
            "uses must be at least 1 (leave it out for no limit)".into(),
        ));
    }
    if request.uses.is_some() && request.role != Role::Join {
        return Err(TokenError::Invalid(
            "a use count is for join tokens only".into(),
        ));
    }
    Ok(())
}

/// The id of the token written as `presented`, if it is written as a token.
pub fn id_of(presented: &str) -> Option<String> {
    parse(presented).ok().map(|text| text.id)
}

fn parse(presented: &str) -> Result<TokenText, Refused> {
    presented.parse().map_err(|_| Refused::Malformed)
}

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares in time that does not depend on where the two differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `len` lowercase letters and digits from the system's random source.
pub(crate) fn random_word(len: usize) -> String {
    use ring::rand::SecureRandom as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source");
    // 252 = 7 * 36: bytes at or above it are drawn again, so every symbol is equally likely.
    let mut word = String::with_capacity(len);
    let rng = ring::rand::SystemRandom::new();
    for mut b in bytes {
        while b >= 252 {
            let mut one = [0u8; 1];
            rng.fill(&mut one).expect("the system's random source");
            b = one[0];
        }
        word.push(ALPHABET[(b % 36) as usize] as char);
    }
    word
}
