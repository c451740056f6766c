//! Who sent a message, when the server does not say (no `account-tag`): a WHOIS per unknown
//! sender, with the messages held until its answer. Lookups are shared (a second message
//! from a nick already asked about waits for the same answer) and bounded (a flood of
//! clones cannot make jarvis hold unbounded messages), and the WHOIS lines themselves wait
//! for the connection's token bucket like every other line, one at a time, so a flood of
//! unknown senders gets at most the bucket's rate of WHOIS lines.
//!
//! A WHOIS answers for whoever holds the nick when the server reads it, which need not be
//! who sent the held message: a nick can pass to someone else in between. So a held
//! message is credited only when the answer's `user@host` (311 RPL_WHOISUSER) is the one
//! its own source carried; a NICK, QUIT, KICK or PART of the nick drops what is held for
//! it; and nothing is held longer than [`LOOKUP_TIMEOUT`], so no flood stretches the time
//! in which a nick can change hands.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Tokens one WHOIS takes from the connection's bucket: InspIRCd counts it as two
/// commands toward its flood limit (a penalty of 2), and a WHOIS at the PRIVMSG rate gets
/// jarvis thrown off for "Excess Flood".
pub const WHOIS_COST: u32 = 2;
/// Most senders waiting for an answer at once; messages from more are dropped.
pub const MAX_WAITING: usize = 64;
/// Most messages held per sender.
pub const MAX_HELD: usize = 8;
/// Most messages held in all: fewer than every sender's full share, so that clones each
/// sending a little cannot fill memory or the WHOIS queue for everyone else.
pub const MAX_HELD_TOTAL: usize = 128;
/// A held message whose answer has not come within this is dropped. Its sender is told
/// nothing: an answer would go to a nick whose owner is unknown (which is the point of the
/// lookup) and would cost a paced line during exactly the flood that caused the delay.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What became of a message held for a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Hold {
    /// The first message from this sender: a WHOIS is to be asked.
    New,
    /// A WHOIS for this sender is already queued or asked: it shares the answer.
    Shared,
    /// Too many waiting: the message is dropped.
    Dropped,
}

/// What a WHOIS has said about a nick so far: 311 RPL_WHOISUSER's `user@host` and 330
/// RPL_WHOISACCOUNT's account.
#[derive(Debug, Default)]
pub struct WhoisAnswer {
    pub user_host: Option<String>,
    pub account: Option<String>,
}

/// One held message and the `user@host` its source carried.
struct Held<T> {
    user_host: String,
    at: Instant,
    item: T,
}

/// What a WHOIS answer released: the messages whose sender it describes, and how many
/// others (sent by someone who held the nick before) were dropped.
pub struct Answered<T> {
    pub credited: Vec<T>,
    pub dropped: usize,
}

/// Lookups in progress, keyed by lower-case nick.
pub struct Lookups<T> {
    held: HashMap<String, Vec<Held<T>>>,
    /// Senders whose WHOIS has not gone out yet, in order.
    queue: VecDeque<String>,
    total: usize,
}

impl<T> Default for Lookups<T> {
    fn default() -> Self {
        Lookups {
            held: HashMap::new(),
            queue: VecDeque::new(),
            total: 0,
        }
    }
}

/// Whether two `user@host`s name the same connection (hosts are case-insensitive, the
/// user name is compared as given, as servers show it).
pub fn same_user_host(a: &str, b: &str) -> bool {
    match (a.split_once('@'), b.split_once('@')) {
        (Some((ua, ha)), Some((ub, hb))) => ua == ub && ha.eq_ignore_ascii_case(hb),
        _ => false,
    }
}

impl<T> Lookups<T> {
    pub fn is_waiting(&self, key: &str) -> bool {
        self.held.contains_key(key)
    }

