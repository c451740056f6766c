//! Reaching a host over SSH: the route (jump hosts, then the target) from the stage's
//! parameters, each hop's host key checked against its fingerprint pins, and public-key
//! authentication.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::host_facts;
use crate::protocol::{self, Failure, Mapping};

/// How long one hop may take to answer and finish its key exchange.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(20);

/// One SSH server on the way.
#[derive(Debug, Clone)]
pub struct Hop {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl Hop {
    /// `host:port`, as messages name it.
    pub fn name(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A jump host and the one key it must show (its `host_key` in the stage's `with.jump`).
#[derive(Debug, Clone)]
pub struct Jump {
    pub hop: Hop,
    pub pin: Pin,
}

/// The jump hosts (`with.jump`), in order, and the target.
#[derive(Debug, Clone)]
pub struct Route {
    pub jumps: Vec<Jump>,
    pub target: Hop,
    /// The run's host as messages and `trust` commands name it: `$JARVIS_HOST`, else the
    /// target's address.
    pub host: String,
}

/// The run's host name the engine gives (`$JARVIS_HOST`), if it is a plain host name.
pub fn run_host() -> Option<String> {
    std::env::var("JARVIS_HOST")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| {
            let name = h.strip_suffix('.').unwrap_or(h);
            !name.is_empty() && name.split('.').all(host_facts::is_label)
        })
}

const NO_TARGET: &str = "no SSH target: the stage's with: names no host or domain and no earlier stage created the host";

impl Route {
    /// The route of the stage's parameters, as the `ssh` module doc describes: the target is
    /// `with.host`, else `jarvis.target.host` (what a provider stage wrote), else
    /// `$JARVIS_HOST.` + `with.domain`; its port `with.port`, else `jarvis.target.port` (with
    /// the target from there), else 22; the user `with.user`, else `$SSH_USER`, else root; the
    /// jump hosts `with.jump: [{host, port, user, host_key}]`. `run_host` is the run's host
    /// name (`$JARVIS_HOST`, see [`run_host`]).
    pub fn from_params(clipboard: &Mapping, run_host: Option<String>) -> Result<Route, Failure> {
        let user = match protocol::param(clipboard, "user") {
            None => std::env::var("SSH_USER")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "root".to_string()),
            Some(Value::String(user)) => user.clone(),
            Some(_) => return Err(Failure::fatal("the stage's with.user must be a text")),
        };
        let text_param = |name: &str| match protocol::param(clipboard, name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(Failure::fatal(format!(
                "the stage's with.{name} must be a text"
            ))),
        };
        let given_port = match protocol::param(clipboard, "port") {
            None => None,
            some => Some(port(some, "with.port")?),
        };
        let made = protocol::get_path(clipboard, "jarvis.target")
            .and_then(Value::as_object)
            .and_then(|t| Some((t.get("host")?.as_str()?.to_string(), t.get("port"))));
        let (field, host, found_port) = if let Some(host) = text_param("host")? {
            ("with.host", host, None)
        } else if let Some((host, made_port)) = made {
            let made_port = match made_port {
                None | Some(Value::Null) => None,
                some => Some(port(some, "jarvis.target.port")?),
            };
            ("jarvis.target.host", host, made_port)
        } else if let Some(domain) = text_param("domain")? {
            let name = run_host.clone().ok_or_else(|| {
                Failure::fatal(
                    "with.domain names the target as HOST.DOMAIN, but JARVIS_HOST is not set",
                )
            })?;
            let domain = domain.trim_matches('.');
            ("with.domain", format!("{name}.{domain}"), None)
        } else {
            return Err(Failure::fatal(NO_TARGET));
        };
        let target_port = given_port.or(found_port).unwrap_or(22);
        let target = hop(field, &host, target_port, &user)?;
        let mut jumps = Vec::new();
        match protocol::param(clipboard, "jump") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let field = format!("with.jump[{i}]");
                    let host = item
                        .get("host")
                        .and_then(Value::as_str)
                        .ok_or_else(|| Failure::fatal(format!("{field} has no host")))?;
                    let jump_port = port(item.get("port"), &format!("{field}.port"))?;
                    let jump_user = match item.get("user") {
                        None | Some(Value::Null) => user.as_str(),
                        Some(Value::String(u)) => u.as_str(),
                        Some(_) => {
                            return Err(Failure::fatal(format!("{field}.user must be a text")));
                        }
                    };
                    let hop = hop(&field, host, jump_port, jump_user)?;
                    let pin = match item.get("host_key") {
                        None | Some(Value::Null) => {
                            return Err(Failure::fatal(format!(
                                "{field} ({}) has no host_key: every jump host's key must be \
                                 pinned in the stage's with: (host_key: \"SHA256:…\", as \
                                 ssh-keygen -lf prints it)",
                                hop.name()
                            )));
                        }
                        Some(value) => value.as_str().and_then(Pin::parse).ok_or_else(|| {
                            Failure::fatal(format!(
                                "{field}.host_key is no fingerprint (\"SHA256:…\" or \
                                 \"ssh-ed25519 SHA256:…\")"
                            ))
                        })?,
                    };
                    jumps.push(Jump { hop, pin });
                }
            }
            Some(_) => {
                return Err(Failure::fatal(
                    "the stage's with.jump must be a list of {host, port, user, host_key}",
                ));
            }
        }
        let host = run_host.unwrap_or_else(|| target.host.clone());
        Ok(Route {
            jumps,
            target,
            host,
        })
    }
}

