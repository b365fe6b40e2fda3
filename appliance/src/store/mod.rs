//! The appliance's durable state in SQLite: desired config (every committed
//! version), members' admin state, admin users, API tokens, settings, the
//! event log, and the users seen in REGISTERs (bounded in count and age).
//!
//! Invariants:
//! * WAL journal with `synchronous = FULL`: a call that returned `Ok` has been
//!   fsync'd, so anything acknowledged survives a crash or power loss.
//! * Foreign keys are on; migrations are versioned (`PRAGMA user_version`).
//! * A config is committed together with its admin-state changes and its
//!   event in one transaction, so the three never disagree.
//! * Only the owner can reach the data: the data directory is 0700 and the
//!   database with its WAL and shared-memory files 0600 (they hold password
//!   and token hashes). Both are created that way and tightened at every
//!   open if an older version or an admin left them wider.
//!
//! The API is synchronous; async callers use `spawn_blocking`.

mod migrations;
pub mod seen_writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use password_hash::rand_core::OsRng;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::config::{self, AdminState, Config, ConfigDiff, MemberKey};
use crate::events::{EventKind, EventSink, NewEvent};

pub use migrations::LATEST as SCHEMA_VERSION;

pub const DB_FILE: &str = "poolgate.db";
pub const MIN_PASSWORD_LEN: usize = 10;

/// A user name poolgate accepts: 1-64 letters, digits, '.', '_' or '-' (so
/// it is safe in logs, events and file names as it is).
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create or restrict {path} in the data directory: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "database schema version {found} is newer than this poolgate understands ({supported}); upgrade poolgate"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("stored config version {id} no longer validates: {message}")]
    StoredConfig { id: i64, message: String },
    #[error("pool {pool:?} has no member {member:?}")]
    UnknownMember { pool: String, member: String },
    #[error("password must be at least {MIN_PASSWORD_LEN} characters")]
    WeakPassword,
    #[error("password hashing: {0}")]
    PasswordHash(String),
}

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

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Oldest first after this id; `None`: the newest first.
    pub after: Option<i64>,
    pub limit: usize,
    pub kind: Option<String>,
    pub pool: Option<String>,
    pub member: Option<String>,
}

/// How many seen users to keep, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenLimits {
    pub max: u64,
    pub max_age: std::time::Duration,
}

/// What one batch of seen users left in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenRecorded {
    /// Users remembered now, over all pools.
    pub users: u64,
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

/// The desired config as last committed.
#[derive(Debug, Clone)]
pub struct StoredConfig {
    pub id: i64,
    pub created_at: String,
    pub config: Config,
}

/// Handle to the database; cheap to clone, safe to share between threads.
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// Create `data_dir` (and missing parents) owner-only, or tighten an
/// existing one to 0700.
pub fn prepare_data_dir(data_dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    let error = |source| StoreError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(error)?;
    tighten(data_dir, 0o700).map_err(error)
}

/// Take every permission outside `allowed` off `path`, if it exists.
pub fn tighten(path: &Path, allowed: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if mode & !allowed != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & allowed))?;
        tracing::info!(path = %path.display(), from = format!("{mode:o}"), to = format!("{:o}", mode & allowed), "Tightened file mode");
    }
    Ok(())
}

/// Create an empty owner-only file unless `path` exists.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("the current time is representable in RFC 3339")
}

