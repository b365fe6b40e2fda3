//! The admin listener: REST API (and, later, the web UI) over axum.
//!
//! Routes:
//! * `GET /api/v1/health` — liveness: version, published generation, config
//!   version. Open without authentication.
//! * `GET /api/v1/registrar?uri=…` — a user's registrar sequences: logical,
//!   physical, home, backup_mode (400 for an unreadable URI, 404 without
//!   pools).
//! * `GET /api/v1/registrar/what-if?pool=…&member=…` — the fraction of users
//!   (over the hash space) who would move if the member were drained.
//!
//! Unknown routes answer 404 with a JSON body. The server takes its listener
//! and a shutdown token, so tests bind port 0.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::PublisherHandle;
use crate::store::Store;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub publisher: PublisherHandle,
    pub store: Store,
    pub started: Instant,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/registrar", get(registrar))
        .route("/api/v1/registrar/what-if", get(registrar_what_if))
        .fallback(not_found)
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let view = state.publisher.current();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "generation": view.generation,
        "config_version": view.config_version,
        "uptime_s": state.started.elapsed().as_secs(),
    }))
}

#[derive(Debug, serde::Deserialize)]
struct RegistrarQuery {
    uri: String,
}

async fn registrar(
    State(state): State<AppState>,
    Query(query): Query<RegistrarQuery>,
) -> axum::response::Response {
    let view = state.publisher.current();
    match crate::sip::registrar::lookup(&view, &query.uri) {
        Ok(Some(lookup)) => Json(lookup).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no pool configured"})),
        )
            .into_response(),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("uri: {error}")})),
        )
            .into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct WhatIfQuery {
    pool: String,
    member: String,
}

async fn registrar_what_if(
    State(state): State<AppState>,
    Query(query): Query<WhatIfQuery>,
) -> axum::response::Response {
    let view = state.publisher.current();
    let found = view.pool(&query.pool).and_then(|pool| {
        let index = pool.members.iter().position(|m| m.name == query.member)?;
        Some(crate::sip::registrar::drain_fraction(pool, index))
    });
    match found {
        Some(fraction) => Json(json!({
            "pool": query.pool,
            "member": query.member,
            "fraction_hash_space": fraction,
        }))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such pool member"})),
        )
            .into_response(),
    }
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, Json(json!({"error": "not found"})))
}

/// Serve `router` on `listener` until `shutdown` is cancelled, then stop
/// accepting and finish the requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
