//! The JSON API under `/api/v1` (docs/http.md). Reads come from the store, checked against
//! the viewer role; everything that changes something is a command carried out by the bot,
//! exactly as in chat. Errors are `{"error": "one sentence"}` with a fitting status.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Caller, Refusal};
use super::{Shared, State};
use crate::chat::bot::{Reply, Verdict};
use crate::chat::command::{Command, RunRef};
use crate::chat::render;
use crate::chat::roles::Role;
use crate::store::{Run, RunFilter, RunState, StageTiming};

/// An API error: the status and one sentence, as JSON.
pub struct ApiError(Refusal);

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        ApiError(r)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0.status, Json(json!({ "error": self.0.message }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn err(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(Refusal::new(status, message))
}

fn db_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "HTTP API: the database failed");
    err(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database did not answer; see jarvis's log",
    )
}

async fn viewer(
    state: &State,
    headers: &HeaderMap,
    peer: SocketAddr,
    what: &str,
) -> Result<Caller, ApiError> {
    let caller = auth::caller(state, headers, peer).await?;
    auth::require(state, &caller, Role::Viewer, what)?;
    Ok(caller)
}

pub async fn not_found() -> ApiError {
    err(
        StatusCode::NOT_FOUND,
        "no such API endpoint; see docs/http.md",
    )
}

