//! The chat language (SPEC 2) as pure functions: whether a line addresses jarvis, and which
//! command it is. Each command is defined once, in the [`commands!`] block below: its
//! variant of [`Command`], its name, the role it needs, whether it changes state (and so goes
//! into the audit log), its usage, summary and example (which `help` shows and a test
//! parses), and how its words parse. [`COMMANDS`], [`Command::name`],
//! [`Command::required_role`] and [`Command::changes_state`] all follow from it.

use super::roles::Role;

/// A run named by id (`#42` or `42`) or by its host; or a rollout, by id (`rollout #7`,
/// `rollout:7`) or as the newest of its group (`group:web`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRef {
    Id(i64),
    Host(String),
    Rollout(i64),
    Group(String),
}

/// What a deploy, redeploy or destroy acts on: one design or host, or every host of a group
/// (`group:web`), which starts a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Single(String),
    Group(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Single(s) => f.write_str(s),
            Target::Group(g) => write!(f, "group:{g}"),
        }
    }
}

impl std::fmt::Display for RunRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunRef::Id(id) => write!(f, "#{id}"),
            RunRef::Host(h) => f.write_str(h),
            RunRef::Rollout(id) => write!(f, "rollout #{id}"),
            RunRef::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// What `token` does: make one for a person of `roles.people`, revoke one (`#ID`) or all of a
/// person's, or list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAction {
    Create { person: String },
    RevokeId { id: i64 },
    RevokePerson { person: String },
    List,
}

/// One command of the language: its name, the role it needs, its usage and an example, and
/// its parser.
pub struct CommandSpec {
    pub name: &'static str,
    pub role: Option<Role>,
    /// Whether it changes something, and so goes into the audit log.
    pub changes_state: bool,
    pub usage: &'static str,
    pub summary: &'static str,
    pub example: &'static str,
    parse: fn(&Args) -> Result<Command, ParseError>,
}

/// The words after a command's name, for its parser.
struct Args<'a> {
    command: &'static str,
    words: Vec<&'a str>,
}

impl<'a> Args<'a> {
    fn usage(&self, problem: &str) -> ParseError {
        ParseError::Usage {
            command: self.command,
            problem: problem.to_string(),
        }
    }

    fn at_most(&self, n: usize) -> Result<(), ParseError> {
        if self.words.len() > n {
            Err(self.usage("too many words"))
        } else {
            Ok(())
        }
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        self.words.get(i).copied()
    }

    /// Word `i`, which must be there: `missing` says what it is.
    fn required(&self, i: usize, missing: &str) -> Result<&'a str, ParseError> {
        self.get(i).ok_or_else(|| self.usage(missing))
    }

    fn host(&self, i: usize) -> Result<String, ParseError> {
        host_arg(self.get(i)).map_err(|p| self.usage(&p))
    }

    fn run(&self, i: usize) -> Result<RunRef, ParseError> {
        run_ref(self.required(i, "which run?")?).map_err(|p| self.usage(&p))
    }

    /// `at_most(1)` and the run the one word names: cancel, resume, retry, approve; or a
    /// rollout in two words (`rollout #7`).
    fn only_run(&self) -> Result<RunRef, ParseError> {
        if let Some(id) = self.rollout_words()? {
            return Ok(RunRef::Rollout(id));
        }
        self.at_most(1)?;
        self.run(0)
    }

    /// `rollout #7` (exactly two words), if that is what was said.
    fn rollout_words(&self) -> Result<Option<i64>, ParseError> {
        match self.words.as_slice() {
            [first, id] if first.eq_ignore_ascii_case("rollout") => {
                rollout_id(id).map(Some).map_err(|p| self.usage(&p))
            }
            _ => Ok(None),
        }
    }

    /// A host or `group:NAME` at `i`, then an optional `to ENV`: deploy, redeploy, destroy.
    fn target(
        &self,
        i: usize,
        single: impl Fn(&str) -> Result<String, String>,
    ) -> Result<Target, ParseError> {
        let word = self.required(i, "which host or group?")?;
        match word.get(..6) {
            Some(prefix) if prefix.eq_ignore_ascii_case("group:") => group_arg(&word[6..])
                .map(Target::Group)
                .map_err(|p| self.usage(&p)),
            _ => single(word).map(Target::Single).map_err(|p| self.usage(&p)),
        }
    }

    /// An optional `to ENV` from word `i` on; nothing else may follow.
    fn environment(&self, i: usize) -> Result<Option<String>, ParseError> {
        match (self.get(i), self.get(i + 1)) {
            (None, _) => Ok(None),
            (Some(to), Some(env)) if to.eq_ignore_ascii_case("to") => {
                self.at_most(i + 2)?;
                environment_arg(env).map(Some).map_err(|p| self.usage(&p))
            }
            (Some(to), None) if to.eq_ignore_ascii_case("to") => {
                Err(self.usage("to which environment?"))
            }
            _ => Err(self.usage("after the target only 'to ENVIRONMENT' may follow")),
        }
    }
}

