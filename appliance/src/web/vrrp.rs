//! HA → VRRP: this appliance's VRRP settings and keepalived's state
//! (`vrrp`). The pairing and sync half of the HA pair is `/api/v1/ha`.
//!
//! * `GET /api/v1/ha/vrrp` — settings (or `null`), who holds the addresses,
//!   keepalived's state per instance, the keepalived.conf they render to
//! * `PUT /api/v1/ha/vrrp` — store settings (422 naming the field, nothing
//!   stored); keepalived then holds the VIPs instead of poolgate
//! * `DELETE /api/v1/ha/vrrp` — turn VRRP off: poolgate holds its addresses

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Json;

use super::auth::Principal;
use super::{ApiError, AppState};
use crate::vrrp::{VrrpError, VrrpSettings, VrrpView};

fn vrrp(state: &AppState) -> Result<&std::sync::Arc<crate::vrrp::Vrrp>, ApiError> {
    state.vrrp.as_ref().ok_or(ApiError::Unavailable)
}

fn answer(error: VrrpError) -> ApiError {
    match error {
        VrrpError::Invalid(problems) => ApiError::Invalid(problems),
        VrrpError::Store(error) => ApiError::Store(error),
        VrrpError::Stored(message) => ApiError::BadRequest(message),
    }
}

pub(crate) async fn get(State(state): State<AppState>) -> Result<Json<VrrpView>, ApiError> {
    let vrrp = std::sync::Arc::clone(vrrp(&state)?);
    let config = std::sync::Arc::clone(&state.control.desired().config);
    // Rendering reads the host's interfaces (a system call).
    Ok(Json(
        tokio::task::spawn_blocking(move || vrrp.view(&config)).await?,
    ))
}

async fn set(
    state: &AppState,
    principal: &Principal,
    settings: Option<VrrpSettings>,
) -> Result<Json<VrrpView>, ApiError> {
    let vrrp = std::sync::Arc::clone(vrrp(state)?);
    let config = std::sync::Arc::clone(&state.control.desired().config);
    let actor = principal.username.clone();
    tokio::task::spawn_blocking(move || {
        vrrp.set(settings, &config, &actor).map_err(answer)?;
        Ok(Json(vrrp.view(&config)))
    })
    .await?
}

pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<VrrpView>, ApiError> {
    let settings: VrrpSettings = super::api::parse_json(&body)?;
    set(&state, &principal, Some(settings)).await
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<VrrpView>, ApiError> {
    set(&state, &principal, None).await
}
