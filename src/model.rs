//! The data the engine and the store share: what a run does ([`RunKind`]) and its stages as
//! frozen when it is queued ([`Stage`]); and which database a URL names ([`Backend`]), which
//! the configuration checks and the store opens. A leaf: it knows no other module of jarvis, so the
//! store can keep runs without knowing the engine.

use serde::{Deserialize, Serialize};

/// What a run does to its host; selects among the pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    #[default]
    Deploy,
    Redeploy,
    Destroy,
    /// A named action of the configuration (`run ACTION on HOST`); no pipeline serves it,
    /// so a pipeline's `command:` cannot say it.
    #[serde(skip)]
    Action,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Deploy => "deploy",
            RunKind::Redeploy => "redeploy",
            RunKind::Destroy => "destroy",
            RunKind::Action => "action",
        }
    }

    pub fn parse(text: &str) -> Option<RunKind> {
        match text {
            "deploy" => Some(RunKind::Deploy),
            "redeploy" => Some(RunKind::Redeploy),
            "destroy" => Some(RunKind::Destroy),
            "action" => Some(RunKind::Action),
            _ => None,
        }
    }
}

/// A stage as frozen into a run when it is queued, so later configuration changes do not
/// change a run under way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stage {
    pub task: String,
    pub timeout_ms: u64,
    pub retries: u32,
    pub backoff_ms: u64,
    pub idempotent: bool,
    pub approval: bool,
    #[serde(default)]
    pub approval_if: Option<String>,
    pub notify: bool,
    /// The stage's parameters from the configuration (`with:`), as frozen.
    #[serde(default, rename = "with", skip_serializing_if = "Option::is_none")]
    pub with: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Stage {
    /// Whether the configuration lets this stage pin the host keys it sees (a stage of a
    /// pipeline that creates the host says `with: {host_key: learn}`).
    pub fn learns_host_keys(&self) -> bool {
        self.with
            .as_ref()
            .and_then(|w| w.get("host_key"))
            .and_then(serde_json::Value::as_str)
            == Some("learn")
    }

    pub fn module_task(&self) -> (&str, &str) {
        self.task
            .split_once(':')
            .unwrap_or((self.task.as_str(), ""))
    }
}

/// Which database a store is on, from its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names, or why it names none jarvis knows.
    pub fn of(url: &str) -> std::result::Result<Backend, String> {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(format!(
                "'{scheme}:' is no database jarvis knows; write sqlite://PATH or postgres://USER@HOST:PORT/DB"
            )),
        }
    }
}
