//! `/metrics` in the Prometheus text format, and `/healthz`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Shared;

/// Upper bounds of the stage duration histogram, in seconds.
const BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];

pub async fn metrics(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = refused(&state, &headers, peer) {
        return refusal;
    }
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

/// The answer to a caller who may not read the figures (they name pipelines, tasks and
/// networks), or none: the holder of `http.metrics_token` may, when one is set, else only
/// clients on this machine.
fn refused(state: &super::State, headers: &HeaderMap, peer: SocketAddr) -> Option<Response> {
    match &state.config.metrics_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if given.is_some_and(|given| token_matches(token.expose(), given)) {
                None
            } else {
                Some((
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "/metrics needs 'Authorization: Bearer TOKEN' with the token of http.metrics_token\n",
                )
                    .into_response())
            }
        }
        None if super::auth::client_address(state, headers, peer).is_loopback() => None,
        None => Some((
            StatusCode::FORBIDDEN,
            "/metrics answers only this machine; set http.metrics_token to let Prometheus in from elsewhere\n",
        )
            .into_response()),
    }
}

/// Whether `given` is `token`, in time that does not depend on where they differ: ring
/// compares the HMAC tags of both in constant time (the key need not be secret for that).
fn token_matches(token: &str, given: &str) -> bool {
    use ring::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"jarvis /metrics token");
    let expected = hmac::sign(&key, token.as_bytes());
    hmac::verify(&key, given.as_bytes(), expected.as_ref()).is_ok()
}

async fn render(state: &super::State) -> Result<String, crate::store::StoreError> {
    let store = state.app.engine().store();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP jarvis_runs Runs in the store, by pipeline and state."
    );
    let _ = writeln!(out, "# TYPE jarvis_runs gauge");
    let counts = store.run_counts().await?;
    for (pipeline, run_state, n) in &counts {
        let _ = writeln!(
            out,
            "jarvis_runs{{pipeline=\"{}\",state=\"{}\"}} {n}",
            label(pipeline),
            label(run_state)
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
    // Every attached network has a line, the ones with nothing waiting too.
    let mut health: std::collections::BTreeMap<String, (Option<i64>, i64)> = state
        .app
        .chat_networks()
        .iter()
        .map(|n| (n.name().to_string(), (None, 0)))
        .collect();
    for (network, age, dead) in store.outbox_health().await? {
        health.insert(network, (age, dead));
    }
    let _ = writeln!(
        out,
        "# HELP jarvis_outbox_lag_seconds Age of the oldest notification not yet delivered, by network (0 when none waits)."
    );
    let _ = writeln!(out, "# TYPE jarvis_outbox_lag_seconds gauge");
    for (network, (age_ms, _)) in &health {
        let _ = writeln!(
            out,
            "jarvis_outbox_lag_seconds{{network=\"{}\"}} {}",
            label(network),
            age_ms.unwrap_or(0) as f64 / 1000.0
        );
    }
    let _ = writeln!(
        out,
        "# HELP jarvis_outbox_undeliverable Notifications set aside as undeliverable, by network."
    );
    let _ = writeln!(out, "# TYPE jarvis_outbox_undeliverable gauge");
    for (network, (_, dead)) in &health {
        let _ = writeln!(
            out,
            "jarvis_outbox_undeliverable{{network=\"{}\"}} {dead}",
            label(network)
        );
    }
    let _ = writeln!(
        out,
        "# HELP jarvis_chat_connected Whether jarvis is connected to each chat network (1) or not (0)."
    );
    let _ = writeln!(out, "# TYPE jarvis_chat_connected gauge");
    let mut networks: Vec<(String, bool)> = state
        .app
        .chat_networks()
        .iter()
        .filter(|n| n.name() != super::NETWORK)
        .map(|n| (n.name().to_string(), *n.online().borrow()))
        .collect();
    networks.sort();
    for (network, online) in networks {
        let _ = writeln!(
            out,
            "jarvis_chat_connected{{network=\"{}\"}} {}",
            label(&network),
            u8::from(online)
        );
    }
    let _ = writeln!(
        out,
        "# HELP jarvis_queue_depth Runs queued and not yet started, by pipeline."
    );
    let _ = writeln!(out, "# TYPE jarvis_queue_depth gauge");
    let mut queued: std::collections::BTreeMap<String, i64> = state
        .app
        .settings()
        .pipelines
        .keys()
        .map(|p| (p.clone(), 0))
        .collect();
    for (pipeline, run_state, n) in &counts {
        if run_state == "queued" {
            *queued.entry(pipeline.clone()).or_default() += n;
        }
    }
    for (pipeline, n) in queued {
        let _ = writeln!(
            out,
            "jarvis_queue_depth{{pipeline=\"{}\"}} {n}",
            label(&pipeline)
        );
    }
    let (buckets, sum) = store.write_latency();
    let _ = writeln!(
        out,
        "# HELP jarvis_store_write_seconds How long the store's group-committed writes (the engine's stage and run transitions) took, from the request to the durable commit."
    );
    let _ = writeln!(out, "# TYPE jarvis_store_write_seconds histogram");
    for (bound, n) in crate::store::WRITE_BUCKETS.iter().zip(&buckets) {
        let _ = writeln!(
            out,
            "jarvis_store_write_seconds_bucket{{le=\"{bound}\"}} {n}"
        );
    }
    let total = buckets.last().copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "jarvis_store_write_seconds_bucket{{le=\"+Inf\"}} {total}"
    );
    let _ = writeln!(out, "jarvis_store_write_seconds_sum {sum}");
    let _ = writeln!(out, "jarvis_store_write_seconds_count {total}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_token_must_match_whole() {
        let token = "0123456789abcdef-metrics";
        assert!(token_matches(token, token));
        assert!(!token_matches(token, "0123456789abcdef-metric"));
        assert!(!token_matches(token, "0123456789abcdef-metricsx"));
        assert!(!token_matches(token, ""));
    }
}
