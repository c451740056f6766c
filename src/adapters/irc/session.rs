//! One connection's life: registration by hand (CAP LS 302 → CAP REQ → SASL → CAP END →
//! 001), joining, then serving until the connection dies. Everything runs in one task that
//! reads lines, writes the adapter's PRIVMSGs, and keeps time (our PINGs, echo deadlines,
//! regaining the nick), so the state needs no locks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, oneshot};

use super::accounts::{Accounts, Owners};
use super::conn::{Io, QuickAck};
use super::negotiate::{Negotiation, Out};
use super::proto::{self, LineReader, Message};
use super::whois::{Hold, Lookups, WhoisAnswer};
use super::{Outgoing, Shared};
use crate::chat::roles::Identity;
use crate::chat::{Incoming, SendError, Target};

/// Registration (connect to joined) must finish within this.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// Joins that get no answer do not keep jarvis offline forever.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// An echoed PRIVMSG must come back within this, or the connection counts as broken.
const ECHO_TIMEOUT: Duration = Duration::from_secs(20);
/// A write that takes longer means the server stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Without account-notify, a WHOIS answer is trusted this long.
const REGAIN_EVERY: Duration = Duration::from_secs(30);
const REJOIN_AFTER: Duration = Duration::from_secs(10);
/// Capabilities jarvis asks for when offered.
/// Why a session ended.
#[derive(Debug)]
pub struct Ended {
    pub reason: String,
    /// Whether it had got as far as registered and joined.
    pub was_ready: bool,
}

impl Ended {
    pub fn new(reason: impl Into<String>, was_ready: bool) -> Ended {
        Ended {
            reason: reason.into(),
            was_ready,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Capability negotiation and SASL, before CAP END.
    Negotiating,
    /// CAP END sent, waiting for 001.
    Registering,
    /// 001 seen, joins sent.
    Joining,
    Ready,
}

struct Pending {
    target: String,
    ack: oneshot::Sender<Result<(), SendError>>,
    deadline: Instant,
}

/// A message held until a WHOIS tells who sent it: without a trusted account for its
/// sender, a command cannot be checked against the roles.
struct AwaitingWhois {
    msg: Message,
}

struct Session<'a> {
    shared: &'a Shared,
    network: String,
    writer: WriteHalf<Box<dyn Io>>,
    incoming: &'a mpsc::Sender<Incoming>,
    phase: Phase,
    started: Instant,
    nick: String,
    alt_tries: usize,
    negotiation: Negotiation,
    joins: HashSet<String>,
    joins_since: Instant,
    rejoin: HashMap<String, Instant>,
    pending: VecDeque<Pending>,
    accounts: Accounts,
    lookups: Lookups<AwaitingWhois>,
    /// When the WHOIS whose token is reserved may go out.
    whois_due: Option<Instant>,
    /// What the WHOIS being answered has said so far (311, 330), until its 318.
    whois_answers: HashMap<String, WhoisAnswer>,
    /// Whom each nick was verified as when its last message was handed on: a private
    /// reply carries that, and is sent only while the nick still belongs to them.
    owners: Owners,
    last_rx: Instant,
    ping_sent: Option<Instant>,
    next_regain: Instant,
}

/// Runs one connection until it ends; `Ok` when the server closed it in an orderly way.
pub async fn run(
    shared: &Shared,
    stream: Box<dyn Io>,
    quick: QuickAck,
    incoming: &mpsc::Sender<Incoming>,
) -> Result<(), Ended> {
    let (read, write) = tokio::io::split(stream);
    let mut reader = LineReader::new(read);
    let now = Instant::now();
    let mut s = Session {
        shared,
        network: shared.cfg.name.clone(),
        writer: write,
        incoming,
        phase: Phase::Negotiating,
        started: now,
        nick: shared.desired_nick.clone(),
        alt_tries: 0,
        negotiation: Negotiation::new(&shared.cfg.name, shared.cfg.ircv3, shared.cfg.sasl.clone()),
        joins: HashSet::new(),
        joins_since: now,
        rejoin: HashMap::new(),
        pending: VecDeque::new(),
        accounts: Accounts::default(),
        lookups: Lookups::default(),
        whois_due: None,
        whois_answers: HashMap::new(),
        owners: Owners::default(),
        last_rx: now,
        ping_sent: None,
        next_regain: now + REGAIN_EVERY,
    };
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(64);
    let mut out_tx = Some(out_tx);
    let mut online = false;
    let result = async {
        s.register().await?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let whois_due = s.whois_due;
            tokio::select! {
                line = reader.next_line() => {
                    let line = line.map_err(|e| s.ended(format!("reading from the server failed: {e}")))?;
                    let Some(line) = line else {
                        return Err(s.ended("the server closed the connection"));
                    };
                    quick.poke();
                    s.last_rx = Instant::now();
                    s.ping_sent = None;
                    let Some(msg) = Message::parse(&line) else { continue };
                    s.handle(msg).await?;
                    s.publish(&mut out_tx, &mut online);
                }
                Some(out) = out_rx.recv() => {
                    s.write_privmsg(out).await?;
                }
                _ = tokio::time::sleep_until(whois_due.unwrap_or_else(Instant::now).into()), if whois_due.is_some() => {
                    s.send_due_whois().await?;
                }
                _ = tick.tick() => {
                    s.on_tick().await?;
                    s.publish(&mut out_tx, &mut online);
                }
            }
        }
    }
    .await;
    // Whatever was waiting for the server is not confirmed now; the courier sends it again.
    shared.set_offline();
    for p in s.pending.drain(..) {
        let _ = p.ack.send(Err(SendError::Offline));
    }
    out_rx.close();
    while let Ok(out) = out_rx.try_recv() {
        let _ = out.ack.send(Err(SendError::Offline));
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), s.writer.shutdown()).await;
    result
}

