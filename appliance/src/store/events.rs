//! The event log table: what `GET /api/v1/events` reads. Events are
//! appended with the time of their transaction; a change committed with its
//! event (a config version, an admin state) writes both in one transaction
//! (`Store::transact`), everything else arrives in batches from the event
//! log's writer (`crate::events`). Ids only grow, so id order is commit order.

use rusqlite::{Connection, params};
use serde::Serialize;

use super::{Store, StoreError, now_rfc3339};
use crate::events::{EventKind, EventSink, NewEvent};

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub pool: Option<String>,
    pub member: Option<String>,
    pub message: String,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

/// How many events the log keeps (the newest).
pub(crate) const EVENTS_KEPT: i64 = 100_000;

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventFilter {
    /// Oldest first after this id; `None`: the newest first.
    pub after: Option<i64>,
    /// Only ids below this one: the next (older) page of a newest-first read.
    pub before: Option<i64>,
    pub limit: usize,
    pub kind: Option<EventKind>,
    pub pool: Option<String>,
    pub member: Option<String>,
    /// RFC 3339 bounds on `at`, inclusive.
    pub since: Option<String>,
    pub until: Option<String>,
}

impl Store {
    pub(crate) fn record_event(&self, event: &NewEvent) -> Result<i64, StoreError> {
        let conn = self.conn();
        insert_event(&conn, &now_rfc3339(), event)
    }

    /// Record several events in one transaction (one fsync): health
    /// transitions arrive in bursts when a whole pool changes at once. The
    /// log keeps the newest [`EVENTS_KEPT`]: older ones go in the same
    /// transaction, so a flapping member cannot fill the disk.
    pub(crate) fn record_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let at = now_rfc3339();
        let mut last = 0;
        for event in events {
            last = insert_event(&tx, &at, event)?;
        }
        // Ids only grow, so the oldest are a range of the primary key.
        tx.execute(
            "DELETE FROM events WHERE id <= ?1",
            params![last - EVENTS_KEPT],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Events with id greater than `after`, oldest first, at most `limit`.
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.events(&EventFilter {
            after: Some(after),
            limit,
            ..EventFilter::default()
        })
    }

    /// Events matching `filter`: oldest first after `filter.after`, else
    /// the newest first (below `filter.before`, if given). The filtering
    /// happens in SQL, with only the conditions the filter has, so the index
    /// on pool, member and id serves the per-pool and per-member queries,
    /// paged or not (an `?n IS NULL OR` condition would keep SQLite from
    /// using it).
    pub(crate) fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let sql = events_sql(filter);
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let params = params![
            filter.after.unwrap_or(0),
            filter.kind.map(EventKind::as_str),
            filter.pool,
            filter.member,
            filter.before,
            filter.since,
            filter.until,
            limit
        ];
        let rows = stmt.query_map(params, |row| {
            let detail: Option<String> = row.get(6)?;
            Ok(Event {
                id: row.get(0)?,
                at: row.get(1)?,
                kind: row.get(2)?,
                pool: row.get(3)?,
                member: row.get(4)?,
                message: row.get(5)?,
                detail: detail.and_then(|text| serde_json::from_str(&text).ok()),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The query of `filter`. Every shape binds the same eight parameters
/// (`?8`, the limit, is always named, so all eight count); those of absent
/// conditions are unused. The times are compared as times (`julianday`),
/// not as text: a stored time has as many fractional digits as it needs.
pub(super) fn events_sql(filter: &EventFilter) -> String {
    let order = if filter.after.is_some() {
        "ASC"
    } else {
        "DESC"
    };
    let mut conditions = String::from("id > ?1");
    for (present, condition) in [
        (filter.kind.is_some(), " AND kind = ?2"),
        (filter.pool.is_some(), " AND pool = ?3"),
        (filter.member.is_some(), " AND member = ?4"),
        (filter.before.is_some(), " AND id < ?5"),
        (
            filter.since.is_some(),
            " AND julianday(at) >= julianday(?6)",
        ),
        (
            filter.until.is_some(),
            " AND julianday(at) <= julianday(?7)",
        ),
    ] {
        if present {
            conditions.push_str(condition);
        }
    }
    format!(
        "SELECT id, at, kind, pool, member, message, detail FROM events
         WHERE {conditions} ORDER BY id {order} LIMIT ?8"
    )
}

pub(super) fn insert_event(
    conn: &Connection,
    at: &str,
    event: &NewEvent,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO events (at, kind, pool, member, message, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            at,
            event.kind.as_str(),
            event.pool,
            event.member,
            event.message,
            event.detail.as_ref().map(serde_json::Value::to_string)
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

impl EventSink for Store {
    fn store_events(&self, events: &[NewEvent]) -> Result<(), String> {
        self.record_events(events)
            .map_err(|error| error.to_string())
    }
}

#[cfg(test)]
impl Store {
    /// The newest `limit` events, newest first.
    pub(crate) fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.events(&EventFilter {
            limit,
            ..EventFilter::default()
        })
    }
}
