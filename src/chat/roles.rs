//! Who may do what (SPEC 7). Identities are verified by the adapters (an IRC services
//! account, an XMPP real bare JID, the console user); roles are granted to identities by the
//! configuration. A bare IRC nick is never an identity.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Deployer,
    Approver,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    /// Whether holding `self` is enough for `needed`: admin may do anything; deployers and
    /// approvers may also view.
    pub fn covers(self, needed: Role) -> bool {
        self == needed
            || self == Role::Admin
            || (needed == Role::Viewer && matches!(self, Role::Deployer | Role::Approver))
    }
}

/// A verified identity of whoever sent a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Console(String),
    IrcAccount {
        network: String,
        account: String,
    },
    /// `nick!user@host`, which counts only for grants that opt in to hostmasks.
    IrcHostmask {
        network: String,
        mask: String,
    },
    Jid {
        network: String,
        jid: String,
    },
    /// A person of `roles.people` who logged in to the HTTP API or the web page with one of
    /// their personal API tokens. It matches that person only, never a grant of its own.
    Web(String),
    /// A webhook or a schedule of the configuration (`hook.NAME`, `schedule.NAME`) acting
    /// as the person it names. Like [`Identity::Web`], it matches that person only.
    Trigger {
        source: String,
        person: String,
    },
}

impl Identity {
    /// A stable key for the identity, stored as a run's requester.
    pub fn key(&self) -> String {
        match self {
            Identity::Console(user) => format!("console:{user}"),
            Identity::IrcAccount { network, account } => format!("irc:{network}:{account}"),
            Identity::IrcHostmask { network, mask } => format!("irc-mask:{network}:{mask}"),
            Identity::Jid { network, jid } => format!("xmpp:{network}:{jid}"),
            Identity::Web(person) => format!("web:{person}"),
            Identity::Trigger { source, person } => format!("trigger:{source}:{person}"),
        }
    }

    /// The identity a [`Identity::key`] was made from.
    pub fn from_key(key: &str) -> Option<Identity> {
        let (kind, rest) = key.split_once(':')?;
        if kind == "console" {
            return Some(Identity::Console(rest.to_string()));
        }
        if kind == "web" {
            return Some(Identity::Web(rest.to_string()));
        }
        let (network, value) = rest.split_once(':')?;
        let (network, value) = (network.to_string(), value.to_string());
        match kind {
            "trigger" => Some(Identity::Trigger {
                source: network,
                person: value,
            }),
            "irc" => Some(Identity::IrcAccount {
                network,
                account: value,
            }),
            "irc-mask" => Some(Identity::IrcHostmask {
                network,
                mask: value,
            }),
            "xmpp" => Some(Identity::Jid {
                network,
                jid: value,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Console(user) => write!(f, "console user {user}"),
            Identity::IrcAccount { network, account } => {
                write!(f, "IRC account {account} on {network}")
            }
            Identity::IrcHostmask { network, mask } => {
                write!(f, "IRC hostmask {mask} on {network}")
            }
            Identity::Jid { network, jid } => write!(f, "JID {jid} on {network}"),
            Identity::Web(person) => write!(f, "web user {person}"),
            Identity::Trigger { source, person } => write!(f, "{source} acting as {person}"),
        }
    }
}

/// The `roles` section: who is who, and who may do what.
///
/// ```yaml
/// roles:
///   people:                     # optional: a person and every identity that is theirs
///     alice:
///       - { irc_account: alice, network: libera }
///       - { xmpp_jid: alice@example.com, network: jabber }   # without network: no approving
///       - { console: alice }                   # the operating-system user
///     dana: []                  # no chat identity: the web page and API only, with a token
///   grants:
///     - { person: alice, roles: [deployer, approver] }
///     - { irc_account: bob, network: libera, roles: [viewer] }
///     - { console: "*", roles: [admin] }
/// ```
///
/// Approvals are about people: nobody approves a run asked for by the same person, from
/// whichever identity. An identity belongs to at most one person; people list verified
/// identities only (no hostmasks, no `console: "*"`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    /// Person name → that person's identities.
    #[serde(default)]
    pub people: BTreeMap<String, Vec<PersonIdentity>>,
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// One identity of a person: exactly one of `console`, `irc_account` (with its `network`)
/// and `xmpp_jid` (with an optional `network`; a JID no grant or person ties to its
/// network may hold roles but never approves, since any connected server could vouch for
/// it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonIdentity {
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub console: Option<String>,
    #[serde(default)]
    pub irc_account: Option<String>,
    #[serde(default)]
    pub xmpp_jid: Option<String>,
}

/// One grant: roles for a person or an identity. Exactly one of `person`, `console`,
/// `irc_account`, `irc_hostmask` and `xmpp_jid`. `network` limits an identity to one chat
/// network; `irc_account` and `irc_hostmask` need it (an account name or a hostmask means
/// nothing across networks).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Named actions (`actions:`) this grant may run with `run ACTION on HOST`, whatever
    /// role each action asks for — and nothing more: a grant of actions alone gives no role.
    #[serde(default)]
    pub actions: Vec<String>,
    /// A name from `people`: the grant holds for every identity of that person.
    #[serde(default)]
    pub person: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    /// An operating-system user, or `*` for any user at the console.
    #[serde(default)]
    pub console: Option<String>,
    #[serde(default)]
    pub irc_account: Option<String>,
    /// A `nick!user@host` pattern with `*` and `?`. Hostmasks can be spoofed across
    /// networks, so they count only with a `network` set.
    #[serde(default)]
    pub irc_hostmask: Option<String>,
    #[serde(default)]
    pub xmpp_jid: Option<String>,
}

