//! Reaching a host over SSH: the route (jump hosts, then the target), each hop's host key
//! checked against the pins in `ssh.known_hosts`, and public-key authentication.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

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

    /// The host as `known_hosts` writes it: `host`, or `[host]:port` off port 22.
    fn pattern(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

/// The jump hosts (`ssh.jump`), in order, and the target.
#[derive(Debug, Clone)]
pub struct Route {
    pub jumps: Vec<Hop>,
    pub target: Hop,
}

impl Route {
    /// The target is `ssh.host`, else `instance.ip`, else `instance.fqdn`, on `ssh.port`
    /// (default 22), as `ssh.user` (else `$SSH_USER`, else root); jump hosts come from
    /// `ssh.jump: [{host, port, user}]`.
    pub fn from_clipboard(clipboard: &Mapping) -> Result<Route, Failure> {
        let user = protocol::get_path(clipboard, "ssh.user")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| std::env::var("SSH_USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "root".to_string());
        let host = ["ssh.host", "instance.ip", "instance.fqdn"]
            .iter()
            .find_map(|path| protocol::get_path(clipboard, path).and_then(Value::as_str))
            .ok_or_else(|| {
                Failure::fatal(
                    "no host to reach: the clipboard has no ssh.host, instance.ip or instance.fqdn",
                )
            })?;
        let target_port = port(protocol::get_path(clipboard, "ssh.port"), "ssh.port")?;
        let target = hop("the target", host, target_port, &user)?;
        let mut jumps = Vec::new();
        match protocol::get_path(clipboard, "ssh.jump") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let field = format!("ssh.jump[{i}]");
                    let host = item
                        .get("host")
                        .and_then(Value::as_str)
                        .ok_or_else(|| Failure::fatal(format!("{field} has no host")))?;
                    let jump_port = port(item.get("port"), &format!("{field}.port"))?;
                    let user = item.get("user").and_then(Value::as_str).unwrap_or(&user);
                    jumps.push(hop(&field, host, jump_port, user)?);
                }
            }
            Some(_) => {
                return Err(Failure::fatal(
                    "ssh.jump must be a list of {host, port, user}",
                ));
            }
        }
        Ok(Route { jumps, target })
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
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c));
    if !host_ok {
        return Err(Failure::fatal(format!(
            "{field}: '{host}' is no host name or address"
        )));
    }
    let user_ok = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !user_ok {
        return Err(Failure::fatal(format!("{field}: '{user}' is no user name")));
    }
    Ok(Hop {
        host: host.to_string(),
        port,
        user: user.to_string(),
    })
}

/// Pinned host keys, kept on the clipboard as `ssh.known_hosts`: lines in OpenSSH's
/// `known_hosts` form (`[host]:port ssh-ed25519 AAAA…`), so they can go straight into a file.
#[derive(Debug, Default)]
pub struct KnownHosts {
    entries: Vec<(String, PublicKey)>,
}

impl KnownHosts {
    pub fn from_clipboard(clipboard: &Mapping) -> Result<KnownHosts, Failure> {
        let mut entries = Vec::new();
        let lines = match protocol::get_path(clipboard, "ssh.known_hosts") {
            None | Some(Value::Null) => return Ok(KnownHosts::default()),
            Some(Value::Array(lines)) => lines,
            Some(_) => return Err(Failure::fatal("ssh.known_hosts must be a list of lines")),
        };
        for (i, line) in lines.iter().enumerate() {
            let parsed = line.as_str().and_then(|line| {
                let (pattern, key) = line.trim().split_once(' ')?;
                let key = PublicKey::from_openssh(key.trim()).ok()?;
                Some((pattern.to_string(), key))
            });
            match parsed {
                Some(entry) => entries.push(entry),
                None => {
                    return Err(Failure::fatal(format!(
                        "ssh.known_hosts[{i}] is no known_hosts line"
                    )));
                }
            }
        }
        Ok(KnownHosts { entries })
    }

