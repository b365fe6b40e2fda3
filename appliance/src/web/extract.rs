//! Reading what a request asks for, before any handler acts on it: a
//! config body as the control task takes it (TOML by its content type, JSON
//! otherwise) and the config version an `If-Match` header names.

use axum::http::{HeaderMap, header};

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
}
