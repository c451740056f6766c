//! Who sent a message, when the server does not say (no `account-tag`): a WHOIS per unknown
//! sender, with the messages held until its answer. Lookups are shared (a second message
//! from a nick already asked about waits for the same answer) and bounded (a flood of
//! clones cannot make jarvis hold unbounded messages), and the WHOIS lines themselves wait
//! for the connection's token bucket like every other line, one at a time, so a flood of
//! unknown senders gets at most the bucket's rate of WHOIS lines.

use std::collections::{HashMap, VecDeque};

/// Tokens one WHOIS takes from the connection's bucket: InspIRCd counts it as two
/// commands toward its flood limit (a penalty of 2), and a WHOIS at the PRIVMSG rate gets
/// jarvis thrown off for "Excess Flood".
pub const WHOIS_COST: u32 = 2;
/// Most senders waiting for an answer at once; messages from more are dropped.
pub const MAX_WAITING: usize = 64;
/// Most messages held per sender.
pub const MAX_HELD: usize = 8;

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

/// Lookups in progress, keyed by lower-case nick.
pub struct Lookups<T> {
    held: HashMap<String, Vec<T>>,
    /// Senders whose WHOIS has not gone out yet, in order.
    queue: VecDeque<String>,
}

impl<T> Default for Lookups<T> {
    fn default() -> Self {
        Lookups {
            held: HashMap::new(),
            queue: VecDeque::new(),
        }
    }
}

impl<T> Lookups<T> {
    pub fn is_waiting(&self, key: &str) -> bool {
        self.held.contains_key(key)
    }

    /// Holds `item` until `key`'s lookup is answered.
    pub fn hold(&mut self, key: &str, item: T) -> Hold {
        if let Some(items) = self.held.get_mut(key) {
            if items.len() >= MAX_HELD {
                return Hold::Dropped;
            }
            items.push(item);
            return Hold::Shared;
        }
        if self.held.len() >= MAX_WAITING {
            return Hold::Dropped;
        }
        self.held.insert(key.to_string(), vec![item]);
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

    /// The answer for `key` came: the messages that waited for it.
    pub fn answered(&mut self, key: &str) -> Vec<T> {
        self.queue.retain(|k| k != key);
        self.held.remove(key).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::chat::Rate;
    use crate::chat::pace::Bucket;

    #[test]
    fn lookups_are_shared_bounded_and_paced() {
        let mut l: Lookups<u32> = Lookups::default();
        assert_eq!(l.hold("clone1", 1), Hold::New);
        assert_eq!(l.hold("clone1", 2), Hold::Shared);
        assert_eq!(l.hold("clone2", 3), Hold::New);
        assert!(l.is_waiting("clone1"));
        // A flood of clones: a bounded number waits, the rest are dropped.
        let mut dropped = 0;
        for i in 0..500 {
            if l.hold(&format!("flood{i}"), i) == Hold::Dropped {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 500 - (MAX_WAITING - 2));
        for i in 0..MAX_HELD as u32 {
            l.hold("clone2", 10 + i);
        }
        assert_eq!(l.answered("clone2").len(), MAX_HELD);

        // The WHOIS lines go out at the bucket's rate, each worth WHOIS_COST tokens: with a
        // burst of 5 and one token a second, 62 lookups take about two minutes, and no more
        // than 5 + t tokens go in any t seconds.
        let t0 = Instant::now();
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
        // 62 lookups, 124 tokens: 5 at once, the rest at one a second (the last waits for
        // its two whole tokens).
        let last = sent[sent.len() - 1].1.duration_since(t0);
        assert!(
            last >= Duration::from_secs(118) && last <= Duration::from_secs(121),
            "{last:?}"
        );
        // Answers release what waited, once.
        assert_eq!(l.answered("clone1"), vec![1, 2]);
        assert!(l.answered("clone1").is_empty());
        assert!(!l.has_queued());
    }
}
