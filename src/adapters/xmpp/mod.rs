//! XMPP (Jabber). Only this module knows XMPP.
//!
//! ARCHITECTURE. One configured account is one [`XmppNetwork`]: a tokio-xmpp
//! [`StanzaStream`] (resource binding, stream management, keep-alive, reconnection) fed by
//! jarvis's own [`connect::Connector`] (TCP, STARTTLS with a configurable CA, SASL), and one
//! session task ([`session`]) that owns the stream. The session task joins the configured
//! rooms on every new session, keeps who is who in each room (nick → real bare JID, from the
//! MUC presences), turns messages into [`Incoming`] with verified identities, and sends the
//! lines the outlet hands to [`ChatNetwork::send`], answering each only once the server
//! accepted it: a room's reflection of the message, or for a direct chat the server's
//! answer to a ping sent right after it (the server handles a session's stanzas in order).
//!
//! The first connection is made before anything else, so that a wrong password or an
//! unreachable server stops `jarvis run` with one line; later losses are retried forever
//! with a growing delay, and `online()` is false meanwhile.

mod connect;
mod session;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::stanzastream::{Connection, StanzaStream};

use crate::chat::{ChatNetwork, Incoming, Rate, SendError, Target};
use crate::config::xmpp::{Tls, XmppAccountConfig};

use connect::Connector;
use session::{Command, Session};

/// Lines longer than this are split by the outlet. XMPP has no line limit, but a chat
/// client shows a long message as a wall; servers accept far more (Prosody: 256 KiB).
const MAX_LINE_BYTES: usize = 3000;

/// How long `send` waits for the server to confirm a line.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

pub struct XmppNetwork {
    name: String,
    commands: mpsc::Sender<Command>,
    online: watch::Receiver<bool>,
    rate: Rate,
}

impl ChatNetwork for XmppNetwork {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_line_bytes(&self, _target: &Target) -> usize {
        MAX_LINE_BYTES
    }

    fn rate(&self) -> Rate {
        self.rate
    }

    fn send<'a>(
        &'a self,
        target: &'a Target,
        line: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            if !*self.online.borrow() {
                return Err(SendError::Offline);
            }
            let (done, answer) = oneshot::channel();
            let command = Command::Send {
                target: target.clone(),
                line: line.to_string(),
                done,
            };
            if self.commands.send(command).await.is_err() {
                return Err(SendError::Offline);
            }
            match tokio::time::timeout(SEND_TIMEOUT, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(SendError::Offline),
                Err(_) => Err(SendError::Failed(format!(
                    "the server did not confirm the message within {}s",
                    SEND_TIMEOUT.as_secs()
                ))),
            }
        })
    }

    fn online(&self) -> watch::Receiver<bool> {
        self.online.clone()
    }
}

/// Logs in to one account and starts its session; fails when the first login fails.
pub async fn start(
    config: &XmppAccountConfig,
    bot_name: &str,
) -> anyhow::Result<(Arc<XmppNetwork>, mpsc::Receiver<Incoming>)> {
    let fail =
        |reason: String| anyhow!("xmpp account '{}' ({}): {reason}", config.name, config.jid);
    let jid = Jid::new(&config.jid).map_err(|e| fail(format!("not a JID: {e}")))?;
    if jid.node().is_none() {
        return Err(fail("the JID has no user part (user@domain)".into()));
    }
    let mut rooms = Vec::new();
    for room in &config.rooms {
        let bare = BareJid::new(room).map_err(|e| fail(format!("room '{room}': {e}")))?;
        if bare.node().is_none() {
            return Err(fail(format!(
                "room '{room}' has no room name (room@service)"
            )));
        }
        rooms.push(bare);
    }
    let connector = Connector::new(config, jid.clone()).map_err(fail)?;
    if config.tls == Tls::Plain && !is_loopback(&connector.address()) {
        // check-config refuses this already; never send a password in clear regardless.
        return Err(fail(format!(
            "tls: plain would send the password in clear to {}; use tls: starttls",
            connector.address()
        )));
    }
    let (features, stream) = connector.connect().await.map_err(|e| fail(e.to_string()))?;
    tracing::info!(account = %config.name, jid = %jid, server = %connector.address(), "logged in");

    let first = Connection {
        stream,
        features,
        identity: jid.clone(),
    };
    let stanza_stream = StanzaStream::new(reconnector(config.name.clone(), connector, first), 16);
    let (online_tx, online) = watch::channel(false);
    let (commands_tx, commands) = mpsc::channel(64);
    let (incoming_tx, incoming) = mpsc::channel(256);
    let session = Session::new(
        config.name.clone(),
        jid.to_bare(),
        config.nick.clone().unwrap_or_else(|| bot_name.to_string()),
        rooms,
        online_tx,
        incoming_tx,
        commands_tx.clone(),
    );
    tokio::spawn(session.run(stanza_stream, commands));
    let rate = config.rate.map_or(
        Rate {
            burst: 20,
            per_second: 10.0,
        },
        |r| Rate {
            burst: r.burst,
            per_second: r.per_second,
        },
    );
    let network = Arc::new(XmppNetwork {
        name: config.name.clone(),
        commands: commands_tx,
        online,
        rate,
    });
    Ok((network, incoming))
}

/// What the stanza stream calls for a connection: the one made at start the first time,
/// then a fresh login with a growing delay between failures, forever (the stream treats
/// a reconnector that gives up as a crash).
fn reconnector(
    account: String,
    connector: Connector,
    first: Connection,
) -> Box<dyn FnMut(Option<String>, oneshot::Sender<Connection>) + Send + 'static> {
    let mut first = Some(first);
    Box::new(move |_location, slot| {
        if let Some(connection) = first.take() {
            let _ = slot.send(connection);
            return;
        }
        let connector = connector.clone();
        let account = account.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(250);
            loop {
                if slot.is_closed() {
                    return;
                }
                match connector.connect().await {
                    Ok((features, stream)) => {
                        tracing::info!(account, "reconnected");
                        let _ = slot.send(Connection {
                            stream,
                            features,
                            identity: connector.jid.clone(),
                        });
                        return;
                    }
                    Err(e) if e.is_permanent() => {
                        tracing::error!(account, error = %e, retry_in = ?delay, "cannot log in again")
                    }
                    Err(e) => {
                        tracing::warn!(account, error = %e, retry_in = ?delay, "cannot reconnect")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        });
    })
}

/// Whether `host:port` is this machine.
fn is_loopback(address: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    crate::config::is_loopback(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback("127.0.0.1:5222"));
        assert!(is_loopback("localhost:5222"));
        assert!(is_loopback("[::1]:5222"));
        assert!(!is_loopback("xmpp.example.com:5222"));
    }
}
