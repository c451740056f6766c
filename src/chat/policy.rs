//! Who may do what (SPEC 7), decided in one place. Every door — each chat network, the
//! console, the web page and the API, webhooks and schedules, named actions, rollouts, retry,
//! resume, approve, promote, trust, token — reaches the bot, which turns the request into a
//! [`Question`] and asks [`Policy::decide`]; no door and no other part of the bot decides.
//! The answer is the same from every door, and so is the one line of a refusal.
//!
//! Pure: the configuration's roles, people, grants and actions in, a decision out.

use std::collections::BTreeMap;

use super::actions::ActionConfig;
use super::command::Command;
use super::roles::{self, Identity, Role, RolesConfig};

/// What is asked.
#[derive(Debug, Clone, Copy)]
pub enum Verb<'a> {
    /// A command of the chat language, as its entry says (its role).
    Command(&'a Command),
    /// Running a named action: starting it, on a host or a group, retrying or resuming it.
    Action(&'a str),
    /// Releasing a run's approval gate: the run, who asked for it (identity key) and the
    /// person the run recorded.
    Approve {
        run: i64,
        requester: &'a str,
        person: Option<&'a str>,
    },
}

/// One request from any door: who asks (their verified identities, and what the adapter
/// could not verify, if anything) and what.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    pub who: &'a [Identity],
    /// Why the adapter could not tell who this is ("log in to your services account"), if
    /// that is the case.
    pub unverified: Option<&'a str>,
    pub verb: Verb<'a>,
}

/// The answer: allowed, or refused with the one line the asker is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Refused(String),
    /// There is no such thing to ask for (an action that is not configured).
    Unknown(String),
}

/// The configuration a decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub roles: &'a RolesConfig,
    pub actions: &'a BTreeMap<String, ActionConfig>,
}

impl Policy<'_> {
    pub fn decide(&self, q: &Question) -> Decision {
        let roles = self.roles.roles_of(q.who);
        let has = |needed: Role| roles.iter().any(|r| r.covers(needed));
        match q.verb {
            Verb::Command(cmd) => match cmd.required_role() {
                Some(needed) if !has(needed) => Decision::Refused(format!(
                    "{} needs the {} role; {}",
                    cmd.name(),
                    needed.as_str(),
                    self.who_text(q, "with no such role")
                )),
                _ => Decision::Allowed,
            },
            Verb::Action(name) => {
                let Some(action) = self.actions.get(name) else {
                    let known: Vec<&str> = self.actions.keys().map(String::as_str).collect();
                    return Decision::Unknown(if known.is_empty() {
                        format!("there is no action '{name}'; none are configured")
                    } else {
                        format!(
                            "there is no action '{name}'; say one of {}",
                            known.join(", ")
                        )
                    });
                };
                if has(action.role()) || self.roles.may_run_action(q.who, name) {
                    Decision::Allowed
                } else {
                    Decision::Refused(format!(
                        "run {name} needs the {} role or a grant of action {name}; {}",
                        action.role().as_str(),
                        self.who_text(q, "with neither")
                    ))
                }
            }
            Verb::Approve {
                run,
                requester,
                person,
            } => {
                if !has(Role::Approver) {
                    return Decision::Refused(format!(
                        "approve needs the approver role; {}",
                        self.who_text(q, "with no such role")
                    ));
                }
                if let Some(why) = self.cannot_vouch(q.who) {
                    return Decision::Refused(why);
                }
                match own_run(self.roles, run, requester, person, q.who) {
                    Some(refusal) => Decision::Refused(refusal),
                    None => Decision::Allowed,
                }
            }
        }
    }

    /// Why the asker cannot approve anything, if they cannot: approvals are about people,
    /// so an identity that cannot be tied to one never approves — a hostmask (anyone can
    /// take a nick), a JID whose server the configuration does not name (any connected
    /// server could vouch for it).
    fn cannot_vouch(&self, who: &[Identity]) -> Option<String> {
        let speaker = roles::principal(who)?;
        match speaker {
            Identity::IrcHostmask { mask, .. } => Some(format!(
                "approving needs an identity tied to a person, and a hostmask ({mask}) is not one: log in to your services account"
            )),
            Identity::Jid { jid, network } if !self.roles.names_network_of(speaker) => {
                Some(format!(
                    "approving needs an identity tied to a person: {jid} is granted without naming its server, so any server could vouch for it; name its network ({network}) under roles"
                ))
            }
            _ => None,
        }
    }

    fn who_text(&self, q: &Question, lacking: &str) -> String {
        match (roles::principal(q.who), q.unverified) {
            (_, Some(note)) => note.to_string(),
            (Some(id), None) => format!("you are {id}, {lacking}"),
            (None, None) => "I cannot tell who you are — log in to your services account".into(),
        }
    }
}

