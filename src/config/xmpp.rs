//! `chat.xmpp`: one XMPP account's settings and what serde cannot check of them. The adapter
//! (`adapters/xmpp`) reads these.

use std::path::PathBuf;

use serde::Deserialize;

use super::network::{ChatTls, RateConfig, check_name};
use crate::secrets::Secret;

/// One XMPP account in the configuration (`chat.xmpp`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppAccountConfig {
    /// The network's name in jarvis (grants, notify targets, logs).
    pub name: String,
    /// The account, `user@domain` (a `/resource` is kept if given).
    pub jid: String,
    pub password: Secret,
    /// The host to connect to; default: the JID's domain (no SRV lookup).
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default = "default_port")]
    pub port: u16,
    /// `starttls` (the default; TLS is required) or `plain` (no TLS at all, for a loopback
    /// test server only).
    #[serde(default)]
    pub tls: Tls,
    /// PEM file of certificates to trust beside the system's roots (a private CA, a
    /// self-signed server); the same key and meaning as on IRC.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), offered in TLS with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The nick in rooms; default: the bot's name.
    #[serde(default)]
    pub nick: Option<String>,
    /// Rooms to join, as `room@conference.example.com`.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// How fast lines may go out (default: a burst of 20, then 10 a second).
    #[serde(default)]
    pub rate: Option<RateConfig>,
}

impl XmppAccountConfig {
    /// What serde cannot check, named as `chat.xmpp[INDEX]…` for the `index`th account.
    pub fn check(&self, index: usize) -> Result<(), String> {
        let at = format!("chat.xmpp[{index}]");
        check_name(&self.name, &at)?;
        if let Some(rate) = &self.rate {
            rate.check(&format!("{at}.rate"))?;
        }
        self.tls_files().check(&at)?;
        if self.tls == Tls::Plain {
            let host = self.host();
            if !super::is_loopback(&host) {
                return Err(format!(
                    "chat.xmpp[{index}].tls: tls: plain would send the password in clear to {host}; use tls: starttls (the default)"
                ));
            }
        }
        Ok(())
    }

    /// The TLS files, under the keys every network shares.
    pub fn tls_files(&self) -> ChatTls<'_> {
        ChatTls {
            ca_file: self.ca_file.as_deref(),
            cert_file: self.cert_file.as_deref(),
            key_file: self.key_file.as_deref(),
        }
    }

    /// The host connected to: `server`, else the JID's domain.
    pub fn host(&self) -> String {
        self.server.clone().unwrap_or_else(|| {
            let bare = self.jid.split('/').next().unwrap_or(&self.jid);
            bare.rsplit('@').next().unwrap_or(bare).to_string()
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    #[default]
    Starttls,
    Plain,
}

fn default_port() -> u16 {
    5222
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_to_starttls_and_refuses_unknown_keys() {
        let c: XmppAccountConfig =
            serde_saphyr::from_str("name: j\njid: a@b\npassword: p\nrooms: [ops@conference.b]\n")
                .unwrap();
        assert_eq!(c.tls, Tls::Starttls);
        assert_eq!(c.port, 5222);
        let bad: Result<XmppAccountConfig, _> =
            serde_saphyr::from_str("name: j\njid: a@b\npassword: p\nroom: x\n");
        assert!(bad.is_err());
    }

    #[test]
    fn plain_xmpp_only_to_loopback() {
        let parse = |extra: &str| -> XmppAccountConfig {
            serde_saphyr::from_str(&format!(
                "name: j\njid: a@example.com/r\npassword: hunter22\n{extra}"
            ))
            .unwrap()
        };
        assert!(parse("tls: plain\nserver: 127.0.0.1\n").check(0).is_ok());
        assert!(parse("tls: plain\nserver: localhost\n").check(0).is_ok());
        assert!(parse("").check(0).is_ok());
        assert_eq!(
            parse("tls: plain\n").check(1).unwrap_err(),
            "chat.xmpp[1].tls: tls: plain would send the password in clear to example.com; use tls: starttls (the default)"
        );
        let c = parse("");
        assert!(!format!("{c:?}").contains("hunter22"));
    }
}
