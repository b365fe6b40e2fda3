//! Users → Directory login: the Active Directory / LDAP settings and the
//! test button (`crate::ldap`). Reading is for every role (the service
//! account's password is never shown); changes and the test are admin's.
//!
//! * `GET /api/v1/auth/ldap` — the settings (`null` when off), the service
//!   account's password shown as `********`
//! * `PUT /api/v1/auth/ldap` — store settings (422 naming the field,
//!   nothing stored; `********` keeps the stored password)
//! * `DELETE /api/v1/auth/ldap` — directory login off (local users only)
//! * `POST /api/v1/auth/ldap/test` — `{"username", "password"}`: one login
//!   against the directory with the settings sent, or the stored ones when
//!   none are sent; answers who the user is and the role, or exactly where
//!   it stopped (always 200: the result is the answer)

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Json;
use serde::{Deserialize, Serialize};

use super::auth::Principal;
use super::{ApiError, AppState};
use crate::events::{EventKind, NewEvent};
use crate::ldap::{self, LdapLogin, LdapSettings};

/// The stored settings, if any.
pub(crate) fn stored(state: &AppState) -> Result<Option<LdapSettings>, ApiError> {
    let Some(text) = state.store.setting(ldap::SETTINGS_KEY)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|error| ApiError::BadRequest(format!("stored LDAP settings unreadable: {error}")))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LdapPage {
    pub settings: Option<LdapSettings>,
}

pub(crate) async fn get(State(state): State<AppState>) -> Result<Json<LdapPage>, ApiError> {
    Ok(Json(LdapPage {
        settings: stored(&state)?.map(|s| s.redacted()),
    }))
}

pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<LdapPage>, ApiError> {
    let mut settings: LdapSettings = super::api::parse_json(&body)?;
    settings.keep_password_of(stored(&state)?.as_ref());
    let problems = ldap::validate(&settings, &state.publisher.current().ca_bundles);
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    let text = serde_json::to_string(&settings).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    state.store.set_setting(ldap::SETTINGS_KEY, &text)?;
    state.events.record(
        NewEvent::new(
            EventKind::System,
            format!(
                "Directory login set up ({} servers)",
                settings.servers.len()
            ),
        )
        .detail(
            serde_json::json!({ "actor": principal.username, "settings": settings.redacted() }),
        ),
    );
    Ok(Json(LdapPage {
        settings: Some(settings.redacted()),
    }))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<LdapPage>, ApiError> {
    state.store.remove_setting(ldap::SETTINGS_KEY)?;
    state.events.record(
        NewEvent::new(
            EventKind::System,
            "Directory login turned off: local users only",
        )
        .detail(serde_json::json!({ "actor": principal.username })),
    );
    Ok(Json(LdapPage { settings: None }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestBody {
    pub username: String,
    pub password: String,
    /// Settings to try before storing them; the stored ones when absent.
    #[serde(default)]
    pub settings: Option<LdapSettings>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TestResult {
    pub ok: bool,
    /// Who the directory says the user is, when it worked.
    pub login: Option<LdapLogin>,
    /// Where it stopped, when it did not.
    pub error: Option<String>,
}

pub(crate) async fn test(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<TestResult>, ApiError> {
    let body: TestBody = super::api::parse_json(&body)?;
    let stored = stored(&state)?;
    let settings = match body.settings {
        Some(mut sent) => {
            sent.keep_password_of(stored.as_ref());
            sent
        }
        None => stored.ok_or_else(|| {
            ApiError::NotFound("directory login is not set up: send settings to try".into())
        })?,
    };
    let bundles = std::sync::Arc::clone(&state.publisher.current().ca_bundles);
    let problems = ldap::validate(&settings, &bundles);
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    Ok(Json(
        match ldap::login(&settings, &bundles, &body.username, &body.password).await {
            Ok(login) => TestResult {
                ok: true,
                login: Some(login),
                error: None,
            },
            Err(error) => TestResult {
                ok: false,
                login: None,
                error: Some(error.to_string()),
            },
        },
    ))
}
