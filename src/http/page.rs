//! The web page: server-rendered HTML, no build step. A little script (`/assets/app.js`)
//! refreshes the live part of a page when the event stream says something happened (and
//! every 1.5 s while a run is active, since not every stage start is an event); without
//! script the page is plain links and forms. Login with a personal token gives a session
//! cookie (HttpOnly, SameSite=Strict, Secure under TLS); every form carries the session's
//! CSRF token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Form, Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::auth::{self, Caller, LOGIN_COOKIE, Refusal, SESSION_COOKIE, Via};
use super::{Shared, State, esc};
use crate::chat::command::Command;
use crate::chat::render;
use crate::chat::roles::{Identity, Role};
use crate::store::{Run, RunFilter, RunState, StageTiming};

const SCRIPT: &str = include_str!("assets/app.js");

/// Every kind of stored event, which a live page's script listens to by name: the stream
/// names each event by its kind (`event: run_started`), and a browser's EventSource hands a
/// named event only to a listener of that name, never to `onmessage`.
const EVENT_KINDS: &[&str] = {
    use crate::engine::events::kind::*;
    &[
        RUN_STARTED,
        STAGE_STARTED,
        NOTICE,
        APPROVAL_NEEDED,
        SUCCEEDED,
        FAILED,
        UNDO_STAGE_FAILED,
        UNDONE,
        INTERRUPTED,
        RERUN_AFTER_RESTART,
        CANCELLED,
        TRIGGERED,
        ROLLOUT_STOPPED,
        ROLLOUT_FINISHED,
    ]
};
const STYLE: &str = include_str!("assets/app.css");

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// A whole page around `body`.
pub(super) fn layout(title: &str, caller: Option<&Caller>, body: &str) -> String {
    let who = match caller {
        Some(c) if !c.anonymous() => format!(
            "<span>logged in as <strong>{}</strong></span>\
             <form method=\"post\" action=\"/logout\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Log out</button></form>",
            esc(&c.name),
            esc(c.csrf())
        ),
        _ => "<a href=\"/login\">Log in</a>".to_string(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} — jarvis</title><link rel=\"stylesheet\" href=\"/assets/app.css\">\
         <script src=\"/assets/app.js\" defer></script></head><body>\
         <header><nav aria-label=\"main\"><a href=\"/\" class=\"brand\">jarvis</a> \
         <a href=\"/\">Runs</a> <a href=\"/rollouts\">Rollouts</a> <a href=\"/pipelines\">Pipelines</a> <a href=\"/schedules\">Schedules</a></nav><div class=\"who\">{who}</div></header>\
         <main>{body}</main></body></html>",
        esc(title)
    )
}

pub(super) fn page(status: StatusCode, html: String) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

pub(super) fn refusal_page(caller: Option<&Caller>, r: Refusal) -> Response {
    let body = format!(
        "<h1>Not possible</h1><p class=\"failure\" role=\"alert\">{}</p><p><a href=\"/\">Back to the runs</a></p>",
        esc(&r.message)
    );
    page(r.status, layout("Not possible", caller, &body))
}

pub async fn not_found() -> Response {
    refusal_page(
        None,
        Refusal::new(StatusCode::NOT_FOUND, "there is no such page"),
    )
}

/// A page's 405: a form or link used with the wrong method.
pub(super) fn method_not_allowed(method: &str, path: &str, allow: Option<&str>) -> Response {
    refusal_page(
        None,
        Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            super::api::not_allowed_text(method, path, allow),
        ),
    )
}

