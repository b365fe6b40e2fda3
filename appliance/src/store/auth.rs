//! Admin users, their sessions and API tokens: passwords are hashed with
//! argon2id; session ids and token secrets are random 256-bit values of
//! which only the SHA-256 is stored, so a copy of the database logs nobody in.
//! A password change ends the user's other sessions (and, unless kept, revokes
//! the tokens) in the same transaction as the new hash and its event.
//!
//! Roles: each user, session and token carries one ([`Role`]). A session
//! takes its user's role at login; a token its creator's or a lower one. A
//! changed role or password, or a removed user, ends the user's sessions and
//! revokes their tokens, so no credential outlives the role it was given
//! under. The last admin can be neither removed nor demoted, and the
//! built-in `admin` (the break-glass account) is always an admin: both are
//! decided inside the writing transaction.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use password_hash::rand_core::OsRng;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Store, StoreError, now_rfc3339};
use crate::events::{EventKind, NewEvent};

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

/// What a user may do. Ordered: each role may do everything the ones below
/// it may. The text form is stored and part of the API.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Reads, and drain, enable and disable members.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Self; 3] = [Self::Viewer, Self::Operator, Self::Admin];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role as stored: the CHECK constraint admits only the three, so any
/// other text is a corrupt row, read as the least privilege.
fn stored_role(text: &str) -> Role {
    Role::parse(text).unwrap_or(Role::Viewer)
}

/// The built-in account: always an admin, never removed (break-glass when
/// a directory login is down).
pub const BUILTIN_ADMIN: &str = "admin";

/// The password hash of a user the directory logged in (`crate::ldap`):
/// no password verifies against it, so such a user logs in only through the
/// directory; the row carries the role the groups gave at the last login.
pub(crate) const DIRECTORY_USER: &str = "!directory";

/// What a directory login may do with a user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirectoryName {
    /// A local user of that name exists: only its local password counts.
    Local,
    /// Unknown here, or a directory user before: the directory decides.
    Directory,
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub(crate) username: String,
    pub csrf: String,
    pub expires_at: i64,
    pub role: Role,
}

/// A local user as listed (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserInfo {
    pub username: String,
    pub role: Role,
    pub created_at: String,
    pub updated_at: String,
    /// The built-in `admin`: always an admin, cannot be removed.
    pub builtin: bool,
    /// Live sessions and active API tokens.
    pub sessions: i64,
    pub tokens: i64,
}

/// What a user change did, or why it did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    Done {
        sessions_ended: usize,
        tokens_revoked: usize,
    },
    NoSuchUser,
    /// The user exists already (create).
    Exists,
    /// It would leave no admin, or demote or remove the built-in admin.
    LastAdmin,
    BuiltinAdmin,
}

/// An API token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub(crate) username: String,
    pub name: String,
    /// What the token may do: its creator's role or a lower one.
    pub role: Role,
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
    pub(crate) username: String,
    /// The token's role, never above its user's current one.
    pub role: Role,
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

fn unix_rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(crate::clock::rfc3339)
        .unwrap_or_default()
}

