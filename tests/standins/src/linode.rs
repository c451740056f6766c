//! An in-memory stand-in for the part of Linode API v4 that jarvis uses: Linode instances
//! (list with pagination and `X-Filter`, create, get, delete, boot, shutdown, reboot, rebuild),
//! with the published paths, fields and error shapes (`{"errors": [{"field", "reason"}]}`),
//! bearer-token checks, and status transitions that take time:
//! `provisioning` → `booting` → `running`, `shutting_down` → `offline`, `rebuilding` → …
//!
//! Test controls, outside the API and never recorded:
//! - `GET /_standin/instances`: every instance, without paging;
//! - `GET /_standin/requests`: every API request received so far (method, path, query,
//!   `X-Filter`, JSON body), so a test can check them against the OpenAPI document;
//! - `POST /_standin/fail` `{"count", "status", "retry_after", "after", "method", "path"}`:
//!   the next `count` API requests (with that method and path, when given) answer `status`
//!   (with `Retry-After` when given); with `after: true` the request is carried out first and
//!   only its answer is lost, like a connection cut after the fact.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// How the stand-in behaves; every duration is in milliseconds.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bearer token every API request must carry.
    pub token: String,
    pub provision_ms: u64,
    pub boot_ms: u64,
    pub shutdown_ms: u64,
    /// The IPv4 address every new instance gets (e.g. 127.0.0.1, so that SSH to the
    /// "instance" reaches a local sshd); by default each gets its own from 192.0.2.0/24.
    pub ipv4: Option<Ipv4Addr>,
    /// Page size when the client names none, and the most a page holds (the API's are 100
    /// and 500); a small one makes clients read several pages.
    pub page_size: u64,
    /// Answer lists unfiltered, as if `X-Filter` were ignored, so a client must check what it
    /// gets.
    pub ignore_filter: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            token: "standin-token".into(),
            provision_ms: 300,
            boot_ms: 300,
            shutdown_ms: 200,
            ipv4: None,
            page_size: 100,
            ignore_filter: false,
        }
    }
}

