//! `dns`: the host's address and SSH fingerprint records, written by DNS UPDATE (RFC 2136)
//! signed with TSIG (RFC 8945) to the zone's primary server.
//!
//! Tasks:
//! - `update_host` (also `update`, the name operators already use): makes the A, AAAA and
//!   SSHFP records of `instance.fqdn` exactly what the clipboard says, in ONE UPDATE. Its
//!   prerequisites are the records read just before (and "no CNAME at the name"), so a change
//!   made by someone else in between fails the update (exit 75, retried) instead of being
//!   silently overwritten. Nothing is sent when the records are already current.
//! - `remove_host`: deletes the A, AAAA and SSHFP records of `instance.fqdn`; other records
//!   at the name stay. Records that are already gone are success.
//!
//! Reads `instance.fqdn` and the addresses as [`crate::host_facts`] describes (IPv4 from
//! `instance.ipv4`, `linode.ipv4`, `instance.ip`; IPv6 from `instance.ipv6`, `linode.ipv6`,
//! `instance.ip`). The SSHFP records come ONLY from the host keys the engine has pinned for the
//! run's host, `jarvis.host_keys: [{algorithm, fingerprint: "SHA256:…"}]` (never from
//! `ssh.sshfp` or anything else a design could write): SSHFP algorithm 1 RSA, 3 ECDSA,
//! 4 Ed25519, fingerprint type 2 (SHA-256), the digest in hex. Writes `dns.fqdn`, `dns.zone` and `dns.records` (the
//! records now published, one presentation line each; empty after `remove_host`).
//!
//! Environment (granted to the module):
//! - `DNS_SERVER`: the primary, `ADDRESS[:PORT]` (port 53 when left out); required.
//! - `DNS_TSIG_NAME`, `DNS_TSIG_SECRET` (base64): the key; both or neither (unsigned).
//! - `DNS_TSIG_ALGORITHM`: `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
//! - `DNS_ZONE`: the zone to update; else the zone whose SOA the server names for the fqdn,
//!   else the fqdn's parent.
//! - `DNS_TTL` (seconds, default 300), `DNS_TIMEOUT` (seconds per exchange, default 5).
//!
//! A refusal is reported as one line naming the code, the server and the key, never the
//! secret: `REFUSED by 198.51.100.53 (TSIG key dns-jarvis): …`. Timeouts, unreachable servers,
//! SERVFAIL and failed prerequisites exit 75; refusals and key problems are fatal.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use hickory_net::proto;
use proto::rr::rdata::sshfp::{Algorithm, FingerprintType};
use proto::rr::rdata::tsig::TsigAlgorithm;
use proto::rr::rdata::{A, AAAA, SSHFP};
use proto::rr::{Name, RData, Record, RecordType, TSigner};
use serde_json::{Value, json};

use crate::host_facts::{self, Sshfp};
use crate::protocol::{self, Failure, Mapping, TaskResult};
use transport::Client;

mod transport;
mod update;

const TASKS: &[&str] = &["update_host", "update", "remove_host"];

/// The record types this module owns at a host's name.
const OWNED_TYPES: [RecordType; 3] = [RecordType::A, RecordType::AAAA, RecordType::SSHFP];

/// How far the client's clock may be from the server's, in seconds.
const TSIG_FUDGE: u16 = 300;

pub fn run(task: &str) -> ExitCode {
    match task {
        "update_host" | "update" => protocol::run_task(update_host),
        "remove_host" => protocol::run_task(remove_host),
        other => crate::unknown_task("dns", other, TASKS),
    }
}

fn update_host(mut clipboard: Mapping) -> TaskResult {
    let fqdn = host_facts::fqdn(&clipboard)?;
    let addresses = host_facts::addresses(&clipboard)?;
    if addresses.is_empty() {
        return Err(Failure::fatal(format!(
            "no public IP address for {fqdn} on the clipboard (looked at {})",
            host_facts::address_sources()
        )));
    }
    let fingerprints = host_facts::sshfp(&clipboard)?;
    let settings = Settings::from_env()?;
    let name = dns_name(&fqdn)?;
    let wanted: Vec<Record> = addresses
        .iter()
        .map(|ip| address_record(&name, settings.ttl, *ip))
        .chain(
            fingerprints
                .iter()
                .map(|fp| sshfp_record(&name, settings.ttl, fp)),
        )
        .collect();
    protocol::progress(&format!(
        "updating A/AAAA/SSHFP of {fqdn} at {}",
        settings.server_label
    ));
    let client = Client {
        settings: &settings,
    };
    let zone = protocol::block_on(client.replace(&name, &wanted))??;
    record_outcome(&mut clipboard, &fqdn, &zone, &wanted);
    protocol::record_made(&mut clipboard, "dns", &fqdn);
    Ok(Some(clipboard))
}

fn remove_host(mut clipboard: Mapping) -> TaskResult {
    let fqdn = host_facts::fqdn(&clipboard)?;
    if protocol::undoing() && !protocol::made_ids(&clipboard, "dns").contains(&fqdn) {
        protocol::notice(&format!(
            "this run wrote no DNS records for {fqdn}: nothing to undo, its records are left alone"
        ));
        return Ok(Some(clipboard));
    }
    let settings = Settings::from_env()?;
    let name = dns_name(&fqdn)?;
    protocol::progress(&format!(
        "removing A/AAAA/SSHFP of {fqdn} at {}",
        settings.server_label
    ));
    let client = Client {
        settings: &settings,
    };
    let zone = protocol::block_on(client.remove(&name))??;
    record_outcome(&mut clipboard, &fqdn, &zone, &[]);
    protocol::forget_made(&mut clipboard, "dns", &fqdn);
    Ok(Some(clipboard))
}