impl RolesConfig {
    /// What the types cannot say; each problem starts with its path (`grants[1]: …`).
    pub fn check(&self) -> Result<(), String> {
        self.check_people()?;
        for (i, g) in self.grants.iter().enumerate() {
            let kinds = [
                &g.person,
                &g.console,
                &g.irc_account,
                &g.irc_hostmask,
                &g.xmpp_jid,
            ]
            .iter()
            .filter(|k| k.is_some())
            .count();
            if kinds != 1 {
                return Err(format!(
                    "grants[{i}]: name exactly one of person, console, irc_account, irc_hostmask, xmpp_jid"
                ));
            }
            if let Some(person) = &g.person {
                if g.network.is_some() {
                    return Err(format!(
                        "grants[{i}]: a person grant takes no network (list the person's identities under people.{person})"
                    ));
                }
                if !self.people.contains_key(person) {
                    return Err(format!(
                        "grants[{i}].person: no person '{person}' under roles.people"
                    ));
                }
            }
            if g.irc_hostmask.is_some() && g.network.is_none() {
                return Err(format!(
                    "grants[{i}]: an irc_hostmask grant needs a network (hostmasks can be spoofed across networks)"
                ));
            }
            if let Some(account) = &g.irc_account
                && g.network.is_none()
            {
                return Err(format!(
                    "grants[{i}]: the irc_account grant for '{account}' needs a network (an account name means nothing across networks)"
                ));
            }
            if g.roles.is_empty() && g.actions.is_empty() {
                return Err(format!(
                    "grants[{i}].roles: grant at least one role or action"
                ));
            }
        }
        Ok(())
    }

