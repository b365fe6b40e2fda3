//! Admin users, their sessions and API tokens: passwords are hashed with
//! argon2id; session ids and token secrets are random 256-bit values of
//! which only the SHA-256 is stored, so a copy of the database logs nobody in.
//! A password change ends the user's other sessions (and, unless kept, revokes
//! the tokens) in the same transaction as the new hash and its event.

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

/// A logged-in admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub(crate) username: String,
    pub csrf: String,
    pub expires_at: i64,
}

/// An API token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub(crate) username: String,
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
    pub(crate) username: String,
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
    pub(crate) fn session(&self, secret: &str) -> Result<Option<Session>, StoreError> {
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
    ) -> Result<(i64, String), StoreError> {
        let (secret, hash) = new_secret();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO api_tokens (username, name, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![username, name, hash, now_rfc3339(), expires_at],
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
                expires_at: expires_at.map(unix_rfc3339),
                expired: expires_at.is_some_and(|at| at <= now),
                last_used_at: last_used_at.map(unix_rfc3339),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revoke a token; false if there is no such unrevoked token.
    pub(crate) fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        let changed = self.conn().execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_rfc3339()],
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
    pub password_hash: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct TokenRow {
    pub username: String,
    pub name: String,
    pub token_hash: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub expires_at: Option<i64>,
}

impl Store {
    /// Every user and API token, as hashes.
    pub(crate) fn credentials(&self) -> Result<Credentials, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT username, password_hash, created_at, updated_at FROM admin_users ORDER BY username",
        )?;
        let users = stmt
            .query_map([], |row| {
                Ok(UserRow {
                    username: row.get(0)?,
                    password_hash: row.get(1)?,
                    created_at: row.get(2)?,
                    updated_at: row.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare(
            "SELECT username, name, token_hash, created_at, revoked_at, expires_at FROM api_tokens ORDER BY token_hash",
        )?;
        let tokens = stmt
            .query_map([], |row| {
                Ok(TokenRow {
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
        self.transact(|tx, _now| {
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
                    local.password_hash != user.password_hash && user.updated_at > local.updated_at
                }) {
                    tx.execute(
                        "DELETE FROM sessions WHERE username = ?1",
                        params![user.username],
                    )?;
                }
                tx.execute(
                    "INSERT INTO admin_users (username, password_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, created_at = excluded.created_at, updated_at = excluded.updated_at",
                    params![user.username, user.password_hash, user.created_at, user.updated_at],
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
                    "INSERT INTO api_tokens (username, name, token_hash, created_at, revoked_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (token_hash) DO UPDATE SET name = excluded.name, created_at = excluded.created_at, revoked_at = excluded.revoked_at, expires_at = excluded.expires_at",
                    params![token.username, token.name, token.token_hash, token.created_at, token.revoked_at, token.expires_at],
                )?;
            }
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
