//! The web UI's files, embedded from `web-ui/` at build time: one page, one
//! script, one stylesheet. Assets are served from a fixed table, so no
//! request path ever reaches the filesystem. Live status for the page comes
//! from `status_stream` as server-sent events, which end when the session
//! or token that opened them does: `status` (the status document) and
//! `change` (each committed change, from the control task's stream).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast;

use super::auth::Principal;
use super::history::ChangeMark;
use super::{ApiError, AppState};
use crate::control::Committed;
use crate::state::PoolView;

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

/// What one stream holds between events.
struct Follow {
    views: tokio::sync::watch::Receiver<Arc<PoolView>>,
    /// `None` once the control task has stopped (shutdown).
    commits: Option<broadcast::Receiver<Committed>>,
    first: bool,
    state: AppState,
    principal: Principal,
}

/// The next committed change; pending for ever once there are none to come.
/// A stream that fell behind skips what it missed: the next `status` event
/// shows where things are.
async fn next_commit(commits: &mut Option<broadcast::Receiver<Committed>>) -> Committed {
    loop {
        let Some(receiver) = commits else {
            return std::future::pending().await;
        };
        match receiver.recv().await {
            Ok(committed) => return committed,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => *commits = None,
        }
    }
}

/// `GET /api/v1/status/stream`: the status document as an SSE `status` event
/// at once, on every new pool view, and every two seconds for the counters;
/// each committed change as a `change` event (`seq`, `version`, `source`,
/// `summary`, as the history lists it) as it is committed. Before each later
/// event the credentials are checked again, so the stream ends within
/// [`REFRESH`] of a logout, a password change, a revoked token or an expiry.
pub(crate) async fn status_stream(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let start = Follow {
        views: state.publisher.subscribe(),
        commits: Some(state.control.subscribe()),
        first: true,
        state,
        principal,
    };
    let stream = stream::unfold(start, |mut follow| async move {
        let mut change = None;
        if !follow.first {
            tokio::select! {
                changed = tokio::time::timeout(REFRESH, follow.views.changed()) => {
                    // The publisher stopped: poolgate is shutting down.
                    if matches!(changed, Ok(Err(_))) {
                        return None;
                    }
                }
                committed = next_commit(&mut follow.commits) => change = Some(committed),
            }
            if !super::auth::still_valid(&follow.state, &follow.principal).await {
                tracing::debug!(username = ?follow.principal.username, "Status stream ended: credentials no longer valid");
                return None;
            }
        }
        follow.first = false;
        let event = match change {
            Some(committed) => {
                let mark = ChangeMark::of(&committed, crate::store::now_rfc3339());
                let data =
                    serde_json::to_string(&mark).expect("a committed change serialises to JSON");
                Event::default().event("change").data(data)
            }
            None => {
                let view = Arc::clone(&follow.views.borrow_and_update());
                let data = serde_json::to_string(&super::status::StatusBody::of(&view))
                    .expect("the status body serialises to JSON");
                Event::default().event("status").data(data)
            }
        };
        Some((Ok(event), follow))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
