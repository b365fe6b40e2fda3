//! Failover of a paired HA pair with real processes: two appliances, each
//! in its own network namespace with its own poolgate and its own real
//! keepalived, on a bridge with a client namespace and a members namespace
//! (the lab of `poolgate_e2e::vrrp_lab`), paired through the API.
//!
//! * A config change and a drain made on the active appear on the standby
//!   under the same version (the test prints how long it took).
//! * keepalived's state drives the role: the appliance keepalived makes
//!   MASTER is the active one.
//! * The client opens new TCP connections to the VIP without pause (bounded
//!   in count and time). `kill -9` of the active's poolgate, then (with
//!   the other active) its link pulled at the bridge: the VIP moves, the
//!   test prints how many attempts failed and how long the move took, and
//!   asserts that every attempt after the first success through the new
//!   active succeeded, that the new active is active for the HA side too,
//!   and that the drained member is still drained there.
//! * Throughout, both appliances that run answer the pool FQDN
//!   identically (`dig`).
//! * A failover asked through the API on the standby makes keepalived move
//!   the VIP too.
//! * Split brain (needs nft): A and B drop each other's packets while the
//!   client reaches both; both become active, each makes different changes;
//!   when the link returns the higher version (B) wins, A ends standby at
//!   B's version with its config change and member action listed as not
//!   applied, and the VIP on B alone.
//!
//! Timing is printed, never asserted (a move must happen within a generous
//! 15 s). Needs root, `ip netns`, keepalived and dig; skips with a message
//! otherwise. Not covered here: connection state (connections open through
//! the failed unit are lost), a pair booted from two images.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use poolgate_e2e::netns::ip;
use poolgate_e2e::vrrp_lab::*;
use poolgate_e2e::{Poolgate, wait_for};
use serde_json::{Value, json};

const DNS_PORT: u16 = 15353;
const SYNC_PORT: u16 = 17400;
const M2: &str = "198.51.100.31";
const FQDN: &str = "p.example.test";

fn pool_config(own: &str, with_service: bool) -> Value {
    let mut config = config(own, with_service);
    config["listen"]["dns"] = json!([format!("{own}:{DNS_PORT}")]);
    config["pool"][0]["member"]
        .as_array_mut()
        .expect("members")
        .push(json!({"name": "m2", "address": M2}));
    config
}

fn start(lab: &Lab, ns: &str, data_dir: &std::path::Path, own: &str) -> Poolgate {
    let sync = format!("{own}:{SYNC_PORT}");
    let process = Poolgate::start_in_netns_with(
        ns,
        data_dir,
        &to_toml(&pool_config(own, false)),
        &["--manage-addresses", "--ha-listen", &sync],
    );
    process.listening(&["admin", "ha-sync"]);
    let _ = lab;
    process
}

/// Started again from its store (a config file would be a change of its own).
fn restart(ns: &str, data_dir: &std::path::Path, own: &str) -> Poolgate {
    let sync = format!("{own}:{SYNC_PORT}");
    let process = Poolgate::start_in_netns_stored(
        ns,
        data_dir,
        &["--manage-addresses", "--ha-listen", &sync],
    );
    process.listening(&["admin", "ha-sync"]);
    process
}

fn ha(admin: &mut Admin) -> Value {
    admin.with(|admin| admin.json("/api/v1/ha"))
}

