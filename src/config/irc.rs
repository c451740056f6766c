//! `chat.irc`: one IRC network's settings and what serde cannot check of them. The adapter
//! (`adapters/irc`) reads these; the configuration knows only the names a setting may hold.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::network::{ChatTls, RateConfig, check_name};
use crate::secrets::Secret;

/// One IRC network in the configuration (`chat.irc`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrcNetworkConfig {
    /// The network's name in jarvis (grants, notify targets, logs).
    pub name: String,
    pub server: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// TLS to the server. `false` is refused for a server that is not this machine
    /// (loopback): lines, passwords and the account tags roles rest on would cross the
    /// network in clear (see `insecure_cleartext_credentials`).
    #[serde(default)]
    pub tls: bool,
    /// PEM file of certificates to trust beside the system's roots (a private CA, a
    /// self-signed server); the same key and meaning as on XMPP. (`tls_ca` is the older
    /// name, still read.)
    #[serde(default, alias = "tls_ca")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), offered in TLS with `key_file`; with
    /// `sasl.mechanism: external` they log jarvis in. (`tls_cert` is the older name, still
    /// read.)
    #[serde(default, alias = "tls_cert")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`. (`tls_key` is the older name, still read.)
    #[serde(default, alias = "tls_key")]
    pub key_file: Option<PathBuf>,
    /// Nick; defaults to the bot's name.
    #[serde(default)]
    pub nick: Option<String>,
    /// Ident (user name); defaults to the nick.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub realname: Option<String>,
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    #[serde(default)]
    pub channels: Vec<String>,
    /// Lines jarvis may send: a burst, then a steady rate. The default suits InspIRCd's
    /// and Solanum's stock limits (about one line a second after a burst). (`flood` is the
    /// older name, still read.)
    #[serde(default, alias = "flood")]
    pub rate: Option<RateConfig>,
    /// The first wait before reconnecting; it doubles (with jitter) up to `reconnect_max`.
    #[serde(
        default = "default_reconnect_min",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub reconnect_min: Duration,
    #[serde(
        default = "default_reconnect_max",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub reconnect_max: Duration,
    /// Silence from the server after which jarvis sends a PING; as long again without an
    /// answer and the connection counts as dead.
    #[serde(
        default = "default_ping_interval",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub ping_interval: Duration,
    /// Ask for IRCv3 capabilities (account-tag, echo-message, …). Off makes jarvis behave
    /// as on an old server (WHOIS for accounts, "written" for delivery); for tests.
    #[serde(default = "yes")]
    pub ircv3: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// The services account (required for PLAIN; for EXTERNAL, an optional authzid).
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaslMechanism {
    #[default]
    Plain,
    External,
}

fn default_port() -> u16 {
    6667
}
fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(300)
}
fn default_ping_interval() -> Duration {
    Duration::from_secs(60)
}
fn yes() -> bool {
    true
}

impl IrcNetworkConfig {
    pub fn secret_values(&self) -> Option<String> {
        self.sasl
            .as_ref()
            .and_then(|s| s.password.as_ref())
            .map(|p| p.expose().to_string())
    }

    /// What serde cannot check, named as `chat.irc[INDEX]…` for the `index`th network.
    pub fn check(&self, index: usize) -> Result<(), String> {
        self.check_at(&format!("chat.irc[{index}]"))
    }

    /// The same, named as `at…`.
    pub fn check_at(&self, at: &str) -> Result<(), String> {
        check_name(&self.name, at)?;
        if self.server.is_empty() {
            return Err(format!("{at}.server: must not be empty"));
        }
        for nick in self.nick.iter().chain(self.user.iter()) {
            if !valid_target(nick) || is_channel(nick) {
                return Err(format!("{at}: '{nick}' is not a valid nick or user name"));
            }
        }
        for ch in &self.channels {
            if !valid_target(ch) || !is_channel(ch) {
                return Err(format!(
                    "{at}.channels: '{ch}' is not a channel name (like #ops)"
                ));
            }
        }
        if let Some(s) = &self.sasl {
            match s.mechanism {
                SaslMechanism::Plain if s.account.is_none() || s.password.is_none() => {
                    return Err(format!("{at}.sasl: PLAIN needs an account and a password"));
                }
                SaslMechanism::External if !self.tls || self.cert_file.is_none() => {
                    return Err(format!(
                        "{at}.sasl: EXTERNAL needs tls: true with cert_file and key_file"
                    ));
                }
                SaslMechanism::Plain if !self.tls && !super::is_loopback(&self.server) => {
                    return Err(format!(
                        "{at}.sasl: SASL PLAIN would send the password in clear to {}; set tls: true (or use SASL EXTERNAL)",
                        self.server
                    ));
                }
                _ => {}
            }
        }
        self.tls_files().check(at)?;
        if let Some(rate) = &self.rate {
            rate.check(&format!("{at}.rate"))?;
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(format!(
                "{at}: reconnect_min must be positive and at most reconnect_max"
            ));
        }
        if self.ping_interval < Duration::from_secs(1) {
            return Err(format!("{at}.ping_interval: at least 1s"));
        }
        Ok(())
    }
}

impl IrcNetworkConfig {
    /// The TLS files, under the keys every network shares.
    pub fn tls_files(&self) -> ChatTls<'_> {
        ChatTls {
            ca_file: self.ca_file.as_deref(),
            cert_file: self.cert_file.as_deref(),
            key_file: self.key_file.as_deref(),
        }
    }
}

/// A nick or channel as IRC takes it in a command's parameter: not empty, no leading `:`,
/// no comma, no space or control character.
pub fn valid_target(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(':')
        && !name.contains(',')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Whether `name` is a channel (`#`, `&`, `+` or `!` first).
pub fn is_channel(name: &str) -> bool {
    name.starts_with(['#', '&', '+', '!'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tls: &str) -> IrcNetworkConfig {
        serde_saphyr::from_str(&format!(
            "name: n\nserver: irc.example.com\ntls: true\n{tls}"
        ))
        .unwrap()
    }

    #[test]
    fn the_tls_files_have_the_shared_names_and_the_old_ones_still_read() {
        for keys in [
            "ca_file: /ca.pem\ncert_file: /c.pem\nkey_file: /k.pem\n",
            "tls_ca: /ca.pem\ntls_cert: /c.pem\ntls_key: /k.pem\n",
        ] {
            let c = parse(keys);
            let files = c.tls_files();
            assert_eq!(files.ca_file, Some(std::path::Path::new("/ca.pem")));
            assert_eq!(files.cert_file, Some(std::path::Path::new("/c.pem")));
            assert_eq!(files.key_file, Some(std::path::Path::new("/k.pem")));
            assert!(c.check(0).is_ok());
        }
        assert_eq!(
            parse("tls_cert: /c.pem\n").check(2).unwrap_err(),
            "chat.irc[2]: cert_file and key_file go together"
        );
        assert_eq!(
            parse("sasl:\n  mechanism: external\n")
                .check(0)
                .unwrap_err(),
            "chat.irc[0].sasl: EXTERNAL needs tls: true with cert_file and key_file"
        );
    }
}
