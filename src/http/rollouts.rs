//! Rollouts and promotions over HTTP: `GET /api/v1/rollouts`, `GET /api/v1/rollouts/ID`,
//! `POST /api/v1/rollouts/ID/cancel|resume`, `POST /api/v1/promote`, the `/rollouts` page
//! and the run page's promote button. Reads come from the store; every change is a chat
//! command carried out by the bot, as everywhere in the HTTP adapter.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa::ToSchema;

use super::api::{self, ApiError};
use super::auth::{self, Caller, Refusal};
use super::page::{self, FormFields};
use super::schema::{Accepted, ErrorBody, PromoteBody, RolloutBody, RolloutHostBody, RolloutList};
use super::{Shared, State, esc};
use crate::chat::bot::rollout::{HostState, host_state, rollout_line};
use crate::chat::command::{Command, RunRef};
use crate::chat::roles::Role;
use crate::store::{Rollout, RolloutHost, Run, RunState};

type ApiResult = Result<Response, ApiError>;

fn failed(e: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "HTTP: the database failed");
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database did not answer; see jarvis's log",
    )
}

async fn viewer(state: &State, headers: &HeaderMap, peer: SocketAddr) -> Result<Caller, ApiError> {
    let caller = auth::caller(state, headers, peer).await?;
    auth::require(state, &caller, Role::Viewer, "reading rollouts")?;
    Ok(caller)
}

/// A logged-in caller with the CSRF header checked: what a change needs.
async fn actor(
    state: &State,
    headers: &HeaderMap,
    peer: SocketAddr,
    what: &str,
) -> Result<Caller, ApiError> {
    let caller = auth::caller(state, headers, peer).await?;
    if caller.anonymous() {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            format!("{what} needs a login: send Authorization: Bearer TOKEN"),
        )
        .into());
    }
    auth::check_csrf(
        &caller,
        headers.get("x-csrf-token").and_then(|v| v.to_str().ok()),
    )?;
    Ok(caller)
}

fn rollout_body(r: &Rollout, hosts_of: &[RolloutHost]) -> RolloutBody {
    let hosts = hosts_of
        .iter()
        .map(|h| {
            let s = host_state(h);
            RolloutHostBody {
                host: h.host.clone(),
                design: h.design_ref.clone(),
                state: s.as_str().to_string(),
                run: h.run.as_ref().map(|run| run.id),
                error: match &s {
                    HostState::Failed(why) => Some(why.clone()),
                    _ => None,
                },
            }
        })
        .collect();
    RolloutBody {
        id: r.id,
        group: r.group.clone(),
        command: r.kind.as_str().to_string(),
        action: r.action.clone(),
        environment: r.environment.clone(),
        state: r.state.as_str().to_string(),
        reason: r.reason.clone(),
        max_parallel: r.max_parallel as u64,
        max_failures: r.max_failures as u64,
        requester: r.requester.clone(),
        created_at: r.created_at,
        finished_at: r.finished_at,
        status: rollout_line(r, hosts_of),
        hosts,
    }
}

async fn with_hosts(state: &State, r: &Rollout) -> Result<Vec<RolloutHost>, Refusal> {
    state
        .app
        .engine()
        .store()
        .rollout_hosts(r.id)
        .await
        .map_err(failed)
}

/// The last 50 rollouts, newest first, each with its hosts.
#[utoipa::path(get, path = "/rollouts", operation_id = "list_rollouts", tag = "rollouts",
    responses(
        (status = 200, description = "The last rollouts", body = RolloutList),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the viewer role", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ))]
pub async fn list(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> ApiResult {
    viewer(&state, &headers, peer).await?;
    let store = state.app.engine().store();
    let rollouts = store.recent_rollouts(50).await.map_err(failed)?;
    let mut list = Vec::new();
    for r in &rollouts {
        let hosts = with_hosts(&state, r).await?;
        list.push(rollout_body(r, &hosts));
    }
    Ok(Json(RolloutList { rollouts: list }).into_response())
}

fn rollout_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    path.map(|Path(id)| id).map_err(|_| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "a rollout id is a number, as in /api/v1/rollouts/7",
        )
        .into()
    })
}

async fn load(state: &State, id: i64) -> Result<(Rollout, Vec<RolloutHost>), Refusal> {
    let r = state
        .app
        .engine()
        .store()
        .rollout(id)
        .await
        .map_err(failed)?
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, format!("there is no rollout #{id}")))?;
    let hosts = with_hosts(state, &r).await?;
    Ok((r, hosts))
}

