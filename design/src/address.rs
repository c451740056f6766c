//! Which addresses a design URL may reach: a name on the URL allow-list is resolved first, and
//! only public addresses (or those the configuration names in `allow_addresses`) are
//! connected to. The resolver here is installed in the URL source's HTTP client, so the
//! address that was checked is the address connected to, redirects included.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::AddressRange;
use crate::error::printable;

/// Why an address was refused; found again in the error chain to explain a failed fetch.
#[derive(Debug)]
pub(crate) struct AddressRefused(pub String);

impl std::fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressRefused {}

const NOT_NAMED: &str = "which the URL allow-list does not name";

/// The addresses that are refused unless named, and the ranges that name them.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddressPolicy {
    allowed: Vec<AddressRange>,
}

impl AddressPolicy {
    pub(crate) fn new(allowed: &[AddressRange]) -> AddressPolicy {
        AddressPolicy {
            allowed: allowed.to_vec(),
        }
    }

    /// `None` when `ip` may be connected to; otherwise what kind of address it is.
    pub(crate) fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let kind = special(ip)?;
        let named = |ip: IpAddr| self.allowed.iter().any(|range| range.contains(ip));
        let mapped = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        if named(ip) || mapped.is_some_and(named) {
            None
        } else {
            Some(kind)
        }
    }

    /// Checks an address written in a URL: "127.0.0.1 is a loopback address, which …".
    pub(crate) fn check_literal(&self, ip: IpAddr) -> Result<(), String> {
        match self.refusal(ip) {
            None => Ok(()),
            Some(kind) => Err(format!("{ip} is {kind}, {NOT_NAMED}")),
        }
    }
}

/// A resolver that resolves with the system's resolver (through tokio) and hands reqwest
/// only the addresses the policy lets through.
#[derive(Debug, Clone)]
pub(crate) struct CheckedResolver {
    pub(crate) policy: Arc<AddressPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (kept, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = found
                .into_iter()
                .partition(|addr| policy.refusal(addr.ip()).is_none());
            if let Some(first) = refused.first()
                && kept.is_empty()
            {
                let kind = policy.refusal(first.ip()).unwrap_or("refused");
                let more = match refused.len() {
                    1 => String::new(),
                    n => format!(" (and {} more, none allowed)", n - 1),
                };
                let why = format!(
                    "{} resolves to {}{more}, {kind}, {NOT_NAMED}",
                    printable(&host),
                    first.ip()
                );
                return Err(Box::new(AddressRefused(why)) as Box<_>);
            }
            if !refused.is_empty() {
                tracing::info!(host = %printable(&host), refused = ?refused, "design URL: some addresses refused");
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = v6.segments();
    let low = Ipv4Addr::from((u32::from(segments[6]) << 16) | u32::from(segments[7]));
    match segments {
        // ::a.b.c.d, but not :: and ::1 themselves.
        [0, 0, 0, 0, 0, 0, _, _] if u32::from(low) > 1 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        _ => None,
    }
}

/// What kind of non-public address `ip` is, or `None` for an ordinary public address.
fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => special_v4(v4).map(|kind| match kind {
                "a loopback address" => "an IPv4-mapped loopback address",
                "a private address (RFC 1918)" => "an IPv4-mapped private address (RFC 1918)",
                "a link-local address" => "an IPv4-mapped link-local address",
                "the cloud metadata address" => "an IPv4-mapped cloud metadata address",
                _ => "an IPv4-mapped address that is not public",
            }),
            None => special_v6(v6),
        },
    }
}

fn special_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    Some(if v4 == Ipv4Addr::new(169, 254, 169, 254) {
        "the cloud metadata address"
    } else if v4.is_loopback() {
        "a loopback address"
    } else if v4.is_private() {
        "a private address (RFC 1918)"
    } else if a == 100 && (b & 0xc0) == 64 {
        "a shared address (carrier-grade NAT, 100.64.0.0/10)"
    } else if v4.is_link_local() {
        "a link-local address"
    } else if v4.is_unspecified() || a == 0 {
        "an unspecified address (0.0.0.0/8)"
    } else if v4.is_broadcast() {
        "the broadcast address"
    } else if v4.is_multicast() {
        "a multicast address"
    } else if v4.is_documentation() || (a == 198 && (b & 0xfe) == 18) {
        "a documentation or benchmarking address"
    } else if a == 192 && b == 0 && c == 0 {
        "an IETF protocol address (192.0.0.0/24)"
    } else if a >= 240 {
        "a reserved address (240.0.0.0/4)"
    } else {
        return None;
    })
}