/// The stand-in as an axum router.
pub fn router(settings: Settings) -> Router {
    let state = Shared(Arc::new(Mutex::new(Standin {
        settings,
        instances: BTreeMap::new(),
        next_id: 10_000,
        requests: Vec::new(),
        failures: VecDeque::new(),
    })));
    Router::new().fallback(handle).with_state(state)
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Standin>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Standin> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Standin {
    settings: Settings,
    instances: BTreeMap<u64, Instance>,
    next_id: u64,
    requests: Vec<Value>,
    failures: VecDeque<Failure>,
}

#[derive(Debug, Clone, Deserialize)]
struct Failure {
    status: u16,
    retry_after: Option<u64>,
    #[serde(default)]
    after: bool,
    /// Only requests with this method (and path, when given) meet this failure.
    method: Option<String>,
    path: Option<String>,
}

impl Failure {
    fn meets(&self, method: &Method, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && self.path.as_deref().is_none_or(|p| p == path)
    }
}

#[derive(Deserialize)]
struct FailRequest {
    #[serde(default = "one")]
    count: usize,
    #[serde(flatten)]
    failure: Failure,
}

fn one() -> usize {
    1
}

struct Instance {
    id: u64,
    label: String,
    region: String,
    type_id: String,
    image: Option<String>,
    tags: Vec<String>,
    created: String,
    updated: String,
    ipv4: String,
    ipv6: String,
    /// Statuses from `since` on: each holds from its offset until the next one's.
    timeline: Vec<(Duration, &'static str)>,
    since: Instant,
}

impl Instance {
    fn status(&self) -> &'static str {
        let elapsed = self.since.elapsed();
        self.timeline
            .iter()
            .rev()
            .find(|(at, _)| *at <= elapsed)
            .map(|(_, status)| *status)
            .unwrap_or("offline")
    }

    fn start(&mut self, timeline: Vec<(Duration, &'static str)>) {
        self.timeline = timeline;
        self.since = Instant::now();
        self.updated = crate::iso_now();
    }

    fn to_json(&self) -> Value {
        let (memory, disk, vcpus) = type_specs(&self.type_id).unwrap_or((1024, 25_600, 1));
        json!({
            "id": self.id,
            "label": self.label,
            "group": "",
            "status": self.status(),
            "created": self.created,
            "updated": self.updated,
            "type": self.type_id,
            "ipv4": [self.ipv4],
            "ipv6": self.ipv6,
            "image": self.image,
            "region": self.region,
            "site_type": "core",
            "specs": {"disk": disk, "memory": memory, "vcpus": vcpus, "gpus": 0, "transfer": 1000},
            "alerts": {"cpu": 90, "io": 10000, "network_in": 10, "network_out": 10, "transfer_quota": 80},
            "backups": {"enabled": false, "available": false, "last_successful": null,
                        "schedule": {"day": null, "window": null}},
            "hypervisor": "kvm",
            "watchdog_enabled": true,
            "tags": self.tags,
            "host_uuid": format!("00000000-0000-4000-8000-{:012x}", self.id),
            "has_user_data": false,
            "placement_group": null,
            "disk_encryption": "disabled",
            "lke_cluster_id": null,
            "capabilities": [],
        })
    }
}

const REGIONS: &[&str] = &[
    "ap-northeast",
    "ap-south",
    "ap-southeast",
    "ap-west",
    "ca-central",
    "eu-central",
    "eu-west",
    "fr-par",
    "us-central",
    "us-east",
    "us-ord",
    "us-sea",
    "us-southeast",
    "us-west",
];

const IMAGES: &[&str] = &[
    "linode/debian11",
    "linode/debian12",
    "linode/debian13",
    "linode/ubuntu22.04",
    "linode/ubuntu24.04",
    "linode/almalinux9",
    "linode/rocky9",
    "linode/alpine3.20",
];

/// Memory (MB), disk (MB) and vCPUs of the plan types the stand-in knows.
fn type_specs(type_id: &str) -> Option<(u64, u64, u64)> {
    Some(match type_id {
        "g6-nanode-1" => (1024, 25_600, 1),
        "g6-standard-1" => (2048, 51_200, 1),
        "g6-standard-2" => (4096, 81_920, 2),
        "g6-standard-4" => (8192, 163_840, 4),
        "g6-standard-6" => (16_384, 327_680, 6),
        "g6-standard-8" => (32_768, 655_360, 8),
        "g6-dedicated-2" => (4096, 81_920, 2),
        "g6-dedicated-4" => (8192, 163_840, 4),
        _ => return None,
    })
}

/// The API's error answer: `{"errors": [{"field"?, "reason"}]}`.
fn error(status: StatusCode, field: Option<&str>, reason: &str) -> Response {
    let mut item = Map::new();
    if let Some(field) = field {
        item.insert("field".into(), Value::from(field));
    }
    item.insert("reason".into(), Value::from(reason));
    (status, axum::Json(json!({ "errors": [item] }))).into_response()
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if let Some(control) = path.strip_prefix("/_standin/") {
        return control_request(&shared, &method, control, &body);
    }
    let query: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (pair.to_string(), String::new()),
        })
        .collect();
    let filter = headers
        .get("x-filter")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body_json: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(_) => return error(StatusCode::BAD_REQUEST, None, "Invalid JSON"),
        }
    };

    let mut standin = shared.lock();
    standin.requests.push(json!({
        "method": method.as_str(),
        "path": path,
        "query": query.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "x_filter": filter,
        "body": body_json,
    }));

    let failure = standin
        .failures
        .iter()
        .position(|f| f.meets(&method, &path))
        .and_then(|i| standin.failures.remove(i));
    if let Some(failure) = &failure
        && !failure.after
    {
        return failure_response(failure);
    }
    let bearer = format!("Bearer {}", standin.settings.token);
    if headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        != Some(bearer.as_bytes())
    {
        return error(StatusCode::UNAUTHORIZED, None, "Invalid Token");
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let answer = match segments.as_slice() {
        [version, rest @ ..] if *version == "v4" || *version == "v4beta" => {
            standin.api(&method, rest, &query, filter.as_deref(), body_json)
        }
        _ => error(StatusCode::NOT_FOUND, None, "Not found"),
    };
    match failure {
        Some(failure) => failure_response(&failure),
        None => answer,
    }
}

