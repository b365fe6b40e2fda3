//! CA bundles for TLS health checks (the customer's internal CAs), which a
//! monitor chooses with `ca_bundle = "name"`:
//!
//! * `GET /api/v1/ca-bundles` — every bundle: name, each certificate's
//!   subject, issuer, validity and SHA-256 fingerprint, and the monitors
//!   that use it
//! * `GET /api/v1/ca-bundles/{name}` — one bundle, with its PEM text
//! * `PUT /api/v1/ca-bundles/{name}` — upload or replace it; the body is the
//!   PEM text (one or more CERTIFICATE sections). Anything else (no
//!   certificate, a key, a CSR, an end-entity certificate, text that does
//!   not parse, over 512 KiB) is a 422 naming what is wrong, and nothing is
//!   written. Monitors that use it verify with the new one from their next
//!   probe.
//! * `DELETE /api/v1/ca-bundles/{name}` — 409 naming the monitors while any
//!   uses it; 404 if there is none of that name
//!
//! Every change goes through the control task, in line with config changes,
//! so a config can never name a bundle that is not stored.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Json;
use serde::Serialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::error::control_error;
use super::{ApiError, AppState};
use crate::control::Source;
use crate::health::ca::{self, CaBundleInfo};

/// `GET /api/v1/ca-bundles`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CaBundleList {
    ca_bundles: Vec<CaBundleInfo>,
}

/// `GET /api/v1/ca-bundles/{name}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CaBundleDetail {
    #[serde(flatten)]
    info: CaBundleInfo,
    pem: String,
}

/// `GET /api/v1/ca-bundles`
pub(crate) async fn list(State(state): State<AppState>) -> Json<CaBundleList> {
    let view = state.publisher.current();
    let ca_bundles = view
        .ca_bundles
        .values()
        .map(|bundle| bundle.summary(ca::users(&view.config, &bundle.name)))
        .collect();
    Json(CaBundleList { ca_bundles })
}

/// `GET /api/v1/ca-bundles/{name}`
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<CaBundleDetail>, ApiError> {
    let view = state.publisher.current();
    let bundle = view
        .ca_bundles
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no CA bundle {name:?} is uploaded")))?;
    Ok(Json(CaBundleDetail {
        info: bundle.summary(ca::users(&view.config, &name)),
        pem: bundle.pem.clone(),
    }))
}

/// `PUT /api/v1/ca-bundles/{name}`
pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    ca::check_name(&name).map_err(|problem| ApiError::invalid("name", problem))?;
    if body.len() > ca::MAX_PEM_BYTES {
        return Err(ApiError::invalid(
            "body",
            format!(
                "larger than {} KiB; is this a PEM file of CA certificates?",
                ca::MAX_PEM_BYTES / 1024
            ),
        ));
    }
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::invalid(
            "body",
            "is not text; upload the PEM file of the CA certificates (-----BEGIN CERTIFICATE-----)",
        )
    })?;
    let bundle = ca::parse(&name, text).map_err(|problem| ApiError::invalid("body", problem))?;
    let info = bundle.summary(Vec::new());
    let generation = state
        .control
        .put_ca_bundle(
            bundle,
            Source::Api {
                user: principal.username,
            },
        )
        .await
        .map_err(|error| control_error(error, false))?;
    let used_by = ca::users(&state.publisher.current().config, &name);
    Ok(Json(json!({
        "name": info.name,
        "certificates": info.certificates,
        "used_by": used_by,
        "generation": generation,
    })))
}

/// `DELETE /api/v1/ca-bundles/{name}`
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let generation = state
        .control
        .delete_ca_bundle(
            name.clone(),
            Source::Api {
                user: principal.username,
            },
        )
        .await
        .map_err(|error| control_error(error, false))?;
    Ok(Json(json!({"deleted": name, "generation": generation})))
}
