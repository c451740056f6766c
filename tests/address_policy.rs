//! Which addresses DNS may publish, through the real jarvis against the testbed BIND: a
//! private address is not published unless the module's grant names its network, and a
//! skipped address is said in the run's channel, never skipped in silence.

mod support;

use std::process::Command;

use jarvis_testbed::Server;
use support::{Home, test_workers};

fn home(bind: &Server, publish: &str) -> Home {
    let home = Home::new(&format!(
        "workers:
  folders: [{workers}]
  modules:
    privateip: {{ env: {{ ADDRESS: 10.1.2.3 }} }}
    dns: {{ env: {{ DNS_SERVER: '{dns}', DNS_TSIG_NAME: '{name}', DNS_TSIG_SECRET: '{secret}', DNS_ZONE: '{zone}'{publish} }} }}
pipelines:
  internal:
    command: deploy
    providers: [local]
    stages:
      - {{ task: \"privateip:make\" }}
      - {{ task: \"dns:update\" }}
roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        workers = test_workers().display(),
        dns = bind.get("DNS_SERVER"),
        name = bind.get("DNS_TSIG_NAME"),
        secret = bind.get("DNS_TSIG_SECRET"),
        zone = bind.get("DNS_ZONE"),
    ));
    home.design(
        "web7",
        "instance:\n  hostname: web7\n  fqdn: web7.example.com\n  provider: local\n",
    );
    home
}

fn a_record(bind: &Server) -> String {
    let out = Command::new("dig")
        .args([
            "+short",
            "-p",
            bind.get("DNS_PORT"),
            "@127.0.0.1",
            "web7.example.com",
            "A",
        ])
        .output()
        .expect("dig (bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_private_address_is_published_only_where_the_grant_opts_in_and_never_in_silence() {
    let Some(bind) = Server::start("bind").unwrap() else {
        return;
    };
    let home = home(&bind, "");
    let mut sh = home.shell();
    sh.ask("deploy web7", "deploy #1 of web7 queued");
    let notice = sh.expect("not publishing 10.1.2.3");
    assert!(
        notice.contains("PUBLISH_NETWORKS"),
        "says how to opt in: {notice}"
    );
    sh.expect_where(
        |l| l.contains("web7 deploy #1") && (l.contains("succeeded") || l.contains("FAILED")),
        "the run's end",
    );
    sh.finish();
    assert_eq!(a_record(&bind), "", "nothing private was published");

    let home = self::home(&bind, ", PUBLISH_NETWORKS: '10.0.0.0/8'");
    let mut sh = home.shell();
    sh.ask("deploy web7", "deploy #1 of web7 queued");
    sh.expect("web7 deploy #1 succeeded");
    sh.finish();
    assert_eq!(
        a_record(&bind),
        "10.1.2.3",
        "the opted-in network is published"
    );
}