/// The caller, who must be able to view; the anonymous are sent to log in.
pub(super) async fn viewer(
    state: &State,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Caller, Response> {
    let caller = auth::caller(state, headers, peer)
        .await
        .map_err(|r| refusal_page(None, r))?;
    match auth::require(state, &caller, Role::Viewer, "reading runs") {
        Ok(()) => Ok(caller),
        Err(_) if caller.anonymous() => Err(Redirect::to("/login").into_response()),
        Err(r) => Err(refusal_page(Some(&caller), r)),
    }
}

pub(super) fn can(state: &State, caller: &Caller, role: Role) -> bool {
    auth::roles_of(state, caller).iter().any(|r| r.covers(role))
}

pub async fn index(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> Response {
    let caller = match viewer(&state, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    index_page(&state, &caller, None, StatusCode::OK).await
}

async fn index_page(
    state: &State,
    caller: &Caller,
    message: Option<&str>,
    status: StatusCode,
) -> Response {
    let runs = match runs_html(state).await {
        Ok(h) => h,
        Err(r) => return refusal_page(Some(caller), r),
    };
    let message = message
        .map(|m| format!("<p class=\"failure\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    let deploy = if can(state, caller, Role::Deployer) && !caller.anonymous() {
        format!(
            "<form method=\"post\" action=\"/deploy\" class=\"deploy\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label for=\"design\">Design</label> \
             <input id=\"design\" name=\"design\" required maxlength=\"400\" \
             placeholder=\"demo, cn=loki or a gist URL\" autocomplete=\"off\"> \
             <button type=\"submit\" id=\"deploy-button\">Deploy</button> \
             <button type=\"submit\" formaction=\"/plan\" id=\"plan-button\">Plan first</button></form>",
            esc(caller.csrf())
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Runs</h1>{message}{deploy}\
         <p id=\"announce\" class=\"visually-hidden\" role=\"status\"></p>\
         <section id=\"live\" data-live=\"/parts/runs\" data-events=\"{events}\">{runs}</section>",
        events = EVENT_KINDS.join(" "),
    );
    page(status, layout("Runs", Some(caller), &body))
}

async fn runs_html(state: &State) -> Result<String, Refusal> {
    let runs = state
        .app
        .engine()
        .store()
        .runs_filtered(&RunFilter {
            limit: 50,
            ..RunFilter::default()
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "page: the database failed");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database did not answer; see jarvis's log",
            )
        })?;
    if runs.is_empty() {
        return Ok("<p data-active=\"0\">No runs yet.</p>".into());
    }
    let active = runs.iter().any(|r| r.state.is_active());
    let mut html = format!(
        "<table data-active=\"{}\"><caption>The last {} runs, newest first</caption>\
         <thead><tr><th scope=\"col\">Run</th><th scope=\"col\">Host</th>\
         <th scope=\"col\">State</th><th scope=\"col\">Status</th>\
         <th scope=\"col\">Asked</th></tr></thead><tbody>",
        u8::from(active),
        runs.len()
    );
    for run in &runs {
        let live = state.app.engine().live(run.id);
        let status = render::status_line(run, live.as_ref().and_then(|l| l.progress.as_deref()));
        html.push_str(&format!(
            "<tr id=\"run-{id}\" class=\"st-{state}\"><td><a href=\"/runs/{id}\">#{id}</a> {kind}</td>\
             <td><a href=\"/hosts/{host}\">{host}</a></td><td class=\"state\">{state_text}</td>\
             <td>{status}</td><td>{when}</td></tr>",
            when = time_html(run.created_at),
            state = run.state.as_str(),
            state_text = run.state.as_str().replace('_', " "),
            id = run.id,
            kind = esc(run.kind.as_str()),
            host = esc(&run.host),
            status = esc(&status),
        ));
    }
    html.push_str("</tbody></table>");
    Ok(html)
}

/// How many of a host's runs its page shows and charts.
const HOST_RUNS: usize = 50;

/// A host's history: its success rate, the trend of its runs' durations as a small chart,
/// and its runs.
pub async fn host(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let caller = match viewer(&state, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(Path(host)) = path else {
        return not_found().await;
    };
    let runs = match state
        .app
        .engine()
        .store()
        .runs_filtered(&RunFilter {
            host: Some(host.clone()),
            limit: HOST_RUNS,
            ..RunFilter::default()
        })
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "page: the database failed");
            return refusal_page(
                Some(&caller),
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database did not answer; see jarvis's log",
                ),
            );
        }
    };
    if runs.is_empty() {
        return refusal_page(
            Some(&caller),
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("{} has no runs", crate::text::one_line(&host, 80)),
            ),
        );
    }
    let finished: Vec<&Run> = runs.iter().filter(|r| r.finished_at.is_some()).collect();
    let good = finished
        .iter()
        .filter(|r| r.state == RunState::Succeeded)
        .count();
    let rate = if finished.is_empty() {
        "no finished runs yet".to_string()
    } else {
        format!(
            "{}% of the last {} finished runs succeeded ({good} of {})",
            good * 100 / finished.len(),
            finished.len(),
            finished.len()
        )
    };
    // Oldest first, as the chart reads from left to right.
    let points: Vec<(i64, f64, bool)> = finished
        .iter()
        .rev()
        .map(|r| {
            (
                r.id,
                crate::engine::run_duration(r) as f64 / 1000.0,
                r.state == RunState::Succeeded,
            )
        })
        .collect();
    let mut rows = String::new();
    for run in &runs {
        rows.push_str(&format!(
            "<tr class=\"st-{state}\"><td><a href=\"/runs/{id}\">#{id}</a> {kind}</td>\
             <td class=\"state\">{state_text}</td><td>{took}</td><td>{by}</td><td>{when}</td></tr>",
            when = time_html(run.created_at),
            state = run.state.as_str(),
            state_text = run.state.as_str().replace('_', " "),
            id = run.id,
            kind = esc(run.kind.as_str()),
            took = if run.finished_at.is_some() {
                seconds(crate::engine::run_duration(run) as i64 * 1000)
            } else {
                "—".into()
            },
            by = esc(render::requester_display(&run.requester)),
        ));
    }
    let record = match state.app.engine().store().host(&host).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "page: the database failed");
            None
        }
    };
    let record = super::hosts::record_html(&state, record.as_ref());
    let body = format!(
        "<h1>Host {h}</h1>{record}<p class=\"rate\" id=\"rate\">{rate}</p>{chart}\
         <table><caption>The last {n} runs of {h}, newest first</caption><thead><tr>\
         <th scope=\"col\">Run</th><th scope=\"col\">State</th><th scope=\"col\">Took</th>\
         <th scope=\"col\">Asked by</th><th scope=\"col\">Asked</th></tr></thead>\
         <tbody>{rows}</tbody></table>",
        h = esc(&host),
        n = runs.len(),
        chart = duration_chart(&points),
    );
    page(
        StatusCode::OK,
        layout(&format!("Host {host}"), Some(&caller), &body),
    )
}

