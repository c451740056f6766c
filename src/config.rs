//! Typed configuration (SPEC 8): one YAML file, `${VAR}` read from the environment, unknown
//! keys refused, and errors that name file, line and column.
//!
//! With no file, [`Settings::embedded`] gives the demonstration setup that `jarvis shell`
//! runs out of the box.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::chat::actions::ActionConfig;
use crate::chat::notify::{DeliveryConfig, NoticeRate};
use crate::chat::roles::RolesConfig;
use crate::engine::pipeline::PipelineConfig;
use crate::secrets::Secret;
use crate::triggers::config::{HookConfig, ScheduleConfig};

mod cleartext;
pub mod cluster;
pub mod http;
pub mod irc;
pub mod network;
mod vars;
pub mod xmpp;

use irc::IrcNetworkConfig;
use xmpp::XmppAccountConfig;

/// The configuration used when none is given: SQLite in the data folder, the demonstration
/// pipeline on the `local` worker, and the console user as admin.
const EMBEDDED: &str = include_str!("../config/embedded.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The bot's nick, which users address it by.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where the database and the lock live (and, without a `scratch_dir`, the working folders).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Where each stage's fresh working folder and the markers of running workers live: a
    /// folder that outlives a crash of jarvis but not a reboot. Default: the unit's
    /// `RuntimeDirectory` (`$RUNTIME_DIRECTORY`), else a private folder in `/dev/shm` (tmpfs:
    /// making and removing a folder per stage is ten times cheaper there than on ext4, and
    /// what workers leave never reaches a disk; a start removes such folders of data folders
    /// that no longer exist), else the data folder. Workers that write large files should be
    /// given a folder on disk here.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// `sqlite://PATH` (default: `DATA/jarvis.db`) or `postgres://USER:PASSWORD@HOST:PORT/DB`
    /// (several jarvis processes may share one: see `cluster`); to a host that is not this
    /// machine with `?sslmode=verify-full` (or `require`, `verify-ca`). A secret, since a URL may carry a
    /// password: shown only through [`Settings::database_url_shown`].
    #[serde(default)]
    pub database_url: Option<Secret>,
    #[serde(default)]
    pub workers: WorkersConfig,
    #[serde(default)]
    pub designs: jarvis_design::DesignsConfig,
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    #[serde(default)]
    pub chat: ChatConfig,
    #[serde(default)]
    pub roles: RolesConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// How long finished runs keep their log lines, clipboards and events.
    #[serde(default)]
    pub retention: crate::retention::RetentionConfig,
    /// The HTTP server (API, web page, `/metrics`); none without this section.
    #[serde(default)]
    pub http: Option<http::HttpConfig>,
    /// Several jarvis processes on one PostgreSQL database.
    #[serde(default)]
    pub cluster: cluster::ClusterConfig,
    /// Webhooks at `POST /hooks/NAME` (needs `http:`): signed deliveries from GitHub,
    /// Gitea/Forgejo or GitLab, and the commands their triggers run.
    #[serde(default)]
    pub hooks: BTreeMap<String, HookConfig>,
    /// Cron schedules, each with a command to run.
    #[serde(default)]
    pub schedules: BTreeMap<String, ScheduleConfig>,
    /// Named actions for `run ACTION on HOST` (or `on group:G`, as a rollout), each with the
    /// role that may run it.
    #[serde(default)]
    pub actions: BTreeMap<String, ActionConfig>,
    /// The environments (staging before production) in promotion order.
    #[serde(default)]
    pub environments: crate::chat::environments::EnvironmentsConfig,
    /// Host groups, by name, that `redeploy group:NAME` rolls over in batches.
    #[serde(default)]
    pub groups: BTreeMap<String, crate::chat::groups::GroupConfig>,
    /// **Insecure; for a lab only.** `check-config` and a start refuse every credential that
    /// would cross a network in clear to a host other than this machine (loopback): an LDAP
    /// design source on `ldap://` with a bind password and no `starttls`, the gist API on
    /// `http://` with a token, a worker granted `LDAP_URL: ldap://…` without
    /// `LDAP_STARTTLS: 'true'`, `LINODE_API: http://…` or `ALERTMANAGER_URL:
    /// http://USER:PASSWORD@…`, an IRC network with `tls: false`, and a `postgres://`
    /// `database_url` without `sslmode=require` (or `verify-ca`, `verify-full`). `true` turns
    /// each of those refusals into a warning in the log, at every check and every start.
    #[serde(default)]
    pub insecure_cleartext_credentials: bool,
}