    fn check_people(&self) -> Result<(), String> {
        let mut seen: Vec<(&str, usize, &PersonIdentity)> = Vec::new();
        for (person, ids) in &self.people {
            if person.is_empty()
                || person
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ':')
            {
                return Err(format!("people.{person}: a person's name is one word"));
            }
            for (i, id) in ids.iter().enumerate() {
                let at = format!("people.{person}[{i}]");
                let kinds = [&id.console, &id.irc_account, &id.xmpp_jid]
                    .iter()
                    .filter(|k| k.is_some())
                    .count();
                if kinds != 1 {
                    return Err(format!(
                        "{at}: name exactly one of console, irc_account, xmpp_jid"
                    ));
                }
                if let Some(account) = &id.irc_account
                    && id.network.is_none()
                {
                    return Err(format!(
                        "{at}: the irc_account '{account}' needs a network (an account name means nothing across networks)"
                    ));
                }
                if id.console.as_deref() == Some("*") {
                    return Err(format!(
                        "{at}: console: \"*\" is every console user, not one person's identity"
                    ));
                }
                if id.console.is_some() && id.network.is_some() {
                    return Err(format!("{at}: a console identity takes no network"));
                }
                if let Some((other, j, _)) = seen
                    .iter()
                    .find(|(other, _, prev)| *other != person.as_str() && prev.overlaps(id))
                {
                    return Err(format!(
                        "{at}: {} is already {other}'s (roles.people.{other}[{j}]); an identity belongs to at most one person",
                        id.describe()
                    ));
                }
                seen.push((person, i, id));
            }
        }
        Ok(())
    }

    /// The person any of `identities` belongs to.
    pub fn person_of(&self, identities: &[Identity]) -> Option<&str> {
        let web = identities.iter().find_map(|id| match id {
            Identity::Web(person) | Identity::Trigger { person, .. } => {
                self.people.get_key_value(person).map(|(k, _)| k.as_str())
            }
            _ => None,
        });
        if web.is_some() {
            return web;
        }
        self.people
            .iter()
            .find(|(_, ids)| {
                ids.iter()
                    .any(|pid| identities.iter().any(|id| pid.matches(id)))
            })
            .map(|(name, _)| name.as_str())
    }

    /// Every role granted to any of `identities`, or to the person they belong to.
    pub fn roles_of(&self, identities: &[Identity]) -> Vec<Role> {
        let mut roles: Vec<Role> = self
            .grants_of(identities)
            .flat_map(|g| g.roles.iter().copied())
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }
}

impl RolesConfig {
    /// The grants that hold for any of `identities`, or for the person they belong to.
    fn grants_of<'a>(&'a self, identities: &'a [Identity]) -> impl Iterator<Item = &'a Grant> {
        let person = self.person_of(identities);
        self.grants.iter().filter(move |g| match &g.person {
            Some(p) => person == Some(p.as_str()),
            None => identities.iter().any(|id| g.matches(id)),
        })
    }

    /// Whether the configuration ties `id` to its chat network: for a JID, a person's
    /// identity or a grant that matches it names its `network` (else any connected server
    /// could vouch for that address). Every other identity is tied by what it is.
    pub fn names_network_of(&self, id: &Identity) -> bool {
        match id {
            Identity::Jid { .. } => {
                self.people
                    .values()
                    .flatten()
                    .any(|p| p.network.is_some() && p.matches(id))
                    || self
                        .grants
                        .iter()
                        .any(|g| g.network.is_some() && g.matches(id))
            }
            _ => true,
        }
    }

    /// Whether a grant names action `action` for any of `identities` (or their person).
    pub fn may_run_action(&self, identities: &[Identity], action: &str) -> bool {
        self.grants_of(identities)
            .any(|g| g.actions.iter().any(|a| a == action))
    }
}

/// The identity that speaks for a sender with several: a verified account, JID or console
/// user before a hostmask.
pub fn principal(identities: &[Identity]) -> Option<&Identity> {
    identities
        .iter()
        .find(|id| !matches!(id, Identity::IrcHostmask { .. }))
        .or_else(|| identities.first())
}

impl PersonIdentity {
    fn network_ok(&self, network: &str) -> bool {
        self.network.as_deref().is_none_or(|n| n == network)
    }

    fn matches(&self, id: &Identity) -> bool {
        match id {
            Identity::Console(user) => self.console.as_deref() == Some(user.as_str()),
            Identity::IrcAccount { network, account } => {
                self.network.as_deref() == Some(network.as_str())
                    && self
                        .irc_account
                        .as_deref()
                        .is_some_and(|a| a.eq_ignore_ascii_case(account))
            }
            Identity::IrcHostmask { .. } | Identity::Web(_) | Identity::Trigger { .. } => false,
            Identity::Jid { network, jid } => {
                self.network_ok(network)
                    && self
                        .xmpp_jid
                        .as_deref()
                        .is_some_and(|j| j.eq_ignore_ascii_case(jid))
            }
        }
    }

