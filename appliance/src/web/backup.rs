//! Full backup and restore, and the support bundle (`crate::backup`). Every
//! route here is admin-only: a backup holds password and token hashes and
//! the certificate's private key, and a restore replaces users.
//!
//! * `POST /api/v1/system/backup` — `{"passphrase": …, "network": bool}`
//!   (the passphrase in the body, never in a URL that logs keep) →
//!   the encrypted archive (`application/octet-stream`, a `.pgbackup`
//!   attachment). A passphrase under 10 characters is a 422.
//! * `POST /api/v1/system/restore/preview` — `{"passphrase": …, "archive":
//!   base64}` → what a restore would change (`backup::PreviewBody`); writes
//!   nothing.
//! * `POST /api/v1/system/restore` — the same body; restores, then answers
//!   the preview of what it did with the `version` and `generation` now in
//!   force. Every session ends (log in again with a restored user).
//!   A wrong passphrase, a changed byte, an archive of an unknown version or
//!   contents that do not pass the checks: 422 naming the reason, nothing
//!   changed. Bodies over 48 MiB (archives over 32 MiB) are refused. In an
//!   HA pair: 409 (unpair, restore, pair again).
//! * `GET /api/v1/system/support-bundle` — a tar.gz for the vendor's
//!   support, every secret removed (`backup::support`).

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Json, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::error::control_error;
use super::{ApiError, AppState, blocking};
use crate::backup::{self, BackupError, FormatError, PreviewBody};
use crate::control::Source;
use crate::events::{EventKind, NewEvent};

/// A restore body at most: a largest archive in base64, with room.
pub(crate) const MAX_RESTORE_BODY: usize = 48 * 1024 * 1024;

/// `POST /api/v1/system/backup`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupBody {
    /// At least 10 characters; needed again to restore.
    passphrase: String,
    /// Include the network and VRRP settings.
    #[serde(default)]
    network: bool,
}

/// `POST /api/v1/system/restore` and its preview.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreBody {
    passphrase: String,
    /// The archive, base64 (standard alphabet).
    archive: String,
}

fn api_error(error: BackupError) -> ApiError {
    match error {
        BackupError::Format(FormatError::WeakPassphrase) => {
            ApiError::invalid("passphrase", FormatError::WeakPassphrase.to_string())
        }
        BackupError::Format(error) => ApiError::invalid("archive", error.to_string()),
        BackupError::Contents { field, message } => {
            ApiError::invalid(&format!("archive.{field}"), message)
        }
        BackupError::Store(error) => ApiError::Store(error),
        BackupError::Tls(error) => ApiError::Tls(error),
    }
}

/// `POST /api/v1/system/backup`
pub(crate) async fn backup(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: BackupBody = super::api::parse_json(&body)?;
    if body.passphrase.chars().count() < backup::MIN_PASSPHRASE_LEN {
        return Err(api_error(FormatError::WeakPassphrase.into()));
    }
    let certificates = state.certificates.clone();
    let store = state.store.clone();
    let (archive, appliance_id) = tokio::task::spawn_blocking(move || {
        let snapshot = backup::collect(&store, certificates.as_deref(), body.network)?;
        let id = snapshot.appliance_id.clone();
        Ok::<_, BackupError>((backup::seal(&snapshot, &body.passphrase)?, id))
    })
    .await?
    .map_err(api_error)?;
    state.events.record(
        NewEvent::new(
            EventKind::System,
            format!("Backup downloaded by {}", principal.username),
        )
        .detail(json!({"bytes": archive.len(), "network": body.network})),
    );
    let date = crate::clock::now_rfc3339()
        .get(..10)
        .unwrap_or("")
        .to_owned();
    let name = format!("attachment; filename=\"poolgate-{appliance_id}-{date}.pgbackup\"");
    let mut response = archive.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Read, open and check a restore body, and what it would change.
async fn read_plan(state: &AppState, body: Body) -> Result<(backup::Plan, PreviewBody), ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_RESTORE_BODY)
        .await
        .map_err(|_| {
            ApiError::invalid(
                "archive",
                format!(
                    "the request is larger than {} MiB (archives are at most {} MiB)",
                    MAX_RESTORE_BODY / (1024 * 1024),
                    backup::MAX_ARCHIVE_BYTES / (1024 * 1024)
                ),
            )
        })?;
    let body: RestoreBody = super::api::parse_json(&bytes)?;
    let archive = base64::engine::general_purpose::STANDARD
        .decode(body.archive.trim())
        .map_err(|e| ApiError::invalid("archive", format!("not base64: {e}")))?;
    let desired = state.control.desired();
    let licensing = state.licensing.clone();
    let store = state.store.clone();
    let certificate = state.certificates.as_ref().and_then(|c| c.info().ok());
    let ca_bundles = state
        .publisher
        .current()
        .ca_bundles
        .keys()
        .cloned()
        .collect();
    tokio::task::spawn_blocking(move || {
        let snapshot = backup::open(&archive, &body.passphrase)?;
        let plan = backup::plan(snapshot, backup::KeepListen::of(&desired), &licensing)?;
        let current = backup::Current {
            version: desired.version,
            admin: desired.admin.clone(),
            credentials: store.credentials()?,
            certificate,
            ca_bundles,
            licence_id: licensing.status()?.license_id,
            appliance_id: licensing.appliance_id().to_owned(),
        };
        let preview = backup::preview(&plan, &current);
        Ok::<_, BackupError>((plan, preview))
    })
    .await?
    .map_err(api_error)
}