pub async fn whoami(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> ApiResult {
    let caller = auth::caller(&state, &headers, peer).await?;
    let roles: Vec<&str> = auth::roles_of(&state, &caller)
        .iter()
        .map(|r| r.as_str())
        .collect();
    let person = state.app.settings().roles.person_of(&caller.identities);
    Ok(Json(json!({
        "name": caller.name,
        "identity": crate::chat::roles::principal(&caller.identities).map(|i| i.key()),
        "person": person,
        "roles": roles,
    }))
    .into_response())
}

pub async fn pipelines(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> ApiResult {
    viewer(&state, &headers, peer, "pipelines").await?;
    let list: Vec<Value> = state
        .app
        .settings()
        .pipelines
        .iter()
        .map(|(name, p)| {
            json!({
                "name": name,
                "command": p.command.as_str(),
                "providers": p.providers,
                "stages": p.stages.iter().map(|s| json!({
                    "task": s.task,
                    "approval": s.approval || s.approval_if.is_some(),
                    "idempotent": s.idempotent,
                })).collect::<Vec<_>>(),
                "on_failure": p.on_failure.iter().map(|s| s.task.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "pipelines": list })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    host: Option<String>,
    state: Option<String>,
    pipeline: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

pub async fn runs(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> ApiResult {
    viewer(&state, &headers, peer, "listing runs").await?;
    let Query(q) = query.map_err(|e| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("bad query: {}", crate::text::one_line(&e.body_text(), 200)),
        )
    })?;
    let run_state = match q.state.as_deref() {
        Some(s) => Some(RunState::parse(s).ok_or_else(|| {
            err(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "state '{}' is none of queued, running, waiting_approval, interrupted, succeeded, failed, cancelled",
                    crate::text::one_line(s, 40)
                ),
            )
        })?),
        None => None,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let filter = RunFilter {
        host: q.host,
        state: run_state,
        pipeline: q.pipeline,
        before: q.before,
        limit,
    };
    let runs = state
        .app
        .engine()
        .store()
        .runs_filtered(&filter)
        .await
        .map_err(db_error)?;
    let next = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.id))
        .flatten();
    let list: Vec<Value> = runs.iter().map(|r| run_summary(&state, r)).collect();
    Ok(Json(json!({ "runs": list, "next_before": next })).into_response())
}

fn run_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    path.map(|Path(id)| id).map_err(|_| {
        err(
            StatusCode::NOT_FOUND,
            "a run id is a number, as in /api/v1/runs/42",
        )
    })
}

async fn load_run(state: &State, id: i64) -> Result<Run, ApiError> {
    state
        .app
        .engine()
        .store()
        .run(id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("there is no run #{id}")))
}

pub async fn run(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<i64>, PathRejection>,
) -> ApiResult {
    viewer(&state, &headers, peer, "reading a run").await?;
    let id = run_id(path)?;
    let run = load_run(&state, id).await?;
    let timings = state
        .app
        .engine()
        .store()
        .stage_timings(id)
        .await
        .map_err(db_error)?;
    let mut body = run_summary(&state, &run);
    if let Some(map) = body.as_object_mut() {
        map.insert("stages".into(), stages_json(&run, &timings, "main"));
        map.insert(
            "on_failure".into(),
            stages_json(&run, &timings, "on_failure"),
        );
    }
    Ok(Json(body).into_response())
}

/// A run as the list shows it, with `status` as chat says it.
pub(crate) fn run_summary(state: &State, run: &Run) -> Value {
    let live = state.app.engine().live(run.id);
    json!({
        "id": run.id,
        "host": run.host,
        "kind": run.kind.as_str(),
        "pipeline": run.pipeline,
        "state": run.state.as_str(),
        "phase": run.phase.as_str(),
        "status": render::status_line(run, live.as_ref().and_then(|l| l.progress.as_deref())),
        "requester": render::requester_display(&run.requester),
        "requester_identity": run.requester,
        "design": run.design_ref,
        "stage": run.next_stage + 1,
        "stages_total": run.stages.len(),
        "failed_stage": run.failed_stage.map(|s| s + 1),
        "error": run.error,
        "approved_by": run.approved_by,
        "retry_of": run.retry_of,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    })
}

/// The stages of one phase with their attempts and timings.
fn stages_json(run: &Run, timings: &[StageTiming], phase: &str) -> Value {
    let stages = if phase == "main" {
        &run.stages
    } else {
        &run.on_failure
    };
    let list: Vec<Value> = stages
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let attempts: Vec<&StageTiming> = timings
                .iter()
                .filter(|t| t.phase == phase && t.stage == i)
                .collect();
            let state = attempts
                .last()
                .map(|t| t.state.clone())
                .unwrap_or_else(|| "pending".into());
            json!({
                "index": i + 1,
                "task": stage.task,
                "state": state,
                "attempts": attempts.iter().map(|t| json!({
                    "attempt": t.attempt,
                    "state": t.state,
                    "started_us": t.started_us,
                    "finished_us": t.finished_us,
                    "exit_code": t.exit_code,
                    "error": t.error,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Value::Array(list)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    lines: Option<usize>,
}

pub async fn log(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<i64>, PathRejection>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult {
    viewer(&state, &headers, peer, "reading a run's log").await?;
    let id = run_id(path)?;
    let Query(q) = query.map_err(|_| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "lines must be a number, as in ?lines=50",
        )
    })?;
    load_run(&state, id).await?;
    let n = q.lines.unwrap_or(100).clamp(1, 1000);
    let lines = state
        .app
        .engine()
        .store()
        .log_tail(id, n)
        .await
        .map_err(db_error)?;
    let list: Vec<Value> = lines
        .into_iter()
        .map(|(stage, line)| json!({ "stage": stage, "line": line }))
        .collect();
    Ok(Json(json!({ "run": id, "lines": list })).into_response())
}

/// Carries out a command as the caller, through the bot, and answers with its verdict.
pub(crate) async fn perform(
    state: &State,
    caller: &Caller,
    command: Command,
) -> (StatusCode, Reply) {
    let text = command_text(&command);
    let msg = super::incoming(
        caller.identities.clone(),
        &caller.name,
        &caller.client,
        text.clone(),
    );
    let reply = state.app.bot().perform(&msg, &command, &text).await;
    let status = match reply.verdict {
        Verdict::Done if reply.run.is_some() => StatusCode::ACCEPTED,
        Verdict::Done => StatusCode::OK,
        Verdict::Forbidden => StatusCode::FORBIDDEN,
        Verdict::NotFound => StatusCode::NOT_FOUND,
        Verdict::Conflict => StatusCode::CONFLICT,
        Verdict::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        Verdict::Unavailable | Verdict::Failed => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, reply)
}

/// The chat line that says `command`, for the audit log.
fn command_text(command: &Command) -> String {
    let run = |r: &RunRef| r.to_string();
    match command {
        Command::Deploy {
            target,
            environment,
        } => format!("deploy {target}{}", to_environment(environment)),
        Command::Redeploy {
            target,
            environment,
        } => format!("redeploy {target}{}", to_environment(environment)),
        Command::Destroy { target } => format!("destroy {target}"),
        Command::Promote { host, environment } => format!("promote {host} to {environment}"),
        Command::Cancel { run: r } => format!("cancel {}", run(r)),
        Command::Resume { run: r } => format!("resume {}", run(r)),
        Command::Retry { run: r } => format!("retry {}", run(r)),
        Command::Approve { run: r } => format!("approve {}", run(r)),
        other => other.name().to_string(),
    }
}

fn to_environment(environment: &Option<String>) -> String {
    environment
        .as_deref()
        .map(|e| format!(" to {e}"))
        .unwrap_or_default()
}

pub(super) fn answer(status: StatusCode, reply: Reply) -> Response {
    let message = reply.public.first().cloned().unwrap_or_default();
    if status.is_success() {
        (
            status,
            Json(json!({ "message": message, "run": reply.run })),
        )
            .into_response()
    } else {
        let mut body = json!({ "error": message });
        if let (Some(run), Some(map)) = (reply.run, body.as_object_mut()) {
            map.insert("run".into(), json!(run));
        }
        (status, Json(body)).into_response()
    }
}

/// A JSON body of one object with string fields only.
pub(super) fn fields(
    body: Result<Bytes, BytesRejection>,
    names: &[&str],
) -> Result<Vec<String>, ApiError> {
    let body = body.map_err(|e| {
        err(
            e.status(),
            format!(
                "the body could not be read: {}",
                crate::text::one_line(&e.body_text(), 120)
            ),
        )
    })?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the body is not JSON: {}",
                crate::text::one_line(&e.to_string(), 120)
            ),
        )
    })?;
    let Some(map) = value.as_object() else {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the body must be a JSON object",
        ));
    };
    if let Some(extra) = map.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "unknown field '{}'; this takes {}",
                crate::text::one_line(extra, 40),
                names.join(", ")
            ),
        ));
    }
    names
        .iter()
        .map(|n| {
            map.get(*n)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    err(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("give '{n}' as a string"),
                    )
                })
        })
        .collect()
}

