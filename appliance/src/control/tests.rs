use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::{AdminState, Config};
use crate::license::Licensing;
use crate::state::{self, Inputs, PublisherHandle, Update};
use crate::store::Store;

fn example() -> Config {
    config::from_toml(
        include_str!("../../../examples/lync-pool.toml"),
        "lync-pool.toml",
    )
    .expect("the example is valid")
}

fn with_ttl(ttl: u32) -> Config {
    let mut file = example().source().clone();
    file.dns.ttl = ttl;
    config::validate(&file).expect("valid")
}

fn api() -> Source {
    Source::Api {
        user: "alice".to_owned(),
    }
}

fn key(member: &str) -> MemberKey {
    ("pool01".to_owned(), member.to_owned())
}

/// A store with the example committed, and a controller loaded from it.
fn controller(dir: &std::path::Path) -> (Store, Controller) {
    let store = Store::open(dir).expect("store");
    let licensing = Licensing::new(store.clone(), Vec::new(), "test".into()).expect("licensing");
    let mut controller =
        Controller::load(store.clone(), licensing, example()).expect("load an empty store");
    assert_eq!(controller.desired().version, 0, "nothing stored yet");
    let change = Change::Config {
        input: ConfigInput::Validated(Box::new(example())),
        if_match: None,
    };
    controller
        .apply(change, &Source::File { path: "x".into() })
        .expect("first commit");
    (store, controller)
}

fn start(controller: Controller) -> (ControlHandle, PublisherHandle, CancellationToken) {
    let shutdown = CancellationToken::new();
    let (publisher, _) = state::spawn(controller.inputs(), shutdown.child_token());
    let (control, _) = controller.spawn(
        publisher.clone(),
        EventLog::for_tests().0,
        shutdown.child_token(),
        Duration::from_secs(120),
    );
    (control, publisher, shutdown)
}

#[tokio::test]
async fn concurrent_changes_commit_publish_and_announce_in_one_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, controller) = controller(dir.path());
    let (control, publisher, shutdown) = start(controller);
    let mut stream = control.subscribe();

    let states = [
        AdminState::Draining,
        AdminState::Disabled,
        AdminState::Enabled,
    ];
    let mut tasks = Vec::new();
    for i in 0..30u32 {
        let control = control.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                let input = ConfigInput::Validated(Box::new(with_ttl(100 + i)));
                control
                    .set_config(input, None, api())
                    .await
                    .map(|outcome| outcome.generation)
            } else {
                let member = key(["fe01", "fe02", "fe03"][(i % 3) as usize]);
                let state = states[(i / 3 % 3) as usize];
                control
                    .set_admin_state(member, state, api())
                    .await
                    .map(|outcome| outcome.generation)
            }
        }));
    }
    let mut generations = Vec::new();
    for task in tasks {
        generations.push(task.await.expect("task").expect("change accepted"));
    }

    let mut committed = Vec::new();
    while committed.len() < 30 {
        committed.push(stream.recv().await.expect("committed"));
    }
    // One order, without gaps; each change is published by the time it is
    // announced, so generations never go back.
    let seqs: Vec<u64> = committed.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        (2..32).collect::<Vec<_>>(),
        "the first commit was seq 1"
    );
    assert!(
        committed
            .windows(2)
            .all(|w| w[0].generation <= w[1].generation)
    );
    assert!(committed.windows(2).all(|w| w[0].version <= w[1].version));
    let mut sorted = generations.clone();
    sorted.sort_unstable();
    let mut announced: Vec<u64> = committed.iter().map(|c| c.generation).collect();
    announced.sort_unstable();
    assert_eq!(
        sorted, announced,
        "each reply names its change's generation"
    );

    // The event log holds the same changes in the same order.
    let events = store.events_after(0, 1000).expect("events");
    let logged: Vec<String> = events
        .iter()
        .skip(1)
        .map(|e| match e.kind.as_str() {
            "config" => format!("config {}", e.detail.as_ref().expect("detail")["version"]),
            _ => format!(
                "{} {}",
                e.member.as_deref().unwrap_or_default(),
                e.detail.as_ref().expect("detail")["to"]
                    .as_str()
                    .unwrap_or_default()
            ),
        })
        .collect();
    let expected: Vec<String> = committed
        .iter()
        .map(|c| match &c.change {
            CommittedChange::Config { .. } => format!("config {}", c.version),
            CommittedChange::Member { member, state, .. } => {
                format!("{} {}", member.1, state.as_str())
            }
            CommittedChange::CaBundle { name, .. } => format!("ca bundle {name}"),
        })
        .collect();
    assert_eq!(logged, expected);

    // The final state is the last committed change, everywhere.
    let desired = control.desired();
    let last_config = committed
        .iter()
        .rev()
        .find_map(|c| match &c.change {
            CommittedChange::Config { config } => Some(config.dns.ttl),
            CommittedChange::Member { .. } | CommittedChange::CaBundle { .. } => None,
        })
        .expect("configs were committed");
    assert_eq!(desired.config.dns.ttl, last_config);
    assert_eq!(
        store.latest_config().expect("read").expect("some").id,
        desired.version
    );
    assert_eq!(store.admin_states().expect("states"), desired.admin);
    let view = publisher.current();
    assert_eq!(view.config_version, desired.version);
    for member in &view.pools[0].members {
        assert_eq!(
            Some(&member.admin_state),
            desired.admin.get(&key(&member.name)),
            "{}",
            member.name
        );
    }
    shutdown.cancel();
}

