//! System → SNMP: the v2c community, v3 users and trap sinks snmpd serves
//! POOLGATE-MIB with (`snmp`). poolgate itself is snmpd's AgentX subagent.
//!
//! * `GET /api/v1/system/snmp` — settings (or `null`) with passwords and
//!   communities masked, and the snmpd.conf they render to (role: viewer)
//! * `PUT /api/v1/system/snmp` — store settings (422 naming the field,
//!   nothing stored) and hand them to snmpd through the root step; every
//!   password and community is given again (role: admin)
//! * `DELETE /api/v1/system/snmp` — turn SNMP off: snmpd is stopped
//!   (role: admin)

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Json;

use super::auth::Principal;
use super::{ApiError, AppState};
use crate::snmp::{Snmp, SnmpError, SnmpSettings, SnmpView};

fn snmp(state: &AppState) -> Result<Arc<Snmp>, ApiError> {
    state.snmp.clone().ok_or(ApiError::Unavailable)
}

fn answer(error: SnmpError) -> ApiError {
    match error {
        SnmpError::Invalid(problems) => ApiError::Invalid(problems),
        SnmpError::Store(error) => ApiError::Store(error),
        SnmpError::Stored(message) => ApiError::BadRequest(message),
        SnmpError::Apply(error) => ApiError::BadRequest(error.to_string()),
    }
}

pub(crate) async fn get(State(state): State<AppState>) -> Result<Json<SnmpView>, ApiError> {
    Ok(Json(snmp(&state)?.view()))
}

async fn set(
    state: &AppState,
    principal: &Principal,
    settings: Option<SnmpSettings>,
) -> Result<Json<SnmpView>, ApiError> {
    let snmp = snmp(state)?;
    let actor = principal.username.clone();
    tokio::task::spawn_blocking(move || {
        snmp.set(settings, &actor).map_err(answer)?;
        Ok(Json(snmp.view()))
    })
    .await?
}

pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<SnmpView>, ApiError> {
    let settings: SnmpSettings = super::api::parse_json(&body)?;
    set(&state, &principal, Some(settings)).await
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<SnmpView>, ApiError> {
    set(&state, &principal, None).await
}