    /// Holds `item`, sent from `user_host`, until `key`'s lookup is answered.
    pub fn hold(&mut self, key: &str, user_host: &str, item: T, now: Instant) -> Hold {
        if self.total >= MAX_HELD_TOTAL {
            return Hold::Dropped;
        }
        let held = Held {
            user_host: user_host.to_string(),
            at: now,
            item,
        };
        if let Some(items) = self.held.get_mut(key) {
            if items.len() >= MAX_HELD {
                return Hold::Dropped;
            }
            items.push(held);
            self.total += 1;
            return Hold::Shared;
        }
        if self.held.len() >= MAX_WAITING {
            return Hold::Dropped;
        }
        self.held.insert(key.to_string(), vec![held]);
        self.total += 1;
        self.queue.push_back(key.to_string());
        Hold::New
    }

    /// Whether a WHOIS waits to be sent.
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The next sender to send a WHOIS for (its answer is then awaited).
    pub fn next_to_ask(&mut self) -> Option<String> {
        self.queue.pop_front()
    }

    /// The answer for `key` came: `user_host` is who holds the nick now (from 311; `None`
    /// when the server knew no such nick). Only the messages sent from that `user@host`
    /// are credited; the rest came from someone who has since given up the nick.
    pub fn answered(&mut self, key: &str, user_host: Option<&str>) -> Answered<T> {
        self.queue.retain(|k| k != key);
        let held = self.held.remove(key).unwrap_or_default();
        self.total -= held.len();
        let mut out = Answered {
            credited: Vec::new(),
            dropped: 0,
        };
        for h in held {
            match user_host {
                Some(now) if same_user_host(now, &h.user_host) => out.credited.push(h.item),
                _ => out.dropped += 1,
            }
        }
        out
    }

    /// `key` may now be someone else (NICK, QUIT, KICK, PART): what is held for it is
    /// dropped, and its WHOIS, if not yet sent, is not sent. Returns how many were dropped.
    pub fn drop_nick(&mut self, key: &str) -> usize {
        self.queue.retain(|k| k != key);
        let n = self.held.remove(key).map(|h| h.len()).unwrap_or(0);
        self.total -= n;
        n
    }

