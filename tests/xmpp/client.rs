//! A small XMPP chat client for tests and benchmarks (alice, mallory): tokio-xmpp's
//! `Client` over plain TCP to the loopback Prosody, driven by a task that forwards what it
//! sees and joins its rooms again after every new session.

#![allow(dead_code)]

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::muc::user::{MucUser, Status};
use tokio_xmpp::parsers::muc::{Muc, muc::History};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::xmlstream::{PendingFeaturesRecv, StreamHeader, Timeouts, initiate_stream};
use tokio_xmpp::{Client, Event, Stanza};

/// Plain TCP to 127.0.0.1:PORT: Prosody in the testbed does not require TLS.
#[derive(Debug, Clone)]
struct Loopback(u16);

impl ServerConnector for Loopback {
    type Stream = BufStream<TcpStream>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<
        (
            PendingFeaturesRecv<Self::Stream>,
            sasl::common::ChannelBinding,
        ),
        tokio_xmpp::Error,
    > {
        let tcp = TcpStream::connect(("127.0.0.1", self.0)).await?;
        // Like jarvis: without it, a message sent right after a stream-management <a/>
        // waits for the server's delayed ACK (40 ms), and the benchmark measures that.
        tcp.set_nodelay(true)?;
        let header = StreamHeader {
            to: Some(Cow::Owned(jid.domain().to_string())),
            from: None,
            id: None,
        };
        let pending = initiate_stream(BufStream::new(tcp), ns, header, timeouts).await?;
        Ok((pending, sasl::common::ChannelBinding::None))
    }
}

/// Something the client saw.
#[derive(Debug, Clone)]
pub enum Seen {
    Online,
    Message {
        from: String,
        kind: MessageType,
        body: String,
    },
    Presence {
        from: String,
        available: bool,
        own: bool,
        error: bool,
    },
    /// The stream dropped; the client reconnects by itself.
    Disconnected(String),
}

pub struct Chatter {
    pub jid: String,
    out: mpsc::UnboundedSender<Stanza>,
    seen: mpsc::UnboundedReceiver<Seen>,
    rooms: Arc<Mutex<Vec<(String, String)>>>,
    /// Every message seen so far, in order.
    pub messages: Vec<(String, String)>,
    /// Which of `messages` an `expect` has already returned.
    used: Vec<bool>,
    /// Occupants (`room/nick`) seen present and not gone since.
    present: std::collections::HashSet<String>,
    /// Presences and disconnections seen, for the message of a failed wait.
    trail: Vec<String>,
}

impl Chatter {
    /// Logs in as USER@localhost and waits until the session is up.
    pub async fn connect(port: u16, user: &str, password: &str) -> Result<Chatter> {
        let bare = BareJid::new(&format!("{user}@localhost"))?;
        let jid = bare.with_resource_str("test")?;
        let client = Client::new_with_connector(
            jid,
            password.to_string(),
            Loopback(port),
            Timeouts::tight(),
        );
        let (out, out_rx) = mpsc::unbounded_channel();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let rooms = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(drive(client, out_rx, seen_tx, rooms.clone()));
        let mut chatter = Chatter {
            jid: bare.to_string(),
            out,
            seen,
            rooms,
            messages: Vec::new(),
            used: Vec::new(),
            present: Default::default(),
            trail: Vec::new(),
        };
        chatter
            .wait_for(Duration::from_secs(20), |s| matches!(s, Seen::Online))
            .await
            .with_context(|| format!("{user} did not get online"))?;
        Ok(chatter)
    }

