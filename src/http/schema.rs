//! The JSON the API answers with, as types: the handlers serialise these, and the OpenAPI
//! document (`/api/v1/openapi.json`) is made from the same types, so the two cannot drift.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::clipboard::Clipboard;
use crate::secrets::Masker;

/// Every refusal and failure: one sentence, and the run it concerns when there is one (the
/// run that holds a busy host, for example).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    /// The name shown for the caller.
    pub name: String,
    /// `web:PERSON`, or another identity; none for anonymous readers.
    pub identity: Option<String>,
    pub person: Option<String>,
    pub roles: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PipelineList {
    pub pipelines: Vec<Pipeline>,
}

#[derive(Serialize, ToSchema)]
pub struct Pipeline {
    pub name: String,
    /// The command it serves: deploy, redeploy or destroy.
    pub command: String,
    pub providers: Vec<String>,
    pub stages: Vec<PipelineStage>,
    /// The tasks run to undo a failed run.
    pub on_failure: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PipelineStage {
    pub task: String,
    /// Whether the stage may wait for a person's approval.
    pub approval: bool,
    pub idempotent: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    /// Give this as `before` for the next page; none on the last page.
    pub next_before: Option<i64>,
}

/// A run as the list shows it.
#[derive(Serialize, ToSchema)]
pub struct RunSummary {
    pub id: i64,
    pub host: String,
    /// deploy, redeploy or destroy.
    pub kind: String,
    pub pipeline: String,
    /// queued, running, waiting_approval, interrupted, succeeded, failed or cancelled.
    pub state: String,
    pub phase: String,
    /// The run's status as chat says it.
    pub status: String,
    pub requester: String,
    pub requester_identity: String,
    pub design: String,
    /// The stage it is at (1-based).
    pub stage: i64,
    pub stages_total: i64,
    /// The stage that failed (1-based).
    pub failed_stage: Option<i64>,
    pub error: Option<String>,
    pub approved_by: Option<String>,
    pub retry_of: Option<i64>,
    /// What started it, for runs a webhook or a schedule queued: `{by, repository, ref,
    /// commit}` or `{by: "schedule", schedule}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub trigger: Option<serde_json::Value>,
    /// Milliseconds since 1970.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One run with its stages.
#[derive(Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub summary: RunSummary,
    /// The clipboard the run started with (secrets masked).
    #[schema(value_type = Object)]
    pub initial_clipboard: Clipboard,
    pub stages: Vec<Stage>,
    /// The undo stages, run after a failure.
    pub on_failure: Vec<Stage>,
}

#[derive(Serialize, ToSchema)]
pub struct Stage {
    /// 1-based.
    pub index: i64,
    pub task: String,
    /// pending, running, succeeded, failed, … (its last attempt's state).
    pub state: String,
    pub attempts: Vec<Attempt>,
    /// The clipboard after the stage (secrets masked); none until it succeeded, or once
    /// retention has pruned it.
    #[schema(value_type = Option<Object>)]
    pub clipboard: Option<Clipboard>,
    /// What the stage changed on the clipboard, against the one before it.
    pub changes: Vec<Change>,
}

#[derive(Serialize, ToSchema)]
pub struct Attempt {
    pub attempt: i64,
    pub state: String,
    /// Microseconds since 1970.
    pub started_us: Option<i64>,
    pub finished_us: Option<i64>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
}

/// One difference between two clipboards, at a dotted path (`instance.ip`).
#[derive(Serialize, ToSchema, Debug, PartialEq)]
pub struct Change {
    pub path: String,
    pub change: ChangeKind,
    /// The value before (not for `added`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The value after (not for `removed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

#[derive(Serialize, ToSchema, Debug, PartialEq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Changed,
    Removed,
}

#[derive(Serialize, ToSchema)]
pub struct LogBody {
    pub run: i64,
    pub lines: Vec<LogLine>,
}

#[derive(Serialize, ToSchema)]
pub struct LogLine {
    /// The stage that wrote it (0-based, as stored), if any.
    pub stage: Option<i64>,
    pub line: String,
}

/// What a command answers: its message, and the run it queued or acted on.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub message: String,
    pub run: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct PlanBody {
    /// The plan as chat says it, line by line.
    pub lines: Vec<String>,
}

/// The body of deploy: a design's name.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeployBody {
    pub design: String,
}

/// The body of redeploy and destroy: a host.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HostBody {
    pub host: String,
}

#[derive(Serialize, ToSchema)]
pub struct RolloutList {
    /// The last 50 rollouts, newest first.
    pub rollouts: Vec<RolloutBody>,
}

/// A rollout of a group: its hosts in batches, each host by its own run.
#[derive(Serialize, ToSchema)]
pub struct RolloutBody {
    pub id: i64,
    pub group: String,
    /// deploy, redeploy, destroy, or action (`run ACTION on group:G`).
    pub command: String,
    /// The named action each host runs, when `command` is action.
    pub action: Option<String>,
    pub environment: Option<String>,
    /// running, stopped (too many failures; `resume` continues it), cancelled or succeeded.
    pub state: String,
    /// Why it stopped or was cancelled.
    pub reason: Option<String>,
    pub max_parallel: u64,
    pub max_failures: u64,
    pub requester: String,
    /// Milliseconds since 1970.
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// The rollout's status as chat's `status rollout #ID` says it.
    pub status: String,
    pub hosts: Vec<RolloutHostBody>,
}