fn wait_for_role(admin: &mut Admin, what: &str, role: &str) -> Value {
    let started = Instant::now();
    loop {
        let status = ha(admin);
        if status["role"] == role {
            return status;
        }
        assert!(
            started.elapsed() < MOVE_BOUND,
            "timed out waiting for {what} to be {role}: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_in_sync(standby: &mut Admin, active: &mut Admin) -> i64 {
    let started = Instant::now();
    loop {
        let (s, a) = (ha(standby), ha(active));
        if s["link"] == "up" && s["sync"] == "in_sync" && s["config_version"] == a["config_version"]
        {
            return a["config_version"].as_i64().expect("version");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for the standby in sync: {s} / {a}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn admin_state(admin: &mut Admin, member: &'static str) -> String {
    admin.with(move |admin| {
        admin
            .members()
            .iter()
            .find(|m| m["name"] == member)
            .and_then(|m| m["admin_state"].as_str())
            .unwrap_or("missing")
            .to_owned()
    })
}

/// The pool FQDN's A records as `dig` from the client gets them from `own`.
fn answers(lab: &Lab, own: &str) -> std::collections::BTreeSet<String> {
    let server: SocketAddr = format!("{own}:{DNS_PORT}").parse().expect("address");
    let client = lab.client.clone();
    poolgate_e2e::netns::in_netns(&client, move || {
        poolgate_e2e::dig::dig(server, &[FQDN, "A"]).data("A")
    })
    .join()
    .expect("dig thread")
}

fn same_answers(lab: &Lab, running: &[&str]) {
    let first = answers(lab, running[0]);
    assert_eq!(
        first.iter().collect::<Vec<_>>(),
        ["198.51.100.30"],
        "the drained member is not in the answer"
    );
    for own in &running[1..] {
        assert_eq!(
            answers(lab, own),
            first,
            "{own} answers like {}",
            running[0]
        );
    }
}

fn keepalived_conf(admin: &mut Admin) -> String {
    admin.with(|admin| {
        admin.json("/api/v1/ha/vrrp")["keepalived_conf"]
            .as_str()
            .expect("rendered")
            .to_owned()
    })
}

#[test]
fn the_pair_fails_over_with_keepalived_and_keeps_config_and_drain() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    if !keepalived_available() {
        eprintln!("skipped: keepalived is not installed (tests/install-deps installs it)");
        return;
    }
    let lab = Lab::new("pf");
    ip(&[
        "-n",
        &lab.members,
        "addr",
        "add",
        &format!("{M2}/24"),
        "dev",
        "eth0",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = Arc::new(AtomicBool::new(false));
    let member = serve_member(&lab.members, Arc::clone(&stop));

    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let mut poolgate_a = start(&lab, &lab.a, &data_a, A);
    let poolgate_b = start(&lab, &lab.b, &data_b, B);
    let mut admin_a = Admin::setup(&lab.client, A);
    let mut admin_b = Admin::setup(&lab.client, B);

    // VRRP settings on both (the default advert interval), the virtual
    // service on A, then the pairing: B joins A.
    for (admin, own, peer, priority) in [(&mut admin_a, A, B, 150), (&mut admin_b, B, A, 100)] {
        admin.with(move |admin| {
            let put = admin.put("/api/v1/ha/vrrp", &settings(own, peer, priority));
            assert_eq!(
                put.status().as_u16(),
                200,
                "{}",
                put.text().unwrap_or_default()
            );
        });
    }
    admin_a.with(|admin| {
        let put = admin.put("/api/v1/config", &pool_config(A, true));
        assert_eq!(
            put.status().as_u16(),
            200,
            "{}",
            put.text().unwrap_or_default()
        );
    });
    let code = admin_a.with(|admin| {
        admin
            .post("/api/v1/ha/pairing-code", &json!({}))
            .json::<Value>()
            .expect("JSON")["code"]
            .as_str()
            .expect("code")
            .to_owned()
    });
    admin_b.with(move |admin| {
        let join = admin.post(
            "/api/v1/ha/join",
            &json!({"peer": format!("{A}:{SYNC_PORT}"), "code": code}),
        );
        assert_eq!(
            join.status().as_u16(),
            200,
            "{}",
            join.text().unwrap_or_default()
        );
    });
    wait_in_sync(&mut admin_b, &mut admin_a);

    // keepalived on both, each with the configuration its poolgate rendered.
    let conf_a = keepalived_conf(&mut admin_a);
    let conf_b = keepalived_conf(&mut admin_b);
    assert!(
        conf_b.contains(&format!("{VIP}/32 dev eth0")),
        "the standby holds the synced VIP too: {conf_b}"
    );
    assert!(conf_a.contains("advert_int 0.5\n"), "{conf_a}");
    // A's first (with nopreempt the first to time out becomes master).
    let keepalived_a = Keepalived::start(&lab.a, dir.path(), "a", &conf_a);
    wait_for_vip(&lab, &lab.a, Instant::now());
    wait_for_state(&mut admin_a, "A", "MASTER");
    let keepalived_b = Keepalived::start(&lab.b, dir.path(), "b", &conf_b);
    wait_for_state(&mut admin_b, "B", "BACKUP");
    wait_for_role(&mut admin_a, "A", "active");
    wait_for_role(&mut admin_b, "B", "standby");
    wait_in_sync(&mut admin_b, &mut admin_a);
    let events_a = admin_a.with(|admin| admin.get("/api/v1/events").text().expect("events"));
    // keepalived starts its instances as BACKUP: both stand by for a
    // moment, then the hello's rule or keepalived's MASTER makes A active.
    assert!(
        events_a.contains("This appliance is now standby: keepalived: BACKUP for poolgate_v4"),
        "{events_a}"
    );

    // A config change and a drain on the active reach the standby.
    let changed = Instant::now();
    let version = admin_a.with(|admin| {
        let mut config = admin.json("/api/v1/config");
        config["dns"]["ttl"] = json!(42);
        let put = admin.put("/api/v1/config", &config);
        assert_eq!(
            put.status().as_u16(),
            200,
            "{}",
            put.text().unwrap_or_default()
        );
        put.json::<Value>().expect("JSON")["version"]
            .as_i64()
            .expect("version")
    });
    let synced = wait_in_sync(&mut admin_b, &mut admin_a);
    let took = changed.elapsed();
    assert_eq!(synced, version);
    let drained = Instant::now();
    admin_a.with(|admin| {
        let drain = admin.post("/api/v1/pools/p/members/m2/drain", &json!({}));
        assert_eq!(
            drain.status().as_u16(),
            200,
            "{}",
            drain.text().unwrap_or_default()
        );
    });
    loop {
        if admin_state(&mut admin_b, "m2") == "draining" {
            break;
        }
        assert!(
            drained.elapsed() < MOVE_BOUND,
            "the drain did not reach the standby"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "config version {version} on the standby {} ms after the PUT on the active; the drain {} ms after the POST",
        took.as_millis(),
        drained.elapsed().as_millis()
    );
    wait_for("the drain in DNS on both", MOVE_BOUND, || {
        answers(&lab, A).len() == 1 && answers(&lab, B).len() == 1
    });
    same_answers(&lab, &[A, B]);

    let attempts: Attempts = Arc::default();
    let client_stop = Arc::new(AtomicBool::new(false));
    let client = client_loop(&lab.client, Arc::clone(&attempts), Arc::clone(&client_stop));
    wait_for_successes(&attempts, 20);

    // 1. kill -9 of the active's poolgate: B takes the VIP and the role.
    let killed = Instant::now();
    poolgate_a.signal(Signal::SIGKILL);
    let _ = poolgate_a.wait_timeout(Duration::from_secs(10));
    measure_move(
        &lab,
        &attempts,
        &lab.b,
        killed,
        50,
        "kill -9 of the active's poolgate",
    );
    wait_for("A to give up the VIP", MOVE_BOUND, || {
        !lab.holds_vip(&lab.a)
    });
    let status = wait_for_role(&mut admin_b, "B", "active");
    assert_eq!(status["config_version"], version, "{status}");
    assert_eq!(
        admin_state(&mut admin_b, "m2"),
        "draining",
        "the drain holds on the new active"
    );
    same_answers(&lab, &[B]);

    // A comes back from its store: standby, B keeps the VIP (no failback).
    let poolgate_a = restart(&lab.a, &data_a, A);
    let mut admin_a = Admin::login(&lab.client, A);
    wait_for_state(&mut admin_a, "A", "BACKUP");
    wait_for_role(&mut admin_a, "A", "standby");
    wait_in_sync(&mut admin_a, &mut admin_b);
    assert!(
        lab.holds_vip(&lab.b) && !lab.holds_vip(&lab.a),
        "no failback"
    );
    same_answers(&lab, &[A, B]);

    // 2. The active's (B's) link down at the bridge: A takes over.
    let pulled = Instant::now();
    lab.link("pb", false);
    measure_move(
        &lab,
        &attempts,
        &lab.a,
        pulled,
        50,
        "the active's link down",
    );
    wait_for_role(&mut admin_a, "A", "active");
    assert_eq!(
        admin_state(&mut admin_a, "m2"),
        "draining",
        "the drain holds on the new active"
    );
    same_answers(&lab, &[A]);

    // B's link back: B stands by and follows again.
    lab.link("pb", true);
    wait_for_state(&mut admin_b, "B", "BACKUP");
    wait_for_role(&mut admin_b, "B", "standby");
    wait_in_sync(&mut admin_b, &mut admin_a);
    assert!(
        lab.holds_vip(&lab.a) && !lab.holds_vip(&lab.b),
        "no failback"
    );
    same_answers(&lab, &[A, B]);

    // 3. A failover asked on the standby: keepalived moves the VIP too.
    let asked = Instant::now();
    admin_b.with(|admin| {
        let failover = admin.post("/api/v1/ha/failover", &json!({}));
        assert_eq!(
            failover.status().as_u16(),
            200,
            "{}",
            failover.text().unwrap_or_default()
        );
    });
    measure_move(
        &lab,
        &attempts,
        &lab.b,
        asked,
        30,
        "failover asked through the API",
    );
    wait_for_role(&mut admin_b, "B", "active");
    wait_for_state(&mut admin_a, "A", "BACKUP");
    wait_for_role(&mut admin_a, "A", "standby");
    assert!(!lab.holds_vip(&lab.a));
    same_answers(&lab, &[A, B]);

    client_stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");
    let total = attempts.lock().expect("attempts").len();
    eprintln!("{total} connection attempts in all");

    // 4. Split brain: A and B stop hearing each other (VRRP and the sync
    // link), while the client still reaches both. Both become active; each
    // makes changes; the link returns and the rule decides.
    if split_brain(&lab, dir.path(), &mut admin_a, &mut admin_b) {
        same_answers(&lab, &[A, B]);
    }

    stop.store(true, Ordering::Relaxed);
    member.join().expect("member thread");
    drop(keepalived_a);
    drop(keepalived_b);
    drop(poolgate_a);
    drop(poolgate_b);
}

/// Drop everything `ns` receives from `from` (or, with `None`, lift it).
fn cut(dir: &std::path::Path, ns: &str, from: Option<&str>) {
    let rules = match from {
        Some(from) => format!(
            "table inet split {{}}\ndelete table inet split\ntable inet split {{\n    chain input {{\n        type filter hook input priority -10; policy accept;\n        ip saddr {from} drop\n    }}\n}}\n"
        ),
        None => "table inet split {}\ndelete table inet split\n".to_owned(),
    };
    let file = dir.join(format!("{ns}-split.nft"));
    std::fs::write(&file, rules).expect("write rules");
    ip(&[
        "netns",
        "exec",
        ns,
        "nft",
        "-f",
        file.to_str().expect("utf-8"),
    ]);
}

fn set_ttl(admin: &mut Admin, ttl: i64) -> i64 {
    admin.with(move |admin| {
        let mut config = admin.json("/api/v1/config");
        config["dns"]["ttl"] = json!(ttl);
        let put = admin.put("/api/v1/config", &config);
        assert_eq!(
            put.status().as_u16(),
            200,
            "{}",
            put.text().unwrap_or_default()
        );
        put.json::<Value>().expect("JSON")["version"]
            .as_i64()
            .expect("version")
    })
}

/// The split brain of the acceptance list, B active before it. Returns
/// whether it ran (it needs nft).
fn split_brain(lab: &Lab, dir: &std::path::Path, admin_a: &mut Admin, admin_b: &mut Admin) -> bool {
    let nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !nft {
        eprintln!(
            "nft not installed (tests/install-deps installs it): the split brain is not tested"
        );
        return false;
    }
    let before = ha(admin_b)["config_version"].as_i64().expect("version");
    cut(dir, &lab.a, Some(B));
    cut(dir, &lab.b, Some(A));
    let split = Instant::now();
    wait_for_state(admin_a, "A", "MASTER");
    wait_for_role(admin_a, "A", "active");
    assert_eq!(ha(admin_b)["role"], "active", "both active");
    eprintln!(
        "split: A active too after {} ms",
        split.elapsed().as_millis()
    );

    // Different changes on each: A one config change and a member action,
    // B two config changes (the higher version).
    let lost = set_ttl(admin_a, 51);
    admin_a.with(|admin| {
        let enable = admin.post("/api/v1/pools/p/members/m2/enable", &json!({}));
        assert_eq!(
            enable.status().as_u16(),
            200,
            "{}",
            enable.text().unwrap_or_default()
        );
    });
    set_ttl(admin_b, 52);
    let winner = set_ttl(admin_b, 53);
    assert!(lost > before && winner > lost, "{before} {lost} {winner}");

    // The link returns: B's history wins, A re-syncs from it and its
    // keepalived gives up the VIP.
    cut(dir, &lab.a, None);
    cut(dir, &lab.b, None);
    let restored = Instant::now();
    wait_for_role(admin_a, "A", "standby");
    wait_for_role(admin_b, "B", "active");
    let version = wait_in_sync(admin_a, admin_b);
    assert_eq!(version, winner);
    wait_for_vip(lab, &lab.b, restored);
    wait_for("A to give up the VIP", MOVE_BOUND, || {
        !lab.holds_vip(&lab.a)
    });
    wait_for_state(admin_a, "A", "BACKUP");
    eprintln!(
        "split resolved {} ms after the link returned: both at version {version}",
        restored.elapsed().as_millis()
    );
    let status = ha(admin_a);
    let not_applied = status["not_applied"].as_array().expect("list");
    assert!(
        not_applied
            .iter()
            .any(|e| e["version"] == lost && e["member"].is_null()),
        "A's config change listed: {status}"
    );
    assert!(
        not_applied
            .iter()
            .any(|e| e["member"] == "p/m2" && e["admin_state"] == "enabled"),
        "A's member action listed: {status}"
    );
    assert_eq!(
        admin_state(admin_a, "m2"),
        "draining",
        "as the winner has it"
    );
    let ttl = admin_a.with(|admin| admin.json("/api/v1/config")["dns"]["ttl"].clone());
    assert_eq!(ttl, 53);
    true
}