fn record_outcome(clipboard: &mut Mapping, fqdn: &str, zone: &Name, records: &[Record]) {
    let section = protocol::section(clipboard, "dns");
    section.insert("fqdn".into(), json!(fqdn));
    section.insert("zone".into(), json!(shown(zone)));
    let lines: Vec<Value> = records.iter().map(|r| json!(presentation(r))).collect();
    section.insert("records".into(), Value::Array(lines));
}

fn dns_name(fqdn: &str) -> Result<Name, Failure> {
    Name::from_ascii(format!("{fqdn}."))
        .map_err(|e| Failure::fatal(format!("instance.fqdn '{fqdn}' is not a DNS name: {e}")))
}

fn address_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, data)
}

fn sshfp_record(name: &Name, ttl: u32, fp: &Sshfp) -> Record {
    let data = SSHFP::new(
        Algorithm::from(fp.algorithm),
        FingerprintType::from(fp.fptype),
        fp.fingerprint.clone(),
    );
    Record::from_rdata(name.clone(), ttl, RData::SSHFP(data))
}

fn presentation(record: &Record) -> String {
    format!(
        "{} {} IN {} {}",
        record.name,
        record.ttl,
        record.record_type(),
        record.data
    )
}

/// What the module was granted: where to send updates, and how to sign them.
struct Settings {
    server: SocketAddr,
    /// The server as the operator wrote it, for messages.
    server_label: String,
    key: Option<Key>,
    zone: Option<Name>,
    ttl: u32,
    timeout: Duration,
}

struct Key {
    name: String,
    signer: TSigner,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn env_number(name: &str, default: u64) -> Result<u64, Failure> {
    match env(name) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| Failure::fatal(format!("{name} must be a whole number, not '{text}'"))),
    }
}

impl Settings {
    fn from_env() -> Result<Self, Failure> {
        let server_label = env("DNS_SERVER")
            .ok_or_else(|| Failure::fatal("DNS_SERVER is not granted to the dns module"))?;
        let server = resolve_server(&server_label)?;
        let key = match (env("DNS_TSIG_NAME"), env("DNS_TSIG_SECRET")) {
            (Some(name), Some(secret)) => Some(Key::new(name, &secret)?),
            (None, None) => {
                protocol::log("no DNS_TSIG_NAME/DNS_TSIG_SECRET granted: sending unsigned updates");
                None
            }
            (Some(_), None) => {
                return Err(Failure::fatal(
                    "DNS_TSIG_NAME is granted without DNS_TSIG_SECRET",
                ));
            }
            (None, Some(_)) => {
                return Err(Failure::fatal(
                    "DNS_TSIG_SECRET is granted without DNS_TSIG_NAME",
                ));
            }
        };
        let zone = env("DNS_ZONE")
            .map(|z| {
                let text = format!("{}.", z.trim_end_matches('.'));
                Name::from_ascii(&text)
                    .map_err(|e| Failure::fatal(format!("DNS_ZONE '{z}' is not a DNS name: {e}")))
            })
            .transpose()?;
        let ttl = u32::try_from(env_number("DNS_TTL", 300)?)
            .map_err(|_| Failure::fatal("DNS_TTL is too large"))?;
        let timeout = Duration::from_secs(env_number("DNS_TIMEOUT", 5)?.max(1));
        Ok(Settings {
            server,
            server_label,
            key,
            zone,
            ttl,
            timeout,
        })
    }

    /// `(TSIG key NAME)` or `(unsigned)`, for messages.
    fn key_label(&self) -> String {
        match &self.key {
            Some(key) => format!("TSIG key {}", key.name),
            None => "unsigned: no DNS_TSIG_NAME granted".to_string(),
        }
    }
}

fn resolve_server(text: &str) -> Result<SocketAddr, Failure> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    let with_port = if text.contains(':') {
        text.to_string()
    } else {
        format!("{text}:53")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| Failure::retry(format!("cannot resolve DNS_SERVER {text}: {e}")))?
        .next()
        .ok_or_else(|| Failure::retry(format!("DNS_SERVER {text} has no address")))
}

impl Key {
    fn new(name: String, secret: &str) -> Result<Self, Failure> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret)
            .map_err(|_| Failure::fatal(format!("DNS_TSIG_SECRET for key {name} is not base64")))?;
        let algorithm = match env("DNS_TSIG_ALGORITHM").as_deref() {
            None | Some("hmac-sha256") => TsigAlgorithm::HmacSha256,
            Some("hmac-sha384") => TsigAlgorithm::HmacSha384,
            Some("hmac-sha512") => TsigAlgorithm::HmacSha512,
            Some(other) => {
                return Err(Failure::fatal(format!(
                    "DNS_TSIG_ALGORITHM '{other}' is not one of hmac-sha256, hmac-sha384, hmac-sha512"
                )));
            }
        };
        let key_name = Name::from_ascii(&name).map_err(|e| {
            Failure::fatal(format!("DNS_TSIG_NAME '{name}' is not a DNS name: {e}"))
        })?;
        let signer = TSigner::new(bytes, algorithm, key_name, TSIG_FUDGE)
            .map_err(|e| Failure::fatal(format!("cannot use TSIG key {name}: {e}")))?;
        Ok(Key { name, signer })
    }
}

/// A name as people write it, without the root's trailing dot.
fn shown(name: &Name) -> String {
    name.to_string().trim_end_matches('.').to_string()
}