/// One host of a rollout.
#[derive(Serialize, ToSchema)]
pub struct RolloutHostBody {
    pub host: String,
    /// The design it is deployed from.
    pub design: String,
    /// pending, running, done or failed.
    pub state: String,
    /// Its current run, once it has one.
    pub run: Option<i64>,
    /// Why it failed (for `failed`).
    pub error: Option<String>,
}

/// The body of promote: a host, and the environment to promote it to.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PromoteBody {
    pub host: String,
    pub environment: String,
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    /// The configured schedules, in the configuration's order.
    pub schedules: Vec<ScheduleBody>,
}

/// A configured schedule with its next and last firing, as stored.
#[derive(Serialize, ToSchema)]
pub struct ScheduleBody {
    pub name: String,
    /// The cron expression, read in `timezone`.
    pub cron: String,
    /// An IANA time zone name (`Europe/Berlin`).
    pub timezone: String,
    /// What it runs, as a chat command.
    pub run: String,
    /// After downtime: `once` fires once when jarvis is back, `none` waits for the next instant.
    pub catch_up: CatchUpBody,
    /// Milliseconds since 1970; none until the scheduler planned it.
    pub next_at: Option<i64>,
    /// Milliseconds since 1970; none if it never fired.
    pub last_at: Option<i64>,
    /// What its last firing did: the run it queued, or why it was skipped.
    pub last_outcome: Option<String>,
}

#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum CatchUpBody {
    Once,
    None,
}

/// The body of running a named action: the host to run it on.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ActionBody {
    pub host: String,
}

/// A named action that ran: its run and the last lines of its output.
#[derive(Serialize, ToSchema)]
pub struct ActionDone {
    /// One line: how the run ended, as chat says it.
    pub message: String,
    pub run: Option<i64>,
    /// The last lines of its output (the action's `lines`).
    pub lines: Vec<String>,
}

/// A clipboard as the API shows it: values under secret keys masked, and secret values
/// known from the clipboard masked wherever else they appear — as `status` and `log` mask.
pub fn masked(masker: &Masker, clipboard: &Clipboard) -> Clipboard {
    let knowing = masker.with_clipboard(clipboard);
    let shown = knowing.mask_clipboard(clipboard);
    match mask_strings(&knowing, Value::Object(shown)) {
        Value::Object(m) => m,
        _ => Clipboard::new(),
    }
}

fn mask_strings(masker: &Masker, value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(masker.mask(&s)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| mask_strings(masker, v)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (masker.mask(&k), mask_strings(masker, v)))
                .collect(),
        ),
        other => other,
    }
}

/// What changed from `before` to `after`, path by path: mappings are compared key by key,
/// anything else (lists included) as a whole.
pub fn changes(before: &Clipboard, after: &Clipboard) -> Vec<Change> {
    let mut out = Vec::new();
    diff_maps("", before, after, &mut out);
    out
}

fn diff_maps(
    prefix: &str,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    out: &mut Vec<Change>,
) {
    let path = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    for (k, old) in before {
        match after.get(k) {
            None => out.push(Change {
                path: path(k),
                change: ChangeKind::Removed,
                before: Some(old.clone()),
                after: None,
            }),
            Some(new) if new == old => {}
            Some(Value::Object(new)) if old.is_object() => {
                if let Value::Object(old) = old {
                    diff_maps(&path(k), old, new, out);
                }
            }
            Some(new) => out.push(Change {
                path: path(k),
                change: ChangeKind::Changed,
                before: Some(old.clone()),
                after: Some(new.clone()),
            }),
        }
    }
    for (k, new) in after {
        if !before.contains_key(k) {
            out.push(Change {
                path: path(k),
                change: ChangeKind::Added,
                before: None,
                after: Some(new.clone()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clip(v: Value) -> Clipboard {
        match v {
            Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn changes_name_each_path_once() {
        let before = clip(json!({"a": 1, "gone": true, "instance": {"ip": null, "name": "h"}}));
        let after = clip(json!({"a": 1, "instance": {"ip": "10.0.0.1", "name": "h"}, "new": [1]}));
        let got = changes(&before, &after);
        assert_eq!(
            got,
            vec![
                Change {
                    path: "gone".into(),
                    change: ChangeKind::Removed,
                    before: Some(json!(true)),
                    after: None
                },
                Change {
                    path: "instance.ip".into(),
                    change: ChangeKind::Changed,
                    before: Some(Value::Null),
                    after: Some(json!("10.0.0.1"))
                },
                Change {
                    path: "new".into(),
                    change: ChangeKind::Added,
                    before: None,
                    after: Some(json!([1]))
                },
            ]
        );
    }

    #[test]
    fn masked_hides_secret_keys_and_their_values_elsewhere() {
        let m = Masker::new(vec![], vec![]);
        let c = clip(json!({"db": {"password": "hunter2-long"}, "note": "pw is hunter2-long"}));
        let shown = Value::Object(masked(&m, &c)).to_string();
        assert!(!shown.contains("hunter2-long"), "{shown}");
        assert!(shown.contains(crate::secrets::MASK));
    }
}