/// Defines every command once: the enum's variant, and its entry in [`COMMANDS`].
macro_rules! commands {
    ($(
        $variant:ident $({ $($field:ident : $ty:ty),* $(,)? })? => {
            name: $name:literal,
            role: $role:expr,
            changes_state: $changes:literal,
            usage: $usage:literal,
            summary: $summary:literal,
            example: $example:literal,
            parse: $parse:expr $(,)?
        }
    ),* $(,)?) => {
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Command {
            $(
                #[doc = concat!("`", $usage, "`: ", $summary, ".")]
                $variant $({ $($field: $ty),* })?,
            )*
        }

        /// Every command, in the order `help` lists them.
        pub const COMMANDS: &[CommandSpec] = &[$(
            CommandSpec {
                name: $name,
                role: $role,
                changes_state: $changes,
                usage: $usage,
                summary: $summary,
                example: $example,
                parse: $parse,
            },
        )*];

        impl Command {
            pub fn name(&self) -> &'static str {
                match self {
                    $(Command::$variant { .. } => $name,)*
                }
            }

            pub fn required_role(&self) -> Option<Role> {
                match self {
                    $(Command::$variant { .. } => $role,)*
                }
            }

            /// Whether the command changes something, and so goes into the audit log.
            pub fn changes_state(&self) -> bool {
                match self {
                    $(Command::$variant { .. } => $changes,)*
                }
            }
        }
    };
}