/// Why `approver` may not approve run `id`, asked for by `requester` (an identity key) and,
/// when the run recorded one, by the person `asked_by`: the same identity, or the same
/// person from any of their identities. The person is taken both as recorded at queue time
/// and as the configuration now says, so editing `people` in between lets nobody through.
fn own_run(
    config: &RolesConfig,
    id: i64,
    requester: &str,
    asked_by: Option<&str>,
    approver: &[Identity],
) -> Option<String> {
    let me = config.person_of(approver);
    let same_identity = approver.iter().any(|i| i.key() == requester);
    let now = Identity::from_key(requester).and_then(|r| config.person_of(&[r]));
    let same_person = me.is_some() && (me == asked_by || me == now);
    if !same_identity && !same_person {
        return None;
    }
    let you = match me {
        Some(p) => format!("you ({p})"),
        None => "you".into(),
    };
    Some(format!(
        "{you} asked for run #{id} from {requester}; another person must approve it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::command;

    fn config() -> RolesConfig {
        serde_saphyr::from_str(
            "people:
  alice:
    - { irc_account: alice, network: libera }
    - { xmpp_jid: alice@example.com, network: jabber }
  bob:
    - { irc_account: bob, network: libera }
grants:
  - { person: alice, roles: [deployer, approver] }
  - { person: bob, roles: [approver] }
  - { irc_account: carol, network: libera, roles: [approver] }
  - { irc_hostmask: 'bob*!b@ops.example', network: libera, roles: [deployer, approver] }
  - { xmpp_jid: eve@example.com, roles: [approver] }
  - { irc_account: vic, network: libera, roles: [viewer], actions: [reload] }
",
        )
        .unwrap_or_default()
    }

    fn actions() -> BTreeMap<String, ActionConfig> {
        serde_saphyr::from_str(
            "reload:\n  role: deployer\n  stages: [{ task: 'ssh:run' }]\nreboot:\n  role: admin\n  stages: [{ task: 'ssh:run' }]\n",
        )
        .unwrap_or_default()
    }

    fn irc(account: &str) -> Identity {
        Identity::IrcAccount {
            network: "libera".into(),
            account: account.into(),
        }
    }

    fn mask(m: &str) -> Identity {
        Identity::IrcHostmask {
            network: "libera".into(),
            mask: m.into(),
        }
    }

    fn jid(j: &str) -> Identity {
        Identity::Jid {
            network: "jabber".into(),
            jid: j.into(),
        }
    }

    const XMPP_ALICE: &str = "xmpp:jabber:alice@example.com";

    fn decide(who: &[Identity], verb: Verb) -> Decision {
        let (roles, actions) = (config(), actions());
        let policy = Policy {
            roles: &roles,
            actions: &actions,
        };
        policy.decide(&Question {
            who,
            unverified: None,
            verb,
        })
    }

    fn approve<'a>(requester: &'a str, person: Option<&'a str>) -> Verb<'a> {
        Verb::Approve {
            run: 12,
            requester,
            person,
        }
    }

    #[test]
    fn nobody_approves_their_own_run_from_another_identity() {
        config().check().unwrap();
        // alice asked over XMPP and tries to approve from her IRC account.
        assert_eq!(
            decide(&[irc("alice")], approve(XMPP_ALICE, Some("alice"))),
            Decision::Refused(
                "you (alice) asked for run #12 from xmpp:jabber:alice@example.com; another person must approve it".into()
            )
        );
        // The same when the run recorded no person, or the configuration no longer ties
        // the identities together.
        assert_ne!(
            decide(&[irc("alice")], approve(XMPP_ALICE, None)),
            Decision::Allowed
        );
        assert_ne!(
            decide(
                &[irc("alice")],
                approve("xmpp:jabber:old@example.com", Some("alice"))
            ),
            Decision::Allowed
        );
        // Another person may approve; so may a verified identity of no person.
        assert_eq!(
            decide(&[irc("bob")], approve(XMPP_ALICE, Some("alice"))),
            Decision::Allowed
        );
        assert_eq!(
            decide(&[irc("carol")], approve(XMPP_ALICE, Some("alice"))),
            Decision::Allowed
        );
        assert_eq!(
            decide(&[irc("carol")], approve("irc:libera:carol", None)),
            Decision::Refused(
                "you asked for run #12 from irc:libera:carol; another person must approve it"
                    .into()
            )
        );
    }

    #[test]
    fn identities_of_no_person_never_approve() {
        // bob's hostmask, under any nick: a hostmask can be anyone's.
        for m in ["bob!b@ops.example", "bob_!b@ops.example"] {
            let d = decide(
                &[mask(m)],
                approve("irc-mask:libera:bob!b@ops.example", None),
            );
            assert!(
                matches!(&d, Decision::Refused(why) if why.contains("a hostmask") && why.contains("is not one")),
                "{d:?}"
            );
        }
        // A JID granted without its server: any server could vouch for it.
        let d = decide(&[jid("eve@example.com")], approve("irc:libera:bob", None));
        assert!(
            matches!(&d, Decision::Refused(why) if why.contains("granted without naming its server")),
            "{d:?}"
        );
        // alice's JID names its server: she may approve bob's run.
        assert_eq!(
            decide(
                &[jid("alice@example.com")],
                approve("irc:libera:bob", Some("bob"))
            ),
            Decision::Allowed
        );
    }

    #[test]
    fn actions_need_their_role_or_a_grant_whichever_door() {
        assert_eq!(
            decide(&[irc("alice")], Verb::Action("reload")),
            Decision::Allowed
        );
        assert_eq!(
            decide(&[irc("vic")], Verb::Action("reload")),
            Decision::Allowed
        );
        assert_eq!(
            decide(&[irc("alice")], Verb::Action("reboot")),
            Decision::Refused(
                "run reboot needs the admin role or a grant of action reboot; you are IRC account alice on libera, with neither".into()
            )
        );
        assert!(matches!(
            decide(&[irc("alice")], Verb::Action("nope")),
            Decision::Unknown(_)
        ));
    }

    #[test]
    fn commands_need_their_role() {
        let deploy = command::parse("deploy web1").unwrap();
        assert_eq!(
            decide(&[irc("alice")], Verb::Command(&deploy)),
            Decision::Allowed
        );
        assert_eq!(
            decide(&[irc("vic")], Verb::Command(&deploy)),
            Decision::Refused(
                "deploy needs the deployer role; you are IRC account vic on libera, with no such role".into()
            )
        );
        assert_eq!(
            decide(&[], Verb::Command(&deploy)),
            Decision::Refused(
                "deploy needs the deployer role; I cannot tell who you are — log in to your services account".into()
            )
        );
    }
}
