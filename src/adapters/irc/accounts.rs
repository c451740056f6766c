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

#[cfg(test)]
mod tests {
    use super::*;

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
