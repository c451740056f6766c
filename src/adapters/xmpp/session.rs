//! The task that owns one account's stanza stream: joins rooms on every new session, tracks
//! room occupants' real JIDs, turns messages into [`Incoming`], and sends lines with a
//! confirmation from the server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_xmpp::Stanza;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::muc::user::{MucUser, Status};
use tokio_xmpp::parsers::muc::{Muc, muc::History};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::stanzastream::{Event, StanzaStream, StreamEvent};

use crate::chat::roles::Identity;
use crate::chat::{Incoming, SendError, Target, TargetKind};

/// What a sender is told when a room does not show it the real JID of whoever spoke.
pub const HIDDEN_JID_NOTE: &str = "this room hides real JIDs, so I cannot tell who you are — make the room non-anonymous or talk to me directly";

/// How long after a new session the rooms may take to answer before jarvis counts itself
/// online anyway (a room that does not let it in must not hold up direct chats).
const JOIN_GRACE: Duration = Duration::from_secs(10);

/// How long before a room jarvis was removed from is joined again.
const REJOIN_DELAY: Duration = Duration::from_secs(5);

/// Nick attempts per room when the nick is taken (`jarvis`, `jarvis_`, `jarvis__`, …).
const NICK_ATTEMPTS: u32 = 4;

pub enum Command {
    Send {
        target: Target,
        line: String,
        done: oneshot::Sender<Result<(), SendError>>,
    },
    Rejoin(BareJid),
}

/// A room as jarvis sees it.
#[derive(Debug)]
pub struct Room {
    pub jid: BareJid,
    /// The nick jarvis asked for (with `_` added after conflicts).
    pub wanted_nick: String,
    pub attempts: u32,
    /// The nick the room gave jarvis, once in.
    pub nick: Option<String>,
    /// Set when the room refused jarvis for good (until the next session).
    pub refused: Option<String>,
    /// Occupants by nick, with their real bare JID when the room shows it.
    pub occupants: HashMap<String, Option<BareJid>>,
}

impl Room {
    fn new(jid: BareJid, nick: &str) -> Room {
        Room {
            jid,
            wanted_nick: nick.to_string(),
            attempts: 0,
            nick: None,
            refused: None,
            occupants: HashMap::new(),
        }
    }

    fn joined(&self) -> bool {
        self.nick.is_some()
    }

    /// Whether the room has answered the join, either way.
    fn settled(&self) -> bool {
        self.joined() || self.refused.is_some()
    }

    fn reset(&mut self, nick: &str) {
        self.wanted_nick = nick.to_string();
        self.attempts = 0;
        self.nick = None;
        self.refused = None;
        self.occupants.clear();
    }
}

/// What a confirmation unblocks.
struct Waiter {
    done: oneshot::Sender<Result<(), SendError>>,
    since: Instant,
}

pub struct Session {
    network: String,
    me: BareJid,
    nick: String,
    rooms: Vec<Room>,
    /// The room each nick last spoke in, for private answers to a room nick.
    last_room_of: HashMap<String, BareJid>,
    /// By stanza id: a room message awaiting its reflection, or a ping awaiting its result.
    waiters: HashMap<String, Waiter>,
    connected: bool,
    join_deadline: Option<tokio::time::Instant>,
    online: watch::Sender<bool>,
    incoming: mpsc::Sender<Incoming>,
    commands: mpsc::Sender<Command>,
    next_id: u64,
}

impl Session {
    pub fn new(
        network: String,
        me: BareJid,
        nick: String,
        rooms: Vec<BareJid>,
        online: watch::Sender<bool>,
        incoming: mpsc::Sender<Incoming>,
        commands: mpsc::Sender<Command>,
    ) -> Session {
        let rooms = rooms.into_iter().map(|r| Room::new(r, &nick)).collect();
        Session {
            network,
            me,
            nick,
            rooms,
            last_room_of: HashMap::new(),
            waiters: HashMap::new(),
            connected: false,
            join_deadline: None,
            online,
            incoming,
            commands,
            next_id: rand_seed(),
        }
    }

