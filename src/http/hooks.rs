//! Webhooks at `POST /hooks/NAME`, and what the API and the page show of schedules and
//! named actions. A delivery is judged by `triggers::webhook` (signature, event, delivery
//! id, payload; pure); each matching trigger's command goes through the bot as the hook's
//! person, exactly like a chat line. A delivery seen before (by its id, by the digest of
//! its signature and body, or by GitLab's `Idempotency-Key`), a body over the hook's
//! limit, a bad signature or an event no trigger can match queue nothing.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth;
use super::schema::{ActionBody, ActionDone, CatchUpBody, ErrorBody, ScheduleBody, ScheduleList};
use super::{Shared, State, esc};
use crate::chat::bot::{Trigger, Verdict};
use crate::chat::command::Command;
use crate::chat::roles::Role;
use crate::triggers::config::{CatchUp, HookConfig};
use crate::triggers::webhook::{self, Delivery, Headers};

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn refusal(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    answer(status, json!({ "error": message }))
}

struct RequestHeaders<'a>(&'a HeaderMap);

impl Headers for RequestHeaders<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `POST /hooks/NAME`.
pub async fn deliver(
    AxumState(state): AxumState<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(Path(name)) = path else {
        return refusal(404, "no such hook");
    };
    let Some(hook) = state.app.settings().hooks.get(&name) else {
        return refusal(
            404,
            &format!(
                "no hook '{}' is configured",
                crate::text::one_line(&name, 40)
            ),
        );
    };
    let too_big = || {
        refusal(
            413,
            &format!(
                "the delivery is larger than this hook's max_body ({} bytes)",
                hook.max_body
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > hook.max_body) {
        return too_big();
    }
    let Ok(body) = axum::body::to_bytes(body, hook.max_body).await else {
        return too_big();
    };
    handle(&state, &name, hook, &headers, &body).await
}

async fn handle(
    state: &State,
    name: &str,
    hook: &HookConfig,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let h = RequestHeaders(headers);
    if let Err(r) = webhook::verify(hook.forge, hook.secret.expose().as_bytes(), &h, body) {
        tracing::info!(hook = name, reason = %r.message, "webhook refused");
        return refusal(r.status, &r.message);
    }
    let delivery = match webhook::read(hook.forge, &h, body) {
        Ok(Delivery::Ping) => {
            return answer(StatusCode::OK, json!({ "message": "pong", "queued": [] }));
        }
        Ok(Delivery::Ignored(why)) => {
            return answer(
                StatusCode::OK,
                json!({ "message": format!("nothing to do: {why}"), "queued": [] }),
            );
        }
        Ok(Delivery::Event(e)) => e,
        Err(r) => return refusal(r.status, &r.message),
    };
    let keys = match webhook::delivery_keys(hook.forge, &h, body) {
        Ok(keys) => keys,
        Err(r) => return refusal(r.status, &r.message),
    };
    let id = keys.id.clone();
    // A repeat of the id, of the signed body, or of GitLab's Idempotency-Key is the
    // delivery handled before, answered alike.
    match state
        .app
        .engine()
        .store()
        .first_delivery_of(name, &keys)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return answer(
                StatusCode::OK,
                json!({ "message": format!("delivery {id} was handled before; nothing queued"), "queued": [] }),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "webhook: the database failed");
            return refusal(503, "the database did not answer; see jarvis's log");
        }
    }
    let source = format!("hook.{name}");
    let target = crate::triggers::announce_target(hook.announce.as_deref(), &source);
    let trigger = Trigger {
        by: delivery.event.as_str().to_string(),
        repository: Some(delivery.repository.clone()),
        reference: Some(delivery.git_ref.clone()),
        commit: delivery.commit.clone(),
    };
    let mut queued = Vec::new();
    let mut refused = Vec::new();
    for t in hook
        .triggers
        .iter()
        .filter(|t| webhook::matches(t, &delivery))
    {
        // Checked at start (check-config); a refusal here would be a bug, told as one.
        let cmd = match crate::triggers::command_for(
            &t.run,
            t.environment.as_deref(),
            &state.app.settings().environments,
        ) {
            Ok(cmd) => cmd,
            Err(e) => {
                refused.push(json!({ "run": t.run, "error": e }));
                continue;
            }
        };
        let reply = crate::triggers::fire(
            state.app.bot(),
            &source,
            &hook.person,
            &target,
            &cmd,
            &t.run,
            &trigger,
        )
        .await;
        let message = reply.public.first().cloned().unwrap_or_default();
        match (reply.verdict, reply.run) {
            (Verdict::Done, Some(run)) => queued.push(json!({ "run": run, "message": message })),
            // A group's command starts a rollout, which queues its runs batch by batch.
            (Verdict::Done, None) => queued.push(json!({ "message": message })),
            _ => refused.push(json!({ "run": t.run, "error": message })),
        }
    }
    tracing::info!(
        hook = name,
        delivery = %id,
        repository = %delivery.repository,
        git_ref = %delivery.git_ref,
        queued = queued.len(),
        refused = refused.len(),
        "webhook delivery"
    );
    let message = match (queued.len(), refused.len()) {
        (0, 0) => format!(
            "no trigger matches {} of {} {}",
            delivery.event.as_str(),
            delivery.repository,
            delivery.name
        ),
        (n, 0) => format!("queued {}", crate::chat::render::count(n, "run")),
        (n, m) => format!(
            "queued {}; {} queued nothing",
            crate::chat::render::count(n, "run"),
            crate::chat::render::count(m, "trigger")
        ),
    };
    let status = if queued.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    answer(
        status,
        json!({ "message": message, "queued": queued, "refused": refused }),
    )
}