fn failure_response(failure: &Failure) -> Response {
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let reason = if status == StatusCode::TOO_MANY_REQUESTS {
        "Too many requests"
    } else {
        "Please try again later"
    };
    let mut response = error(status, None, reason);
    if let Some(seconds) = failure.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn control_request(shared: &Shared, method: &Method, control: &str, body: &[u8]) -> Response {
    let mut standin = shared.lock();
    match (method.as_str(), control) {
        ("GET", "requests") => ok(Value::Array(standin.requests.clone())),
        ("GET", "instances") => ok(Value::Array(
            standin.instances.values().map(Instance::to_json).collect(),
        )),
        ("POST", "fail") => match serde_json::from_slice::<FailRequest>(body) {
            Ok(request) => {
                for _ in 0..request.count {
                    standin.failures.push_back(request.failure.clone());
                }
                ok(json!({}))
            }
            Err(e) => error(
                StatusCode::BAD_REQUEST,
                None,
                &format!("bad fail request: {e}"),
            ),
        },
        _ => error(StatusCode::NOT_FOUND, None, "Not found"),
    }
}

impl Standin {
    fn api(
        &mut self,
        method: &Method,
        segments: &[&str],
        query: &[(String, String)],
        filter: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let body = body.unwrap_or_else(|| json!({}));
        match (method.as_str(), segments) {
            ("GET", ["linode", "instances"]) => self.list(query, filter),
            ("POST", ["linode", "instances"]) => self.create(&body),
            (_, ["linode", "instances"]) => method_not_allowed(),
            (_, ["linode", "instances", id, rest @ ..]) => {
                let Some(id) = id
                    .parse::<u64>()
                    .ok()
                    .filter(|id| self.instances.contains_key(id))
                else {
                    return error(StatusCode::NOT_FOUND, None, "Not found");
                };
                self.instance_request(method.as_str(), id, rest, &body)
            }
            _ => error(StatusCode::NOT_FOUND, None, "Not found"),
        }
    }

    fn instance_request(&mut self, method: &str, id: u64, rest: &[&str], body: &Value) -> Response {
        let settings = self.settings.clone();
        let Some(instance) = self.instances.get_mut(&id) else {
            return error(StatusCode::NOT_FOUND, None, "Not found");
        };
        let ms = Duration::from_millis;
        match (method, rest) {
            ("GET", []) => ok(instance.to_json()),
            ("DELETE", []) => {
                self.instances.remove(&id);
                ok(json!({}))
            }
            ("POST", ["shutdown"]) => {
                if instance.status() != "offline" {
                    instance.start(vec![
                        (ms(0), "shutting_down"),
                        (ms(settings.shutdown_ms), "offline"),
                    ]);
                }
                ok(json!({}))
            }
            ("POST", ["boot"]) | ("POST", ["reboot"]) => {
                let first = if rest == ["boot"] {
                    "booting"
                } else {
                    "rebooting"
                };
                instance.start(vec![(ms(0), first), (ms(settings.boot_ms), "running")]);
                ok(json!({}))
            }
            ("POST", ["rebuild"]) => {
                if let Err(refusal) = check_fields(body, REBUILD_FIELDS) {
                    return refusal.into_response();
                }
                let image = match body.get("image").and_then(Value::as_str) {
                    Some(image) if IMAGES.contains(&image) => image.to_string(),
                    Some(_) => {
                        return error(StatusCode::BAD_REQUEST, Some("image"), "image is not valid");
                    }
                    None => {
                        return error(StatusCode::BAD_REQUEST, Some("image"), "image is required");
                    }
                };
                if let Err(refusal) = check_deploy_secrets(body, true) {
                    return refusal.into_response();
                }
                instance.image = Some(image);
                instance.start(vec![
                    (ms(0), "rebuilding"),
                    (ms(settings.provision_ms), "booting"),
                    (ms(settings.provision_ms + settings.boot_ms), "running"),
                ]);
                ok(instance.to_json())
            }
            (_, [] | ["shutdown" | "boot" | "reboot" | "rebuild"]) => method_not_allowed(),
            _ => error(StatusCode::NOT_FOUND, None, "Not found"),
        }
    }

    fn list(&self, query: &[(String, String)], filter: Option<&str>) -> Response {
        let number = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.parse::<u64>().map_err(|_| name.to_string()))
                .transpose()
        };
        let (page, page_size) = match (number("page"), number("page_size")) {
            (Ok(page), Ok(size)) => (page.unwrap_or(1), size),
            (Err(name), _) | (_, Err(name)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    Some(&name),
                    &format!("{name} must be a number"),
                );
            }
        };
        if page == 0 {
            return error(StatusCode::BAD_REQUEST, Some("page"), "page must be >= 1");
        }
        if let Some(size) = page_size
            && !(25..=500).contains(&size)
        {
            return error(
                StatusCode::BAD_REQUEST,
                Some("page_size"),
                "page_size must be between 25 and 500",
            );
        }
        let filter: Option<Value> = match filter.map(serde_json::from_str).transpose() {
            Ok(filter) => filter,
            Err(_) => return error(StatusCode::BAD_REQUEST, Some("X-Filter"), "Invalid JSON"),
        };
        let mut matching = Vec::new();
        for instance in self.instances.values() {
            let item = instance.to_json();
            match filter.as_ref().filter(|_| !self.settings.ignore_filter) {
                Some(filter) => match matches_filter(&item, filter) {
                    Ok(true) => matching.push(item),
                    Ok(false) => {}
                    Err(reason) => {
                        return error(StatusCode::BAD_REQUEST, Some("X-Filter"), &reason);
                    }
                },
                None => matching.push(item),
            }
        }
        let size = page_size
            .unwrap_or(self.settings.page_size)
            .min(self.settings.page_size.max(1))
            .max(1) as usize;
        let results = matching.len();
        let pages = results.div_ceil(size).max(1);
        let data: Vec<Value> = matching
            .into_iter()
            .skip((page as usize - 1).saturating_mul(size))
            .take(size)
            .collect();
        ok(json!({ "data": data, "page": page, "pages": pages, "results": results }))
    }

    fn create(&mut self, body: &Value) -> Response {
        if let Err(refusal) = check_fields(body, CREATE_FIELDS) {
            return refusal.into_response();
        }
        let text = |name: &str| body.get(name).and_then(Value::as_str);
        let Some(region) = text("region") else {
            return error(
                StatusCode::BAD_REQUEST,
                Some("region"),
                "region is required",
            );
        };
        if !REGIONS.contains(&region) {
            return error(
                StatusCode::BAD_REQUEST,
                Some("region"),
                "region is not valid",
            );
        }
        let Some(type_id) = text("type") else {
            return error(StatusCode::BAD_REQUEST, Some("type"), "type is required");
        };
        if type_specs(type_id).is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                Some("type"),
                "A valid plan type by that ID was not found",
            );
        }
        let image = text("image");
        if let Some(image) = image
            && !IMAGES.contains(&image)
        {
            return error(StatusCode::BAD_REQUEST, Some("image"), "image is not valid");
        }
        if let Err(refusal) = check_deploy_secrets(body, image.is_some()) {
            return refusal.into_response();
        }
        let id = self.next_id;
        let label = match text("label") {
            Some(label) => label.to_string(),
            None => format!("linode{id}"),
        };
        if !valid_label(&label) {
            return error(
                StatusCode::BAD_REQUEST,
                Some("label"),
                "Label must be 3-64 characters, begin and end with a letter or number, and may \
                 only contain letters, numbers, hyphens, underscores and periods",
            );
        }
        if self.instances.values().any(|i| i.label == label) {
            return error(
                StatusCode::BAD_REQUEST,
                Some("label"),
                "Label must be unique among your linodes",
            );
        }
        let tags = match string_list(body, "tags") {
            Ok(tags) if tags.iter().all(|t| (3..=50).contains(&t.len())) => tags,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    Some("tags"),
                    "tags must be a list of 3 to 50 character strings",
                );
            }
        };
        let booted = body.get("booted").and_then(Value::as_bool).unwrap_or(true);
        let ms = Duration::from_millis;
        let timeline = if image.is_some() && booted {
            vec![
                (ms(0), "provisioning"),
                (ms(self.settings.provision_ms), "booting"),
                (
                    ms(self.settings.provision_ms + self.settings.boot_ms),
                    "running",
                ),
            ]
        } else {
            vec![
                (ms(0), "provisioning"),
                (ms(self.settings.provision_ms), "offline"),
            ]
        };
        self.next_id += 1;
        let host = (id % 250 + 2) as u8;
        let now = crate::iso_now();
        let instance = Instance {
            id,
            label,
            region: region.to_string(),
            type_id: type_id.to_string(),
            image: image.map(str::to_string),
            tags,
            created: now.clone(),
            updated: now,
            ipv4: self
                .settings
                .ipv4
                .unwrap_or(Ipv4Addr::new(192, 0, 2, host))
                .to_string(),
            ipv6: format!("2001:db8::{id:x}/128"),
            timeline,
            since: Instant::now(),
        };
        let answer = instance.to_json();
        self.instances.insert(id, instance);
        ok(answer)
    }
}

fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, None, "Method not allowed")
}

const CREATE_FIELDS: &[&str] = &[
    "authorized_keys",
    "authorized_users",
    "backup_id",
    "backups_enabled",
    "booted",
    "disk_encryption",
    "firewall_id",
    "group",
    "image",
    "interfaces",
    "label",
    "metadata",
    "placement_group",
    "private_ip",
    "region",
    "root_pass",
    "stackscript_data",
    "stackscript_id",
    "swap_size",
    "tags",
    "type",
];

const REBUILD_FIELDS: &[&str] = &[
    "authorized_keys",
    "authorized_users",
    "booted",
    "disk_encryption",
    "image",
    "metadata",
    "root_pass",
    "stackscript_data",
    "stackscript_id",
    "type",
];

/// Refuses a body that is not an object or that has a field the operation does not define.
/// A 400 answer, small enough to pass around before it becomes a response.
struct Refusal {
    field: Option<String>,
    reason: String,
}

impl Refusal {
    fn new(field: Option<&str>, reason: &str) -> Refusal {
        Refusal {
            field: field.map(str::to_string),
            reason: reason.to_string(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.field.as_deref(), &self.reason)
    }
}

fn check_fields(body: &Value, known: &[&str]) -> Result<(), Refusal> {
    let Some(object) = body.as_object() else {
        return Err(Refusal::new(None, "Invalid JSON"));
    };
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(field) => Err(Refusal::new(
            Some(field),
            &format!("{field} is not a valid field"),
        )),
        None => Ok(()),
    }
}

