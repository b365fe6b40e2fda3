//! System → Network: the appliance's own network settings, with the safe
//! apply of `system::network` (applied at once, reverted unless confirmed
//! before the deadline).
//!
//! * `GET /api/v1/system/network` — confirmed settings, the pending change
//!   (with its deadline), and the host's interfaces, routes and NTP state
//! * `PUT /api/v1/system/network` — apply settings (422 naming the field,
//!   nothing applied); 202 with the pending change and its deadline
//! * `POST /api/v1/system/network/preview` — what settings would change
//! * `POST /api/v1/system/network/confirm` — keep the pending change

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use serde_json::{Value, json};

use super::auth::Principal;
use super::{ApiError, AppState};
use crate::system::network::{Network, NetworkSettings, NetworkView};

fn network(state: &AppState) -> Result<&Arc<Network>, ApiError> {
    state.network.as_ref().ok_or(ApiError::Unavailable)
}

/// The body as settings; a value of the wrong type or an unknown field is
/// one problem naming the field.
fn settings(body: &Bytes) -> Result<NetworkSettings, ApiError> {
    super::api::parse_json(body)
}

pub(crate) async fn get(State(state): State<AppState>) -> Result<Json<NetworkView>, ApiError> {
    Ok(Json(network(&state)?.view().await))
}

pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let settings = settings(&body)?;
    let pending = network(&state)?
        .propose(settings, &principal.username)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "pending": pending }))))
}

pub(crate) async fn preview(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let settings = settings(&body)?;
    let changes = network(&state)?.preview(&settings).await?;
    Ok(Json(json!({ "changes": changes })))
}

pub(crate) async fn confirm(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let settings = network(&state)?.confirm(&principal.username).await?;
    Ok(Json(json!({ "settings": settings })))
}