#[tokio::test]
async fn if_match_lets_one_of_two_racing_changes_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, controller) = controller(dir.path());
    let (control, _publisher, shutdown) = start(controller);
    let version = control.desired().version;
    let (a, b) = tokio::join!(
        control.set_config(
            ConfigInput::Validated(Box::new(with_ttl(5))),
            Some(version),
            api()
        ),
        control.set_config(
            ConfigInput::Validated(Box::new(with_ttl(6))),
            Some(version),
            api()
        ),
    );
    let won = a.as_ref().or(b.as_ref()).expect("one lands");
    let lost = a
        .as_ref()
        .and(b.as_ref())
        .expect_err("the other is refused");
    assert_eq!(won.version, version + 1);
    assert!(
        matches!(lost, ControlError::VersionMismatch { expected, current }
            if *expected == version && *current == version + 1),
        "{lost}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn refusals_and_previews_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, controller) = controller(dir.path());
    let (control, publisher, shutdown) = start(controller);
    let before = control.desired();
    let events = store.events_after(0, 100).expect("events").len();

    let invalid = control
        .set_config(ConfigInput::Toml("[listen\n".to_owned()), None, api())
        .await
        .expect_err("not TOML");
    assert!(matches!(invalid, ControlError::Invalid(_)), "{invalid}");
    let json = control
        .set_config(ConfigInput::Json(br#"{"listen": 3}"#.to_vec()), None, api())
        .await
        .expect_err("wrong type");
    let ControlError::Invalid(error) = json else {
        panic!("{json}")
    };
    assert_eq!(error.problems()[0].field.as_deref(), Some("listen"));
    let unknown = control
        .set_admin_state(key("fe09"), AdminState::Disabled, api())
        .await
        .expect_err("no such member");
    assert!(
        matches!(unknown, ControlError::UnknownMember { .. }),
        "{unknown}"
    );

    let preview = control
        .preview(ConfigInput::Toml(config::to_toml(&with_ttl(7))), api())
        .await
        .expect("preview");
    assert!(preview.diff.settings_changed);
    assert_eq!(preview.current.version, before.version);
    assert_eq!(preview.licence_problem, None);

    assert_eq!(control.desired(), before);
    assert_eq!(store.events_after(0, 100).expect("events").len(), events);
    assert_eq!(
        store.latest_config().expect("read").expect("some").id,
        before.version
    );
    assert_eq!(publisher.current().config_version, before.version);
    shutdown.cancel();
}

#[test]
fn a_restart_with_the_same_file_keeps_the_stored_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut controller) = controller(dir.path());
    controller
        .apply(
            Change::Member {
                member: key("fe02"),
                state: AdminState::Draining,
            },
            &api(),
        )
        .expect("drain");
    let file = Source::File { path: "x".into() };
    let again = Change::Config {
        input: ConfigInput::Validated(Box::new(example())),
        if_match: None,
    };
    assert!(matches!(
        controller.apply(again.clone(), &file),
        Ok(Applied::Unchanged)
    ));
    // Loaded again as at the next start: parsed once, the drain kept.
    let licensing = Licensing::new(store.clone(), Vec::new(), "test".into()).expect("licensing");
    let mut reloaded = Controller::load(store, licensing, example()).expect("load");
    assert_eq!(reloaded.desired(), controller.desired());
    assert_eq!(reloaded.desired().admin[&key("fe02")], AdminState::Draining);
    assert!(matches!(
        reloaded.apply(again, &file),
        Ok(Applied::Unchanged)
    ));
    // The same config through the API is a new version all the same.
    let put = Change::Config {
        input: ConfigInput::Validated(Box::new(example())),
        if_match: None,
    };
    assert!(matches!(
        reloaded.apply(put, &api()),
        Ok(Applied::Config { .. })
    ));
    assert_eq!(reloaded.desired().version, 2);
}