commands! {
    Deploy { target: Target, environment: Option<String> } => {
        name: "deploy",
        role: Some(Role::Deployer),
        changes_state: true,
        usage: "deploy REF|group:GROUP [to ENV]",
        summary: "load a design, pick its pipeline and queue a run (a group: a rollout in batches)",
        example: "deploy cn=loki",
        parse: |a| {
            let target = a.target(0, |w| Ok(w.to_string()))?;
            let environment = a.environment(1)?;
            Ok(Command::Deploy { target, environment })
        },
    },
    Redeploy { target: Target, environment: Option<String> } => {
        name: "redeploy",
        role: Some(Role::Deployer),
        changes_state: true,
        usage: "redeploy HOST|group:GROUP [to ENV]",
        summary: "run the redeploy pipeline for a known host, or roll it over a group",
        example: "redeploy loki",
        parse: |a| {
            let target = a.target(0, |w| host_arg(Some(w)))?;
            let environment = a.environment(1)?;
            Ok(Command::Redeploy { target, environment })
        },
    },
    Destroy { target: Target } => {
        name: "destroy",
        role: Some(Role::Deployer),
        changes_state: true,
        usage: "destroy HOST|group:GROUP",
        summary: "run the destroy pipeline for a known host, or roll it over a group",
        example: "destroy loki",
        parse: |a| {
            a.at_most(1)?;
            Ok(Command::Destroy { target: a.target(0, |w| host_arg(Some(w)))? })
        },
    },
    Promote { host: String, environment: String } => {
        name: "promote",
        role: Some(Role::Deployer),
        changes_state: true,
        usage: "promote HOST to ENV",
        summary: "run a host's last design on the next environment, once it succeeded on the one before",
        example: "promote loki to production",
        parse: |a| {
            let host = a.host(0)?;
            match a.environment(1)? {
                Some(environment) => Ok(Command::Promote { host, environment }),
                None => Err(a.usage("to which environment?")),
            }
        },
    },
    Plan { reference: String } => {
        name: "plan",
        role: Some(Role::Viewer),
        changes_state: false,
        usage: "plan REF",
        summary: "load and check a design and show its pipeline; runs nothing",
        example: "plan cn=loki",
        parse: |a| {
            a.at_most(1)?;
            let reference = a.required(0, "which design?")?.to_string();
            Ok(Command::Plan { reference })
        },
    },
    Status { run: Option<RunRef> } => {
        name: "status",
        role: Some(Role::Viewer),
        changes_state: false,
        usage: "status [HOST|#ID|group:GROUP|rollout #ID]",
        summary: "the active runs and rollouts, or where one run or rollout stands",
        example: "status loki",
        parse: |a| {
            if let Some(id) = a.rollout_words()? {
                return Ok(Command::Status { run: Some(RunRef::Rollout(id)) });
            }
            a.at_most(1)?;
            let run = a.get(0).map(run_ref).transpose().map_err(|p| a.usage(&p))?;
            Ok(Command::Status { run })
        },
    },
    History { host: Option<String>, count: usize } => {
        name: "history",
        role: Some(Role::Viewer),
        changes_state: false,
        usage: "history [HOST] [N]",
        summary: "the last N runs (default 5) with outcome and duration",
        example: "history loki 10",
        parse: |a| {
            a.at_most(2)?;
            let (mut host, mut count) = (None, 5);
            for (i, word) in a.words.iter().enumerate() {
                if let Ok(n) = word.parse::<usize>() {
                    count = n.clamp(1, 50);
                } else if host.is_none() {
                    host = Some(a.host(i)?);
                } else {
                    return Err(a.usage("give one host and one number"));
                }
            }
            Ok(Command::History { host, count })
        },
    },
    Log { run: RunRef, count: usize } => {
        name: "log",
        role: Some(Role::Viewer),
        changes_state: false,
        usage: "log HOST|#ID [N]",
        summary: "the last N log lines of a run (default 10)",
        example: "log #42 20",
        parse: |a| {
            a.at_most(2)?;
            let run = a.run(0)?;
            let count = match a.get(1) {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| a.usage("N must be a number"))?
                    .clamp(1, 200),
                None => 10,
            };
            Ok(Command::Log { run, count })
        },
    },
    Cancel { run: RunRef } => {
        name: "cancel",
        role: Some(Role::Deployer),
        changes_state: true,
        usage: "cancel HOST|#ID|group:GROUP|rollout #ID",
        summary: "stop a queued or running run, or a rollout and its runs",
        example: "cancel #42",
        parse: |a| Ok(Command::Cancel { run: a.only_run()? }),
    },
    Resume { run: RunRef } => {
        name: "resume",
        role: Some(Role::Deployer),
        changes_state: true,
        usage: "resume HOST|#ID|group:GROUP|rollout #ID",
        summary: "continue an interrupted or failed run from its failed stage, or a stopped rollout",
        example: "resume #42",
        parse: |a| Ok(Command::Resume { run: a.only_run()? }),
    },
    Retry { run: RunRef } => {
        name: "retry",
        role: Some(Role::Deployer),
        changes_state: true,
        usage: "retry HOST|#ID",
        summary: "start a new run with the same design and pipeline",
        example: "retry #42",
        parse: |a| Ok(Command::Retry { run: a.only_run()? }),
    },
    Approve { run: RunRef } => {
        name: "approve",
        role: Some(Role::Approver),
        changes_state: true,
        usage: "approve HOST|#ID",
        summary: "release a stage that waits for approval (not your own run)",
        example: "approve #42",
        parse: |a| Ok(Command::Approve { run: a.only_run()? }),
    },
    Trust { host: String, algorithm: String, fingerprint: String } => {
        name: "trust",
        role: Some(Role::Admin),
        changes_state: true,
        usage: "trust HOST ALGORITHM SHA256:FINGERPRINT",
        summary: "pin a host's SSH key after a change you expected (forgets its other pins)",
        example: "trust loki ssh-ed25519 SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
        parse: |a| {
            a.at_most(3)?;
            let host = a.host(0)?;
            let algorithm = a
                .get(1)
                .filter(|w| {
                    w.len() <= 64
                        && w.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-@.".contains(c))
                })
                .ok_or_else(|| a.usage("which key algorithm (as ssh-keygen -l names it)?"))?
                .to_string();
            let fingerprint = a
                .get(2)
                .filter(|f| {
                    f.strip_prefix("SHA256:").is_some_and(|b| {
                        b.len() == 43
                            && b.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
                    })
                })
                .ok_or_else(|| a.usage("the fingerprint is SHA256: and 43 characters"))?
                .to_string();
            Ok(Command::Trust {
                host,
                algorithm,
                fingerprint,
            })
        },
    },
    Token { action: TokenAction } => {
        name: "token",
        role: Some(Role::Admin),
        changes_state: true,
        usage: "token create PERSON | token revoke PERSON|#ID | token list",
        summary: "personal API tokens for the web page and HTTP API (shown once, kept only hashed)",
        example: "token create alice",
        parse: |a| {
            a.at_most(2)?;
            let verb = a.get(0).map(|w| w.to_ascii_lowercase());
            let action = match (verb.as_deref(), a.get(1)) {
                (Some("list"), None) => TokenAction::List,
                (Some("create"), Some(p)) => TokenAction::Create {
                    person: person_arg(p).map_err(|p| a.usage(&p))?,
                },
                (Some("revoke"), Some(w)) => match w.strip_prefix('#') {
                    Some(digits) => TokenAction::RevokeId {
                        id: digits
                            .parse()
                            .map_err(|_| a.usage("a token id is # followed by digits"))?,
                    },
                    None => TokenAction::RevokePerson {
                        person: person_arg(w).map_err(|p| a.usage(&p))?,
                    },
                },
                (Some("create" | "revoke"), None) => return Err(a.usage("whose token?")),
                _ => return Err(a.usage("say create, revoke or list")),
            };
            Ok(Command::Token { action })
        },
    },
    Run { action: String, target: Target } => {
        name: "run",
        // Each action names its own role, and grants may name actions: the bot checks.
        role: None,
        changes_state: true,
        usage: "run ACTION on HOST|group:GROUP",
        summary: "run a configured action on a known host (the action's role or a grant of it), its last output lines coming back; on a group, as a rollout in batches",
        example: "run reload on loki",
        parse: |a| {
            a.at_most(3)?;
            let action = a.required(0, "which action?")?;
            if !super::actions::valid_name(action) {
                return Err(a.usage(&format!(
                    "'{}' is not an action's name",
                    crate::text::one_line(action, 40)
                )));
            }
            if !a.get(1).is_some_and(|w| w.eq_ignore_ascii_case("on")) {
                return Err(a.usage("say on which host"));
            }
            Ok(Command::Run {
                action: action.to_ascii_lowercase(),
                target: a.target(2, |w| host_arg(Some(w)))?,
            })
        },
    },
    Rollback { host: String, to: Option<i64> } => {
        name: "rollback",
        role: Some(Role::Deployer),
        changes_state: true,
        usage: "rollback HOST [to #RUN]",
        summary: "redeploy the design content of the host's last good run before the current one (or of run #RUN)",
        example: "rollback loki",
        parse: |a| {
            a.at_most(3)?;
            let host = a.host(0)?;
            let to = match (a.get(1), a.get(2)) {
                (None, _) => None,
                (Some(w), Some(run)) if w.eq_ignore_ascii_case("to") => {
                    match run_ref(run).map_err(|p| a.usage(&p))? {
                        RunRef::Id(id) => Some(id),
                        _ => return Err(a.usage("say which run, as #ID")),
                    }
                }
                _ => return Err(a.usage("say 'rollback HOST' or 'rollback HOST to #ID'")),
            };
            Ok(Command::Rollback { host, to })
        },
    },
    Hosts { filter: Option<String> } => {
        name: "hosts",
        role: Some(Role::Viewer),
        changes_state: false,
        usage: "hosts [ENV|group:GROUP|PATTERN]",
        summary: "the hosts jarvis made, from its records: environment, provider, addresses, last run",
        example: "hosts production",
        parse: |a| {
            a.at_most(1)?;
            let filter = a.get(0).map(|w| crate::text::one_line(w, 64));
            Ok(Command::Hosts { filter })
        },
    },
    Host { host: String } => {
        name: "host",
        role: Some(Role::Viewer),
        changes_state: false,
        usage: "host HOST",
        summary: "one host's record: provider and resources, environment, addresses, design, last run, pins",
        example: "host loki",
        parse: |a| {
            a.at_most(1)?;
            Ok(Command::Host { host: a.host(0)? })
        },
    },
    Orphans => {
        name: "orphans",
        role: Some(Role::Admin),
        changes_state: false,
        usage: "orphans",
        summary: "what the providers hold under jarvis's tags that no host record names, with how to remove it (nothing is deleted)",
        example: "orphans",
        parse: |a| {
            a.at_most(0)?;
            Ok(Command::Orphans)
        },
    },
    Schedules => {
        name: "schedules",
        role: Some(Role::Viewer),
        changes_state: false,
        usage: "schedules",
        summary: "the configured schedules with their next and last firing",
        example: "schedules",
        parse: |a| {
            a.at_most(0)?;
            Ok(Command::Schedules)
        },
    },
    Pipelines => {
        name: "pipelines",
        role: Some(Role::Viewer),
        changes_state: false,
        usage: "pipelines",
        summary: "the configured pipelines and their stages",
        example: "pipelines",
        parse: |a| {
            a.at_most(0)?;
            Ok(Command::Pipelines)
        },
    },
    Whoami => {
        name: "whoami",
        role: None,
        changes_state: false,
        usage: "whoami",
        summary: "how jarvis identifies you, and your roles",
        example: "whoami",
        parse: |a| {
            a.at_most(0)?;
            Ok(Command::Whoami)
        },
    },
    Help { command: Option<String> } => {
        name: "help",
        role: None,
        changes_state: false,
        usage: "help [COMMAND]",
        summary: "what you may say; 'help COMMAND' for usage and an example",
        example: "help deploy",
        parse: |a| {
            a.at_most(1)?;
            let command = a.get(0).map(|w| w.to_ascii_lowercase());
            Ok(Command::Help { command })
        },
    },
}

