//! The chat side: the command language, who may do what, the bot that answers, and the
//! notifications that tell of runs. Adapters (console, IRC, XMPP) implement [`ChatNetwork`]
//! and push [`Incoming`] messages; everything here is the same for all of them, and nothing
//! here knows a protocol.

pub mod actions;
pub mod admission;
pub mod bot;
pub mod command;
pub mod environments;
pub mod groups;
pub mod notify;
pub mod outlet;
pub mod pace;
pub mod policy;
pub mod render;
pub mod roles;
pub mod tokens;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use roles::Identity;

/// A place to send a line: a channel or room, or one person directly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub network: String,
    pub kind: TargetKind,
    /// The channel or room name, or the nick/JID for a direct message.
    pub name: String,
    /// Whom the adapter verified the person behind a direct `name` as (opaque here): an
    /// adapter whose names can change hands (IRC nicks) sends a private line only while
    /// `name` still belongs to them. On a room target it names the sender a private reply
    /// is for ([`Incoming::private_target`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
}

// The place alone identifies a target: lines to one place share its bucket and its order
// whoever they are meant for.
impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        self.network == other.network && self.kind == other.kind && self.name == other.name
    }
}

impl Eq for Target {}

impl std::hash::Hash for Target {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.network.hash(state);
        self.kind.hash(state);
        self.name.hash(state);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Room,
    Direct,
}

impl Target {
    pub fn room(network: &str, name: &str) -> Target {
        Target {
            network: network.into(),
            kind: TargetKind::Room,
            name: name.into(),
            verified: None,
        }
    }

    pub fn direct(network: &str, name: &str) -> Target {
        Target {
            network: network.into(),
            kind: TargetKind::Direct,
            name: name.into(),
            verified: None,
        }
    }

    /// This target, noting whom the adapter verified its person as.
    pub fn verified_as(mut self, who: &str) -> Target {
        self.verified = Some(who.to_string());
        self
    }

    /// The outbox's form: `room:#ops` or `direct:alice`.
    pub fn outbox_key(&self) -> String {
        match self.kind {
            TargetKind::Room => format!("room:{}", self.name),
            TargetKind::Direct => format!("direct:{}", self.name),
        }
    }

    pub fn from_outbox(network: &str, key: &str) -> Target {
        match key.split_once(':') {
            Some(("room", name)) => Target::room(network, name),
            Some(("direct", name)) => Target::direct(network, name),
            _ => Target::direct(network, key),
        }
    }
}

/// Where a run was asked for, kept with the run so its notifications find their way back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Origin {
    pub target: Target,
    /// The requester's nick as shown in that place.
    pub nick: String,
}

impl Origin {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(text: &str) -> Option<Origin> {
        serde_json::from_str(text).ok()
    }
}

/// A message that reached jarvis, with who sent it as the adapter verified it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Where an answer goes: the room it was said in, or the sender for a direct message.
    pub reply_to: Target,
    pub nick: String,
    /// Every verified identity of the sender; empty when the adapter could verify none.
    pub identities: Vec<Identity>,
    /// Why the identity is unknown, when the adapter knows (e.g. a room that hides JIDs).
    pub identity_note: Option<String>,
    pub text: String,
}

impl Incoming {
    /// Where a private reply to this message goes: the sender directly, carrying whom the
    /// adapter verified them as, so that a name that changed hands meanwhile gets nothing.
    pub fn private_target(&self) -> Target {
        Target {
            network: self.reply_to.network.clone(),
            kind: TargetKind::Direct,
            name: self.nick.clone(),
            verified: self.reply_to.verified.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Not connected: nothing was refused, the line waits for the connection.
    #[error("not connected")]
    Offline,
    /// A failure that may pass (a timeout, a room not joined yet): worth trying again.
    #[error("{0}")]
    Failed(String),
    /// The network will never take this line to this target (a channel that refuses
    /// jarvis, a target that is no valid name): trying again is pointless.
    #[error("refused: {0}")]
    Refused(String),
}

impl SendError {
    /// Whether the network said no for good.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Refused(_))
    }
}

/// How fast lines may go out on a connection: a burst, then a steady rate.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub burst: u32,
    pub per_second: f64,
}

/// One chat connection, as the chat side needs it.
pub trait ChatNetwork: Send + Sync {
    /// The configured network name (`console`, `libera`, …).
    fn name(&self) -> &str;
    /// How many bytes of text one line to `target` may carry.
    fn max_line_bytes(&self, target: &Target) -> usize;
    /// How fast lines may be sent without being thrown off.
    fn rate(&self) -> Rate;
    /// Sends one line (already one line, already short enough). Resolves once the network
    /// accepted it, as far as the protocol can tell.
    fn send<'a>(
        &'a self,
        target: &'a Target,
        line: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>>;
    /// True while connected and ready to send.
    fn online(&self) -> watch::Receiver<bool>;
    /// The connection's token bucket, when the adapter sends lines of its own (WHOIS, JOIN,
    /// PONG) that must share it with the outlet's; `None` lets the outlet keep its own.
    fn pacer(&self) -> Option<pace::Pacer> {
        None
    }
}
