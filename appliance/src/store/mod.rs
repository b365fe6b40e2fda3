//! The appliance's durable state in SQLite, one file per table group:
//! desired config versions (`config_versions`), members' admin state
//! (`admin_state`), the event log (`events`), admin users with their
//! sessions and API tokens (`auth`), settings and licences (`settings`), CA
//! bundles for TLS health checks (`ca_bundles`), the audit log (`audit`),
//! what a full backup reads and a restore replaces in one transaction
//! (`restore`), and
//! the users seen in REGISTERs, bounded in count and age (`seen`). This file
//! keeps the `Store` handle, opening and migrations, and `transact`.
//!
//! Invariants:
//! * WAL journal with `synchronous = FULL`: a call that returned `Ok` has been
//!   fsync'd, so anything acknowledged survives a crash or power loss.
//! * Foreign keys are on; migrations are versioned (`PRAGMA user_version`).
//! * A change is written together with its event in one transaction
//!   (`transact`): a config version with its admin-state changes, an admin
//!   state, a password; the two never disagree.
//! * The store records what it is given: configs arrive validated (from the
//!   control task, `crate::control`) and are stored as their TOML; nothing
//!   here validates a config again.
//! * Only the owner can reach the data: the data directory is 0700 and the
//!   database with its WAL and shared-memory files 0600 (they hold password
//!   and token hashes). Both are created that way and tightened at every
//!   open if an older version or an admin left them wider.
//!
//! The API is synchronous; async callers use `spawn_blocking`.

mod admin_state;
mod audit;
mod auth;
pub(crate) mod ca_bundles;
mod config_versions;
mod events;
mod migrations;
mod restore;
mod seen;
pub(crate) mod seen_writer;
mod settings;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, Transaction};

use crate::events::NewEvent;

pub use auth::{
    BUILTIN_ADMIN, Keep, MIN_PASSWORD_LEN, PasswordChange, Role, Session, TokenAuth, TokenInfo,
    UserChange, UserInfo, new_secret, secret_hash, valid_username,
};
pub(crate) use auth::{Credentials, DirectoryName};
pub(crate) use config_versions::StoredVersion;
pub use events::Event;
pub(crate) use events::EventFilter;
pub use migrations::LATEST as SCHEMA_VERSION;
pub(crate) use restore::{AdminRow, LicenceRow, OTHER_APPLIANCE_LICENCES, Restore};
pub(crate) use seen::SeenLimits;
pub use settings::SettingWrite;

pub const DB_FILE: &str = "poolgate.db";

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
    #[error("stored config version {id} cannot be read: {message}")]
    StoredConfig { id: i64, message: String },
    #[error("pool {pool:?} has no member {member:?}")]
    UnknownMember { pool: String, member: String },
    #[error("password must be at least {MIN_PASSWORD_LEN} characters")]
    WeakPassword,
    #[error("password hashing: {0}")]
    PasswordHash(String),
}

/// Handle to the database; cheap to clone, safe to share between threads.
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// Create `data_dir` (and missing parents) owner-only, or tighten an
/// existing one to 0700.
pub(crate) fn prepare_data_dir(data_dir: &Path) -> Result<(), StoreError> {
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
pub(crate) fn tighten(path: &Path, allowed: u32) -> std::io::Result<()> {
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

pub(crate) use crate::clock::now_rfc3339;

impl Store {
    /// Open (creating if needed) the store in `data_dir` and migrate it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_at_version(data_dir, migrations::LATEST)
    }

    /// Open and migrate only up to `version`: lets tests build a database as
    /// an older poolgate left it.
    fn open_at_version(data_dir: &Path, version: u32) -> Result<Self, StoreError> {
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

    pub(crate) fn path(&self) -> &Path {
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
    pub(crate) fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        self.conn().backup(rusqlite::MAIN_DB, dest, None)?;
        Ok(())
    }

    pub(crate) fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |row| row.get(0))?)
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
            events::insert_event(&tx, &now, &event)?;
        }
        tx.commit()?;
        Ok(value)
    }
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
