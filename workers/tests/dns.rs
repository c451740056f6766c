//! `dns:update_host` / `dns:remove_host` against a real BIND 9 (tests/testbed/servers/bind.sh),
//! checked with `dig`.

mod world;

use std::time::{Duration, Instant};

use jarvis_testbed::Server;
use world::{Outcome, run_worker, tool};

const ED25519_FP: &str = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988";
const RSA_FP: &str = "a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8e9f";
/// The same digests as the engine's pins carry them (`SHA256:` + unpadded base64).
const ED25519_B64: &str = "Hy49TFtqeYgfLj1MW2p5iB8uPUxbanmIHy49TFtqeYg";
const RSA_B64: &str = "oLHC0+T1BhcoOUpbbH2On6CxwtPk9QYXKDlKW2x9jp8";
/// An SSHFP a design wrote on the clipboard itself: never published.
const DESIGN_FP: &str = "6666666666666666666666666666666666666666666666666666666666666666";

fn clipboard(fqdn: &str) -> String {
    format!(
        "instance:
  hostname: {host}
  fqdn: {fqdn}
jarvis:
  run_id: 42
  host_keys:
    - {{algorithm: ssh-ed25519, fingerprint: 'SHA256:{ED25519_B64}'}}
    - {{algorithm: ssh-rsa, fingerprint: 'SHA256:{RSA_B64}'}}
linode:
  ipv4: ['203.0.113.7', '192.168.128.5']
  ipv6: '2001:db8::7/128'
ssh:
  sshfp:
    - {{algorithm: 4, fptype: 2, fingerprint: {DESIGN_FP}}}
",
        host = fqdn.split('.').next().unwrap()
    )
}

fn bind() -> Option<Server> {
    Server::start("bind").expect("BIND did not start")
}

fn grants(server: &Server) -> Vec<(&'static str, String)> {
    vec![
        ("DNS_SERVER", server.get("DNS_SERVER").to_string()),
        ("DNS_TSIG_NAME", server.get("DNS_TSIG_NAME").to_string()),
        ("DNS_TSIG_SECRET", server.get("DNS_TSIG_SECRET").to_string()),
    ]
}

fn run(task: &str, clip: &str, grants: &[(&'static str, String)]) -> Outcome {
    let pairs: Vec<(&str, &str)> = grants.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_worker("dns", task, clip, &pairs)
}

/// The records of `rtype` at `name`, as dig prints them, normalised (SSHFP hex joined, lower case).
fn dig(server: &Server, name: &str, rtype: &str) -> Vec<String> {
    let port = server.get("DNS_PORT");
    let mut lines: Vec<String> = tool("dig", &["+short", "-p", port, "@127.0.0.1", name, rtype])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if rtype == "SSHFP" && fields.len() > 2 {
                format!(
                    "{} {} {}",
                    fields[0],
                    fields[1],
                    fields[2..].concat().to_lowercase()
                )
            } else {
                line.to_string()
            }
        })
        .collect();
    lines.sort();
    lines
}

