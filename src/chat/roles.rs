//! Who may do what (SPEC 7). Identities are verified by the adapters (an IRC services
//! account, an XMPP real bare JID, the console user); roles are granted to identities by the
//! configuration. A bare IRC nick is never an identity.

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
}

impl Identity {
    /// A stable key for the identity, stored as a run's requester.
    pub fn key(&self) -> String {
        match self {
            Identity::Console(user) => format!("console:{user}"),
            Identity::IrcAccount { network, account } => format!("irc:{network}:{account}"),
            Identity::IrcHostmask { network, mask } => format!("irc-mask:{network}:{mask}"),
            Identity::Jid { network, jid } => format!("xmpp:{network}:{jid}"),
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
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// One grant: roles for an identity. Exactly one of `console`, `irc_account`,
/// `irc_hostmask` and `xmpp_jid`; `network` limits it to one chat network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub roles: Vec<Role>,
    #[serde(default)]
    pub network: Option<String>,
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
    pub fn check(&self) -> Result<(), String> {
        for (i, g) in self.grants.iter().enumerate() {
            let kinds = [&g.console, &g.irc_account, &g.irc_hostmask, &g.xmpp_jid]
                .iter()
                .filter(|k| k.is_some())
                .count();
            if kinds != 1 {
                return Err(format!(
                    "grants[{i}]: name exactly one of console, irc_account, irc_hostmask, xmpp_jid"
                ));
            }
            if g.irc_hostmask.is_some() && g.network.is_none() {
                return Err(format!(
                    "grants[{i}]: an irc_hostmask grant needs a network (hostmasks can be spoofed across networks)"
                ));
            }
            if g.roles.is_empty() {
                return Err(format!("grants[{i}].roles: grant at least one role"));
            }
        }
        Ok(())
    }

    /// Every role granted to any of `identities`.
    pub fn roles_of(&self, identities: &[Identity]) -> Vec<Role> {
        let mut roles: Vec<Role> = self
            .grants
            .iter()
            .filter(|g| identities.iter().any(|id| g.matches(id)))
            .flat_map(|g| g.roles.iter().copied())
            .collect();
        roles.sort();
        roles.dedup();
        roles
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
        }
    }
}

/// `*` and `?` patterns, as IRC hostmasks use them.
fn glob_match(pattern: &str, text: &str) -> bool {
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
}
