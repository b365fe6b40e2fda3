use std::path::PathBuf;

use rusqlite::params;

use super::*;
use crate::config::{self, AdminState, Config, MemberKey};
use crate::events::{EventKind, NewEvent};
use crate::store::seen::SeenRecorded;

fn example() -> Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/lync-pool.toml");
    config::load(&path).expect("example validates")
}

fn key(pool: &str, member: &str) -> MemberKey {
    (pool.to_owned(), member.to_owned())
}

#[test]
fn migrates_an_empty_database_to_latest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
    let mode: String = store
        .conn()
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let fk: bool = store
        .conn()
        .pragma_query_value(None, "foreign_keys", |row| row.get(0))
        .expect("foreign keys");
    assert!(fk);
    // Reopening is a no-op.
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
}

#[test]
fn migrates_a_previous_version_database_keeping_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let old = Store::open_at_version(dir.path(), 1).expect("open v1");
        assert_eq!(old.schema_version().expect("version"), 1);
        old.commit_config(&example(), "test").expect("commit");
        old.set_admin_state("pool01", "fe02", AdminState::Draining, "test")
            .expect("drain");
        // Version 1 has no settings table.
        assert!(old.setting("appliance_id").is_err());
    }
    let store = Store::open(dir.path()).expect("migrate");
    assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
    assert_eq!(
        store.admin_states().expect("states")[&key("pool01", "fe02")],
        AdminState::Draining
    );
    assert!(store.desired_config().expect("config").is_some());
    let id = store
        .setting_or_insert("appliance_id", || "abc".into())
        .expect("setting");
    assert_eq!(id, "abc");
}

#[test]
fn refuses_a_database_from_a_newer_poolgate() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        store
            .conn()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
    }
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::SchemaTooNew { .. })
    ));
}

#[test]
fn commit_sets_admin_state_from_config_only_when_it_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let config = example();
    let (first, changes) = store.commit_config(&config, "test").expect("commit");
    assert_eq!(changes.members_added.len(), 3);
    assert_eq!(store.admin_states().expect("states").len(), 3);

    store
        .set_admin_state("pool01", "fe01", AdminState::Draining, "test")
        .expect("drain");
    // Re-importing the same file (a restart with --config) keeps the drain.
    let (second, changes) = store.commit_config(&config, "test").expect("recommit");
    assert!(second > first);
    assert!(changes.is_empty());
    assert_eq!(
        store.admin_states().expect("states")[&key("pool01", "fe01")],
        AdminState::Draining
    );

    // A config without fe03 removes its admin state.
    let mut file = config.source().clone();
    file.pools[0].members.pop();
    let smaller = config::validate(&file).expect("valid");
    store
        .commit_config(&smaller, "test")
        .expect("commit smaller");
    let states = store.admin_states().expect("states");
    assert!(!states.contains_key(&key("pool01", "fe03")));
    assert_eq!(
        store.desired_config().expect("read").expect("some"),
        smaller
    );
}

#[test]
fn admin_state_of_unknown_member_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store.commit_config(&example(), "test").expect("commit");
    let error = store
        .set_admin_state("pool01", "fe09", AdminState::Disabled, "test")
        .expect_err("unknown member");
    assert!(matches!(error, StoreError::UnknownMember { .. }), "{error}");
}

#[test]
fn events_record_admin_actions_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store.commit_config(&example(), "test").expect("commit");
    store
        .set_admin_state("pool01", "fe02", AdminState::Disabled, "alice")
        .expect("disable");
    let events = store.events_after(0, 100).expect("events");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, "config");
    assert_eq!(events[1].member.as_deref(), Some("fe02"));
    assert!(events[1].message.contains("alice"), "{}", events[1].message);
    assert_eq!(store.recent_events(1).expect("recent")[0].id, events[1].id);
}

#[test]
fn passwords_are_hashed_and_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert!(!store.has_admin().expect("has admin"));
    assert!(matches!(
        store.set_password("admin", "short"),
        Err(StoreError::WeakPassword)
    ));
    store
        .set_password("admin", "correct horse battery")
        .expect("set");
    assert!(store.has_admin().expect("has admin"));
    assert!(
        store
            .verify_password("admin", "correct horse battery")
            .expect("verify")
    );
    assert!(
        !store
            .verify_password("admin", "wrong horse battery")
            .expect("verify")
    );
    assert!(
        !store
            .verify_password("mallory", "correct horse battery")
            .expect("verify")
    );
    let hash: String = store
        .conn()
        .query_row(
            "SELECT password_hash FROM admin_users WHERE username = ?1",
            params!["admin"],
            |row| row.get(0),
        )
        .expect("row");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
}

