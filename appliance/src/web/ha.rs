//! The HA pair (`crate::ha`):
//!
//! * `GET /api/v1/ha` — role (`standalone`, `active`, `standby`), the peer
//!   (address, certificate fingerprint, appliance id, config version,
//!   licence), link and sync state, the last synced config version, the
//!   changes not applied after a split, refused sync attempts
//! * `POST /api/v1/ha/pairing-code` — a one-time code (10 minutes, single
//!   use), shown once; 409 while paired
//! * `POST /api/v1/ha/join` — `{"peer": "IP:port", "code": "…"}`: pair with
//!   the appliance whose sync listener is at `peer`; 422 naming `peer` or
//!   `code` when it cannot be reached or refuses the code
//! * `POST /api/v1/ha/failover` — `{"force": false}`: swap roles through the
//!   link; with `force` on the standby, take the active role while the peer
//!   is unreachable
//! * `DELETE /api/v1/ha` — unpair (the peer is told if reachable)

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::{ApiError, AppState};
use crate::ha::{Ha, HaError, HaStatus};

fn ha(state: &AppState) -> Result<&Arc<Ha>, ApiError> {
    state
        .ha
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("HA is not available on this listener".into()))
}

impl From<HaError> for ApiError {
    fn from(error: HaError) -> Self {
        match error {
            HaError::State(message) => ApiError::Ha(message),
            HaError::Field { field, message } => ApiError::invalid(field, message),
            HaError::Store(error) => ApiError::Store(error),
        }
    }
}

/// `POST /api/v1/ha/join`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinBody {
    /// The peer's sync listener, `IP:port`.
    pub peer: String,
    /// The pairing code shown on the peer.
    pub code: String,
}

/// `POST /api/v1/ha/failover`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailoverBody {
    /// On the standby, take the active role although the peer is not
    /// connected.
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/ha/pairing-code`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct PairingCode {
    pub code: String,
    pub expires_at: String,
}

pub(crate) async fn get(State(state): State<AppState>) -> Result<Json<HaStatus>, ApiError> {
    Ok(Json(ha(&state)?.status()))
}

pub(crate) async fn pairing_code(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<PairingCode>, ApiError> {
    let (code, expires_at) = ha(&state)?.new_code()?;
    tracing::info!(by = %principal.username, "HA pairing code created");
    Ok(Json(PairingCode {
        code,
        expires_at: crate::clock::rfc3339(expires_at),
    }))
}

pub(crate) async fn join(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<HaStatus>, ApiError> {
    let body: JoinBody = super::api::parse_json(&body)?;
    let ha = ha(&state)?;
    ha.join(body.peer.trim(), &body.code).await?;
    tracing::info!(by = %principal.username, peer = %body.peer, "HA pair joined");
    Ok(Json(ha.status()))
}

pub(crate) async fn failover(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: FailoverBody = if body.is_empty() {
        FailoverBody::default()
    } else {
        super::api::parse_json(&body)?
    };
    let role = ha(&state)?.failover(body.force).await?;
    tracing::info!(by = %principal.username, role = role.as_str(), "HA failover");
    Ok(Json(json!({"role": role.as_str()})))
}

pub(crate) async fn unpair(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let reason = format!("unpaired by {}", principal.username);
    let told = ha(&state)?.unpair(&reason).await?;
    Ok(Json(json!({"unpaired": true, "peer_told": told})))
}
