//! What the clipboard says about a host — its names, addresses and SSH key fingerprints — read
//! the same way by every worker that tells the world about it (`dns`, `ldap`).
//!
//! Addresses, per family, come from the first of these paths that holds any (a text or a list
//! of texts; an IPv6 `/prefix` suffix is dropped):
//!
//! - IPv4: `instance.ipv4`, `linode.ipv4`, then the IPv4 entries of `instance.ip`;
//! - IPv6: `instance.ipv6`, `linode.ipv6`, then the IPv6 entries of `instance.ip`.
//!
//! Private, loopback, link-local and unique-local addresses are skipped (with a log line):
//! a provider lists its private addresses beside the public ones, and those must never be
//! published for the host.
//!
//! SSH fingerprints come from `ssh.sshfp`, a list of `{algorithm, fptype, fingerprint}`: the
//! numbers of RFC 4255/6594/7479 (or the names `rsa`, `dsa`, `ecdsa`, `ed25519`, `ed448` and
//! `sha1`, `sha256`) and the fingerprint in hex.

use std::net::IpAddr;

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

const IPV4_SOURCES: &[&str] = &["instance.ipv4", "linode.ipv4"];
const IPV6_SOURCES: &[&str] = &["instance.ipv6", "linode.ipv6"];
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
    for path in sources.iter().copied().chain([MIXED_SOURCE]) {
        let found: Vec<IpAddr> = parse_addresses(clipboard, path)?
            .into_iter()
            .filter(wanted)
            .collect();
        if !found.is_empty() {
            return Ok(public_only(found, path));
        }
    }
    Ok(Vec::new())
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

fn public_only(found: Vec<IpAddr>, path: &str) -> Vec<IpAddr> {
    found
        .into_iter()
        .filter(|ip| {
            let public = is_public(ip);
            if !public {
                protocol::log(&format!("skipping non-public address {ip} from {path}"));
            }
            public
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

/// The SSHFP records of `ssh.sshfp`, as the module doc describes.
pub fn sshfp(clipboard: &Mapping) -> Result<Vec<Sshfp>, Failure> {
    let items = match protocol::get_path(clipboard, "ssh.sshfp") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(Failure::fatal("ssh.sshfp must be a list")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let entry = item
                .as_object()
                .ok_or_else(|| Failure::fatal(format!("ssh.sshfp[{i}] must be a mapping")))?;
            parse_sshfp(entry).map_err(|why| Failure::fatal(format!("ssh.sshfp[{i}]: {why}")))
        })
        .collect()
}

fn parse_sshfp(entry: &Mapping) -> Result<Sshfp, String> {
    let algorithm = code(entry.get("algorithm"), "algorithm", |name| match name {
        "rsa" => Some(1),
        "dsa" => Some(2),
        "ecdsa" => Some(3),
        "ed25519" => Some(4),
        "ed448" => Some(6),
        _ => None,
    })?;
    let fptype = code(entry.get("fptype"), "fptype", |name| match name {
        "sha1" | "sha-1" => Some(1),
        "sha256" | "sha-256" => Some(2),
        _ => None,
    })?;
    let hex = entry
        .get("fingerprint")
        .and_then(Value::as_str)
        .ok_or("fingerprint must be hex text")?;
    let fingerprint = from_hex(hex).ok_or("fingerprint must be hex text")?;
    let expected = match fptype {
        1 => Some(20),
        2 => Some(32),
        _ => None,
    };
    if expected.is_some_and(|len| len != fingerprint.len()) || fingerprint.is_empty() {
        return Err(format!(
            "fingerprint has {} bytes, wrong for fptype {fptype}",
            fingerprint.len()
        ));
    }
    Ok(Sshfp {
        algorithm,
        fptype,
        fingerprint,
    })
}

fn code(value: Option<&Value>, field: &str, by_name: fn(&str) -> Option<u8>) -> Result<u8, String> {
    let parsed = match value {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u8>()
            .ok()
            .or_else(|| by_name(&s.trim().to_ascii_lowercase())),
        _ => None,
    };
    match parsed {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{field} must be a number from 1 to 255 or a known name"
        )),
    }
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !clean.len().is_multiple_of(2) {
        return None;
    }
    clean
        .chunks(2)
        .map(|pair| {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
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
    fn sshfp_accepts_numbers_and_names() {
        let c = clip(json!({"ssh": {"sshfp": [
            {"algorithm": 4, "fptype": 2, "fingerprint": "AB".repeat(32)},
            {"algorithm": "rsa", "fptype": "sha1", "fingerprint": "01".repeat(20)}
        ]}}));
        let records = sshfp(&c).unwrap();
        assert_eq!(records[0].algorithm, 4);
        assert_eq!(records[1].algorithm, 1);
        assert_eq!(
            records[0].presentation(),
            format!("4 2 {}", "ab".repeat(32))
        );
    }

    #[test]
    fn sshfp_rejects_wrong_length() {
        let c =
            clip(json!({"ssh": {"sshfp": [{"algorithm": 4, "fptype": 2, "fingerprint": "abcd"}]}}));
        assert!(sshfp(&c).is_err());
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
