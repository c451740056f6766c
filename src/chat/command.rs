//! The chat language (SPEC 2) as pure functions: whether a line addresses jarvis, and which
//! command it is. The table [`COMMANDS`] is the single source of the parser's names, of the
//! roles each command needs and of `help`.

use super::roles::Role;

/// A run named by id (`#42` or `42`) or by its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRef {
    Id(i64),
    Host(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Deploy {
        reference: String,
    },
    Redeploy {
        host: String,
    },
    Destroy {
        host: String,
    },
    Plan {
        reference: String,
    },
    Status {
        run: Option<RunRef>,
    },
    History {
        host: Option<String>,
        count: usize,
    },
    Log {
        run: RunRef,
        count: usize,
    },
    Cancel {
        run: RunRef,
    },
    Resume {
        run: RunRef,
    },
    Retry {
        run: RunRef,
    },
    Approve {
        run: RunRef,
    },
    Trust {
        host: String,
        algorithm: String,
        fingerprint: String,
    },
    Pipelines,
    Whoami,
    Help {
        command: Option<String>,
    },
}

/// One command of the language: its name, the role it needs, its usage and an example.
pub struct CommandSpec {
    pub name: &'static str,
    pub role: Option<Role>,
    pub usage: &'static str,
    pub summary: &'static str,
    pub example: &'static str,
}

pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "deploy",
        role: Some(Role::Deployer),
        usage: "deploy REF",
        summary: "load a design, pick its pipeline and queue a run",
        example: "deploy cn=loki",
    },
    CommandSpec {
        name: "redeploy",
        role: Some(Role::Deployer),
        usage: "redeploy HOST",
        summary: "run the redeploy pipeline for a known host",
        example: "redeploy loki",
    },
    CommandSpec {
        name: "destroy",
        role: Some(Role::Deployer),
        usage: "destroy HOST",
        summary: "run the destroy pipeline for a known host",
        example: "destroy loki",
    },
    CommandSpec {
        name: "plan",
        role: Some(Role::Viewer),
        usage: "plan REF",
        summary: "load and check a design and show its pipeline; runs nothing",
        example: "plan cn=loki",
    },
    CommandSpec {
        name: "status",
        role: Some(Role::Viewer),
        usage: "status [HOST|#ID]",
        summary: "the active runs, or where one run stands",
        example: "status loki",
    },
    CommandSpec {
        name: "history",
        role: Some(Role::Viewer),
        usage: "history [HOST] [N]",
        summary: "the last N runs (default 5) with outcome and duration",
        example: "history loki 10",
    },
    CommandSpec {
        name: "log",
        role: Some(Role::Viewer),
        usage: "log HOST|#ID [N]",
        summary: "the last N log lines of a run (default 10)",
        example: "log #42 20",
    },
    CommandSpec {
        name: "cancel",
        role: Some(Role::Deployer),
        usage: "cancel HOST|#ID",
        summary: "stop a queued or running run",
        example: "cancel #42",
    },
    CommandSpec {
        name: "resume",
        role: Some(Role::Deployer),
        usage: "resume HOST|#ID",
        summary: "continue an interrupted or failed run from its failed stage",
        example: "resume #42",
    },
    CommandSpec {
        name: "retry",
        role: Some(Role::Deployer),
        usage: "retry HOST|#ID",
        summary: "start a new run with the same design and pipeline",
        example: "retry #42",
    },
    CommandSpec {
        name: "approve",
        role: Some(Role::Approver),
        usage: "approve HOST|#ID",
        summary: "release a stage that waits for approval (not your own run)",
        example: "approve #42",
    },
    CommandSpec {
        name: "trust",
        role: Some(Role::Admin),
        usage: "trust HOST ALGORITHM SHA256:FINGERPRINT",
        summary: "pin a host's SSH key after a change you expected (forgets its other pins)",
        example: "trust loki ssh-ed25519 SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
    },
    CommandSpec {
        name: "pipelines",
        role: Some(Role::Viewer),
        usage: "pipelines",
        summary: "the configured pipelines and their stages",
        example: "pipelines",
    },
    CommandSpec {
        name: "whoami",
        role: None,
        usage: "whoami",
        summary: "how jarvis identifies you, and your roles",
        example: "whoami",
    },
    CommandSpec {
        name: "help",
        role: None,
        usage: "help [COMMAND]",
        summary: "what you may say; 'help COMMAND' for usage and an example",
        example: "help deploy",
    },
];

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
    let args: Vec<&str> = words.collect();
    let Some(spec) = spec(&name) else {
        return Err(ParseError::Unknown {
            word: first.to_string(),
            suggestion: closest(&name),
        });
    };
    let usage = |problem: &str| ParseError::Usage {
        command: spec.name,
        problem: problem.to_string(),
    };
    let at_most = |n: usize| {
        if args.len() > n {
            Err(usage("too many words"))
        } else {
            Ok(())
        }
    };
    let command = match spec.name {
        "deploy" | "plan" => {
            at_most(1)?;
            let reference = args
                .first()
                .ok_or_else(|| usage("which design?"))?
                .to_string();
            if spec.name == "deploy" {
                Command::Deploy { reference }
            } else {
                Command::Plan { reference }
            }
        }
        "redeploy" | "destroy" => {
            at_most(1)?;
            let host = host_arg(args.first().copied()).map_err(|p| usage(&p))?;
            if spec.name == "redeploy" {
                Command::Redeploy { host }
            } else {
                Command::Destroy { host }
            }
        }
        "status" => {
            at_most(1)?;
            let run = args
                .first()
                .map(|a| run_ref(a))
                .transpose()
                .map_err(|p| usage(&p))?;
            Command::Status { run }
        }
        "history" => {
            at_most(2)?;
            let (mut host, mut count) = (None, 5);
            for a in &args {
                if let Ok(n) = a.parse::<usize>() {
                    count = n.clamp(1, 50);
                } else if host.is_none() {
                    host = Some(host_arg(Some(a)).map_err(|p| usage(&p))?);
                } else {
                    return Err(usage("give one host and one number"));
                }
            }
            Command::History { host, count }
        }
        "log" => {
            at_most(2)?;
            let run =
                run_ref(args.first().ok_or_else(|| usage("which run?"))?).map_err(|p| usage(&p))?;
            let count = match args.get(1) {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| usage("N must be a number"))?
                    .clamp(1, 200),
                None => 10,
            };
            Command::Log { run, count }
        }
        "cancel" | "resume" | "retry" | "approve" => {
            at_most(1)?;
            let run =
                run_ref(args.first().ok_or_else(|| usage("which run?"))?).map_err(|p| usage(&p))?;
            match spec.name {
                "cancel" => Command::Cancel { run },
                "resume" => Command::Resume { run },
                "retry" => Command::Retry { run },
                _ => Command::Approve { run },
            }
        }
        "trust" => {
            at_most(3)?;
            let host = host_arg(args.first().copied()).map_err(|p| usage(&p))?;
            let algorithm = args
                .get(1)
                .filter(|a| {
                    a.len() <= 64
                        && a.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-@.".contains(c))
                })
                .ok_or_else(|| usage("which key algorithm (as ssh-keygen -l names it)?"))?
                .to_string();
            let fingerprint = args
                .get(2)
                .filter(|f| {
                    f.strip_prefix("SHA256:").is_some_and(|b| {
                        b.len() == 43
                            && b.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
                    })
                })
                .ok_or_else(|| usage("the fingerprint is SHA256: and 43 characters"))?
                .to_string();
            Command::Trust {
                host,
                algorithm,
                fingerprint,
            }
        }
        "pipelines" => {
            at_most(0)?;
            Command::Pipelines
        }
        "whoami" => {
            at_most(0)?;
            Command::Whoami
        }
        _ => {
            at_most(1)?;
            Command::Help {
                command: args.first().map(|a| a.to_ascii_lowercase()),
            }
        }
    };
    Ok(command)
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Deploy { .. } => "deploy",
            Command::Redeploy { .. } => "redeploy",
            Command::Destroy { .. } => "destroy",
            Command::Plan { .. } => "plan",
            Command::Status { .. } => "status",
            Command::History { .. } => "history",
            Command::Log { .. } => "log",
            Command::Cancel { .. } => "cancel",
            Command::Resume { .. } => "resume",
            Command::Retry { .. } => "retry",
            Command::Approve { .. } => "approve",
            Command::Trust { .. } => "trust",
            Command::Pipelines => "pipelines",
            Command::Whoami => "whoami",
            Command::Help { .. } => "help",
        }
    }

    pub fn required_role(&self) -> Option<Role> {
        spec(self.name()).and_then(|s| s.role)
    }

    /// Whether the command changes something, and so goes into the audit log.
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Command::Deploy { .. }
                | Command::Redeploy { .. }
                | Command::Destroy { .. }
                | Command::Cancel { .. }
                | Command::Resume { .. }
                | Command::Retry { .. }
                | Command::Approve { .. }
                | Command::Trust { .. }
        )
    }
}

/// `#42`, `42` or a host name.
pub fn run_ref(word: &str) -> Result<RunRef, String> {
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
                reference: "cn=loki".into()
            })
        );
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
        }
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