/// One rollout with its hosts.
#[utoipa::path(get, path = "/rollouts/{id}", operation_id = "rollout", tag = "rollouts",
    params(("id" = i64, Path, description = "The rollout's id")),
    responses(
        (status = 200, description = "The rollout", body = RolloutBody),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the viewer role", body = ErrorBody),
        (status = 404, description = "No such rollout", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ))]
pub async fn one(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<i64>, PathRejection>,
) -> ApiResult {
    viewer(&state, &headers, peer).await?;
    let id = rollout_id(path)?;
    let (r, hosts) = load(&state, id).await?;
    Ok(Json(rollout_body(&r, &hosts)).into_response())
}

fn action(name: &str, id: i64) -> Option<Command> {
    let run = RunRef::Rollout(id);
    Some(match name {
        "cancel" => Command::Cancel { run },
        "resume" => Command::Resume { run },
        _ => return None,
    })
}

/// What can be done to a rollout.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum RolloutAction {
    /// No more batches; its runs under way are cancelled.
    Cancel,
    /// Its failed hosts start afresh and the batches go on (a stopped or cancelled rollout).
    Resume,
}

/// A rollout action: `cancel` or `resume`, as chat's `cancel rollout #ID`.
#[utoipa::path(post, path = "/rollouts/{id}/{action}", operation_id = "act_on_rollout", tag = "rollouts",
    params(
        ("id" = i64, Path, description = "The rollout's id"),
        ("action" = RolloutAction, Path, description = "What to do"),
    ),
    responses(
        (status = 200, description = "Done", body = Accepted),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the role, or the CSRF token is missing", body = ErrorBody),
        (status = 404, description = "No such rollout or action", body = ErrorBody),
        (status = 409, description = "The rollout is not in a state for it", body = ErrorBody),
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
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "a rollout action is POST /api/v1/rollouts/ID/cancel|resume",
        )
        .into());
    };
    let Some(command) = action(&name, id) else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!(
                "no rollout action '{}'; say cancel or resume",
                crate::text::one_line(&name, 30)
            ),
        )
        .into());
    };
    let caller = actor(&state, &headers, peer, &name).await?;
    let (status, reply) = api::perform(&state, &caller, command).await;
    Ok(api::answer(status, reply))
}

/// Promote a host to an environment: its design's run there, as chat's
/// `promote HOST to ENV`.
#[utoipa::path(post, path = "/promote", tag = "rollouts", request_body = PromoteBody,
    responses(
        (status = 202, description = "Queued: the run's id, at once", body = Accepted),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the role, or the CSRF token is missing", body = ErrorBody),
        (status = 404, description = "No such host", body = ErrorBody),
        (status = 409, description = "The host is not ready for it, or has a run already (its id given)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "A body or environment the API does not take", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub async fn promote(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = actor(&state, &headers, peer, "promote").await?;
    let values = api::fields(body, &["host", "environment"])?;
    if values.iter().any(|v| v.split_whitespace().count() != 1) {
        return Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "'host' and 'environment' must be one word each",
        )
        .into());
    }
    let command = api::parse(&format!("promote {} to {}", values[0], values[1]))?;
    let (status, reply) = api::perform(&state, &caller, command).await;
    Ok(api::answer(status, reply))
}

// ---- the page -------------------------------------------------------------------------