#[test]
fn the_publisher_refuses_a_config_that_is_not_newer() {
    let mut inputs = Inputs::new(Arc::new(with_ttl(30)), 5, BTreeMap::new());
    let update = |ttl: u32, version: i64| {
        let config = with_ttl(ttl);
        let diff = config::diff(Some(&with_ttl(30)), &config);
        Update::Config {
            config: Arc::new(config),
            version,
            diff,
        }
    };
    assert!(!inputs.apply(update(10, 4)), "an older version");
    assert!(
        !inputs.apply(update(10, 5)),
        "another config under the same version"
    );
    assert_eq!(inputs.config.dns.ttl, 30);
    assert_eq!(inputs.config_version, 5);
    assert!(inputs.apply(update(10, 6)), "a newer version");
    assert_eq!(inputs.config.dns.ttl, 10);
    assert_eq!(inputs.config_version, 6);
    assert!(
        !inputs.apply(update(30, 5)),
        "the old version again cannot roll the config back"
    );
    assert_eq!(inputs.config.dns.ttl, 10);
}

/// A move of the admin listener that is never confirmed: a member action
/// meanwhile keeps the old address open, and the revert leaves the members'
/// admin states as they are (a drain begun before the move stays).
#[tokio::test(start_paused = true)]
async fn an_unconfirmed_admin_move_is_reverted_without_touching_admin_states() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, controller) = controller(dir.path());
    let (control, publisher, shutdown) = start(controller);
    control
        .set_admin_state(key("fe01"), AdminState::Draining, api())
        .await
        .expect("drain before the move");
    // The move as the UI sends it: the config as shown, with fe01 draining.
    let outcome = move_admin(&control).await;
    assert!(outcome.confirm_by.is_some());
    let awaiting = control.admin_move();
    assert!(awaiting.borrow().is_some(), "the old address is kept");

    control
        .set_admin_state(key("fe02"), AdminState::Disabled, api())
        .await
        .expect("a member action is taken during the move");
    assert!(
        awaiting.borrow().is_some(),
        "the member action leaves the move as it is"
    );

    // Past the deadline the previous config comes back.
    tokio::time::sleep(Duration::from_secs(121)).await;
    let mut reverted = control.admin_move();
    while reverted.borrow_and_update().is_some() {
        reverted.changed().await.expect("the task runs");
    }
    let desired = control.desired();
    assert_eq!(desired.config.listen.admin.to_string(), "127.0.0.1:8443");
    assert_eq!(desired.admin.get(&key("fe01")), Some(&AdminState::Draining));
    assert_eq!(desired.admin.get(&key("fe02")), Some(&AdminState::Disabled));
    let view = publisher.current();
    let state = |name: &str| {
        view.pools[0]
            .members
            .iter()
            .find(|m| m.name == name)
            .expect(name)
            .admin_state
    };
    assert_eq!(state("fe01"), AdminState::Draining, "published as draining");
    assert_eq!(state("fe02"), AdminState::Disabled, "published as disabled");
    assert_eq!(
        store.setting(AWAITING_MOVE_KEY).expect("read"),
        None,
        "a restart has nothing left to revert"
    );
    shutdown.cancel();
}

