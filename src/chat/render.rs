//! How runs and events read in chat. Pure: data in, lines out (masking happens in the
//! outlet, on every line, whatever made it).

use crate::engine::events::{EventBody, kind};
use crate::store::{Phase, Run, RunState, now_ms};
use crate::text::duration;

/// `2026-12-01 03:00:00 UTC`, for a unix-ms instant.
pub fn utc_time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{ms} ms"),
    }
}

/// `loki deploy #42`
pub fn run_name(host: &str, kind: &str, id: i64) -> String {
    format!("{host} {kind} #{id}")
}

/// The text of a notification, or `None` for events that are not announced.
pub fn event_text(event_kind: &str, e: &EventBody) -> Option<String> {
    let name = run_name(&e.host, &e.kind, e.run);
    let stage = || match (e.stage, &e.task) {
        (Some(i), Some(t)) => format!("stage {i}/{} {t}", e.stages),
        _ => "a stage".to_string(),
    };
    let took = || e.duration_ms.map(duration).unwrap_or_default();
    let text = e.text.clone().unwrap_or_default();
    Some(match event_kind {
        kind::RUN_STARTED => format!(
            "{name} started ({} pipeline, {} stages)",
            e.pipeline, e.stages
        ),
        kind::STAGE_STARTED => format!("{name}: {} started", stage()),
        kind::NOTICE => format!("{name} {}: {text}", stage()),
        kind::APPROVAL_NEEDED => format!(
            "{name} waits for approval before {} — an approver other than {} says 'approve #{}'",
            stage(),
            requester_nick(e),
            e.run
        ),
        kind::SUCCEEDED => format!("{name} succeeded in {}", took()),
        kind::FAILED => {
            let mut line = format!("{name} FAILED at {} after {}: {text}", stage(), took());
            if let Some(n) = e.undo_stages {
                line.push_str(&format!(" — undoing with {}", count(n, "on_failure stage")));
            }
            line
        }
        kind::UNDO_STAGE_FAILED => format!(
            "{name}: on_failure stage {}/{} {} failed: {text}",
            e.stage.unwrap_or(0),
            e.stages,
            e.task.clone().unwrap_or_default()
        ),
        kind::UNDONE => format!(
            "{name}: on_failure stages finished; the run stays FAILED — 'retry #{}' starts it anew",
            e.run
        ),
        kind::INTERRUPTED => format!(
            "{name} was interrupted at {} by a restart of jarvis — say 'resume #{}' to run that stage again, or 'cancel #{}'",
            stage(),
            e.run,
            e.run
        ),
        kind::RERUN_AFTER_RESTART => format!(
            "{name}: jarvis restarted; running {} again (it is idempotent)",
            stage()
        ),
        // The engine's text is `cancelled by WHO (IDENTITY)`, or just `cancelled`.
        kind::CANCELLED => match text.strip_prefix("cancelled by ") {
            Some(by) => format!("{name} cancelled by {by} after {}", took()),
            None => format!("{name} cancelled after {}", took()),
        },
        // "deploy #51 of web1 for acme/site@3f2a1c by push", as the trigger wrote it.
        kind::TRIGGERED => text,
        // A rollout's own line, made by the bot when it stopped or finished.
        kind::ROLLOUT_STOPPED | kind::ROLLOUT_FINISHED => text,
        _ => return None,
    })
}

/// Whether an event should mention its requester by nick in a room.
pub fn pings_requester(event_kind: &str) -> bool {
    matches!(
        event_kind,
        kind::SUCCEEDED
            | kind::FAILED
            | kind::APPROVAL_NEEDED
            | kind::INTERRUPTED
            | kind::ROLLOUT_STOPPED
            | kind::ROLLOUT_FINISHED
    )
}

fn requester_nick(e: &EventBody) -> String {
    super::Origin::decode(&e.origin)
        .map(|o| o.nick)
        .unwrap_or_else(|| "the requester".into())
}

