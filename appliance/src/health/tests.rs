use std::collections::VecDeque;
use std::net::TcpListener;
use std::time::Duration;

use super::*;
use crate::config::{self, StartState};
use crate::state::{self, Inputs};

fn config(text: &str) -> Config {
    config::from_toml(text, "test.toml").expect("valid test config")
}

const BASE: &str = r#"
[listen]
admin = "127.0.0.1:0"

[[zone]]
name = "test"

[[monitor]]
name = "sip"
type = "tcp"
interval_ms = 100
timeout_ms = 50
rise = 2
fall = 2

[[monitor]]
name = "web"
type = "http"
interval_ms = 100
timeout_ms = 50

[[pool]]
name = "p"
fqdn = "p.test"
monitor = "sip"
registrar_port = 15061
"#;

fn with_members(members: &[(&str, &str)], service: bool) -> String {
    let mut text = BASE.to_owned();
    for (name, address) in members {
        text.push_str(&format!(
            "[[pool.member]]\nname = \"{name}\"\naddress = \"{address}\"\n"
        ));
    }
    if service {
        text.push_str(
            "[[virtual_service]]\nname = \"vs\"\naddress = \"127.0.0.1\"\nport = 14443\npool = \"p\"\nmonitor = \"web\"\n",
        );
    }
    text
}

/// The key of member a (127.0.0.11) or b (127.0.0.12).
fn key(member: &str, monitor: &str) -> TargetKey {
    let address = match member {
        "a" => "127.0.0.11",
        "b" => "127.0.0.12",
        _ => "127.0.0.1",
    };
    key_at(member, monitor, address)
}

fn key_at(member: &str, monitor: &str, address: &str) -> TargetKey {
    TargetKey {
        pool: "p".into(),
        member: member.into(),
        monitor: monitor.into(),
        address: address.parse().expect("ip"),
    }
}

#[test]
fn one_target_per_member_and_used_monitor() {
    let config = config(&with_members(
        &[("a", "127.0.0.11"), ("b", "127.0.0.12")],
        true,
    ));
    let targets = desired_targets(&config);
    let keys: Vec<_> = targets.keys().cloned().collect();
    assert_eq!(
        keys,
        vec![
            key("a", "sip"),
            key("a", "web"),
            key("b", "sip"),
            key("b", "web")
        ]
    );
    // tcp without a port probes the consumer's port; http defaults to 80.
    assert_eq!(
        targets[&key("a", "sip")].address,
        "127.0.0.11:15061".parse().expect("addr")
    );
    assert_eq!(
        targets[&key("b", "web")].address,
        "127.0.0.12:80".parse().expect("addr")
    );
}

#[test]
fn a_portless_monitor_of_a_mapped_service_probes_the_member_port() {
    let mut text = with_members(&[("a", "127.0.0.11")], false);
    text.push_str(
        "[[monitor]]\nname = \"fe\"\ntype = \"tcp\"\n\
         [[virtual_service]]\nname = \"ext\"\naddress = \"127.0.0.1\"\nport = 443\nmember_port = 4443\npool = \"p\"\nmonitor = \"fe\"\n",
    );
    let targets = desired_targets(&config(&text));
    assert_eq!(
        targets[&key("a", "fe")].address,
        "127.0.0.11:4443".parse().expect("addr"),
        "what the service connects to, not the port it listens on"
    );
}

#[test]
fn an_unused_monitor_has_no_targets() {
    let config = config(&with_members(&[("a", "127.0.0.11")], false));
    assert_eq!(
        desired_targets(&config).keys().cloned().collect::<Vec<_>>(),
        vec![key("a", "sip")]
    );
}