/// Runs' durations as a small bar chart, oldest on the left: an inline SVG, labelled for
/// screen readers, failed runs marked by their colour and their title.
fn duration_chart(points: &[(i64, f64, bool)]) -> String {
    if points.is_empty() {
        return String::new();
    }
    let (w, h) = (300.0, 60.0);
    let most = points
        .iter()
        .map(|p| p.1)
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let step = w / points.len() as f64;
    let bar = (step * 0.8).max(1.0);
    let mut bars = String::new();
    for (i, (id, secs, ok)) in points.iter().enumerate() {
        let height = (secs / most * (h - 2.0)).max(1.0);
        bars.push_str(&format!(
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" \
             height=\"{height:.1}\"><title>#{id}: {secs:.1}s{failed}</title></rect>",
            class = if *ok { "ok" } else { "bad" },
            x = i as f64 * step,
            y = h - height,
            failed = if *ok { "" } else { ", failed" },
        ));
    }
    let last = points.last().map(|p| p.1).unwrap_or(0.0);
    let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
    format!(
        "<figure class=\"trend\"><svg id=\"trend\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-labelledby=\"trend-title\" preserveAspectRatio=\"none\">\
         <title id=\"trend-title\">Durations of the last {n} finished runs, oldest first: \
         longest {most:.1}s, average {mean:.1}s, last {last:.1}s</title>{bars}</svg>\
         <figcaption>Duration of each finished run, oldest on the left (longest {most:.1}s)\
         </figcaption></figure>",
        n = points.len(),
    )
}