pub fn spec(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// Why a line is not a command, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    Unknown {
        word: String,
        suggestion: Option<&'static str>,
    },
    Usage {
        command: &'static str,
        problem: String,
    },
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Empty => write!(f, "say 'help' to see what I can do"),
            ParseError::Unknown { word, suggestion } => {
                let word = crate::text::one_line(word, 30);
                match suggestion {
                    Some(s) => write!(
                        f,
                        "unknown command '{word}' — did you mean '{s}'? say 'help'"
                    ),
                    None => write!(f, "unknown command '{word}' — say 'help'"),
                }
            }
            ParseError::Usage { command, problem } => {
                let usage = spec(command).map(|s| s.usage).unwrap_or(command);
                write!(f, "{problem} — usage: {usage}")
            }
        }
    }
}

/// The command text if `line` addresses the bot named `nick`: `nick: CMD`, `nick, CMD`,
/// `nick CMD`, `@nick CMD` or `!CMD` (the name is case-insensitive). In a direct chat every
/// line is for the bot, with or without the prefix.
pub fn addressed<'a>(line: &'a str, nick: &str, direct: bool) -> Option<&'a str> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix('!') {
        return Some(rest.trim_start());
    }
    let body = line.strip_prefix('@').unwrap_or(line);
    if body.len() >= nick.len()
        && body.is_char_boundary(nick.len())
        && body[..nick.len()].eq_ignore_ascii_case(nick)
    {
        let rest = &body[nick.len()..];
        let after = rest
            .strip_prefix(':')
            .or_else(|| rest.strip_prefix(','))
            .unwrap_or(rest);
        if after.is_empty() || after.starts_with(char::is_whitespace) {
            return Some(after.trim_start());
        }
    }
    if direct { Some(line) } else { None }
}

