//! Personal API tokens (SPEC 7, web users): 256 random bits, shown once when made, kept only
//! as their SHA-256. An admin makes and revokes them in chat (`token …`) or with
//! `jarvis token …`; the HTTP adapter turns one back into the person it is for.

use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

use crate::chat::command::TokenAction;
use crate::chat::roles::RolesConfig;
use crate::store::{Store, StoreError};

/// What every token starts with, so that one found in a file or a paste is recognisable.
pub const PREFIX: &str = "jv_";

/// A new token and its hash; the token is to be shown once and forgotten.
pub fn make() -> Result<(String, Vec<u8>), StoreError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Unavailable("the system has no randomness to give".into()))?;
    use base64::Engine as _;
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash(&token);
    Ok((token, hash))
}

/// The SHA-256 of a token, as stored.
pub fn hash(token: &str) -> Vec<u8> {
    digest(&SHA256, token.as_bytes()).as_ref().to_vec()
}

/// Random bytes as URL-safe text (session ids, CSRF tokens, one-time login keys).
pub fn random_text(n: usize) -> Option<String> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new().fill(&mut bytes).ok()?;
    use base64::Engine as _;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    User(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Carries out `token …` for `by` (an identity key): lines for all to see, and lines for the
/// asker alone (the token itself, once).
pub async fn command(
    store: &Store,
    roles: &RolesConfig,
    action: &TokenAction,
    by: &str,
) -> Result<(Vec<String>, Vec<String>), TokenError> {
    match action {
        TokenAction::Create { person } => {
            if !roles.people.contains_key(person) {
                return Err(TokenError::User(format!(
                    "no person '{}' under roles.people; a token is for a person",
                    crate::text::one_line(person, 40)
                )));
            }
            let (token, hash) = make()?;
            let id = store.add_api_token(person, &hash, by).await?;
            Ok((
                vec![format!(
                    "token #{id} for {person} made; it is shown once, to you alone — keep it in a password manager"
                )],
                vec![format!("token #{id} for {person}: {token}")],
            ))
        }
        TokenAction::RevokeId { id } => {
            let n = store.revoke_api_tokens(Some(*id), None, by).await?;
            if n == 0 {
                return Err(TokenError::NotFound(format!(
                    "there is no live token #{id}"
                )));
            }
            Ok((vec![format!("token #{id} revoked")], vec![]))
        }
        TokenAction::RevokePerson { person } => {
            let n = store.revoke_api_tokens(None, Some(person), by).await?;
            if n == 0 {
                return Err(TokenError::NotFound(format!(
                    "{} has no live tokens",
                    crate::text::one_line(person, 40)
                )));
            }
            Ok((
                vec![format!(
                    "revoked {} of {person}",
                    crate::chat::render::count(n as usize, "token")
                )],
                vec![],
            ))
        }
        TokenAction::List => {
            let tokens = store.api_tokens().await?;
            let live: Vec<String> = tokens
                .iter()
                .filter(|t| t.revoked_at.is_none())
                .map(|t| {
                    let used = t
                        .last_used
                        .map(|at| format!(", last used {}", when(at)))
                        .unwrap_or_default();
                    format!(
                        "#{} {} made {} by {}{used}",
                        t.id,
                        t.person,
                        when(t.created_at),
                        t.created_by
                    )
                })
                .collect();
            if live.is_empty() {
                return Ok((vec!["no live tokens".into()], vec![]));
            }
            Ok((live, vec![]))
        }
    }
}

fn when(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let (a, ha) = make().unwrap();
        let (b, hb) = make().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43, "{a}");
        assert_eq!(ha, hash(&a));
        assert_ne!(ha, hb);
        assert_eq!(ha.len(), 32);
    }
}