impl Store {
    /// Open (creating if needed) the store in `data_dir` and migrate it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_at_version(data_dir, migrations::LATEST)
    }

    /// Open and migrate only up to `version`: lets tests build a database as
    /// an older poolgate left it.
    #[doc(hidden)]
    pub fn open_at_version(data_dir: &Path, version: u32) -> Result<Self, StoreError> {
        prepare_data_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        // Created owner-only before SQLite sees it: SQLite gives the WAL and
        // shared-memory files the database file's mode.
        create_private(&path).map_err(|source| StoreError::DataDir {
            path: path.clone(),
            source,
        })?;
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            tighten(&file, 0o600).map_err(|source| StoreError::DataDir { path: file, source })?;
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrate(&mut conn, version)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (an
        // open transaction rolls back on drop), so a poisoned lock is usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An online copy of the whole database to `dest` (SQLite's backup API:
    /// consistent while other connections keep writing).
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        self.conn().backup(rusqlite::MAIN_DB, dest, None)?;
        Ok(())
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |row| row.get(0))?)
    }

    /// The latest committed desired config, if any.
    pub fn desired_config(&self) -> Result<Option<StoredConfig>, StoreError> {
        let row: Option<(i64, String, String)> = self
            .conn()
            .query_row(
                "SELECT id, created_at, toml FROM config_versions ORDER BY id DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let Some((id, created_at, text)) = row else {
            return Ok(None);
        };
        let config = config::from_toml(&text, &format!("stored config {id}")).map_err(|error| {
            StoreError::StoredConfig {
                id,
                message: error.to_string(),
            }
        })?;
        Ok(Some(StoredConfig {
            id,
            created_at,
            config,
        }))
    }

    /// Commit `config` as the desired config. Admin states change only where
    /// the diff says the config asks for it; members that left the config
    /// lose theirs. Returns the new version id and the diff from the previous.
    pub fn commit_config(
        &self,
        config: &Config,
        source: &str,
    ) -> Result<(i64, ConfigDiff), StoreError> {
        let previous = self.desired_config()?;
        let changes = config::diff(previous.as_ref().map(|p| &p.config), config);
        self.transact(|tx, now| {
        tx.execute(
            "INSERT INTO config_versions (created_at, source, toml) VALUES (?1, ?2, ?3)",
            params![now, source, config::to_toml(config)],
        )?;
        let id = tx.last_insert_rowid();
        for (pool, member) in &changes.members_removed {
            tx.execute(
                "DELETE FROM member_admin_state WHERE pool = ?1 AND member = ?2",
                params![pool, member],
            )?;
        }
        for ((pool, member), state) in &changes.admin_states {
            tx.execute(
                "INSERT INTO member_admin_state (pool, member, state, changed_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (pool, member) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at",
                params![pool, member, state.as_str(), now],
            )?;
        }
        let logged = !changes.is_empty() || previous.is_none();
        let event = logged.then(|| NewEvent {
                    kind: EventKind::Config,
                    message: format!("Config version {id} committed from {source}"),
                    detail: Some(serde_json::json!({
                        "version": id,
                        "members_added": changes.members_added.len(),
                        "members_removed": changes.members_removed.len(),
                        "members_changed": changes.members_changed.len(),
                        "admin_states_set": changes.admin_states.len(),
                    })),
                    pool: None,
                    member: None,
                });
        Ok((id, event))
        })
        .map(|id| (id, changes))
    }

    /// The desired config as TOML that `poolgate run --config` accepts again,
    /// with each member's `state` set to its current admin state so that an
    /// export taken mid-drain restores the drain.
    pub fn export_toml(&self) -> Result<Option<String>, StoreError> {
        let Some(stored) = self.desired_config()? else {
            return Ok(None);
        };
        let admin = self.admin_states()?;
        let mut file = stored.config.source().clone();
        for pool in &mut file.pools {
            for member in &mut pool.members {
                if let Some(state) = admin.get(&(pool.name.clone(), member.name.clone())) {
                    member.state = *state;
                }
            }
        }
        let config = config::validate(&file).map_err(|errors| StoreError::StoredConfig {
            id: stored.id,
            message: format!("{errors:?}"),
        })?;
        Ok(Some(config::to_toml(&config)))
    }

    /// Every member's admin state.
    pub fn admin_states(&self) -> Result<BTreeMap<MemberKey, AdminState>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT pool, member, state FROM member_admin_state")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut states = BTreeMap::new();
        for row in rows {
            let (pool, member, state) = row?;
            // The CHECK constraint guarantees one of the three names.
            let state = AdminState::parse(&state).unwrap_or(AdminState::Enabled);
            states.insert((pool, member), state);
        }
        Ok(states)
    }

    /// When a member's admin state last changed (RFC 3339).
    pub fn admin_state_changed_at(
        &self,
        pool: &str,
        member: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT changed_at FROM member_admin_state WHERE pool = ?1 AND member = ?2",
                params![pool, member],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Set one member's admin state and log it, durably. Returns the previous
    /// state.
    pub fn set_admin_state(
        &self,
        pool: &str,
        member: &str,
        state: AdminState,
        actor: &str,
    ) -> Result<AdminState, StoreError> {
        self.transact(|tx, now| {
        let previous: Option<String> = tx
            .query_row(
                "SELECT state FROM member_admin_state WHERE pool = ?1 AND member = ?2",
                params![pool, member],
                |row| row.get(0),
            )
            .optional()?;
        let Some(previous) = previous.as_deref().and_then(AdminState::parse) else {
            return Err(StoreError::UnknownMember {
                pool: pool.to_owned(),
                member: member.to_owned(),
            });
        };
        tx.execute(
            "UPDATE member_admin_state SET state = ?3, changed_at = ?4 WHERE pool = ?1 AND member = ?2",
            params![pool, member, state.as_str(), now],
        )?;
        let event = NewEvent {
                kind: EventKind::Admin,
                pool: Some(pool.to_owned()),
                member: Some(member.to_owned()),
                message: format!(
                    "{actor} set {pool}/{member} {} (was {})",
                    state.as_str(),
                    previous.as_str()
                ),
                detail: Some(
                    serde_json::json!({"from": previous.as_str(), "to": state.as_str(), "actor": actor}),
                ),
            };
        Ok((previous, Some(event)))
        })
    }

    pub fn record_event(&self, event: &NewEvent) -> Result<i64, StoreError> {
        let conn = self.conn();
        insert_event(&conn, &now_rfc3339(), event)
    }

    /// Record several events in one transaction (one fsync): health
    /// transitions arrive in bursts when a whole pool changes at once.
    pub fn record_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let at = now_rfc3339();
        for event in events {
            insert_event(&tx, &at, event)?;
        }
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

    /// The newest `limit` events, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.events(&EventFilter {
            limit,
            ..EventFilter::default()
        })
    }

    /// Events matching `filter`: oldest first after `filter.after`, else
    /// the newest first. The filtering happens in SQL (the index on pool,
    /// member and id serves the per-member queries).
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let order = if filter.after.is_some() {
            "ASC"
        } else {
            "DESC"
        };
        let sql = format!(
            "SELECT id, at, kind, pool, member, message, detail FROM events
             WHERE id > ?1 AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR pool = ?3) AND (?4 IS NULL OR member = ?4)
             ORDER BY id {order} LIMIT ?5"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let params = params![
            filter.after.unwrap_or(0),
            filter.kind,
            filter.pool,
            filter.member,
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

    pub fn has_admin(&self) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM admin_users)", [], |row| {
                row.get(0)
            })?)
    }

    /// Set (or replace) a user's password, hashed with argon2id, and end
    /// every session and revoke every token of that user: whoever changes a
    /// password because it leaked must not leave the leaker logged in.
    pub fn set_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<PasswordChange, StoreError> {
        self.change_password(username, password, &Keep::default())
    }

    /// [`Store::set_password`], keeping what `keep` names: the session that
    /// asked for the change, and (if the admin says so) the API tokens.
    pub fn change_password(
        &self,
        username: &str,
        password: &str,
        keep: &Keep,
    ) -> Result<PasswordChange, StoreError> {
        let hash = hash_password(password)?;
        let kept = keep.session.as_deref().map(secret_hash);
        self.transact(|tx, now| {
            tx.execute(
                "INSERT INTO admin_users (username, password_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at",
                params![username, hash, now],
            )?;
            let sessions_ended = tx.execute(
                "DELETE FROM sessions WHERE username = ?1 AND (?2 IS NULL OR id_hash != ?2)",
                params![username, kept],
            )?;
            let tokens_revoked = if keep.tokens {
                0
            } else {
                tx.execute(
                    "UPDATE api_tokens SET revoked_at = ?2 WHERE username = ?1 AND revoked_at IS NULL",
                    params![username, now],
                )?
            };
            let change = PasswordChange {
                sessions_ended,
                tokens_revoked,
            };
            let event = NewEvent {
                kind: EventKind::Admin,
                message: format!(
                    "Password set for {username}; {sessions_ended} other session(s) ended, {tokens_revoked} API token(s) revoked"
                ),
                detail: Some(serde_json::json!({
                    "username": username,
                    "sessions_ended": sessions_ended,
                    "tokens_revoked": tokens_revoked,
                })),
                pool: None,
                member: None,
            };
            Ok((change, Some(event)))
        })
    }

    /// Whether `password` is `username`'s. Unknown users verify as false,
    /// after verifying against a dummy hash with the same parameters, so the
    /// time taken does not tell which user names exist.
    pub fn verify_password(&self, username: &str, password: &str) -> Result<bool, StoreError> {
        let hash: Option<String> = self
            .conn()
            .query_row(
                "SELECT password_hash FROM admin_users WHERE username = ?1",
                params![username],
                |row| row.get(0),
            )
            .optional()?;
        let Some(hash) = hash else {
            let dummy = PasswordHash::new(dummy_hash()?)
                .map_err(|error| StoreError::PasswordHash(error.to_string()))?;
            let _ = Argon2::default().verify_password(password.as_bytes(), &dummy);
            return Ok(false);
        };
        let parsed = PasswordHash::new(&hash)
            .map_err(|error| StoreError::PasswordHash(error.to_string()))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Remember addresses-of-record seen in REGISTERs: (pool, aor) pairs.
    /// Then forget users not seen within `limits.max_age`, and the least
    /// recently seen beyond `limits.max` (over all pools), in the same
    /// transaction, so the table never stays above its cap.
    pub fn record_seen_aors(
        &self,
        seen: &[(String, String)],
        limits: SeenLimits,
    ) -> Result<SeenRecorded, StoreError> {
        self.record_seen_aors_at(seen, limits, time::OffsetDateTime::now_utc())
    }

    /// `record_seen_aors` as if it were `now`.
    #[doc(hidden)]
    pub fn record_seen_aors_at(
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
    pub fn seen_aors_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM seen_aors", [], |row| row.get(0))?)
    }

    /// The addresses-of-record seen in a pool's REGISTERs.
    pub fn seen_aors(&self, pool: &str) -> Result<Vec<String>, StoreError> {
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
    pub fn seen_aors_page(
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

    /// The text of the licence in force (the newest installed).
    pub fn current_licence(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT text FROM licences ORDER BY id DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Store a verified licence and log it.
    pub fn install_licence(
        &self,
        licence_id: &str,
        customer: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        self.transact(|tx, now| {
            tx.execute(
                "INSERT INTO licences (licence_id, text, installed_at) VALUES (?1, ?2, ?3)",
                params![licence_id, text, now],
            )?;
            let event = NewEvent {
                kind: EventKind::License,
                message: format!("Licence {licence_id} for {customer} installed"),
                pool: None,
                member: None,
                detail: None,
            };
            Ok(((), Some(event)))
        })
    }

    /// Read a setting, or store `make()`'s value if there is none yet.
    pub fn setting_or_insert(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            params![key, make()],
        )?;
        Ok(conn.query_row(
            "SELECT value FROM settings WHERE key = ?1",
            params![key],
            |row| row.get(0),
        )?)
    }
}

/// A random secret (256 bits) as hex, and the SHA-256 hex of it that is
/// stored instead. Secrets this long need no slow hash.
pub fn new_secret() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let secret = hex(&bytes);
    let hash = secret_hash(&secret);
    (secret, hash)
}

pub fn secret_hash(secret: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A logged-in admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub username: String,
    pub csrf: String,
    pub expires_at: i64,
}

/// An API token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// When it stops working (RFC 3339); `None`: it never expires.
    pub expires_at: Option<String>,
    pub expired: bool,
    /// When it was last used, to the minute.
    pub last_used_at: Option<String>,
}