impl Store {
    pub(crate) fn has_admin(&self) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM admin_users)", [], |row| {
                row.get(0)
            })?)
    }

    /// Set (or replace) a user's password, hashed with argon2id, and end
    /// every other session and revoke every token of that user (whoever
    /// changes a password because it leaked must not leave the leaker logged
    /// in), keeping what `keep` names: the session that asked for the
    /// change, and (if the admin says so) the API tokens.
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
        // A directory user's row holds no password: only the directory checks it.
        let hash = hash.filter(|hash| hash != DIRECTORY_USER);
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

    /// Start a session; returns the cookie secret and the session.
    pub(crate) fn create_session(
        &self,
        username: &str,
        role: Role,
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
            "INSERT INTO sessions (id_hash, username, csrf, created_at, expires_at, role) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![hash, username, csrf, now_rfc3339(), expires_at, role.as_str()],
        )?;
        Ok((
            secret,
            Session {
                username: username.to_owned(),
                csrf,
                expires_at,
                role,
            },
        ))
    }

    /// The live session whose cookie secret is `secret`.
    pub(crate) fn session(&self, secret: &str) -> Result<Option<Session>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT username, csrf, expires_at, role FROM sessions WHERE id_hash = ?1 AND expires_at > ?2",
                params![secret_hash(secret), unix_now()],
                |row| {
                    Ok(Session {
                        username: row.get(0)?,
                        csrf: row.get(1)?,
                        expires_at: row.get(2)?,
                        role: stored_role(&row.get::<_, String>(3)?),
                    })
                },
            )
            .optional()?)
    }

    pub(crate) fn delete_session(&self, secret: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM sessions WHERE id_hash = ?1",
            params![secret_hash(secret)],
        )?;
        Ok(())
    }

    /// Create an API token; the secret is returned once and stored hashed.
    /// `expires_at` (unix seconds), if given, ends it.
    pub(crate) fn create_token(
        &self,
        username: &str,
        name: &str,
        expires_at: Option<i64>,
        role: Role,
    ) -> Result<(i64, String), StoreError> {
        let (secret, hash) = new_secret();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO api_tokens (username, name, token_hash, created_at, expires_at, role) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![username, name, hash, now_rfc3339(), expires_at, role.as_str()],
        )?;
        Ok((conn.last_insert_rowid(), secret))
    }

    /// The unrevoked, unexpired token whose secret is `secret`, noting that
    /// it was used. The note is written at most once a minute per token, so
    /// a script polling every second does not cost an fsync a request.
    pub(crate) fn use_token(&self, secret: &str) -> Result<Option<TokenAuth>, StoreError> {
        let now = unix_now();
        let conn = self.conn();
        let token = conn
            .query_row(
                "SELECT t.id, t.username, t.role, u.role FROM api_tokens t JOIN admin_users u USING (username)
                 WHERE t.token_hash = ?1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?2)",
                params![secret_hash(secret), now],
                |row| {
                    let token = stored_role(&row.get::<_, String>(2)?);
                    let user = stored_role(&row.get::<_, String>(3)?);
                    Ok(TokenAuth {
                        id: row.get(0)?,
                        username: row.get(1)?,
                        role: token.min(user),
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
    pub(crate) fn token_active(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM api_tokens
             WHERE id = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2))",
            params![id, unix_now()],
            |row| row.get(0),
        )?)
    }

    pub(crate) fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, username, name, created_at, revoked_at, expires_at, last_used_at, role FROM api_tokens ORDER BY id",
        )?;
        let now = unix_now();
        let rows = stmt.query_map([], |row| {
            let expires_at: Option<i64> = row.get(5)?;
            let last_used_at: Option<i64> = row.get(6)?;
            Ok(TokenInfo {
                id: row.get(0)?,
                username: row.get(1)?,
                name: row.get(2)?,
                role: stored_role(&row.get::<_, String>(7)?),
                created_at: row.get(3)?,
                revoked_at: row.get(4)?,
                expires_at: expires_at.map(unix_rfc3339),
                expired: expires_at.is_some_and(|at| at <= now),
                last_used_at: last_used_at.map(unix_rfc3339),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revoke a token; false if there is no such unrevoked token.
    /// With `owner`, only a token of that user is revoked.
    pub(crate) fn revoke_token(&self, id: i64, owner: Option<&str>) -> Result<bool, StoreError> {
        let changed = self.conn().execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL AND (?3 IS NULL OR username = ?3)",
            params![id, now_rfc3339(), owner],
        )?;
        Ok(changed == 1)
    }

    /// Set the first admin's password, atomically refusing if any admin
    /// exists. Returns false (and writes nothing) when one does.
    /// The cheap check comes first: once an admin exists nothing is hashed.
    pub(crate) fn set_first_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<bool, StoreError> {
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
}

impl Store {
    /// A user's current role; `None` for no such user.
    /// Whether `username` is a local user's or free for the directory.
    pub(crate) fn directory_name(&self, username: &str) -> Result<DirectoryName, StoreError> {
        let hash: Option<String> = self
            .conn()
            .query_row(
                "SELECT password_hash FROM admin_users WHERE username = ?1",
                params![username],
                |row| row.get(0),
            )
            .optional()?;
        Ok(match hash {
            Some(hash) if hash != DIRECTORY_USER => DirectoryName::Local,
            _ => DirectoryName::Directory,
        })
    }

    /// Record a directory login of `username` with the role its groups gave
    /// (a user row without a password), then start its session. A local
    /// user of that name is never taken over: `None`.
    pub(crate) fn directory_session(
        &self,
        username: &str,
        role: Role,
        lifetime: std::time::Duration,
    ) -> Result<Option<(String, Session)>, StoreError> {
        let now = now_rfc3339();
        let changed = self.conn().execute(
            "INSERT INTO admin_users (username, password_hash, created_at, updated_at, role)
             VALUES (?1, ?2, ?3, ?3, ?4)
             ON CONFLICT (username) DO UPDATE SET role = ?4, updated_at = ?3
             WHERE admin_users.password_hash = ?2",
            params![username, DIRECTORY_USER, now, role.as_str()],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        self.create_session(username, role, lifetime).map(Some)
    }

    pub(crate) fn user_role(&self, username: &str) -> Result<Option<Role>, StoreError> {
        let role: Option<String> = self
            .conn()
            .query_row(
                "SELECT role FROM admin_users WHERE username = ?1",
                params![username],
                |row| row.get(0),
            )
            .optional()?;
        Ok(role.as_deref().map(stored_role))
    }

    /// Every local user, by name.
    pub(crate) fn users(&self) -> Result<Vec<UserInfo>, StoreError> {
        self.users_where(None)
    }

    pub(crate) fn user(&self, username: &str) -> Result<Option<UserInfo>, StoreError> {
        Ok(self.users_where(Some(username))?.into_iter().next())
    }

    fn users_where(&self, username: Option<&str>) -> Result<Vec<UserInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT u.username, u.role, u.created_at, u.updated_at,
                    (SELECT COUNT(*) FROM sessions s WHERE s.username = u.username AND s.expires_at > ?2),
                    (SELECT COUNT(*) FROM api_tokens t WHERE t.username = u.username AND t.revoked_at IS NULL
                        AND (t.expires_at IS NULL OR t.expires_at > ?2))
             FROM admin_users u WHERE ?1 IS NULL OR u.username = ?1 ORDER BY u.username",
        )?;
        let rows = stmt.query_map(params![username, unix_now()], |row| {
            let username: String = row.get(0)?;
            Ok(UserInfo {
                builtin: username == BUILTIN_ADMIN,
                username,
                role: stored_role(&row.get::<_, String>(1)?),
                created_at: row.get(2)?,
                updated_at: row.get(3)?,
                sessions: row.get(4)?,
                tokens: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Add a local user. The built-in `admin` can only be an admin.
    pub(crate) fn create_user(
        &self,
        username: &str,
        password: &str,
        role: Role,
    ) -> Result<UserChange, StoreError> {
        if username == BUILTIN_ADMIN && role != Role::Admin {
            return Ok(UserChange::BuiltinAdmin);
        }
        let hash = hash_password(password)?;
        self.transact(|tx, now| {
            let inserted = tx.execute(
                "INSERT INTO admin_users (username, password_hash, created_at, updated_at, role) VALUES (?1, ?2, ?3, ?3, ?4)
                 ON CONFLICT (username) DO NOTHING",
                params![username, hash, now, role.as_str()],
            )?;
            if inserted == 0 {
                return Ok((UserChange::Exists, None));
            }
            let event = NewEvent {
                kind: EventKind::Admin,
                message: format!("User {username} added as {role}"),
                detail: Some(serde_json::json!({"username": username, "role": role})),
                pool: None,
                member: None,
            };
            Ok((
                UserChange::Done {
                    sessions_ended: 0,
                    tokens_revoked: 0,
                },
                Some(event),
            ))
        })
    }

    /// Change a user's role and/or password. Either ends every session of
    /// the user but `keep_session` (kept only for a password change alone,
    /// the session that asked for it) and revokes every token.
    pub(crate) fn update_user(
        &self,
        username: &str,
        password: Option<&str>,
        role: Option<Role>,
        keep_session: Option<&str>,
    ) -> Result<UserChange, StoreError> {
        if username == BUILTIN_ADMIN && role.is_some_and(|role| role != Role::Admin) {
            return Ok(UserChange::BuiltinAdmin);
        }
        let hash = password.map(hash_password).transpose()?;
        let kept = if role.is_some() {
            None
        } else {
            keep_session.map(secret_hash)
        };
        self.transact(|tx, now| {
            let Some(current) = role_in(tx, username)? else {
                return Ok((UserChange::NoSuchUser, None));
            };
            if current == Role::Admin && role.is_some_and(|role| role != Role::Admin) && admins(tx)? <= 1 {
                return Ok((UserChange::LastAdmin, None));
            }
            if let Some(hash) = &hash {
                tx.execute(
                    "UPDATE admin_users SET password_hash = ?2, updated_at = ?3 WHERE username = ?1",
                    params![username, hash, now],
                )?;
            }
            if let Some(role) = role {
                tx.execute(
                    "UPDATE admin_users SET role = ?2, updated_at = ?3 WHERE username = ?1",
                    params![username, role.as_str(), now],
                )?;
            }
            let sessions_ended = tx.execute(
                "DELETE FROM sessions WHERE username = ?1 AND (?2 IS NULL OR id_hash != ?2)",
                params![username, kept],
            )?;
            let tokens_revoked = tx.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE username = ?1 AND revoked_at IS NULL",
                params![username, now],
            )?;
            let what = match (hash.is_some(), role) {
                (true, Some(role)) => format!("password and role ({current} → {role})"),
                (false, Some(role)) => format!("role ({current} → {role})"),
                (true, None) => "password".to_owned(),
                (false, None) => "nothing".to_owned(),
            };
            let event = NewEvent {
                kind: EventKind::Admin,
                message: format!(
                    "User {username}: {what} changed; {sessions_ended} session(s) ended, {tokens_revoked} API token(s) revoked"
                ),
                detail: Some(serde_json::json!({
                    "username": username,
                    "role": role,
                    "previous_role": current,
                    "password_changed": hash.is_some(),
                    "sessions_ended": sessions_ended,
                    "tokens_revoked": tokens_revoked,
                })),
                pool: None,
                member: None,
            };
            Ok((
                UserChange::Done {
                    sessions_ended,
                    tokens_revoked,
                },
                Some(event),
            ))
        })
    }

    /// Remove a user with their sessions and tokens (which go with the row).
    pub(crate) fn delete_user(&self, username: &str) -> Result<UserChange, StoreError> {
        if username == BUILTIN_ADMIN {
            return Ok(UserChange::BuiltinAdmin);
        }
        self.transact(|tx, _now| {
            let Some(current) = role_in(tx, username)? else {
                return Ok((UserChange::NoSuchUser, None));
            };
            if current == Role::Admin && admins(tx)? <= 1 {
                return Ok((UserChange::LastAdmin, None));
            }
            let sessions_ended = tx.execute(
                "DELETE FROM sessions WHERE username = ?1",
                params![username],
            )?;
            let tokens_revoked = tx.execute(
                "DELETE FROM api_tokens WHERE username = ?1",
                params![username],
            )?;
            tx.execute(
                "DELETE FROM admin_users WHERE username = ?1",
                params![username],
            )?;
            let event = NewEvent {
                kind: EventKind::Admin,
                message: format!(
                    "User {username} ({current}) removed; {sessions_ended} session(s) ended, {tokens_revoked} API token(s) revoked"
                ),
                detail: Some(serde_json::json!({"username": username, "role": current})),
                pool: None,
                member: None,
            };
            Ok((
                UserChange::Done {
                    sessions_ended,
                    tokens_revoked,
                },
                Some(event),
            ))
        })
    }
}

fn role_in(tx: &rusqlite::Transaction<'_>, username: &str) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = tx
        .query_row(
            "SELECT role FROM admin_users WHERE username = ?1",
            params![username],
            |row| row.get(0),
        )
        .optional()?;
    Ok(role.as_deref().map(stored_role))
}

fn admins(tx: &rusqlite::Transaction<'_>) -> Result<i64, StoreError> {
    Ok(tx.query_row(
        "SELECT COUNT(*) FROM admin_users WHERE role = 'admin'",
        [],
        |row| row.get(0),
    )?)
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

#[cfg(test)]
impl Store {
    /// Set (or replace) a user's password, hashed with argon2id, and end
    /// every session and revoke every token of that user: whoever changes a
    /// password because it leaked must not leave the leaker logged in.
    pub(crate) fn set_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<PasswordChange, StoreError> {
        self.change_password(username, password, &Keep::default())
    }
    /// The user an unrevoked, unexpired token belongs to.
    pub(crate) fn token_user(&self, secret: &str) -> Result<Option<String>, StoreError> {
        Ok(self.use_token(secret)?.map(|token| token.username))
    }
}

/// Users and API tokens as the HA standby receives them from the active:
/// hashes only, never a password or a secret (`crate::ha`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct Credentials {
    pub users: Vec<UserRow>,
    pub tokens: Vec<TokenRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct UserRow {
    pub username: String,
    /// Absent from an older peer, whose users were all admins.
    #[serde(default = "admin_role")]
    pub role: Role,
    pub password_hash: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct TokenRow {
    pub username: String,
    pub name: String,
    #[serde(default = "admin_role")]
    pub role: Role,
    pub token_hash: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub expires_at: Option<i64>,
}

fn admin_role() -> Role {
    Role::Admin
}

impl Store {
    /// Every user and API token, as hashes.
    pub(crate) fn credentials(&self) -> Result<Credentials, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT username, password_hash, created_at, updated_at, role FROM admin_users ORDER BY username",
        )?;
        let users = stmt
            .query_map([], |row| {
                Ok(UserRow {
                    role: stored_role(&row.get::<_, String>(4)?),
                    username: row.get(0)?,
                    password_hash: row.get(1)?,
                    created_at: row.get(2)?,
                    updated_at: row.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare(
            "SELECT username, name, token_hash, created_at, revoked_at, expires_at, role FROM api_tokens ORDER BY token_hash",
        )?;
        let tokens = stmt
            .query_map([], |row| {
                Ok(TokenRow {
                    role: stored_role(&row.get::<_, String>(6)?),
                    username: row.get(0)?,
                    name: row.get(1)?,
                    token_hash: row.get(2)?,
                    created_at: row.get(3)?,
                    revoked_at: row.get(4)?,
                    expires_at: row.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Credentials { users, tokens })
    }

    /// Make users and tokens what the HA active has, in one transaction:
    /// users and tokens it lacks go (with their sessions), the others take
    /// its hashes. A user whose password the active changed after this
    /// appliance last did loses their sessions here too, as a password
    /// change does. Returns whether anything changed.
    pub(crate) fn replace_credentials(&self, from: &Credentials) -> Result<bool, StoreError> {
        let current = self.credentials()?;
        if current == *from {
            return Ok(false);
        }
        self.transact(|tx, now| {
            for user in &current.users {
                if !from.users.iter().any(|u| u.username == user.username) {
                    tx.execute(
                        "DELETE FROM admin_users WHERE username = ?1",
                        params![user.username],
                    )?;
                }
            }
            for user in &from.users {
                let local = current.users.iter().find(|u| u.username == user.username);
                if local.is_some_and(|local| {
                    (local.password_hash != user.password_hash || local.role != user.role)
                        && user.updated_at > local.updated_at
                }) {
                    tx.execute(
                        "DELETE FROM sessions WHERE username = ?1",
                        params![user.username],
                    )?;
                }
                tx.execute(
                    "INSERT INTO admin_users (username, password_hash, created_at, updated_at, role) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, created_at = excluded.created_at, updated_at = excluded.updated_at, role = excluded.role",
                    params![user.username, user.password_hash, user.created_at, user.updated_at, user.role.as_str()],
                )?;
            }
            for token in &current.tokens {
                if !from.tokens.iter().any(|t| t.token_hash == token.token_hash) {
                    tx.execute(
                        "DELETE FROM api_tokens WHERE token_hash = ?1",
                        params![token.token_hash],
                    )?;
                }
            }
            for token in &from.tokens {
                tx.execute(
                    "INSERT INTO api_tokens (username, name, token_hash, created_at, revoked_at, expires_at, role) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (token_hash) DO UPDATE SET name = excluded.name, created_at = excluded.created_at, revoked_at = excluded.revoked_at, expires_at = excluded.expires_at, role = excluded.role",
                    params![token.username, token.name, token.token_hash, token.created_at, token.revoked_at, token.expires_at, token.role.as_str()],
                )?;
            }
            let roles: Vec<_> = from
                .users
                .iter()
                .map(|user| serde_json::json!({"username": user.username, "role": user.role}))
                .collect();
            super::audit::insert_audit(
                tx,
                now,
                &crate::audit::NewAudit {
                    actor: crate::audit::Actor {
                        username: "ha-peer".to_owned(),
                        role: None,
                        address: None,
                        interface: crate::audit::Interface::Peer,
                        token_id: None,
                    },
                    kind: crate::audit::AuditKind::User,
                    action: "users and API tokens taken from the HA active".to_owned(),
                    target: None,
                    status: None,
                    detail: Some(serde_json::json!({"users": roles, "tokens": from.tokens.len()})),
                },
            )?;
            let event = NewEvent::new(
                EventKind::Ha,
                format!(
                    "Users and API tokens taken from the HA active ({} users, {} tokens)",
                    from.users.len(),
                    from.tokens.len()
                ),
            );
            Ok((true, Some(event)))
        })
    }
}

#[cfg(test)]
mod role_tests {
    use super::*;

    const PASSWORD: &str = "correct horse battery";

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        assert!(
            store
                .set_first_password(BUILTIN_ADMIN, PASSWORD)
                .expect("setup")
        );
        (dir, store)
    }

    #[test]
    fn the_last_and_the_builtin_admin_stay() {
        let (_dir, store) = store();
        assert_eq!(
            store.user_role(BUILTIN_ADMIN).expect("role"),
            Some(Role::Admin)
        );
        assert_eq!(
            store
                .update_user(BUILTIN_ADMIN, None, Some(Role::Viewer), None)
                .expect("update"),
            UserChange::BuiltinAdmin
        );
        assert_eq!(
            store.delete_user(BUILTIN_ADMIN).expect("delete"),
            UserChange::BuiltinAdmin
        );
        assert!(matches!(
            store
                .create_user("root", PASSWORD, Role::Admin)
                .expect("create"),
            UserChange::Done { .. }
        ));
        assert_eq!(
            store
                .create_user("root", PASSWORD, Role::Viewer)
                .expect("create"),
            UserChange::Exists
        );
        // Two admins: one may go to operator, then the other is the last.
        let conn = store.conn();
        conn.execute("DELETE FROM admin_users WHERE username = 'admin'", [])
            .expect("drop builtin");
        drop(conn);
        assert_eq!(
            store
                .update_user("root", None, Some(Role::Operator), None)
                .expect("update"),
            UserChange::LastAdmin
        );
        assert_eq!(
            store.delete_user("root").expect("delete"),
            UserChange::LastAdmin
        );
        assert_eq!(
            store.delete_user("nobody").expect("delete"),
            UserChange::NoSuchUser
        );
    }

    #[test]
    fn a_role_change_ends_sessions_and_tokens_and_tokens_never_exceed_their_user() {
        let (_dir, store) = store();
        store
            .create_user("ops", PASSWORD, Role::Operator)
            .expect("create");
        let (session, _) = store
            .create_session("ops", Role::Operator, std::time::Duration::from_secs(60))
            .expect("session");
        let (_, token) = store
            .create_token("ops", "script", None, Role::Viewer)
            .expect("token");
        assert_eq!(
            store.use_token(&token).expect("use").map(|t| t.role),
            Some(Role::Viewer)
        );
        let (_, admin_token) = store
            .create_token("ops", "x", None, Role::Admin)
            .expect("token");
        assert_eq!(
            store.use_token(&admin_token).expect("use").map(|t| t.role),
            Some(Role::Operator),
            "a token is never above its user"
        );
        let change = store
            .update_user("ops", None, Some(Role::Viewer), Some(&session))
            .expect("update");
        assert_eq!(
            change,
            UserChange::Done {
                sessions_ended: 1,
                tokens_revoked: 2
            }
        );
        assert!(store.session(&session).expect("session").is_none());
        assert!(store.use_token(&token).expect("use").is_none());
        let users = store.users().expect("users");
        let ops = users.iter().find(|u| u.username == "ops").expect("ops");
        assert_eq!((ops.role, ops.sessions, ops.tokens), (Role::Viewer, 0, 0));
        assert!(users.iter().any(|u| u.builtin));
    }

    #[test]
    fn roles_travel_with_users_and_tokens_to_the_standby() {
        let (_a_dir, active) = store();
        active
            .create_user("ops", PASSWORD, Role::Operator)
            .expect("create");
        active
            .create_token("ops", "runbook", None, Role::Viewer)
            .expect("token");
        let credentials = active.credentials().expect("credentials");
        let dir = tempfile::tempdir().expect("tempdir");
        let standby = Store::open(dir.path()).expect("store");
        let (session, _) = {
            standby.replace_credentials(&credentials).expect("replace");
            standby
                .create_session("ops", Role::Operator, std::time::Duration::from_secs(60))
                .expect("session")
        };
        assert_eq!(
            standby.user_role("ops").expect("role"),
            Some(Role::Operator)
        );
        assert_eq!(standby.tokens().expect("tokens")[0].role, Role::Viewer);
        // A demotion on the active ends the user's sessions on the standby.
        std::thread::sleep(std::time::Duration::from_millis(5));
        active
            .update_user("ops", None, Some(Role::Viewer), None)
            .expect("demote");
        standby
            .replace_credentials(&active.credentials().expect("credentials"))
            .expect("replace");
        assert_eq!(standby.user_role("ops").expect("role"), Some(Role::Viewer));
        assert!(standby.session(&session).expect("session").is_none());
        // An older active sends no roles: its users were all admins.
        let old: UserRow = serde_json::from_value(serde_json::json!({
            "username": "admin", "password_hash": "x", "created_at": "t", "updated_at": "t"
        }))
        .expect("old row");
        assert_eq!(old.role, Role::Admin);
    }

    #[test]
    fn the_audit_log_filters_pages_and_keeps_the_newest() {
        use crate::audit::{Actor, AuditFilter, AuditKind, Interface, NewAudit};
        let (_dir, store) = store();
        let entry = |user: &str, kind| NewAudit {
            actor: Actor {
                username: user.to_owned(),
                role: Some(Role::Admin),
                address: Some("127.0.0.1".parse().expect("address")),
                interface: Interface::Ui,
                token_id: None,
            },
            kind,
            action: "PUT /api/v1/config".to_owned(),
            target: None,
            status: Some(200),
            detail: None,
        };
        for i in 0..5 {
            let user = if i % 2 == 0 { "admin" } else { "ops" };
            store
                .record_audit(&entry(user, AuditKind::Config))
                .expect("record");
        }
        store
            .record_audit(&entry("ops", AuditKind::Member))
            .expect("record");
        let all = |filter: AuditFilter| store.audit(&filter).expect("audit");
        let page = all(AuditFilter {
            limit: 4,
            ..AuditFilter::default()
        });
        assert_eq!(page.len(), 4);
        assert!(page.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        let rest = all(AuditFilter {
            limit: 4,
            before: Some(page[3].id),
            ..AuditFilter::default()
        });
        assert_eq!(rest.len(), 2);
        let ops = all(AuditFilter {
            limit: 100,
            username: Some("ops".into()),
            kind: Some(AuditKind::Config),
            ..AuditFilter::default()
        });
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].address.as_deref(), Some("127.0.0.1"));
        let future = all(AuditFilter {
            limit: 100,
            since: Some("2999-01-01T00:00:00Z".into()),
            ..AuditFilter::default()
        });
        assert!(future.is_empty());
        let past = all(AuditFilter {
            limit: 100,
            since: Some("2000-01-01T00:00:00Z".into()),
            until: Some("2999-01-01T00:00:00Z".into()),
            ..AuditFilter::default()
        });
        assert_eq!(past.len(), 6);
        // Bounded: an id AUDIT_KEPT past the first takes the first with it.
        let conn = store.conn();
        conn.execute(
            "UPDATE sqlite_sequence SET seq = seq + ?1 WHERE name = 'audit_log'",
            [crate::audit::AUDIT_KEPT],
        )
        .expect("jump ids");
        drop(conn);
        store
            .record_audit(&entry("admin", AuditKind::User))
            .expect("record");
        assert_eq!(
            all(AuditFilter {
                limit: 100,
                ..AuditFilter::default()
            })
            .len(),
            1
        );
    }
}