/// Parses a command (after addressing).
pub fn parse(text: &str) -> Result<Command, ParseError> {
    let mut words = text.split_whitespace();
    let Some(first) = words.next() else {
        return Err(ParseError::Empty);
    };
    let name = first.to_ascii_lowercase();
    let Some(spec) = spec(&name) else {
        return Err(ParseError::Unknown {
            word: first.to_string(),
            suggestion: closest(&name),
        });
    };
    let args = Args {
        command: spec.name,
        words: words.collect(),
    };
    (spec.parse)(&args)
}

/// `#7` or `7`, a rollout's id.
fn rollout_id(word: &str) -> Result<i64, String> {
    let digits = word.strip_prefix('#').unwrap_or(word);
    digits
        .parse()
        .map_err(|_| "a rollout id is # followed by digits".to_string())
}

/// A group's name: one word of letters, digits, '-', '_' (at most 63).
pub fn group_arg(word: &str) -> Result<String, String> {
    let ok = !word.is_empty()
        && word.len() <= 63
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(word.to_ascii_lowercase())
    } else {
        Err(format!(
            "'{}' is not a group name",
            crate::text::one_line(word, 40)
        ))
    }
}

/// An environment's name: the same rules as a group's.
fn environment_arg(word: &str) -> Result<String, String> {
    group_arg(word).map_err(|_| {
        format!(
            "'{}' is not an environment name",
            crate::text::one_line(word, 40)
        )
    })
}

