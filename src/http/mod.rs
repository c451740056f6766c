//! The HTTP adapter (SPEC 9): a JSON API under `/api/v1`, live events as Server-Sent Events,
//! a small server-rendered web page, `/metrics` and `/healthz` — on the daemon's runtime and
//! store. Like the chat adapters it only brings requests in: commands go through the same
//! [`Bot::perform`](crate::chat::bot::Bot::perform) as chat lines (same role checks, refusals
//! and audit rows), with the web user's identity ([`Identity::Web`]). The engine knows
//! nothing of HTTP.

mod api;
mod auth;
mod hooks;
mod hosts;
mod metrics;
mod page;
mod rollouts;
mod schema;
mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub use crate::config::http::{HttpConfig, TlsFiles};

use crate::app::Application;
use crate::chat::roles::Identity;
use crate::chat::{ChatNetwork, Rate, SendError, Target};

/// The chat network name of requests that came over HTTP: runs asked for on the web tell of
/// themselves on the page, so their notifications are delivered to nobody.
pub const NETWORK: &str = "web";

/// The largest request body taken (JSON or form).
const BODY_LIMIT: usize = 16 * 1024;

/// A running HTTP server.
pub struct Server {
    /// The address it listens on (with the port taken, when 0 was asked for).
    pub addr: SocketAddr,
    /// Where people reach it: `public_url`, or `http(s)://ADDR/`.
    pub url: String,
    /// For `jarvis shell`: a one-time link that logs its user in as the console user.
    pub console_login: Option<String>,
}

pub(crate) struct State {
    app: Application,
    config: HttpConfig,
    secure: bool,
    sessions: auth::Sessions,
    /// `jarvis shell`'s user and the one-time key of the link that logs them in.
    console: Mutex<Option<(String, String)>>,
    /// The newest stored event id, for live pages.
    last_event: watch::Receiver<i64>,
    /// When each token's `last_used` was last written: at most once a minute, off the
    /// request's path.
    token_seen: Mutex<std::collections::HashMap<i64, std::time::Instant>>,
}

impl State {
    fn token_used(&self, id: i64) {
        let now = std::time::Instant::now();
        let due = match self.token_seen.lock() {
            Ok(mut seen) => match seen.get(&id) {
                Some(at) if now.duration_since(*at) < Duration::from_secs(60) => false,
                _ => {
                    seen.insert(id, now);
                    true
                }
            },
            Err(_) => false,
        };
        if due {
            let store = self.app.engine().store().clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_api_token(id).await {
                    tracing::warn!(error = %e, "cannot note a token's use");
                }
            });
        }
    }
}

type Shared = Arc<State>;

/// Starts serving `config` for `app`. `console_user` (for `jarvis shell`) gets a one-time
/// link that logs them in as the console identity.
pub async fn start(
    app: &Application,
    config: HttpConfig,
    console_user: Option<String>,
) -> anyhow::Result<Server> {
    let tls = match &config.tls {
        Some(files) => Some(tls::acceptor(files)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} for HTTP", config.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = match &config.public_url {
        Some(u) if u.ends_with('/') => u.clone(),
        Some(u) => format!("{u}/"),
        None => format!("{scheme}://{addr}/"),
    };
    app.attach(Arc::new(WebNetwork::new())).with_context(|| {
        format!("the HTTP server needs the chat network name '{NETWORK}' for its requests")
    })?;
    let console =
        console_user.and_then(|user| crate::chat::tokens::random_text(32).map(|key| (user, key)));
    let console_login = console
        .as_ref()
        .map(|(_, key)| format!("{url}login/console?key={key}"));
    let last = app.engine().store().last_event_id().await.unwrap_or(0);
    let (tx, last_event) = watch::channel(last);
    tokio::spawn(watch_events(app.clone(), tx));
    let state = Arc::new(State {
        app: app.clone(),
        secure: tls.is_some(),
        sessions: auth::Sessions::new(config.session),
        config,
        console: Mutex::new(console),
        last_event,
        token_seen: Mutex::new(std::collections::HashMap::new()),
    });
    let router = router(state);
    let service = router.into_make_service_with_connect_info::<Peer>();
    match tls {
        Some(acceptor) => {
            let listener = tls::TlsListener::new(listener, acceptor);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, service).await {
                    tracing::error!(error = %e, "the HTTPS server stopped");
                }
            });
        }
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, service).await {
                    tracing::error!(error = %e, "the HTTP server stopped");
                }
            });
        }
    }
    tracing::info!(%addr, %url, "serving HTTP");
    Ok(Server {
        addr,
        url,
        console_login,
    })
}

