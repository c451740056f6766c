//! Named actions (`actions:`): a short pipeline the operator configures — a graceful reload
//! through `ssh:run` with its `with:`, say — that `run ACTION on HOST` starts on a known host.
//! Each action names the role that may run it, and a grant may name actions by name
//! (`grants[].actions`), so a developer can be let do exactly that and no more. What runs and
//! where comes only from this configuration (frozen into the run); the design gives data.

use std::time::Duration;

use serde::Deserialize;

use super::roles::Role;
use crate::engine::pipeline::{PipelineConfig, RunKind, Stage, StageConfig};

/// One named action.
///
/// ```yaml
/// actions:
///   reload:
///     description: reload nginx gracefully
///     role: deployer                 # who may run it; or grant it by name
///     stages:
///       - task: ssh:run
///         with: { command: "sudo systemctl reload nginx" }
///     lines: 10                      # output lines that come back to whoever asked
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    #[serde(default)]
    pub description: Option<String>,
    /// The role that may run it (and every role that covers it). People granted the action
    /// by name under `roles.grants[].actions` may run it whatever their roles. Default admin.
    #[serde(default)]
    pub role: Option<Role>,
    /// The stages, as a pipeline's (`task`, `with`, `timeout`, `retries`, …).
    pub stages: Vec<StageConfig>,
    /// How many of the run's last log lines come back to whoever asked. Default 10.
    #[serde(default = "default_lines")]
    pub lines: usize,
    /// How long the answer waits for the run to end; past that it says where the run
    /// stands and how to follow it. Default 2m.
    #[serde(
        default = "default_wait",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub wait: Duration,
}

fn default_lines() -> usize {
    10
}

fn default_wait() -> Duration {
    Duration::from_secs(120)
}

impl ActionConfig {
    /// The role that may run it: `role`, or admin.
    pub fn role(&self) -> Role {
        self.role.unwrap_or(Role::Admin)
    }

    /// What the types cannot say; a problem starts with its path below the action.
    pub fn check(&self) -> Result<(), String> {
        self.as_pipeline().check()?;
        if !(1..=200).contains(&self.lines) {
            return Err("lines: between 1 and 200".into());
        }
        if self.wait.is_zero() {
            return Err("wait: must be positive".into());
        }
        Ok(())
    }

    /// The stages frozen for a run, as a pipeline freezes its own.
    pub fn frozen_stages(&self, default_timeout: Duration) -> (Vec<Stage>, Vec<Stage>) {
        self.as_pipeline().frozen_stages(default_timeout)
    }

    fn as_pipeline(&self) -> PipelineConfig {
        PipelineConfig {
            description: self.description.clone(),
            command: RunKind::Redeploy,
            providers: Vec::new(),
            stages: self.stages.clone(),
            on_failure: Vec::new(),
            promote_within: None,
        }
    }
}

/// An action's name: one word of letters, digits, '-' and '_'.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
