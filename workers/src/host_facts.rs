//! What the clipboard says about a host — its names, addresses and SSH key fingerprints — read
//! the same way by every worker that tells the world about it (`dns`, `ldap`).
//!
//! Addresses, per family, come from the first of these paths that holds any (a text or a list
//! of texts; an IPv6 `/prefix` suffix is dropped):
//!
//! - IPv4: `instance.ipv4`, `linode.ipv4`, `ec2.ipv4`, then the IPv4 entries of `instance.ip`;
//! - IPv6: `instance.ipv6`, `linode.ipv6`, `ec2.ipv6`, then the IPv6 entries of `instance.ip`.
//!
//! Private, loopback, link-local and unique-local addresses are not published, and each one
//! skipped is a `notice:` in the run's channel, never silence: a provider lists its private
//! addresses beside the public ones. A fleet on an internal network opts in per module grant
//! (so per zone or directory) with `PUBLISH_NETWORKS`: comma-separated networks whose
//! addresses may be published, e.g. `10.0.0.0/8, fd00::/8` (a bare address is a /32 or /128).
//!
//! SSH fingerprints (SSHFP records) come ONLY from `jarvis.host_keys`: the host keys the engine
//! has pinned for the run's host, `[{algorithm: "ssh-ed25519", fingerprint: "SHA256:…"}]`
//! (algorithm as OpenSSH names it, fingerprint as `ssh-keygen -lf` prints it). Never from
//! anything a design could have put on the clipboard. Each pin becomes `ALG 2 HEX`: SSHFP
//! algorithm 1 for RSA, 2 DSA, 3 ECDSA, 4 Ed25519, 6 Ed448 (RFC 4255/6594/7479/8709), SHA-256,
//! and the hex of the base64 after `SHA256:`.

use std::net::IpAddr;

use jarvis_design::AddressRange;
use serde_json::Value;

use crate::protocol::{self, Failure, Mapping};

/// One SSHFP record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sshfp {
    pub algorithm: u8,
    pub fptype: u8,
    pub fingerprint: Vec<u8>,
}

impl Sshfp {
    /// The presentation form of the record's data: `4 2 0a1b…`.
    pub fn presentation(&self) -> String {
        format!(
            "{} {} {}",
            self.algorithm,
            self.fptype,
            to_hex(&self.fingerprint)
        )
    }
}

const IPV4_SOURCES: &[&str] = &["instance.ipv4", "linode.ipv4", "ec2.ipv4"];
const IPV6_SOURCES: &[&str] = &["instance.ipv6", "linode.ipv6", "ec2.ipv6"];
const MIXED_SOURCE: &str = "instance.ip";

/// The host's short name, `instance.hostname`, which must be an RFC 1123 label.
pub fn hostname(clipboard: &Mapping) -> Result<String, Failure> {
    let name = protocol::require_str(clipboard, "instance.hostname")?;
    if !is_label(name) {
        return Err(Failure::fatal(format!(
            "instance.hostname '{}' is not a host name (letters, digits and '-', at most 63)",
            printable(name)
        )));
    }
    Ok(name.to_ascii_lowercase())
}

/// The host's fully qualified name, `instance.fqdn`, without a trailing dot, lower case.
pub fn fqdn(clipboard: &Mapping) -> Result<String, Failure> {
    let name = protocol::require_str(clipboard, "instance.fqdn")?;
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = trimmed.split('.').collect();
    if labels.len() < 2 || trimmed.len() > 253 || !labels.iter().all(|l| is_label(l)) {
        return Err(Failure::fatal(format!(
            "instance.fqdn '{}' is not a fully qualified host name",
            printable(name)
        )));
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// True for an RFC 1123 label: 1 to 63 letters, digits and inner hyphens.
pub fn is_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// The host's public addresses, IPv4 first, as the module doc describes.
pub fn addresses(clipboard: &Mapping) -> Result<Vec<IpAddr>, Failure> {
    let mut out = family(clipboard, IPV4_SOURCES, IpAddr::is_ipv4)?;
    out.extend(family(clipboard, IPV6_SOURCES, IpAddr::is_ipv6)?);
    Ok(out)
}

/// The paths addresses are read from, for error messages.
pub fn address_sources() -> String {
    let mut all: Vec<&str> = IPV4_SOURCES.to_vec();
    all.extend(IPV6_SOURCES);
    all.push(MIXED_SOURCE);
    all.join(", ")
}

fn family(
    clipboard: &Mapping,
    sources: &[&str],
    wanted: fn(&IpAddr) -> bool,
) -> Result<Vec<IpAddr>, Failure> {
    let allowed = published_networks()?;
    for path in sources.iter().copied().chain([MIXED_SOURCE]) {
        let found: Vec<IpAddr> = parse_addresses(clipboard, path)?
            .into_iter()
            .filter(wanted)
            .collect();
        if !found.is_empty() {
            return Ok(publishable(found, path, &allowed));
        }
    }
    Ok(Vec::new())
}

/// The networks the module's grant lets it publish besides public addresses.
fn published_networks() -> Result<Vec<AddressRange>, Failure> {
    let Ok(text) = std::env::var("PUBLISH_NETWORKS") else {
        return Ok(Vec::new());
    };
    text.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            AddressRange::parse(t).map_err(|_| {
                Failure::fatal(format!(
                    "PUBLISH_NETWORKS holds '{}', which is no network (like 10.0.0.0/8)",
                    printable(t.trim())
                ))
            })
        })
        .collect()
}