fn default_name() -> String {
    "jarvis".into()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// Folders searched, in order, for an executable named like the module; the built-in
    /// workers answer for modules none of them has.
    #[serde(default)]
    pub folders: Vec<PathBuf>,
    /// Per module: the environment it is granted (its tokens and endpoints).
    #[serde(default)]
    pub modules: BTreeMap<String, ModuleGrant>,
}

impl WorkersConfig {
    /// Per module, the modules whose run secrets it is handed besides its own.
    pub fn secrets_from(&self) -> BTreeMap<String, Vec<String>> {
        self.modules
            .iter()
            .filter(|(_, g)| !g.secrets_from.is_empty())
            .map(|(m, g)| (m.clone(), g.secrets_from.clone()))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModuleGrant {
    /// Every value is a [`Secret`] (tokens and passwords among endpoints): it reaches the
    /// worker's environment and nothing that prints.
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
    /// The other modules whose run secrets this module's stages are handed (as
    /// `JARVIS_SECRET_<NAME>`), e.g. `secrets_from: [linode]` for an `ssh` stage that logs
    /// in with the root password `linode:deploy` made. A secret a worker makes goes to later
    /// stages of its own module only, unless another module names its module here.
    #[serde(default)]
    pub secrets_from: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    #[serde(default)]
    pub irc: Vec<IrcNetworkConfig>,
    #[serde(default)]
    pub xmpp: Vec<XmppAccountConfig>,
    /// Extra places every notification goes to, as `NETWORK TARGET` (e.g. `libera #ops`).
    #[serde(default)]
    pub notify: Vec<String>,
    /// How notifications are retried and when one is given up on.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// How many worker notices of one run go to chat one by one; faster ones are summed up
    /// in one line ("… and 37 more notices from stage 3 — say 'log #12'"). Default 3 per 10s.
    #[serde(default)]
    pub notice_rate: NoticeRate,
    /// Commands handled at once per network; past that, a one-line "busy" answer. Default 8.
    #[serde(default = "default_commands_in_flight")]
    pub commands_in_flight: usize,
    /// Commands one sender (one verified identity, else one nick) has in flight at once,
    /// counting until the answer is sent: one sender cannot take every place of a network.
    /// Past it, "busy: you have N commands being handled". Default 2.
    #[serde(default = "default_commands_per_sender")]
    pub commands_per_sender: usize,
    /// The most lines one answer may queue for sending (public and private together): a
    /// longer answer is cut and ends with one line saying where the rest is (the run's web
    /// page when `http.public_url` is set, else a smaller `log`). Default 20.
    #[serde(default = "default_reply_lines")]
    pub reply_lines: usize,
}

impl ChatConfig {
    /// A network's name is how grants, notify targets and outlets find it: unique across
    /// IRC and XMPP alike.
    fn check_names(&self) -> Result<(), String> {
        let names = (self.irc.iter().enumerate())
            .map(|(i, n)| (format!("chat.irc[{i}].name"), &n.name))
            .chain(
                (self.xmpp.iter().enumerate())
                    .map(|(i, a)| (format!("chat.xmpp[{i}].name"), &a.name)),
            );
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (at, name) in names {
            if let Some(first) = seen.get(name.as_str()) {
                return Err(format!(
                    "{at}: '{name}' is already the name of {}; every chat network needs its own",
                    first.trim_end_matches(".name")
                ));
            }
            seen.insert(name, at);
        }
        Ok(())
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            irc: Vec::new(),
            xmpp: Vec::new(),
            notify: Vec::new(),
            delivery: DeliveryConfig::default(),
            notice_rate: NoticeRate::default(),
            commands_in_flight: default_commands_in_flight(),
            commands_per_sender: default_commands_per_sender(),
            reply_lines: default_reply_lines(),
        }
    }
}

fn default_commands_in_flight() -> usize {
    8
}

fn default_commands_per_sender() -> usize {
    2
}

fn default_reply_lines() -> usize {
    20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Worker processes at once, over all runs.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// The largest clipboard a worker may print on stdout.
    #[serde(default = "default_stdout_bytes")]
    pub stdout_bytes: usize,
    /// How many of a worker's last stderr lines are kept in memory.
    #[serde(default = "default_stderr_lines")]
    pub stderr_lines: usize,
    /// The most stderr lines one stage stores as the run's log; a worker that prints more
    /// is stopped and its stage fails ("stderr passed N lines").
    #[serde(default = "default_log_lines")]
    pub log_lines: usize,
    /// The most bytes of stderr one stage stores as the run's log; past it, as for
    /// `log_lines`.
    #[serde(default = "default_log_bytes")]
    pub log_bytes: usize,
    /// The largest clipboard a stage may hand back once it is parsed, YAML aliases expanded
    /// (about its size as JSON); a larger one fails the stage. Stdout is capped by
    /// `stdout_bytes`, but a few hundred KiB of anchors and aliases can expand a thousandfold.
    #[serde(default = "default_clipboard_bytes")]
    pub clipboard_bytes: usize,
    /// A stage's timeout when the pipeline sets none.
    #[serde(
        default = "default_timeout",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub default_timeout: Duration,
    /// Between SIGTERM and SIGKILL.
    #[serde(
        default = "default_grace",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub kill_grace: Duration,
    /// On SIGTERM, how long running stages may take to finish before their workers are
    /// stopped and left for the next start to recover. Keep `stop_grace + kill_grace` below
    /// the service manager's stop timeout (the shipped unit's `TimeoutStopSec=30`).
    #[serde(
        default = "default_stop_grace",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub stop_grace: Duration,
    /// How many reply lines go to a channel before the rest goes to a private message.
    #[serde(default = "default_channel_lines")]
    pub channel_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            workers: default_workers(),
            stdout_bytes: default_stdout_bytes(),
            stderr_lines: default_stderr_lines(),
            log_lines: default_log_lines(),
            log_bytes: default_log_bytes(),
            clipboard_bytes: default_clipboard_bytes(),
            default_timeout: default_timeout(),
            kill_grace: default_grace(),
            stop_grace: default_stop_grace(),
            channel_lines: default_channel_lines(),
        }
    }
}