fn port(value: Option<&Value>, field: &str) -> Result<u16, Failure> {
    match value {
        None | Some(Value::Null) => Some(22),
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    }
    .filter(|p| *p != 0)
    .ok_or_else(|| Failure::fatal(format!("{field} is not a port number")))
}

fn hop(field: &str, host: &str, port: u16, user: &str) -> Result<Hop, Failure> {
    let host = host.trim();
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c));
    if !host_ok {
        return Err(Failure::fatal(format!(
            "{field}: '{}' is no host name or address",
            host_facts::printable(host)
        )));
    }
    let user_ok = !user.is_empty()
        && user.len() <= 64
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !user_ok {
        return Err(Failure::fatal(format!(
            "{field}: '{}' is no user name",
            host_facts::printable(user)
        )));
    }
    Ok(Hop {
        host: host.to_string(),
        port,
        user: user.to_string(),
    })
}

/// A pinned host key: its SHA-256 fingerprint, and the algorithm when the pin names it (the
/// engine's pins always do; a jump host's `host_key` may be a bare fingerprint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub algorithm: Option<Algorithm>,
    /// `SHA256:…` as `ssh-keygen -lf` prints it (unpadded base64).
    pub fingerprint: String,
}

impl Pin {
    /// `SHA256:…` or `ALGORITHM SHA256:…`.
    pub fn parse(text: &str) -> Option<Pin> {
        let text = text.trim();
        let (algorithm, fingerprint) = match text.split_once(char::is_whitespace) {
            Some((algorithm, fingerprint)) => (Some(known_algorithm(algorithm)?), fingerprint),
            None => (None, text),
        };
        let (fingerprint, _) = host_facts::parse_fingerprint(fingerprint)?;
        Some(Pin {
            algorithm,
            fingerprint,
        })
    }

    /// The pin of the key a host showed.
    pub fn of(key: &PublicKey) -> Pin {
        Pin {
            algorithm: Some(plain(key.algorithm())),
            fingerprint: fingerprint(key),
        }
    }

    pub fn matches(&self, key: &PublicKey) -> bool {
        self.algorithm
            .as_ref()
            .is_none_or(|a| *a == plain(key.algorithm()))
            && self.fingerprint == fingerprint(key)
    }

    /// `ssh-ed25519 SHA256:…`, or the bare fingerprint.
    pub fn shown(&self) -> String {
        match &self.algorithm {
            Some(algorithm) => format!("{algorithm} {}", self.fingerprint),
            None => self.fingerprint.clone(),
        }
    }
}

/// A key's SHA-256 fingerprint as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// A key's algorithm as pins name it: RSA keys are `ssh-rsa` whatever the signature hash.
pub fn plain(algorithm: Algorithm) -> Algorithm {
    match algorithm {
        Algorithm::Rsa { .. } => Algorithm::Rsa { hash: None },
        other => other,
    }
}