fn special_v6(v6: Ipv6Addr) -> Option<&'static str> {
    let first = v6.segments()[0];
    Some(if v6.is_loopback() {
        "a loopback address"
    } else if v6.is_unspecified() {
        "the unspecified address"
    } else if (first & 0xfe00) == 0xfc00 {
        "a unique local address (fc00::/7)"
    } else if (first & 0xffc0) == 0xfe80 {
        "a link-local address"
    } else if (first & 0xffc0) == 0xfec0 {
        "a site-local address (fec0::/10)"
    } else if v6.is_multicast() {
        "a multicast address"
    } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
        "a documentation address (2001:db8::/32)"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_pass_by_default() {
        let policy = AddressPolicy::default();
        for (address, kind) in [
            ("127.0.0.1", "a loopback address"),
            ("127.3.4.5", "a loopback address"),
            ("10.1.2.3", "a private address (RFC 1918)"),
            ("172.16.0.1", "a private address (RFC 1918)"),
            ("172.31.255.255", "a private address (RFC 1918)"),
            ("192.168.1.1", "a private address (RFC 1918)"),
            (
                "100.64.0.1",
                "a shared address (carrier-grade NAT, 100.64.0.0/10)",
            ),
            (
                "100.127.255.255",
                "a shared address (carrier-grade NAT, 100.64.0.0/10)",
            ),
            ("169.254.169.254", "the cloud metadata address"),
            ("169.254.1.1", "a link-local address"),
            ("0.0.0.0", "an unspecified address (0.0.0.0/8)"),
            ("0.1.2.3", "an unspecified address (0.0.0.0/8)"),
            ("255.255.255.255", "the broadcast address"),
            ("224.0.0.1", "a multicast address"),
            ("192.0.2.1", "a documentation or benchmarking address"),
            ("198.18.0.1", "a documentation or benchmarking address"),
            ("240.0.0.1", "a reserved address (240.0.0.0/4)"),
            ("::1", "a loopback address"),
            ("::", "the unspecified address"),
            ("fc00::1", "a unique local address (fc00::/7)"),
            ("fd12:3456::1", "a unique local address (fc00::/7)"),
            ("fe80::1", "a link-local address"),
            ("febf::1", "a link-local address"),
            ("ff02::1", "a multicast address"),
            ("2001:db8::1", "a documentation address (2001:db8::/32)"),
            ("::ffff:127.0.0.1", "an IPv4-mapped loopback address"),
            (
                "::ffff:169.254.169.254",
                "an IPv4-mapped cloud metadata address",
            ),
            (
                "::ffff:10.0.0.1",
                "an IPv4-mapped private address (RFC 1918)",
            ),
            ("::127.0.0.1", "an IPv4-mapped loopback address"),
            (
                "64:ff9b::a9fe:a9fe",
                "an IPv4-mapped cloud metadata address",
            ),
        ] {
            assert_eq!(policy.refusal(ip(address)), Some(kind), "{address}");
        }
        for public in [
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(policy.refusal(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn named_addresses_pass() {
        let allowed =
            ["127.0.0.1", "10.0.0.0/8", "fd00::/8"].map(|a| AddressRange::parse(a).unwrap());
        let policy = AddressPolicy::new(&allowed);
        for address in ["127.0.0.1", "10.9.8.7", "fd00::5", "::ffff:127.0.0.1"] {
            assert_eq!(policy.refusal(ip(address)), None, "{address}");
        }
        for address in [
            "127.0.0.2",
            "192.168.0.1",
            "fc00::1",
            "::1",
            "169.254.169.254",
        ] {
            assert!(policy.refusal(ip(address)).is_some(), "{address}");
        }
        assert_eq!(
            policy.check_literal(ip("169.254.169.254")),
            Err("169.254.169.254 is the cloud metadata address, which the URL allow-list does not name".into())
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_refused_addresses() {
        let refusing = CheckedResolver {
            policy: Arc::new(AddressPolicy::default()),
        };
        let name: Name = "localhost".parse().unwrap();
        let error = match refusing.resolve(name).await {
            Err(error) => error.to_string(),
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
        };
        assert!(
            error.starts_with("localhost resolves to ")
                && error.ends_with(", which the URL allow-list does not name"),
            "{error}"
        );
        let allowing = CheckedResolver {
            policy: Arc::new(AddressPolicy::new(&[
                AddressRange::parse("127.0.0.0/8").unwrap(),
                AddressRange::parse("::1").unwrap(),
            ])),
        };
        let name: Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = match allowing.resolve(name).await {
            Ok(addrs) => addrs.collect(),
            Err(error) => panic!("{error}"),
        };
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