#[test]
fn export_carries_current_admin_state_and_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.export_toml().expect("export"), None);
    store.commit_config(&example(), "test").expect("commit");
    store
        .set_admin_state("pool01", "fe03", AdminState::Draining, "test")
        .expect("drain");
    let text = store.export_toml().expect("export").expect("some");
    let again = config::from_toml(&text, "export").expect("valid");
    assert_eq!(again.pools[0].members[2].state, AdminState::Draining);
    // Importing the export into the same store changes nothing.
    let (_, changes) = store.commit_config(&again, "import").expect("commit");
    assert!(changes.members_added.is_empty() && changes.members_removed.is_empty());
    assert_eq!(
        store.admin_states().expect("states")[&key("pool01", "fe03")],
        AdminState::Draining
    );
}

#[test]
fn sessions_and_tokens_store_only_hashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert!(
        store
            .set_first_password("admin", "a long enough secret")
            .expect("setup")
    );
    assert!(
        !store
            .set_first_password("admin", "another long secret")
            .expect("second setup refused")
    );
    let (secret, session) = store
        .create_session("admin", Role::Admin, std::time::Duration::from_secs(60))
        .expect("session");
    assert_eq!(store.session(&secret).expect("lookup"), Some(session));
    assert_eq!(store.session("not-a-session").expect("lookup"), None);
    store.delete_session(&secret).expect("logout");
    assert_eq!(store.session(&secret).expect("lookup"), None);

    let (id, token) = store
        .create_token("admin", "backup script", None, Role::Admin)
        .expect("token");
    assert_eq!(
        store.token_user(&token).expect("lookup").as_deref(),
        Some("admin")
    );
    let stored: i64 = store
        .conn()
        .query_row(
            "SELECT COUNT(*) FROM api_tokens WHERE token_hash = ?1",
            params![token],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(stored, 0, "the secret itself is never stored");
    assert!(store.revoke_token(id, None).expect("revoke"));
    assert!(!store.revoke_token(id, None).expect("revoke twice"));
    assert_eq!(store.token_user(&token).expect("lookup"), None);
}

#[test]
fn expired_sessions_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store
        .set_password("admin", "a long enough secret")
        .expect("set");
    let (secret, _) = store
        .create_session("admin", Role::Admin, std::time::Duration::ZERO)
        .expect("session");
    assert_eq!(store.session(&secret).expect("lookup"), None);
}

#[test]
fn records_a_batch_of_events_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let events: Vec<NewEvent> = (0..3)
        .map(|i| NewEvent {
            kind: EventKind::Health,
            pool: Some("pool01".into()),
            member: Some(format!("fe0{i}")),
            message: format!("event {i}"),
            detail: None,
        })
        .collect();
    store.record_events(&events).expect("record");
    store.record_events(&[]).expect("an empty batch is fine");
    let stored = store.events_after(0, 10).expect("events");
    let messages: Vec<&str> = stored.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["event 0", "event 1", "event 2"]);
}

#[test]
fn event_filters_apply_before_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store.commit_config(&example(), "test").expect("commit");
    store
        .set_admin_state("pool01", "fe03", AdminState::Disabled, "test")
        .expect("disable");
    let noise: Vec<NewEvent> = (0..200)
        .map(|i| NewEvent {
            kind: EventKind::Health,
            pool: Some("pool01".into()),
            member: Some("fe01".into()),
            message: format!("noise {i}"),
            detail: None,
        })
        .collect();
    store.record_events(&noise).expect("noise");
    let found = store
        .events(&EventFilter {
            limit: 5,
            kind: Some(EventKind::Admin),
            member: Some("fe03".into()),
            ..EventFilter::default()
        })
        .expect("events");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].member.as_deref(), Some("fe03"));
    let newest = store.recent_events(3).expect("recent");
    assert_eq!(newest[0].message, "noise 199");
    let oldest = store.events_after(0, 2).expect("after");
    assert_eq!(oldest[0].kind, "config");
}

