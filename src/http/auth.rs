//! Who is asking: a personal API token (`Authorization: Bearer …`), a web session (cookie,
//! with a CSRF token for every form), or nobody; the client's address (behind trusted
//! proxies, from `X-Forwarded-For`); and the roles that follow, as chat grants them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};

use super::State;
use crate::chat::roles::{self, Identity, Role};

pub const SESSION_COOKIE: &str = "jarvis_session";
pub const LOGIN_COOKIE: &str = "jarvis_login";

/// Sessions kept at most; past that the oldest go.
const MAX_SESSIONS: usize = 10_000;

/// Sessions one person (one set of identities) keeps at most; a new login past it ends
/// that person's oldest. Without it one token could open sessions until the overall limit
/// pushed everyone else's out.
pub const MAX_SESSIONS_PER_PERSON: usize = 10;

#[derive(Debug, Clone)]
pub struct Session {
    pub identities: Vec<Identity>,
    pub name: String,
    pub csrf: String,
    expires: Instant,
    /// Whom the session counts against for [`MAX_SESSIONS_PER_PERSON`].
    owner: String,
    /// Its place in the order of logins: the lowest is the oldest, even within one tick.
    opened: u64,
}

pub struct Sessions {
    ttl: Duration,
    logins: std::sync::atomic::AtomicU64,
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            logins: std::sync::atomic::AtomicU64::new(0),
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session for `identities`; returns its id (the cookie's value).
    pub fn open(&self, identities: Vec<Identity>, name: String) -> Option<String> {
        let id = crate::chat::tokens::random_text(32)?;
        let csrf = crate::chat::tokens::random_text(24)?;
        let mut map = self.map.lock().ok()?;
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        let owner = owner_of(&identities);
        let opened = (self.logins).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut own: Vec<(u64, String)> = (map.iter())
            .filter(|(_, s)| s.owner == owner)
            .map(|(k, s)| (s.opened, k.clone()))
            .collect();
        if own.len() >= MAX_SESSIONS_PER_PERSON {
            own.sort();
            for (_, k) in &own[..=own.len() - MAX_SESSIONS_PER_PERSON] {
                map.remove(k);
            }
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                identities,
                name,
                csrf,
                expires: now + self.ttl,
                owner,
                opened,
            },
        );
        Some(id)
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let map = self.map.lock().ok()?;
        map.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn close(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(id);
        }
    }
}

/// One key for whoever holds `identities`, the same at every login.
fn owner_of(identities: &[Identity]) -> String {
    let mut keys: Vec<String> = identities.iter().map(Identity::key).collect();
    keys.sort();
    keys.join(" ")
}

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Via {
    Token,
    Session { id: String, csrf: String },
    Anonymous,
}

/// Whoever sent a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identities: Vec<Identity>,
    /// The person or user, for pages and the bot's nick.
    pub name: String,
    pub via: Via,
    /// The client's address, as far as it can be believed.
    pub client: String,
}

impl Caller {
    pub fn anonymous(&self) -> bool {
        matches!(self.via, Via::Anonymous)
    }

    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf, .. } => csrf,
            _ => "",
        }
    }
}

/// A request turned away: the status and one sentence.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// The caller of a request: by token first, then by session cookie, else anonymous. A token
/// that is not known (or revoked) is refused outright rather than taken as anonymous.
pub async fn caller(
    state: &State,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Caller, Refusal> {
    let client = client_address(state, headers, peer).to_string();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 200)
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "the Authorization header must be 'Bearer TOKEN'",
                )
            })?;
        let hash = crate::chat::tokens::hash(token);
        return match state.app.engine().store().api_token_person(&hash).await {
            Ok(Some((id, person))) => {
                tracing::debug!(token = id, %person, "API token accepted");
                state.token_used(id);
                Ok(Caller {
                    identities: vec![Identity::Web(person.clone())],
                    name: person,
                    via: Via::Token,
                    client,
                })
            }
            Ok(None) => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "that token is not known or was revoked; ask an admin for one ('token create PERSON')",
            )),
            Err(e) => {
                tracing::error!(error = %e, "cannot look up an API token");
                Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database did not answer; see jarvis's log",
                ))
            }
        };
    }
    if let Some(id) = cookie(headers, SESSION_COOKIE)
        && let Some(session) = state.sessions.get(&id)
    {
        return Ok(Caller {
            identities: session.identities,
            name: session.name,
            via: Via::Session {
                id,
                csrf: session.csrf,
            },
            client,
        });
    }
    Ok(Caller {
        identities: Vec::new(),
        name: "anonymous".into(),
        via: Via::Anonymous,
        client,
    })
}

