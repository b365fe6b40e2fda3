//! The addresses-of-record seen in REGISTERs, per pool, for the registrar
//! what-if over real users. Bounded: users unseen for longer than the
//! configured age, and the least recently seen beyond the cap, are forgotten
//! in the same transaction that records a batch.

use rusqlite::params;

use super::{Store, StoreError};

/// How many seen users to keep, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeenLimits {
    pub max: u64,
    pub max_age: std::time::Duration,
}

/// What one batch of seen users left in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeenRecorded {
    /// Users remembered now, over all pools.
    pub(crate) users: u64,
    /// Users this batch made the store forget (by age or over the cap).
    pub evicted: u64,
}

/// Rows read per page of seen users.
const SEEN_PAGE: usize = 10_000;

/// `last_seen` as written since schema 7: RFC 3339 to the second in UTC,
/// fixed width, so the text sorts in time order.
fn seen_stamp(at: time::OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .expect("zero nanoseconds are valid")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC time is representable in RFC 3339")
}

impl Store {
    /// Remember addresses-of-record seen in REGISTERs: (pool, aor) pairs.
    /// Then forget users not seen within `limits.max_age`, and the least
    /// recently seen beyond `limits.max` (over all pools), in the same
    /// transaction, so the table never stays above its cap.
    pub(crate) fn record_seen_aors(
        &self,
        seen: &[(String, String)],
        limits: SeenLimits,
    ) -> Result<SeenRecorded, StoreError> {
        self.record_seen_aors_at(seen, limits, time::OffsetDateTime::now_utc())
    }

    /// `record_seen_aors` as if it were `now`.
    pub(super) fn record_seen_aors_at(
        &self,
        seen: &[(String, String)],
        limits: SeenLimits,
        now: time::OffsetDateTime,
    ) -> Result<SeenRecorded, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let stamp = seen_stamp(now);
        let cutoff = seen_stamp(
            time::Duration::try_from(limits.max_age)
                .ok()
                .and_then(|age| now.checked_sub(age))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        );
        let mut evicted = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO seen_aors (pool, aor, last_seen) VALUES (?1, ?2, ?3)
                 ON CONFLICT (pool, aor) DO UPDATE SET last_seen = excluded.last_seen",
            )?;
            for (pool, aor) in seen {
                insert.execute(params![pool, aor, stamp])?;
            }
            evicted += tx
                .prepare_cached("DELETE FROM seen_aors WHERE last_seen < ?1")?
                .execute(params![cutoff])?;
        }
        let count: u64 = tx.query_row("SELECT COUNT(*) FROM seen_aors", [], |row| row.get(0))?;
        let users = if count > limits.max {
            evicted += tx
                .prepare_cached(
                    "DELETE FROM seen_aors WHERE rowid IN
                     (SELECT rowid FROM seen_aors ORDER BY last_seen, rowid LIMIT ?1)",
                )?
                .execute(params![count - limits.max])?;
            limits.max
        } else {
            count
        };
        tx.commit()?;
        Ok(SeenRecorded {
            users,
            evicted: evicted as u64,
        })
    }

    /// How many users are remembered, over all pools.
    pub(crate) fn seen_aors_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM seen_aors", [], |row| row.get(0))?)
    }

    /// The addresses-of-record seen in a pool's REGISTERs.
    pub(crate) fn seen_aors(&self, pool: &str) -> Result<Vec<String>, StoreError> {
        let mut all = Vec::new();
        loop {
            let page = self.seen_aors_page(pool, all.last().map(String::as_str), SEEN_PAGE)?;
            let done = page.len() < SEEN_PAGE;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// Up to `limit` of a pool's seen addresses-of-record after `after`, in
    /// order. Reading page by page holds the database only for one page at
    /// a time, so a large table does not stall the writers.
    pub(super) fn seen_aors_page(
        &self,
        pool: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT aor FROM seen_aors WHERE pool = ?1 AND aor > ?2 ORDER BY aor LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                pool,
                after.unwrap_or(""),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| row.get(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
