//! What a full backup reads from the store and what a restore writes back
//! (`crate::backup`), over the existing tables.
//!
//! Invariants:
//! * A restore is one immediate transaction with its event: the config
//!   history, admin states, users and tokens, CA bundles and licences are
//!   all replaced, or nothing is (a failure rolls every table back).
//! * Every session ends in that transaction: whoever was logged in logs in
//!   again, with the restored users' passwords.
//! * The appliance's own settings (its id, the licensing clock, the HA pair,
//!   network and VRRP settings) are never touched here.

use rusqlite::params;

use super::config_versions::StoredVersion;
use super::{Credentials, Store, StoreError};
use crate::events::{EventKind, NewEvent};

/// One member's admin state and when it was set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AdminRow {
    pub pool: String,
    pub member: String,
    pub state: String,
    pub changed_at: String,
}

/// One installed licence (the newest is in force).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LicenceRow {
    pub licence_id: String,
    pub text: String,
    pub installed_at: String,
}

/// Everything a restore replaces in the store, already checked by
/// `crate::backup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Restore {
    pub versions: Vec<StoredVersion>,
    pub admin: Vec<AdminRow>,
    pub credentials: Credentials,
    pub ca_bundles: Vec<(String, String)>,
    pub licences: Vec<LicenceRow>,
    /// Licences from the archive bound to another appliance, kept (JSON)
    /// under [`OTHER_APPLIANCE_LICENCES`] for the licence page; `None`
    /// removes an earlier restore's.
    pub other_licences: Option<String>,
    /// Shown in the restore's event.
    pub summary: String,
}

/// Settings key of the licences a restore brought that are bound to
/// another appliance (what to re-issue).
pub(crate) const OTHER_APPLIANCE_LICENCES: &str = "restore.other_appliance_licences";

impl Store {
    /// Every config version, oldest first.
    pub(crate) fn config_history(&self) -> Result<Vec<StoredVersion>, StoreError> {
        self.config_versions_after(0, usize::MAX)
    }

