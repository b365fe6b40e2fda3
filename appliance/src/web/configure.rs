//! Config as text and what a change would do, for the UI's editor and
//! import: nothing here writes; `PUT /api/v1/config` commits. Both read the
//! committed config from the control task's memory, and a preview is the
//! control task's config path as a dry run, in line with the changes
//! around it.
//!
//! * `GET  /api/v1/config/export` — the desired config as TOML, the same text
//!   as `poolgate export` (and `run --config` accepts it)
//! * `POST /api/v1/config/preview` — a whole config, as JSON or as TOML
//!   (`Content-Type: application/toml`), validated against the stored one:
//!   the changes it would make, a line diff of the TOML, and the config as
//!   JSON ready for `PUT /api/v1/config`; 422 with field errors (and, for
//!   TOML, line and column) otherwise; `confirm_by` when it would move the
//!   admin listener (the deadline a commit now would get)
//! * `POST /api/v1/config/confirm` — keep the admin listener's move: only
//!   a request arriving on the new address counts; 409 when nothing awaits
//!   confirmation or the request came through another listener. This one
//!   does write: it ends the wait, and the old listener closes.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::auth::Principal;
use super::error::control_error;
use super::extract::{config_input, is_toml};
use super::{ApiError, AppState};
use crate::config::{self, diff::DiffLine};
use crate::control::Source;

/// Unchanged lines shown around each change in a preview.
const CONTEXT_LINES: usize = 3;

/// `GET /api/v1/config/export`
pub(crate) async fn export(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.control.desired().toml();
    Ok((
        [
            (header::CONTENT_TYPE, "application/toml; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"poolgate.toml\"",
            ),
        ],
        text,
    )
        .into_response())
}

/// `POST /api/v1/config/preview`
pub(crate) async fn preview(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let toml = is_toml(&headers);
    let input = config_input(&headers, &body)?;
    let source = Source::Api {
        user: principal.username,
    };
    let preview = state
        .control
        .preview(input, source)
        .await
        .map_err(|error| control_error(error, toml))?;
    let stored = preview.current.stored();
    let old_text = preview.current.toml();
    let new_text = config::to_toml(&preview.config);
    let lines: Vec<Value> = config::diff::text_diff(&old_text, &new_text, CONTEXT_LINES)
        .into_iter()
        .map(|line| match line {
            DiffLine::Same(text) => json!([" ", text]),
            DiffLine::Removed(text) => json!(["-", text]),
            DiffLine::Added(text) => json!(["+", text]),
            DiffLine::Skipped(count) => json!(["…", format!("{count} unchanged lines")]),
        })
        .collect();
    Ok(Json(json!({
        "changed": !lines.is_empty(),
        "confirm_by": crate::control::admin_move(&preview.current.config, &preview.config, state.control.confirm_timeout())
            .map(|moved| crate::clock::rfc3339(moved.confirm_by)),
        "summary": preview.diff.summary(),
        "diff": lines,
        "licence_problem": preview.licence_problem,
        "based_on_version": stored.then_some(preview.current.version),
        "config": serde_json::to_value(preview.config.source()).expect("a config file serialises to JSON"),
    })))
}

/// The answer of `POST /api/v1/config/confirm`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ConfirmBody {
    /// The admin address kept.
    pub admin: String,
    /// The address that closes now.
    pub closed: String,
}

/// `POST /api/v1/config/confirm`
pub(crate) async fn confirm(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    listened_on: Option<Extension<super::ListenedOn>>,
    reached: Option<Extension<super::ReachedAt>>,
) -> Result<Json<ConfirmBody>, ApiError> {
    // Every admin listener sets both; a router without them (tests) has no
    // address a move could be confirmed on.
    let (
        Some(Extension(super::ListenedOn(listened_on))),
        Some(Extension(super::ReachedAt(reached))),
    ) = (listened_on, reached)
    else {
        return Err(ApiError::Confirmation(
            "this listener cannot confirm a move".to_owned(),
        ));
    };
    let arrival = crate::control::Arrival {
        listened_on,
        reached,
    };
    let source = Source::Api {
        user: principal.username,
    };
    let confirmed = state
        .control
        .confirm(arrival, source)
        .await
        .map_err(|error| control_error(error, false))?;
    let moved = confirmed.admin_move;
    Ok(Json(ConfirmBody {
        admin: moved.to.to_string(),
        closed: moved.from.to_string(),
    }))
}