    pub fn keys_for(&self, hop: &Hop) -> Vec<PublicKey> {
        let pattern = hop.pattern();
        self.entries
            .iter()
            .filter(|(p, _)| *p == pattern)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Pins `key` for `hop` beside its other keys (one per algorithm). True when it is new.
    pub fn pin(&mut self, hop: &Hop, key: &PublicKey) -> bool {
        let pattern = hop.pattern();
        if self
            .entries
            .iter()
            .any(|(p, k)| *p == pattern && k.key_data() == key.key_data())
        {
            return false;
        }
        self.entries
            .retain(|(p, k)| !(*p == pattern && k.algorithm() == key.algorithm()));
        self.entries.push((pattern, key.clone()));
        true
    }

    /// Forgets every key of `hop`.
    pub fn forget(&mut self, hop: &Hop) {
        let pattern = hop.pattern();
        self.entries.retain(|(p, _)| *p != pattern);
    }

    pub fn store(&self, clipboard: &mut Mapping) {
        let lines: Vec<Value> = self
            .entries
            .iter()
            .filter_map(|(pattern, key)| {
                let mut key = key.clone();
                key.set_comment("");
                let text = key.to_openssh().ok()?;
                Some(Value::from(format!("{pattern} {}", text.trim())))
            })
            .collect();
        protocol::section(clipboard, "ssh").insert("known_hosts".into(), Value::Array(lines));
    }
}

/// How a hop's host key is judged.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Any key is taken (and then pinned): first contact.
    Any,
    /// The key must be one of these; with no pins, first contact.
    Pinned(Vec<PublicKey>),
    /// A key of an algorithm with a pin must match it; other algorithms are new to us.
    PerAlgorithm(Vec<PublicKey>),
}

/// Why reaching a hop failed, in the terms the task reports.
#[derive(Debug)]
pub enum Trouble {
    /// Not (yet) answering: worth waiting for or retrying.
    Unreachable(String),
    /// The host's key is not the pinned one.
    Changed(String),
    /// It answered, but not with what we need (no common algorithm): for a scan, "not offered".
    NoCommonAlgorithm,
    /// Refused our key, or anything else that will not get better by waiting.
    Refused(String),
}