/// Root password and SSH keys, as a deploy from an image needs them.
fn check_deploy_secrets(body: &Value, from_image: bool) -> Result<(), Refusal> {
    match body.get("root_pass") {
        Some(Value::String(pass)) if (7..=128).contains(&pass.chars().count()) => {}
        Some(_) => {
            return Err(Refusal::new(
                Some("root_pass"),
                "Password must be between 7 and 128 characters",
            ));
        }
        None if from_image => {
            return Err(Refusal::new(
                Some("root_pass"),
                "root_pass is required when deploying from an Image",
            ));
        }
        None => {}
    }
    match string_list(body, "authorized_keys") {
        Ok(keys)
            if keys.iter().all(|k| {
                k.starts_with("ssh-") || k.starts_with("ecdsa-") || k.starts_with("sk-")
            }) =>
        {
            Ok(())
        }
        _ => Err(Refusal::new(Some("authorized_keys"), "Invalid SSH key")),
    }
}

fn string_list(body: &Value, name: &str) -> Result<Vec<String>, ()> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or(()))
            .collect(),
        Some(_) => Err(()),
    }
}

fn valid_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    (3..=64).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && !label.contains("--")
        && !label.contains("__")
        && !label.contains("..")
}

/// The API's `X-Filter`: field equality (an array field matches when it holds the value),
/// `+and` and `+or` lists, and the ordering keys, which the stand-in ignores.
fn matches_filter(item: &Value, filter: &Value) -> Result<bool, String> {
    let Some(conditions) = filter.as_object() else {
        return Err("X-Filter must be a JSON object".into());
    };
    for (key, wanted) in conditions {
        let holds = match key.as_str() {
            "+order_by" | "+order" => true,
            "+and" | "+or" => {
                let Some(list) = wanted.as_array() else {
                    return Err(format!("{key} needs a list"));
                };
                let results = list
                    .iter()
                    .map(|f| matches_filter(item, f))
                    .collect::<Result<Vec<bool>, String>>()?;
                if key == "+and" {
                    results.iter().all(|r| *r)
                } else {
                    results.iter().any(|r| *r)
                }
            }
            op if op.starts_with('+') => return Err(format!("the stand-in has no {op}")),
            field => match item.get(field) {
                Some(Value::Array(values)) => values.contains(wanted),
                Some(value) => value == wanted,
                None => return Err(format!("Cannot filter on {field}")),
            },
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}