/// A token that authenticated a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAuth {
    pub id: i64,
    pub username: String,
}

/// What a password change leaves in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keep {
    /// The cookie secret of the session that changes the password.
    pub session: Option<String>,
    /// Keep the user's API tokens (otherwise all are revoked).
    pub tokens: bool,
}

/// What a password change ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PasswordChange {
    pub sessions_ended: usize,
    pub tokens_revoked: usize,
}

/// `last_used_at` is written at most this often per token.
const LAST_USED_RESOLUTION_S: i64 = 60;

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl Store {
    /// Start a session; returns the cookie secret and the session.
    pub fn create_session(
        &self,
        username: &str,
        lifetime: std::time::Duration,
    ) -> Result<(String, Session), StoreError> {
        let (secret, hash) = new_secret();
        let (csrf, _) = new_secret();
        let expires_at = unix_now() + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        let conn = self.conn();
        conn.execute(
            "DELETE FROM sessions WHERE expires_at <= ?1",
            params![unix_now()],
        )?;
        conn.execute(
            "INSERT INTO sessions (id_hash, username, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hash, username, csrf, now_rfc3339(), expires_at],
        )?;
        Ok((
            secret,
            Session {
                username: username.to_owned(),
                csrf,
                expires_at,
            },
        ))
    }

    /// The live session whose cookie secret is `secret`.
    pub fn session(&self, secret: &str) -> Result<Option<Session>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT username, csrf, expires_at FROM sessions WHERE id_hash = ?1 AND expires_at > ?2",
                params![secret_hash(secret), unix_now()],
                |row| {
                    Ok(Session {
                        username: row.get(0)?,
                        csrf: row.get(1)?,
                        expires_at: row.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn delete_session(&self, secret: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM sessions WHERE id_hash = ?1",
            params![secret_hash(secret)],
        )?;
        Ok(())
    }

    /// Create an API token; the secret is returned once and stored hashed.
    /// `expires_at` (unix seconds), if given, ends it.
    pub fn create_token(
        &self,
        username: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<(i64, String), StoreError> {
        let (secret, hash) = new_secret();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO api_tokens (username, name, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![username, name, hash, now_rfc3339(), expires_at],
        )?;
        Ok((conn.last_insert_rowid(), secret))
    }

    /// The user an unrevoked, unexpired token belongs to.
    pub fn token_user(&self, secret: &str) -> Result<Option<String>, StoreError> {
        Ok(self.use_token(secret)?.map(|token| token.username))
    }

    /// The unrevoked, unexpired token whose secret is `secret`, noting that
    /// it was used. The note is written at most once a minute per token, so
    /// a script polling every second does not cost an fsync a request.
    pub fn use_token(&self, secret: &str) -> Result<Option<TokenAuth>, StoreError> {
        let now = unix_now();
        let conn = self.conn();
        let token = conn
            .query_row(
                "SELECT id, username FROM api_tokens
                 WHERE token_hash = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
                params![secret_hash(secret), now],
                |row| {
                    Ok(TokenAuth {
                        id: row.get(0)?,
                        username: row.get(1)?,
                    })
                },
            )
            .optional()?;
        if let Some(token) = &token {
            conn.execute(
                "UPDATE api_tokens SET last_used_at = ?2
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2 - ?3)",
                params![token.id, now, LAST_USED_RESOLUTION_S],
            )?;
        }
        Ok(token)
    }

    /// Whether token `id` is still unrevoked and unexpired.
    pub fn token_active(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM api_tokens
             WHERE id = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2))",
            params![id, unix_now()],
            |row| row.get(0),
        )?)
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, username, name, created_at, revoked_at, expires_at, last_used_at FROM api_tokens ORDER BY id",
        )?;
        let now = unix_now();
        let rows = stmt.query_map([], |row| {
            let expires_at: Option<i64> = row.get(5)?;
            let last_used_at: Option<i64> = row.get(6)?;
            Ok(TokenInfo {
                id: row.get(0)?,
                username: row.get(1)?,
                name: row.get(2)?,
                created_at: row.get(3)?,
                revoked_at: row.get(4)?,
                expires_at: expires_at.map(rfc3339),
                expired: expires_at.is_some_and(|at| at <= now),
                last_used_at: last_used_at.map(rfc3339),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revoke a token; false if there is no such unrevoked token.
    pub fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        let changed = self.conn().execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_rfc3339()],
        )?;
        Ok(changed == 1)
    }

    /// Set the first admin's password, atomically refusing if any admin
    /// exists. Returns false (and writes nothing) when one does.
    /// The cheap check comes first: once an admin exists nothing is hashed.
    pub fn set_first_password(&self, username: &str, password: &str) -> Result<bool, StoreError> {
        if self.has_admin()? {
            return Ok(false);
        }
        let hash = hash_password(password)?;
        self.transact(|tx, now| {
        let exists: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM admin_users)", [], |row| {
                row.get(0)
            })?;
        if exists {
            return Ok((false, None));
        }
        tx.execute(
            "INSERT INTO admin_users (username, password_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
            params![username, hash, now],
        )?;
        let event = NewEvent {
                kind: EventKind::Admin,
                message: format!("First-boot setup: password set for {username}"),
                pool: None,
                member: None,
                detail: None,
            };
        Ok((true, Some(event)))
        })
    }

    /// Run `write` in one immediate transaction with the current time; the
    /// event it returns is logged in the same transaction, so a change and
    /// its event are durable together or not at all.
    fn transact<T>(
        &self,
        write: impl FnOnce(&Transaction<'_>, &str) -> Result<(T, Option<NewEvent>), StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_rfc3339();
        let (value, event) = write(&tx, &now)?;
        if let Some(event) = event {
            insert_event(&tx, &now, &event)?;
        }
        tx.commit()?;
        Ok(value)
    }
}

/// Check the password's strength and hash it with argon2id.
fn hash_password(password: &str) -> Result<String, StoreError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(StoreError::WeakPassword);
    }
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| StoreError::PasswordHash(error.to_string()))?
        .to_string())
}

/// A hash of a random password with the parameters real hashes use, for
/// verifying unknown users in the same time as known ones. Computed once.
fn dummy_hash() -> Result<&'static str, StoreError> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let (password, _) = new_secret();
    let hash = hash_password(&password)?;
    Ok(DUMMY.get_or_init(|| hash))
}

fn insert_event(conn: &Connection, at: &str, event: &NewEvent) -> Result<i64, StoreError> {
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

fn migrate(conn: &mut Connection, target: u32) -> Result<(), StoreError> {
    let found: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > migrations::LATEST {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: migrations::LATEST,
        });
    }
    for (index, sql) in migrations::MIGRATIONS.iter().enumerate() {
        let version = u32::try_from(index + 1).expect("fewer than 2^32 migrations");
        if version <= found || version > target {
            continue;
        }
        let tx: Transaction<'_> = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

impl EventSink for Store {
    fn store_events(&self, events: &[NewEvent]) -> Result<(), String> {
        self.record_events(events)
            .map_err(|error| error.to_string())
    }
}