#[test]
fn a_confirmation_counts_where_it_reaches_the_new_address() {
    let arrival = |listened_on: &str, reached: &str| Arrival {
        listened_on: listened_on.parse().expect("address"),
        reached: reached.parse().expect("address"),
    };
    let to: SocketAddr = "198.51.100.10:8443".parse().expect("address");
    // On the listener opened for it.
    assert!(arrival("198.51.100.10:8443", "198.51.100.10:8443").reaches(to));
    // On the kept wildcard listener, at the new address; not at another.
    assert!(arrival("0.0.0.0:8443", "198.51.100.10:8443").reaches(to));
    assert!(!arrival("0.0.0.0:8443", "198.51.100.11:8443").reaches(to));
    // Moving to the wildcard: any address on its port proves it.
    let wildcard: SocketAddr = "0.0.0.0:8443".parse().expect("address");
    assert!(arrival("198.51.100.10:8443", "198.51.100.10:8443").reaches(wildcard));
    assert!(!arrival("198.51.100.10:9443", "198.51.100.10:9443").reaches(wildcard));
    // A new address given with port 0 counts only on its own listener.
    let any_port: SocketAddr = "127.0.0.2:0".parse().expect("address");
    assert!(arrival("127.0.0.2:0", "127.0.0.2:40000").reaches(any_port));
    assert!(!arrival("127.0.0.1:0", "127.0.0.2:40000").reaches(any_port));
}

/// Move the admin listener to 127.0.0.2:8443 through the task, with the
/// config as shown (admin states included), as the UI does.
async fn move_admin(control: &ControlHandle) -> ConfigOutcome {
    let mut moved = control.desired().file();
    moved.listen.admin = "127.0.0.2:8443".to_owned();
    control
        .set_config(
            ConfigInput::Validated(Box::new(config::validate(&moved).expect("valid"))),
            None,
            api(),
        )
        .await
        .expect("the move is committed")
}

fn reload(store: &Store) -> Controller {
    let licensing = Licensing::new(store.clone(), Vec::new(), "test".into()).expect("licensing");
    Controller::load(store.clone(), licensing, example()).expect("load")
}

#[tokio::test]
async fn a_restart_before_the_confirmation_reverts_the_admin_move() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, controller) = controller(dir.path());
    let (control, _publisher, shutdown) = start(controller);
    control
        .set_admin_state(key("fe01"), AdminState::Draining, api())
        .await
        .expect("drain before the move");
    let _ = move_admin(&control).await;
    assert_eq!(control.desired().version, 2);
    shutdown.cancel();
    drop(control);

    // poolgate stops before the move is confirmed: the next start runs the
    // config from before it, as a version of its own, with the drain kept.
    let controller = reload(&store);
    let desired = controller.desired();
    assert_eq!(desired.version, 3, "the revert is a version of its own");
    assert_eq!(desired.config.listen.admin.to_string(), "127.0.0.1:8443");
    assert_eq!(desired.admin.get(&key("fe01")), Some(&AdminState::Draining));
    let latest = store.latest_config().expect("read").expect("stored");
    assert!(
        latest.source.contains("revert to version 1"),
        "{}",
        latest.source
    );
    // The revert is done once: another start changes nothing.
    drop(controller);
    assert_eq!(reload(&store).desired().version, 3);
}

#[tokio::test]
async fn a_confirmed_admin_move_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, controller) = controller(dir.path());
    let (control, _publisher, shutdown) = start(controller);
    let _ = move_admin(&control).await;
    let arrival = Arrival {
        listened_on: "127.0.0.2:8443".parse().expect("address"),
        reached: "127.0.0.2:8443".parse().expect("address"),
    };
    control.confirm(arrival, api()).await.expect("confirmed");
    shutdown.cancel();
    drop(control);

    let controller = reload(&store);
    assert_eq!(controller.desired().version, 2, "nothing reverted");
    assert_eq!(
        controller.desired().config.listen.admin.to_string(),
        "127.0.0.2:8443"
    );
}

