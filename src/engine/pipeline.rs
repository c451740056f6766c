//! Pipelines as configured (SPEC 4), and which one a command and a design select.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::model::{RunKind, Stage};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    #[serde(default)]
    pub description: Option<String>,
    /// The command this pipeline serves.
    #[serde(default)]
    pub command: RunKind,
    /// The design providers it serves (case-insensitive); a design's `pipeline:` key may
    /// pick it only when its provider is among them.
    #[serde(default)]
    pub providers: Vec<String>,
    pub stages: Vec<StageConfig>,
    /// Run in order with the failed run's clipboard, to undo what was done.
    #[serde(default)]
    pub on_failure: Vec<StageConfig>,
    /// On an environment after the first (`environments.order`), a run of this pipeline
    /// needs the same design content to have succeeded on the environment before within
    /// this age (e.g. `7d`); refused otherwise, with the missing run named.
    #[serde(
        default,
        deserialize_with = "jarvis_design::duration::deserialize_option"
    )]
    pub promote_within: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// `MODULE:TASK`.
    pub task: String,
    #[serde(
        default,
        deserialize_with = "jarvis_design::duration::deserialize_option",
        skip_serializing
    )]
    pub timeout: Option<Duration>,
    /// Further attempts after a failure worth retrying (exit 75).
    #[serde(default)]
    pub retries: u32,
    /// First pause between attempts; it doubles each time.
    #[serde(
        default,
        deserialize_with = "jarvis_design::duration::deserialize_option",
        skip_serializing
    )]
    pub backoff: Option<Duration>,
    /// May be re-run after a crash without asking.
    #[serde(default)]
    pub idempotent: bool,
    /// Needs an approver's `approve` before it runs.
    #[serde(default)]
    pub approval: bool,
    /// Needs approval only when the clipboard value at this dotted path is true. The path
    /// must start with the module of an earlier stage (`ldap.production` after
    /// `ldap:lookup`): design data such as `instance.production` is refused.
    #[serde(default)]
    pub approval_if: Option<String>,
    /// Announce this stage's start in the run's channel.
    #[serde(default)]
    pub notify: bool,
    /// The stage's parameters: commands, scripts, SSH targets, users, sudo, anything the
    /// worker acts on besides the design's values. They come from the configuration only,
    /// are frozen into the run when it is queued, and reach the worker as `jarvis.with`.
    /// No secrets here: those belong in the module's granted environment.
    #[serde(default, rename = "with", skip_serializing_if = "Option::is_none")]
    pub with: Option<serde_json::Map<String, serde_json::Value>>,
}

impl StageConfig {
    /// The module and task of `MODULE:TASK`.
    pub fn module_task(&self) -> (&str, &str) {
        self.task
            .split_once(':')
            .unwrap_or((self.task.as_str(), ""))
    }

    fn check(&self) -> Result<(), String> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                && !s.starts_with('.')
        };
        match self.task.split_once(':') {
            Some((m, t)) if valid(m) && valid(t) => Ok(()),
            _ => Err(format!(
                "task: '{}' is not MODULE:TASK (letters, digits, '_', '-', '.')",
                self.task.escape_default()
            )),
        }
    }
}

impl Stage {
    pub fn from_config(c: &StageConfig, default_timeout: Duration) -> Stage {
        Stage {
            task: c.task.clone(),
            timeout_ms: c.timeout.unwrap_or(default_timeout).as_millis() as u64,
            retries: c.retries,
            backoff_ms: c.backoff.unwrap_or(Duration::from_secs(2)).as_millis() as u64,
            idempotent: c.idempotent,
            approval: c.approval,
            approval_if: c.approval_if.clone(),
            notify: c.notify,
            with: c.with.clone(),
        }
    }
}

impl PipelineConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.stages.is_empty() {
            return Err("stages: a pipeline needs at least one stage".into());
        }
        for (i, stage) in self.stages.iter().enumerate() {
            stage.check().map_err(|e| format!("stages[{i}].{e}"))?;
        }
        for (i, stage) in self.on_failure.iter().enumerate() {
            stage.check().map_err(|e| format!("on_failure[{i}].{e}"))?;
        }
        self.check_gates()
    }

    /// An `approval_if` is judged on the clipboard before its stage runs. It guards only
    /// when its fact is one jarvis trusts: written by a worker module of an earlier stage
    /// (`ldap.production` after `ldap:lookup`). A design never carries a worker module's
    /// section (the design crate refuses those keys), so such a fact cannot come from
    /// whoever writes designs; anything else (`instance.production`) is design data, which
    /// would let the design decide whether its own run needs approval, or is written by no
    /// stage and never fires. Each is refused with the stage and path named.
    fn check_gates(&self) -> Result<(), String> {
        for (i, stage) in self.stages.iter().enumerate() {
            let Some(path) = stage.approval_if.as_deref() else {
                continue;
            };
            let section = path.split('.').next().unwrap_or(path);
            let module_of = |s: &StageConfig| s.module_task().0.eq_ignore_ascii_case(section);
            if self.stages[..i].iter().any(module_of) {
                continue;
            }
            let at = format!("stages[{i}] ({}).approval_if", stage.task);
            if let Some(producer) = self.stages[i..].iter().find(|s| module_of(s)) {
                return Err(format!(
                    "{at}: '{path}' is written by {}, which runs at or after this gate, so the gate is judged before the fact exists; put approval_if on the first stage after {}",
                    producer.task, producer.task
                ));
            }
            if section.eq_ignore_ascii_case("instance") || !path.contains('.') {
                return Err(format!(
                    "{at}: '{path}' is design data, which whoever writes the design controls; gate on a fact an earlier stage writes (e.g. ldap.production after an ldap:lookup stage)"
                ));
            }
            return Err(format!(
                "{at}: '{path}' is written by no earlier stage of this pipeline (its first part must be the module of an earlier stage, e.g. ldap.production after ldap:lookup), so the gate would rest on design data or never hold"
            ));
        }
        Ok(())
    }

    pub fn frozen_stages(&self, default_timeout: Duration) -> (Vec<Stage>, Vec<Stage>) {
        let freeze = |list: &[StageConfig]| {
            list.iter()
                .map(|s| Stage::from_config(s, default_timeout))
                .collect()
        };
        (freeze(&self.stages), freeze(&self.on_failure))
    }
}

