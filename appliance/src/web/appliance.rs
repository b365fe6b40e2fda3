//! The appliance itself, for the UI's system page:
//!
//! * `GET /api/v1/system` — version, build, appliance id, uptime, config
//!   version, the certificate in use, the running root slot, the version
//!   before this one, the last upgrade's outcome and a scheduled reboot
//! * `GET /api/v1/certificate` — details of the certificate the admin
//!   listener and SIP over TLS present
//! * `PUT /api/v1/certificate` — `{"certificate": PEM chain, "key": PEM}`
//!   replaces it for both, from the next handshake on. The pair is checked
//!   first (both parse, the key belongs to the certificate, it is valid
//!   now); a refused pair is a 422 naming the field and writes nothing.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::{ApiError, AppState, blocking};
use crate::certs::Certificates;
use crate::events::{EventKind, NewEvent};

fn certificates(state: &AppState) -> Result<&std::sync::Arc<Certificates>, ApiError> {
    state
        .certificates
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("this listener has no certificate".to_owned()))
}

/// `GET /api/v1/system`
pub(crate) async fn system(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let appliance_id = blocking(&state, |store| store.setting("appliance_id")).await?;
    let certificate = state.certificates.as_ref().and_then(|c| c.info().ok());
    let upgrades = std::sync::Arc::clone(&state.upgrades);
    let slots = tokio::task::spawn_blocking(move || upgrades.upgrader.info()).await??;
    let view = state.publisher.current();
    let mut body = json!({
        "version": env!("POOLGATE_VERSION"),
        "build": crate::build_info(),
        "commit": env!("POOLGATE_GIT_COMMIT"),
        "profile": env!("POOLGATE_PROFILE"),
        "target": env!("POOLGATE_TARGET"),
        "appliance_id": appliance_id,
        "uptime_s": state.started.elapsed().as_secs(),
        "config_version": view.config_version,
        "certificate": certificate,
    });
    // The running slot, the version before this one, and upgrades.
    if let (Some(body), Value::Object(slots)) = (
        body.as_object_mut(),
        serde_json::to_value(slots).expect("system info serialises"),
    ) {
        for (key, value) in slots {
            body.entry(key).or_insert(value);
        }
    }
    body["reboot_scheduled"] = json!(state.upgrades.scheduled());
    body["reboot_mode"] = json!(state.upgrades.mode);
    Ok(Json(body))
}

/// `GET /api/v1/certificate`
pub(crate) async fn certificate(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let info = certificates(&state)?
        .info()
        .map_err(|problem| ApiError::invalid("certificate", problem.to_string()))?;
    Ok(Json(
        serde_json::to_value(info).expect("certificate info serialises"),
    ))
}

/// A certificate and its key, as PEM text.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateBody {
    /// The server certificate first, then any intermediates.
    certificate: String,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    key: String,
}

/// Upper bound on an uploaded PEM: a long chain of RSA-4096 certificates is
/// well under this.
const MAX_PEM_BYTES: usize = 256 * 1024;

/// `PUT /api/v1/certificate`
pub(crate) async fn install_certificate(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: CertificateBody = super::api::parse_json(&body)?;
    // One writer: the standby takes the active's certificate over the link.
    if let Some(ha) = &state.ha
        && ha.role() == Some(crate::ha::Role::Standby)
    {
        return Err(ApiError::Ha(
            "this appliance is the standby of an HA pair: install the certificate on the active, and it follows here".into(),
        ));
    }
    for (field, text) in [("certificate", &body.certificate), ("key", &body.key)] {
        if text.len() > MAX_PEM_BYTES {
            return Err(ApiError::invalid(
                field,
                "larger than 256 KiB; is this a PEM file?",
            ));
        }
    }
    let certs = std::sync::Arc::clone(certificates(&state)?);
    let installed =
        tokio::task::spawn_blocking(move || certs.install(&body.certificate, &body.key)).await??;
    let info =
        installed.map_err(|problem| ApiError::invalid(problem.field(), problem.to_string()))?;
    state.events.record(
        NewEvent::new(
            EventKind::System,
            format!(
                "Certificate for {} installed by {} (valid until {})",
                info.subject, principal.username, info.not_after
            ),
        )
        .detail(json!({"sha256_fingerprint": info.sha256_fingerprint})),
    );
    Ok(Json(
        serde_json::to_value(info).expect("certificate info serialises"),
    ))
}