/// The roles of a caller: chat's grants for their identities; a viewer's for anonymous
/// callers where `http.anonymous_read` says so.
pub fn roles_of(state: &State, caller: &Caller) -> Vec<Role> {
    if caller.anonymous() {
        return if state.config.anonymous_read {
            vec![Role::Viewer]
        } else {
            Vec::new()
        };
    }
    state.app.settings().roles.roles_of(&caller.identities)
}

/// Refuses a caller without `needed`: 401 when nobody is logged in, 403 with the role named
/// otherwise (as chat says it).
pub fn require(state: &State, caller: &Caller, needed: Role, what: &str) -> Result<(), Refusal> {
    if roles_of(state, caller).iter().any(|r| r.covers(needed)) {
        return Ok(());
    }
    if caller.anonymous() {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "{what} needs the {} role; log in with a token (Authorization: Bearer TOKEN)",
                needed.as_str()
            ),
        ));
    }
    let who = roles::principal(&caller.identities)
        .map(|id| format!("you are {id}, with no such role"))
        .unwrap_or_else(|| "you have no such role".into());
    Err(Refusal::new(
        StatusCode::FORBIDDEN,
        format!("{what} needs the {} role; {who}", needed.as_str()),
    ))
}

/// A form's CSRF token must be the session's. (Requests with a token in the header carry no
/// ambient authority, so they need none.)
pub fn check_csrf(caller: &Caller, given: Option<&str>) -> Result<(), Refusal> {
    match &caller.via {
        Via::Session { csrf, .. } => {
            if given.is_some_and(|g| constant_time_eq(g.as_bytes(), csrf.as_bytes())) {
                Ok(())
            } else {
                Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "the form's CSRF token is missing or stale; reload the page and try again",
                ))
            }
        }
        Via::Token => Ok(()),
        Via::Anonymous => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "log in first (with a token from an admin)",
        )),
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One cookie's value.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() <= 200)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure under TLS.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    )
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last address
/// in `X-Forwarded-For` that is not one of the trusted proxies.
pub fn client_address(state: &State, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    let trusted = |ip: IpAddr| {
        state
            .config
            .trusted_proxies
            .iter()
            .any(|r| r.contains(ip.to_canonical()))
    };
    let peer_ip = peer.ip().to_canonical();
    if !trusted(peer_ip) {
        return peer_ip;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted(*ip))
        .unwrap_or(peer_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_keeps_a_bounded_number_of_sessions_and_loses_the_oldest() {
        let sessions = Sessions::new(Duration::from_secs(3600));
        let alice = || vec![Identity::Web("alice".into())];
        let bob = sessions.open(vec![Identity::Web("bob".into())], "bob".into());
        let ids: Vec<String> = (0..MAX_SESSIONS_PER_PERSON + 3)
            .filter_map(|_| sessions.open(alice(), "alice".into()))
            .collect();
        assert_eq!(ids.len(), MAX_SESSIONS_PER_PERSON + 3);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(sessions.get(id).is_some(), i >= 3, "session {i}");
        }
        // Another person's session is untouched.
        assert!(sessions.get(&bob.unwrap()).is_some());
    }

    #[test]
    fn cookies_are_found_by_name_and_made_strict() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; jarvis_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, "nope"), None);
        let c = set_cookie(SESSION_COOKIE, "v", Duration::from_secs(60), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(!set_cookie("n", "v", Duration::from_secs(1), false).contains("Secure"));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
