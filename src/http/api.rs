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

use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{self, Caller, Refusal};
use super::schema::{
    Accepted, Attempt, Change, DeployBody, ErrorBody, HostBody, LogBody, LogLine, Pipeline,
    PipelineList, PipelineStage, PlanBody, RunDetail, RunList, RunSummary, Stage, WhoAmI,
};
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
        let body = ErrorBody {
            error: self.0.message,
            run: None,
        };
        (self.0.status, Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn err(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(Refusal::new(status, message))
}

pub(crate) fn db_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "HTTP API: the database failed");
    err(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database did not answer; see jarvis's log",
    )
}

pub(crate) async fn viewer(
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

/// 405's sentence: what was asked and what the path takes instead.
pub(crate) fn method_not_allowed(method: &str, path: &str, allow: Option<&str>) -> Response {
    err(
        StatusCode::METHOD_NOT_ALLOWED,
        not_allowed_text(method, path, allow),
    )
    .into_response()
}

pub(crate) fn not_allowed_text(method: &str, path: &str, allow: Option<&str>) -> String {
    let path = crate::text::one_line(path, 100);
    // axum's Allow is "GET,HEAD": said as "GET, HEAD".
    let allow: Vec<&str> = allow
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if allow.is_empty() {
        format!("{method} is not allowed on {path}")
    } else {
        format!(
            "{method} is not allowed on {path}; it takes {}",
            allow.join(", ")
        )
    }
}

/// Who the caller is, and their roles.
#[utoipa::path(get, path = "/whoami", tag = "people",
    responses(
        (status = 200, description = "The caller", body = WhoAmI),
        (status = 401, description = "A token that is not known or was revoked", body = ErrorBody),
    ))]
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
    Ok(Json(WhoAmI {
        name: caller.name.clone(),
        identity: crate::chat::roles::principal(&caller.identities).map(|i| i.key()),
        person: person.map(str::to_string),
        roles: roles.into_iter().map(str::to_string).collect(),
    })
    .into_response())
}

/// The configured pipelines.
#[utoipa::path(get, path = "/pipelines", tag = "runs",
    responses(
        (status = 200, description = "Every pipeline", body = PipelineList),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the viewer role", body = ErrorBody),
    ))]
