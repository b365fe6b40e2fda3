//! The web UI's files, embedded from `web-ui/` at build time: one page, one
//! script, one stylesheet. Assets are served from a fixed table, so no
//! request path ever reaches the filesystem. Live status for the page comes
//! from `status_stream` as server-sent events, which end when the session
//! or token that opened them does.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};

use super::auth::Principal;
use super::{ApiError, AppState};

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web-ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../../web-ui/style.css"),
    ),
];
const INDEX: &str = include_str!("../../../web-ui/index.html");

pub(crate) async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

pub(crate) async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(file, _, _)| *file == name)
        .ok_or_else(|| ApiError::NotFound("no such asset".to_owned()))?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response())
}

/// How often counters are re-sent when nothing else changed.
const REFRESH: Duration = Duration::from_secs(2);

/// `GET /api/v1/status/stream`: the status document as an SSE `status` event
/// at once, on every new pool view, and every two seconds for the counters.
/// Before each later event the credentials are checked again, so the stream
/// ends within [`REFRESH`] of a logout, a password change, a revoked token
/// or an expiry.
pub(crate) async fn status_stream(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let views = state.publisher.subscribe();
    let start = (views, true, state, principal);
    let stream = stream::unfold(start, |(mut views, first, state, principal)| async move {
        if !first {
            // A closed channel (shutdown) or a timeout both just send again.
            let _ = tokio::time::timeout(REFRESH, views.changed()).await;
            if !super::auth::still_valid(&state, &principal).await {
                tracing::debug!(username = ?principal.username, "Status stream ended: credentials no longer valid");
                return None;
            }
        }
        let view = std::sync::Arc::clone(&views.borrow_and_update());
        let data = serde_json::to_string(&super::status::StatusBody::of(&view))
            .expect("the status body serialises to JSON");
        Some((
            Ok(Event::default().event("status").data(data)),
            (views, false, state, principal),
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