/// The configured pipelines: what each serves and its stages.
pub async fn pipelines(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> Response {
    let caller = match viewer(&state, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut html = String::from("<h1>Pipelines</h1>");
    for (name, p) in state.app.settings().pipelines.iter() {
        let stages: String = p
            .stages
            .iter()
            .map(|s| {
                let gate = if s.approval || s.approval_if.is_some() {
                    " <span class=\"gate\">(may wait for approval)</span>"
                } else {
                    ""
                };
                format!("<li><code>{}</code>{gate}</li>", esc(&s.task))
            })
            .collect();
        let undo = if p.on_failure.is_empty() {
            String::new()
        } else {
            let tasks: Vec<String> = p
                .on_failure
                .iter()
                .map(|s| format!("<code>{}</code>", esc(&s.task)))
                .collect();
            format!("<p>On failure: {}</p>", tasks.join(", "))
        };
        html.push_str(&format!(
            "<section class=\"pipeline\" aria-labelledby=\"p-{id}\"><h2 id=\"p-{id}\">{n}</h2>\
             <p class=\"meta\">{command} for providers {providers}{description}</p>\
             <ol class=\"tasks\">{stages}</ol>{undo}</section>",
            id = esc(&name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
            n = esc(name),
            command = esc(p.command.as_str()),
            providers = esc(&if p.providers.is_empty() {
                "(named by designs)".to_string()
            } else {
                p.providers.join(", ")
            }),
            description = p
                .description
                .as_deref()
                .map(|d| format!(" — {}", esc(d)))
                .unwrap_or_default(),
        ));
    }
    page(StatusCode::OK, layout("Pipelines", Some(&caller), &html))
}

pub async fn runs_part(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = viewer(&state, &headers, peer).await {
        return r;
    }
    match runs_html(&state).await {
        Ok(h) => page(StatusCode::OK, h),
        Err(r) => page(r.status, esc(&r.message)),
    }
}

fn no_run_page() -> Response {
    refusal_page(
        None,
        Refusal::new(StatusCode::NOT_FOUND, "a run is /runs/ and a number"),
    )
}

pub async fn run(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<i64>, PathRejection>,
) -> Response {
    let caller = match viewer(&state, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(Path(id)) = path else {
        return no_run_page();
    };
    let flash = auth::cookie(&headers, FLASH_COOKIE).and_then(|v| read_flash(&v));
    let mut response = run_page(
        &state,
        &caller,
        id,
        flash.as_ref().map(|(m, ok)| (m.as_str(), *ok)),
        StatusCode::OK,
    )
    .await;
    if flash.is_some()
        && let Ok(v) = HeaderValue::from_str(&auth::set_cookie(
            FLASH_COOKIE,
            "",
            Duration::ZERO,
            state.secure,
        ))
    {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// The cookie that carries a run action's outcome to the page the action redirects to.
const FLASH_COOKIE: &str = "jarvis_flash";

/// `1` or `0` (done or refused) and the message, base64url: a cookie value.
fn write_flash(message: &str, ok: bool) -> String {
    use base64::Engine as _;
    let message = crate::text::one_line(message, 140);
    let flag = if ok { '1' } else { '0' };
    format!(
        "{flag}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(message.as_bytes())
    )
}

fn read_flash(value: &str) -> Option<(String, bool)> {
    use base64::Engine as _;
    let ok = match value.get(..1)? {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.get(1..)?)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    Some((crate::text::one_line(&text, 140), ok))
}

pub(super) async fn run_page(
    state: &State,
    caller: &Caller,
    id: i64,
    message: Option<(&str, bool)>,
    status: StatusCode,
) -> Response {
    let part = match run_html(state, caller, id).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            return refusal_page(
                Some(caller),
                Refusal::new(StatusCode::NOT_FOUND, format!("there is no run #{id}")),
            );
        }
        Err(r) => return refusal_page(Some(caller), r),
    };
    let message = match message {
        Some((m, true)) => format!("<p class=\"notice\" role=\"status\">{}</p>", esc(m)),
        Some((m, false)) => format!("<p class=\"failure\" role=\"alert\">{}</p>", esc(m)),
        None => String::new(),
    };
    let body = format!(
        "<h1>Run #{id}</h1>{message}<section id=\"live\" data-live=\"/parts/runs/{id}\" \
         data-run=\"{id}\" data-events=\"{events}\">{part}</section>",
        events = EVENT_KINDS.join(" "),
    );
    page(status, layout(&format!("Run #{id}"), Some(caller), &body))
}

/// A moment as the page shows it: UTC text, which reads without script, in a `<time>` whose
/// `datetime` the script turns into the viewer's own zone and "3 min ago".
pub(super) fn time_html(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => format!(
            "<time datetime=\"{}\">{}</time>",
            t.format("%Y-%m-%dT%H:%M:%SZ"),
            t.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => "—".into(),
    }
}

fn seconds(us: i64) -> String {
    let s = us.max(0) as f64 / 1e6;
    if s < 10.0 {
        format!("{s:.1}s")
    } else {
        humantime::format_duration(Duration::from_secs(s as u64)).to_string()
    }
}

async fn run_html(state: &State, caller: &Caller, id: i64) -> Result<Option<String>, Refusal> {
    let store = state.app.engine().store();
    let fail = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "page: the database failed");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database did not answer; see jarvis's log",
        )
    };
    let Some(run) = store.run(id).await.map_err(fail)? else {
        return Ok(None);
    };
    let timings = store.stage_timings(id).await.map_err(fail)?;
    let log = store.log_tail(id, 50).await.map_err(fail)?;
    let live = state.app.engine().live(run.id);
    let status = render::status_line(&run, live.as_ref().and_then(|l| l.progress.as_deref()));
    let mut html = format!(
        "<div data-active=\"{}\" class=\"run st-{}\"><p class=\"status\" id=\"status\" role=\"status\">{}</p>\
         <p class=\"meta\">{} pipeline · design {} · asked by {}</p>",
        u8::from(run.state.is_active()),
        run.state.as_str(),
        esc(&status),
        esc(&run.pipeline),
        esc(&run.design_ref),
        esc(render::requester_display(&run.requester)),
    );
    let mut times = vec![format!("asked {}", time_html(run.created_at))];
    if let Some(at) = run.started_at {
        times.push(format!("started {}", time_html(at)));
    }
    if let Some(at) = run.finished_at {
        times.push(format!("finished {}", time_html(at)));
    }
    html.push_str(&format!(
        "<p class=\"meta\" id=\"times\">{}</p>",
        times.join(" · ")
    ));
    // What started a run a webhook or schedule queued: "by push of acme/site main @ 3f2a1c0".
    if let Some(t) = run
        .initial_clipboard
        .get("jarvis")
        .and_then(|j| j.get("trigger"))
    {
        let field = |k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let mut line = format!("by {}", field("by"));
        if !field("repository").is_empty() {
            line.push_str(&format!(" of {}", field("repository")));
        }
        if !field("ref").is_empty() {
            line.push_str(&format!(" {}", field("ref")));
        }
        if !field("commit").is_empty() {
            line.push_str(&format!(
                " @ {}",
                field("commit").chars().take(12).collect::<String>()
            ));
        }
        html.push_str(&format!(
            "<p class=\"meta\" id=\"trigger\">{}</p>",
            esc(&line)
        ));
    }
    if run.state == RunState::Failed {
        let stage = run.failed_stage.map(|s| s + 1).unwrap_or(0);
        let task = run
            .failed_stage
            .and_then(|s| run.stages.get(s))
            .map(|s| s.task.as_str())
            .unwrap_or("");
        html.push_str(&format!(
            "<p class=\"failure\" role=\"alert\" id=\"failure\">Failed at stage {stage}/{} {}: {}</p>",
            run.stages.len(),
            esc(task),
            esc(run.error.as_deref().unwrap_or("no reason given"))
        ));
    }
    html.push_str(&stages_html(&run, &timings, "main"));
    if timings.iter().any(|t| t.phase != "main") {
        html.push_str("<h2>Undo</h2>");
        html.push_str(&stages_html(&run, &timings, "on_failure"));
    }
    html.push_str(&actions_html(state, caller, &run));
    html.push_str("<h2>Log</h2><pre class=\"log\" id=\"log\">");
    if log.is_empty() {
        html.push_str("(no log lines yet)");
    }
    for (stage, line) in &log {
        match stage {
            Some(s) => html.push_str(&format!("[{s}] {}\n", esc(line))),
            None => html.push_str(&format!("{}\n", esc(line))),
        }
    }
    html.push_str("</pre></div>");
    Ok(Some(html))
}

fn stages_html(run: &Run, timings: &[StageTiming], phase: &str) -> String {
    let stages = if phase == "main" {
        &run.stages
    } else {
        &run.on_failure
    };
    let durations: Vec<i64> = (0..stages.len())
        .map(|i| {
            timings
                .iter()
                .filter(|t| t.phase == phase && t.stage == i)
                .map(|t| {
                    let end = t.finished_us.unwrap_or_else(crate::store::now_us);
                    end - t.started_us.unwrap_or(end)
                })
                .sum()
        })
        .collect();
    let longest = durations.iter().copied().max().unwrap_or(0).max(1);
    let mut html = String::from("<ol class=\"stages\">");
    for (i, stage) in stages.iter().enumerate() {
        let attempts: Vec<&StageTiming> = timings
            .iter()
            .filter(|t| t.phase == phase && t.stage == i)
            .collect();
        let state = attempts
            .last()
            .map(|t| t.state.as_str())
            .unwrap_or("pending");
        let tries = if attempts.len() > 1 {
            format!(" ({} attempts)", attempts.len())
        } else {
            String::new()
        };
        let error = attempts
            .last()
            .and_then(|t| t.error.as_deref())
            .map(|e| format!("<div class=\"reason\">{}</div>", esc(e)))
            .unwrap_or_default();
        let took = if attempts.is_empty() {
            String::new()
        } else {
            seconds(durations[i])
        };
        html.push_str(&format!(
            "<li id=\"stage-{phase}-{n}\" class=\"stage st-{state}\" data-state=\"{state}\"><span class=\"task\">{n} {}</span> \
             <span class=\"state\">{}{tries}</span> <span class=\"took\">{took}</span> \
             <meter min=\"0\" max=\"{longest}\" value=\"{}\" aria-label=\"duration of stage {n}\"></meter>{error}</li>",
            esc(&stage.task),
            state.replace('_', " "),
            durations[i],
            n = i + 1,
        ));
    }
    html.push_str("</ol>");
    html
}

fn actions_html(state: &State, caller: &Caller, run: &Run) -> String {
    if caller.anonymous() {
        return String::new();
    }
    let mut actions: Vec<&str> = Vec::new();
    if run.state == RunState::WaitingApproval && can(state, caller, Role::Approver) {
        actions.push("approve");
    }
    if can(state, caller, Role::Deployer) {
        if run.state.is_active() {
            actions.push("cancel");
        }
        if matches!(run.state, RunState::Failed | RunState::Interrupted) {
            actions.push("resume");
        }
        if !run.state.is_active() {
            actions.push("retry");
        }
    }
    let mut html = String::from("<div class=\"actions\">");
    html.push_str(&super::rollouts::promote_html(state, caller, run));
    for a in actions {
        html.push_str(&format!(
            "<form method=\"post\" action=\"/runs/{}/{a}\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" id=\"{a}-button\">{}</button></form>",
            run.id,
            esc(caller.csrf()),
            capitalise(a)
        ));
    }
    html.push_str("</div>");
    html
}

fn capitalise(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

pub async fn run_part(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<i64>, PathRejection>,
) -> Response {
    let caller = match viewer(&state, &headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(Path(id)) = path else {
        return no_run_page();
    };
    match run_html(&state, &caller, id).await {
        Ok(Some(h)) => page(StatusCode::OK, h),
        Ok(None) => page(StatusCode::NOT_FOUND, format!("there is no run #{id}")),
        Err(r) => page(r.status, esc(&r.message)),
    }
}

pub(super) type FormFields = Result<Form<HashMap<String, String>>, FormRejection>;

/// The logged-in caller of a form, with its CSRF token checked.
pub(super) async fn form_caller(
    state: &State,
    headers: &HeaderMap,
    peer: SocketAddr,
    form: &FormFields,
) -> Result<Caller, Response> {
    let caller = auth::caller(state, headers, peer)
        .await
        .map_err(|r| refusal_page(None, r))?;
    if caller.anonymous() {
        return Err(Redirect::to("/login").into_response());
    }
    let given = form
        .as_ref()
        .ok()
        .and_then(|Form(f)| f.get("csrf"))
        .map(String::as_str);
    auth::check_csrf(&caller, given).map_err(|r| refusal_page(Some(&caller), r))?;
    Ok(caller)
}

pub async fn deploy(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let caller = match form_caller(&state, &headers, peer, &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let design = form
        .as_ref()
        .ok()
        .and_then(|Form(f)| f.get("design"))
        .map(|d| d.trim().to_string())
        .unwrap_or_default();
    if design.is_empty() || design.split_whitespace().count() != 1 {
        return index_page(
            &state,
            &caller,
            Some("give one design reference, e.g. demo"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let command = match crate::chat::command::parse(&format!("deploy {design}")) {
        Ok(c) => c,
        Err(e) => {
            return index_page(
                &state,
                &caller,
                Some(&e.to_string()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let (status, reply) = super::api::perform(&state, &caller, command).await;
    match (reply.run, status.is_success()) {
        (Some(id), true) => Redirect::to(&format!("/runs/{id}")).into_response(),
        _ => {
            let line = reply.public.first().cloned().unwrap_or_default();
            index_page(&state, &caller, Some(&line), status).await
        }
    }
}

/// `plan REF` as the bot says it, then the button that deploys it.
pub async fn plan(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let caller = match form_caller(&state, &headers, peer, &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let design = form
        .as_ref()
        .ok()
        .and_then(|Form(f)| f.get("design"))
        .map(|d| d.trim().to_string())
        .unwrap_or_default();
    let command = match crate::chat::command::parse(&format!("plan {design}")) {
        Ok(c @ Command::Plan { .. }) => c,
        Ok(_) | Err(_) => {
            return index_page(
                &state,
                &caller,
                Some("give one design reference, e.g. demo"),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let (status, reply) = super::api::perform(&state, &caller, command).await;
    if !status.is_success() {
        let line = reply.public.first().cloned().unwrap_or_default();
        return index_page(&state, &caller, Some(&line), status).await;
    }
    let lines: String = reply
        .public
        .iter()
        .map(|l| format!("<li>{}</li>", esc(l)))
        .collect();
    let button = if can(&state, &caller, Role::Deployer) {
        format!(
            "<form method=\"post\" action=\"/deploy\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"design\" value=\"{}\">\
             <button type=\"submit\" id=\"deploy-button\">Deploy {}</button></form>",
            esc(caller.csrf()),
            esc(&design),
            esc(&design)
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Plan for {}</h1><ul class=\"plan\" id=\"plan\">{lines}</ul>{button}\
         <p><a href=\"/\">Back to the runs</a></p>",
        esc(&design)
    );
    page(StatusCode::OK, layout("Plan", Some(&caller), &body))
}

pub async fn act(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<(i64, String)>, PathRejection>,
    form: FormFields,
) -> Response {
    let caller = match form_caller(&state, &headers, peer, &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(Path((id, name))) = path else {
        return not_found().await;
    };
    let Some(command) = super::api::action(&name, id) else {
        return not_found().await;
    };
    let retry = matches!(command, Command::Retry { .. });
    let (status, reply) = super::api::perform(&state, &caller, command).await;
    let line = reply.public.first().cloned().unwrap_or_default();
    // Redirect after the post (a reload does not post again); the outcome rides along in a
    // short-lived cookie that the run page shows once.
    let target = match (retry, reply.run, status.is_success()) {
        (true, Some(new), true) => new,
        _ => id,
    };
    let mut response = Redirect::to(&format!("/runs/{target}")).into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(
        FLASH_COOKIE,
        &write_flash(&line, status.is_success()),
        Duration::from_secs(60),
        state.secure,
    )) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

// ---- login ----------------------------------------------------------------------------

pub async fn login_form(AxumState(state): AxumState<Shared>) -> Response {
    login_page(&state, None, StatusCode::OK)
}

fn login_page(state: &State, message: Option<&str>, status: StatusCode) -> Response {
    let Some(nonce) = crate::chat::tokens::random_text(24) else {
        return refusal_page(
            None,
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "no randomness for a form"),
        );
    };
    let message = message
        .map(|m| format!("<p class=\"failure\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Log in</h1>{message}<p>Log in with your personal API token (an admin makes one \
         with <code>token create PERSON</code>).</p>\
         <form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"token\">Token</label> <input id=\"token\" name=\"token\" type=\"password\" \
         required autocomplete=\"current-password\"> <button type=\"submit\" id=\"login-button\">Log in</button></form>",
        esc(&nonce)
    );
    let mut response = page(status, layout("Log in", None, &body));
    let cookie = auth::set_cookie(
        LOGIN_COOKIE,
        &nonce,
        Duration::from_secs(3600),
        state.secure,
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

pub async fn login(
    AxumState(state): AxumState<Shared>,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let Ok(Form(fields)) = form else {
        return login_page(
            &state,
            Some("the form could not be read"),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    };
    let nonce = auth::cookie(&headers, LOGIN_COOKIE);
    let given = fields.get("csrf");
    let fresh = matches!((&nonce, given), (Some(n), Some(g)) if auth::constant_time_eq(n.as_bytes(), g.as_bytes()));
    if !fresh {
        return login_page(
            &state,
            Some("the login form is stale (CSRF check); try again"),
            StatusCode::FORBIDDEN,
        );
    }
    let token = fields.get("token").map(|t| t.trim()).unwrap_or("");
    if token.is_empty() || token.len() > 200 {
        return login_page(
            &state,
            Some("give your token"),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let person = match state
        .app
        .engine()
        .store()
        .api_token_person(&crate::chat::tokens::hash(token))
        .await
    {
        Ok(Some((id, person))) => {
            state.token_used(id);
            person
        }
        Ok(None) => {
            return login_page(
                &state,
                Some("that token is not known or was revoked"),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "login: the database failed");
            return login_page(
                &state,
                Some("the database did not answer; see jarvis's log"),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
    };
    tracing::info!(%person, "web login");
    open_session(&state, vec![Identity::Web(person.clone())], person, false)
}

/// A new session and its cookie; then to the runs (by a redirect, or by a page that goes on
/// by itself where the request came from elsewhere and a strict cookie would not follow a
/// redirect).
fn open_session(
    state: &State,
    identities: Vec<Identity>,
    name: String,
    via_page: bool,
) -> Response {
    let Some(id) = state.sessions.open(identities, name) else {
        return refusal_page(
            None,
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "cannot open a session"),
        );
    };
    let mut response = if via_page {
        page(
            StatusCode::OK,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"0;url=/\"><title>jarvis</title></head>\
             <body><p>Logged in. <a href=\"/\">Go to the runs</a>.</p></body></html>"
                .into(),
        )
    } else {
        Redirect::to("/").into_response()
    };
    let cookie = auth::set_cookie(SESSION_COOKIE, &id, state.sessions.ttl(), state.secure);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// `jarvis shell`'s one-time link: logs its user in as the console identity.
pub async fn console_login(
    AxumState(state): AxumState<Shared>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let given = query.get("key").map(String::as_str).unwrap_or("");
    let user = {
        let Ok(mut console) = state.console.lock() else {
            return not_found().await;
        };
        match console.as_ref() {
            Some((_, key)) if auth::constant_time_eq(key.as_bytes(), given.as_bytes()) => {
                console.take().map(|(user, _)| user)
            }
            _ => None,
        }
    };
    match user {
        Some(user) => open_session(&state, vec![Identity::Console(user.clone())], user, true),
        None => refusal_page(
            None,
            Refusal::new(
                StatusCode::FORBIDDEN,
                "that login link was used already or is wrong; restart jarvis shell for a new one",
            ),
        ),
    }
}

pub async fn logout(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    form: FormFields,
) -> Response {
    let caller = match form_caller(&state, &headers, peer, &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Via::Session { id, .. } = &caller.via {
        state.sessions.close(id);
    }
    let mut response = Redirect::to("/login").into_response();
    let cookie = auth::set_cookie(SESSION_COOKIE, "", Duration::ZERO, state.secure);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::EVENT_KINDS;

    /// A kind the engine gains must reach the page's listeners too, or a page stays stale
    /// on it: every `pub const` of `events::kind` is in the list.
    #[test]
    fn the_page_listens_to_every_event_kind() {
        let source = include_str!("../engine/events.rs");
        let module = source
            .split("pub mod kind {")
            .nth(1)
            .and_then(|rest| rest.split("\n}").next())
            .expect("events::kind");
        let kinds: Vec<&str> = module
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub const "))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert!(kinds.len() >= 10, "{kinds:?}");
        for kind in kinds {
            assert!(
                EVENT_KINDS.contains(&kind),
                "the page does not listen to {kind}"
            );
        }
    }
}
