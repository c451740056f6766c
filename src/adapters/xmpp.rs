//! XMPP. Only this module knows XMPP.

use serde::Deserialize;

/// One XMPP account in the configuration (`chat.xmpp`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppAccountConfig {
    /// The network's name in jarvis (grants, notify targets, logs).
    pub name: String,
    pub jid: String,
    pub password: String,
    #[serde(default)]
    pub rooms: Vec<String>,
}