fn peer() -> Source {
    Source::Peer {
        appliance_id: "peer-a".to_owned(),
    }
}

/// The example's TOML with another TTL and another admin listener: what
/// the peer sends.
fn peer_toml(ttl: u32) -> String {
    let mut file = with_ttl(ttl).source().clone();
    file.listen.admin = "192.0.2.1:443".to_owned();
    config::file_to_toml(&file)
}

#[test]
fn a_standby_refuses_its_own_changes_and_takes_the_peers_under_their_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut controller) = controller(dir.path());
    let (writer_tx, writer) = watch::channel(Writer::Standby {
        active: Some("https://192.0.2.1:443".to_owned()),
    });
    controller.set_writer(writer);
    let own = Change::Config {
        input: ConfigInput::Validated(Box::new(with_ttl(5))),
        if_match: None,
    };
    let refused = controller.apply(own.clone(), &api());
    assert!(
        matches!(&refused, Err(ControlError::Standby { active: Some(a) }) if a.contains("192.0.2.1")),
        "{refused:?}"
    );
    let member = Change::Member {
        member: key("fe01"),
        state: AdminState::Draining,
    };
    assert!(matches!(
        controller.apply(member, &api()),
        Err(ControlError::Standby { .. })
    ));
    // The peer's version 7 is taken under its number, with our [listen].
    let local_admin = controller.desired().config.listen.admin;
    let change = Change::Peer(PeerChange::Config {
        version: 7,
        toml: peer_toml(42),
        origin: "API (admin)".to_owned(),
        rebase: None,
    });
    controller.apply(change, &peer()).expect("peer config");
    assert_eq!(controller.desired().version, 7);
    assert_eq!(controller.desired().config.dns.ttl, 42);
    assert_eq!(controller.desired().config.listen.admin, local_admin);
    let stored = store.latest_config().expect("read").expect("stored");
    assert_eq!(stored.id, 7);
    assert!(
        stored.source.contains("HA peer peer-a"),
        "{}",
        stored.source
    );
    // A replay of it, or of anything older, is refused and changes nothing.
    for version in [7, 3] {
        let replay = Change::Peer(PeerChange::Config {
            version,
            toml: peer_toml(1),
            origin: "replayed".to_owned(),
            rebase: None,
        });
        assert!(matches!(
            controller.apply(replay, &peer()),
            Err(ControlError::Replay { current: 7, .. })
        ));
    }
    assert_eq!(controller.desired().config.dns.ttl, 42);
    // Admin states come with the peer's time.
    let at = "2026-01-02T03:04:05Z".to_owned();
    let change = Change::Peer(PeerChange::Admin {
        member: key("fe02"),
        state: AdminState::Draining,
        changed_at: at.clone(),
    });
    controller.apply(change, &peer()).expect("peer admin state");
    assert_eq!(
        store
            .admin_state_changed_at("pool01", "fe02")
            .expect("read"),
        Some(at)
    );
    // Active again: its own changes are taken.
    writer_tx.send_replace(Writer::Own);
    controller.apply(own, &api()).expect("own change");
    assert_eq!(controller.desired().version, 8);
}