/// `GET /rollouts`: the last rollouts, each with its hosts and its buttons.
pub async fn page_list(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> Response {
    let caller = match page::viewer(&state, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    rollouts_page(&state, &caller, None, StatusCode::OK).await
}

async fn rollouts_page(
    state: &State,
    caller: &Caller,
    message: Option<(&str, bool)>,
    status: StatusCode,
) -> Response {
    let rollouts = match state.app.engine().store().recent_rollouts(20).await {
        Ok(r) => r,
        Err(e) => return page::refusal_page(Some(caller), failed(e)),
    };
    let message = match message {
        Some((m, true)) => format!("<p class=\"notice\" role=\"status\">{}</p>", esc(m)),
        Some((m, false)) => format!("<p class=\"failure\" role=\"alert\">{}</p>", esc(m)),
        None => String::new(),
    };
    let mut body = format!("<h1>Rollouts</h1>{message}");
    if rollouts.is_empty() {
        body.push_str("<p>No rollouts yet. Say <code>redeploy group:NAME</code>.</p>");
    }
    let deployer = !caller.anonymous() && page::can(state, caller, Role::Deployer);
    for r in &rollouts {
        let hosts = match with_hosts(state, r).await {
            Ok(h) => h,
            Err(refusal) => return page::refusal_page(Some(caller), refusal),
        };
        body.push_str(&format!(
            "<section class=\"rollout\" id=\"rollout-{id}\"><h2>Rollout #{id} of {group}</h2><p>{line}</p><ul>",
            id = r.id,
            group = esc(&r.group),
            line = esc(&rollout_line(r, &hosts))
        ));
        for h in &hosts {
            let s = host_state(h);
            let run = h
                .run
                .as_ref()
                .map(|run| format!(" <a href=\"/runs/{0}\">#{0}</a>", run.id))
                .unwrap_or_default();
            body.push_str(&format!(
                "<li class=\"st-{}\">{} {}{run}</li>",
                s.as_str(),
                esc(&h.host),
                s.as_str()
            ));
        }
        body.push_str("</ul>");
        if deployer {
            let mut actions = Vec::new();
            if r.state.is_open() {
                actions.push("cancel");
            }
            if matches!(
                r.state,
                crate::store::RolloutState::Stopped | crate::store::RolloutState::Cancelled
            ) {
                actions.push("resume");
            }
            for a in actions {
                body.push_str(&format!(
                    "<form method=\"post\" action=\"/rollouts/{}/{a}\" class=\"inline\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                     <button type=\"submit\" id=\"rollout-{a}-button\">{}</button></form>",
                    r.id,
                    esc(caller.csrf()),
                    if a == "cancel" { "Cancel" } else { "Resume" }
                ));
            }
        }
        body.push_str("</section>");
    }
    page::page(status, page::layout("Rollouts", Some(caller), &body))
}

/// `POST /rollouts/ID/cancel|resume` from the page's buttons.
pub async fn page_act(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<(i64, String)>, PathRejection>,
    form: FormFields,
) -> Response {
    let caller = match page::form_caller(&state, &headers, peer, &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(command) = path.ok().and_then(|Path((id, name))| action(&name, id)) else {
        return page::not_found().await;
    };
    let (status, reply) = api::perform(&state, &caller, command).await;
    let line = reply.public.first().cloned().unwrap_or_default();
    rollouts_page(&state, &caller, Some((&line, status.is_success())), status).await
}

/// The run page's button: promote the run's host to the environment after the run's, when
/// the run succeeded there.
pub fn promote_html(state: &State, caller: &Caller, run: &Run) -> String {
    if run.state != RunState::Succeeded || !page::can(state, caller, Role::Deployer) {
        return String::new();
    }
    let environments = &state.app.settings().environments;
    let Some(next) = run.environment.as_deref().and_then(|env| {
        let i = environments.order.iter().position(|e| e.name == env)?;
        environments.order.get(i + 1)
    }) else {
        return String::new();
    };
    format!(
        "<form method=\"post\" action=\"/runs/{}/promote/{}\" class=\"inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" id=\"promote-button\">Promote {} to {}</button></form>",
        run.id,
        esc(&next.name),
        esc(caller.csrf()),
        esc(&run.host),
        esc(&next.name)
    )
}

/// `POST /runs/ID/promote/ENV` from that button: to the new run's page when it was queued.
pub async fn page_promote(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<(i64, String)>, PathRejection>,
    form: FormFields,
) -> Response {
    let caller = match page::form_caller(&state, &headers, peer, &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(Path((id, environment))) = path else {
        return page::not_found().await;
    };
    let run = match state.app.engine().store().run(id).await {
        Ok(Some(run)) => run,
        Ok(None) => return page::not_found().await,
        Err(e) => return page::refusal_page(Some(&caller), failed(e)),
    };
    let command = match api::parse(&format!("promote {} to {environment}", run.host)) {
        Ok(c) => c,
        Err(_) => return page::not_found().await,
    };
    let (status, reply) = api::perform(&state, &caller, command).await;
    if let (Some(new), true) = (reply.run, status.is_success()) {
        return Redirect::to(&format!("/runs/{new}")).into_response();
    }
    let line = reply.public.first().cloned().unwrap_or_default();
    page::run_page(&state, &caller, id, Some((&line, false)), status).await
}
