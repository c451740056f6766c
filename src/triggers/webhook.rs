//! A webhook delivery, judged without I/O: its signature (GitHub's `X-Hub-Signature-256`
//! and Gitea's `X-Gitea-Signature`, HMAC-SHA256 over the raw body; GitLab's
//! `X-Gitlab-Token`, the secret itself), its event and delivery id, and what it says
//! (repository, branch or tag, commit). The HTTP adapter reads the request and answers.

use ring::{digest, hmac};
use serde_json::Value;

use super::config::{Forge, HookEvent, TriggerConfig};
use crate::store::DeliveryKeys;

/// Why a delivery is refused: the status to answer with and one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// What a delivery is about, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// GitHub's `ping` when a hook is made: answered, nothing queued.
    Ping,
    /// An event no trigger can match (an issue comment, a deleted branch, a release edited):
    /// answered, nothing queued.
    Ignored(String),
    Event(Happening),
}

/// A push, tag or release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Happening {
    pub event: HookEvent,
    pub repository: String,
    /// The full ref (`refs/heads/main`, `refs/tags/v1.2`).
    pub git_ref: String,
    /// The branch or tag name, which trigger patterns match.
    pub name: String,
    pub commit: Option<String>,
}

/// The request headers a delivery is judged by, by lowercase name.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`, as GitHub signs.
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex(hmac::sign(&key, body).as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks the delivery's signature or token against `secret` (in constant time).
pub fn verify(
    forge: Forge,
    secret: &[u8],
    headers: &dyn Headers,
    body: &[u8],
) -> Result<(), Refusal> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    match forge {
        Forge::Github | Forge::Gitea => {
            let (header, value) = match forge {
                Forge::Github => (
                    "X-Hub-Signature-256",
                    headers
                        .get("x-hub-signature-256")
                        .map(|v| v.strip_prefix("sha256=").unwrap_or("")),
                ),
                _ => (
                    "X-Gitea-Signature",
                    headers
                        .get("x-gitea-signature")
                        .or_else(|| headers.get("x-forgejo-signature")),
                ),
            };
            let value = value.ok_or_else(|| refuse(401, format!("no {header} header")))?;
            let tag = unhex(value.trim())
                .ok_or_else(|| refuse(401, format!("{header} is not a hex HMAC-SHA256")))?;
            hmac::verify(&key, body, &tag)
                .map_err(|_| refuse(401, format!("{header} does not match the body")))
        }
        Forge::Gitlab => {
            let token = headers
                .get("x-gitlab-token")
                .ok_or_else(|| refuse(401, "no X-Gitlab-Token header"))?;
            // Both sides through one HMAC, compared by ring in constant time: no early exit
            // tells how much of the token was right.
            let expected = hmac::sign(&key, secret);
            hmac::verify(&key, token.as_bytes(), expected.as_ref())
                .map_err(|_| refuse(401, "X-Gitlab-Token is not this hook's secret"))
        }
    }
}

/// The delivery's id, by which a delivery seen before is known.
pub fn delivery_id(forge: Forge, headers: &dyn Headers) -> Result<String, Refusal> {
    let names: &[&str] = match forge {
        Forge::Github => &["x-github-delivery"],
        Forge::Gitea => &["x-gitea-delivery", "x-forgejo-delivery"],
        Forge::Gitlab => &[
            "x-gitlab-event-uuid",
            "x-gitlab-webhook-uuid",
            "idempotency-key",
        ],
    };
    let id = names
        .iter()
        .find_map(|n| headers.get(n))
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| refuse(400, format!("no delivery id ({})", names[0])))?;
    if id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(refuse(400, "the delivery id is not a short word"));
    }
    Ok(id.to_string())
}

/// What a verified delivery is known by ([`delivery_id`], a digest of its signature and
/// body, and GitLab's `Idempotency-Key`): a delivery id is an unsigned header, so a
/// captured delivery replayed with a new one must still be known by what the secret
/// signed; and GitLab may retry one event under a new event UUID with the same key.
pub fn delivery_keys(
    forge: Forge,
    headers: &dyn Headers,
    body: &[u8],
) -> Result<DeliveryKeys, Refusal> {
    let id = delivery_id(forge, headers)?;
    let signature = match forge {
        Forge::Github => headers.get("x-hub-signature-256"),
        Forge::Gitea => headers
            .get("x-gitea-signature")
            .or_else(|| headers.get("x-forgejo-signature")),
        // GitLab signs nothing: its token is the same for every delivery, and the body
        // alone tells one event from another.
        Forge::Gitlab => None,
    };
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(signature.unwrap_or("").trim().as_bytes());
    ctx.update(b"\n");
    ctx.update(body);
    let idempotency_key = match forge {
        Forge::Gitlab => headers
            .get("idempotency-key")
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| {
                if k.len() > 128 || k.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    Err(refuse(400, "the Idempotency-Key is not a short word"))
                } else {
                    Ok(k.to_string())
                }
            })
            .transpose()?,
        _ => None,
    };
    Ok(DeliveryKeys {
        id,
        digest: Some(hex(ctx.finish().as_ref())),
        idempotency_key,
    })
}

