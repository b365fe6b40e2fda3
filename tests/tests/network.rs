//! The appliance's network settings through the API: bad input is refused
//! naming the field with nothing written; a change is applied at once,
//! kept when confirmed (and across a restart), and reverted by itself when
//! it is not confirmed in time or poolgate restarts first; the root-owned
//! step (`poolgate system apply-network`) applies what poolgate asks for.
//! systemd-networkd and chronyd are not run here (the image test does):
//! the files they would read are checked instead.

use std::path::Path;
use std::time::Duration;

use poolgate_e2e::network::Host;
use poolgate_e2e::{AdminClient, wait_for};
use serde_json::{Value, json};

/// The confirmation window under test (the product's is 120 s).
const WINDOW_S: u64 = 3;

fn first() -> Value {
    json!({
        "hostname": "lb01",
        "interfaces": [{"name": "eth1", "addresses": ["198.51.100.10/24"],
                        "vlans": [{"id": 100, "addresses": ["203.0.113.10/24"]}]}],
        "gateway4": "198.51.100.1",
        "ntp_servers": ["198.51.100.1"],
        "timezone": "Europe/Berlin"
    })
}

fn second() -> Value {
    json!({"interfaces": [{"name": "eth1", "addresses": ["192.0.2.10/24"]}]})
}

fn pending(client: &AdminClient) -> Value {
    client.json("/api/v1/system/network")["pending"].clone()
}

#[test]
fn a_change_is_kept_when_confirmed_and_reverted_when_not() {
    let host = Host::new(false);
    let (mut poolgate, client) = host.start(WINDOW_S);
    let view = client.json("/api/v1/system/network");
    assert_eq!(view["managed"], true, "{view}");
    assert!(
        view["observed"]["interfaces"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["name"] == "lo")),
        "{view}"
    );
    assert!(view["observed"]["resolvers"].is_array(), "{view}");
    assert!(view["observed"]["hostname"].is_string(), "{view}");

    // Bad input: 422 naming the field, nothing written.
    let bad = client.put(
        "/api/v1/system/network",
        &json!({"interfaces": [{"name": "eth1", "addresses": ["198.51.100.10/24"], "vlans": [{"id": 4095}]}],
                "gateway4": "192.0.2.1"}),
    );
    assert_eq!(bad.status().as_u16(), 422);
    let body: Value = bad.json().expect("JSON");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(fields, ["interfaces[0].vlans[0].id", "gateway4"], "{body}");
    let unknown = client.put(
        "/api/v1/system/network",
        &json!({"interfaces": [{"name": "eth1", "dhcp": true}]}),
    );
    assert_eq!(unknown.status().as_u16(), 422);
    assert!(
        host.files().is_empty(),
        "nothing written: {:?}",
        host.files()
    );

    // The preview writes nothing either.
    let preview: Value = client
        .post("/api/v1/system/network/preview", &first())
        .json()
        .expect("JSON");
    assert!(
        preview["changes"].to_string().contains("hostname"),
        "{preview}"
    );
    assert!(host.files().is_empty());

    // Applied at once, pending until confirmed; then kept.
    let applied = client.put("/api/v1/system/network", &first());
    assert_eq!(applied.status().as_u16(), 202);
    let applied: Value = applied.json().expect("JSON");
    assert!(applied["pending"]["deadline"].is_string(), "{applied}");
    assert!(
        host.file("20-poolgate-eth1.network")
            .contains("Address=198.51.100.10/24")
    );
    assert!(host.file("20-poolgate-eth1.100.netdev").contains("Id=100"));
    assert_eq!(
        std::fs::read_to_string(host.dir.path().join("hostname")).expect("hostname"),
        "lb01\n"
    );
    assert!(
        std::fs::read_to_string(host.dir.path().join("chrony/poolgate.sources"))
            .expect("chrony")
            .contains("server 198.51.100.1 iburst")
    );
    assert!(
        std::fs::read_link(host.dir.path().join("localtime"))
            .expect("localtime")
            .ends_with("Europe/Berlin")
    );
    let busy = client.put("/api/v1/system/network", &second());
    assert_eq!(busy.status().as_u16(), 409, "one pending change at a time");
    assert_eq!(
        client
            .post("/api/v1/system/network/confirm", &json!({}))
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        client
            .post("/api/v1/system/network/confirm", &json!({}))
            .status()
            .as_u16(),
        409,
        "nothing pending"
    );
    let kept = host.files();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        host.files(),
        kept,
        "a confirmed change stays past the deadline"
    );

    // Not confirmed: reverted by itself after the deadline.
    assert_eq!(
        client
            .put("/api/v1/system/network", &second())
            .status()
            .as_u16(),
        202
    );
    assert!(
        host.file("20-poolgate-eth1.network")
            .contains("Address=192.0.2.10/24")
    );
    assert!(
        host.file("20-poolgate-eth1.100.netdev").is_empty(),
        "the VLAN's files are removed"
    );
    wait_for("the revert", Duration::from_secs(20), || {
        host.files() == kept
    });
    assert_eq!(pending(&client), Value::Null);
    let events = client.json("/api/v1/events?kind=system");
    assert!(
        events
            .to_string()
            .contains("reverted to the previous settings"),
        "{events}"
    );

    // Confirmed settings survive a restart; a change pending at the
    // restart is reverted.
    assert_eq!(
        client
            .put("/api/v1/system/network", &second())
            .status()
            .as_u16(),
        202
    );
    poolgate.terminate(Duration::from_secs(10));
    let (_poolgate, client) = host.start(WINDOW_S);
    assert_eq!(
        host.files(),
        kept,
        "the pending change was reverted at start"
    );
    let view = client.json("/api/v1/system/network");
    assert_eq!(view["settings"]["hostname"], "lb01", "{view}");
    assert_eq!(view["pending"], Value::Null, "{view}");
}

