//! `/metrics` in the Prometheus text format, and `/healthz`.

use std::fmt::Write as _;

use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Shared;

/// Upper bounds of the stage duration histogram, in seconds.
const BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];

pub async fn metrics(AxumState(state): AxumState<Shared>) -> Response {
    match render(&state).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics: the database failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database did not answer; see jarvis's log\n",
            )
                .into_response()
        }
    }
}

async fn render(state: &super::State) -> Result<String, crate::store::StoreError> {
    let store = state.app.engine().store();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP jarvis_runs Runs in the store, by pipeline and state."
    );
    let _ = writeln!(out, "# TYPE jarvis_runs gauge");
    for (pipeline, run_state, n) in store.run_counts().await? {
        let _ = writeln!(
            out,
            "jarvis_runs{{pipeline=\"{}\",state=\"{}\"}} {n}",
            label(&pipeline),
            label(&run_state)
        );
    }
    let _ = writeln!(
        out,
        "# HELP jarvis_stage_duration_seconds How long finished stage attempts took, by task."
    );
    let _ = writeln!(out, "# TYPE jarvis_stage_duration_seconds histogram");
    for d in store.stage_durations().await? {
        let task = label(&d.task);
        for bound in BUCKETS {
            let n = d.seconds.iter().filter(|s| **s <= *bound).count();
            let _ = writeln!(
                out,
                "jarvis_stage_duration_seconds_bucket{{task=\"{task}\",le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "jarvis_stage_duration_seconds_bucket{{task=\"{task}\",le=\"+Inf\"}} {}",
            d.seconds.len()
        );
        let _ = writeln!(
            out,
            "jarvis_stage_duration_seconds_sum{{task=\"{task}\"}} {}",
            d.seconds.iter().sum::<f64>()
        );
        let _ = writeln!(
            out,
            "jarvis_stage_duration_seconds_count{{task=\"{task}\"}} {}",
            d.seconds.len()
        );
    }
    let _ = writeln!(
        out,
        "# HELP jarvis_outbox_backlog Notifications waiting to be sent, by network."
    );
    let _ = writeln!(out, "# TYPE jarvis_outbox_backlog gauge");
    for (network, n) in store.outbox_backlog().await? {
        let _ = writeln!(
            out,
            "jarvis_outbox_backlog{{network=\"{}\"}} {n}",
            label(&network)
        );
    }
    let _ = writeln!(
        out,
        "# HELP jarvis_outbox_undeliverable Notifications set aside as undeliverable."
    );
    let _ = writeln!(out, "# TYPE jarvis_outbox_undeliverable gauge");
    let _ = writeln!(
        out,
        "jarvis_outbox_undeliverable {}",
        store.count_undeliverable().await?
    );
    let _ = writeln!(
        out,
        "# HELP jarvis_workers_running Worker processes running now (stage attempts under way)."
    );
    let _ = writeln!(out, "# TYPE jarvis_workers_running gauge");
    let _ = writeln!(
        out,
        "jarvis_workers_running {}",
        store.running_attempts().await?
    );
    Ok(out)
}

/// A label value with `\`, `"` and newlines escaped.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Alive and the database answers.
pub async fn healthz(AxumState(state): AxumState<Shared>) -> Response {
    match state.app.engine().store().last_event_id().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "healthz: the database failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database did not answer\n",
            )
                .into_response()
        }
    }
}