    /// Every member's admin state as stored, with its time.
    pub(crate) fn admin_history(&self) -> Result<Vec<AdminRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT pool, member, state, changed_at FROM member_admin_state ORDER BY pool, member",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(AdminRow {
                pool: row.get(0)?,
                member: row.get(1)?,
                state: row.get(2)?,
                changed_at: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every installed licence, oldest first.
    pub(crate) fn licences(&self) -> Result<Vec<LicenceRow>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT licence_id, text, installed_at FROM licences ORDER BY id")?;
        let rows = stmt.query_map([], |row| {
            Ok(LicenceRow {
                licence_id: row.get(0)?,
                text: row.get(1)?,
                installed_at: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replace the restorable tables with `from`, and end every session, in
    /// one transaction with its event.
    pub(crate) fn restore(&self, from: &Restore) -> Result<(), StoreError> {
        self.transact(|tx, now| {
            tx.execute("DELETE FROM sessions", [])?;
            tx.execute("DELETE FROM api_tokens", [])?;
            tx.execute("DELETE FROM admin_users", [])?;
            tx.execute("DELETE FROM member_admin_state", [])?;
            tx.execute("DELETE FROM config_versions", [])?;
            tx.execute("DELETE FROM ca_bundles", [])?;
            tx.execute("DELETE FROM licences", [])?;
            for v in &from.versions {
                tx.execute(
                    "INSERT INTO config_versions (id, created_at, source, toml) VALUES (?1, ?2, ?3, ?4)",
                    params![v.id, v.created_at, v.source, v.toml],
                )?;
            }
            // The next version is numbered after the restored ones, even if
            // this appliance had counted further.
            let last = from.versions.iter().map(|v| v.id).max().unwrap_or(0);
            tx.execute(
                "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'config_versions'",
                params![last],
            )?;
            for a in &from.admin {
                tx.execute(
                    "INSERT INTO member_admin_state (pool, member, state, changed_at) VALUES (?1, ?2, ?3, ?4)",
                    params![a.pool, a.member, a.state, a.changed_at],
                )?;
            }
            for u in &from.credentials.users {
                tx.execute(
                    "INSERT INTO admin_users (username, password_hash, created_at, updated_at, role) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![u.username, u.password_hash, u.created_at, u.updated_at, u.role.as_str()],
                )?;
            }
            for t in &from.credentials.tokens {
                tx.execute(
                    "INSERT INTO api_tokens (username, name, token_hash, created_at, revoked_at, expires_at, role) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![t.username, t.name, t.token_hash, t.created_at, t.revoked_at, t.expires_at, t.role.as_str()],
                )?;
            }
            for (name, pem) in &from.ca_bundles {
                tx.execute(
                    "INSERT INTO ca_bundles (name, pem, updated_at) VALUES (?1, ?2, ?3)",
                    params![name, pem, now],
                )?;
            }
            match &from.other_licences {
                Some(value) => super::SettingWrite::Set {
                    key: OTHER_APPLIANCE_LICENCES,
                    value,
                },
                None => super::SettingWrite::Remove {
                    key: OTHER_APPLIANCE_LICENCES,
                },
            }
            .run(tx)?;
            for l in &from.licences {
                tx.execute(
                    "INSERT INTO licences (licence_id, text, installed_at) VALUES (?1, ?2, ?3)",
                    params![l.licence_id, l.text, l.installed_at],
                )?;
            }
            let event = NewEvent::new(
                EventKind::System,
                format!("Restored from a backup: {}", from.summary),
            )
            .detail(serde_json::json!({
                "config_version": last,
                "config_versions": from.versions.len(),
                "users": from.credentials.users.len(),
                "tokens": from.credentials.tokens.len(),
                "ca_bundles": from.ca_bundles.len(),
                "licences": from.licences.len(),
            }));
            Ok(((), Some(event)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::auth::{TokenRow, UserRow};
    use super::*;

    fn user(name: &str, hash: &str) -> UserRow {
        UserRow {
            username: name.into(),
            role: super::super::Role::Admin,
            password_hash: hash.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn restore(users: Vec<UserRow>, tokens: Vec<TokenRow>) -> Restore {
        Restore {
            versions: vec![StoredVersion {
                id: 7,
                created_at: "2026-01-01T00:00:00Z".into(),
                source: "API (admin)".into(),
                toml: "# version 7".into(),
            }],
            admin: vec![AdminRow {
                pool: "pool01".into(),
                member: "fe01".into(),
                state: "draining".into(),
                changed_at: "2026-01-01T00:00:00Z".into(),
            }],
            credentials: Credentials { users, tokens },
            ca_bundles: vec![("contoso".into(), "PEM".into())],
            licences: Vec::new(),
            other_licences: Some("[]".into()),
            summary: "test".into(),
        }
    }

    #[test]
    fn a_restore_replaces_every_table_and_ends_every_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .set_first_password("admin", "a first password")
            .expect("password");
        let (secret, _) = store
            .create_session(
                "admin",
                super::super::Role::Admin,
                std::time::Duration::from_secs(3600),
            )
            .expect("session");
        store
            .restore(&restore(
                vec![user("admin", "$restored"), user("ops", "$ops")],
                Vec::new(),
            ))
            .expect("restore");
        assert!(store.session(&secret).expect("read").is_none());
        let history = store.config_history().expect("history");
        assert_eq!(history.iter().map(|v| v.id).collect::<Vec<_>>(), vec![7]);
        assert_eq!(store.admin_history().expect("admin")[0].state, "draining");
        let users = store.credentials().expect("users").users;
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].password_hash, "$restored");
        assert_eq!(store.ca_bundles().expect("bundles")[0].0, "contoso");
        assert_eq!(
            store
                .setting(OTHER_APPLIANCE_LICENCES)
                .expect("setting")
                .as_deref(),
            Some("[]")
        );
    }

    #[test]
    fn a_restore_that_fails_part_way_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .set_first_password("admin", "a first password")
            .expect("password");
        let (secret, _) = store
            .create_session(
                "admin",
                super::super::Role::Admin,
                std::time::Duration::from_secs(3600),
            )
            .expect("session");
        let before = store.credentials().expect("before");
        // A token of a user the archive lacks: the foreign key refuses it,
        // after every table was already emptied in the transaction.
        let orphan = TokenRow {
            username: "nobody".into(),
            name: "scripts".into(),
            role: super::super::Role::Admin,
            token_hash: "abc".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            revoked_at: None,
            expires_at: None,
        };
        store
            .restore(&restore(vec![user("admin", "$restored")], vec![orphan]))
            .expect_err("refused");
        assert_eq!(store.credentials().expect("after"), before);
        assert!(store.session(&secret).expect("read").is_some());
        assert!(store.config_history().expect("history").is_empty());
        assert!(store.ca_bundles().expect("bundles").is_empty());
        assert_eq!(
            store.setting(OTHER_APPLIANCE_LICENCES).expect("setting"),
            None
        );
    }
}