/// `1 stage`, `4 stages`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// One line on where a run stands, as `status` shows it.
pub fn status_line(run: &Run, live_progress: Option<&str>) -> String {
    let name = run_name(&run.host, run.kind.as_str(), run.id);
    let stages = run.phase_stages();
    let n = stages.len();
    let i = run.next_stage;
    let task = stages.get(i).map(|s| s.task.as_str()).unwrap_or("");
    let undo = if run.phase == Phase::OnFailure {
        "on_failure "
    } else {
        ""
    };
    let progress = live_progress
        .or(run.progress.as_deref())
        .map(|p| format!(" — \"{p}\""))
        .unwrap_or_default();
    match run.state {
        RunState::Queued if run.started_at.is_none() => {
            format!(
                "{name}: queued ({} pipeline, {})",
                run.pipeline,
                count(n, "stage")
            )
        }
        RunState::Queued => format!(
            "{name}: queued to continue at {undo}stage {}/{n} {task}",
            i + 1
        ),
        RunState::Running => {
            let since = run.stage_started_at.unwrap_or(run.created_at);
            // On a cluster, which process runs it.
            let node = run
                .lease_owner
                .as_deref()
                .filter(|node| *node != crate::store::cluster::SOLE_NODE)
                .map(|node| format!(" on {node}"))
                .unwrap_or_default();
            format!(
                "{name}: {undo}stage {}/{n} {task}, running {}{node}{progress}",
                i + 1,
                duration((now_ms() - since).max(0) as u64)
            )
        }
        RunState::WaitingApproval => format!(
            "{name}: waiting for approval before stage {}/{n} {task} — 'approve #{}'",
            i + 1,
            run.id
        ),
        RunState::Interrupted => format!(
            "{name}: interrupted at {undo}stage {}/{n} {task} — 'resume #{}' {} or 'cancel #{}'",
            i + 1,
            run.id,
            if run.phase == Phase::OnFailure {
                "continues the undo"
            } else {
                "continues"
            },
            run.id
        ),
        RunState::Succeeded => format!(
            "{name}: succeeded in {}",
            duration(crate::engine::run_duration(run))
        ),
        RunState::Failed => {
            let at = run.failed_stage.unwrap_or(i);
            let task = run.stages.get(at).map(|s| s.task.as_str()).unwrap_or("");
            let undone = if run.phase == Phase::OnFailure {
                format!(
                    " (undone by its on_failure stages; 'retry #{}' starts it anew)",
                    run.id
                )
            } else {
                String::new()
            };
            format!(
                "{name}: FAILED at stage {}/{} {task}: {}{undone}",
                at + 1,
                run.stages.len(),
                run.error.as_deref().unwrap_or("no reason recorded")
            )
        }
        RunState::Cancelled => format!(
            "{name}: cancelled after {}",
            duration(crate::engine::run_duration(run))
        ),
    }
}

/// One line of `history`.
pub fn history_line(run: &Run) -> String {
    let outcome = match run.state {
        RunState::Succeeded => format!(
            "succeeded in {}",
            duration(crate::engine::run_duration(run))
        ),
        RunState::Failed => {
            let at = run.failed_stage.map(|s| s + 1).unwrap_or(0);
            format!(
                "FAILED at stage {at}/{} after {}",
                run.stages.len(),
                duration(crate::engine::run_duration(run))
            )
        }
        other => other.as_str().replace('_', " "),
    };
    format!(
        "#{} {} {} ({}): {outcome}, by {}",
        run.id,
        run.host,
        run.kind.as_str(),
        run.pipeline,
        requester_display(&run.requester)
    )
}

/// The requester as people read it: the identity key without its scheme.
pub fn requester_display(key: &str) -> &str {
    key.rsplit_once(':').map(|(_, who)| who).unwrap_or(key)
}

// ---- host records ------------------------------------------------------------------

pub fn id_text(section: &serde_json::Value) -> String {
    match section.get("id") {
        Some(serde_json::Value::String(s)) => crate::text::one_line(s, 64),
        Some(other) => other.to_string(),
        None => "?".into(),
    }
}

/// `linode 123 (us-east), ec2 i-0abc (eu-west-1)`, or `none`.
pub fn resources_text(resources: &std::collections::BTreeMap<String, serde_json::Value>) -> String {
    if resources.is_empty() {
        return "none".into();
    }
    resources
        .iter()
        .map(|(module, section)| {
            let region = section
                .get("region")
                .and_then(serde_json::Value::as_str)
                .map(|r| format!(" ({})", crate::text::one_line(r, 40)))
                .unwrap_or_default();
            format!("{module} {}{region}", id_text(section))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `web1 (production, present): EC2, ec2 i-0abc (eu-west-1), 192.0.2.7; last good run #12`
pub fn host_line(r: &crate::store::HostRecord) -> String {
    let mut line = format!(
        "{} ({}, {}): {}, {}",
        r.name,
        r.environment.as_deref().unwrap_or("no environment"),
        r.state.as_str(),
        r.provider.as_deref().unwrap_or("no provider"),
        resources_text(&r.resources)
    );
    if !r.addresses.is_empty() {
        line.push_str(&format!(", {}", r.addresses.join(" ")));
    }
    match (r.last_good_run, r.last_run) {
        (Some(good), Some(last)) if good != last => {
            line.push_str(&format!("; last good run #{good}, last run #{last}"))
        }
        (Some(good), _) => line.push_str(&format!("; last good run #{good}")),
        (None, Some(last)) => line.push_str(&format!("; no good run yet, last run #{last}")),
        (None, None) => {}
    }
    if r.state == crate::store::HostState::Destroyed {
        line.push_str("; destroyed");
    }
    crate::text::one_line(&line, 400)
}
