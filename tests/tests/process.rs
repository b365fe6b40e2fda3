//! The appliance process: starts on the example config, serves health, and
//! exits cleanly on SIGTERM.

use std::time::{Duration, Instant};

use poolgate_e2e::{Poolgate, http_get, loopback_example};

#[test]
fn serves_health_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("var");
    let mut poolgate =
        Poolgate::start_with_config(&data, &loopback_example(), &["--grace-period-s", "5"]);
    let admin = poolgate.address("admin");
    assert!(admin.ip().is_loopback());
    assert_ne!(admin.port(), 0, "the real port is logged, not 0");

    let (status, body) = http_get(admin, "/api/v1/health");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["config_version"], 1);

    let (status, _) = http_get(admin, "/api/v1/nope");
    assert_eq!(status, 404);

    let asked = Instant::now();
    let status = poolgate.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        asked.elapsed()
    );
    assert!(poolgate.log().iter().any(|line| line.contains("Stopped")));
}

#[test]
fn sigint_also_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut poolgate =
        Poolgate::start_with_config(&dir.path().join("var"), &loopback_example(), &[]);
    poolgate.address("admin");
    poolgate.signal(nix::sys::signal::Signal::SIGINT);
    let status = poolgate
        .wait_timeout(Duration::from_secs(10))
        .expect("exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn fresh_appliance_without_config_serves_setup_on_admin_listen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut poolgate = Poolgate::start(&dir.path().join("var"), &["--admin-listen", "127.0.0.1:0"]);
    let admin = poolgate.address("admin");
    let (status, body) = http_get(admin, "/api/v1/health");
    assert_eq!(status, 200, "{body}");
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = loopback_example();
    config["listen"]["admin"] = format!("127.0.0.1:{port}").into();
    let mut poolgate = Poolgate::start_with_config(&dir.path().join("var"), &config, &[]);
    let status = poolgate
        .wait_timeout(Duration::from_secs(10))
        .expect("exits");
    assert_eq!(status.code(), Some(1));
    let log = poolgate.log().join("\n");
    assert!(log.contains("cannot listen for admin"), "{log}");
}