    /// Whether one identity could be both `self` and `other`.
    fn overlaps(&self, other: &PersonIdentity) -> bool {
        let networks = match (&self.network, &other.network) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let same = |a: &Option<String>, b: &Option<String>, fold: bool| match (a, b) {
            (Some(a), Some(b)) if fold => a.eq_ignore_ascii_case(b),
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        networks
            && (same(&self.console, &other.console, false)
                || same(&self.irc_account, &other.irc_account, true)
                || same(&self.xmpp_jid, &other.xmpp_jid, true))
    }

    fn describe(&self) -> String {
        let network = self
            .network
            .as_deref()
            .map(|n| format!(" on {n}"))
            .unwrap_or_default();
        match (&self.console, &self.irc_account, &self.xmpp_jid) {
            (Some(user), _, _) => format!("console user {user}"),
            (_, Some(account), _) => format!("IRC account {account}{network}"),
            (_, _, Some(jid)) => format!("JID {jid}{network}"),
            _ => "this identity".into(),
        }
    }
}

impl Grant {
    fn network_ok(&self, network: &str) -> bool {
        self.network.as_deref().is_none_or(|n| n == network)
    }

    fn matches(&self, id: &Identity) -> bool {
        match id {
            Identity::Console(user) => self
                .console
                .as_deref()
                .is_some_and(|c| c == "*" || c == user),
            Identity::IrcAccount { network, account } => {
                self.network_ok(network)
                    && self
                        .irc_account
                        .as_deref()
                        .is_some_and(|a| a.eq_ignore_ascii_case(account))
            }
            Identity::IrcHostmask { network, mask } => {
                self.network.as_deref() == Some(network.as_str())
                    && self.irc_hostmask.as_deref().is_some_and(|p| {
                        glob_match(&p.to_ascii_lowercase(), &mask.to_ascii_lowercase())
                    })
            }
            Identity::Jid { network, jid } => {
                self.network_ok(network)
                    && self
                        .xmpp_jid
                        .as_deref()
                        .is_some_and(|j| j.eq_ignore_ascii_case(jid))
            }
            // A web user's roles are their person's grants.
            Identity::Web(_) | Identity::Trigger { .. } => false,
        }
    }
}

/// `*` and `?` patterns, as IRC hostmasks use them.
/// Whether `text` matches `pattern`, where `*` is any run of characters and `?` any one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> RolesConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn accounts_grant_roles_on_their_network_only() {
        let c = config("grants:\n  - {irc_account: alice, network: libera, roles: [deployer]}\n");
        let alice = |net: &str| Identity::IrcAccount {
            network: net.into(),
            account: "alice".into(),
        };
        assert_eq!(c.roles_of(&[alice("libera")]), vec![Role::Deployer]);
        assert!(c.roles_of(&[alice("oftc")]).is_empty());
    }

    #[test]
    fn hostmasks_need_a_network_and_match_globs() {
        let bad = config("grants:\n  - {irc_hostmask: '*!*@ops.example', roles: [viewer]}\n");
        assert!(bad.check().is_err());
        let c =
            config("grants:\n  - {irc_hostmask: '*!*@ops.example', network: n, roles: [viewer]}\n");
        let id = Identity::IrcHostmask {
            network: "n".into(),
            mask: "bob!b@OPS.example".into(),
        };
        assert_eq!(c.roles_of(&[id]), vec![Role::Viewer]);
    }

    #[test]
    fn role_coverage() {
        assert!(Role::Admin.covers(Role::Approver));
        assert!(Role::Deployer.covers(Role::Viewer));
        assert!(!Role::Deployer.covers(Role::Approver));
        assert!(!Role::Viewer.covers(Role::Deployer));
    }

    const PEOPLE: &str = "people:
  alice:
    - { irc_account: alice, network: libera }
    - { xmpp_jid: alice@example.com }
    - { console: alice }
  bob:
    - { irc_account: bob, network: libera }