#[test]
fn plan_touches_only_what_changed() {
    let old = desired_targets(&config(&with_members(
        &[("a", "127.0.0.11"), ("b", "127.0.0.12")],
        true,
    )));
    assert_eq!(plan(&old, &old), (vec![], vec![]));

    // b moves, c arrives, the web service goes away.
    let new = desired_targets(&config(&with_members(
        &[
            ("a", "127.0.0.11"),
            ("b", "127.0.0.22"),
            ("c", "127.0.0.13"),
        ],
        false,
    )));
    let (stop, start) = plan(&old, &new);
    assert_eq!(
        stop,
        vec![key("a", "web"), key("b", "sip"), key("b", "web")]
    );
    assert_eq!(
        start,
        vec![
            key_at("b", "sip", "127.0.0.22"),
            key_at("c", "sip", "127.0.0.13")
        ]
    );

    // A monitor change restarts every target of that monitor only.
    let changed = desired_targets(&config(
        &with_members(&[("a", "127.0.0.11"), ("b", "127.0.0.12")], true)
            .replace("rise = 2", "rise = 3"),
    ));
    let (stop, start) = plan(&old, &changed);
    assert_eq!(stop, vec![key("a", "sip"), key("b", "sip")]);
    assert_eq!(start, stop);
}

/// Scripted results; records when each probe started.
struct Script {
    results: VecDeque<bool>,
    started: Arc<Mutex<Vec<Instant>>>,
}