    /// Drops what has waited longer than [`LOOKUP_TIMEOUT`] as of `now`; returns how many.
    /// A sender with nothing left held is no longer asked about.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        self.held.retain(|_, items| {
            let before = items.len();
            items.retain(|h| now.saturating_duration_since(h.at) < LOOKUP_TIMEOUT);
            dropped += before - items.len();
            !items.is_empty()
        });
        self.total -= dropped;
        let held = &self.held;
        self.queue.retain(|k| held.contains_key(k));
        dropped
    }

    /// Messages held in all.
    #[cfg(test)]
    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::chat::Rate;
    use crate::chat::pace::Bucket;

    const UH: &str = "u@h";

    #[test]
    fn lookups_are_shared_bounded_and_paced() {
        let t0 = Instant::now();
        let mut l: Lookups<u32> = Lookups::default();
        assert_eq!(l.hold("clone1", UH, 1, t0), Hold::New);
        assert_eq!(l.hold("clone1", UH, 2, t0), Hold::Shared);
        assert_eq!(l.hold("clone2", UH, 3, t0), Hold::New);
        assert!(l.is_waiting("clone1"));
        // A flood of clones: a bounded number waits, the rest are dropped.
        let mut dropped = 0;
        for i in 0..500 {
            if l.hold(&format!("flood{i}"), UH, i, t0) == Hold::Dropped {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 500 - (MAX_WAITING - 2));
        for i in 0..MAX_HELD as u32 {
            l.hold("clone2", UH, 10 + i, t0);
        }
        assert_eq!(l.answered("clone2", Some(UH)).credited.len(), MAX_HELD);

        // The WHOIS lines go out at the bucket's rate, each worth WHOIS_COST tokens: with a
        // burst of 5 and one token a second, 62 lookups take about two minutes, and no more
        // than 5 + t tokens go in any t seconds.
        let mut bucket = Bucket::new(
            Rate {
                burst: 5,
                per_second: 1.0,
            },
            t0,
        );
        let mut at = t0;
        let mut sent = Vec::new();
        while let Some(nick) = l.next_to_ask() {
            at += bucket.reserve_cost(at, WHOIS_COST);
            sent.push((nick, at));
        }
        assert_eq!(sent.len(), MAX_WAITING - 1);
        assert_eq!(sent[0].0, "clone1");
        for (i, (_, when)) in sent.iter().enumerate() {
            let allowed = 5.0 + when.duration_since(t0).as_secs_f64() + 1e-6;
            let used = ((i + 1) as u32 * WHOIS_COST) as f64;
            assert!(used <= allowed, "line {i} at {when:?}");
        }
        let last = sent[sent.len() - 1].1.duration_since(t0);
        assert!(
            last >= Duration::from_secs(118) && last <= Duration::from_secs(121),
            "{last:?}"
        );
        // Answers release what waited, once.
        assert_eq!(l.answered("clone1", Some(UH)).credited, vec![1, 2]);
        assert!(l.answered("clone1", Some(UH)).credited.is_empty());
        assert!(!l.has_queued());
    }

    #[test]
    fn all_held_messages_are_bounded_however_many_senders_share_it() {
        let t0 = Instant::now();
        let mut l: Lookups<usize> = Lookups::default();
        let mut kept = 0;
        for i in 0..MAX_WAITING {
            for j in 0..MAX_HELD {
                if l.hold(&format!("n{i}"), UH, j, t0) != Hold::Dropped {
                    kept += 1;
                }
            }
        }
        assert_eq!(kept, MAX_HELD_TOTAL);
        assert_eq!(l.total(), MAX_HELD_TOTAL);
        assert_eq!(l.drop_nick("n0"), MAX_HELD);
        assert_eq!(l.total(), MAX_HELD_TOTAL - MAX_HELD);
    }

    #[test]
    fn an_answer_credits_only_messages_from_the_user_and_host_it_names() {
        let t0 = Instant::now();
        let mut l: Lookups<&str> = Lookups::default();
        // mallory said something, gave the nick up, and alice took it and spoke too.
        l.hold("mallory", "m@evil.example", "from mallory", t0);
        l.hold("mallory", "a@ops.example", "from alice", t0);
        let a = l.answered("mallory", Some("a@OPS.example"));
        assert_eq!(a.credited, vec!["from alice"]);
        assert_eq!(a.dropped, 1);
        // No such nick (401, then 318 without 311): nothing is credited.
        l.hold("gone", "g@h", "lost", t0);
        let a = l.answered("gone", None);
        assert!(a.credited.is_empty());
        assert_eq!(a.dropped, 1);
        assert_eq!(l.total(), 0);
        assert!(same_user_host("u@h", "u@H"));
        assert!(!same_user_host("U@h", "u@h"));
        assert!(!same_user_host("u@h", "uh"));
    }

    #[test]
    fn a_nick_change_drops_what_is_held_and_its_whois_is_not_sent() {
        let t0 = Instant::now();
        let mut l: Lookups<u32> = Lookups::default();
        l.hold("mallory", UH, 1, t0);
        l.hold("bob", UH, 2, t0);
        assert_eq!(l.drop_nick("mallory"), 1);
        assert_eq!(l.drop_nick("mallory"), 0);
        assert_eq!(l.next_to_ask().as_deref(), Some("bob"));
        assert_eq!(l.next_to_ask(), None);
        // An answer for the dropped nick that was already asked finds nothing.
        assert!(l.answered("mallory", Some(UH)).credited.is_empty());
    }

    #[test]
    fn lookups_time_out() {
        let t0 = Instant::now();
        let mut l: Lookups<u32> = Lookups::default();
        l.hold("slow", UH, 1, t0);
        l.hold("later", UH, 2, t0 + LOOKUP_TIMEOUT / 2);
        assert_eq!(l.expire(t0 + LOOKUP_TIMEOUT / 2), 0);
        assert_eq!(l.expire(t0 + LOOKUP_TIMEOUT), 1);
        assert!(!l.is_waiting("slow"));
        // Its WHOIS is not asked any more; the other one still is.
        assert_eq!(l.next_to_ask().as_deref(), Some("later"));
        assert_eq!(l.expire(t0 + LOOKUP_TIMEOUT * 2), 1);
        assert_eq!(l.total(), 0);
    }
}