/// Parses `line` with the chat language's own parser, so the API takes what chat takes.
pub(super) fn parse(line: &str) -> Result<Command, ApiError> {
    crate::chat::command::parse(line)
        .map_err(|e| err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

async fn command_from_body(
    state: &State,
    headers: &HeaderMap,
    peer: SocketAddr,
    body: Result<Bytes, BytesRejection>,
    verb: &str,
    field: &str,
) -> ApiResult {
    let caller = auth::caller(state, headers, peer).await?;
    if caller.anonymous() {
        return Err(err(
            StatusCode::UNAUTHORIZED,
            format!("{verb} needs a login: send Authorization: Bearer TOKEN"),
        ));
    }
    auth::check_csrf(
        &caller,
        headers.get("x-csrf-token").and_then(|v| v.to_str().ok()),
    )?;
    let value = fields(body, &[field])?.remove(0);
    if value.trim().is_empty() || value.split_whitespace().count() != 1 {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("'{field}' must be one word"),
        ));
    }
    let command = parse(&format!("{verb} {value}"))?;
    let (status, reply) = perform(state, &caller, command).await;
    Ok(answer(status, reply))
}

pub async fn deploy(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    command_from_body(&state, &headers, peer, body, "deploy", "design").await
}

pub async fn redeploy(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    command_from_body(&state, &headers, peer, body, "redeploy", "host").await
}

