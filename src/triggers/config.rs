//! The `hooks:` and `schedules:` sections: what a webhook delivery or a cron firing runs, and
//! as whom.

use serde::Deserialize;

use crate::secrets::Secret;

/// A webhook, at `POST /hooks/NAME` of the HTTP server.
///
/// ```yaml
/// hooks:
///   site:                                   # POST /hooks/site
///     forge: github                         # github, gitea (also Forgejo) or gitlab
///     secret: ${SITE_HOOK_SECRET}           # from the environment, never written here
///     person: ci                            # a person of roles.people: its grants apply
///     announce: "libera #ops"               # where the runs it queues are announced
///     triggers:
///       - { repository: acme/site, event: push, pattern: main, run: "deploy cn=web1" }
///       - { repository: acme/site, event: tag, pattern: "v*", run: "redeploy web1" }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Which forge sends the deliveries, and so how they are signed: `github`
    /// (`X-Hub-Signature-256`), `gitea` or `forgejo` (`X-Gitea-Signature`), `gitlab`
    /// (`X-Gitlab-Token`).
    pub forge: Forge,
    /// The shared secret. Write it as `${VARIABLE}`, so that it comes from the environment;
    /// it is never logged, shown or stored.
    pub secret: Secret,
    /// The person of `roles.people` the hook acts as: that person's grants decide what it
    /// may queue, and the audit log names it (`trigger:hook.NAME:PERSON`).
    pub person: String,
    /// Where the runs it queues are announced, as `NETWORK TARGET` (`libera #ops`); without
    /// it they show on the web page and in `chat.notify` only.
    #[serde(default)]
    pub announce: Option<String>,
    /// The largest delivery taken, in bytes; a larger one is refused with 413. Default 1 MiB.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// What deliveries start, tried in order; every trigger that matches runs.
    pub triggers: Vec<TriggerConfig>,
}

fn default_max_body() -> usize {
    1024 * 1024
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    Github,
    #[serde(alias = "forgejo")]
    Gitea,
    Gitlab,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Github => "github",
            Forge::Gitea => "gitea",
            Forge::Gitlab => "gitlab",
        }
    }
}

/// The events a trigger may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookEvent {
    /// Commits pushed to a branch.
    Push,
    /// A tag pushed.
    Tag,
    /// A release published.
    Release,
}

impl HookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Push => "push",
            HookEvent::Tag => "tag",
            HookEvent::Release => "release",
        }
    }
}

/// One trigger of a hook: which deliveries it matches, and the command it runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// `OWNER/NAME` (GitLab: the project's path with its namespace), case-insensitive.
    pub repository: String,
    pub event: HookEvent,
    /// The branch (push) or tag (tag, release) it matches, with `*` and `?`; default `*`.
    #[serde(default = "any")]
    pub pattern: String,
    /// What to run, as a chat command: `deploy cn=web1`, `redeploy web1`, `run reload on
    /// web1` (and, once they are configured, group targets such as `redeploy group:web`).
    pub run: String,
    /// The environment the run is for (one of `environments.order`): joins a `deploy` or
    /// `redeploy` as its `to ENV`.
    #[serde(default)]
    pub environment: Option<String>,
}

fn any() -> String {
    "*".into()
}

/// A schedule: a cron expression in a time zone, and what it runs.
///
/// ```yaml
/// schedules:
///   nightly:
///     cron: "0 3 * * *"                      # minute hour day month weekday (seconds optional)
///     timezone: Europe/Berlin                # an IANA name; default UTC
///     run: "redeploy web1"
///     person: ci
///     catch_up: once                         # after downtime: fire once (once) or not (none)
///     announce: "libera #ops"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds first;
    /// `@daily` and the like too.
    pub cron: String,
    /// The IANA time zone the expression is read in (`Europe/Berlin`); default `UTC`.
    #[serde(default = "utc")]
    pub timezone: String,
    /// What to run, as a chat command (as a trigger's `run`).
    pub run: String,
    /// The person of `roles.people` the schedule acts as.
    pub person: String,
    /// After jarvis was down over one or more firings: `once` fires once when it is back
    /// (default), `none` fires only at the next instant. Never twice for one instant.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Where its runs, and firings skipped for a busy host, are announced (`NETWORK TARGET`).
    #[serde(default)]
    pub announce: Option<String>,
    /// The environment the run is for (one of `environments.order`): joins a `deploy` or
    /// `redeploy` as its `to ENV`.
    #[serde(default)]
    pub environment: Option<String>,
}

fn utc() -> String {
    "UTC".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    #[default]
    Once,
    None,
}