/// `POST /api/v1/system/restore/preview`
pub(crate) async fn preview(
    State(state): State<AppState>,
    body: Body,
) -> Result<Json<PreviewBody>, ApiError> {
    Ok(Json(read_plan(&state, body).await?.1))
}

/// `POST /api/v1/system/restore`
pub(crate) async fn restore(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    // The peer would see config versions move back and users change under
    // it; a pair is restored by unpairing, restoring one, pairing again.
    if state.ha.as_ref().is_some_and(|ha| ha.pair().is_some()) {
        return Err(ApiError::Ha(
            "this appliance is in an HA pair: unpair it (DELETE /api/v1/ha), restore, then pair the peer again"
                .to_owned(),
        ));
    }
    let (plan, preview) = read_plan(&state, body).await?;
    let certificate = plan.snapshot.certificate.clone();
    let outcome = state
        .control
        .restore(
            plan,
            Source::Api {
                user: principal.username.clone(),
            },
        )
        .await
        .map_err(|error| control_error(error, false))?;
    // Checked before the store was touched; installed once it is.
    let mut certificate_installed = false;
    if let (Some(pem), Some(certs)) = (certificate, state.certificates.clone()) {
        let installed =
            tokio::task::spawn_blocking(move || certs.install(&pem.certificate, &pem.key))
                .await??;
        match installed {
            Ok(_) => certificate_installed = true,
            Err(problem) => {
                tracing::error!(%problem, "Restored backup's certificate not installed; install one on the System page");
            }
        }
    }
    // The users and sessions changed under the login limiter and setup flag.
    state
        .setup_done
        .store(false, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(by = %principal.username, version = outcome.version, from = %preview.from_appliance, "Restored from a backup");
    Ok(Json(json!({
        "restored": preview,
        "version": outcome.version,
        "generation": outcome.generation,
        "certificate_installed": certificate_installed,
    })))
}

/// `GET /api/v1/system/support-bundle`
pub(crate) async fn support_bundle(State(state): State<AppState>) -> Result<Response, ApiError> {
    use crate::backup::support;
    let mut removed = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut json_file = |name: &str, mut value: Value, removed: &mut Vec<String>| {
        support::redact(&mut value, name.trim_end_matches(".json"), removed);
        let text = serde_json::to_vec_pretty(&value).expect("JSON serialises");
        files.push((name.to_owned(), text));
    };
    let Json(system) = super::appliance::system(State(state.clone())).await?;
    json_file("system.json", system, &mut removed);
    let Json(status) = super::status::status(State(state.clone())).await;
    json_file(
        "status.json",
        serde_json::to_value(status).expect("status serialises"),
        &mut removed,
    );
    let events = blocking(&state, |store| {
        store.events(&crate::store::EventFilter {
            limit: support::EVENTS,
            ..Default::default()
        })
    })
    .await?;
    json_file(
        "events.json",
        serde_json::to_value(events).expect("events serialise"),
        &mut removed,
    );
    let licensing = state.licensing.clone();
    let licence = tokio::task::spawn_blocking(move || licensing.status()).await??;
    json_file(
        "licence.json",
        serde_json::to_value(licence).expect("licence status serialises"),
        &mut removed,
    );
    let network = blocking(&state, |store| {
        Ok((
            store.setting("network.settings")?,
            store.setting(crate::vrrp::SETTINGS_KEY)?,
        ))
    })
    .await?;
    let parse = |text: Option<String>| {
        text.and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .unwrap_or(Value::Null)
    };
    json_file(
        "network.json",
        json!({"network": parse(network.0), "vrrp": parse(network.1)}),
        &mut removed,
    );
    let config = support::redact_toml(&state.control.desired().toml(), &mut removed);
    let made_at = crate::clock::now_rfc3339();
    let manifest = json!({
        "made_at": made_at,
        "version": env!("POOLGATE_VERSION"),
        "build": crate::build_info(),
        "files": ["manifest.json", "system.json", "status.json", "config.toml", "events.json", "licence.json", "network.json"],
        "secret_key_words": support::SECRET_WORDS,
        "removed": removed,
        "never_included": ["password and token hashes", "sessions", "the certificate's private key", "licence texts", "CA bundle contents"],
    });
    files.insert(
        0,
        (
            "manifest.json".to_owned(),
            serde_json::to_vec_pretty(&manifest).expect("JSON serialises"),
        ),
    );
    files.push(("config.toml".to_owned(), config.into_bytes()));
    let mtime = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let bundle = tokio::task::spawn_blocking(move || support::archive(&files, mtime))
        .await?
        .map_err(|e| ApiError::BadRequest(format!("cannot build the bundle: {e}")))?;
    let mut response = bundle.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    let date = made_at.get(..10).unwrap_or("").to_owned();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"poolgate-support-{date}.tar.gz\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
