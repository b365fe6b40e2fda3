//! `ApiError`: every way an API request can fail, and the one place that
//! decides its HTTP status. The match is exhaustive on purpose: a new error
//! forces a decision about what the client sees.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;

use crate::control::ControlError;
use crate::store::StoreError;
use crate::system::network::NetworkError;
use crate::system::upgrade::{UpgradeError, Verdict};

/// One field-named problem, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
    /// Where in an uploaded TOML text the problem lies (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub error: String,
    /// With 422: each problem by the field it is in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldProblem>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(&'static str),
    /// Something still in use, named in the message (a CA bundle that
    /// monitors name).
    #[error("{0}")]
    InUse(String),
    /// A config change while the admin listener's move awaits confirmation,
    /// or a confirmation with nothing to confirm (or on the old address).
    #[error("{0}")]
    Confirmation(String),
    /// This appliance is the standby of an HA pair, or the pair is not in a
    /// state for the request (`crate::ha`).
    #[error("{0}")]
    Ha(String),
    /// The config changed since the version the client reviewed.
    #[error(
        "the configuration changed since you reviewed it (now version {current}); review again"
    )]
    ConfigChanged { current: i64 },
    /// The licence does not allow this change (traffic is never affected).
    #[error("{0}")]
    Licence(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid input")]
    Invalid(Vec<FieldProblem>),
    #[error("too many attempts; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("the appliance is shutting down")]
    Unavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// Reading or writing the appliance certificate failed.
    #[error(transparent)]
    Tls(#[from] crate::certs::TlsError),
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
}

impl ApiError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldProblem {
            field: field.to_owned(),
            message: message.into(),
            line: None,
            column: None,
        }])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_)
            | Self::InUse(_)
            | Self::ConfigChanged { .. }
            | Self::Confirmation(_)
            | Self::Ha(_) => StatusCode::CONFLICT,
            Self::Licence(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(StoreError::UnknownMember { .. }) => StatusCode::NOT_FOUND,
            Self::Store(StoreError::WeakPassword) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Store(
                StoreError::DataDir { .. }
                | StoreError::Sqlite(_)
                | StoreError::SchemaTooNew { .. }
                | StoreError::StoredConfig { .. }
                | StoreError::PasswordHash(_),
            )
            | Self::Join(_)
            | Self::Tls(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Network(error) => match error {
                NetworkError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                NetworkError::NotManaged
                | NetworkError::Pending(_)
                | NetworkError::NothingPending
                | NetworkError::Expired => StatusCode::CONFLICT,
                // The root step's own words: what the admin must fix.
                NetworkError::Apply(_) => StatusCode::BAD_GATEWAY,
                NetworkError::Store(_) | NetworkError::Join(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            // `UpgradeError::verdict` decides, for the console's exit code too.
            Self::Upgrade(error) => match error.verdict() {
                Verdict::Refused => StatusCode::UNPROCESSABLE_ENTITY,
                Verdict::DoesNotApply => StatusCode::CONFLICT,
                Verdict::Interrupted => StatusCode::BAD_REQUEST,
                Verdict::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        let (error, fields) = match &self {
            Self::Invalid(problems) => ("invalid input".to_owned(), problems.clone()),
            Self::Network(NetworkError::Invalid(problems)) => (
                "invalid input".to_owned(),
                problems
                    .iter()
                    .map(|p| FieldProblem {
                        field: p.field.clone(),
                        message: p.message.clone(),
                        line: None,
                        column: None,
                    })
                    .collect(),
            ),
            Self::Store(StoreError::WeakPassword) => (
                "invalid input".to_owned(),
                vec![FieldProblem {
                    field: "password".to_owned(),
                    message: self.to_string(),
                    line: None,
                    column: None,
                }],
            ),
            _ if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %self, "API request failed");
                (
                    "internal error; see the appliance log".to_owned(),
                    Vec::new(),
                )
            }
            _ => (self.to_string(), Vec::new()),
        };
        let body = ErrorBody { error, fields };
        let mut response = (status, Json(body)).into_response();
        if let Self::RateLimited { retry_after_s } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
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
        error @ (ControlError::UnknownMember { .. } | ControlError::UnknownCaBundle(_)) => {
            ApiError::NotFound(error.to_string())
        }
        error @ ControlError::CaBundleInUse { .. } => ApiError::InUse(error.to_string()),
        ControlError::Store(error) => ApiError::Store(error),
        ControlError::StoredConfig { version, source } => {
            ApiError::Store(StoreError::StoredConfig {
                id: version,
                message: source.to_string(),
            })
        }
        error @ (ControlError::AwaitingConfirmation { .. }
        | ControlError::NothingToConfirm
        | ControlError::ConfirmElsewhere { .. }) => ApiError::Confirmation(error.to_string()),
        error @ (ControlError::Standby { .. } | ControlError::Replay { .. }) => {
            ApiError::Ha(error.to_string())
        }
        ControlError::Stopped => ApiError::Unavailable,
    }
}
