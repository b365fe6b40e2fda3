//! System → remote syslog: the collectors every event goes to (`syslog`).
//!
//! * `GET /api/v1/system/syslog` — settings (or `null`) and each
//!   collector's state: connected, sent, dropped, failures, last error
//!   (role: viewer)
//! * `PUT /api/v1/system/syslog` — store settings (422 naming the field,
//!   nothing stored); collectors get events from then on (role: admin)
//! * `DELETE /api/v1/system/syslog` — turn remote syslog off (role: admin)

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Json;

use super::auth::Principal;
use super::{ApiError, AppState};
use crate::syslog::{Syslog, SyslogError, SyslogSettings, SyslogView};

fn syslog(state: &AppState) -> Result<Arc<Syslog>, ApiError> {
    state.syslog.clone().ok_or(ApiError::Unavailable)
}

fn answer(error: SyslogError) -> ApiError {
    match error {
        SyslogError::Invalid(problems) => ApiError::Invalid(problems),
        SyslogError::Store(error) => ApiError::Store(error),
        SyslogError::Stored(message) => ApiError::BadRequest(message),
    }
}

pub(crate) async fn get(State(state): State<AppState>) -> Result<Json<SyslogView>, ApiError> {
    Ok(Json(syslog(&state)?.view()))
}

async fn set(
    state: &AppState,
    principal: &Principal,
    settings: Option<SyslogSettings>,
) -> Result<Json<SyslogView>, ApiError> {
    let syslog = syslog(state)?;
    let bundles = Arc::clone(&state.publisher.current().ca_bundles);
    let actor = principal.username.clone();
    tokio::task::spawn_blocking(move || {
        syslog.set(settings, &bundles, &actor).map_err(answer)?;
        Ok(Json(syslog.view()))
    })
    .await?
}

pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<SyslogView>, ApiError> {
    let settings: SyslogSettings = super::api::parse_json(&body)?;
    set(&state, &principal, Some(settings)).await
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<SyslogView>, ApiError> {
    set(&state, &principal, None).await
}