/// The root step as `poolgate-network.path` runs it: whenever the request
/// file appears, `poolgate system apply-network` with a fixed argv.
fn root_step(layout: &Path, request: &Path, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if request.exists() {
            let output = std::process::Command::new(poolgate_e2e::binary())
                .args(["system", "apply-network", "--system-layout"])
                .arg(layout)
                .output()
                .expect("run the root step");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_root_step_applies_what_poolgate_asks_for() {
    let host = Host::new(true);
    let request = host.dir.path().join("var/network/network-request");
    let stop = std::sync::atomic::AtomicBool::new(false);
    /// Stops the root step however the test ends, so the scope returns.
    struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|scope| {
        scope.spawn(|| root_step(&host.layout, &request, &stop));
        let _stop = Stop(&stop);
        let (_poolgate, client) = host.start(WINDOW_S);
        let applied = client.put("/api/v1/system/network", &first());
        assert_eq!(applied.status().as_u16(), 202);
        assert!(
            host.file("20-poolgate-eth1.network")
                .contains("Address=198.51.100.10/24")
        );
        assert!(!request.exists(), "the step took the request");
        assert_eq!(
            client
                .post("/api/v1/system/network/confirm", &json!({}))
                .status()
                .as_u16(),
            200
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // A request that is not one is answered, not applied.
    std::fs::write(
        &request,
        "{\"id\": 1, \"settings\": {\"interfaces\": [{\"name\": \"a/b\"}]}}",
    )
    .expect("request");
    let output = std::process::Command::new(poolgate_e2e::binary())
        .args(["system", "apply-network", "--system-layout"])
        .arg(&host.layout)
        .output()
        .expect("run the root step");
    assert!(output.status.success());
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("\"applied\":false") && said.contains("interfaces[0].name"),
        "{said}"
    );
    assert!(
        host.file("20-poolgate-eth1.network")
            .contains("Address=198.51.100.10/24"),
        "unchanged"
    );
}
