//! The admin listener: REST API under `/api/v1` and `/metrics`, over HTTPS
//! (`tls`), behind one authentication layer (`auth`).
//!
//! Open routes (no credentials), and only these:
//! * `GET  /api/v1/health` — liveness (and whether first-boot setup is due)
//! * `POST /api/v1/setup` — first admin password; 409 once one exists
//! * `POST /api/v1/session` — log in
//! * `GET  /api/v1/openapi.json` — the OpenAPI document of these routes
//! * `GET  /`, `GET /assets/{file}` — the UI page and its embedded script
//!   and stylesheet (no data; the page logs in through the API)
//!
//! Protected routes (session cookie + CSRF header for changes, or a Bearer
//! API token):
//! * `GET /api/v1/session`, `DELETE /api/v1/session` — who am I, log out
//! * `GET|POST /api/v1/tokens`, `DELETE /api/v1/tokens/{id}` — API tokens
//! * `GET /api/v1/status` — pools, members, health, drain, virtual services
//! * `GET /api/v1/status/stream` — the same as server-sent events
//! * `GET|PUT /api/v1/config` — desired config as JSON (PUT validates; 422
//!   with field errors and nothing written)
//! * `POST /api/v1/pools/{pool}/members/{member}/{drain|enable|disable}`
//! * `GET /api/v1/events` — event log (`after`, `limit`, `kind`, `pool`, `member`)
//! * `GET|POST /api/v1/license` — licence status; activation (`{"license": …}`)
//! * `GET /api/v1/registrar?uri=…` — a user's registrar sequences: logical,
//!   physical, home, backup_mode (400 for an unreadable URI)
//! * `GET /api/v1/registrar/what-if?pool=…&member=…` — the share of users
//!   (over the hash space) who would move if the member were drained
//! * `GET /metrics` — Prometheus text format
//! * `GET /api/v1/system`, `POST /api/v1/system/upgrade` — version, slot and
//!   upgrades (`system`)
//!
//! The route tables below are the single source: the router is built from
//! them and the security tests enumerate them.

pub mod api;
pub mod auth;
mod error;
mod openapi;
mod system;
pub mod tls;
mod ui;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Json};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde_json::json;

pub use error::{ApiError, FieldProblem};

use crate::state::PublisherHandle;
use crate::store::{Store, StoreError};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub publisher: PublisherHandle,
    pub store: Store,
    pub started: Instant,
    /// With `--require-setup-code`: the one-time code first-boot setup needs.
    pub setup_code: Option<Arc<str>>,
    pub login_limiter: Arc<auth::LoginLimiter>,
    pub licensing: crate::license::Licensing,
    /// Counters of the DNS and SIP services, for `/metrics`.
    pub dns_stats: Arc<crate::dns::DnsStats>,
    pub sip_stats: Arc<crate::sip::SipStats>,
    /// Upgrades and the reboot into them (`run` sets the real layout and
    /// reboot mode; the default never reboots).
    pub upgrades: Arc<crate::system::reboot::Upgrades>,
}

impl AppState {
    pub fn new(
        publisher: PublisherHandle,
        store: Store,
        licensing: crate::license::Licensing,
        setup_code: Option<String>,
    ) -> Self {
        let data_dir = store.path().parent().map(Into::into).unwrap_or_default();
        Self {
            publisher,
            store,
            started: Instant::now(),
            setup_code: setup_code.map(Arc::from),
            login_limiter: Arc::default(),
            licensing,
            dns_stats: Arc::default(),
            sip_stats: Arc::default(),
            upgrades: Arc::new(crate::system::reboot::Upgrades::never_rebooting(data_dir)),
        }
    }
}

/// Run a store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    Ok(tokio::task::spawn_blocking(move || call(&store)).await??)
}

/// One route: method, path, a one-line summary (for the OpenAPI document),
/// and its handler.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub handler: MethodRouter<AppState>,
}

