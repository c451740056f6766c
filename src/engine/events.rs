//! What the engine tells the world, stored with the transition it tells of. The chat side
//! turns these into notifications; the engine never formats a chat line.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{NewEvent, Run, RunId};

/// The kinds of event, as stored.
pub mod kind {
    pub const RUN_STARTED: &str = "run_started";
    pub const STAGE_STARTED: &str = "stage_started";
    pub const NOTICE: &str = "notice";
    pub const APPROVAL_NEEDED: &str = "approval_needed";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const UNDO_STAGE_FAILED: &str = "undo_stage_failed";
    pub const UNDONE: &str = "undone";
    pub const INTERRUPTED: &str = "interrupted";
    pub const RERUN_AFTER_RESTART: &str = "rerun_after_restart";
    pub const CANCELLED: &str = "cancelled";
    /// Written by a webhook or schedule with the run it queued: what started it (not by
    /// the engine, which knows no triggers).
    pub const TRIGGERED: &str = "triggered";
    /// A rollout stopped after too many failures (told with one of its child runs).
    pub const ROLLOUT_STOPPED: &str = "rollout_stopped";
    /// A rollout went over all its hosts.
    pub const ROLLOUT_FINISHED: &str = "rollout_finished";
}

/// Everything a notification about a run may say, so the chat side needs no lookup.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct EventBody {
    pub run: RunId,
    pub host: String,
    pub kind: String,
    pub pipeline: String,
    pub requester: String,
    pub origin: String,
    /// 1-based stage number, where the event is about a stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<usize>,
    pub stages: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The run's duration so far, or the stage's where that is what counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// A reason or a worker's notice text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// For undo events: how many undo stages there are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_stages: Option<usize>,
}

impl EventBody {
    pub fn for_run(run: &Run) -> EventBody {
        EventBody {
            run: run.id,
            host: run.host.clone(),
            kind: run.kind.as_str().to_string(),
            pipeline: run.pipeline.clone(),
            requester: run.requester.clone(),
            origin: run.origin.clone(),
            stages: run.stages.len(),
            ..Default::default()
        }
    }

    pub fn stage(mut self, index: usize, task: &str) -> Self {
        self.stage = Some(index + 1);
        self.task = Some(task.to_string());
        self
    }

    pub fn duration_ms(mut self, ms: u64) -> Self {
        self.duration_ms = Some(ms);
        self
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    pub fn into_event(self, kind: &'static str) -> NewEvent {
        NewEvent {
            run_id: self.run,
            kind,
            body: serde_json::to_value(&self).unwrap_or(Value::Null),
        }
    }

    pub fn from_value(value: &Value) -> Option<EventBody> {
        serde_json::from_value(value.clone()).ok()
    }
}