/// What a verified delivery says.
pub fn read(forge: Forge, headers: &dyn Headers, body: &[u8]) -> Result<Delivery, Refusal> {
    let header = match forge {
        Forge::Github => "x-github-event",
        Forge::Gitea => "x-gitea-event",
        Forge::Gitlab => "x-gitlab-event",
    };
    let event = headers
        .get(header)
        .or_else(|| {
            (forge == Forge::Gitea)
                .then(|| headers.get("x-forgejo-event"))
                .flatten()
        })
        .ok_or_else(|| refuse(400, format!("no {header} header")))?
        .to_string();
    if forge == Forge::Github && event == "ping" {
        return Ok(Delivery::Ping);
    }
    let kind = match (forge, event.as_str()) {
        (Forge::Github | Forge::Gitea, "push") => Some(HookEvent::Push),
        (Forge::Github | Forge::Gitea, "release") => Some(HookEvent::Release),
        (Forge::Gitlab, "Push Hook") => Some(HookEvent::Push),
        (Forge::Gitlab, "Tag Push Hook") => Some(HookEvent::Tag),
        (Forge::Gitlab, "Release Hook") => Some(HookEvent::Release),
        _ => None,
    };
    let Some(kind) = kind else {
        return Err(refuse(
            400,
            format!(
                "event '{}' is none that triggers can match (push, tag, release)",
                crate::text::one_line(&event, 40)
            ),
        ));
    };
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        refuse(
            400,
            format!(
                "the body is not JSON: {}",
                crate::text::one_line(&e.to_string(), 100)
            ),
        )
    })?;
    let text = |path: &[&str]| {
        let mut v = &json;
        for key in path {
            v = v.get(key)?;
        }
        v.as_str().map(str::to_string)
    };
    let repository = match forge {
        Forge::Gitlab => text(&["project", "path_with_namespace"]),
        _ => text(&["repository", "full_name"]),
    }
    .ok_or_else(|| refuse(400, "the delivery names no repository"))?;
    let happening = |event: HookEvent, git_ref: String, commit: Option<String>| {
        let name = git_ref
            .strip_prefix("refs/heads/")
            .or_else(|| git_ref.strip_prefix("refs/tags/"))
            .unwrap_or(&git_ref)
            .to_string();
        Delivery::Event(Happening {
            event,
            repository: repository.clone(),
            git_ref,
            name,
            commit: commit.filter(|c| c.chars().all(|c| c.is_ascii_hexdigit()) && !c.is_empty()),
        })
    };
    match kind {
        HookEvent::Push | HookEvent::Tag => {
            let git_ref = text(&["ref"]).ok_or_else(|| refuse(400, "the push names no ref"))?;
            let after = text(&["checkout_sha"]).or_else(|| text(&["after"]));
            let deleted = json.get("deleted").and_then(Value::as_bool) == Some(true)
                || after
                    .as_deref()
                    .is_some_and(|a| a.chars().all(|c| c == '0'));
            if deleted {
                return Ok(Delivery::Ignored(format!("{git_ref} was deleted")));
            }
            let event = if git_ref.starts_with("refs/tags/") {
                HookEvent::Tag
            } else {
                HookEvent::Push
            };
            Ok(happening(event, git_ref, after))
        }
        HookEvent::Release => {
            let action = text(&["action"]).unwrap_or_default();
            let published = match forge {
                Forge::Gitlab => action == "create",
                _ => action == "published",
            };
            if !published {
                return Ok(Delivery::Ignored(format!(
                    "release {}",
                    crate::text::one_line(&action, 30)
                )));
            }
            let tag = match forge {
                Forge::Gitlab => text(&["tag"]),
                _ => text(&["release", "tag_name"]),
            }
            .ok_or_else(|| refuse(400, "the release names no tag"))?;
            let commit = match forge {
                Forge::Gitlab => text(&["commit", "id"]),
                _ => None,
            };
            Ok(happening(
                HookEvent::Release,
                format!("refs/tags/{tag}"),
                commit,
            ))
        }
    }
}

