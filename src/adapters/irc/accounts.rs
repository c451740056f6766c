//! Who is logged in as whom, as far as jarvis has seen: the services account per nick, from
//! extended-join, account-notify and WHOIS, kept true by NICK, PART, KICK and QUIT. No I/O:
//! the session tells it what it saw and asks it before a WHOIS.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an account learned without account-notify is trusted.
pub const ACCOUNT_TTL: Duration = Duration::from_secs(60);

/// The account a nick was last seen logged in as, and when: without account-notify what
/// was seen is trusted only for [`ACCOUNT_TTL`], so the time goes with it.
struct SeenAccount {
    account: Option<String>,
    at: Instant,
}

/// Nick (case-folded) → the account it was last seen with.
#[derive(Default)]
pub struct Accounts {
    known: HashMap<String, SeenAccount>,
}

impl Accounts {
    /// `nick` is logged in as `account` (`None`: as nobody), as of `now`.
    pub fn remember(&mut self, nick: &str, account: Option<String>, now: Instant) {
        self.known
            .insert(nick.to_ascii_lowercase(), SeenAccount { account, at: now });
    }

    /// `nick` may be someone else now (they left, were kicked, quit, or joined unseen).
    pub fn forget(&mut self, nick: &str) {
        self.known.remove(&nick.to_ascii_lowercase());
    }

    /// `old` is now `new`. The account goes with the person, but only account-notify
    /// (`notified`) would tell if it did not; without it, `new` is asked about again.
    pub fn renamed(&mut self, old: &str, new: &str, notified: bool) {
        let known = self.known.remove(&old.to_ascii_lowercase());
        if notified && let Some(k) = known {
            self.known.insert(new.to_ascii_lowercase(), k);
        }
    }

    /// The account of `nick` if it can be trusted without asking: `Some(None)` for "logged
    /// in as nobody". With account-notify (`notified`) the server tells of every change, so
    /// what is known stays true; without it, for [`ACCOUNT_TTL`].
    pub fn fresh(&self, nick: &str, now: Instant, notified: bool) -> Option<Option<String>> {
        self.known
            .get(&nick.to_ascii_lowercase())
            .filter(|k| now.saturating_duration_since(k.at) < ACCOUNT_TTL || notified)
            .map(|k| k.account.clone())
    }
}

/// Most nicks whose owner is remembered for private replies; past it the oldest half is
/// forgotten (their replies are then dropped, never sent to someone unverified).
pub const MAX_OWNERS: usize = 4096;

/// Nick (case-folded) → whom jarvis verified its holder as when it last handed on a message
/// from it (an account or a hostmask, as an opaque key). A private reply names the owner it
/// is meant for; it is sent only while the nick still has that owner, so a nick that changed
/// hands (NICK or QUIT seen) while the reply waited in the paced queue gets nothing.
#[derive(Default)]
pub struct Owners {
    owner: HashMap<String, (String, u64)>,
    serial: u64,
}

impl Owners {
    /// `nick` was just verified as `owner`.
    pub fn set(&mut self, nick: &str, owner: &str) {
        if self.owner.len() >= MAX_OWNERS && !self.owner.contains_key(&nick.to_ascii_lowercase()) {
            let mut ages: Vec<u64> = self.owner.values().map(|(_, n)| *n).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.owner.retain(|_, (_, n)| *n > cut);
        }
        self.serial += 1;
        self.owner
            .insert(nick.to_ascii_lowercase(), (owner.to_string(), self.serial));
    }

    /// `nick` may be someone else from now on.
    pub fn forget(&mut self, nick: &str) {
        self.owner.remove(&nick.to_ascii_lowercase());
    }

    /// Whether `nick` still belongs to `owner`.
    pub fn holds(&self, nick: &str, owner: &str) -> bool {
        self.owner
            .get(&nick.to_ascii_lowercase())
            .is_some_and(|(o, _)| o == owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_reply_is_for_the_owner_it_was_computed_for() {
        let mut o = Owners::default();
        o.set("Alice", "account:alice");
        assert!(o.holds("alice", "account:alice"));
        // alice leaves the nick and mallory takes it and speaks: the reply for alice is not
        // sent to mallory; mallory's own is.
        o.forget("alice");
        assert!(!o.holds("alice", "account:alice"));
        o.set("alice", "mask:alice!m@evil.example");
        assert!(!o.holds("alice", "account:alice"));
        assert!(o.holds("alice", "mask:alice!m@evil.example"));
        // Bounded: the oldest are forgotten first.
        for i in 0..MAX_OWNERS + 10 {
            o.set(&format!("n{i}"), "x");
        }
        assert!(o.owner.len() <= MAX_OWNERS);
        assert!(o.holds(&format!("n{}", MAX_OWNERS + 9), "x"));
        assert!(!o.holds("n0", "x"));
    }

    #[test]
    fn what_is_seen_is_known_for_a_while_without_account_notify() {
        let start = Instant::now();
        let mut a = Accounts::default();
        a.remember("Alice", Some("alice".into()), start);
        a.remember("bob", None, start);
        assert_eq!(a.fresh("alice", start, false), Some(Some("alice".into())));
        assert_eq!(a.fresh("BOB", start, false), Some(None));
        let later = start + ACCOUNT_TTL;
        assert_eq!(a.fresh("alice", later, false), None);
        assert_eq!(a.fresh("alice", later, true), Some(Some("alice".into())));
        assert_eq!(a.fresh("carol", start, true), None);
    }

    #[test]
    fn leaving_forgets_and_a_rename_keeps_the_account_only_when_notified() {
        let now = Instant::now();
        let mut a = Accounts::default();
        a.remember("alice", Some("alice".into()), now);
        a.renamed("alice", "alice_", true);
        assert_eq!(a.fresh("alice_", now, true), Some(Some("alice".into())));
        assert_eq!(a.fresh("alice", now, true), None);
        a.renamed("alice_", "mallory", false);
        assert_eq!(a.fresh("mallory", now, false), None);
        assert_eq!(a.fresh("alice_", now, false), None);
        a.remember("bob", Some("bob".into()), now);
        a.forget("Bob");
        assert_eq!(a.fresh("bob", now, true), None);
    }
}