    pub async fn run(mut self, mut stream: StanzaStream, mut commands: mpsc::Receiver<Command>) {
        loop {
            let deadline = self.join_deadline;
            tokio::select! {
                event = stream.next() => match event {
                    Some(event) => {
                        let out = self.on_event(event).await;
                        self.transmit(&stream, out).await;
                    }
                    None => {
                        tracing::error!(network = %self.network, "the XMPP stream ended");
                        self.set_offline();
                        return;
                    }
                },
                Some(command) = commands.recv() => {
                    let out = self.on_command(command);
                    self.transmit(&stream, out).await;
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.join_deadline = None;
                    for room in self.rooms.iter().filter(|r| !r.settled()) {
                        tracing::warn!(network = %self.network, room = %room.jid, "the room has not answered the join yet; going online without it");
                    }
                    self.online.send_replace(self.connected);
                }
            }
        }
    }

    async fn transmit(&self, stream: &StanzaStream, stanzas: Vec<Stanza>) {
        for stanza in stanzas {
            // The token is not awaited: confirmations come as stanzas (reflection, pong),
            // and a broken stream fails every waiter at once.
            let _token = stream.send(Box::new(stanza)).await;
        }
    }

    fn fresh_id(&mut self) -> String {
        self.next_id = self.next_id.wrapping_add(1);
        format!("jarvis-{:x}", self.next_id)
    }

    fn set_offline(&mut self) {
        self.connected = false;
        self.join_deadline = None;
        self.online.send_replace(false);
        for (_, waiter) in self.waiters.drain() {
            let _ = waiter.done.send(Err(SendError::Offline));
        }
    }

    /// Online once connected and every room answered the join (or the grace ran out).
    fn update_online(&mut self) {
        if self.connected && self.rooms.iter().all(Room::settled) {
            self.join_deadline = None;
            if !*self.online.borrow() {
                tracing::info!(network = %self.network, rooms = self.rooms.iter().filter(|r| r.joined()).count(), "online");
            }
            self.online.send_replace(true);
        }
    }

    async fn on_event(&mut self, event: Event) -> Vec<Stanza> {
        match event {
            Event::Stream(StreamEvent::Reset { bound_jid, .. }) => {
                tracing::info!(network = %self.network, jid = %bound_jid, "new session; joining rooms");
                self.set_offline();
                self.connected = true;
                let mut out = vec![Stanza::Presence(Presence::available())];
                let nick = self.nick.clone();
                for room in &mut self.rooms {
                    room.reset(&nick);
                    out.push(join(room));
                }
                self.join_deadline = Some(tokio::time::Instant::now() + JOIN_GRACE);
                self.update_online();
                out
            }
            Event::Stream(StreamEvent::Resumed) => {
                tracing::info!(network = %self.network, "session resumed");
                self.connected = true;
                self.update_online();
                Vec::new()
            }
            Event::Stream(StreamEvent::Suspended) => {
                tracing::warn!(network = %self.network, "disconnected; reconnecting");
                self.set_offline();
                Vec::new()
            }
            Event::Stanza(Stanza::Message(message)) => self.on_message(message).await,
            Event::Stanza(Stanza::Presence(presence)) => self.on_presence(presence),
            Event::Stanza(Stanza::Iq(iq)) => self.on_iq(iq),
        }
    }

    fn on_command(&mut self, command: Command) -> Vec<Stanza> {
        match command {
            Command::Send { target, line, done } => self.on_send(target, line, done),
            Command::Rejoin(jid) => {
                let nick = self.nick.clone();
                match self.rooms.iter_mut().find(|r| r.jid == jid) {
                    Some(room) if self.connected && !room.joined() => {
                        room.reset(&nick);
                        vec![join(room)]
                    }
                    _ => Vec::new(),
                }
            }
        }
    }