fn parse_addresses(clipboard: &Mapping, path: &str) -> Result<Vec<IpAddr>, Failure> {
    let texts = texts_at(clipboard, path)?;
    texts
        .iter()
        .map(|text| {
            let bare = text.split_once('/').map_or(text.as_str(), |(ip, _)| ip);
            bare.trim().parse::<IpAddr>().map_err(|_| {
                Failure::fatal(format!(
                    "{path} holds '{}', not an IP address",
                    printable(text)
                ))
            })
        })
        .collect()
}

fn publishable(found: Vec<IpAddr>, path: &str, allowed: &[AddressRange]) -> Vec<IpAddr> {
    found
        .into_iter()
        .filter(|ip| {
            let ok = is_public(ip) || allowed.iter().any(|n| n.contains(*ip));
            if !ok {
                protocol::notice(&format!(
                    "not publishing {ip} from {path}: not a public address (grant this module PUBLISH_NETWORKS to publish an internal network)"
                ));
            }
            ok
        })
        .collect()
}

fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            let link_local = first & 0xffc0 == 0xfe80;
            let unique_local = first & 0xfe00 == 0xfc00;
            !(v6.is_loopback() || v6.is_unspecified() || link_local || unique_local)
        }
    }
}

/// The texts at `path`: none when absent, one for a text, each for a list of texts.
pub fn texts_at(clipboard: &Mapping, path: &str) -> Result<Vec<String>, Failure> {
    match protocol::get_path(clipboard, path) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(Failure::fatal(format!("{path} must be a list of texts"))),
            })
            .collect(),
        Some(_) => Err(Failure::fatal(format!(
            "{path} must be a text or a list of texts"
        ))),
    }
}

/// One host key the engine has pinned for the run's host (`jarvis.host_keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyPin {
    /// As OpenSSH names it: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`…
    pub algorithm: String,
    /// `SHA256:` and the unpadded base64 of the digest, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The 32 bytes of the digest.
    pub digest: Vec<u8>,
}

/// Where the engine puts the run host's pinned host keys.
pub const HOST_KEYS: &str = "jarvis.host_keys";

/// The pins in `jarvis.host_keys` (none when absent).
pub fn host_key_pins(clipboard: &Mapping) -> Result<Vec<HostKeyPin>, Failure> {
    let items = match protocol::get_path(clipboard, HOST_KEYS) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(Failure::fatal(format!(
                "{HOST_KEYS} must be a list of {{algorithm, fingerprint}}"
            )));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let text = |field: &str| item.get(field).and_then(Value::as_str).map(str::trim);
            let algorithm = text("algorithm")
                .filter(|a| {
                    !a.is_empty()
                        && a.len() <= 64
                        && a.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-@._".contains(&b))
                })
                .ok_or_else(|| Failure::fatal(format!("{HOST_KEYS}[{i}] has no algorithm name")))?;
            let (fingerprint, digest) = text("fingerprint")
                .and_then(parse_fingerprint)
                .ok_or_else(|| {
                    Failure::fatal(format!(
                        "{HOST_KEYS}[{i}] has no SHA256 fingerprint (SHA256:base64)"
                    ))
                })?;
            Ok(HostKeyPin {
                algorithm: algorithm.to_string(),
                fingerprint,
                digest,
            })
        })
        .collect()
}

/// `SHA256:BASE64` (padded or not) → its canonical form (unpadded, as `ssh-keygen -lf` prints
/// it) and the 32-byte digest.
pub fn parse_fingerprint(text: &str) -> Option<(String, Vec<u8>)> {
    use base64::Engine;
    let encoded = text.trim().strip_prefix("SHA256:")?.trim_end_matches('=');
    let digest = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded)
        .ok()
        .filter(|d| d.len() == 32)?;
    let canonical = format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest)
    );
    Some((canonical, digest))
}

/// The SSHFP algorithm number of an SSH host key algorithm (RFC 4255, 6594, 7479, 8709).
pub fn sshfp_algorithm(algorithm: &str) -> Option<u8> {
    match algorithm {
        "ssh-rsa" | "rsa-sha2-256" | "rsa-sha2-512" => Some(1),
        "ssh-dss" => Some(2),
        a if a.starts_with("ecdsa-sha2-") => Some(3),
        "ssh-ed25519" => Some(4),
        "ssh-ed448" => Some(6),
        _ => None,
    }
}