#[test]
fn a_new_password_ends_sessions_and_revokes_tokens_unless_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store
        .set_password("admin", "a long enough secret")
        .expect("set");
    let hour = std::time::Duration::from_secs(3600);
    let (mine, _) = store
        .create_session("admin", Role::Admin, hour)
        .expect("session");
    let (other, _) = store
        .create_session("admin", Role::Admin, hour)
        .expect("session");
    let (_, token) = store
        .create_token("admin", "script", None, Role::Admin)
        .expect("token");

    let keep = Keep {
        session: Some(mine.clone()),
        tokens: true,
    };
    let changed = store
        .change_password("admin", "another long secret", &keep)
        .expect("change");
    assert_eq!(
        changed,
        PasswordChange {
            sessions_ended: 1,
            tokens_revoked: 0
        }
    );
    assert!(store.session(&mine).expect("lookup").is_some());
    assert!(store.session(&other).expect("lookup").is_none());
    assert!(store.token_user(&token).expect("lookup").is_some());

    let changed = store
        .set_password("admin", "a third long secret")
        .expect("set");
    assert_eq!(
        changed,
        PasswordChange {
            sessions_ended: 1,
            tokens_revoked: 1
        }
    );
    assert!(store.session(&mine).expect("lookup").is_none());
    assert!(store.token_user(&token).expect("lookup").is_none());
    assert!(
        store
            .verify_password("admin", "a third long secret")
            .expect("verify")
    );
    assert!(
        !store
            .verify_password("nobody", "a third long secret")
            .expect("verify unknown")
    );
}

#[test]
fn tokens_expire_and_note_their_last_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store
        .set_password("admin", "a long enough secret")
        .expect("set");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (old_id, old) = store
        .create_token("admin", "expired", Some(now - 1), Role::Admin)
        .expect("token");
    let (id, live) = store
        .create_token("admin", "live", Some(now + 3600), Role::Admin)
        .expect("token");
    assert_eq!(store.use_token(&old).expect("lookup"), None);
    assert!(!store.token_active(old_id).expect("active"));
    let used = store.use_token(&live).expect("lookup").expect("live token");
    assert_eq!(used.id, id);
    assert!(store.token_active(id).expect("active"));
    let listed = store.tokens().expect("list");
    assert!(listed[0].expired && listed[0].last_used_at.is_none());
    assert!(!listed[1].expired);
    assert!(listed[1].expires_at.is_some());
    assert!(listed[1].last_used_at.is_some());
}

fn seen_batch(range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range
        .map(|i| ("pool01".to_owned(), format!("user{i:06}@contoso.test")))
        .collect()
}

#[test]
fn seen_users_are_capped_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let limits = SeenLimits {
        max: 100,
        max_age: std::time::Duration::from_secs(30 * 86_400),
    };
    let start = time::OffsetDateTime::now_utc();
    let second = time::Duration::seconds(1);
    let first = store
        .record_seen_aors_at(&seen_batch(0..80), limits, start)
        .expect("record");
    assert_eq!(
        first,
        SeenRecorded {
            users: 80,
            evicted: 0
        }
    );
    // Users 0..10 come back: they are now the most recently seen.
    store
        .record_seen_aors_at(&seen_batch(0..10), limits, start + second)
        .expect("record");
    let over = store
        .record_seen_aors_at(&seen_batch(80..130), limits, start + second * 2)
        .expect("record");
    assert_eq!(
        over,
        SeenRecorded {
            users: 100,
            evicted: 30
        }
    );
    let kept = store.seen_aors("pool01").expect("seen");
    assert_eq!(kept.len(), 100);
    // The 30 forgotten are the least recently seen: users 10..40.
    for i in (0..10).chain(40..130) {
        assert!(kept.contains(&format!("user{i:06}@contoso.test")), "{i}");
    }
    // A batch larger than the cap still leaves the table at the cap.
    let flood = store
        .record_seen_aors_at(&seen_batch(1000..1500), limits, start + second * 3)
        .expect("record");
    assert_eq!(flood.users, 100);
    assert_eq!(store.seen_aors("pool01").expect("seen").len(), 100);
}