fn default_workers() -> usize {
    8
}
fn default_stdout_bytes() -> usize {
    1024 * 1024
}
fn default_stderr_lines() -> usize {
    1000
}
fn default_log_lines() -> usize {
    10_000
}
fn default_log_bytes() -> usize {
    1024 * 1024
}
fn default_clipboard_bytes() -> usize {
    4 * 1024 * 1024
}

impl Limits {
    /// The engine's caps on what one stage may leave in the store.
    pub fn stage_caps(&self) -> crate::engine::StageCaps {
        crate::engine::StageCaps {
            log_lines: self.log_lines,
            log_bytes: self.log_bytes,
            clipboard_bytes: self.clipboard_bytes,
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_stop_grace() -> Duration {
    Duration::from_secs(15)
}
fn default_channel_lines() -> usize {
    4
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Key names whose values are masked, beside the built-in ones (password, token, …).
    #[serde(default)]
    pub keys: Vec<String>,
}

/// What is wrong with a configuration, located where that is known. Some problems come
/// in numbers (every unset variable at once): the rest are in `more`, one per line.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
    pub more: Vec<ConfigError>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}",
            location(&self.file, &self.line, &self.column),
            self.message
        )?;
        for more in &self.more {
            write!(f, "\n{more}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

fn location(file: &str, line: &Option<u64>, column: &Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}: "),
        (Some(l), None) => format!("{file}:{l}: "),
        _ => format!("{file}: "),
    }
}

impl ConfigError {
    fn at(file: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_string(),
            line: None,
            column: None,
            message: message.into(),
            more: Vec::new(),
        }
    }

    /// Every problem with `${…}` references, in the order of the file.
    fn from_variables(file: &str, problems: Vec<vars::Problem>) -> Self {
        let mut errors = problems.into_iter().map(|p| ConfigError {
            file: file.to_string(),
            line: Some(p.line as u64),
            column: Some(p.column as u64),
            message: p.message,
            more: Vec::new(),
        });
        let mut first = errors
            .next()
            .unwrap_or_else(|| ConfigError::at(file, "a ${…} reference is wrong"));
        first.more = errors.collect();
        first
    }
}