    fn on_send(
        &mut self,
        target: Target,
        line: String,
        done: oneshot::Sender<Result<(), SendError>>,
    ) -> Vec<Stanza> {
        if !self.connected {
            let _ = done.send(Err(SendError::Offline));
            return Vec::new();
        }
        let now = Instant::now();
        self.waiters
            .retain(|_, w| now.duration_since(w.since) < Duration::from_secs(120));
        let id = self.fresh_id();
        match target.kind {
            TargetKind::Room => {
                let Ok(jid) = BareJid::new(&target.name) else {
                    let _ = done.send(Err(SendError::Refused(format!(
                        "'{}' is not a room JID",
                        target.name
                    ))));
                    return Vec::new();
                };
                let Some(room) = self.rooms.iter_mut().find(|r| r.jid == jid) else {
                    // A notify target jarvis was not told to join: join it now; the courier
                    // tries again shortly.
                    let mut room = Room::new(jid.clone(), &self.nick);
                    let out = vec![join(&mut room)];
                    self.rooms.push(room);
                    let _ = done.send(Err(SendError::Failed(format!("joining {jid} first"))));
                    return out;
                };
                if let Some(why) = &room.refused {
                    // Refused for good: the courier sets the message aside.
                    let _ = done.send(Err(SendError::Refused(format!("{jid}: {why}"))));
                    return Vec::new();
                }
                if !room.joined() {
                    let _ = done.send(Err(SendError::Failed(format!("not in {jid} yet"))));
                    return Vec::new();
                }
                let mut message =
                    Message::groupchat(Some(Jid::from(jid))).with_body(Lang::new(), line);
                message.id = Some(tokio_xmpp::parsers::message::Id(id.clone()));
                self.waiters.insert(id, Waiter { done, since: now });
                vec![Stanza::Message(message)]
            }
            TargetKind::Direct => {
                let Some(to) = self.direct_address(&target.name) else {
                    let _ = done.send(Err(SendError::Failed(format!(
                        "no way to reach '{}' directly",
                        target.name
                    ))));
                    return Vec::new();
                };
                let private_in_room = self.rooms.iter().any(|r| r.jid == to.to_bare());
                let mut message = Message::chat(Some(to)).with_body(Lang::new(), line);
                message.id = Some(tokio_xmpp::parsers::message::Id(id));
                if private_in_room {
                    message
                        .payloads
                        .push(Element::builder("x", ns::MUC_USER).build());
                }
                // The server handles a session's stanzas in order: its answer to this ping
                // means it has taken the message.
                let ping_id = self.fresh_id();
                let ping = Iq::from_get(ping_id.clone(), Ping)
                    .with_to(Jid::from(BareJid::from_parts(None, self.me.domain())));
                self.waiters.insert(ping_id, Waiter { done, since: now });
                vec![Stanza::Message(message), Stanza::Iq(ping)]
            }
        }
    }

    /// A direct target is a JID (a person, or `room@service/nick`), or a bare room nick
    /// (jarvis's answers that overflow a room), which goes as a private message through the
    /// room the nick last spoke in.
    fn direct_address(&self, name: &str) -> Option<Jid> {
        if name.contains('@') {
            return Jid::new(name).ok();
        }
        let room = self.last_room_of.get(name).or_else(|| {
            self.rooms
                .iter()
                .find(|r| r.occupants.contains_key(name))
                .map(|r| &r.jid)
        })?;
        room.with_resource_str(name).ok().map(Jid::from)
    }

    fn complete(&mut self, id: Option<&str>, result: Result<(), SendError>) {
        if let Some(waiter) = id.and_then(|id| self.waiters.remove(id)) {
            let _ = waiter.done.send(result);
        }
    }

