//! The inventory over HTTP: `GET /api/v1/hosts` and `GET /api/v1/hosts/{host}`, and the
//! record's part of the host page. Reads only: a record changes only by the runs that make,
//! change or remove its host.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::api::{self, ApiError};
use super::auth::Refusal;
use super::schema::ErrorBody;
use super::{Shared, State, esc};
use crate::store::HostRecord;

type ApiResult = Result<Response, ApiError>;

/// A host's record, as `host HOST` tells it.
#[derive(Serialize, ToSchema)]
pub struct HostRecordBody {
    pub name: String,
    /// `present`, `destroying` or `destroyed`.
    pub state: String,
    pub provider: Option<String>,
    /// Module → what its worker recorded of the resource (`id`, `region`, addresses, …).
    #[schema(value_type = Object)]
    pub resources: BTreeMap<String, Value>,
    pub addresses: Vec<String>,
    pub environment: Option<String>,
    /// The design reference it was deployed from, and the digest of the content deployed.
    pub design: Option<String>,
    pub design_digest: Option<String>,
    pub created_by: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub created_run: Option<i64>,
    pub last_run: Option<i64>,
    pub last_good_run: Option<i64>,
    /// Rebuilt from stored runs when the inventory was added, not written by a run.
    pub reconstructed: bool,
}

/// The records of the hosts jarvis made.
#[derive(Serialize, ToSchema)]
pub struct HostRecordList {
    pub hosts: Vec<HostRecordBody>,
}

fn body(state: &State, r: &HostRecord) -> HostRecordBody {
    let masker = state.app.masker();
    let resources = r
        .resources
        .iter()
        .map(|(module, section)| {
            let shown = match section {
                Value::Object(map) => Value::Object(super::schema::masked(masker, map)),
                other => other.clone(),
            };
            (module.clone(), shown)
        })
        .collect();
    HostRecordBody {
        name: r.name.clone(),
        state: r.state.as_str().to_string(),
        provider: r.provider.clone(),
        resources,
        addresses: r.addresses.clone(),
        environment: r.environment.clone(),
        design: r.design_ref.clone(),
        design_digest: r.design_digest.clone(),
        created_by: r.created_by.clone(),
        created_at: r.created_at,
        created_run: r.created_run,
        last_run: r.last_run,
        last_good_run: r.last_good_run,
        reconstructed: r.reconstructed,
    }
}

/// Every host record, destroyed ones included, by name.
#[utoipa::path(get, path = "/hosts", operation_id = "list_hosts", tag = "hosts",
    responses(
        (status = 200, description = "The host records", body = HostRecordList),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the viewer role", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ))]
pub async fn list(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
) -> ApiResult {
    api::viewer(&state, &headers, peer, "reading hosts").await?;
    let records = state
        .app
        .engine()
        .store()
        .hosts()
        .await
        .map_err(api::db_error)?;
    let hosts = records.iter().map(|r| body(&state, r)).collect();
    Ok(Json(HostRecordList { hosts }).into_response())
}

/// One host's record.
#[utoipa::path(get, path = "/hosts/{host}", operation_id = "host", tag = "hosts",
    params(("host" = String, Path, description = "The host's name")),
    responses(
        (status = 200, description = "The record", body = HostRecordBody),
        (status = 401, description = "No login, or a token not known", body = ErrorBody),
        (status = 403, description = "The caller lacks the viewer role", body = ErrorBody),
        (status = 404, description = "jarvis has no record of that host", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ))]
pub async fn one(
    AxumState(state): AxumState<Shared>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    api::viewer(&state, &headers, peer, "reading hosts").await?;
    let Ok(Path(host)) = path else {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "which host?").into());
    };
    match state
        .app
        .engine()
        .store()
        .host(&host)
        .await
        .map_err(api::db_error)?
    {
        Some(r) => Ok(Json(body(&state, &r)).into_response()),
        None => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!(
                "jarvis has no record of {}",
                crate::text::one_line(&host, 80)
            ),
        )
        .into()),
    }
}

/// The record's part of the host page: a definition list, or a line saying there is none.
pub fn record_html(state: &State, record: Option<&HostRecord>) -> String {
    let Some(r) = record else {
        return "<p id=\"record\">jarvis has no record of this host: it did not make it.</p>"
            .into();
    };
    let b = body(state, r);
    let resources = if b.resources.is_empty() {
        "none".to_string()
    } else {
        b.resources
            .iter()
            .map(|(module, section)| {
                let text = serde_json::to_string(section).unwrap_or_default();
                format!(
                    "{} {}",
                    esc(module),
                    esc(&crate::text::one_line(&text, 300))
                )
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let run = |id: Option<i64>| match id {
        Some(id) => format!("<a href=\"/runs/{id}\">#{id}</a>"),
        None => "none".into(),
    };
    format!(
        "<dl id=\"record\"><dt>State</dt><dd>{state}</dd><dt>Environment</dt><dd>{env}</dd>\
         <dt>Provider</dt><dd>{provider}</dd><dt>Resources</dt><dd>{resources}</dd>\
         <dt>Addresses</dt><dd>{addresses}</dd><dt>Design</dt><dd>{design} (digest {digest})</dd>\
         <dt>Made by</dt><dd>{by}, run {created}</dd><dt>Last good run</dt><dd>{good}</dd>{rebuilt}</dl>",
        state = esc(&b.state),
        env = esc(b.environment.as_deref().unwrap_or("none")),
        provider = esc(b.provider.as_deref().unwrap_or("none")),
        addresses = esc(&b.addresses.join(" ")),
        design = esc(b.design.as_deref().unwrap_or("unknown")),
        digest = esc(&b
            .design_digest
            .as_deref()
            .map(|d| d.chars().take(12).collect::<String>())
            .unwrap_or_else(|| "none".into())),
        by = esc(&b.created_by),
        created = run(b.created_run),
        good = run(b.last_good_run),
        rebuilt = if b.reconstructed {
            "<dt>Note</dt><dd>rebuilt from stored runs, not written by a run</dd>"
        } else {
            ""
        },
    )
}
