//! `jarvis check-config` through the real binary: configurations that would send a
//! credential in clear, or tie identities to people badly, are refused with file, line,
//! column and the fix.

mod support;

use support::{Home, check_config};

/// Checks `config` (YAML after the data folder and designs lines `Home` writes first) and
/// returns what check-config said; it must have failed.
fn refused(config: &str) -> String {
    let home = Home::new(config);
    let (ok, text) = check_config(&home.config());
    assert!(!ok, "check-config accepted:\n{config}\nsaying: {text}");
    let file = home.config().display().to_string();
    text.trim().replace(&file, "config.yaml")
}

fn accepted(config: &str) {
    let home = Home::new(config);
    let (ok, text) = check_config(&home.config());
    assert!(ok, "check-config refused:\n{config}\nsaying: {text}");
}

// Home writes `data_dir:`, `designs:` and `  folder:` first: the configuration starts at
// line 4.

#[test]
fn sasl_plain_without_tls_to_another_host_is_refused() {
    let said = refused(
        "chat:
  irc:
    - name: libera
      server: irc.example.com
      port: 6667
      sasl:
        account: jarvis
        password: hunter22
      channels: ['#ops']
",
    );
    assert_eq!(
        said,
        "config.yaml:9:7: chat.irc[0].sasl: SASL PLAIN would send the password in clear to \
         irc.example.com; set tls: true (or use SASL EXTERNAL)"
    );
    assert!(!said.contains("hunter22"));
    // With TLS, or to this machine, it is fine.
    accepted(
        "chat:\n  irc:\n    - { name: libera, server: irc.example.com, tls: true, sasl: { account: j, password: p } }\n",
    );
    accepted(
        "chat:\n  irc:\n    - { name: t, server: 127.0.0.1, sasl: { account: j, password: p } }\n    - { name: u, server: '::1', sasl: { account: j, password: p } }\n",
    );
}

#[test]
fn xmpp_without_tls_to_another_host_is_refused() {
    let said = refused(
        "chat:
  xmpp:
    - name: jabber
      jid: jarvis@example.com
      password: hunter22
      tls: plain
",
    );
    assert_eq!(
        said,
        "config.yaml:9:7: chat.xmpp[0].tls: tls: plain would send the password in clear to \
         example.com; use tls: starttls (the default)"
    );
    let said = refused(
        "chat:\n  xmpp:\n    - { name: a, jid: j@localhost, password: p, tls: plain, server: 127.0.0.1 }\n    - { name: b, jid: j@localhost, password: p, tls: plain, server: xmpp.example.net }\n",
    );
    assert!(
        said.starts_with("config.yaml:7:")
            && said.contains(" chat.xmpp[1].tls: ")
            && said.contains("xmpp.example.net"),
        "{said}"
    );
}

#[test]
fn irc_accounts_must_name_their_network() {
    let said = refused(
        "roles:
  grants:
    - { console: \"*\", roles: [admin] }
    - { irc_account: bob, roles: [viewer] }
",
    );
    assert!(
        said.starts_with(
            "config.yaml:7:7: roles.grants[1]: the irc_account grant for 'bob' needs a network"
        ),
        "{said}"
    );
    let said = refused(
        "roles:
  people:
    alice:
      - { xmpp_jid: alice@example.com }
      - { irc_account: alice }
",
    );
    assert!(
        said.starts_with(
            "config.yaml:8:9: roles.people.alice[1]: the irc_account 'alice' needs a network"
        ),
        "{said}"
    );
}

#[test]
fn an_identity_of_two_people_is_refused_naming_both() {
    let said = refused(
        "roles:
  people:
    alice:
      - { xmpp_jid: alice@example.com }
    mallory:
      - { xmpp_jid: ALICE@example.com }
",
    );
    assert_eq!(
        said,
        "config.yaml:9:9: roles.people.mallory[0]: JID ALICE@example.com is already alice's \
         (roles.people.alice[0]); an identity belongs to at most one person"
    );
    accepted(
        "roles:
  people:
    alice:
      - { irc_account: alice, network: libera }
      - { xmpp_jid: alice@example.com }
      - { console: alice }
  grants:
    - { person: alice, roles: [deployer, approver] }
    - { irc_account: bob, network: libera, roles: [viewer] }
",
    );
}

/// A database URL's password shows nowhere: `migrate` names the URL with the password
/// replaced, whether it fails or (today's SQLite-only store takes the URL for a file name)
/// succeeds.
#[test]
fn database_urls_are_shown_without_their_password() {
    let home = Home::new("database_url: postgres://jarvis:Hunter22Secret@db.invalid/jarvis\n");
    let out = std::process::Command::new(support::JARVIS)
        .current_dir(home.dir.path())
        .arg("migrate")
        .arg("--config")
        .arg(home.config())
        .output()
        .expect("run jarvis migrate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("Hunter22Secret"), "{text}");
    assert!(
        text.contains("postgres://jarvis:***@db.invalid/jarvis"),
        "{text}"
    );
}

#[test]
fn chat_networks_share_one_namespace_and_one_shape_of_rate() {
    // A name is how notify targets and grants find a network: unique across IRC and XMPP.
    let said = refused(
        "chat:
  irc:
    - { name: ops, server: 127.0.0.1 }
  xmpp:
    - name: ops
      jid: jarvis@localhost
      password: p
",
    );
    assert_eq!(
        said,
        "config.yaml:8:7: chat.xmpp[0].name: 'ops' is already the name of chat.irc[0]; every \
         chat network needs its own"
    );
    // XMPP's rate is checked as IRC's is, under the same key.
    let said = refused(
        "chat:\n  xmpp:\n    - { name: j, jid: j@localhost, password: p, rate: { burst: 0, per_second: 1 } }\n",
    );
    assert!(
        said.contains("chat.xmpp[0].rate: burst and per_second must be positive"),
        "{said}"
    );
    let said = refused(
        "chat:\n  irc:\n    - { name: i, server: 127.0.0.1, rate: { burst: 5, per_second: 0 } }\n",
    );
    assert!(
        said.contains("chat.irc[0].rate: burst and per_second must be positive"),
        "{said}"
    );
    // IRC's older spelling of the key is still read.
    accepted(
        "chat:\n  irc:\n    - { name: i, server: 127.0.0.1, flood: { burst: 5, per_second: 1 } }\n",
    );
    let said = refused("chat:\n  xmpp:\n    - { name: 'a b', jid: j@localhost, password: p }\n");
    assert!(
        said.contains("chat.xmpp[0].name: must be one word"),
        "{said}"
    );
}