impl Probe for Script {
    async fn probe(&mut self) -> Result<(), ProbeError> {
        self.started.lock().expect("lock").push(Instant::now());
        match self.results.pop_front() {
            Some(true) | None => Ok(()),
            Some(false) => Err(ProbeError::Refused),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn transitions_arrive_on_the_probe_that_completes_a_run() {
    let started = Arc::new(Mutex::new(Vec::new()));
    let script = Script {
        // settle up, fall 3, rise 2
        results: [true, false, false, false, true, true].into(),
        started: Arc::clone(&started),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let begin = Instant::now();
    let task = tokio::spawn(run_target(
        key("a", "sip"),
        false,
        Hysteresis::new(2, 3, StartState::Up),
        begin,
        Cadence::new(Duration::from_millis(300), Duration::from_secs(1)),
        script,
        tx,
        stop.clone(),
    ));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let report = rx.recv().await.expect("a report");
        seen.push((begin.elapsed(), report.transition.to, report.reason));
    }
    stop.cancel();
    task.await.expect("target task");
    assert_eq!(
        seen,
        vec![
            (Duration::from_millis(300), Health::Up, None),
            (
                Duration::from_millis(3300),
                Health::Down,
                Some("connection refused".to_owned())
            ),
            (Duration::from_millis(5300), Health::Up, None),
        ]
    );
    // Probes ran exactly one interval apart after the offset.
    let started = started.lock().expect("lock");
    for pair in started.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_secs(1));
    }
}

#[tokio::test(start_paused = true)]
async fn a_stopped_target_sends_nothing_more() {
    let started = Arc::new(Mutex::new(Vec::new()));
    let script = Script {
        results: VecDeque::new(),
        started: Arc::clone(&started),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_target(
        key("a", "sip"),
        false,
        Hysteresis::new(1, 1, StartState::Up),
        Instant::now(),
        Cadence::new(Duration::ZERO, Duration::from_secs(1)),
        script,
        tx,
        stop.clone(),
    ));
    assert!(rx.recv().await.is_some());
    stop.cancel();
    task.await.expect("target task");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(started.lock().expect("lock").len(), 1);
    assert!(rx.recv().await.is_none());
}

async fn wait_for(
    publisher: &PublisherHandle,
    member: &str,
    monitor: &str,
    want: Health,
) -> HealthStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = publisher.current();
        let status = view
            .pool("p")
            .and_then(|pool| pool.members.iter().find(|m| m.name == member))
            .and_then(|m| m.health.get(monitor).cloned());
        if let Some(status) = status
            && status.state == want
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{member}/{monitor} never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The manager follows config commits: an added member gets a target, an
/// unchanged member keeps its target (and its `since`).
#[tokio::test]
async fn manager_reconciles_on_config_change() {
    let listener = TcpListener::bind("127.0.0.11:0").expect("bind member listener");
    let port = listener.local_addr().expect("addr").port();
    let text = |members: &[(&str, &str)]| {
        with_members(members, false).replace(
            "registrar_port = 15061",
            &format!("registrar_port = {port}"),
        )
    };
    let first = config(&text(&[("a", "127.0.0.11")]));
    let version = 1;
    let shutdown = CancellationToken::new();
    let (publisher, publisher_task) = state::spawn(
        Inputs::new(Arc::new(first.clone()), version, BTreeMap::new()),
        shutdown.child_token(),
    );
    let (events, mut recorded) = EventLog::for_tests();
    let manager = spawn(events, publisher.clone(), shutdown.child_token());

    let a_up = wait_for(&publisher, "a", "sip", Health::Up).await;

    let second = config(&text(&[("a", "127.0.0.11"), ("b", "127.0.0.12")]));
    let (version, diff) = (version + 1, config::diff(Some(&first), &second));
    publisher
        .apply(Update::Config {
            config: Arc::new(second),
            version,
            diff,
        })
        .await
        .expect("published");
    let b_down = wait_for(&publisher, "b", "sip", Health::Down).await;
    assert_eq!(b_down.reason.as_deref(), Some("connection refused"));
    assert_eq!(wait_for(&publisher, "a", "sip", Health::Up).await, a_up);

    // The event is written just after the publisher is told.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut health = Vec::new();
    let health = loop {
        while let Ok(e) = recorded.try_recv() {
            if e.kind == EventKind::Health {
                health.push((e.member.clone().unwrap_or_default(), e.message.clone()));
            }
        }
        if health.len() >= 2 || Instant::now() > deadline {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        health,
        vec![
            ("a".to_owned(), "sip: unknown -> up".to_owned()),
            (
                "b".to_owned(),
                "sip: unknown -> down (connection refused)".to_owned()
            ),
        ]
    );

    shutdown.cancel();
    manager.await.expect("manager");
    publisher_task.await.expect("publisher");
    drop(listener);
}

#[test]
fn spread_offsets_fill_the_interval_evenly() {
    for phase in [0.0, 0.37, 0.999] {
        let mut spread = Spread::new(phase);
        let mut buckets = [0u32; 100];
        for _ in 0..1000 {
            let offset = spread.next_offset();
            assert!((0.0..1.0).contains(&offset));
            buckets[(offset * 100.0) as usize] += 1;
        }
        // 10 per 1 % bucket on average; independent draws would reach ~20.
        let max = buckets.iter().max().copied().unwrap_or(0);
        assert!(max <= 12, "a 1 % bucket got {max} of 1000 offsets");
    }
}

#[test]
fn cadence_deadlines_sit_on_the_grid_one_interval_apart() {
    let ms = Duration::from_millis;
    let mut cadence = Cadence::new(ms(303), ms(1000));
    let deadlines: Vec<_> = (0..3)
        .map(|_| cadence.next_at_or_after(Duration::ZERO))
        .collect();
    assert_eq!(deadlines, vec![ms(310), ms(1310), ms(2310)]);
    // An interval off the grid keeps its average: deadlines are rounded up
    // from the nominal times, never accumulated.
    let mut cadence = Cadence::new(ms(0), ms(1234));
    let deadlines: Vec<_> = (0..4)
        .map(|_| cadence.next_at_or_after(Duration::ZERO))
        .collect();
    assert_eq!(deadlines, vec![ms(0), ms(1240), ms(2470), ms(3710)]);
}

#[test]
fn cadence_skips_deadlines_missed_in_a_stall() {
    let ms = Duration::from_millis;
    let mut cadence = Cadence::new(ms(300), ms(1000));
    assert_eq!(cadence.next_at_or_after(ms(0)), ms(300));
    // The runtime stalled until 3.5 s: the probes due at 1.3, 2.3 and 3.3 s
    // are skipped, not fired back to back, and the phase is kept.
    assert_eq!(cadence.next_at_or_after(ms(3500)), ms(4300));
    assert_eq!(cadence.next_at_or_after(ms(3600)), ms(5300));
    // A deadline exactly now is not skipped.
    assert_eq!(cadence.next_at_or_after(ms(6300)), ms(6300));
}

#[test]
fn a_thousand_targets_fill_each_slot_evenly() {
    let interval = Duration::from_secs(1);
    let mut spread = Spread::new(0.42);
    let mut slots = HashMap::<Duration, u32>::new();
    for _ in 0..1000 {
        let mut cadence = Cadence::new(interval.mul_f64(spread.next_offset()), interval);
        *slots
            .entry(cadence.next_at_or_after(Duration::ZERO))
            .or_default() += 1;
    }
    // 100 slots in the interval, 10 targets each on average.
    let max = slots.values().max().copied().unwrap_or(0);
    assert!(max <= 12, "a 10 ms slot got {max} of 1000 targets");
}

proptest::proptest! {
    /// Applying the plan reaches the desired targets, and a target whose
    /// spec is unchanged is neither stopped nor started.
    #[test]
    fn plan_reaches_the_desired_targets_touching_only_changes(
        running in proptest::collection::btree_map(0u8..8, 0u8..3, 0..8),
        desired in proptest::collection::btree_map(0u8..8, 0u8..3, 0..8),
    ) {
        let monitor = Arc::new(
            config(&with_members(&[("a", "127.0.0.11")], false))
                .monitor("sip")
                .expect("sip monitor")
                .clone(),
        );
        let specs = |map: &BTreeMap<u8, u8>| -> BTreeMap<TargetKey, TargetSpec> {
            map.iter()
                .map(|(member, address)| {
                    (
                        key(&format!("m{member}"), "sip"),
                        TargetSpec {
                            monitor: Arc::clone(&monitor),
                            address: SocketAddr::from(([127, 0, 0, 11 + address], 5061)),
                            fqdn: None,
                            several: false,
                        },
                    )
                })
                .collect()
        };
        let (running, desired) = (specs(&running), specs(&desired));
        let (stop, start) = plan(&running, &desired);
        let mut after = running.clone();
        for key in &stop {
            proptest::prop_assert!(after.remove(key).is_some());
        }
        for key in &start {
            proptest::prop_assert!(after.insert(key.clone(), desired[key].clone()).is_none());
        }
        proptest::prop_assert_eq!(&after, &desired);
        for (key, spec) in &running {
            if desired.get(key) == Some(spec) {
                proptest::prop_assert!(!stop.contains(key) && !start.contains(key));
            }
        }
    }
}

#[test]
fn a_dual_stack_member_has_a_target_per_address() {
    let text = with_members(&[("a", "127.0.0.11")], false).replacen(
        "address = \"127.0.0.11\"",
        "addresses = [\"127.0.0.11\", \"::1\"]",
        1,
    );
    let targets = desired_targets(&config(&text));
    let v4 = key("a", "sip");
    let v6 = key_at("a", "sip", "::1");
    assert_eq!(
        targets.keys().cloned().collect::<Vec<_>>(),
        vec![v4.clone(), v6.clone()]
    );
    assert_eq!(
        targets[&v4].address,
        "127.0.0.11:15061".parse().expect("addr")
    );
    assert_eq!(targets[&v6].address, "[::1]:15061".parse().expect("addr"));
    assert!(targets[&v6].several);
    // Its events name the address.
    let (_, event) = transition_records(Report {
        key: v6,
        transition: Transition {
            from: Health::Up,
            to: Health::Down,
        },
        reason: Some("connection refused".into()),
        since: String::new(),
        several: true,
    });
    assert_eq!(event.message, "sip on ::1: up -> down (connection refused)");
}