/// A host key algorithm jarvis can ask for, by its OpenSSH name.
fn known_algorithm(name: &str) -> Option<Algorithm> {
    let algorithm = plain(name.trim().parse::<Algorithm>().ok()?);
    let spoken = algorithms(Some(std::slice::from_ref(&algorithm)));
    (!spoken.is_empty()).then_some(algorithm)
}

/// The host keys the engine pinned for the run's host (`jarvis.host_keys`). A pin of an
/// algorithm jarvis cannot speak is left out with a log line.
pub fn host_pins(clipboard: &Mapping) -> Result<Vec<Pin>, Failure> {
    let mut pins = Vec::new();
    for pin in host_facts::host_key_pins(clipboard)? {
        match known_algorithm(&pin.algorithm) {
            Some(algorithm) => pins.push(Pin {
                algorithm: Some(algorithm),
                fingerprint: pin.fingerprint,
            }),
            None => protocol::log(&format!(
                "leaving out the pinned {} key {}: jarvis cannot ask a host for that algorithm",
                pin.algorithm, pin.fingerprint
            )),
        }
    }
    Ok(pins)
}

/// How a hop's host key is judged.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Any key is taken (and reported): the first contact with a host a pipeline just made.
    Learn,
    /// The key must match one of these pins (of its algorithm).
    Pinned(Vec<Pin>),
}

/// Why reaching a hop failed, in the terms the task reports: each variant maps to a retry
/// or a fatal failure of the stage, and a scan reads `NoCommonAlgorithm` as "not offered".
#[derive(Debug)]
pub enum HopFailure {
    /// Not (yet) answering: worth waiting for or retrying.
    Unreachable(String),
    /// The host's key is not the pinned one.
    Changed(String),
    /// It answered, but not with what we need (no common algorithm): for a scan, "not offered".
    NoCommonAlgorithm,
    /// Refused our key, or anything else that will not get better by waiting.
    Refused(String),
}

impl From<HopFailure> for Failure {
    fn from(failure: HopFailure) -> Failure {
        match failure {
            HopFailure::Unreachable(text) => Failure::retry(text),
            HopFailure::Changed(text) | HopFailure::Refused(text) => Failure::fatal(text),
            HopFailure::NoCommonAlgorithm => Failure::fatal("no host key algorithm in common"),
        }
    }
}

/// The client side of one SSH connection: it remembers the key the server offered and takes
/// it only when `trust` allows.
pub struct Checker {
    trust: Trust,
    offered: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Host certificates would need a trusted authority; hosts here are pinned by key.
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            return Ok(false);
        };
        if let Ok(mut slot) = self.offered.lock() {
            *slot = Some(key.clone());
        }
        Ok(match &self.trust {
            Trust::Learn => true,
            Trust::Pinned(pins) => pins.iter().any(|pin| pin.matches(key)),
        })
    }
}

/// An open connection to the target, with the jump connections it runs through.
pub struct Connection {
    pub target: Handle<Checker>,
    pub target_key: PublicKey,
    /// Kept only to hold the tunnels open.
    _jumps: Vec<Handle<Checker>>,
}

/// The host key algorithms a client asks for, most preferred first. `only` narrows them to
/// the algorithms of some keys (an RSA key answers with its SHA-2 signatures).
pub fn algorithms(only: Option<&[Algorithm]>) -> Vec<Algorithm> {
    let all = russh::Preferred::DEFAULT.key.to_vec();
    match only {
        None => all,
        Some(wanted) => all
            .into_iter()
            .filter(|a| {
                wanted.iter().any(|w| match (w, a) {
                    (Algorithm::Rsa { .. }, Algorithm::Rsa { hash }) => hash.is_some(),
                    _ => w == a,
                })
            })
            .collect(),
    }
}

fn config(host_key_algorithms: Vec<Algorithm>) -> Arc<client::Config> {
    Arc::new(client::Config {
        preferred: russh::Preferred {
            key: Cow::Owned(host_key_algorithms),
            ..russh::Preferred::DEFAULT
        },
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    })
}