grants:
  - { person: alice, roles: [deployer, approver] }
  - { irc_account: bob, network: libera, roles: [viewer] }
";

    fn irc(account: &str) -> Identity {
        Identity::IrcAccount {
            network: "libera".into(),
            account: account.into(),
        }
    }

    fn jid(jid: &str) -> Identity {
        Identity::Jid {
            network: "jabber".into(),
            jid: jid.into(),
        }
    }

    #[test]
    fn every_identity_of_a_person_is_that_person() {
        let c = config(PEOPLE);
        c.check().unwrap();
        assert_eq!(c.person_of(&[irc("ALICE")]), Some("alice"));
        assert_eq!(c.person_of(&[jid("alice@example.com")]), Some("alice"));
        assert_eq!(
            c.person_of(&[Identity::Console("alice".into())]),
            Some("alice")
        );
        assert_eq!(c.person_of(&[irc("bob")]), Some("bob"));
        assert_eq!(c.person_of(&[jid("mallory@example.com")]), None);
        // The same account name on another network is somebody else.
        let elsewhere = Identity::IrcAccount {
            network: "oftc".into(),
            account: "alice".into(),
        };
        assert_eq!(c.person_of(std::slice::from_ref(&elsewhere)), None);
        // A person grant holds for each of the person's identities, and only theirs.
        for id in [irc("alice"), jid("alice@example.com")] {
            assert_eq!(c.roles_of(&[id]), vec![Role::Deployer, Role::Approver]);
        }
        assert!(c.roles_of(&[elsewhere]).is_empty());
        assert_eq!(c.roles_of(&[irc("bob")]), vec![Role::Viewer]);
    }

    #[test]
    fn an_identity_belongs_to_one_person_only() {
        let c = config(
            "people:\n  alice:\n    - { xmpp_jid: alice@example.com }\n  mallory:\n    - { console: m }\n    - { xmpp_jid: Alice@Example.com, network: jabber }\n",
        );
        let err = c.check().unwrap_err();
        assert!(err.starts_with("people.mallory[1]: "), "{err}");
        assert!(err.contains("alice's (roles.people.alice[0])"), "{err}");
        // The same account on two networks is two identities.
        let ok = config(
            "people:\n  a:\n    - { irc_account: x, network: one }\n  b:\n    - { irc_account: x, network: two }\n",
        );
        ok.check().unwrap();
    }

    #[test]
    fn accounts_need_their_network_everywhere() {
        let err = config("grants:\n  - {irc_account: alice, roles: [viewer]}\n")
            .check()
            .unwrap_err();
        assert!(err.starts_with("grants[0]: "), "{err}");
        assert!(err.contains("needs a network"), "{err}");
        let err = config("people:\n  alice:\n    - {irc_account: alice}\n")
            .check()
            .unwrap_err();
        assert!(err.starts_with("people.alice[0]: "), "{err}");
        let err = config("grants:\n  - {person: nobody, roles: [viewer]}\n")
            .check()
            .unwrap_err();
        assert!(err.contains("no person 'nobody'"), "{err}");
        let err = config("people:\n  a:\n    - {console: \"*\"}\n")
            .check()
            .unwrap_err();
        assert!(err.contains("every console user"), "{err}");
    }

    #[test]
    fn identity_keys_read_back() {
        for id in [
            irc("alice"),
            jid("alice@example.com"),
            Identity::Console("root".into()),
            Identity::IrcHostmask {
                network: "n".into(),
                mask: "a!b@c:d".into(),
            },
        ] {
            assert_eq!(Identity::from_key(&id.key()), Some(id));
        }
        assert_eq!(Identity::from_key("unverified:bob"), None);
    }

    #[test]
    fn any_console_user_still_matches_a_star_grant() {
        let c = config("grants:\n  - {console: \"*\", roles: [admin]}\n");
        assert_eq!(
            c.roles_of(&[Identity::Console("someone".into())]),
            vec![Role::Admin]
        );
    }
}