macro_rules! spec {
    ($method:ident, $path:literal, $summary:literal, $handler:expr) => {
        Route {
            method: Method::$method,
            path: $path,
            summary: $summary,
            handler: on(MethodFilter::$method, $handler),
        }
    };
}

/// Routes open without credentials.
pub fn open_routes() -> Vec<Route> {
    vec![
        spec!(
            GET,
            "/api/v1/health",
            "Liveness, version, and whether first-boot setup is due",
            api::health
        ),
        spec!(
            POST,
            "/api/v1/setup",
            "Set the first admin password (409 once one exists)",
            api::setup
        ),
        spec!(
            POST,
            "/api/v1/session",
            "Log in: session cookie and CSRF token",
            api::login
        ),
        spec!(
            GET,
            "/api/v1/openapi.json",
            "This document",
            openapi::document
        ),
        spec!(GET, "/", "The web UI", ui::index),
        spec!(
            GET,
            "/assets/{file}",
            "The web UI's script and stylesheet",
            ui::asset
        ),
    ]
}

/// Every other route; all of them sit behind `auth::require_auth`.
pub fn protected_routes() -> Vec<Route> {
    vec![
        spec!(
            GET,
            "/api/v1/session",
            "The logged-in user and CSRF token",
            api::session_info
        ),
        spec!(DELETE, "/api/v1/session", "Log out", api::logout),
        spec!(
            GET,
            "/api/v1/tokens",
            "List API tokens (never their secrets)",
            api::list_tokens
        ),
        spec!(
            POST,
            "/api/v1/tokens",
            "Create an API token; the secret is shown once",
            api::create_token
        ),
        spec!(
            DELETE,
            "/api/v1/tokens/{id}",
            "Revoke an API token",
            api::revoke_token
        ),
        spec!(
            GET,
            "/api/v1/status",
            "Pools, members, health, drain progress, virtual services",
            api::status
        ),
        spec!(
            GET,
            "/api/v1/status/stream",
            "The status document as server-sent events",
            ui::status_stream
        ),
        spec!(
            GET,
            "/api/v1/config",
            "The desired config as JSON",
            api::get_config
        ),
        spec!(
            PUT,
            "/api/v1/config",
            "Replace the desired config (422 with field errors, nothing written)",
            api::put_config
        ),
        spec!(
            POST,
            "/api/v1/pools/{pool}/members/{member}/{action}",
            "Drain, enable or disable a member",
            api::member_action
        ),
        spec!(GET, "/api/v1/events", "The event log", api::events),
        spec!(
            GET,
            "/api/v1/license",
            "Licence status and current use",
            api::license_status
        ),
        spec!(
            POST,
            "/api/v1/license",
            "Activate a licence",
            api::install_license
        ),
        spec!(
            GET,
            "/api/v1/registrar",
            "A SIP user's home server and failover order",
            api::registrar
        ),
        spec!(
            GET,
            "/api/v1/registrar/what-if",
            "The share of users who would move if a member were drained",
            api::registrar_what_if
        ),
        spec!(GET, "/metrics", "Prometheus metrics", api::metrics),
        spec!(
            GET,
            "/api/v1/system",
            "Running version, root slot, previous version, last and pending upgrade",
            system::info
        ),
        spec!(
            POST,
            "/api/v1/system/upgrade",
            "Upload an upgrade bundle (raw body): verify, install, reboot",
            system::upgrade
        ),
    ]
}

fn build(routes: Vec<Route>) -> Router<AppState> {
    routes.into_iter().fold(Router::new(), |router, route| {
        router.route(route.path, route.handler)
    })
}

pub fn router(state: AppState) -> Router {
    let protected = build(protected_routes()).route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_auth,
    ));
    build(open_routes())
        .merge(protected)
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers that keep the UI out of frames and other origins' scripts.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    response
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, Json(json!({"error": "not found"})))
}