#[test]
fn seen_users_are_forgotten_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let limits = SeenLimits {
        max: 1000,
        max_age: std::time::Duration::from_secs(30 * 86_400),
    };
    let start = time::OffsetDateTime::now_utc();
    store
        .record_seen_aors_at(&seen_batch(0..5), limits, start)
        .expect("record");
    store
        .record_seen_aors_at(&seen_batch(5..8), limits, start + time::Duration::days(20))
        .expect("record");
    let later = store
        .record_seen_aors_at(&seen_batch(8..9), limits, start + time::Duration::days(31))
        .expect("record");
    assert_eq!(
        later,
        SeenRecorded {
            users: 4,
            evicted: 5
        }
    );
}

#[test]
fn seen_users_are_read_page_by_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let limits = SeenLimits {
        max: 100_000,
        max_age: std::time::Duration::from_secs(86_400),
    };
    let mut batch = seen_batch(0..25_000);
    batch.push(("pool02".to_owned(), "other@fabrikam.test".to_owned()));
    store.record_seen_aors(&batch, limits).expect("record");
    let page = store.seen_aors_page("pool01", None, 7).expect("page");
    assert_eq!(page.len(), 7);
    let next = store
        .seen_aors_page("pool01", page.last().map(String::as_str), 7)
        .expect("page");
    assert_eq!(next[0], "user000007@contoso.test");
    let all = store.seen_aors("pool01").expect("seen");
    assert_eq!(all.len(), 25_000);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.seen_aors("pool02").expect("seen").len(), 1);
}

#[test]
fn seen_users_are_counted_over_all_pools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.seen_aors_count().expect("count"), 0);
    let limits = SeenLimits {
        max: 100,
        max_age: std::time::Duration::from_secs(86_400),
    };
    let mut batch = seen_batch(0..3);
    batch.push(("pool02".to_owned(), "a@fabrikam.test".to_owned()));
    store.record_seen_aors(&batch, limits).expect("record");
    assert_eq!(store.seen_aors_count().expect("count"), 4);
}

#[test]
fn a_per_member_event_query_uses_the_member_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    // Tailing, the newest, and a page further back: each one a range of
    // the index.
    for (after, before) in [(None, None), (Some(0), None), (None, Some(500))] {
        let filter = EventFilter {
            after,
            before,
            limit: 5,
            pool: Some("pool01".into()),
            member: Some("fe03".into()),
            ..EventFilter::default()
        };
        let sql = format!("EXPLAIN QUERY PLAN {}", events::events_sql(&filter));
        let conn = store.conn();
        let mut stmt = conn.prepare(&sql).expect("prepare");
        let plan: Vec<String> = stmt
            .query_map(
                params![
                    0,
                    None::<String>,
                    "pool01",
                    "fe03",
                    before,
                    None::<String>,
                    None::<String>,
                    5
                ],
                |row| row.get(3),
            )
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(
            plan.iter().any(|step| step.contains("events_member")),
            "{after:?} {before:?}: {plan:?}"
        );
    }
}

#[test]
fn every_event_query_shape_binds_the_same_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    for shape in 0..128u32 {
        let has = |bit: u32| shape & (1 << bit) != 0;
        let filter = EventFilter {
            after: has(0).then_some(0),
            before: has(1).then_some(10),
            limit: 5,
            kind: has(2).then_some(EventKind::Health),
            pool: has(3).then(|| "pool01".to_owned()),
            member: has(4).then(|| "fe01".to_owned()),
            since: has(5).then(|| "2027-01-31T08:00:00Z".to_owned()),
            until: has(6).then(|| "2027-01-31T09:00:00Z".to_owned()),
        };
        let sql = events::events_sql(&filter);
        assert!(!sql.contains("IS NULL"), "{sql}");
        store
            .events(&filter)
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }
}