impl Session<'_> {
    /// Replies may go out once registered (a command can arrive while joins are still
    /// pending); the courier's notifications wait for `online`, after the joins.
    fn publish(&self, out_tx: &mut Option<mpsc::Sender<Outgoing>>, online: &mut bool) {
        if matches!(self.phase, Phase::Joining | Phase::Ready)
            && let Some(tx) = out_tx.take()
        {
            self.shared.update_me(|me| me.nick = self.nick.clone());
            self.shared.set_writer(tx);
        }
        if self.phase == Phase::Ready && !*online {
            *online = true;
            self.shared.online.send_replace(true);
            tracing::info!(network = %self.network, nick = %self.nick, "online");
        }
    }

    fn ended(&self, reason: impl Into<String>) -> Ended {
        Ended::new(reason, self.phase == Phase::Ready)
    }

    async fn write_line(&mut self, line: &str) -> Result<(), Ended> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        let write = async {
            self.writer.write_all(&bytes).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.ended(format!("writing to the server failed: {e}"))),
            Err(_) => Err(self.ended("the server stopped reading")),
        }
    }

    /// Sends a command built from parameters that came from configuration or the server.
    /// After registration it is charged to the connection's token bucket.
    async fn command(&mut self, command: &str, params: &[&str]) -> Result<(), Ended> {
        match proto::build(command, params) {
            Ok(line) => {
                if matches!(self.phase, Phase::Joining | Phase::Ready) {
                    self.shared.pacer.charge();
                    if command == "JOIN" {
                        // Servers count a JOIN double, like a WHOIS.
                        self.shared.pacer.charge();
                    }
                }
                self.write_line(&line).await
            }
            Err(e) => {
                tracing::warn!(network = %self.network, command, error = %e, "not sent");
                Ok(())
            }
        }
    }

    async fn register(&mut self) -> Result<(), Ended> {
        let cfg = &self.shared.cfg;
        let user = self.shared.user_name();
        let realname = cfg
            .realname
            .clone()
            .unwrap_or_else(|| "jarvis deployment bot".into());
        self.write_line("CAP LS 302").await?;
        let nick = self.nick.clone();
        self.command("NICK", &[&nick]).await?;
        self.command("USER", &[&user, "0", "*", &realname]).await?;
        Ok(())
    }

    async fn on_tick(&mut self) -> Result<(), Ended> {
        let now = Instant::now();
        if self.phase != Phase::Ready && now.duration_since(self.started) > REGISTER_TIMEOUT {
            return Err(self.ended("registration did not finish in time"));
        }
        if self.phase == Phase::Joining && now.duration_since(self.joins_since) > JOIN_TIMEOUT {
            tracing::warn!(network = %self.network, channels = ?self.joins, "joins got no answer; going on without them");
            self.joins.clear();
            self.phase = Phase::Ready;
        }
        let interval = self.shared.cfg.ping_interval;
        match self.ping_sent {
            Some(at) if now.duration_since(at) > interval => {
                return Err(self.ended(format!(
                    "ping timeout: no answer from the server for {}s",
                    now.duration_since(self.last_rx).as_secs()
                )));
            }
            None if now.duration_since(self.last_rx) > interval => {
                self.ping_sent = Some(now);
                self.shared.pacer.charge();
                self.write_line("PING :jarvis").await?;
            }
            _ => {}
        }
        let expired = self.lookups.expire(now);
        if expired > 0 {
            tracing::info!(network = %self.network, dropped = expired, "messages held for a WHOIS dropped: no answer in time");
            let lookups = &self.lookups;
            self.whois_answers.retain(|k, _| lookups.is_waiting(k));
        }
        if let Some(p) = self.pending.front()
            && now > p.deadline
        {
            return Err(self.ended("the server did not echo a message back in time"));
        }
        if self.phase == Phase::Ready {
            if !self.nick.eq_ignore_ascii_case(&self.shared.desired_nick) && now >= self.next_regain
            {
                self.regain_nick().await?;
            }
            let due: Vec<String> = self
                .rejoin
                .iter()
                .filter(|(_, at)| now >= **at)
                .map(|(c, _)| c.clone())
                .collect();
            for channel in due {
                self.rejoin.remove(&channel);
                self.command("JOIN", &[&channel]).await?;
            }
        }
        Ok(())
    }

    async fn regain_nick(&mut self) -> Result<(), Ended> {
        self.next_regain = Instant::now() + REGAIN_EVERY;
        let desired = self.shared.desired_nick.clone();
        self.command("NICK", &[&desired]).await
    }

    async fn write_privmsg(&mut self, out: Outgoing) -> Result<(), Ended> {
        if !matches!(self.phase, Phase::Joining | Phase::Ready) {
            let _ = out.ack.send(Err(SendError::Offline));
            return Ok(());
        }
        // A private reply meant for whom the nick was verified as: if the nick may have
        // changed hands since (NICK or QUIT seen, or another connection since), it is not
        // sent, for good — it may carry a new API token.
        if let Some(owner) = &out.owner
            && !self.owners.holds(&out.target, owner)
        {
            tracing::warn!(network = %self.network, target = %out.target, "private reply dropped: the nick may belong to someone else now");
            let _ = out.ack.send(Err(SendError::Refused(format!(
                "{} may belong to someone else now",
                out.target
            ))));
            return Ok(());
        }
        if let Err(e) = self.write_line(&out.line).await {
            let _ = out.ack.send(Err(SendError::Offline));
            return Err(e);
        }
        if self.negotiation.has("echo-message") {
            self.pending.push_back(Pending {
                target: out.target,
                ack: out.ack,
                deadline: Instant::now() + ECHO_TIMEOUT,
            });
        } else {
            let _ = out.ack.send(Ok(()));
        }
        Ok(())
    }

    fn is_me(&self, nick: &str) -> bool {
        nick.eq_ignore_ascii_case(&self.nick)
    }

    async fn handle(&mut self, msg: Message) -> Result<(), Ended> {
        // Learn how others see jarvis (user@host) from any of its own echoes.
        if let Some(nick) = msg.nick()
            && self.is_me(nick)
            && let Some((user, host)) = msg.user_host()
        {
            let (user, host) = (user.to_string(), host.to_string());
            self.shared.update_me(|me| {
                me.user = Some(user);
                me.host = Some(host);
            });
        }
        match msg.command.as_str() {
            "PING" => {
                let token = msg.param(0).to_string();
                self.command("PONG", &[&token]).await?;
            }
            "CAP" => {
                let out = self.negotiation.on_cap(&msg).map_err(|e| self.ended(e))?;
                self.negotiate(out).await?;
            }
            "AUTHENTICATE" if msg.param(0) == "+" => {
                let out = self.negotiation.sasl_response();
                self.negotiate(out).await?;
            }
            "900" => {
                tracing::info!(network = %self.network, account = %msg.param(2), "logged in to services");
            }
            "903" => {
                tracing::info!(network = %self.network, "SASL authentication succeeded");
                let out = self.negotiation.sasl_succeeded();
                self.negotiate(out).await?;
            }
            "902" | "904" | "905" | "906" | "908" => {
                return Err(self.ended(format!(
                    "SASL login failed: {}",
                    crate::text::one_line(msg.params.last().map(String::as_str).unwrap_or(""), 120)
                )));
            }
            "001" => {
                self.negotiation.registered();
                self.nick = msg.param(0).to_string();
                self.shared
                    .update_me(|me| me.nick = msg.param(0).to_string());
                self.start_joins().await?;
            }
            "396" => {
                // RPL_VISIBLEHOST: the host others now see (a cloak or vhost).
                let host = msg.param(1).to_string();
                if !host.is_empty() {
                    self.shared.update_me(|me| me.host = Some(host));
                }
            }
            "432" | "433" | "436" | "437" => self.on_nick_refused(&msg).await?,
            "NICK" => self.on_nick(&msg).await?,
            "JOIN" => self.on_join(&msg),
            "PART" => self.on_part(&msg),
            "KICK" => self.on_kick(&msg),
            "QUIT" => self.on_quit(&msg).await?,
            "ACCOUNT" => {
                if let Some(nick) = msg.nick() {
                    let account = account_value(msg.param(0));
                    self.remember(nick, account);
                }
            }
            "311" => {
                // RPL_WHOISUSER: <me> <nick> <user> <host> * :<realname> — who holds the
                // nick now, to be compared with the held messages' sources.
                let key = msg.param(1).to_ascii_lowercase();
                if self.lookups.is_waiting(&key) {
                    let user_host = format!("{}@{}", msg.param(2), msg.param(3));
                    self.whois_answers.entry(key).or_default().user_host = Some(user_host);
                }
            }
            "330" => {
                // RPL_WHOISACCOUNT: <me> <nick> <account> :is logged in as
                let key = msg.param(1).to_ascii_lowercase();
                if self.lookups.is_waiting(&key) {
                    self.whois_answers.entry(key).or_default().account =
                        Some(msg.param(2).to_string());
                }
            }
            "318" => self.on_end_of_whois(&msg).await,
            "403" | "405" | "471" | "473" | "474" | "475" | "476" | "477" | "489" => {
                let channel = msg.param(1).to_ascii_lowercase();
                if self.joins.remove(&channel) {
                    tracing::warn!(network = %self.network, channel = %msg.param(1), reason = %msg.params.last().map(String::as_str).unwrap_or(""), "cannot join");
                    self.joins_done();
                } else if matches!(msg.command.as_str(), "403" | "477" | "489") {
                    // No such channel, or it needs what jarvis lacks, for a PRIVMSG.
                    self.on_undeliverable(&msg);
                }
            }
            "401" | "404" => self.on_undeliverable(&msg),
            "PRIVMSG" => self.on_privmsg(msg).await,
            "ERROR" => {
                return Err(self.ended(format!(
                    "the server closed the link: {}",
                    crate::text::one_line(msg.param(0), 200)
                )));
            }
            "FAIL" => {
                tracing::warn!(network = %self.network, reply = ?msg.params, "the server reported a failure");
            }
            _ => {}
        }
        Ok(())
    }

    /// Writes what the capability negotiation answered; CAP END moves on to registration.
    async fn negotiate(&mut self, out: Vec<Out>) -> Result<(), Ended> {
        for line in out {
            match line {
                Out::Command(command, params) => {
                    let params: Vec<&str> = params.iter().map(String::as_str).collect();
                    self.command(command, &params).await?;
                }
                Out::Line(line) => self.write_line(&line).await?,
                Out::CapEnd => {
                    if self.phase == Phase::Negotiating {
                        self.phase = Phase::Registering;
                        self.write_line("CAP END").await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn start_joins(&mut self) -> Result<(), Ended> {
        self.phase = Phase::Joining;
        self.joins_since = Instant::now();
        let channels = self.shared.cfg.channels.clone();
        for channel in &channels {
            self.joins.insert(channel.to_ascii_lowercase());
            self.command("JOIN", &[channel]).await?;
        }
        self.joins_done();
        Ok(())
    }

    fn joins_done(&mut self) {
        if self.phase == Phase::Joining && self.joins.is_empty() {
            self.phase = Phase::Ready;
        }
    }

    async fn on_nick_refused(&mut self, msg: &Message) -> Result<(), Ended> {
        if self.phase == Phase::Ready || self.phase == Phase::Joining {
            // Our attempt to regain the nick; try again later.
            return Ok(());
        }
        self.alt_tries += 1;
        if self.alt_tries > 8 {
            return Err(self.ended(format!(
                "no nick accepted: {}",
                crate::text::one_line(msg.params.last().map(String::as_str).unwrap_or(""), 120)
            )));
        }
        let base = self.shared.desired_nick.clone();
        self.nick = if self.alt_tries <= 2 {
            format!("{base}{}", "_".repeat(self.alt_tries))
        } else {
            format!("{base}{}", fastrand::u32(100..10_000))
        };
        tracing::info!(network = %self.network, nick = %self.nick, "nick taken; using another until it is free");
        let nick = self.nick.clone();
        self.command("NICK", &[&nick]).await
    }

    async fn on_nick(&mut self, msg: &Message) -> Result<(), Ended> {
        let Some(old) = msg.nick().map(str::to_string) else {
            return Ok(());
        };
        let new = msg.param(0).to_string();
        if self.is_me(&old) {
            self.nick = new.clone();
            self.shared.update_me(|me| me.nick = new.clone());
            tracing::info!(network = %self.network, nick = %new, "nick changed");
            return Ok(());
        }
        // The account goes with the person, but only account-notify would tell if it did
        // not; without it, ask again.
        self.accounts
            .renamed(&old, &new, self.negotiation.has("account-notify"));
        // Both nicks may now be someone else's: what was held for either is dropped, and
        // private replies to either wait for the next message to verify who holds it.
        self.nick_changed_hands(&old, "NICK");
        self.nick_changed_hands(&new, "NICK");
        if old.eq_ignore_ascii_case(&self.shared.desired_nick) && self.phase == Phase::Ready {
            self.regain_nick().await?;
        }
        Ok(())
    }

    fn on_join(&mut self, msg: &Message) {
        let Some(nick) = msg.nick().map(str::to_string) else {
            return;
        };
        let channel = msg.param(0).to_ascii_lowercase();
        if self.is_me(&nick) {
            if self.joins.remove(&channel) {
                tracing::info!(network = %self.network, channel = %msg.param(0), "joined");
            }
            self.joins_done();
            return;
        }
        if self.negotiation.has("extended-join") && msg.params.len() >= 2 {
            self.remember(&nick, account_value(msg.param(1)));
        } else {
            // Possibly someone new behind a known nick.
            self.accounts.forget(&nick);
        }
    }

    fn on_part(&mut self, msg: &Message) {
        if let Some(nick) = msg.nick().map(str::to_string) {
            self.accounts.forget(&nick);
            // Channel membership is not tracked, so this may not be the last channel the
            // nick shares with jarvis; dropping a message sent just before a PART costs a
            // retype, crediting it to a later holder of the nick would cost far more.
            self.lookups_dropped(&nick, "PART");
        }
    }

    fn on_kick(&mut self, msg: &Message) {
        let kicked = msg.param(1);
        if self.is_me(kicked) {
            tracing::warn!(network = %self.network, channel = %msg.param(0), "kicked; rejoining soon");
            self.rejoin
                .insert(msg.param(0).to_string(), Instant::now() + REJOIN_AFTER);
        } else {
            let kicked = kicked.to_string();
            self.accounts.forget(&kicked);
            self.lookups_dropped(&kicked, "KICK");
        }
    }

    async fn on_quit(&mut self, msg: &Message) -> Result<(), Ended> {
        if let Some(nick) = msg.nick() {
            self.accounts.forget(nick);
            let gone = nick.to_string();
            self.nick_changed_hands(&gone, "QUIT");
            if nick.eq_ignore_ascii_case(&self.shared.desired_nick)
                && !self.is_me(nick)
                && self.phase == Phase::Ready
            {
                self.regain_nick().await?;
            }
        }
        Ok(())
    }

    /// `nick` may belong to someone else from now on (NICK, QUIT): nothing held for it is
    /// credited, and no private reply computed before is sent to it.
    fn nick_changed_hands(&mut self, nick: &str, why: &str) {
        self.owners.forget(nick);
        self.lookups_dropped(nick, why);
    }

    fn lookups_dropped(&mut self, nick: &str, why: &str) {
        let key = nick.to_ascii_lowercase();
        self.whois_answers.remove(&key);
        let n = self.lookups.drop_nick(&key);
        if n > 0 {
            tracing::info!(network = %self.network, nick, reason = why, dropped = n, "messages held for a WHOIS dropped: the nick may now be someone else");
        }
    }

    fn remember(&mut self, nick: &str, account: Option<String>) {
        self.accounts.remember(nick, account, Instant::now());
    }

    /// 401 (no such nick), 403 (no such channel) or 404 (cannot send to channel) for the
    /// oldest unconfirmed line to that target: the server will never deliver it. It fails
    /// as refused, so the courier sets it aside instead of trying it again.
    fn on_undeliverable(&mut self, msg: &Message) {
        let target = msg.param(1);
        if let Some(pos) = self
            .pending
            .iter()
            .position(|p| p.target.eq_ignore_ascii_case(target))
            && let Some(p) = self.pending.remove(pos)
        {
            let reason =
                crate::text::one_line(msg.params.last().map(String::as_str).unwrap_or(""), 200);
            tracing::warn!(network = %self.network, target, reason = %reason, "line not deliverable");
            let _ = p.ack.send(Err(SendError::Refused(format!(
                "{} {target}: {reason}",
                msg.command
            ))));
        }
    }

    async fn on_privmsg(&mut self, msg: Message) {
        let Some(nick) = msg.nick().map(str::to_string) else {
            return;
        };
        if self.is_me(&nick) {
            // echo-message: the server has the oldest line we sent.
            if let Some(p) = self.pending.pop_front() {
                let _ = p.ack.send(Ok(()));
            }
            return;
        }
        if msg.user_host().is_none() {
            return; // from a server, not a person
        }
        let text = msg.param(1);
        if text.starts_with('\x01') {
            return; // CTCP (and ACTION): not for the bot
        }
        if self.negotiation.has("account-tag") {
            let account = msg.tag("account").map(str::to_string);
            self.deliver(msg, account).await;
            return;
        }
        let key = nick.to_ascii_lowercase();
        // The cache is kept true by what jarvis sees in its channels (QUIT, NICK, PART,
        // account-notify); a private message can come from someone in none of them, whose
        // nick may have changed hands unseen, so it is always asked about.
        let in_channel = proto::is_channel(msg.param(0));
        let fresh = in_channel
            .then(|| {
                self.accounts
                    .fresh(&key, Instant::now(), self.negotiation.has("account-notify"))
            })
            .flatten();
        if let Some(account) = fresh
            && !self.lookups.is_waiting(&key)
        {
            self.deliver(msg, account).await;
            return;
        }
        let Some(user_host) = msg.user_host().map(|(u, h)| format!("{u}@{h}")) else {
            return;
        };
        match self
            .lookups
            .hold(&key, &user_host, AwaitingWhois { msg }, Instant::now())
        {
            Hold::New => self.schedule_whois(),
            Hold::Shared => {}
            Hold::Dropped => {
                tracing::debug!(network = %self.network, nick, "too many senders to look up; message dropped");
            }
        }
    }

    /// Reserves the bucket's next token for the next queued WHOIS, if none is reserved.
    fn schedule_whois(&mut self) {
        if self.whois_due.is_none() && self.lookups.has_queued() {
            self.whois_due =
                Some(Instant::now() + self.shared.pacer.reserve_cost(super::whois::WHOIS_COST));
        }
    }

    /// The reserved token is due: one WHOIS goes out.
    async fn send_due_whois(&mut self) -> Result<(), Ended> {
        self.whois_due = None;
        if let Some(key) = self.lookups.next_to_ask() {
            match proto::build("WHOIS", &[&key]) {
                Ok(line) => self.write_line(&line).await?,
                Err(e) => {
                    tracing::warn!(network = %self.network, error = %e, "WHOIS not sent");
                    self.lookups.answered(&key, None);
                }
            }
        }
        self.schedule_whois();
        Ok(())
    }

    async fn on_end_of_whois(&mut self, msg: &Message) {
        let key = msg.param(1).to_ascii_lowercase();
        let answer = self.whois_answers.remove(&key).unwrap_or_default();
        let account = answer.account;
        // Without 311 the nick is gone (401 came first): nothing is known of anyone.
        if answer.user_host.is_some() {
            self.remember(msg.param(1), account.clone());
        }
        let released = self.lookups.answered(&key, answer.user_host.as_deref());
        if released.dropped > 0 {
            tracing::info!(network = %self.network, nick = %msg.param(1), dropped = released.dropped, "messages held for a WHOIS dropped: the answer is for someone else (the nick changed hands)");
        }
        for held in released.credited {
            self.deliver(held.msg, account.clone()).await;
        }
    }

    async fn deliver(&mut self, msg: Message, account: Option<String>) {
        let Some(nick) = msg.nick().map(str::to_string) else {
            return;
        };
        // Whom this nick is verified as now; private replies to this message carry it.
        let owner = match (&account, &msg.source) {
            (Some(a), _) => format!("account:{a}"),
            (None, Some(mask)) => format!("mask:{mask}"),
            (None, None) => return,
        };
        self.owners.set(&nick, &owner);
        let target = msg.param(0);
        let reply_to = if proto::is_channel(target) {
            Target::room(&self.network, target)
        } else {
            Target::direct(&self.network, &nick)
        }
        .verified_as(&owner);
        let mut identities = Vec::new();
        if let Some(account) = &account {
            identities.push(Identity::IrcAccount {
                network: self.network.clone(),
                account: account.clone(),
            });
        }
        if let Some(mask) = &msg.source {
            identities.push(Identity::IrcHostmask {
                network: self.network.clone(),
                mask: mask.clone(),
            });
        }
        let identity_note = account.is_none().then(|| {
            format!(
                "{nick} is not logged in to a services account on {} (a nick alone grants no role)",
                self.network
            )
        });
        let incoming = Incoming {
            reply_to,
            nick,
            identities,
            identity_note,
            text: msg.param(1).to_string(),
        };
        if self.incoming.send(incoming).await.is_err() {
            tracing::error!(network = %self.network, "the bot is gone; message dropped");
        }
    }
}

/// `*` means "no account" in extended-join and account-notify.
fn account_value(v: &str) -> Option<String> {
    (!v.is_empty() && v != "*").then(|| v.to_string())
}
