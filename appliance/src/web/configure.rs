//! Config as text and what a change would do, for the UI's editor and
//! import: nothing here writes; `PUT /api/v1/config` (in `api`) commits.
//!
//! * `GET  /api/v1/config/export` — the desired config as TOML, the same text
//!   as `poolgate export` (and `run --config` accepts it)
//! * `POST /api/v1/config/preview` — a whole config, as JSON or as TOML
//!   (`Content-Type: application/toml`), validated against the stored one:
//!   the changes it would make, a line diff of the TOML, and the config as
//!   JSON ready for `PUT /api/v1/config`; 422 with field errors (and, for
//!   TOML, line and column) otherwise

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::error::FieldProblem;
use super::{ApiError, AppState, blocking};
use crate::config::{self, Config, ConfigDiff, diff::DiffLine};

/// Unchanged lines shown around each change in a preview.
const CONTEXT_LINES: usize = 3;

/// Whether a request body is TOML (by its content type) rather than JSON.
fn is_toml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| {
            matches!(
                v.as_str(),
                "application/toml" | "text/x-toml" | "text/plain"
            )
        })
}

/// A whole config from a request body, JSON or TOML, validated by the one
/// validator. Field errors come back as 422 naming the field (and, for
/// TOML, its line and column); a body that is not JSON or TOML at all is 400.
pub fn parse_config(headers: &HeaderMap, body: &[u8]) -> Result<Config, ApiError> {
    if !is_toml(headers) {
        let file: config::ConfigFile = super::api::parse_json(body)?;
        return config::validate(&file).map_err(|errors| {
            ApiError::Invalid(
                errors
                    .into_iter()
                    .map(|error| FieldProblem {
                        field: error.path.to_string(),
                        message: error.message,
                        line: None,
                        column: None,
                    })
                    .collect(),
            )
        });
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the TOML body is not UTF-8".to_owned()))?;
    config::from_toml(text, "upload").map_err(|error| {
        let problems = error.problems();
        let located = |p: &config::Problem| (p.line > 0).then_some(p.line);
        match problems {
            [only] if only.field.is_none() => ApiError::BadRequest(format!(
                "body is not valid TOML: line {}, column {}: {}",
                only.line, only.column, only.message
            )),
            _ => ApiError::Invalid(
                problems
                    .iter()
                    .map(|p| FieldProblem {
                        field: p.field.clone().unwrap_or_default(),
                        message: p.message.clone(),
                        line: located(p),
                        column: located(p).map(|_| p.column),
                    })
                    .collect(),
            ),
        }
    })
}

/// The stored desired config as TOML, with each member's current admin
/// state; before anything is stored, the running bootstrap config.
async fn current_toml(state: &AppState) -> Result<String, ApiError> {
    let stored = blocking(state, |store| store.export_toml()).await?;
    Ok(stored.unwrap_or_else(|| config::to_toml(&state.publisher.current().config)))
}

/// `GET /api/v1/config/export`
pub async fn export(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = current_toml(&state).await?;
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
pub async fn preview(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let new = parse_config(&headers, &body)?;
    let licensing = state.licensing.clone();
    let licence = tokio::task::spawn_blocking(move || licensing.status()).await??;
    let licence_problem = licence.allows(&new).err();
    let old_text = current_toml(&state).await?;
    let stored = blocking(&state, |store| store.desired_config()).await?;
    let changes = config::diff(stored.as_ref().map(|s| &s.config), &new);
    let new_text = config::to_toml(&new);
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
        "restart_required": changes.listeners_changed && stored.is_some(),
        "summary": summary(&changes),
        "diff": lines,
        "licence_problem": licence_problem,
        "based_on_version": stored.as_ref().map(|s| s.id),
        "config": serde_json::to_value(new.source()).expect("a config file serialises to JSON"),
    })))
}

/// One sentence per structural change, in the order an operator checks them.
pub fn summary(diff: &ConfigDiff) -> Vec<String> {
    let member = |(pool, name): &(String, String)| format!("{pool}/{name}");
    let mut out = Vec::new();
    for key in &diff.members_added {
        out.push(format!("Member {} is added", member(key)));
    }
    for key in &diff.members_removed {
        out.push(format!(
            "Member {} is removed (its connections end, its users move)",
            member(key)
        ));
    }
    for key in &diff.members_changed {
        out.push(format!(
            "Member {} changes address, FQDN or weight",
            member(key)
        ));
    }
    for (key, state) in &diff.admin_states {
        if !diff.members_added.contains(key) {
            out.push(format!("Member {} becomes {}", member(key), state.as_str()));
        }
    }
    let mut named = |what: &str, set: &std::collections::BTreeSet<String>, verb: &str| {
        for name in set {
            out.push(format!("{what} {name} is {verb}"));
        }
    };
    named("Monitor", &diff.monitors_added, "added");
    named("Monitor", &diff.monitors_removed, "removed");
    named("Monitor", &diff.monitors_changed, "changed");
    named("Virtual service", &diff.services_added, "added");
    named("Virtual service", &diff.services_removed, "removed");
    named("Virtual service", &diff.services_changed, "changed");
    if diff.settings_changed {
        out.push("DNS, zone or pool settings change".to_owned());
    }
    if diff.listeners_changed {
        out.push("Listen addresses change (takes effect after a restart)".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn toml_is_chosen_by_content_type() {
        let mut headers = HeaderMap::new();
        assert!(!is_toml(&headers));
        for (value, toml) in [
            ("application/json", false),
            ("application/toml; charset=utf-8", true),
            ("text/plain", true),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_toml(&headers), toml, "{value}");
        }
    }

    #[test]
    fn summary_names_each_change() {
        let mut diff = ConfigDiff::default();
        let key = ("pool01".to_owned(), "fe04".to_owned());
        diff.members_added.insert(key.clone());
        diff.admin_states.insert(key, config::AdminState::Enabled);
        diff.admin_states.insert(
            ("pool01".to_owned(), "fe01".to_owned()),
            config::AdminState::Disabled,
        );
        diff.services_changed.insert("web-internal".to_owned());
        assert_eq!(
            summary(&diff),
            [
                "Member pool01/fe04 is added",
                "Member pool01/fe01 becomes disabled",
                "Virtual service web-internal is changed",
            ]
        );
    }
}
