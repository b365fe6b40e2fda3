//! The admin listener: REST API under `/api/v1` and `/metrics`, over HTTPS
//! (`tls`), behind one authentication layer (`auth`).
//!
//! Open routes (no credentials), and only these:
//! * `GET  /api/v1/health` — liveness (and whether first-boot setup is due)
//! * `POST /api/v1/setup` — first admin password; 409 once one exists
//! * `POST /api/v1/session` — log in
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
//! * `GET /metrics` — Prometheus text format
//!
//! The route tables below are the single source: the router is built from
//! them and the security tests enumerate them.

pub mod api;
pub mod auth;
mod error;
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
}

impl AppState {
    pub fn new(
        publisher: PublisherHandle,
        store: Store,
        licensing: crate::license::Licensing,
        setup_code: Option<String>,
    ) -> Self {
        Self {
            publisher,
            store,
            started: Instant::now(),
            setup_code: setup_code.map(Arc::from),
            login_limiter: Arc::default(),
            licensing,
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

/// One route: method, path, handler.
pub type RouteSpec = (Method, &'static str, MethodRouter<AppState>);

fn route(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> RouteSpec {
    (method, path, handler)
}

macro_rules! spec {
    ($method:ident, $path:literal, $handler:expr) => {
        route(Method::$method, $path, on(MethodFilter::$method, $handler))
    };
}

/// Routes open without credentials.
pub fn open_routes() -> Vec<RouteSpec> {
    vec![
        spec!(GET, "/api/v1/health", api::health),
        spec!(POST, "/api/v1/setup", api::setup),
        spec!(POST, "/api/v1/session", api::login),
        spec!(GET, "/", ui::index),
        spec!(GET, "/assets/{file}", ui::asset),
    ]
}

/// Every other route; all of them sit behind `auth::require_auth`.
pub fn protected_routes() -> Vec<RouteSpec> {
    vec![
        spec!(GET, "/api/v1/session", api::session_info),
        spec!(DELETE, "/api/v1/session", api::logout),
        spec!(GET, "/api/v1/tokens", api::list_tokens),
        spec!(POST, "/api/v1/tokens", api::create_token),
        spec!(DELETE, "/api/v1/tokens/{id}", api::revoke_token),
        spec!(GET, "/api/v1/status", api::status),
        spec!(GET, "/api/v1/status/stream", ui::status_stream),
        spec!(GET, "/api/v1/config", api::get_config),
        spec!(PUT, "/api/v1/config", api::put_config),
        spec!(
            POST,
            "/api/v1/pools/{pool}/members/{member}/{action}",
            api::member_action
        ),
        spec!(GET, "/api/v1/events", api::events),
        spec!(GET, "/api/v1/license", api::license_status),
        spec!(POST, "/api/v1/license", api::install_license),
        spec!(GET, "/metrics", api::metrics),
    ]
}

fn build(specs: Vec<RouteSpec>) -> Router<AppState> {
    specs
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
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