    /// Joins ROOM as NICK and waits for the room's answer; Err if it refused.
    ///
    /// The join is sent again when the room has not answered within a few seconds: a
    /// repeated join presence is harmless in MUC, and on a loaded machine a stream that
    /// was being resumed can drop the first one.
    pub async fn join(&mut self, room: &str, nick: &str) -> Result<()> {
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.push((room.to_string(), nick.to_string()));
        }
        let me = format!("{room}/{nick}");
        let mut last = None;
        for _ in 0..4 {
            self.send(join_stanza(room, nick, 0)?);
            match self
                .wait_for(Duration::from_secs(5), |s| {
                    matches!(s, Seen::Presence { from, own: true, .. } if *from == me)
                        || matches!(s, Seen::Presence { from, error: true, .. } if *from == me)
                })
                .await
            {
                Ok(Seen::Presence { error: true, .. }) => bail!("{room} refused {nick}"),
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("{me}: no answer")))
            .with_context(|| format!("joining {me}"))
    }

    /// Leaves ROOM and waits until the room says so.
    pub async fn leave(&mut self, room: &str, nick: &str) -> Result<()> {
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.retain(|(r, _)| r != room);
        }
        let to = BareJid::new(room)?.with_resource_str(nick)?;
        let me = to.to_string();
        self.send(Stanza::Presence(
            Presence::unavailable().with_to(Jid::from(to)),
        ));
        self.wait_for(
            Duration::from_secs(20),
            |s| matches!(s, Seen::Presence { from, available: false, .. } if *from == me),
        )
        .await?;
        Ok(())
    }

    pub fn say(&self, room: &str, text: &str) -> Result<()> {
        let message = Message::groupchat(Some(Jid::new(room)?)).with_body(Lang::new(), text.into());
        self.send(Stanza::Message(message));
        Ok(())
    }

    pub fn tell(&self, jid: &str, text: &str) -> Result<()> {
        let message = Message::chat(Some(Jid::new(jid)?)).with_body(Lang::new(), text.into());
        self.send(Stanza::Message(message));
        Ok(())
    }

    fn send(&self, stanza: Stanza) {
        let _ = self.out.send(stanza);
    }

    /// Reads until something matches, within `limit`.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        mut matches: impl FnMut(&Seen) -> bool,
    ) -> Result<Seen> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(seen)) => seen,
                Ok(None) => bail!("{}: the client stopped", self.jid),
                Err(_) => bail!(
                    "{}: nothing matched within {limit:?}; messages so far: {:#?}; \
                     presences and disconnections: {:#?}",
                    self.jid,
                    self.messages,
                    self.trail
                ),
            };
            match &seen {
                Seen::Message { from, body, .. } => {
                    self.messages.push((from.clone(), body.clone()));
                    self.used.push(false);
                }
                Seen::Presence {
                    from,
                    available,
                    own,
                    error,
                } => {
                    self.trail.push(format!(
                        "{from} available={available} own={own} error={error}"
                    ));
                    if *available {
                        self.present.insert(from.clone());
                    } else {
                        self.present.remove(from);
                    }
                }
                Seen::Online => self.trail.push("online".into()),
                Seen::Disconnected(why) => self.trail.push(format!("disconnected: {why}")),
            }
            if matches(&seen) {
                return Ok(seen);
            }
        }
    }

    /// Waits for a message whose sender starts with `from` and whose body contains `text`;
    /// returns the body.
    /// Each message is returned once, even if it arrived while waiting for another.
    pub async fn expect(&mut self, limit: Duration, from: &str, text: &str) -> Result<String> {
        let fits = |f: &str, b: &str| f.starts_with(from) && b.contains(text);
        if let Some(i) = (0..self.messages.len())
            .find(|&i| !self.used[i] && fits(&self.messages[i].0, &self.messages[i].1))
        {
            self.used[i] = true;
            return Ok(self.messages[i].1.clone());
        }
        self.wait_for(
            limit,
            |s| matches!(s, Seen::Message { from: f, body, .. } if fits(f, body)),
        )
        .await
        .with_context(|| format!("waiting for '{text}' from {from}"))?;
        let last = self.messages.len() - 1;
        self.used[last] = true;
        Ok(self.messages[last].1.clone())
    }

    /// Waits until the occupant `room/nick` is present.
    pub async fn expect_occupant(&mut self, limit: Duration, room: &str, nick: &str) -> Result<()> {
        let who = format!("{room}/{nick}");
        if self.present.contains(&who) {
            return Ok(());
        }
        self.wait_for(
            limit,
            |s| matches!(s, Seen::Presence { from, available: true, .. } if *from == who),
        )
        .await
        .with_context(|| format!("waiting for {who} to be in the room"))?;
        Ok(())
    }

    /// How many of the messages seen so far contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.messages
            .iter()
            .filter(|(_, b)| b.contains(text))
            .count()
    }
}

/// A first join asks for no history; a join after a reconnect asks for what was said while
/// away (the server's restart emptied the room's history, so nothing is seen twice).
fn join_stanza(room: &str, nick: &str, history: u32) -> Result<Stanza> {
    let to = BareJid::new(room)?.with_resource_str(nick)?;
    let muc = Muc::new().with_history(History::new().with_maxstanzas(history));
    Ok(Stanza::Presence(
        Presence::available()
            .with_to(Jid::from(to))
            .with_payload(muc),
    ))
}

async fn drive(
    mut client: Client,
    mut out: mpsc::UnboundedReceiver<Stanza>,
    seen: mpsc::UnboundedSender<Seen>,
    rooms: Arc<Mutex<Vec<(String, String)>>>,
) {
    loop {
        tokio::select! {
            event = client.next() => {
                let Some(event) = event else { return };
                match event {
                    Event::Online { .. } => {
                        let _ = client.send_stanza(Stanza::Presence(Presence::available())).await;
                        let joined: Vec<(String, String)> =
                            rooms.lock().map(|r| r.clone()).unwrap_or_default();
                        for (room, nick) in joined {
                            if let Ok(stanza) = join_stanza(&room, &nick, 50) {
                                let _ = client.send_stanza(stanza).await;
                            }
                        }
                        let _ = seen.send(Seen::Online);
                    }
                    Event::Stanza(Stanza::Message(m)) => {
                        let body = m.get_best_body(vec![]).map(|(_, b)| b.clone());
                        if let (Some(from), Some(body)) = (m.from, body) {
                            let _ = seen.send(Seen::Message { from: from.to_string(), kind: m.type_, body });
                        }
                    }
                    Event::Stanza(Stanza::Presence(p)) => {
                        let Some(from) = p.from else { continue };
                        let own = p
                            .payloads
                            .iter()
                            .find(|e| e.is("x", ns::MUC_USER))
                            .and_then(|e| MucUser::try_from(e.clone()).ok())
                            .is_some_and(|u| u.status.contains(&Status::SelfPresence));
                        let _ = seen.send(Seen::Presence {
                            from: from.to_string(),
                            available: p.type_ == PresenceType::None,
                            own,
                            error: p.type_ == PresenceType::Error,
                        });
                    }
                    Event::Disconnected(why) => {
                        let _ = seen.send(Seen::Disconnected(why.to_string()));
                    }
                    Event::Stanza(Stanza::Iq(_)) => {}
                }
            }
            stanza = out.recv() => {
                let Some(stanza) = stanza else { return };
                let _ = client.send_stanza(stanza).await;
            }
        }
    }
}