/// Whom a hop is, for the message when its key is not the pinned one.
#[derive(Debug, Clone, Copy)]
enum Role<'a> {
    /// The target, named as the run's host.
    Target(&'a str),
    /// The jump host at this index of `with.jump`.
    Jump(usize),
}

/// Key exchange with one hop over `stream`, judging its host key by `trust`.
async fn handshake<S>(
    stream: S,
    hop: &Hop,
    role: Role<'_>,
    trust: Trust,
    host_key_algorithms: Vec<Algorithm>,
) -> Result<(Handle<Checker>, PublicKey), HopFailure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let offered = Arc::new(Mutex::new(None));
    let checker = Checker {
        trust: trust.clone(),
        offered: offered.clone(),
    };
    let outcome = tokio::time::timeout(
        HANDSHAKE_LIMIT,
        client::connect_stream(config(host_key_algorithms), stream, checker),
    )
    .await;
    let offered_key = offered.lock().ok().and_then(|slot| slot.clone());
    let name = hop.name();
    match outcome {
        Err(_) => Err(HopFailure::Unreachable(format!(
            "{name} did not finish the SSH handshake within {}s",
            HANDSHAKE_LIMIT.as_secs()
        ))),
        Ok(Ok(handle)) => match offered_key {
            Some(key) => Ok((handle, key)),
            None => Err(HopFailure::Refused(format!("{name} offered no host key"))),
        },
        Ok(Err(russh::Error::UnknownKey)) => Err(changed(hop, role, &trust, offered_key)),
        Ok(Err(russh::Error::NoCommonAlgo { .. })) => Err(HopFailure::NoCommonAlgorithm),
        Ok(Err(e)) => Err(HopFailure::Unreachable(format!("{name}: {e}"))),
    }
}

/// The one line for a host whose key is not the pinned one: both fingerprints, and what to
/// say (or change) when the new key is expected.
fn changed(hop: &Hop, role: Role<'_>, trust: &Trust, offered: Option<PublicKey>) -> HopFailure {
    let Some(offered) = offered else {
        return HopFailure::Refused(format!(
            "{} offered a host certificate, not a pinned key",
            hop.name()
        ));
    };
    let pins = match trust {
        Trust::Learn => Vec::new(),
        Trust::Pinned(pins) => pins.clone(),
    };
    let algorithm = plain(offered.algorithm());
    let same_kind: Vec<&Pin> = pins
        .iter()
        .filter(|p| p.algorithm.as_ref().is_none_or(|a| *a == algorithm))
        .collect();
    let shown: Vec<String> = if same_kind.is_empty() {
        pins.iter().map(Pin::shown).collect()
    } else {
        same_kind.iter().map(|p| p.shown()).collect()
    };
    let pinned = shown.join(" or ");
    let new = Pin::of(&offered).shown();
    HopFailure::Changed(match role {
        Role::Target(host) => format!(
            "{host}'s host key changed: pinned {pinned}, offered {new}; if that is expected, an \
             admin says 'trust {host} {new}', then 'resume'"
        ),
        Role::Jump(i) => format!(
            "jump host {}'s host key is not the pinned one: pinned {pinned}, offered {new}; if \
             that is expected, set with.jump[{i}].host_key of this stage to \"{new}\" in the \
             configuration",
            hop.name()
        ),
    })
}

/// Opens a TCP connection to the first hop.
async fn dial(hop: &Hop) -> Result<tokio::net::TcpStream, HopFailure> {
    let connect = tokio::net::TcpStream::connect((hop.host.as_str(), hop.port));
    match tokio::time::timeout(HANDSHAKE_LIMIT, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(HopFailure::Unreachable(format!("{}: {e}", hop.name()))),
        Err(_) => Err(HopFailure::Unreachable(format!(
            "{}: no answer within {}s",
            hop.name(),
            HANDSHAKE_LIMIT.as_secs()
        ))),
    }
}