/// The address a connection came from (plain or TLS).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tls::TlsListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tls::TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

fn router(state: Shared) -> Router {
    let (api, _) = api::routes().split_for_parts();
    // API answers are per caller and change from one moment to the next: no cache (a
    // browser's or a proxy's) may keep one.
    let api = api.layer(axum::middleware::map_response(no_store));
    let routes = Router::new()
        .nest("/api/v1", api)
        .route("/", get(page::index))
        .route("/login", get(page::login_form).post(page::login))
        .route("/login/console", get(page::console_login))
        .route("/logout", post(page::logout))
        .route("/deploy", post(page::deploy))
        .route("/plan", post(page::plan))
        .route("/hosts/{host}", get(page::host))
        .route("/pipelines", get(page::pipelines))
        .route("/runs/{id}", get(page::run))
        .route("/runs/{id}/{action}", post(page::act))
        .route(
            "/runs/{id}/promote/{environment}",
            post(rollouts::page_promote),
        )
        .route("/rollouts", get(rollouts::page_list))
        .route("/rollouts/{id}/{action}", post(rollouts::page_act))
        .route("/parts/runs", get(page::runs_part))
        .route("/parts/runs/{id}", get(page::run_part))
        .route("/schedules", get(hooks::page))
        .route("/hooks/{name}", post(hooks::deliver))
        .route("/assets/app.js", get(page::script))
        .route("/assets/app.css", get(page::style))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(metrics::healthz))
        .route("/readyz", get(metrics::healthz))
        .fallback(page::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state);
    // Around the whole router rather than each route (what `Router::layer` does): axum
    // writes a 405's Allow header outside a route's layers, and the body says what it lists.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(method_not_allowed))
}

/// Headers every answer carries: no framing, no sniffing, scripts only from jarvis itself.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn no_store(mut response: axum::response::Response) -> axum::response::Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// axum answers a known path asked with another method with 405 and an empty body; this
/// gives it the body every other error has (JSON under the API, hooks and the health
/// endpoints, the refusal page elsewhere), saying which methods the path takes.
async fn method_not_allowed(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    if response.status() != axum::http::StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let programs = matches!(
        path.split('/').nth(1),
        Some("api" | "hooks" | "metrics" | "healthz" | "readyz")
    );
    let mut answer = if programs {
        api::method_not_allowed(method.as_str(), &path, allow.as_deref())
    } else {
        page::method_not_allowed(method.as_str(), &path, allow.as_deref())
    };
    // Allow, and the API's no-store, stay as the router set them.
    for (name, value) in response.headers() {
        if name != header::CONTENT_LENGTH && !answer.headers().contains_key(name) {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// Keeps `tx` at the newest stored event id, for live pages: a cheap look (the largest
/// primary key) four times a second.
async fn watch_events(app: Application, tx: watch::Sender<i64>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match app.engine().store().last_event_id().await {
            Ok(id) => {
                tx.send_if_modified(|last| {
                    let changed = *last != id;
                    *last = id;
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the newest event id"),
        }
        if tx.is_closed() && tx.receiver_count() == 0 {
            return;
        }
    }
}

/// Where notifications of runs asked for on the web go: nowhere, since the page and the
/// event stream show them. It accepts every line so that none waits in the outbox.
struct WebNetwork {
    online: watch::Sender<bool>,
}

impl WebNetwork {
    fn new() -> WebNetwork {
        WebNetwork {
            online: watch::Sender::new(true),
        }
    }
}

impl ChatNetwork for WebNetwork {
    fn name(&self) -> &str {
        NETWORK
    }

    fn max_line_bytes(&self, _target: &Target) -> usize {
        4096
    }

    fn rate(&self) -> Rate {
        Rate {
            burst: 10_000,
            per_second: 10_000.0,
        }
    }

    fn send<'a>(
        &'a self,
        _target: &'a Target,
        _line: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async { Ok(()) })
    }

    fn online(&self) -> watch::Receiver<bool> {
        self.online.subscribe()
    }
}

/// A request's sender as the bot sees one: the web user, answering "in private".
fn incoming(
    identities: Vec<Identity>,
    name: &str,
    client: &str,
    text: String,
) -> crate::chat::Incoming {
    crate::chat::Incoming {
        // The audit log's channel is the client's address.
        reply_to: Target::direct(NETWORK, client),
        nick: name.to_string(),
        identities,
        identity_note: None,
        text,
    }
}

/// `<`, `>`, `&`, `"` and `'` as HTML entities.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}