    async fn on_message(&mut self, message: Message) -> Vec<Stanza> {
        let Some(from) = message.from.clone() else {
            return Vec::new();
        };
        let id = message.id.as_ref().map(|i| i.0.clone());
        if message.type_ == MessageType::Error {
            let why = error_text(&message.payloads);
            tracing::warn!(network = %self.network, from = %from, error = %why, "message refused");
            // A `wait` error may pass; any other is the server's no to this message.
            let transient = stanza_error(&message.payloads)
                .is_some_and(|e| e.type_ == tokio_xmpp::parsers::stanza_error::ErrorType::Wait);
            let error = if transient {
                SendError::Failed(why)
            } else {
                SendError::Refused(why)
            };
            self.complete(id.as_deref(), Err(error));
            return Vec::new();
        }
        let bare = from.to_bare();
        let room_index = self.rooms.iter().position(|r| r.jid == bare);
        let from_nick = from.resource().map(|r| r.to_string());
        if message.type_ == MessageType::Groupchat {
            let (Some(index), Some(nick)) = (room_index, from_nick) else {
                return Vec::new();
            };
            let room = &self.rooms[index];
            if room.nick.as_deref() == Some(nick.as_str()) {
                // Our own line, reflected: the room has taken it.
                self.complete(id.as_deref(), Ok(()));
                return Vec::new();
            }
            if is_delayed(&message) {
                return Vec::new();
            }
            let Some(text) = body(&message) else {
                return Vec::new();
            };
            let (identities, note) = self.identify_occupant(index, &nick);
            self.last_room_of.insert(nick.clone(), bare.clone());
            self.deliver(Incoming {
                reply_to: Target::room(&self.network, bare.as_str()),
                nick,
                identities,
                identity_note: note,
                text,
            })
            .await;
            return Vec::new();
        }
        if !matches!(message.type_, MessageType::Chat | MessageType::Normal) || is_delayed(&message)
        {
            return Vec::new();
        }
        let Some(text) = body(&message) else {
            return Vec::new();
        };
        if bare == self.me {
            return Vec::new();
        }
        let incoming = match (room_index, from_nick) {
            // A private message through a room: who it is, only the room can say.
            (Some(index), Some(nick)) => {
                if self.rooms[index].nick.as_deref() == Some(nick.as_str()) {
                    return Vec::new();
                }
                let (identities, note) = self.identify_occupant(index, &nick);
                self.last_room_of.insert(nick.clone(), bare.clone());
                Incoming {
                    reply_to: Target::direct(&self.network, from.as_str()),
                    nick,
                    identities,
                    identity_note: note,
                    text,
                }
            }
            (Some(_), None) => return Vec::new(),
            // A direct chat: the server vouches for the sender's bare JID.
            (None, _) => Incoming {
                reply_to: Target::direct(&self.network, bare.as_str()),
                nick: bare.to_string(),
                identities: vec![Identity::Jid {
                    network: self.network.clone(),
                    jid: bare.to_string(),
                }],
                identity_note: None,
                text,
            },
        };
        self.deliver(incoming).await;
        Vec::new()
    }

    /// The occupant's real bare JID, as the room's last presence for that nick showed it.
    fn identify_occupant(&self, index: usize, nick: &str) -> (Vec<Identity>, Option<String>) {
        match self.rooms[index].occupants.get(nick) {
            Some(Some(jid)) => (
                vec![Identity::Jid {
                    network: self.network.clone(),
                    jid: jid.to_string(),
                }],
                None,
            ),
            Some(None) => (Vec::new(), Some(HIDDEN_JID_NOTE.to_string())),
            None => (
                Vec::new(),
                Some(
                    "I have not seen you join this room, so I cannot tell who you are — rejoin the room or talk to me directly"
                        .to_string(),
                ),
            ),
        }
    }

    async fn deliver(&self, incoming: Incoming) {
        if self.incoming.send(incoming).await.is_err() {
            tracing::error!(network = %self.network, "nobody is reading messages any more");
        }
    }