#[test]
fn a_rebase_drops_the_losing_versions_and_may_move_the_version_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut controller) = controller(dir.path());
    for ttl in [5, 6, 7] {
        let change = Change::Config {
            input: ConfigInput::Validated(Box::new(with_ttl(ttl))),
            if_match: None,
        };
        controller.apply(change, &api()).expect("commit");
    }
    assert_eq!(controller.desired().version, 4);
    let change = Change::Peer(PeerChange::Config {
        version: 3,
        toml: peer_toml(99),
        origin: "API (admin)".to_owned(),
        rebase: Some(1),
    });
    match controller.apply(change, &peer()).expect("rebase") {
        Applied::Config { replace, .. } => assert!(replace),
        other => panic!("{other:?}"),
    }
    assert_eq!(controller.desired().version, 3);
    let ids: Vec<i64> = store
        .config_versions_after(0, 10)
        .expect("read")
        .iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(ids, [1, 3]);
    // The next own version follows the peer's.
    let change = Change::Config {
        input: ConfigInput::Validated(Box::new(with_ttl(8))),
        if_match: None,
    };
    controller.apply(change, &api()).expect("commit");
    assert_eq!(controller.desired().version, 4);
}

/// The example with its SIP monitor speaking TLS and verifying with `bundle`.
fn with_ca_bundle(bundle: Option<&str>) -> ConfigInput {
    let mut file = example().source().clone();
    let monitor = file
        .monitors
        .iter_mut()
        .find(|m| m.name == "fe-sip")
        .expect("fe-sip");
    monitor.kind = config::MonitorKind::Tls;
    monitor.ca_bundle = bundle.map(str::to_owned);
    ConfigInput::Validated(Box::new(config::validate(&file).expect("valid")))
}

fn test_ca(name: &str) -> CaBundle {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).expect("CA").pem();
    crate::health::ca::parse(name, &pem).expect("a CA bundle")
}

#[tokio::test]
async fn ca_bundles_must_exist_while_monitors_name_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, controller) = controller(dir.path());
    let (control, publisher, shutdown) = start(controller);

    // Not uploaded: the config is refused on the monitor's field.
    let error = control
        .set_config(with_ca_bundle(Some("contoso")), None, api())
        .await
        .expect_err("no such bundle");
    let ControlError::Invalid(invalid) = error else {
        panic!("{error:?}");
    };
    let problem = &invalid.problems()[0];
    assert_eq!(problem.field.as_deref(), Some("monitor[0].ca_bundle"));
    assert!(
        problem.message.contains("\"contoso\""),
        "{}",
        problem.message
    );

    // Uploaded: stored, published, and the config commits.
    let generation = control
        .put_ca_bundle(test_ca("contoso"), api())
        .await
        .expect("upload");
    assert!(publisher.current().generation >= generation);
    assert!(publisher.current().ca_bundles.contains_key("contoso"));
    assert_eq!(store.ca_bundles().expect("read").len(), 1);
    control
        .set_config(with_ca_bundle(Some("contoso")), None, api())
        .await
        .expect("commits");

    // In use: not deleted, the answer names the monitor.
    let error = control
        .delete_ca_bundle("contoso".into(), api())
        .await
        .expect_err("in use");
    assert!(
        matches!(&error, ControlError::CaBundleInUse { monitors, .. } if monitors == &["fe-sip"]),
        "{error:?}"
    );
    assert_eq!(store.ca_bundles().expect("read").len(), 1);

    // Unused: deleted; a second delete finds nothing.
    control
        .set_config(with_ca_bundle(None), None, api())
        .await
        .expect("commits");
    control
        .delete_ca_bundle("contoso".into(), api())
        .await
        .expect("deleted");
    assert!(publisher.current().ca_bundles.is_empty());
    assert!(store.ca_bundles().expect("read").is_empty());
    assert!(matches!(
        control.delete_ca_bundle("contoso".into(), api()).await,
        Err(ControlError::UnknownCaBundle(_))
    ));
    shutdown.cancel();
}

#[test]
fn stored_ca_bundles_are_loaded_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = controller(dir.path());
    let bundle = test_ca("contoso");
    store
        .put_ca_bundle(
            "contoso",
            &bundle.pem,
            NewEvent::new(EventKind::System, "uploaded"),
        )
        .expect("store");
    let licensing = Licensing::new(store.clone(), Vec::new(), "test".into()).expect("licensing");
    let controller = Controller::load(store, licensing, example()).expect("load");
    assert_eq!(
        controller
            .inputs()
            .ca_bundles
            .get("contoso")
            .map(|b| &b.pem),
        Some(&bundle.pem)
    );
}