pub async fn destroy(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    command_from_body(&state, &headers, peer, body, "destroy", "host").await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanQuery {
    design: String,
}

/// `plan REF`: the pipeline a design would run, as lines; nothing is run.
pub async fn plan(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    query: Result<Query<PlanQuery>, QueryRejection>,
) -> ApiResult {
    let caller = viewer(&state, &headers, peer, "plan").await?;
    let Query(q) = query.map_err(|_| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "give the design, as in ?design=demo",
        )
    })?;
    if q.design.split_whitespace().count() != 1 {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "'design' must be one word",
        ));
    }
    let command = parse(&format!("plan {}", q.design))?;
    let (status, reply) = perform(&state, &caller, command).await;
    if !status.is_success() {
        return Ok(answer(status, reply));
    }
    Ok(Json(json!({ "lines": reply.public })).into_response())
}

/// The run actions: `cancel`, `approve`, `resume`, `retry`.
pub(crate) fn action(name: &str, id: i64) -> Option<Command> {
    let run = RunRef::Id(id);
    Some(match name {
        "cancel" => Command::Cancel { run },
        "approve" => Command::Approve { run },
        "resume" => Command::Resume { run },
        "retry" => Command::Retry { run },
        _ => return None,
    })
}

pub async fn act(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<(i64, String)>, PathRejection>,
) -> ApiResult {
    let Ok(Path((id, name))) = path else {
        return Err(err(
            StatusCode::NOT_FOUND,
            "a run action is POST /api/v1/runs/ID/cancel|approve|resume|retry",
        ));
    };
    let Some(command) = action(&name, id) else {
        return Err(err(
            StatusCode::NOT_FOUND,
            format!(
                "no action '{}'; say cancel, approve, resume or retry",
                crate::text::one_line(&name, 30)
            ),
        ));
    };
    let caller = auth::caller(&state, &headers, peer).await?;
    if caller.anonymous() {
        return Err(err(
            StatusCode::UNAUTHORIZED,
            format!("{name} needs a login: send Authorization: Bearer TOKEN"),
        ));
    }
    auth::check_csrf(
        &caller,
        headers.get("x-csrf-token").and_then(|v| v.to_str().ok()),
    )?;
    let (status, reply) = perform(&state, &caller, command).await;
    Ok(answer(status, reply))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    after: Option<i64>,
    run: Option<i64>,
}

/// Server-Sent Events from the stored events table, resumable: each event's id is its row
/// id, and `Last-Event-ID` (or `?after=`) continues after the one a client saw last.
pub async fn events(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    viewer(&state, &headers, peer, "following events").await?;
    let Query(q) = query.map_err(|_| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "after and run must be numbers",
        )
    })?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let start = match last_seen.or(q.after) {
        Some(id) => id,
        None => state
            .app
            .engine()
            .store()
            .last_event_id()
            .await
            .map_err(db_error)?,
    };
    let only_run = q.run;
    let store = state.app.engine().store().clone();
    let watch = state.last_event.clone();
    let stream = futures_util::stream::unfold(
        (store, watch, start, Vec::<Event>::new()),
        move |(store, mut watch, mut cursor, mut ready)| async move {
            loop {
                if !ready.is_empty() {
                    let event = ready.remove(0);
                    return Some((Ok(event), (store, watch, cursor, ready)));
                }
                match store.events_after(cursor, 100).await {
                    Ok(rows) if !rows.is_empty() => {
                        for row in rows {
                            cursor = row.id;
                            if only_run.is_some_and(|r| r != row.run_id) {
                                continue;
                            }
                            let data = json!({
                                "id": row.id,
                                "run": row.run_id,
                                "at": row.at,
                                "kind": row.kind,
                                "text": crate::engine::events::EventBody::from_value(&row.body)
                                    .and_then(|b| render::event_text(&row.kind, &b)),
                            });
                            ready.push(
                                Event::default()
                                    .id(row.id.to_string())
                                    .event(row.kind.clone())
                                    .data(data.to_string()),
                            );
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "events: cannot read the store");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
                if *watch.borrow_and_update() > cursor {
                    continue;
                }
                if watch.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