#[test]
fn events_page_newest_first_and_within_a_time_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let event = |i: usize| NewEvent {
        kind: if i.is_multiple_of(2) {
            EventKind::Health
        } else {
            EventKind::Admin
        },
        pool: Some("pool01".into()),
        member: Some("fe01".into()),
        message: format!("event {i}"),
        detail: None,
    };
    {
        // One event a minute from 08:00, with as many fractional digits as
        // the clock gave (text order is not time order then).
        let conn = store.conn();
        for i in 0..10 {
            let at = if i == 3 {
                "2027-01-31T08:03:00.5Z".to_owned()
            } else {
                format!("2027-01-31T08:{i:02}:00Z")
            };
            events::insert_event(&conn, &at, &event(i)).expect("insert");
        }
    }
    let read = |filter: EventFilter| -> Vec<String> {
        store
            .events(&filter)
            .expect("events")
            .into_iter()
            .map(|e| e.message)
            .collect()
    };
    let first = store
        .events(&EventFilter {
            limit: 4,
            ..EventFilter::default()
        })
        .expect("events");
    let names: Vec<&str> = first.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(names, ["event 9", "event 8", "event 7", "event 6"]);
    let older = read(EventFilter {
        before: Some(first[3].id),
        limit: 4,
        ..EventFilter::default()
    });
    assert_eq!(older, ["event 5", "event 4", "event 3", "event 2"]);
    let admin_older = read(EventFilter {
        before: Some(first[3].id),
        kind: Some(EventKind::Admin),
        limit: 10,
        ..EventFilter::default()
    });
    assert_eq!(admin_older, ["event 5", "event 3", "event 1"]);
    let range = read(EventFilter {
        since: Some("2027-01-31T08:03:00Z".into()),
        until: Some("2027-01-31T08:05:00Z".into()),
        limit: 10,
        ..EventFilter::default()
    });
    assert_eq!(range, ["event 5", "event 4", "event 3"]);
    let tail = read(EventFilter {
        after: Some(first[3].id),
        since: Some("2027-01-31T08:08:00Z".into()),
        limit: 10,
        ..EventFilter::default()
    });
    assert_eq!(tail, ["event 8", "event 9"]);
}

#[test]
fn the_event_log_keeps_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let event = |i: i64| NewEvent {
        kind: EventKind::Health,
        pool: None,
        member: None,
        message: format!("event {i}"),
        detail: None,
    };
    let batch: Vec<NewEvent> = (0..events::EVENTS_KEPT + 10).map(event).collect();
    store.record_events(&batch).expect("record");
    let oldest = store.events_after(0, 1).expect("oldest");
    assert_eq!(oldest[0].message, "event 10");
    let newest = store.recent_events(1).expect("newest");
    assert_eq!(
        newest[0].message,
        format!("event {}", events::EVENTS_KEPT + 9)
    );
}

#[test]
fn credentials_from_the_ha_active_replace_ours_and_a_newer_password_ends_sessions() {
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, b) = (
        Store::open(dir_a.path()).expect("a"),
        Store::open(dir_b.path()).expect("b"),
    );
    assert!(a.set_first_password("admin", "a long password").expect("a"));
    let (token, _) = a
        .create_token("admin", "script", None, Role::Admin)
        .expect("token");
    // B set up later: its own password is newer, so taking A's keeps the
    // session of the admin who just joined.
    assert!(
        b.set_first_password("admin", "another password")
            .expect("b")
    );
    b.create_token("admin", "b's own", None, Role::Admin)
        .expect("token");
    let (session, _) = b
        .create_session("admin", Role::Admin, std::time::Duration::from_secs(600))
        .expect("session");
    assert!(
        b.replace_credentials(&a.credentials().expect("read"))
            .expect("replace")
    );
    assert_eq!(b.credentials().expect("b"), a.credentials().expect("a"));
    assert!(
        b.verify_password("admin", "a long password")
            .expect("verify")
    );
    assert!(b.session(&session).expect("session").is_some());
    assert!(
        !b.replace_credentials(&a.credentials().expect("read"))
            .expect("again")
    );
    // A revokes its token and changes the password: B follows, and the
    // session ends.
    assert!(a.revoke_token(token, None).expect("revoke"));
    std::thread::sleep(std::time::Duration::from_millis(5));
    a.set_password("admin", "a newer long password")
        .expect("password");
    assert!(
        b.replace_credentials(&a.credentials().expect("read"))
            .expect("replace")
    );
    assert_eq!(b.credentials().expect("b"), a.credentials().expect("a"));
    assert!(b.session(&session).expect("session").is_none());
}