impl Settings {
    /// Reads and checks the configuration file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::at(&name, format!("cannot read: {e}")))?;
        Self::parse(&name, &text, &std::env::vars().collect())
    }

    /// The demonstration configuration, with its data folder set.
    pub fn embedded(data_dir: PathBuf) -> Settings {
        let mut settings = match Self::parse("<embedded>", EMBEDDED, &HashMap::new()) {
            Ok(s) => s,
            // The embedded file is part of the binary and covered by a test.
            Err(e) => panic!("the embedded configuration is broken: {e}"),
        };
        settings.data_dir = Some(data_dir);
        settings
    }

    /// Parses configuration text; `env` answers `${VAR}`.
    pub fn parse(
        file: &str,
        text: &str,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let expanded = vars::expand(text, env)
            .map_err(|problems| ConfigError::from_variables(file, problems))?;
        let settings: Settings = serde_saphyr::from_str_with_options(&expanded.text, options())
            .map_err(|e| {
                let location = e
                    .location()
                    .map(|l| expanded.original_position(l.line(), l.column()));
                ConfigError {
                    file: file.to_string(),
                    line: location.map(|l| l.0),
                    column: location.map(|l| l.1),
                    message: strip_location(&e.to_string()),
                    more: Vec::new(),
                }
            })?;
        if let Err(problem) = settings.check() {
            return Err(locate(file, &expanded, problem));
        }
        let mut cleartext = cleartext::problems(&settings)
            .into_iter()
            .map(|problem| locate(file, &expanded, problem));
        if settings.insecure_cleartext_credentials {
            for problem in cleartext {
                tracing::warn!("{problem}: allowed by insecure_cleartext_credentials");
            }
        } else if let Some(mut first) = cleartext.next() {
            first.more = cleartext.collect();
            return Err(first);
        }
        Ok(settings)
    }

    /// Checks what the types alone cannot: names, task syntax, references between sections,
    /// credentials that would travel in clear. A problem starts with its path
    /// (`chat.irc[0].sasl: …`), which [`locate`] turns into a line and column.
    fn check(&self) -> Result<(), String> {
        if self.name.is_empty()
            || self
                .name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("name: must be one word".into());
        }
        if let Some(url) = &self.database_url {
            crate::model::Backend::of(url.expose()).map_err(|e| format!("database_url: {e}"))?;
        }
        if self.limits.workers == 0 {
            return Err("limits.workers: must be at least 1".into());
        }
        for (key, value) in [
            ("log_lines", self.limits.log_lines),
            ("log_bytes", self.limits.log_bytes),
            ("clipboard_bytes", self.limits.clipboard_bytes),
        ] {
            if value == 0 {
                return Err(format!("limits.{key}: must be at least 1"));
            }
        }
        for (name, pipeline) in &self.pipelines {
            pipeline
                .check()
                .map_err(|e| format!("pipelines.{name}.{e}"))?;
        }
        self.roles.check().map_err(|e| format!("roles.{e}"))?;
        self.environments
            .check()
            .map_err(|e| format!("environments.{e}"))?;
        for (name, group) in &self.groups {
            crate::chat::command::group_arg(name)
                .ok()
                .filter(|n| n == name)
                .ok_or_else(|| {
                    format!("groups.{name}: a group's name is lower-case letters, digits, '-', '_'")
                })?;
            group
                .check(self.designs.ldap.is_some())
                .map_err(|e| format!("groups.{name}.{e}"))?;
        }
        for (name, pipeline) in &self.pipelines {
            if pipeline.promote_within.is_some() && self.environments.order.len() < 2 {
                return Err(format!(
                    "pipelines.{name}.promote_within: needs at least two environments in environments.order"
                ));
            }
        }
        for (i, network) in self.chat.irc.iter().enumerate() {
            network.check(i)?;
        }
        for (i, account) in self.chat.xmpp.iter().enumerate() {
            account.check(i)?;
        }
        self.chat.check_names()?;
        let chat = &self.chat;
        if chat.delivery.max_failures == 0 {
            return Err("chat.delivery.max_failures: must be at least 1".into());
        }
        if chat.delivery.retry_min.is_zero() || chat.delivery.retry_max < chat.delivery.retry_min {
            return Err("chat.delivery: retry_min must be positive and at most retry_max".into());
        }
        if chat.notice_rate.notices == 0 || chat.notice_rate.per.is_zero() {
            return Err("chat.notice_rate: notices and per must be positive".into());
        }
        if chat.commands_in_flight == 0 {
            return Err("chat.commands_in_flight: must be at least 1".into());
        }
        if chat.commands_per_sender == 0 {
            return Err("chat.commands_per_sender: must be at least 1".into());
        }
        // One line of answer plus the line that says where the rest is.
        if chat.reply_lines < 2 {
            return Err("chat.reply_lines: must be at least 2".into());
        }
        if let Some(http) = &self.http {
            http.check()?;
        }
        self.cluster.check()?;
        self.check_triggers()?;
        for (i, target) in self.chat.notify.iter().enumerate() {
            if target.split_whitespace().count() != 2 {
                return Err(format!(
                    "chat.notify[{i}]: write 'NETWORK TARGET', e.g. 'libera #ops'"
                ));
            }
        }
        Ok(())
    }

    /// `hooks`, `schedules` and `actions`, and the grants that name actions.
    fn check_triggers(&self) -> Result<(), String> {
        let word = |name: &str| crate::chat::actions::valid_name(name);
        let person = |at: &str, p: &str| {
            if self.roles.people.contains_key(p) {
                Ok(())
            } else {
                Err(format!("{at}.person: no person '{p}' under roles.people"))
            }
        };
        for (name, action) in &self.actions {
            if !word(name) {
                return Err(format!(
                    "actions.{name}: an action's name is one word (letters, digits, '-', '_')"
                ));
            }
            action.check().map_err(|e| format!("actions.{name}.{e}"))?;
        }
        for (i, grant) in self.roles.grants.iter().enumerate() {
            if let Some(a) = grant
                .actions
                .iter()
                .find(|a| !self.actions.contains_key(*a))
            {
                return Err(format!(
                    "roles.grants[{i}].actions: no action '{a}' under actions"
                ));
            }
        }
        if !self.hooks.is_empty() && self.http.is_none() {
            return Err(
                "hooks: webhooks are served by the HTTP server; add an http: section".into(),
            );
        }
        for (name, hook) in &self.hooks {
            let at = format!("hooks.{name}");
            if !word(name) {
                return Err(format!(
                    "{at}: a hook's name is one word (letters, digits, '-', '_')"
                ));
            }
            person(&at, &hook.person)?;
            if hook.secret.expose().len() < 8 {
                return Err(format!(
                    "{at}.secret: at least 8 characters (write it as ${{VARIABLE}}, from the environment)"
                ));
            }
            crate::triggers::check_announce(&hook.announce).map_err(|e| format!("{at}.{e}"))?;
            if hook.max_body == 0 {
                return Err(format!("{at}.max_body: must be positive"));
            }
            if hook.triggers.is_empty() {
                return Err(format!("{at}.triggers: give at least one trigger"));
            }
            for (i, t) in hook.triggers.iter().enumerate() {
                crate::triggers::command_for(&t.run, t.environment.as_deref(), &self.environments)
                    .map_err(|e| format!("{at}.triggers[{i}].run: {e}"))?;
            }
        }
        for (name, schedule) in &self.schedules {
            let at = format!("schedules.{name}");
            if !word(name) {
                return Err(format!(
                    "{at}: a schedule's name is one word (letters, digits, '-', '_')"
                ));
            }
            person(&at, &schedule.person)?;
            crate::triggers::schedule::Schedule::new(name, schedule, &self.environments)
                .map_err(|e| format!("{at}.{e}"))?;
        }
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// The database URL, password and all: for connecting only.
    pub fn database_url(&self) -> Secret {
        self.database_url.clone().unwrap_or_else(|| {
            Secret::new(format!(
                "sqlite://{}",
                self.data_dir().join("jarvis.db").display()
            ))
        })
    }

    /// The database URL fit to show: without its password.
    pub fn database_url_shown(&self) -> String {
        crate::secrets::redact_url(self.database_url().expose())
    }

    /// Every configured value that is a secret, so that it can be masked wherever it shows.
    pub fn secret_values(&self) -> Vec<String> {
        let mut values: Vec<String> = self
            .workers
            .modules
            .values()
            .flat_map(|g| g.env.iter())
            .filter(|(k, _)| crate::secrets::is_secret_key(k, &self.secrets.keys))
            .map(|(_, v)| v.expose().to_string())
            .collect();
        values.extend(self.chat.irc.iter().filter_map(|n| n.secret_values()));
        values.extend(
            self.chat
                .xmpp
                .iter()
                .map(|a| a.password.expose().to_string()),
        );
        if let Some(url) = &self.database_url
            && let Some(password) = crate::secrets::url_password(url.expose())
        {
            values.push(password.to_string());
        }
        values.extend(
            self.designs
                .gist
                .token
                .iter()
                .map(|t| t.expose().to_string()),
        );
        values.extend(
            self.designs
                .ldap
                .iter()
                .filter_map(|l| l.password.as_ref())
                .map(|p| p.expose().to_string()),
        );
        values.extend(self.hooks.values().map(|h| h.secret.expose().to_string()));
        values.extend(
            self.http
                .iter()
                .filter_map(|h| h.metrics_token.as_ref())
                .map(|t| t.expose().to_string()),
        );
        values.retain(|v| v.len() >= 4);
        values
    }
}