/// Whether trigger `t` matches `h`.
pub fn matches(t: &TriggerConfig, h: &Happening) -> bool {
    t.event == h.event
        && t.repository.eq_ignore_ascii_case(&h.repository)
        && crate::chat::roles::glob_match(&t.pattern, &h.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct H(HashMap<&'static str, String>);
    impl Headers for H {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.get(name).map(String::as_str)
        }
    }

    #[test]
    fn a_delivery_is_known_by_its_signed_body_and_gitlab_idempotency_key() {
        let sig = || "sha256=ab".to_string();
        let gh = |id: &str| {
            H(HashMap::from([
                ("x-github-delivery", id.to_string()),
                ("x-hub-signature-256", sig()),
            ]))
        };
        let a = delivery_keys(Forge::Github, &gh("d-1"), b"{}").unwrap();
        let b = delivery_keys(Forge::Github, &gh("d-2"), b"{}").unwrap();
        assert_eq!(a.id, "d-1");
        // A new id, the same signed body: the same digest.
        assert_eq!(a.digest, b.digest);
        assert_ne!(
            a.digest,
            delivery_keys(Forge::Github, &gh("d-1"), b"{ }")
                .unwrap()
                .digest
        );
        assert_eq!(a.idempotency_key, None);
        let gl = |key: &str| {
            H(HashMap::from([
                ("x-gitlab-event-uuid", "u-1".to_string()),
                ("idempotency-key", key.to_string()),
            ]))
        };
        let k = delivery_keys(Forge::Gitlab, &gl("k-1"), b"{}").unwrap();
        assert_eq!(k.id, "u-1");
        assert_eq!(k.idempotency_key.as_deref(), Some("k-1"));
        assert_eq!(
            delivery_keys(Forge::Gitlab, &gl("a b"), b"{}")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn github_documents_this_signature() {
        // docs.github.com, "Validating webhook deliveries": this secret and payload.
        assert_eq!(
            github_signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn signatures_and_tokens_are_checked() {
        let secret = b"s3cret-s3cret";
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = H(HashMap::from([(
            "x-hub-signature-256",
            github_signature(secret, body),
        )]));
        assert!(verify(Forge::Github, secret, &good, body).is_ok());
        assert_eq!(
            verify(Forge::Github, b"other", &good, body)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            verify(Forge::Github, secret, &good, b"{}")
                .unwrap_err()
                .status,
            401
        );
        let gitea = H(HashMap::from([(
            "x-gitea-signature",
            github_signature(secret, body)
                .trim_start_matches("sha256=")
                .to_string(),
        )]));
        assert!(verify(Forge::Gitea, secret, &gitea, body).is_ok());
        let gitlab = H(HashMap::from([(
            "x-gitlab-token",
            "s3cret-s3cret".to_string(),
        )]));
        assert!(verify(Forge::Gitlab, secret, &gitlab, body).is_ok());
        let wrong = H(HashMap::from([(
            "x-gitlab-token",
            "s3cret-s3creT".to_string(),
        )]));
        assert_eq!(
            verify(Forge::Gitlab, secret, &wrong, body)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            verify(Forge::Gitlab, secret, &H(HashMap::new()), body)
                .unwrap_err()
                .status,
            401
        );
    }

    #[test]
    fn deliveries_read_as_events() {
        let push = br#"{"ref":"refs/heads/main","after":"3f2a1c0de","repository":{"full_name":"acme/site"}}"#;
        let h = H(HashMap::from([("x-github-event", "push".to_string())]));
        let Ok(Delivery::Event(e)) = read(Forge::Github, &h, push) else {
            panic!("a push")
        };
        assert_eq!(
            (e.event, e.name.as_str(), e.commit.as_deref()),
            (HookEvent::Push, "main", Some("3f2a1c0de"))
        );
        let tag =
            br#"{"ref":"refs/tags/v1.2","after":"abc","repository":{"full_name":"acme/site"}}"#;
        let Ok(Delivery::Event(e)) = read(Forge::Github, &h, tag) else {
            panic!("a tag")
        };
        assert_eq!((e.event, e.name.as_str()), (HookEvent::Tag, "v1.2"));
        let gl = H(HashMap::from([("x-gitlab-event", "Push Hook".to_string())]));
        let body = br#"{"ref":"refs/heads/dev","checkout_sha":"abcdef","project":{"path_with_namespace":"acme/site"}}"#;
        assert!(matches!(
            read(Forge::Gitlab, &gl, body),
            Ok(Delivery::Event(_))
        ));
        let issue = H(HashMap::from([("x-github-event", "issues".to_string())]));
        assert_eq!(read(Forge::Github, &issue, b"{}").unwrap_err().status, 400);
        let ping = H(HashMap::from([("x-github-event", "ping".to_string())]));
        assert_eq!(read(Forge::Github, &ping, b"{}"), Ok(Delivery::Ping));
    }
}