pub async fn pipelines(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> ApiResult {
    viewer(&state, &headers, peer, "pipelines").await?;
    let pipelines = state
        .app
        .settings()
        .pipelines
        .iter()
        .map(|(name, p)| Pipeline {
            name: name.clone(),
            command: p.command.as_str().to_string(),
            providers: p.providers.clone(),
            stages: p
                .stages
                .iter()
                .map(|s| PipelineStage {
                    task: s.task.clone(),
                    approval: s.approval || s.approval_if.is_some(),
                    idempotent: s.idempotent,
                })
                .collect(),
            on_failure: p.on_failure.iter().map(|s| s.task.clone()).collect(),
        })
        .collect();
    Ok(Json(PipelineList { pipelines }).into_response())
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

/// Runs, newest first, filtered and paged.
#[utoipa::path(get, path = "/runs", tag = "runs",
    params(
        ("host" = Option<String>, Query, description = "Only this host's runs"),
        ("state" = Option<String>, Query, description = "queued, running, waiting_approval, interrupted, succeeded, failed or cancelled"),
        ("pipeline" = Option<String>, Query, description = "Only this pipeline's runs"),
        ("before" = Option<i64>, Query, description = "Only runs with a smaller id (the next page)"),
        ("limit" = Option<i64>, Query, description = "How many (1 to 200; 50 when not given)"),
    ),
    responses(
        (status = 200, description = "A page of runs", body = RunList),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the viewer role", body = ErrorBody),
        (status = 422, description = "A query the API does not take", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ))]
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
    // 0 would be a page of nothing: refused, not quietly read as 1. Above 200 is the most
    // one page holds.
    let limit = match q.limit {
        None => 50,
        Some(0) => {
            return Err(err(
                StatusCode::UNPROCESSABLE_ENTITY,
                "limit must be 1 to 200, as in ?limit=50",
            ));
        }
        Some(n) => n.min(200),
    };
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
    let runs = runs.iter().map(|r| run_summary(&state, r)).collect();
    Ok(Json(RunList {
        runs,
        next_before: next,
    })
    .into_response())
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

/// One run: its stages with their attempts, timings, and the clipboard after each with what
/// it changed.
#[utoipa::path(get, path = "/runs/{id}", tag = "runs",
    params(("id" = i64, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = RunDetail),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the viewer role", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ))]
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
    let clipboards = state
        .app
        .engine()
        .store()
        .stage_clipboards(id)
        .await
        .map_err(db_error)?;
    let masker = state.app.masker();
    let initial = super::schema::masked(masker, &run.initial_clipboard);
    let stages = stages_json(masker, &run, &timings, &clipboards, "main", &initial);
    // The undo stages start from the clipboard the run failed with.
    let failed_with = super::schema::masked(masker, &run.clipboard);
    let on_failure = stages_json(
        masker,
        &run,
        &timings,
        &clipboards,
        "on_failure",
        &failed_with,
    );
    Ok(Json(RunDetail {
        summary: run_summary(&state, &run),
        initial_clipboard: initial,
        stages,
        on_failure,
    })
    .into_response())
}

/// A run as the list shows it, with `status` as chat says it.
pub(crate) fn run_summary(state: &State, run: &Run) -> RunSummary {
    let live = state.app.engine().live(run.id);
    RunSummary {
        id: run.id,
        host: run.host.clone(),
        kind: run.kind.as_str().to_string(),
        pipeline: run.pipeline.clone(),
        state: run.state.as_str().to_string(),
        phase: run.phase.as_str().to_string(),
        status: render::status_line(run, live.as_ref().and_then(|l| l.progress.as_deref())),
        requester: render::requester_display(&run.requester).to_string(),
        requester_identity: run.requester.clone(),
        design: run.design_ref.clone(),
        stage: run.next_stage as i64 + 1,
        stages_total: run.stages.len() as i64,
        failed_stage: run.failed_stage.map(|s| s as i64 + 1),
        error: run.error.clone(),
        approved_by: run.approved_by.clone(),
        retry_of: run.retry_of,
        // What started it, for runs a webhook or a schedule queued.
        trigger: run
            .initial_clipboard
            .get("jarvis")
            .and_then(|j| j.get("trigger"))
            .cloned(),
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
    }
}

/// The stages of one phase with their attempts, timings, and the masked clipboard each left
/// with its changes against the one before (`start` for the first).
fn stages_json(
    masker: &crate::secrets::Masker,
    run: &Run,
    timings: &[StageTiming],
    clipboards: &[(String, usize, crate::clipboard::Clipboard)],
    phase: &str,
    start: &crate::clipboard::Clipboard,
) -> Vec<Stage> {
    let stages = if phase == "main" {
        &run.stages
    } else {
        &run.on_failure
    };
    let mut before = start.clone();
    stages
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
            let clipboard = clipboards
                .iter()
                .find(|(p, s, _)| p == phase && *s == i)
                .map(|(_, _, c)| super::schema::masked(masker, c));
            let changes: Vec<Change> = match &clipboard {
                Some(after) => {
                    let changes = super::schema::changes(&before, after);
                    before = after.clone();
                    changes
                }
                None => Vec::new(),
            };
            Stage {
                index: i as i64 + 1,
                task: stage.task.clone(),
                state,
                attempts: attempts
                    .iter()
                    .map(|t| Attempt {
                        attempt: i64::from(t.attempt),
                        state: t.state.clone(),
                        started_us: t.started_us,
                        finished_us: t.finished_us,
                        exit_code: t.exit_code,
                        error: t.error.as_deref().map(|e| masker.mask(e)),
                    })
                    .collect(),
                clipboard,
                changes,
            }
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    lines: Option<usize>,
}

/// The last lines of a run's log (masked as chat masks them).
#[utoipa::path(get, path = "/runs/{id}/log", tag = "runs",
    params(
        ("id" = i64, Path, description = "The run's id"),
        ("lines" = Option<i64>, Query, description = "How many of the last lines (1 to 1000; 100 when not given)"),
    ),
    responses(
        (status = 200, description = "The log's tail", body = LogBody),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the viewer role", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 422, description = "A query the API does not take", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ))]
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
    let n = match q.lines {
        None => 100,
        Some(0) => {
            return Err(err(
                StatusCode::UNPROCESSABLE_ENTITY,
                "lines must be 1 to 1000, as in ?lines=50",
            ));
        }
        Some(n) => n.min(1000),
    };
    let lines = state
        .app
        .engine()
        .store()
        .log_tail(id, n)
        .await
        .map_err(db_error)?;
    let lines = lines
        .into_iter()
        .map(|(stage, line)| LogLine {
            stage: stage.map(|s| s as i64),
            line,
        })
        .collect();
    Ok(Json(LogBody { run: id, lines }).into_response())
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
        let body = Accepted {
            message,
            run: reply.run,
        };
        (status, Json(body)).into_response()
    } else {
        let body = ErrorBody {
            error: message,
            run: reply.run,
        };
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

/// `deploy DESIGN`, as in chat.
#[utoipa::path(post, path = "/deploy", tag = "commands", request_body = DeployBody,
    responses(
        (status = 202, description = "Queued: the run's id, at once", body = Accepted),
        (status = 200, description = "A rollout of a group started (`group:NAME`)", body = Accepted),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the role, or the CSRF token is missing", body = ErrorBody),
        (status = 409, description = "The host has a run already (its id given)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "A body or design the API does not take", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub async fn deploy(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    command_from_body(&state, &headers, peer, body, "deploy", "design").await
}

/// `redeploy HOST`, as in chat.
#[utoipa::path(post, path = "/redeploy", tag = "commands", request_body = HostBody,
    responses(
        (status = 202, description = "Queued: the run's id, at once", body = Accepted),
        (status = 200, description = "A rollout of a group started (`group:NAME`)", body = Accepted),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the role, or the CSRF token is missing", body = ErrorBody),
        (status = 409, description = "The host has a run already (its id given)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "A body or design the API does not take", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub async fn redeploy(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    command_from_body(&state, &headers, peer, body, "redeploy", "host").await
}

/// `destroy HOST`, as in chat.
#[utoipa::path(post, path = "/destroy", tag = "commands", request_body = HostBody,
    responses(
        (status = 202, description = "Queued: the run's id, at once", body = Accepted),
        (status = 200, description = "A rollout of a group started (`group:NAME`)", body = Accepted),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the role, or the CSRF token is missing", body = ErrorBody),
        (status = 409, description = "The host has a run already (its id given)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "A body or design the API does not take", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
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
#[utoipa::path(get, path = "/plan", tag = "commands",
    params(("design" = String, Query, description = "The design's name")),
    responses(
        (status = 200, description = "The plan", body = PlanBody),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the viewer role", body = ErrorBody),
        (status = 422, description = "No design given, or one that cannot be planned", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ))]
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
    Ok(Json(PlanBody {
        lines: reply.public,
    })
    .into_response())
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

/// A run action: `cancel`, `approve`, `resume` or `retry`, as in chat.
#[utoipa::path(post, path = "/runs/{id}/{action}", tag = "commands",
    params(
        ("id" = i64, Path, description = "The run's id"),
        ("action" = RunAction, Path, description = "What to do"),
    ),
    responses(
        (status = 200, description = "Done (approve, cancel)", body = Accepted),
        (status = 202, description = "A run queued (resume, retry): its id", body = Accepted),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the role, approves their own run, or the CSRF token is missing", body = ErrorBody),
        (status = 404, description = "No such run or action", body = ErrorBody),
        (status = 409, description = "The run is not in a state for it", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
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
#[utoipa::path(get, path = "/events", tag = "runs",
    params(
        ("after" = Option<i64>, Query, description = "Continue after this event id"),
        ("run" = Option<i64>, Query, description = "Only this run's events"),
        ("Last-Event-ID" = Option<i64>, Header, description = "Continue after this event id (what EventSource sends)"),
    ),
    responses(
        (status = 200, description = "A stream of events: `id` the event's id, `event` its kind, `data` a JSON object (id, run, at, kind, text)", content_type = "text/event-stream", body = String),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the viewer role", body = ErrorBody),
        (status = 422, description = "A query the API does not take", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ))]
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

/// The run actions, as the path names them.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum RunAction {
    Cancel,
    Approve,
    Resume,
    Retry,
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "api",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
pub async fn openapi() -> Response {
    Json(document()).into_response()
}

/// The API's routes, each with its OpenAPI operation: the router and the document are made
/// from one list, so every route is documented and every documented route is served.
pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(pipelines))
        .routes(routes!(runs))
        .routes(routes!(run))
        .routes(routes!(log))
        .routes(routes!(act))
        .routes(routes!(plan))
        .routes(routes!(deploy))
        .routes(routes!(redeploy))
        .routes(routes!(destroy))
        .routes(routes!(events))
        .routes(routes!(super::rollouts::list))
        .routes(routes!(super::rollouts::one))
        .routes(routes!(super::rollouts::act))
        .routes(routes!(super::rollouts::promote))
        .routes(routes!(super::hooks::schedules))
        .routes(routes!(super::hooks::run_action))
        .routes(routes!(super::hosts::list))
        .routes(routes!(super::hosts::one))
        .routes(routes!(openapi))
        .fallback(not_found)
}

/// The OpenAPI document of `/api/v1`, made once from [`routes`].
pub(crate) fn document() -> &'static Value {
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme,
        };
        let (_, mut doc) = routes().split_for_parts();
        doc.info.title = "jarvis".into();
        doc.info.version = env!("CARGO_PKG_VERSION").into();
        doc.info.description = Some(
            "Deploy by button: the runs, their stages and commands, as in chat (docs/http.md). \
             Send a personal token as `Authorization: Bearer TOKEN`; the web page's session \
             cookie also works, with its CSRF token in `X-CSRF-Token` on POST."
                .into(),
        );
        doc.info.license = None;
        doc.info.contact = None;
        doc.servers = Some(vec![utoipa::openapi::Server::new("/api/v1")]);
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // The `{action}` path parameters name these enums by `$ref`, but utoipa gathers
        // schemas only from bodies, so they are registered here; without them the document
        // has dangling references and validators and client generators stop on it.
        for (name, schema) in [
            (RunAction::name(), RunAction::schema()),
            (
                super::rollouts::RolloutAction::name(),
                super::rollouts::RolloutAction::schema(),
            ),
        ] {
            components.schemas.insert(name.into_owned(), schema);
        }
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
        serde_json::to_value(&doc).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot write the OpenAPI document");
            json!({})
        })
    })
}