/// `${VAR}` is expanded before serde-saphyr sees the text ([`vars`]), so it reads no
/// properties of its own.
fn options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    options
}

/// Whether `host` is this machine: `localhost`, 127.0.0.0/8 or `::1`. Credentials may go
/// there without TLS (the test servers); anywhere else they would cross a network in clear.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A YAML node with where it was written, so that a problem found after parsing can name
/// its line and column. Map entries are located at their key, list items at the item.
#[derive(Default)]
enum Tree {
    #[default]
    Leaf,
    Map(Vec<(Spanned<String>, Spanned<Tree>)>),
    Seq(Vec<Spanned<Tree>>),
}

struct TreeVisitor;

impl<'de> serde::de::Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spanned<Tree>>()?;
            entries.push((
                Spanned::new(key.value.0, key.referenced, key.defined),
                value,
            ));
        }
        Ok(Tree::Map(entries))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Tree>>()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

/// A mapping key as text, whatever scalar it was written as.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyText, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `a.b[0].c` → `a`, `b`, `0`, `c`.
fn path_segments(path: &str) -> Vec<&str> {
    path.split(['.', '['])
        .map(|s| s.trim_end_matches(']'))
        .filter(|s| !s.is_empty())
        .collect()
}

/// A problem found by [`Settings::check`] (`PATH: message`), placed at the deepest node of
/// PATH the file has.
fn locate(file: &str, expanded: &vars::Expanded, problem: String) -> ConfigError {
    let mut error = ConfigError::at(file, problem.clone());
    let Some((path, _)) = problem.split_once(": ") else {
        return error;
    };
    let Ok(root) = serde_saphyr::from_str_with_options::<Tree>(&expanded.text, options()) else {
        return error;
    };
    let mut node = &root;
    let mut at = None;
    for segment in path_segments(path) {
        let next = match node {
            Tree::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.value == segment)
                .map(|(k, v)| (k.referenced, &v.value)),
            Tree::Seq(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .map(|item| (item.referenced, &item.value)),
            Tree::Leaf => None,
        };
        let Some((location, child)) = next else {
            break;
        };
        at = Some(location);
        node = child;
    }
    if let Some(location) = at.filter(|l| l.line() > 0) {
        let (line, column) = expanded.original_position(location.line(), location.column());
        error.line = Some(line);
        error.column = Some(column);
    }
    error
}

