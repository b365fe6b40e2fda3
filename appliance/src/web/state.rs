//! What every handler can reach (`AppState`), the one way a handler calls
//! the store (`blocking`, off the async threads), and the one way it asks
//! for a change: a config body becomes a `control::ConfigInput`
//! (`config_input`), the control task does the rest, and its refusals become
//! API errors (`control_error`).

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, header};

use super::error::FieldProblem;
use super::{ApiError, auth, history};
use crate::control::{ConfigInput, ControlError, ControlHandle};
use crate::state::PublisherHandle;
use crate::store::{Store, StoreError};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Every change (configs, member actions) goes through the control task.
    pub control: ControlHandle,
    pub publisher: PublisherHandle,
    pub store: Store,
    pub started: Instant,
    /// With `--require-setup-code`: the one-time code first-boot setup needs.
    pub setup_code: Option<Arc<auth::setup_code::SetupCode>>,
    pub login_limiter: Arc<auth::LoginLimiter>,
    /// The few password hashes computed at once.
    pub hashing: Arc<auth::HashGate>,
    pub licensing: crate::license::Licensing,
    /// Counters of the DNS and SIP services, for `/metrics`.
    pub dns_stats: Arc<crate::dns::DnsStats>,
    pub sip_stats: Arc<crate::sip::SipStats>,
    /// The appliance certificate (admin listener and SIP over TLS).
    pub certificates: Option<Arc<crate::certs::Certificates>>,
    /// Upgrades and the reboot into them (`run` sets the real layout and
    /// reboot mode; the default never reboots).
    pub upgrades: Arc<crate::system::reboot::Upgrades>,
    /// Connections per member over the last minutes (`history::run` fills it).
    pub history: Arc<history::History>,
    /// The accept layer's counters of every TCP listener, for `/metrics`.
    pub listeners: Arc<crate::net::Registry>,
    /// Where handlers record what they did (and whose counters `/metrics` shows).
    pub events: crate::events::EventLog,
}

impl AppState {
    pub fn new(
        control: ControlHandle,
        publisher: PublisherHandle,
        store: Store,
        licensing: crate::license::Licensing,
        setup_code: Option<auth::setup_code::SetupCode>,
        events: crate::events::EventLog,
    ) -> Self {
        let data_dir = store.path().parent().map(Into::into).unwrap_or_default();
        Self {
            control,
            publisher,
            store,
            started: Instant::now(),
            setup_code: setup_code.map(Arc::from),
            login_limiter: Arc::default(),
            hashing: Arc::default(),
            licensing,
            dns_stats: Arc::default(),
            sip_stats: Arc::default(),
            certificates: None,
            upgrades: Arc::new(crate::system::reboot::Upgrades::never_rebooting(data_dir)),
            history: Arc::default(),
            listeners: Arc::default(),
            events,
        }
    }
}

/// Run a store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    Ok(tokio::task::spawn_blocking(move || call(&store)).await??)
}

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

/// What the client sees when the control task refuses a change. `toml`:
/// the config came as TOML (its syntax errors say so, with line and column).
pub(crate) fn control_error(error: ControlError, toml: bool) -> ApiError {
    match error {
        ControlError::Invalid(error) => {
            let problems = error.problems();
            let located = |p: &crate::config::Problem| (p.line > 0).then_some(p.line);
            match problems {
                // One problem without a field: the body does not parse.
                [only] if only.field.is_none() => ApiError::BadRequest(if toml {
                    format!(
                        "body is not valid TOML: line {}, column {}: {}",
                        only.line, only.column, only.message
                    )
                } else {
                    format!("body is not valid JSON: {}", only.message)
                }),
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
        }
        ControlError::Licence(reason) => ApiError::Licence(reason),
        ControlError::VersionMismatch { current, .. } => ApiError::ConfigChanged { current },
        error @ ControlError::UnknownMember { .. } => ApiError::NotFound(error.to_string()),
        ControlError::Store(error) => ApiError::Store(error),
        ControlError::StoredConfig { version, source } => {
            ApiError::Store(StoreError::StoredConfig {
                id: version,
                message: source.to_string(),
            })
        }
        ControlError::Stopped => ApiError::Unavailable,
    }
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
