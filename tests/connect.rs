//! `jarvis check-config --connect` through the real binary: a target that is up (the testbed's
//! BIND as the dns worker's `DNS_SERVER`) is ok, targets on a closed port say why not, the
//! exit status says that one failed, and a URL's user and password never show.

mod support;

use std::process::Command;

use jarvis_testbed::Server;
use support::JARVIS;

/// A loopback port nothing listens on: bound, noted, and let go.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `jarvis check-config --config PATH [EXTRA]`: whether it passed, stdout, stderr.
fn check_config(path: &std::path::Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(JARVIS)
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .args(extra)
        .output()
        .expect("run jarvis check-config");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn connect_says_which_targets_answer_and_fails_if_one_does_not() {
    let Some(bind) = Server::start("bind").unwrap() else {
        return;
    };
    let dns_server = bind.get("DNS_SERVER");
    let closed = closed_port();
    let dir = tempfile::Builder::new()
        .prefix("jarvis-connect-")
        .tempdir()
        .unwrap();
    let config = dir.path().join("jarvis.yaml");
    std::fs::write(
        &config,
        format!(
            "data_dir: {data}
designs:
  gist:
    api: http://127.0.0.1:{closed}
workers:
  modules:
    dns:
      env:
        DNS_SERVER: \"{dns_server}\"
    alertmanager:
      env:
        ALERTMANAGER_URL: \"http://watcher:hunter22@127.0.0.1:{closed}/\"
",
            data = dir.path().join("data").display(),
        ),
    )
    .unwrap();

    // Without --connect nothing is tried, and the file itself is fine.
    let (ok, stdout, stderr) = check_config(&config, &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(!stdout.contains("gist API"), "{stdout}");

    let (ok, stdout, stderr) = check_config(&config, &["--connect"]);
    assert!(!ok, "a target was down, yet it passed:\n{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].ends_with(": ok (0 pipelines, 0 IRC networks, 0 XMPP accounts)"),
        "{stdout}"
    );
    assert_eq!(
        lines[1..],
        [
            format!("gist API (http://127.0.0.1:{closed}): cannot connect: connection refused"),
            format!(
                "alertmanager worker (ALERTMANAGER_URL http://127.0.0.1:{closed}): cannot connect: connection refused"
            ),
            format!("dns worker (DNS_SERVER {dns_server}): ok"),
        ],
        "{stdout}{stderr}"
    );
    let everything = format!("{stdout}{stderr}");
    assert!(
        !everything.contains("hunter22") && !everything.contains("watcher"),
        "{everything}"
    );
}