/// Picks the pipeline for `kind` and a design: its explicit `pipeline:` key when it names a
/// pipeline for that command, else the first pipeline for that command serving its provider.
/// A design may pick only among the pipelines that list its provider: otherwise it could
/// steer its run around the gates of the pipeline the configuration meant for it.
pub fn select<'a>(
    pipelines: &'a std::collections::BTreeMap<String, PipelineConfig>,
    kind: RunKind,
    provider: &str,
    explicit: Option<&str>,
) -> Result<(&'a str, &'a PipelineConfig), String> {
    if let Some(name) = explicit {
        if let Some((n, p)) = pipelines.get_key_value(name) {
            if p.command == kind {
                if !p.providers.iter().any(|q| q.eq_ignore_ascii_case(provider)) {
                    return Err(format!(
                        "the design names pipeline '{name}', which does not serve provider '{}'; a design may pick only a pipeline that lists its provider",
                        provider.escape_default()
                    ));
                }
                return Ok((n.as_str(), p));
            }
        } else if kind == RunKind::Deploy {
            return Err(format!(
                "the design names pipeline '{name}', which is not configured"
            ));
        }
    }
    pipelines
        .iter()
        .find(|(_, p)| {
            p.command == kind && p.providers.iter().any(|q| q.eq_ignore_ascii_case(provider))
        })
        .map(|(n, p)| (n.as_str(), p))
        .ok_or_else(|| {
            format!(
                "no {} pipeline serves provider '{}'",
                kind.as_str(),
                provider.escape_default()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pipeline(command: RunKind, providers: &[&str]) -> PipelineConfig {
        PipelineConfig {
            description: None,
            command,
            providers: providers.iter().map(|s| s.to_string()).collect(),
            stages: vec![],
            on_failure: vec![],
            promote_within: None,
        }
    }

    fn stage(task: &str, gate: Option<&str>) -> StageConfig {
        serde_saphyr::from_str(&format!(
            "task: '{task}'{}",
            gate.map(|g| format!("\napproval_if: {g}"))
                .unwrap_or_default()
        ))
        .unwrap()
    }

    #[test]
    fn a_gate_before_the_stage_that_learns_its_fact_is_refused() {
        let mut p = pipeline(RunKind::Destroy, &["Linode"]);
        p.stages = vec![
            stage("ldap:lookup", Some("ldap.production")),
            stage("linode:delete", None),
        ];
        let err = p.check().unwrap_err();
        assert!(err.contains("stages[0] (ldap:lookup).approval_if"), "{err}");
        assert!(err.contains("ldap:lookup"), "{err}");
        p.stages = vec![
            stage("ldap:lookup", None),
            stage("linode:delete", Some("ldap.production")),
        ];
        assert!(p.check().is_ok());
        // Design data is refused: the design would decide its own gate.
        p.stages = vec![stage("linode:delete", Some("instance.production"))];
        let err = p.check().unwrap_err();
        assert!(
            err.contains("stages[0] (linode:delete).approval_if"),
            "{err}"
        );
        assert!(
            err.contains("'instance.production' is design data"),
            "{err}"
        );
        // A fact no earlier stage writes: a module the pipeline never runs.
        p.stages = vec![
            stage("dns:update", None),
            stage("linode:delete", Some("ldap.production")),
        ];
        let err = p.check().unwrap_err();
        assert!(
            err.contains("stages[1] (linode:delete).approval_if"),
            "{err}"
        );
        assert!(err.contains("written by no earlier stage"), "{err}");
    }

    #[test]
    fn selection_follows_command_provider_and_explicit_key() {
        let mut map = BTreeMap::new();
        map.insert("a".to_string(), pipeline(RunKind::Deploy, &["Linode"]));
        map.insert("b".to_string(), pipeline(RunKind::Redeploy, &["Linode"]));
        map.insert("c".to_string(), pipeline(RunKind::Deploy, &["local"]));
        assert_eq!(
            select(&map, RunKind::Deploy, "linode", None).unwrap().0,
            "a"
        );
        assert_eq!(
            select(&map, RunKind::Redeploy, "Linode", None).unwrap().0,
            "b"
        );
        map.insert("d".to_string(), pipeline(RunKind::Deploy, &["linode"]));
        assert_eq!(
            select(&map, RunKind::Deploy, "Linode", Some("d"))
                .unwrap()
                .0,
            "d"
        );
        // A pipeline for another provider is refused, not taken.
        let err = select(&map, RunKind::Deploy, "Linode", Some("c")).unwrap_err();
        assert!(err.contains("does not serve provider 'Linode'"), "{err}");
        assert!(select(&map, RunKind::Destroy, "Linode", None).is_err());
        assert!(select(&map, RunKind::Deploy, "x", Some("zzz")).is_err());
    }
}