    fn on_presence(&mut self, presence: Presence) -> Vec<Stanza> {
        let Some(from) = presence.from.clone() else {
            return Vec::new();
        };
        let bare = from.to_bare();
        let Some(index) = self.rooms.iter().position(|r| r.jid == bare) else {
            return Vec::new();
        };
        let Some(nick) = from.resource().map(|r| r.to_string()) else {
            return Vec::new();
        };
        let network = self.network.clone();
        let room = &mut self.rooms[index];
        if presence.type_ == PresenceType::Error {
            if room.joined() || room.refused.is_some() || nick != room.wanted_nick {
                return Vec::new();
            }
            let condition = error_condition(&presence.payloads);
            if condition == Some(DefinedCondition::Conflict) && room.attempts + 1 < NICK_ATTEMPTS {
                tracing::warn!(network, room = %room.jid, nick, "nick taken in the room; trying another");
                room.wanted_nick.push('_');
                room.attempts += 1;
                return vec![join(room)];
            }
            let why = error_text(&presence.payloads);
            tracing::error!(network, room = %room.jid, error = %why, "the room refused jarvis");
            room.refused = Some(format!("the room refused jarvis: {why}"));
            self.update_online();
            return Vec::new();
        }
        let Some(user) = presence
            .payloads
            .iter()
            .find(|p| p.is("x", ns::MUC_USER))
            .and_then(|p| MucUser::try_from(p.clone()).ok())
        else {
            return Vec::new();
        };
        let is_self = user.status.contains(&Status::SelfPresence);
        let real = user
            .items
            .first()
            .and_then(|item| item.jid.as_ref())
            .map(|jid| jid.to_bare());
        match presence.type_ {
            PresenceType::Unavailable => {
                room.occupants.remove(&nick);
                if self.last_room_of.get(&nick) == Some(&bare) {
                    self.last_room_of.remove(&nick);
                }
                if is_self {
                    let new_nick = user.items.first().and_then(|i| i.nick.clone());
                    if user.status.contains(&Status::NewNick) && new_nick.is_some() {
                        room.nick = new_nick;
                        return Vec::new();
                    }
                    room.nick = None;
                    if user.status.contains(&Status::Banned) {
                        tracing::error!(network, room = %room.jid, "jarvis was banned from the room");
                        room.refused = Some("jarvis is banned from the room".into());
                        return Vec::new();
                    }
                    if user.status.contains(&Status::ServiceShutdown) {
                        // The server is going down; the next session joins again.
                        tracing::info!(network, room = %room.jid, "the room service is shutting down");
                        room.refused = Some("the room service shut down".into());
                        return Vec::new();
                    }
                    tracing::warn!(network, room = %room.jid, "jarvis was removed from the room; joining again shortly");
                    let commands = self.commands.clone();
                    let jid = room.jid.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(REJOIN_DELAY).await;
                        let _ = commands.send(Command::Rejoin(jid)).await;
                    });
                }
                Vec::new()
            }
            PresenceType::None => {
                room.occupants.insert(nick.clone(), real);
                if is_self {
                    if !user.status.contains(&Status::NonAnonymousRoom) {
                        tracing::info!(network, room = %room.jid, "the room does not show real JIDs to everyone; commands that need a role will be refused there unless jarvis is a moderator");
                    }
                    tracing::info!(network, room = %room.jid, nick, "joined");
                    room.nick = Some(nick);
                    self.update_online();
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn on_iq(&mut self, iq: Iq) -> Vec<Stanza> {
        match iq {
            Iq::Result { id, .. } => {
                self.complete(Some(&id), Ok(()));
                Vec::new()
            }
            Iq::Error { id, error, .. } => {
                // A ping the server does not answer with a result still proves it read the
                // message before it.
                let ok = error.defined_condition == DefinedCondition::ServiceUnavailable
                    || error.defined_condition == DefinedCondition::FeatureNotImplemented;
                let result = if ok {
                    Ok(())
                } else {
                    Err(SendError::Failed(format!("{:?}", error.defined_condition)))
                };
                self.complete(Some(&id), result);
                Vec::new()
            }
            Iq::Get {
                from, id, payload, ..
            }
            | Iq::Set {
                from, id, payload, ..
            } => {
                let reply = if payload.is("ping", ns::PING) {
                    Iq::Result {
                        from: None,
                        to: from,
                        id,
                        payload: None,
                    }
                } else {
                    Iq::Error {
                        from: None,
                        to: from,
                        id,
                        error: StanzaError::new(
                            ErrorType::Cancel,
                            DefinedCondition::ServiceUnavailable,
                            "en",
                            "jarvis answers chat messages only",
                        ),
                        payload: None,
                    }
                };
                vec![Stanza::Iq(reply)]
            }
        }
    }
}

/// The join: no history, since old commands must not run again.
fn join(room: &mut Room) -> Stanza {
    let to = room
        .jid
        .with_resource_str(&room.wanted_nick)
        .map(Jid::from)
        .unwrap_or_else(|_| Jid::from(room.jid.clone()));
    let muc = Muc::new().with_history(History::new().with_maxstanzas(0));
    Stanza::Presence(Presence::available().with_to(to).with_payload(muc))
}

fn body(message: &Message) -> Option<String> {
    let (_, text) = message.get_best_body(vec![])?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// History a room replays, and messages stored while jarvis was away, carry a delay.
fn is_delayed(message: &Message) -> bool {
    message.payloads.iter().any(|p| p.is("delay", ns::DELAY))
}

fn stanza_error(payloads: &[Element]) -> Option<StanzaError> {
    payloads
        .iter()
        .find(|p| p.is("error", ns::DEFAULT_NS))
        .and_then(|p| StanzaError::try_from(p.clone()).ok())
}

fn error_condition(payloads: &[Element]) -> Option<DefinedCondition> {
    stanza_error(payloads).map(|e| e.defined_condition)
}

fn error_text(payloads: &[Element]) -> String {
    match stanza_error(payloads) {
        Some(e) => match e.texts.values().next() {
            Some(text) => format!("{:?}: {text}", e.defined_condition),
            None => format!("{:?}", e.defined_condition),
        },
        None => "unknown error".into(),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn rand_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()) << 32
}
