//! The audit log (`crate::audit`), and the config versions its entries name:
//! * `GET /api/v1/audit` — newest first; filters `user`, `kind`, `since`,
//!   `until` (RFC 3339), paging with `before` (an id) and `limit` (1-1000,
//!   default 100); `format=json` (default) or `format=csv` to export (then
//!   `limit` may be up to 100,000: the whole log)
//! * `GET /api/v1/config/versions/{id}` — one committed config version as
//!   stored (its TOML), so a config change's before and after can be
//!   compared

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};

use super::extract::{csv_download, kind_filter, time_bound, wants_csv};
use super::{ApiError, AppState, blocking};
use crate::audit::{AUDIT_KEPT, AuditEntry, AuditFilter, AuditKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    user: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
    format: Option<String>,
}

/// `GET /api/v1/audit`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditList {
    pub entries: Vec<AuditEntry>,
    /// The `before` of the next (older) page, if there may be one.
    pub next_before: Option<i64>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    // An unknown parameter (a misspelt filter) or a non-number id is a 400
    // saying which, rather than a filter silently not applied.
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let csv = wants_csv(query.format.as_deref())?;
    let kind = kind_filter(
        query.kind,
        "audit",
        AuditKind::parse,
        (&AuditKind::ALL, AuditKind::as_str),
    )?;
    let max = if csv {
        usize::try_from(AUDIT_KEPT).unwrap_or(usize::MAX)
    } else {
        1000
    };
    let limit = query.limit.unwrap_or(if csv { max } else { 100 });
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("use 1-{max}")));
    }
    let filter = AuditFilter {
        username: query.user.filter(|user| !user.is_empty()),
        kind,
        since: time_bound("since", query.since)?,
        until: time_bound("until", query.until)?,
        before: query.before,
        limit,
    };
    let entries = blocking(&state, move |store| store.audit(&filter)).await?;
    if csv {
        return Ok(csv_download(
            "poolgate-audit.csv",
            crate::audit::to_csv(&entries),
        ));
    }
    let next_before = (entries.len() == limit)
        .then(|| entries.last().map(|entry| entry.id))
        .flatten();
    Ok(Json(AuditList {
        entries,
        next_before,
    })
    .into_response())
}

/// One committed config version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ConfigVersion {
    pub id: i64,
    pub created_at: String,
    pub source: String,
    pub toml: String,
}

pub(crate) async fn config_version(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ConfigVersion>, ApiError> {
    let not_found =
        || ApiError::NotFound(format!("no config version {:?}", super::auth::for_log(&id)));
    let number: i64 = id.parse().map_err(|_| not_found())?;
    let version = blocking(&state, move |store| store.config_version(number))
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(ConfigVersion {
        id: version.id,
        created_at: version.created_at,
        source: version.source,
        toml: version.toml,
    }))
}
