//! Typed configuration (SPEC 8): one YAML file, `${VAR}` read from the environment, unknown
//! keys refused, and errors that name file, line and column.
//!
//! With no file, [`Settings::embedded`] gives the demonstration setup that `jarvis shell`
//! runs out of the box.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::adapters::irc::IrcNetworkConfig;
use crate::adapters::xmpp::XmppAccountConfig;
use crate::chat::roles::RolesConfig;
use crate::engine::pipeline::PipelineConfig;

/// The configuration used when none is given: SQLite in the data folder, the demonstration
/// pipeline on the `local` worker, and the console user as admin.
const EMBEDDED: &str = include_str!("../config/embedded.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The bot's nick, which users address it by.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where the database, working folders and lock live.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` (default: `DATA/jarvis.db`); `postgres://…` is planned.
    #[serde(default)]
    pub database_url: Option<String>,
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

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModuleGrant {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    #[serde(default)]
    pub irc: Vec<IrcNetworkConfig>,
    #[serde(default)]
    pub xmpp: Vec<XmppAccountConfig>,
    /// Extra places every notification goes to, as `NETWORK TARGET` (e.g. `libera #ops`).
    #[serde(default)]
    pub notify: Vec<String>,
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
    /// A stage's timeout when the pipeline sets none.
    #[serde(default = "default_timeout", with = "humantime_serde_compat")]
    pub default_timeout: Duration,
    /// Between SIGTERM and SIGKILL.
    #[serde(default = "default_grace", with = "humantime_serde_compat")]
    pub kill_grace: Duration,
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
            default_timeout: default_timeout(),
            kill_grace: default_grace(),
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
fn default_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
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

/// Durations written as `30s`, `5m`, `1h 30m`.
pub mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("'{text}' is not a duration: {e}")))
    }

    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let text = Option::<String>::deserialize(d)?;
            text.map(|t| {
                humantime::parse_duration(&t)
                    .map_err(|e| serde::de::Error::custom(format!("'{t}' is not a duration: {e}")))
            })
            .transpose()
        }
    }
}

/// What is wrong with a configuration, located where that is known.
#[derive(Debug, thiserror::Error)]
#[error("{}{}", location(.file, .line, .column), .message)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

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
        }
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
        let mut options = serde_saphyr::Options::default().with_properties(env.clone());
        options.with_snippet = false;
        let settings: Settings =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| {
                let location = e.location();
                ConfigError {
                    file: file.to_string(),
                    line: location.map(|l| l.line()),
                    column: location.map(|l| l.column()),
                    message: strip_location(&e.to_string()),
                }
            })?;
        settings.check(file)?;
        Ok(settings)
    }

    /// Checks what the types alone cannot: names, task syntax, references between sections.
    fn check(&self, file: &str) -> Result<(), ConfigError> {
        if self.name.is_empty()
            || self
                .name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::at(file, "name: must be one word"));
        }
        if self.limits.workers == 0 {
            return Err(ConfigError::at(file, "limits.workers: must be at least 1"));
        }
        for (name, pipeline) in &self.pipelines {
            pipeline
                .check()
                .map_err(|e| ConfigError::at(file, format!("pipelines.{name}.{e}")))?;
        }
        self.roles
            .check()
            .map_err(|e| ConfigError::at(file, format!("roles.{e}")))?;
        for network in &self.chat.irc {
            network.check().map_err(|e| ConfigError::at(file, e))?;
        }
        for (i, target) in self.chat.notify.iter().enumerate() {
            if target.split_whitespace().count() != 2 {
                return Err(ConfigError::at(
                    file,
                    format!("chat.notify[{i}]: write 'NETWORK TARGET', e.g. 'libera #ops'"),
                ));
            }
        }
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir().join("jarvis.db").display()))
    }

    /// Every configured value that is a secret, so that it can be masked wherever it shows.
    pub fn secret_values(&self) -> Vec<String> {
        let mut values: Vec<String> = self
            .workers
            .modules
            .values()
            .flat_map(|g| g.env.iter())
            .filter(|(k, _)| crate::secrets::is_secret_key(k, &self.secrets.keys))
            .map(|(_, v)| v.clone())
            .collect();
        values.extend(self.chat.irc.iter().filter_map(|n| n.secret_values()));
        values.extend(self.chat.xmpp.iter().map(|a| a.password.clone()));
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
        values.retain(|v| v.len() >= 4);
        values
    }
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
    fn bad_tasks_are_named_with_their_pipeline() {
        let err = parse("pipelines:\n  p:\n    stages:\n      - task: nocolon\n").unwrap_err();
        assert!(err.to_string().contains("pipelines.p.stages[0]"), "{err}");
    }
}
