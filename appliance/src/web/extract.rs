//! Reading what a request asks for, before any handler acts on it: a
//! config body as the control task takes it (TOML by its content type, JSON
//! otherwise), the config version an `If-Match` header names, and what a
//! log query (events, audit) asks for: its time bounds (`since`, `until`),
//! its `kind` and its export `format`.

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::control::ConfigInput;

/// Whether a request body is TOML (by its content type) rather than JSON.
pub(crate) fn is_toml(headers: &HeaderMap) -> bool {
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

/// A whole config from a request body: TOML by its content type, JSON
/// otherwise. Only a TOML body that is not UTF-8 is refused here (400); the
/// control task validates.
pub(crate) fn config_input(headers: &HeaderMap, body: &[u8]) -> Result<ConfigInput, ApiError> {
    if !is_toml(headers) {
        return Ok(ConfigInput::Json(body.to_vec()));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the TOML body is not UTF-8".to_owned()))?;
    Ok(ConfigInput::Toml(text.to_owned()))
}

/// `If-Match: "<config version>"`, when the client sends one: the change was
/// reviewed against that version and must not land on another.
pub(crate) fn expected_version(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest("If-Match must be a config version such as \"3\"".to_owned())
        })
}

/// A time bound of a log query (`since`, `until`): RFC 3339 with any
/// offset, as UTC in the form the logs store (`crate::clock::rfc3339`); an
/// empty one is no bound (an empty form field); 422 naming `field` for
/// anything else.
pub(crate) fn time_bound(field: &str, text: Option<String>) -> Result<Option<String>, ApiError> {
    text.filter(|text| !text.is_empty())
        .map(|text| {
            time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                .map(|at| crate::clock::rfc3339(at.to_offset(time::UtcOffset::UTC)))
                .map_err(|_| {
                    ApiError::invalid(field, "use an RFC 3339 time such as 2027-01-31T08:00:00Z")
                })
        })
        .transpose()
}

/// Whether a log query's `format` asks for CSV (`csv`) rather than JSON
/// (`json`, the default); 422 for anything else.
pub(crate) fn wants_csv(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(_) => Err(ApiError::invalid("format", "use json or csv")),
    }
}

/// A log query's `kind` as `parse` reads it (`what`: which log, for the
/// message); an empty one is no filter, anything else a 422 listing `all`
/// by their `name`.
pub(crate) fn kind_filter<K: Copy>(
    kind: Option<String>,
    what: &str,
    parse: fn(&str) -> Option<K>,
    (all, name): (&[K], fn(K) -> &'static str),
) -> Result<Option<K>, ApiError> {
    let Some(kind) = kind.filter(|kind| !kind.is_empty()) else {
        return Ok(None);
    };
    if let Some(found) = parse(&kind) {
        return Ok(Some(found));
    }
    let kinds: Vec<&str> = all.iter().map(|k| name(*k)).collect();
    Err(ApiError::invalid(
        "kind",
        format!(
            "no {what} kind {:?}; one of {}",
            super::auth::for_log(&kind),
            kinds.join(", ")
        ),
    ))
}

/// A CSV export as a download named `file`.
pub(crate) fn csv_download(file: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response()
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
    fn time_bounds_are_utc_and_name_their_field() {
        let bound = |text: &str| time_bound("since", Some(text.to_owned()));
        assert_eq!(
            bound("2027-01-31T09:30:00+01:00").expect("bound"),
            Some("2027-01-31T08:30:00Z".to_owned())
        );
        assert_eq!(bound("").expect("no bound"), None);
        assert_eq!(time_bound("since", None).expect("no bound"), None);
        match bound("yesterday") {
            Err(ApiError::Invalid(problems)) => assert_eq!(problems[0].field, "since"),
            other => panic!("{other:?}"),
        }
    }
}