/// Signs in to a hop with the key, as its user.
pub async fn authenticate(
    handle: &mut Handle<Checker>,
    hop: &Hop,
    key: &Arc<PrivateKey>,
) -> Result<(), HopFailure> {
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(|e| HopFailure::Unreachable(format!("{}: {e}", hop.name())))?
        .flatten();
    let result = handle
        .authenticate_publickey(&hop.user, PrivateKeyWithHashAlg::new(key.clone(), hash))
        .await
        .map_err(|e| HopFailure::Unreachable(format!("{}: {e}", hop.name())))?;
    if !result.success() {
        return Err(HopFailure::Refused(format!(
            "{} refused the key in SSH_KEY_FILE for user {}",
            hop.name(),
            hop.user
        )));
    }
    Ok(())
}

/// Reaches the target through the jump hosts. Each jump host must show the key its
/// `host_key` pins; it is signed in to with `key` and asked for a direct-tcpip channel to the
/// next hop. The target is judged by `target_trust` and signed in to only when `sign_in`.
pub async fn open(
    route: &Route,
    key: Option<&Arc<PrivateKey>>,
    target_trust: Trust,
    target_algorithms: Vec<Algorithm>,
    sign_in: bool,
) -> Result<Connection, HopFailure> {
    let mut jumps: Vec<Handle<Checker>> = Vec::new();
    let mut hops: Vec<(&Hop, Role<'_>, Trust, Vec<Algorithm>)> = route
        .jumps
        .iter()
        .enumerate()
        .map(|(i, jump)| {
            let pins = vec![jump.pin.clone()];
            let wanted = pinned_algorithms(&pins);
            (&jump.hop, Role::Jump(i), Trust::Pinned(pins), wanted)
        })
        .collect();
    hops.push((
        &route.target,
        Role::Target(&route.host),
        target_trust,
        target_algorithms,
    ));
    let last = hops.len() - 1;
    for (i, (hop, role, trust, wanted)) in hops.into_iter().enumerate() {
        let handshake = match jumps.last() {
            None => handshake(dial(hop).await?, hop, role, trust, wanted).await,
            Some(previous) => {
                let channel = previous
                    .channel_open_direct_tcpip(
                        hop.host.clone(),
                        u32::from(hop.port),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|e| {
                        HopFailure::Unreachable(format!(
                            "jump host {} cannot reach {}: {e}",
                            route.jumps[i - 1].hop.name(),
                            hop.name()
                        ))
                    })?;
                handshake(channel.into_stream(), hop, role, trust, wanted).await
            }
        };
        let (mut handle, offered) = handshake?;
        if i == last {
            if sign_in {
                let key =
                    key.ok_or_else(|| HopFailure::Refused("no SSH_KEY_FILE granted".into()))?;
                authenticate(&mut handle, hop, key).await?;
            }
            return Ok(Connection {
                target: handle,
                target_key: offered,
                _jumps: jumps,
            });
        }
        let key = key.ok_or_else(|| {
            HopFailure::Refused("jump hosts need a key: no SSH_KEY_FILE granted".into())
        })?;
        authenticate(&mut handle, hop, key).await?;
        jumps.push(handle);
    }
    Err(HopFailure::Refused("the route has no target".into()))
}

/// The algorithms to ask a host for so that it shows a pinned key: the pins' algorithms (all
/// when a pin names none).
pub fn pinned_algorithms(pins: &[Pin]) -> Vec<Algorithm> {
    let wanted: Option<Vec<Algorithm>> = pins.iter().map(|p| p.algorithm.clone()).collect();
    match wanted {
        Some(wanted) if !wanted.is_empty() => algorithms(Some(&wanted)),
        _ => algorithms(None),
    }
}

/// The private key granted as `SSH_KEY_FILE` (with `SSH_KEY_PASSPHRASE` when it has one).
pub fn private_key() -> Result<Arc<PrivateKey>, Failure> {
    let path = std::env::var("SSH_KEY_FILE")
        .ok()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Failure::fatal("no SSH_KEY_FILE: the configuration must grant it to ssh"))?;
    let passphrase = std::env::var("SSH_KEY_PASSPHRASE").ok();
    russh::keys::load_secret_key(&path, passphrase.as_deref())
        .map(Arc::new)
        .map_err(|e| Failure::fatal(format!("cannot load the key in SSH_KEY_FILE ({path}): {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(clipboard: Value, host: Option<&str>) -> Result<Route, Failure> {
        let clipboard = clipboard.as_object().cloned().unwrap_or_default();
        Route::from_params(&clipboard, host.map(str::to_string))
    }

    #[test]
    fn the_target_comes_from_the_stage_or_a_provider_stage_never_the_design() {
        let design = json!({
            "ssh": {"host": "evil.example", "port": 2222, "user": "root"},
            "instance": {"ip": "203.0.113.66", "fqdn": "evil.example"}
        });
        let err = route(design.clone(), Some("loki")).unwrap_err().to_string();
        assert_eq!(err, NO_TARGET);

        let mut c = design.clone();
        c["jarvis"] = json!({"with": {"domain": "example.com", "user": "deploy"}});
        let r = route(c, Some("loki")).unwrap();
        assert_eq!(
            (r.target.host.as_str(), r.target.port),
            ("loki.example.com", 22)
        );
        assert_eq!(r.target.user, "deploy");
        assert_eq!(r.host, "loki");

        let mut c = design.clone();
        c["jarvis"] = json!({"target": {"host": "127.0.0.1", "port": 2200}, "with": {"domain": "example.com"}});
        let r = route(c, Some("loki")).unwrap();
        assert_eq!((r.target.host.as_str(), r.target.port), ("127.0.0.1", 2200));

        let mut c = design.clone();
        c["jarvis"] =
            json!({"target": {"host": "198.51.100.4", "port": 22}, "with": {"port": 2222}});
        let r = route(c, Some("loki")).unwrap();
        assert_eq!(
            (r.target.host.as_str(), r.target.port),
            ("198.51.100.4", 2222)
        );

        let mut c = design;
        c["jarvis"] = json!({"target": {"host": "198.51.100.4"}, "with": {"host": "10.0.0.9"}});
        let r = route(c, None).unwrap();
        assert_eq!((r.target.host.as_str(), r.target.port), ("10.0.0.9", 22));
        assert_eq!(r.host, "10.0.0.9");
    }

    #[test]
    fn a_jump_host_needs_its_host_key() {
        let c = json!({"jarvis": {"with": {"host": "10.0.0.9",
            "jump": [{"host": "bastion", "port": 22, "user": "jump"}]}}});
        let err = route(c, Some("loki")).unwrap_err().to_string();
        assert!(
            err.starts_with("with.jump[0] (bastion:22) has no host_key: "),
            "{err}"
        );
        let fp = "SHA256:Nh0Me49Zh9fDw/VYUfq43IJmI1T+XrjiYONPND8GzaM";
        let c = json!({"jarvis": {"with": {"host": "10.0.0.9",
            "jump": [{"host": "bastion", "host_key": fp}, {"host": "inner", "host_key": format!("ssh-ed25519 {fp}")}]}}});
        let r = route(c, Some("loki")).unwrap();
        assert_eq!(r.jumps[0].pin.algorithm, None);
        assert_eq!(r.jumps[1].pin.algorithm, Some(Algorithm::Ed25519));
        assert_eq!(r.jumps[1].pin.shown(), format!("ssh-ed25519 {fp}"));
        assert_eq!(r.jumps[0].hop.user, "root");
    }

    #[test]
    fn pins_name_rsa_as_ssh_rsa() {
        let fp = "SHA256:Nh0Me49Zh9fDw/VYUfq43IJmI1T+XrjiYONPND8GzaM";
        let c = json!({"jarvis": {"host_keys": [
            {"algorithm": "rsa-sha2-512", "fingerprint": fp},
            {"algorithm": "ecdsa-sha2-nistp256", "fingerprint": fp},
            {"algorithm": "x-unknown@example.com", "fingerprint": fp}
        ]}});
        let pins = host_pins(c.as_object().unwrap()).unwrap();
        let shown: Vec<String> = pins.iter().map(Pin::shown).collect();
        assert_eq!(
            shown,
            [format!("ssh-rsa {fp}"), format!("ecdsa-sha2-nistp256 {fp}")]
        );
        let wanted = pinned_algorithms(&pins);
        assert!(wanted.contains(&Algorithm::Ecdsa {
            curve: russh::keys::EcdsaCurve::NistP256
        }));
        assert!(!wanted.contains(&Algorithm::Ed25519));
    }
}
