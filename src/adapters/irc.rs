//! IRC. Only this module knows IRC.

use serde::Deserialize;

/// One IRC network in the configuration (`chat.irc`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrcNetworkConfig {
    /// The network's name in jarvis (grants, notify targets, logs).
    pub name: String,
    pub server: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: bool,
    /// Nick; defaults to the bot's name.
    #[serde(default)]
    pub nick: Option<String>,
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    #[serde(default)]
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub account: String,
    pub password: String,
}

fn default_port() -> u16 {
    6667
}

impl IrcNetworkConfig {
    pub fn secret_values(&self) -> Option<String> {
        self.sasl.as_ref().map(|s| s.password.clone())
    }
}