/// `#42`, `42`, a host name, `group:NAME` or `rollout:ID`.
pub fn run_ref(word: &str) -> Result<RunRef, String> {
    if let Some(group) = word.get(..6).filter(|p| p.eq_ignore_ascii_case("group:")) {
        return group_arg(&word[group.len()..]).map(RunRef::Group);
    }
    if let Some(prefix) = word.get(..8).filter(|p| p.eq_ignore_ascii_case("rollout:")) {
        return rollout_id(&word[prefix.len()..]).map(RunRef::Rollout);
    }
    let digits = word.strip_prefix('#').unwrap_or(word);
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        return digits
            .parse()
            .map(RunRef::Id)
            .map_err(|_| "that run id is too large".to_string());
    }
    if word.starts_with('#') {
        return Err("a run id is # followed by digits".into());
    }
    host_arg(Some(word)).map(RunRef::Host)
}

/// A person's name as `roles.people` has it: one word, no control characters.
fn person_arg(word: &str) -> Result<String, String> {
    if word.len() <= 64 && !word.chars().any(|c| c.is_control() || c == ':') {
        Ok(word.to_string())
    } else {
        Err(format!(
            "'{}' is not a person's name",
            crate::text::one_line(word, 40)
        ))
    }
}

/// A host name: an RFC 1123 label (letters, digits, '-', at most 63).
fn host_arg(word: Option<&str>) -> Result<String, String> {
    let word = word.ok_or("which host?")?;
    let ok = !word.is_empty()
        && word.len() <= 63
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !word.starts_with('-')
        && !word.ends_with('-');
    if ok {
        Ok(word.to_ascii_lowercase())
    } else {
        Err(format!(
            "'{}' is not a host name",
            crate::text::one_line(word, 40)
        ))
    }
}

