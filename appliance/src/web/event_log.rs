//! The event log (`crate::events`, stored by `store::events`):
//! * `GET /api/v1/events` — newest first, or oldest first after `after` (an
//!   id: how scripts and the syslog tail it); filters `kind`, `pool`,
//!   `member`, `since` and `until` (RFC 3339, inclusive); paging newest
//!   first with `before` (an id; the answer's `next_before`) and `limit`
//!   (default 100, at most 1000: a larger one is taken as 1000, a smaller as
//!   1); `format=json` (default) or `format=csv` to export (then `limit`
//!   defaults to 1000)
//!
//! An unknown `kind`, an unreadable time or `format` is a 422 naming the
//! parameter; a non-number id or `limit` a 400. Unknown parameters are
//! ignored, as they always were here (the audit log refuses them).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};

use super::extract::{csv_download, kind_filter, time_bound, wants_csv};
use super::{ApiError, AppState, blocking};
use crate::events::EventKind;
use crate::store::{Event, EventFilter};

/// Events in one answer at most, as JSON or CSV.
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
pub(crate) struct EventQuery {
    after: Option<i64>,
    before: Option<i64>,
    limit: Option<usize>,
    kind: Option<String>,
    pool: Option<String>,
    member: Option<String>,
    since: Option<String>,
    until: Option<String>,
    format: Option<String>,
}

/// `GET /api/v1/events`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EventList {
    pub events: Vec<Event>,
    /// The `before` of the next (older) page, if there may be one; always
    /// null oldest first (after `after`: the last id is the next `after`).
    pub next_before: Option<i64>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let csv = wants_csv(query.format.as_deref())?;
    let kind = kind_filter(
        query.kind,
        "event",
        EventKind::parse,
        (&EventKind::ALL, EventKind::as_str),
    )?;
    let limit = query
        .limit
        .unwrap_or(if csv { MAX_LIMIT } else { 100 })
        .clamp(1, MAX_LIMIT);
    let filter = EventFilter {
        after: query.after,
        before: query.before,
        limit,
        kind,
        pool: query.pool,
        member: query.member,
        since: time_bound("since", query.since)?,
        until: time_bound("until", query.until)?,
    };
    let newest_first = filter.after.is_none();
    let events = blocking(&state, move |store| store.events(&filter)).await?;
    if csv {
        return Ok(csv_download("poolgate-events.csv", to_csv(&events)));
    }
    let next_before = (newest_first && events.len() == limit)
        .then(|| events.last().map(|event| event.id))
        .flatten();
    Ok(Json(EventList {
        events,
        next_before,
    })
    .into_response())
}

/// CSV of events (`crate::csv`); `detail` as compact JSON.
fn to_csv(events: &[Event]) -> String {
    crate::csv::document(
        &["id", "at", "kind", "pool", "member", "message", "detail"],
        events.iter().map(|event| {
            [
                event.id.to_string(),
                event.at.clone(),
                event.kind.clone(),
                event.pool.clone().unwrap_or_default(),
                event.member.clone().unwrap_or_default(),
                event.message.clone(),
                event
                    .detail
                    .as_ref()
                    .map(|detail| detail.to_string())
                    .unwrap_or_default(),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_column_each_and_detail_as_json() {
        let event = Event {
            id: 7,
            at: "2027-01-31T08:00:00Z".to_owned(),
            kind: "health".to_owned(),
            pool: Some("pool01".to_owned()),
            member: None,
            message: "fe-sip: up -> down (refused, reset)".to_owned(),
            detail: Some(serde_json::json!({"state": "down"})),
        };
        assert_eq!(
            to_csv(&[event]),
            "id,at,kind,pool,member,message,detail\r\n\
             7,2027-01-31T08:00:00Z,health,pool01,,\"fe-sip: up -> down (refused, reset)\",\"{\"\"state\"\":\"\"down\"\"}\"\r\n"
        );
    }
}