fn serial(server: &Server) -> u64 {
    let soa = dig(server, "example.com", "SOA");
    soa[0].split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn update_host_replaces_the_old_records_in_one_update() {
    let Some(server) = bind() else { return };
    let grants = grants(&server);
    assert_eq!(dig(&server, "loki.example.com", "A"), ["192.0.2.10"]);
    let before = serial(&server);

    let out = run("update_host", &clipboard("loki.example.com"), &grants);
    out.assert_success();

    assert_eq!(
        dig(&server, "loki.example.com", "A"),
        ["203.0.113.7"],
        "private address skipped, old one gone"
    );
    assert_eq!(dig(&server, "loki.example.com", "AAAA"), ["2001:db8::7"]);
    assert_eq!(
        dig(&server, "loki.example.com", "SSHFP"),
        [format!("1 2 {RSA_FP}"), format!("4 2 {ED25519_FP}")]
    );
    assert_eq!(
        dig(&server, "loki.example.com", "TXT"),
        ["\"kept by jarvis\""],
        "records it does not own stay"
    );
    // BIND bumps the serial once per UPDATE message: the replacement was one message.
    assert_eq!(serial(&server), before + 1);

    let clip = out.clipboard();
    assert_eq!(clip["dns"]["zone"], "example.com");
    assert_eq!(clip["dns"]["records"].as_array().unwrap().len(), 4);
    assert_eq!(
        clip["instance"]["hostname"], "loki",
        "the rest of the clipboard is kept"
    );

    // `update` is the name operators use; nothing changes the second time.
    let again = run("update", &clipboard("loki.example.com"), &grants);
    again.assert_success();
    assert!(again.stderr.contains("already current"), "{}", again.stderr);
    assert_eq!(serial(&server), before + 1);
}

#[test]
fn remove_host_deletes_only_the_host_records_and_is_idempotent() {
    let Some(server) = bind() else { return };
    let grants = grants(&server);
    run("update_host", &clipboard("loki.example.com"), &grants).assert_success();

    let out = run("remove_host", &clipboard("loki.example.com"), &grants);
    out.assert_success();
    for rtype in ["A", "AAAA", "SSHFP"] {
        assert!(
            dig(&server, "loki.example.com", rtype).is_empty(),
            "{rtype} left"
        );
    }
    assert_eq!(
        dig(&server, "loki.example.com", "TXT"),
        ["\"kept by jarvis\""]
    );
    assert_eq!(
        out.clipboard()["dns"]["records"].as_array().unwrap().len(),
        0
    );

    run("remove_host", &clipboard("loki.example.com"), &grants).assert_success();
}

#[test]
fn key_problems_get_one_clear_line_without_the_secret() {
    let Some(server) = bind() else { return };
    let port = server.get("DNS_PORT");
    let good = grants(&server);
    let secret = server.get("DNS_TSIG_SECRET");
    let wrong_secret = "c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1zZXJ2ZXJzLWtleQ==";
    let clip = clipboard("loki.example.com");

    let with = |name: &str, secret: &str| -> Vec<(&'static str, String)> {
        vec![
            ("DNS_SERVER", good[0].1.clone()),
            ("DNS_TSIG_NAME", name.to_string()),
            ("DNS_TSIG_SECRET", secret.to_string()),
        ]
    };

    let wrong = run("update_host", &clip, &with("dns-jarvis", wrong_secret));
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    let line = wrong.error();
    assert!(
        line.starts_with(&format!("BADSIG by 127.0.0.1:{port} (TSIG key dns-jarvis)")),
        "{line}"
    );
    assert!(
        !line.contains("truncated"),
        "hickory's misleading wording leaked: {line}"
    );
    assert!(!wrong.all_output().contains(wrong_secret) && !wrong.all_output().contains(secret));

    let unknown = run("update_host", &clip, &with("dns-nobody", secret));
    assert_eq!(unknown.code, 1);
    let line = unknown.error();
    assert!(
        line.starts_with("BADKEY by") && line.contains("TSIG key dns-nobody"),
        "{line}"
    );
    assert!(!unknown.all_output().contains(secret));

    let other = run(
        "update_host",
        &clip,
        &with(
            server.get("DNS_OTHER_TSIG_NAME"),
            server.get("DNS_OTHER_TSIG_SECRET"),
        ),
    );
    assert_eq!(other.code, 1);
    assert_eq!(
        other.error(),
        format!(
            "REFUSED by 127.0.0.1:{port} (TSIG key dns-other): not allowed to update zone example.com"
        )
    );

    let unsigned = run("update_host", &clip, &good[..1]);
    assert_eq!(unsigned.code, 1);
    let line = unsigned.error();
    assert!(
        line.starts_with(&format!("REFUSED by 127.0.0.1:{port} (unsigned")),
        "{line}"
    );

    // A zone the server does not serve.
    let elsewhere = run("update_host", &clipboard("loki.example.org"), &good);
    assert_eq!(elsewhere.code, 1);
    assert!(
        elsewhere.error().starts_with(&format!(
            "NOTAUTH by 127.0.0.1:{port} (TSIG key dns-jarvis): not authoritative for zone example.org"
        )),
        "{}",
        elsewhere.stderr
    );

    assert_eq!(
        dig(&server, "loki.example.com", "A"),
        ["192.0.2.10"],
        "nothing was changed"
    );
}

#[test]
fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let Some(server) = bind() else { return };
    assert_eq!(dig(&server, "wide.example.com", "A").len(), 100);
    let out = run(
        "update_host",
        &clipboard("wide.example.com"),
        &grants(&server),
    );
    out.assert_success();
    assert!(out.stderr.contains("over TCP"), "{}", out.stderr);
    assert_eq!(dig(&server, "wide.example.com", "A"), ["203.0.113.7"]);
}

#[test]
fn a_server_that_does_not_answer_is_worth_a_retry() {
    // A UDP port that takes datagrams and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let out = run_worker(
        "dns",
        "update_host",
        &clipboard("loki.example.com"),
        &[
            ("DNS_SERVER", &address),
            ("DNS_ZONE", "example.com"),
            ("DNS_TIMEOUT", "1"),
            ("DNS_TSIG_NAME", "dns-jarvis"),
            ("DNS_TSIG_SECRET", "c2VjcmV0"),
        ],
    );
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert_eq!(out.error(), format!("no answer from {address} within 1s"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_clipboard_without_addresses_is_refused_before_any_update() {
    let out = run_worker(
        "dns",
        "update_host",
        "instance: {hostname: loki, fqdn: loki.example.com}\n",
        &[("DNS_SERVER", "127.0.0.1:9")],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.error()
            .starts_with("no public IP address for loki.example.com"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_server_restarts_in_its_folder_with_the_update_kept() {
    let Some(mut server) = bind() else { return };
    run(
        "update_host",
        &clipboard("loki.example.com"),
        &grants(&server),
    )
    .assert_success();
    let port = server.get("DNS_PORT").to_string();
    server.stop(None).unwrap();
    server.restart().unwrap();
    assert_eq!(server.get("DNS_PORT"), port);
    assert_eq!(dig(&server, "loki.example.com", "A"), ["203.0.113.7"]);
    // The key is kept too: the worker still gets in.
    run(
        "remove_host",
        &clipboard("loki.example.com"),
        &grants(&server),
    )
    .assert_success();
}