/// The SSHFP record of one pin, if its algorithm has an SSHFP number.
pub fn sshfp_of(pin: &HostKeyPin) -> Option<Sshfp> {
    Some(Sshfp {
        algorithm: sshfp_algorithm(&pin.algorithm)?,
        fptype: 2,
        fingerprint: pin.digest.clone(),
    })
}

/// The SSHFP records of the pinned host keys (`jarvis.host_keys`), as the module doc
/// describes; a pin whose algorithm has no SSHFP number is left out with a log line.
pub fn sshfp(clipboard: &Mapping) -> Result<Vec<Sshfp>, Failure> {
    let mut out: Vec<Sshfp> = Vec::new();
    for pin in host_key_pins(clipboard)? {
        match sshfp_of(&pin) {
            Some(record) if !out.contains(&record) => out.push(record),
            Some(_) => {}
            None => protocol::log(&format!(
                "no SSHFP record for the pinned {} key: SSHFP has no number for it",
                pin.algorithm
            )),
        }
    }
    Ok(out)
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value from the clipboard, cut short and without control characters, for an error line.
pub fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clip(value: Value) -> Mapping {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn addresses_prefer_instance_then_provider_and_skip_private() {
        let c = clip(json!({
            "instance": {"ip": "203.0.113.99"},
            "linode": {"ipv4": ["203.0.113.7", "192.168.1.2"], "ipv6": "2001:db8::7/128"}
        }));
        let found = addresses(&c).unwrap();
        assert_eq!(
            found,
            vec![
                "203.0.113.7".parse::<IpAddr>().unwrap(),
                "2001:db8::7".parse().unwrap()
            ]
        );
    }

    #[test]
    fn mixed_ip_is_the_fallback() {
        let c = clip(json!({"instance": {"ip": ["203.0.113.9", "2001:db8::9"]}}));
        assert_eq!(addresses(&c).unwrap().len(), 2);
    }

    #[test]
    fn bad_address_names_its_path() {
        let c = clip(json!({"instance": {"ipv4": "not-an-ip"}}));
        let err = addresses(&c).unwrap_err().to_string();
        assert!(err.contains("instance.ipv4"), "{err}");
    }

    #[test]
    fn sshfp_comes_from_the_pins_only() {
        let c = clip(json!({
            "ssh": {"sshfp": [{"algorithm": 4, "fptype": 2, "fingerprint": "ab".repeat(32)}]},
            "jarvis": {"host_keys": [
                {"algorithm": "ssh-ed25519",
                 "fingerprint": "SHA256:Nh0Me49Zh9fDw/VYUfq43IJmI1T+XrjiYONPND8GzaM"},
                {"algorithm": "ecdsa-sha2-nistp256",
                 "fingerprint": "SHA256:Nh0Me49Zh9fDw/VYUfq43IJmI1T+XrjiYONPND8GzaM="},
                {"algorithm": "ssh-unknown@example.com",
                 "fingerprint": "SHA256:Nh0Me49Zh9fDw/VYUfq43IJmI1T+XrjiYONPND8GzaM"}
            ]}
        }));
        let hex = "361d0c7b8f5987d7c3c3f55851fab8dc82662354fe5eb8e260e34f343f06cda3";
        let records: Vec<String> = sshfp(&c).unwrap().iter().map(Sshfp::presentation).collect();
        assert_eq!(records, [format!("4 2 {hex}"), format!("3 2 {hex}")]);
        let none = clip(
            json!({"ssh": {"sshfp": [{"algorithm": 4, "fptype": 2, "fingerprint": "ab".repeat(32)}]}}),
        );
        assert!(sshfp(&none).unwrap().is_empty());
    }

    #[test]
    fn pins_are_checked() {
        for bad in [
            json!({"jarvis": {"host_keys": [{"algorithm": "ssh-ed25519", "fingerprint": "MD5:ab"}]}}),
            json!({"jarvis": {"host_keys": [{"algorithm": "ssh-ed25519", "fingerprint": "SHA256:abcd"}]}}),
            json!({"jarvis": {"host_keys": [{"fingerprint": "SHA256:Nh0Me49Zh9fDw/VYUfq43IJmI1T+XrjiYONPND8GzaM"}]}}),
            json!({"jarvis": {"host_keys": "ssh-ed25519 AAAA"}}),
        ] {
            assert!(host_key_pins(&clip(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_checked() {
        let bad = clip(
            json!({"instance": {"hostname": "loki)(objectClass=*", "fqdn": "a,ou=x.example.com"}}),
        );
        assert!(hostname(&bad).is_err());
        assert!(fqdn(&bad).is_err());
        let good = clip(json!({"instance": {"hostname": "Loki", "fqdn": "Loki.Example.com."}}));
        assert_eq!(hostname(&good).unwrap(), "loki");
        assert_eq!(fqdn(&good).unwrap(), "loki.example.com");
    }
}