impl From<Trouble> for Failure {
    fn from(trouble: Trouble) -> Failure {
        match trouble {
            Trouble::Unreachable(text) => Failure::retry(text),
            Trouble::Changed(text) | Trouble::Refused(text) => Failure::fatal(text),
            Trouble::NoCommonAlgorithm => Failure::fatal("no host key algorithm in common"),
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
        let same = |pin: &PublicKey| pin.key_data() == key.key_data();
        Ok(match &self.trust {
            Trust::Any => true,
            Trust::Pinned(pins) => pins.is_empty() || pins.iter().any(same),
            Trust::PerAlgorithm(pins) => {
                pins.iter().any(same) || !pins.iter().any(|p| p.algorithm() == key.algorithm())
            }
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

/// Key exchange with one hop over `stream`, judging its host key by `trust`.
async fn handshake<S>(
    stream: S,
    hop: &Hop,
    trust: Trust,
    host_key_algorithms: Vec<Algorithm>,
) -> Result<(Handle<Checker>, PublicKey), Trouble>
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
        Err(_) => Err(Trouble::Unreachable(format!(
            "{name} did not finish the SSH handshake within {}s",
            HANDSHAKE_LIMIT.as_secs()
        ))),
        Ok(Ok(handle)) => match offered_key {
            Some(key) => Ok((handle, key)),
            None => Err(Trouble::Refused(format!("{name} offered no host key"))),
        },
        Ok(Err(russh::Error::UnknownKey)) => Err(changed(hop, &trust, offered_key)),
        Ok(Err(russh::Error::NoCommonAlgo { .. })) => Err(Trouble::NoCommonAlgorithm),
        Ok(Err(e)) => Err(Trouble::Unreachable(format!("{name}: {e}"))),
    }
}

fn changed(hop: &Hop, trust: &Trust, offered: Option<PublicKey>) -> Trouble {
    let name = hop.name();
    let Some(offered) = offered else {
        return Trouble::Refused(format!(
            "{name} offered a host certificate, not a pinned key"
        ));
    };
    let pins = match trust {
        Trust::Any => Vec::new(),
        Trust::Pinned(pins) | Trust::PerAlgorithm(pins) => pins.clone(),
    };
    let pinned: Vec<String> = pins
        .iter()
        .map(|k| format!("{} {}", k.algorithm(), k.fingerprint(HashAlg::Sha256)))
        .collect();
    Trouble::Changed(format!(
        "host key of {name} changed since ssh:wait: it offers {} {}, pinned {}",
        offered.algorithm(),
        offered.fingerprint(HashAlg::Sha256),
        pinned.join(", ")
    ))
}

/// Opens a TCP connection to the first hop.
async fn dial(hop: &Hop) -> Result<tokio::net::TcpStream, Trouble> {
    let connect = tokio::net::TcpStream::connect((hop.host.as_str(), hop.port));
    match tokio::time::timeout(HANDSHAKE_LIMIT, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(Trouble::Unreachable(format!("{}: {e}", hop.name()))),
        Err(_) => Err(Trouble::Unreachable(format!(
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
) -> Result<(), Trouble> {
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(|e| Trouble::Unreachable(format!("{}: {e}", hop.name())))?
        .flatten();
    let result = handle
        .authenticate_publickey(&hop.user, PrivateKeyWithHashAlg::new(key.clone(), hash))
        .await
        .map_err(|e| Trouble::Unreachable(format!("{}: {e}", hop.name())))?;
    if !result.success() {
        return Err(Trouble::Refused(format!(
            "{} refused the key in SSH_KEY_FILE for user {}",
            hop.name(),
            hop.user
        )));
    }
    Ok(())
}

/// Reaches the target through the jump hosts. Jump hosts are checked against their pins
/// (pinned at first contact, added to `known`), signed in to with `key`, and asked for a
/// direct-tcpip channel to the next hop; the target is judged by `target_trust` and signed in
/// to only when `sign_in`.
pub async fn open(
    route: &Route,
    known: &mut KnownHosts,
    key: Option<&Arc<PrivateKey>>,
    target_trust: Trust,
    target_algorithms: Vec<Algorithm>,
    sign_in: bool,
) -> Result<Connection, Trouble> {
    let mut jumps: Vec<Handle<Checker>> = Vec::new();
    let mut hops: Vec<&Hop> = route.jumps.iter().collect();
    hops.push(&route.target);
    for (i, hop) in hops.iter().enumerate() {
        let is_target = i + 1 == hops.len();
        let (trust, wanted) = if is_target {
            (target_trust.clone(), target_algorithms.clone())
        } else {
            let pins = known.keys_for(hop);
            let wanted = pinned_algorithms(&pins);
            (Trust::Pinned(pins), wanted)
        };
        let handshake = match jumps.last() {
            None => handshake(dial(hop).await?, hop, trust, wanted).await,
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
                        Trouble::Unreachable(format!(
                            "jump host {} cannot reach {}: {e}",
                            route.jumps[i - 1].name(),
                            hop.name()
                        ))
                    })?;
                handshake(channel.into_stream(), hop, trust, wanted).await
            }
        };
        let (mut handle, offered) = handshake?;
        if is_target {
            if sign_in {
                let key = key.ok_or_else(|| Trouble::Refused("no SSH_KEY_FILE granted".into()))?;
                authenticate(&mut handle, hop, key).await?;
            }
            return Ok(Connection {
                target: handle,
                target_key: offered,
                _jumps: jumps,
            });
        }
        if known.pin(hop, &offered) {
            protocol::log(&format!(
                "pinned the host key of jump host {} at first contact: {}",
                hop.name(),
                offered.fingerprint(HashAlg::Sha256)
            ));
        }
        let key = key.ok_or_else(|| {
            Trouble::Refused("jump hosts need a key: no SSH_KEY_FILE granted".into())
        })?;
        authenticate(&mut handle, hop, key).await?;
        jumps.push(handle);
    }
    Err(Trouble::Refused("the route has no target".into()))
}

/// The algorithms to ask a host for so that it shows a pinned key; all when nothing is pinned.
pub fn pinned_algorithms(pins: &[PublicKey]) -> Vec<Algorithm> {
    if pins.is_empty() {
        return algorithms(None);
    }
    let wanted: Vec<Algorithm> = pins.iter().map(PublicKey::algorithm).collect();
    algorithms(Some(&wanted))
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