/// `$JARVIS_DATA_DIR`, else `$XDG_DATA_HOME/jarvis`, else `~/.local/share/jarvis`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("JARVIS_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("jarvis");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/jarvis"),
        None => PathBuf::from("jarvis-data"),
    }
}

/// serde-saphyr appends " at line L column C" to its messages; the location is shown in front.
fn strip_location(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        let env = HashMap::from([("IRC_PASSWORD".to_string(), "hunter22".to_string())]);
        Settings::parse("jarvis.yaml", text, &env)
    }

    #[test]
    fn the_embedded_configuration_is_valid() {
        let s = Settings::embedded(PathBuf::from("/tmp/x"));
        assert!(s.pipelines.contains_key("demo"));
    }

    #[test]
    fn unknown_keys_are_refused_with_line_and_column() {
        let err = parse("name: jarvis\nlimits:\n  wokers: 3\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.to_string().starts_with("jarvis.yaml:3:"), "{err}");
        assert!(err.to_string().contains("wokers"), "{err}");
    }

    #[test]
    fn variables_are_read_from_the_environment() {
        let s = parse("name: ${IRC_PASSWORD}\n").unwrap();
        assert_eq!(s.name, "hunter22");
        let err = parse("name: ${NOT_SET_ANYWHERE}\n").unwrap_err();
        assert!(err.to_string().contains("NOT_SET_ANYWHERE"), "{err}");
    }

    #[test]
    fn variables_work_in_every_scalar_style() {
        let env = HashMap::from([
            ("TOKEN".to_string(), "t0ken-value".to_string()),
            (
                "NASTY".to_string(),
                "x: y\n  evil: 1 # z\n\"q\" {a}".to_string(),
            ),
        ]);
        let s = Settings::parse(
            "j.yaml",
            "name: \"${NAME:-jarvis}\"\nworkers:\n  modules:\n    m:\n      env: {A: ${TOKEN}, B: '${TOKEN}', C: \"x-${TOKEN}\", D: ${NASTY}}\n    n:\n      env:\n        E: ${NASTY}\n        F: |\n          ${NASTY}\n",
            &env,
        )
        .unwrap();
        assert_eq!(s.name, "jarvis");
        let m = &s.workers.modules["m"].env;
        assert_eq!(m["A"].expose(), "t0ken-value");
        assert_eq!(m["B"].expose(), "t0ken-value");
        assert_eq!(m["C"].expose(), "x-t0ken-value");
        // A value with YAML syntax stays one string: no `evil` key appears.
        assert_eq!(m["D"].expose(), env["NASTY"]);
        let n = &s.workers.modules["n"].env;
        assert_eq!(n.len(), 2);
        assert_eq!(n["E"].expose(), env["NASTY"]);
        assert_eq!(n["F"].expose(), format!("{}\n", env["NASTY"]));
    }

    #[test]
    fn every_missing_variable_is_reported_at_once() {
        let err = parse(
            "name: \"${WHO}\"\nworkers:\n  modules:\n    m:\n      env: {A: ${TOKEN_A}, B: '${TOKEN_B}'}\n# ${IN_A_COMMENT}\n",
        )
        .unwrap_err();
        let shown = err.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "{shown}");
        assert!(
            lines[0].starts_with("jarvis.yaml:1:8: `WHO` is not set"),
            "{shown}"
        );
        assert!(
            lines[1].starts_with("jarvis.yaml:5:16: `TOKEN_A` is not set"),
            "{shown}"
        );
        assert!(
            lines[2].starts_with("jarvis.yaml:5:32: `TOKEN_B` is not set"),
            "{shown}"
        );
    }

    #[test]
    fn errors_after_a_substitution_name_the_line_written() {
        // The value is longer than `${IRC_PASSWORD}`: the unknown key is still placed at
        // the column the operator wrote it at.
        let err = parse("workers:\n  modules:\n    m: {env: {A: \"${IRC_PASSWORD}${IRC_PASSWORD}\"}, bogus: 1}\n")
            .unwrap_err();
        assert_eq!((err.line, err.column), (Some(3), Some(53)), "{err}");
    }

    #[test]
    fn bad_tasks_are_named_with_their_pipeline() {
        let err = parse("pipelines:\n  p:\n    stages:\n      - task: nocolon\n").unwrap_err();
        assert!(err.to_string().contains("pipelines.p.stages[0]"), "{err}");
    }

    #[test]
    fn secrets_in_the_configuration_never_print() {
        let s = parse(
            "database_url: postgres://j:${IRC_PASSWORD}@db.example/j?sslmode=require
workers:
  modules:
    linode:
      env:
        LINODE_TOKEN: ${IRC_PASSWORD}
        LINODE_REGION: eu-west
chat:
  irc:
    - name: n
      server: irc.example.com
      tls: true
      sasl:
        account: j
        password: ${IRC_PASSWORD}
  xmpp:
    - name: x
      jid: j@example.com
      password: ${IRC_PASSWORD}
",
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter22"), "{shown}");
        assert_eq!(
            s.database_url_shown(),
            "postgres://j:***@db.example/j?sslmode=require"
        );
        assert_eq!(
            s.database_url().expose(),
            "postgres://j:hunter22@db.example/j?sslmode=require"
        );
        // ...and the masker knows every one of them.
        assert!(s.secret_values().iter().all(|v| v == "hunter22"));
        assert_eq!(s.secret_values().len(), 4);
    }

    #[test]
    fn problems_found_after_parsing_name_their_line() {
        let err = parse("name: jarvis\nroles:\n  grants:\n    - { console: x, roles: [] }\n")
            .unwrap_err();
        assert_eq!((err.line, err.column), (Some(4), Some(21)), "{err}");
        assert!(
            err.to_string()
                .starts_with("jarvis.yaml:4:21: roles.grants[0].roles: "),
            "{err}"
        );
        // A path the file does not spell out is placed at its deepest part that it does.
        let err = parse("limits:\n  workers: 0\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }
}