/// The known command closest to `word`, if any is close enough to be a typo.
fn closest(word: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .map(|c| (c.name, strsim::damerau_levenshtein(word, c.name)))
        .filter(|(name, d)| *d <= 2.max(name.len() / 3))
        .min_by_key(|(_, d)| *d)
        .map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_addressing_form_works() {
        for line in [
            "jarvis: status",
            "jarvis, status",
            "jarvis status",
            "@jarvis status",
            "!status",
            "JARVIS: status",
        ] {
            assert_eq!(addressed(line, "jarvis", false), Some("status"), "{line}");
        }
        assert_eq!(addressed("jarvisbot: status", "jarvis", false), None);
        assert_eq!(addressed("hello all", "jarvis", false), None);
        assert_eq!(addressed("status", "jarvis", true), Some("status"));
        assert_eq!(addressed("jarvis: status", "jarvis", true), Some("status"));
    }

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(
            parse("deploy cn=loki"),
            Ok(Command::Deploy {
                target: Target::Single("cn=loki".into()),
                environment: None,
            })
        );
        assert_eq!(
            parse("redeploy group:Web to staging"),
            Ok(Command::Redeploy {
                target: Target::Group("web".into()),
                environment: Some("staging".into()),
            })
        );
        assert_eq!(
            parse("promote loki to production"),
            Ok(Command::Promote {
                host: "loki".into(),
                environment: "production".into(),
            })
        );
        assert_eq!(
            parse("cancel rollout #7"),
            Ok(Command::Cancel {
                run: RunRef::Rollout(7)
            })
        );
        assert_eq!(
            parse("resume group:web"),
            Ok(Command::Resume {
                run: RunRef::Group("web".into())
            })
        );
        assert_eq!(
            parse("status rollout:3"),
            Ok(Command::Status {
                run: Some(RunRef::Rollout(3))
            })
        );
        assert!(parse("promote loki").is_err());
        assert!(parse("redeploy loki on staging").is_err());
        assert!(parse("redeploy group:../x").is_err());
        assert_eq!(parse("status"), Ok(Command::Status { run: None }));
        assert_eq!(
            parse("status #42"),
            Ok(Command::Status {
                run: Some(RunRef::Id(42))
            })
        );
        assert_eq!(
            parse("STATUS Loki"),
            Ok(Command::Status {
                run: Some(RunRef::Host("loki".into()))
            })
        );
        assert_eq!(
            parse("history loki 3"),
            Ok(Command::History {
                host: Some("loki".into()),
                count: 3
            })
        );
        assert_eq!(
            parse("history"),
            Ok(Command::History {
                host: None,
                count: 5
            })
        );
        assert_eq!(
            parse("log #7"),
            Ok(Command::Log {
                run: RunRef::Id(7),
                count: 10
            })
        );
        assert_eq!(
            parse("help deploy"),
            Ok(Command::Help {
                command: Some("deploy".into())
            })
        );
    }

    #[test]
    fn unknown_commands_suggest_the_closest() {
        let err = parse("stauts").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown command 'stauts' — did you mean 'status'? say 'help'"
        );
        assert_eq!(
            parse("xyzzy").unwrap_err().to_string(),
            "unknown command 'xyzzy' — say 'help'"
        );
    }

    #[test]
    fn bad_arguments_say_the_usage() {
        let err = parse("deploy").unwrap_err().to_string();
        assert!(err.contains("usage: deploy REF"), "{err}");
        let err = parse("redeploy ../etc").unwrap_err().to_string();
        assert!(err.contains("not a host name"), "{err}");
        let err = parse("log #x").unwrap_err().to_string();
        assert!(err.contains("# followed by digits"), "{err}");
    }

    #[test]
    fn every_command_in_the_table_parses_from_its_example() {
        for c in COMMANDS {
            let parsed = parse(c.example).unwrap_or_else(|e| panic!("{}: {e}", c.example));
            assert_eq!(parsed.name(), c.name);
            assert_eq!(parsed.required_role(), c.role, "{}", c.name);
            assert_eq!(parsed.changes_state(), c.changes_state, "{}", c.name);
        }
    }

    #[test]
    fn what_changes_state_is_what_the_audit_log_needs() {
        let audited: Vec<&str> = COMMANDS
            .iter()
            .filter(|c| c.changes_state)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            audited,
            [
                "deploy", "redeploy", "destroy", "promote", "cancel", "resume", "retry", "approve",
                "trust", "token", "run", "rollback"
            ]
        );
    }

    #[test]
    fn token_commands_parse() {
        let token = |line: &str| match parse(line) {
            Ok(Command::Token { action }) => Ok(action),
            Ok(other) => panic!("{line}: {other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(
            token("token create alice"),
            Ok(TokenAction::Create {
                person: "alice".into()
            })
        );
        assert_eq!(
            token("token revoke #12"),
            Ok(TokenAction::RevokeId { id: 12 })
        );
        assert_eq!(
            token("token revoke alice"),
            Ok(TokenAction::RevokePerson {
                person: "alice".into()
            })
        );
        assert_eq!(token("token list"), Ok(TokenAction::List));
        assert!(
            token("token create")
                .unwrap_err()
                .starts_with("whose token?")
        );
        assert!(
            token("token steal alice")
                .unwrap_err()
                .starts_with("say create")
        );
        assert!(
            token("token revoke #x")
                .unwrap_err()
                .contains("# followed by digits")
        );
        assert!(parse("token create alice").unwrap().changes_state());
        assert_eq!(
            parse("token list").unwrap().required_role(),
            Some(Role::Admin)
        );
    }

    #[test]
    fn run_names_an_action_and_a_host() {
        assert_eq!(
            parse("run reload on Web1"),
            Ok(Command::Run {
                action: "reload".into(),
                target: Target::Single("web1".into())
            })
        );
        assert_eq!(
            parse("run reload on group:Web"),
            Ok(Command::Run {
                action: "reload".into(),
                target: Target::Group("web".into())
            })
        );
        let err = |line: &str| parse(line).unwrap_err().to_string();
        assert!(err("run reload web1").starts_with("say on which host"));
        assert!(err("run reload on").starts_with("which host or group?"));
        assert!(err("run ../x on web1").contains("not an action's name"));
        assert!(err("run").starts_with("which action?"));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(line in any::<String>()) {
            let _ = parse(&line);
            let _ = addressed(&line, "jarvis", false);
        }

        #[test]
        fn errors_never_carry_control_characters(line in "[a-z\\r\\n\\x01\\x03 #]{0,40}") {
            if let Err(e) = parse(&line) {
                prop_assert!(!e.to_string().chars().any(|c| c.is_control()));
            }
        }
    }
}
