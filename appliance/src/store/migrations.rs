//! Versioned schema migrations, tracked in `PRAGMA user_version`. Each entry
//! runs once, in its own transaction, in order. Never edit a released entry:
//! append a new one.

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: desired config history, member admin state, admin users, event log.
    r#"
    CREATE TABLE config_versions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at  TEXT NOT NULL,
        source      TEXT NOT NULL,
        toml        TEXT NOT NULL
    );
    CREATE TABLE member_admin_state (
        pool        TEXT NOT NULL,
        member      TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('enabled', 'draining', 'disabled')),
        changed_at  TEXT NOT NULL,
        PRIMARY KEY (pool, member)
    );
    CREATE TABLE admin_users (
        username       TEXT PRIMARY KEY,
        password_hash  TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        at       TEXT NOT NULL,
        kind     TEXT NOT NULL,
        pool     TEXT,
        member   TEXT,
        message  TEXT NOT NULL,
        detail   TEXT
    );
    "#,
    // 2: appliance settings (stable appliance id), API tokens for scripts,
    // and an index for reading recent events per member.
    r#"
    CREATE TABLE settings (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    CREATE TABLE api_tokens (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        username    TEXT NOT NULL REFERENCES admin_users(username) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        token_hash  TEXT NOT NULL UNIQUE,
        created_at  TEXT NOT NULL,
        revoked_at  TEXT
    );
    CREATE INDEX events_member ON events (pool, member, id);
    "#,
    // 3: admin sessions (the cookie holds a random id; only its hash is stored).
    r#"
    CREATE TABLE sessions (
        id_hash     TEXT PRIMARY KEY,
        username    TEXT NOT NULL REFERENCES admin_users(username) ON DELETE CASCADE,
        csrf        TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    "#,
    // 4: installed licences; the newest is in force.
    r#"
    CREATE TABLE licences (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        licence_id    TEXT NOT NULL,
        text          TEXT NOT NULL,
        installed_at  TEXT NOT NULL
    );
    "#,
    // 5: the addresses-of-record seen in REGISTERs, per pool, for the
    // registrar what-if over real users.
    r#"
    CREATE TABLE seen_aors (
        pool       TEXT NOT NULL,
        aor        TEXT NOT NULL,
        last_seen  TEXT NOT NULL,
        PRIMARY KEY (pool, aor)
    );
    "#,
    // 6: API tokens may expire, and show when they were last used (both
    // unix seconds; NULL: never expires, never used).
    r#"
    ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
    ALTER TABLE api_tokens ADD COLUMN last_used_at INTEGER;
    CREATE INDEX sessions_user ON sessions (username);
    "#,
    // 7: the seen users are capped by count and age, least recently seen
    // forgotten first; `last_seen` is written to the second from now on,
    // so its text sorts in time order.
    r#"
    CREATE INDEX seen_aors_last_seen ON seen_aors (last_seen);
    "#,
    // 8: CA bundles for TLS health checks (PEM text by name), which
    // monitors choose with `ca_bundle`.
    r#"
    CREATE TABLE ca_bundles (
        name        TEXT PRIMARY KEY,
        pem         TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    "#,
    // 9: roles. Users, their sessions and their API tokens each carry one
    // (`admin`, `operator`, `viewer`); every user before this was an admin.
    // The audit log: every change, who made it, from where and through
    // which interface, bounded like the event log.
    r#"
    ALTER TABLE admin_users ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
        CHECK (role IN ('admin', 'operator', 'viewer'));
    ALTER TABLE sessions ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
        CHECK (role IN ('admin', 'operator', 'viewer'));
    ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
        CHECK (role IN ('admin', 'operator', 'viewer'));
    CREATE TABLE audit_log (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        at         TEXT NOT NULL,
        username   TEXT NOT NULL,
        role       TEXT,
        address    TEXT,
        interface  TEXT NOT NULL,
        token_id   INTEGER,
        kind       TEXT NOT NULL,
        action     TEXT NOT NULL,
        target     TEXT,
        status     INTEGER,
        detail     TEXT
    );
    CREATE INDEX audit_log_user ON audit_log (username, id);
    CREATE INDEX audit_log_kind ON audit_log (kind, id);
    "#,
];

pub const LATEST: u32 = MIGRATIONS.len() as u32;