/// The configured schedules with their next and last firing, as stored.
async fn schedule_list(state: &State) -> Result<Vec<ScheduleBody>, Response> {
    let rows = state.app.engine().store().schedules().await.map_err(|e| {
        tracing::error!(error = %e, "schedules: the database failed");
        refusal(503, "the database did not answer; see jarvis's log")
    })?;
    Ok(state
        .app
        .settings()
        .schedules
        .iter()
        .map(|(name, s)| {
            let row = rows.iter().find(|r| &r.name == name);
            ScheduleBody {
                name: name.clone(),
                cron: s.cron.clone(),
                timezone: s.timezone.clone(),
                run: s.run.clone(),
                catch_up: match s.catch_up {
                    CatchUp::Once => CatchUpBody::Once,
                    CatchUp::None => CatchUpBody::None,
                },
                next_at: row.map(|r| r.next_at),
                last_at: row.and_then(|r| r.last_at),
                last_outcome: row.and_then(|r| r.last_outcome.clone()),
            }
        })
        .collect())
}

/// The configured schedules with their next and last firing, as chat's `schedules`.
#[utoipa::path(get, path = "/schedules", tag = "triggers",
    responses(
        (status = 200, description = "The schedules", body = ScheduleList),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the viewer role", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ))]
pub async fn schedules(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> Response {
    let caller = match auth::caller(&state, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return answer(r.status, json!({ "error": r.message })),
    };
    if let Err(r) = auth::require(&state, &caller, Role::Viewer, "schedules") {
        return answer(r.status, json!({ "error": r.message }));
    }
    match schedule_list(&state).await {
        Ok(schedules) => (StatusCode::OK, Json(ScheduleList { schedules })).into_response(),
        Err(r) => r,
    }
}

/// Run a named action on a host, as chat's `run NAME on HOST`: the caller needs the
/// action's role or a grant of that action. Answers when the run has ended, with the last
/// lines of its output.
#[utoipa::path(post, path = "/actions/{name}", tag = "triggers", request_body = ActionBody,
    params(("name" = String, Path, description = "The action, as configured under `actions`")),
    responses(
        (status = 200, description = "The action ran: its run and the last lines of its output", body = ActionDone),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the role or grant, or the CSRF token is missing", body = ErrorBody),
        (status = 404, description = "No such action or host", body = ErrorBody),
        (status = 409, description = "The host has a run already (its id given)", body = ErrorBody),
        (status = 422, description = "A body the API does not take", body = ErrorBody),
        (status = 503, description = "The database did not answer, or the run failed", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub async fn run_action(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let caller = match auth::caller(&state, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return answer(r.status, json!({ "error": r.message })),
    };
    if caller.anonymous() {
        return refusal(
            401,
            "running an action needs a login: send Authorization: Bearer TOKEN",
        );
    }
    if let Err(r) = auth::check_csrf(
        &caller,
        headers.get("x-csrf-token").and_then(|v| v.to_str().ok()),
    ) {
        return answer(r.status, json!({ "error": r.message }));
    }
    let Ok(Path(action)) = path else {
        return refusal(404, "an action is POST /api/v1/actions/NAME");
    };
    let host = body
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("host").and_then(Value::as_str).map(str::to_string));
    let Some(host) = host else {
        return refusal(422, "give the host as JSON, as in {\"host\": \"web1\"}");
    };
    let line = format!("run {action} on {host}");
    let cmd = match crate::chat::command::parse(&line) {
        Ok(cmd @ Command::Run { .. }) => cmd,
        Ok(_) => return refusal(422, "that is no action"),
        Err(e) => return refusal(422, &e.to_string()),
    };
    let msg = super::incoming(
        caller.identities.clone(),
        &caller.name,
        &caller.client,
        line.clone(),
    );
    let reply = state.app.bot().perform(&msg, &cmd, &line).await;
    let status = match reply.verdict {
        Verdict::Done => StatusCode::OK,
        Verdict::Forbidden => StatusCode::FORBIDDEN,
        Verdict::NotFound => StatusCode::NOT_FOUND,
        Verdict::Conflict => StatusCode::CONFLICT,
        Verdict::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        Verdict::Unavailable | Verdict::Failed => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut lines = reply.public.clone();
    let first = if lines.is_empty() {
        String::new()
    } else {
        lines.remove(0)
    };
    if status.is_success() {
        let done = ActionDone {
            message: first,
            run: reply.run,
            lines,
        };
        (status, Json(done)).into_response()
    } else {
        let error = ErrorBody {
            error: first,
            run: reply.run,
        };
        (status, Json(error)).into_response()
    }
}

/// `GET /schedules`: the page of schedules and actions.
pub async fn page(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> Response {
    let caller = match super::page::viewer(&state, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let list = match schedule_list(&state).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let when = |at: Option<i64>| {
        at.map(crate::chat::render::utc_time)
            .unwrap_or_else(|| "—".into())
    };
    let mut body = String::from("<h1>Schedules</h1>");
    if list.is_empty() {
        body.push_str("<p>No schedules are configured.</p>");
    } else {
        body.push_str(
            "<table id=\"schedules\"><thead><tr><th>Name</th><th>When</th><th>Runs</th>\
             <th>Next</th><th>Last</th></tr></thead><tbody>",
        );
        for s in &list {
            let last = match &s.last_outcome {
                Some(o) => format!("{} ({})", when(s.last_at), o),
                None => when(s.last_at),
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code> {}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&s.name),
                esc(&s.cron),
                esc(&s.timezone),
                esc(&s.run),
                esc(&when(s.next_at)),
                esc(&last)
            ));
        }
        body.push_str("</tbody></table>");
    }
    let actions = &state.app.settings().actions;
    if !actions.is_empty() {
        body.push_str("<h2>Actions</h2><ul id=\"actions\">");
        for (name, a) in actions {
            body.push_str(&format!(
                "<li><code>run {} on HOST</code> — {} (role {})</li>",
                esc(name),
                esc(a.description.as_deref().unwrap_or("")),
                a.role().as_str()
            ));
        }
        body.push_str("</ul>");
    }
    super::page::page(
        StatusCode::OK,
        super::page::layout("Schedules", Some(&caller), &body),
    )
}
