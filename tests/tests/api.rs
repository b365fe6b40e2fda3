//! The admin API over HTTPS: the authentication layer covers every route but
//! the open three, setup happens once, sessions need CSRF tokens for changes,
//! logins are rate-limited, and every route does what it says.

use std::time::Duration;

use poolgate_e2e::{AdminClient, Poolgate, loopback_example};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn start() -> (tempfile::TempDir, Poolgate, std::net::SocketAddr) {
    let dir = tempfile::tempdir().expect("tempdir");
    let poolgate = Poolgate::start_with_config(&dir.path().join("var"), &loopback_example(), &[]);
    let admin = poolgate.address("admin");
    (dir, poolgate, admin)
}

/// A concrete path for a route pattern.
fn concrete(path: &str) -> String {
    path.replace("{pool}", "pool01")
        .replace("{name}", "contoso")
        .replace("{member}", "fe01")
        .replace("{action}", "drain")
        .replace("{id}", "1")
}

#[test]
fn every_protected_route_refuses_anonymous_and_csrf_less_requests() {
    let (_dir, _poolgate, admin) = start();
    let anonymous = AdminClient::new(admin);
    let routes = poolgate::web::protected_routes();
    assert!(routes.len() >= 10);
    for route in &routes {
        let (method, path) = (&route.method, route.path);
        let response = anonymous
            .request(method.clone(), &concrete(path))
            .json(&json!({}))
            .send()
            .expect("request");
        assert_eq!(
            response.status().as_u16(),
            401,
            "{method} {path} without credentials"
        );
    }
    // A wrong bearer token is no better.
    let mut forged = AdminClient::new(admin);
    forged.bearer = Some("0".repeat(64));
    assert_eq!(forged.get("/api/v1/status").status().as_u16(), 401);

    // Logged in by cookie but without the CSRF header: reads work, changes are refused.
    let mut client = AdminClient::setup_and_login(admin, PASSWORD);
    client.csrf = None;
    for route in &routes {
        let (method, path) = (&route.method, route.path);
        if route.method == Method::GET {
            continue;
        }
        let response = client
            .request(method.clone(), &concrete(path))
            .json(&json!({}))
            .send()
            .expect("request");
        assert_eq!(
            response.status().as_u16(),
            403,
            "{method} {path} without CSRF token"
        );
    }
    assert_eq!(client.get("/api/v1/status").status().as_u16(), 200);
    let open: Vec<String> = poolgate::web::open_routes()
        .iter()
        .map(|route| format!("{} {}", route.method, route.path))
        .collect();
    assert_eq!(
        open,
        [
            "GET /api/v1/health",
            "POST /api/v1/setup",
            "POST /api/v1/session",
            "GET /api/v1/openapi.json",
            "GET /",
            "GET /assets/{file}"
        ]
    );
}

#[test]
fn setup_happens_once_and_sets_secure_cookies() {
    let (_dir, _poolgate, admin) = start();
    let client = AdminClient::new(admin);
    let weak = client.post("/api/v1/setup", &json!({"password": "short"}));
    assert_eq!(weak.status().as_u16(), 422);
    let body: Value = weak.json().expect("JSON");
    assert_eq!(body["fields"][0]["field"], "password");

    assert_eq!(
        client
            .post("/api/v1/setup", &json!({"password": PASSWORD}))
            .status()
            .as_u16(),
        201
    );
    let again = client.post(
        "/api/v1/setup",
        &json!({"password": "an attacker's password"}),
    );
    assert_eq!(again.status().as_u16(), 409);

    let response = client.post(
        "/api/v1/session",
        &json!({"username": "admin", "password": PASSWORD}),
    );
    assert_eq!(response.status().as_u16(), 200);
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("set-cookie")
        .to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age="] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
}

#[test]
fn setup_code_is_required_when_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let poolgate = Poolgate::start_with_config(
        &dir.path().join("var"),
        &loopback_example(),
        &["--require-setup-code"],
    );
    let admin = poolgate.address("admin");
    // The code is shown on the console from a file, never logged.
    let code = std::fs::read_to_string(dir.path().join("var/setup-code"))
        .expect("setup code file")
        .trim()
        .to_owned();
    assert!(
        !poolgate.log().iter().any(|line| line.contains(&code)),
        "the setup code is never logged"
    );
    let client = AdminClient::new(admin);
    let without = client.post("/api/v1/setup", &json!({"password": PASSWORD}));
    assert_eq!(without.status().as_u16(), 403);
    let wrong = client.post(
        "/api/v1/setup",
        &json!({"password": PASSWORD, "setup_code": "00000000x"}),
    );
    assert_eq!(wrong.status().as_u16(), 403);
    let right = client.post(
        "/api/v1/setup",
        &json!({"password": PASSWORD, "setup_code": code}),
    );
    assert_eq!(right.status().as_u16(), 201);
    assert!(!dir.path().join("var/setup-code").exists());
}

#[test]
fn wrong_passwords_are_rate_limited() {
    let (_dir, _poolgate, admin) = start();
    let client = AdminClient::new(admin);
    assert_eq!(
        client
            .post("/api/v1/setup", &json!({"password": PASSWORD}))
            .status()
            .as_u16(),
        201
    );
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = client.post(
            "/api/v1/session",
            &json!({"username": "admin", "password": "wrong guess"}),
        );
        statuses.push(response.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // Even the right password waits out the lockout.
    let right = client.post(
        "/api/v1/session",
        &json!({"username": "admin", "password": PASSWORD}),
    );
    assert_eq!(right.status().as_u16(), 429);
    assert!(right.headers().contains_key("retry-after"));
}

#[test]
fn plain_http_on_the_admin_port_only_redirects() {
    let (_dir, _poolgate, admin) = start();
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).expect("connect");
    stream
        .write_all(
            b"GET /api/v1/status HTTP/1.1\r\nHost: appliance.test\r\nConnection: close\r\n\r\n",
        )
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("location: https://appliance.test/api/v1/status"),
        "{response}"
    );
    assert!(!response.contains("pools"), "{response}");
}

#[test]
fn invalid_input_is_refused_and_changes_nothing() {
    let (_dir, _poolgate, admin) = start();
    let client = AdminClient::setup_and_login(admin, PASSWORD);
    let before = client.json("/api/v1/config");

    let not_json = client
        .request(Method::PUT, "/api/v1/config")
        .header("content-type", "application/json")
        .body("{ not json")
        .send()
        .expect("PUT");
    assert_eq!(not_json.status().as_u16(), 400);

    let mut dangling = before.clone();
    dangling["pool"][0]["monitor"] = json!("nope");
    dangling["pool"][0]["member"][1]["address"] = json!("300.1.1.1");
    let response = client.put("/api/v1/config", &dangling);
    assert_eq!(response.status().as_u16(), 422);
    let body: Value = response.json().expect("JSON");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert!(fields.contains(&"pool[0].monitor"), "{body}");
    assert!(fields.contains(&"pool[0].member[1].address"), "{body}");

    let mut unknown = before.clone();
    unknown["pool"][0]["colour"] = json!("blue");
    let response = client.put("/api/v1/config", &unknown);
    assert_eq!(response.status().as_u16(), 422);
    let body: Value = response.json().expect("JSON");
    assert!(
        body["fields"][0]["message"]
            .as_str()
            .expect("message")
            .contains("colour"),
        "{body}"
    );

    assert_eq!(client.json("/api/v1/config"), before, "nothing was written");
    assert_eq!(client.json("/api/v1/health")["config_version"], 1);

    let bad_token = client.post("/api/v1/tokens", &json!({"name": ""}));
    assert_eq!(bad_token.status().as_u16(), 422);
    let unknown_member = client.post("/api/v1/pools/pool01/members/fe99/drain", &json!({}));
    assert_eq!(unknown_member.status().as_u16(), 404);
    let unknown_action = client.post("/api/v1/pools/pool01/members/fe01/explode", &json!({}));
    assert_eq!(unknown_action.status().as_u16(), 404);
}

#[test]
fn every_route_does_its_job() {
    let (_dir, mut poolgate, admin) = start();
    let mut client = AdminClient::setup_and_login(admin, PASSWORD);

    // Session.
    assert_eq!(client.json("/api/v1/session")["username"], "admin");

    // Status has the documented shape.
    let status = client.json("/api/v1/status");
    let pool = &status["pools"][0];
    assert_eq!(pool["name"], "pool01");
    assert_eq!(pool["fqdn"], "pool01.contoso.test");
    let fe01 = &pool["members"][0];
    assert_eq!(fe01["name"], "fe01");
    assert_eq!(fe01["address"], "127.0.0.11");
    assert_eq!(fe01["admin_state"], "enabled");
    assert!(fe01["drain"].is_null());
    assert!(fe01["health"]["fe-sip"]["state"].is_string(), "{fe01}");
    assert_eq!(fe01["active_connections"], 0);
    let vs = &status["virtual_services"][0];
    assert_eq!(vs["name"], "web-internal");
    assert_eq!(vs["ports"].as_array().expect("ports").len(), 2);
    assert_eq!(vs["members"][0]["total_connections"], 0);

    // Connections per member over the last minutes: sampled from the start.
    let history = client.json("/api/v1/status/history");
    assert_eq!(history["interval_s"], 10);
    assert_eq!(
        history["samples"][0]["members"]["pool01/fe01"], 0,
        "{history}"
    );

    // Drain, enable, disable.
    let drained = client.post("/api/v1/pools/pool01/members/fe02/drain", &json!({}));
    assert_eq!(drained.status().as_u16(), 200);
    let member = &client.json("/api/v1/status")["pools"][0]["members"][1];
    assert_eq!(member["admin_state"], "draining");
    assert!(member["drain"]["state"].is_string(), "{member}");
    assert_eq!(
        client
            .post("/api/v1/pools/pool01/members/fe02/enable", &json!({}))
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        client
            .post("/api/v1/pools/pool01/members/fe03/disable", &json!({}))
            .status()
            .as_u16(),
        200
    );
    let members = client.json("/api/v1/status")["pools"][0]["members"].clone();
    assert_eq!(members[1]["admin_state"], "enabled");
    assert_eq!(members[2]["admin_state"], "disabled");

    // Events record the admin actions, filterable.
    let events = client.json("/api/v1/events?kind=admin&member=fe03");
    let messages: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("disabled")),
        "{messages:?}"
    );

    // Config: the export carries admin state; a valid PUT commits and publishes.
    let mut config = client.json("/api/v1/config");
    assert_eq!(config["pool"][0]["member"][2]["state"], "disabled");
    config["dns"]["ttl"] = json!(15);
    let response = client.put("/api/v1/config", &config);
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().expect("JSON");
    assert_eq!(body["version"], 2);
    assert_eq!(body["changed"], true, "a DNS setting is a change");
    assert!(body.get("restart_required").is_none(), "{body}");
    assert!(
        body["confirm_by"].is_null(),
        "the admin listener stays: {body}"
    );
    assert!(body["generation"].as_u64().is_some(), "{body}");
    let events = client.json("/api/v1/events?kind=config");
    assert!(
        events.to_string().contains("Config version 2 committed"),
        "{events}"
    );
    assert_eq!(client.json("/api/v1/config")["dns"]["ttl"], 15);
    assert_eq!(client.json("/api/v1/health")["config_version"], 2);

    // Metrics in Prometheus text format.
    let metrics = client.get("/metrics").text().expect("text");
    for family in [
        "poolgate_dns_queries_total 0",
        "poolgate_sip_requests_total 0",
        "poolgate_dns_malformed_total",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    assert!(
        metrics.contains("poolgate_member_eligible{pool=\"pool01\",member=\"fe01\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "poolgate_member_admin_state{pool=\"pool01\",member=\"fe03\",state=\"disabled\"} 1"
        ),
        "{metrics}"
    );

    // API tokens: create, use, list, revoke.
    let created: Value = client
        .post("/api/v1/tokens", &json!({"name": "nightly export"}))
        .json()
        .expect("JSON");
    let token = created["token"].as_str().expect("token").to_owned();
    let mut script = AdminClient::new(admin);
    script.bearer = Some(token);
    assert_eq!(script.get("/api/v1/status").status().as_u16(), 200);
    let drained = script.post("/api/v1/pools/pool01/members/fe01/drain", &json!({}));
    assert_eq!(
        drained.status().as_u16(),
        200,
        "bearer tokens need no CSRF token"
    );
    let tokens = client.json("/api/v1/tokens");
    assert_eq!(tokens["tokens"][0]["name"], "nightly export");
    assert!(
        tokens["tokens"][0].get("token").is_none(),
        "secrets are never listed"
    );
    let id = created["id"].as_i64().expect("id");
    assert_eq!(
        client
            .delete(&format!("/api/v1/tokens/{id}"))
            .status()
            .as_u16(),
        204
    );
    assert_eq!(script.get("/api/v1/status").status().as_u16(), 401);
    assert_eq!(
        client
            .delete(&format!("/api/v1/tokens/{id}"))
            .status()
            .as_u16(),
        404
    );

    // Logout ends the session.
    assert_eq!(client.delete("/api/v1/session").status().as_u16(), 204);
    client.csrf = None;
    assert_eq!(client.get("/api/v1/status").status().as_u16(), 401);
    client.login("admin", PASSWORD);

    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

#[test]
fn admin_state_set_through_the_api_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("var");
    let config = loopback_example();
    let poolgate = Poolgate::start_with_config(&data, &config, &[]);
    let client = AdminClient::setup_and_login(poolgate.address("admin"), PASSWORD);
    assert_eq!(
        client
            .post("/api/v1/pools/pool01/members/fe02/drain", &json!({}))
            .status()
            .as_u16(),
        200
    );
    poolgate.signal(nix::sys::signal::Signal::SIGKILL);
    drop(poolgate);

    // Restart with the same --config file: the drain is kept.
    let poolgate = Poolgate::start_with_config(&data, &config, &[]);
    let mut client = AdminClient::new(poolgate.address("admin"));
    client.login("admin", PASSWORD);
    let status = client.json("/api/v1/status");
    assert_eq!(status["pools"][0]["members"][1]["admin_state"], "draining");
}

#[test]
fn ui_assets_are_a_fixed_set_and_carry_security_headers() {
    let (_dir, _poolgate, admin) = start();
    let client = AdminClient::new(admin);
    let page = client.get("/");
    assert_eq!(page.status().as_u16(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(
        page.headers()
            .get("x-frame-options")
            .and_then(|v| v.to_str().ok()),
        Some("DENY")
    );
    assert_eq!(client.get("/assets/app.js").status().as_u16(), 200);
    for path in [
        "/assets/../../Cargo.toml",
        "/assets/..%2f..%2fCargo.toml",
        "/assets/%2e%2e/%2e%2e/etc/passwd",
        "/assets/index.html",
        "/assets/",
        "/../../etc/passwd",
    ] {
        let response = client.get(path);
        assert_eq!(response.status().as_u16(), 404, "{path}");
        let body = response.text().expect("body");
        assert!(
            !body.contains("[workspace]") && !body.contains("root:"),
            "{path}: {body}"
        );
    }
}

#[test]
fn status_stream_sends_status_events() {
    let (_dir, _poolgate, admin) = start();
    let client = AdminClient::setup_and_login(admin, PASSWORD);
    let mut response = client.get("/api/v1/status/stream");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buffer).contains("\n\n") {
        use std::io::Read;
        let n = response.read(&mut chunk).expect("read stream");
        assert!(n > 0, "stream ended");
        buffer.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buffer);
    assert!(text.starts_with("event: status\ndata: {"), "{text}");
    assert!(text.contains("\"pools\""), "{text}");
}

/// Reads server-sent events until one of `kind` arrives (at most `limit`
/// events), returning its data.
fn next_event(response: &mut reqwest::blocking::Response, kind: &str, limit: usize) -> String {
    use std::io::Read;
    let mut buffer = String::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..limit {
        while !buffer.contains("\n\n") {
            let n = response.read(&mut chunk).expect("read stream");
            assert!(n > 0, "stream ended");
            buffer.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        let end = buffer.find("\n\n").expect("an event") + 2;
        let event: String = buffer.drain(..end).collect();
        if let Some(data) = event.strip_prefix(&format!("event: {kind}\ndata: ")) {
            return data.trim_end().to_owned();
        }
    }
    panic!("no {kind} event in {limit} events");
}

#[test]
fn status_stream_sends_each_committed_change() {
    let (_dir, _poolgate, admin) = start();
    let client = AdminClient::setup_and_login(admin, PASSWORD);
    let mut response = client.get("/api/v1/status/stream");
    assert_eq!(response.status().as_u16(), 200);
    next_event(&mut response, "status", 1);
    let drained = client.post("/api/v1/pools/pool01/members/fe02/drain", &json!({}));
    assert_eq!(drained.status().as_u16(), 200);
    let change: Value =
        serde_json::from_str(&next_event(&mut response, "change", 10)).expect("JSON");
    assert_eq!(change["source"], "API (admin)", "{change}");
    assert!(change["seq"].as_u64().is_some(), "{change}");
    let summary = change["summary"].to_string();
    assert!(
        summary.contains("pool01/fe02") && summary.contains("draining"),
        "{change}"
    );
    // The view that carries the change follows as a status event.
    let status: Value =
        serde_json::from_str(&next_event(&mut response, "status", 1)).expect("JSON");
    assert!(status.to_string().contains("draining"), "{status}");
}

#[test]
fn config_export_preview_and_toml_import() {
    let (dir, _poolgate, admin) = start();
    let client = AdminClient::setup_and_login(admin, PASSWORD);

    // The export is what `poolgate export` prints, and parses as the config.
    let response = client.get("/api/v1/config/export");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/toml"))
    );
    let exported = response.text().expect("text");
    let cli = poolgate_e2e::poolgate_cli(
        &[
            "export",
            "--data-dir",
            dir.path().join("var").to_str().expect("utf-8"),
        ],
        "",
    );
    assert!(cli.status.success(), "{cli:?}");
    assert_eq!(String::from_utf8_lossy(&cli.stdout), exported);
    assert!(exported.contains("ttl = 30"), "{exported}");

    // A preview of an edited export: the changes and a line diff, nothing written.
    let edited = exported
        .replace("ttl = 30", "ttl = 15")
        .replace("name = \"fe03\"", "name = \"fe04\"");
    let preview = |body: &str| {
        client
            .request(Method::POST, "/api/v1/config/preview")
            .header("content-type", "application/toml")
            .body(body.to_owned())
            .send()
            .expect("preview")
    };
    let response = preview(&edited);
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().expect("JSON");
    assert_eq!(body["changed"], true);
    assert_eq!(body["based_on_version"], 1);
    let summary = body["summary"].to_string();
    assert!(summary.contains("pool01/fe04 is added"), "{summary}");
    assert!(summary.contains("pool01/fe03 is removed"), "{summary}");
    let diff: Vec<String> = body["diff"]
        .as_array()
        .expect("diff")
        .iter()
        .map(|line| {
            format!(
                "{}{}",
                line[0].as_str().unwrap_or(""),
                line[1].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(diff.contains(&"-ttl = 30".to_owned()), "{diff:?}");
    assert!(diff.contains(&"+ttl = 15".to_owned()), "{diff:?}");
    assert_eq!(body["config"]["dns"]["ttl"], 15);
    assert_eq!(client.json("/api/v1/health")["config_version"], 1);
    assert_eq!(
        client.get("/api/v1/config/export").text().expect("text"),
        exported
    );

    // The same config as JSON previews the same; the current one changes nothing.
    let current = client.json("/api/v1/config");
    let unchanged: Value = client
        .post("/api/v1/config/preview", &current)
        .json()
        .expect("JSON");
    assert_eq!(unchanged["changed"], false, "{unchanged}");
    assert!(unchanged["diff"].as_array().expect("diff").is_empty());

    // Field errors name the field (and for TOML its line); syntax errors are 400.
    let response =
        preview(&exported.replace("address = \"127.0.0.12\"", "address = \"not an address\""));
    assert_eq!(response.status().as_u16(), 422);
    let body: Value = response.json().expect("JSON");
    assert_eq!(
        body["fields"][0]["field"], "pool[0].member[1].address",
        "{body}"
    );
    assert!(
        body["fields"][0]["line"]
            .as_u64()
            .is_some_and(|line| line > 1),
        "{body}"
    );
    assert_eq!(preview("[listen\nadmin = 1").status().as_u16(), 400);
    let mut bad = current.clone();
    bad["virtual_service"][0]["port"] = json!("https");
    let response = client.post("/api/v1/config/preview", &bad);
    assert_eq!(response.status().as_u16(), 422);
    let body: Value = response.json().expect("JSON");
    assert_eq!(
        body["fields"][0]["field"], "virtual_service[0].port",
        "{body}"
    );
    assert_eq!(client.json("/api/v1/health")["config_version"], 1);

    // PUT takes the exported TOML back: an import.
    let response = client
        .request(Method::PUT, "/api/v1/config")
        .header("content-type", "application/toml")
        .body(edited.clone())
        .send()
        .expect("PUT");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().expect("JSON");
    assert_eq!(body["version"], 2);
    let members: Vec<Value> = client.members();
    assert_eq!(members[2]["name"], "fe04");
    assert!(
        client
            .get("/api/v1/config/export")
            .text()
            .expect("text")
            .contains("ttl = 15")
    );

    // A change reviewed against version 1 does not land on version 2.
    let reviewed = |version: &str, ttl: u32| {
        let mut config = client.json("/api/v1/config");
        config["dns"]["ttl"] = json!(ttl);
        client
            .request(Method::PUT, "/api/v1/config")
            .header("if-match", version)
            .json(&config)
            .send()
            .expect("PUT")
    };
    let stale = reviewed("\"1\"", 16);
    assert_eq!(stale.status().as_u16(), 409);
    let body: Value = stale.json().expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("version 2")),
        "{body}"
    );
    assert_eq!(client.json("/api/v1/config")["dns"]["ttl"], 15);
    assert_eq!(reviewed("nonsense", 16).status().as_u16(), 400);
    let fresh = reviewed("\"2\"", 16);
    assert_eq!(fresh.status().as_u16(), 200);
    assert_eq!(client.json("/api/v1/config")["dns"]["ttl"], 16);
}

/// A PEM certificate for 127.0.0.1 and its key, valid `from`..`until`.
fn certificate(
    from: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> (String, String, rcgen::Certificate) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "pool-admin.contoso.test".to_owned(),
    ])
    .expect("params");
    params.not_before = from;
    params.not_after = until;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pool-admin.contoso.test");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem(), cert)
}

#[test]
fn certificate_is_checked_before_it_replaces_the_self_signed_one() {
    let (dir, poolgate, admin) = start();
    let client = AdminClient::setup_and_login(admin, PASSWORD);
    let system = client.json("/api/v1/system");
    assert_eq!(system["version"], client.json("/api/v1/health")["version"]);
    assert!(
        system["build"]
            .as_str()
            .is_some_and(|b| b.starts_with("poolgate ")),
        "{system}"
    );
    let before = client.json("/api/v1/certificate");
    assert_eq!(before["self_signed"], true, "{before}");
    assert_eq!(system["certificate"], before);

    let now = time::OffsetDateTime::now_utc();
    let (cert, key, der) = certificate(
        now - time::Duration::days(1),
        now + time::Duration::days(90),
    );
    let (_, other_key, _) = certificate(
        now - time::Duration::days(1),
        now + time::Duration::days(90),
    );
    let (expired, expired_key, _) = certificate(
        now - time::Duration::days(90),
        now - time::Duration::days(1),
    );
    let refused = |body: Value, field: &str, says: &str| {
        let response = client.put("/api/v1/certificate", &body);
        assert_eq!(response.status().as_u16(), 422, "{body}");
        let body: Value = response.json().expect("JSON");
        assert_eq!(body["fields"][0]["field"], field, "{body}");
        assert!(
            body["fields"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(says)),
            "{body}"
        );
    };
    refused(
        json!({"certificate": cert, "key": other_key}),
        "key",
        "does not belong",
    );
    refused(
        json!({"certificate": "hello", "key": key}),
        "certificate",
        "CERTIFICATE",
    );
    refused(
        json!({"certificate": cert, "key": "hello"}),
        "key",
        "PRIVATE KEY",
    );
    refused(
        json!({"certificate": expired, "key": expired_key}),
        "certificate",
        "expired",
    );
    assert_eq!(
        client.json("/api/v1/certificate"),
        before,
        "nothing changed"
    );

    let response = client.put(
        "/api/v1/certificate",
        &json!({"certificate": cert, "key": key}),
    );
    assert_eq!(response.status().as_u16(), 200);
    let installed: Value = response.json().expect("JSON");
    assert_eq!(installed["self_signed"], true);
    assert!(
        installed["subject"]
            .as_str()
            .is_some_and(|s| s.contains("pool-admin.contoso.test"))
    );
    assert!(
        installed["ip_addresses"].to_string().contains("127.0.0.1"),
        "{installed}"
    );
    assert_ne!(
        installed["sha256_fingerprint"],
        before["sha256_fingerprint"]
    );

    // New connections present it: a client that trusts only it gets through.
    let trusting = |address: std::net::SocketAddr| {
        reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_der(der.der()).expect("certificate"))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
            .get(format!("https://{address}/api/v1/health"))
            .send()
    };
    assert!(trusting(admin).is_ok_and(|r| r.status().is_success()));
    let events = client.json("/api/v1/events?kind=system");
    assert!(
        events.to_string().contains("installed by admin"),
        "{events}"
    );

    // And it is the appliance's certificate after a restart.
    drop(poolgate);
    let poolgate = Poolgate::start(&dir.path().join("var"), &[]);
    let admin = poolgate.address("admin");
    assert!(trusting(admin).is_ok_and(|r| r.status().is_success()));
}

/// Every route in the router's tables answers a logged-in client: GETs here,
/// and each change route in the test named beside it, so a route added
/// without a test fails this one.
#[test]
fn every_route_is_exercised() {
    let (_dir, _poolgate, admin) = start();
    let client = AdminClient::setup_and_login(admin, PASSWORD);
    let changes = [
        (
            "POST /api/v1/setup",
            "setup_happens_once_and_sets_secure_cookies",
        ),
        (
            "POST /api/v1/session",
            "setup_happens_once_and_sets_secure_cookies",
        ),
        ("DELETE /api/v1/session", "every_route_does_its_job"),
        (
            "PUT /api/v1/session/password",
            "tests/attack/auth.rs: a_new_password_ends_sessions_and_tokens",
        ),
        ("POST /api/v1/tokens", "every_route_does_its_job"),
        ("DELETE /api/v1/tokens/{id}", "every_route_does_its_job"),
        (
            "POST /api/v1/users",
            "tests/roles.rs: changing_or_removing_a_user_ends_their_sessions_and_tokens",
        ),
        (
            "PUT /api/v1/users/{name}",
            "tests/roles.rs: changing_or_removing_a_user_ends_their_sessions_and_tokens",
        ),
        (
            "DELETE /api/v1/users/{name}",
            "tests/roles.rs: changing_or_removing_a_user_ends_their_sessions_and_tokens",
        ),
        (
            "PUT /api/v1/config",
            "config_export_preview_and_toml_import",
        ),
        (
            "POST /api/v1/config/preview",
            "config_export_preview_and_toml_import",
        ),
        (
            "POST /api/v1/config/confirm",
            "tests/live_listeners.rs: a_moved_admin_listener_confirmed_on_its_new_address_stays",
        ),
        (
            "POST /api/v1/pools/{pool}/members/{member}/{action}",
            "every_route_does_its_job",
        ),
        ("POST /api/v1/license", "tests/license.rs, tests/browser.rs"),
        (
            "PUT /api/v1/certificate",
            "certificate_is_checked_before_it_replaces_the_self_signed_one",
        ),
        (
            "PUT /api/v1/system/network",
            "tests/network.rs: a_change_is_kept_when_confirmed_and_reverted_when_not",
        ),
        (
            "POST /api/v1/system/network/preview",
            "tests/network.rs: a_change_is_kept_when_confirmed_and_reverted_when_not",
        ),
        (
            "POST /api/v1/system/network/confirm",
            "tests/network.rs: a_change_is_kept_when_confirmed_and_reverted_when_not",
        ),
        (
            "PUT /api/v1/ha/vrrp",
            "tests/vrrp.rs: the_vip_moves_to_the_peer_when_poolgate_dies_hangs_or_loses_its_link",
        ),
        (
            "DELETE /api/v1/ha/vrrp",
            "tests/vrrp.rs: the_vip_moves_to_the_peer_when_poolgate_dies_hangs_or_loses_its_link",
        ),
        (
            "PUT /api/v1/auth/ldap",
            "tests/ldap.rs: directory_users_map_to_roles_and_every_failure_says_why",
        ),
        (
            "DELETE /api/v1/auth/ldap",
            "tests/ldap.rs: directory_users_map_to_roles_and_every_failure_says_why",
        ),
        (
            "POST /api/v1/auth/ldap/test",
            "tests/ldap.rs: directory_users_map_to_roles_and_every_failure_says_why",
        ),
        (
            "PUT /api/v1/system/syslog",
            "tests/syslog.rs: a_member_down_reaches_rsyslog_over_tls_and_udp_as_rfc_5424",
        ),
        (
            "DELETE /api/v1/system/syslog",
            "tests/syslog.rs: a_member_down_reaches_rsyslog_over_tls_and_udp_as_rfc_5424",
        ),
        (
            "PUT /api/v1/system/snmp",
            "tests/snmp.rs: settings_from_the_api_render_an_snmpd_conf_that_snmpd_serves",
        ),
        (
            "DELETE /api/v1/system/snmp",
            "tests/snmp.rs: settings_from_the_api_render_an_snmpd_conf_that_snmpd_serves",
        ),
        (
            "POST /api/v1/system/upgrade",
            "tests/upgrade.rs: the_api_refuses_bad_uploads_then_installs_and_schedules_the_reboot",
        ),
        (
            "POST /api/v1/ha/pairing-code",
            "tests/ha_sync.rs: a_pair_syncs_configs_and_drains_refuses_strangers_and_unpairs",
        ),
        (
            "POST /api/v1/ha/join",
            "tests/ha_sync.rs: a_pair_syncs_configs_and_drains_refuses_strangers_and_unpairs",
        ),
        (
            "POST /api/v1/ha/failover",
            "tests/ha_sync.rs: a_pair_syncs_configs_and_drains_refuses_strangers_and_unpairs",
        ),
        (
            "DELETE /api/v1/ha",
            "tests/ha_sync.rs: a_pair_syncs_configs_and_drains_refuses_strangers_and_unpairs",
        ),
        (
            "POST /api/v1/system/backup",
            "tests/backup.rs: a_backup_of_a_restored_onto_a_fresh_b_gives_b_the_same_state",
        ),
        (
            "POST /api/v1/system/restore/preview",
            "tests/backup.rs: a_backup_of_a_restored_onto_a_fresh_b_gives_b_the_same_state",
        ),
        (
            "POST /api/v1/system/restore",
            "tests/backup.rs: a_backup_of_a_restored_onto_a_fresh_b_gives_b_the_same_state",
        ),
        (
            "PUT /api/v1/ca-bundles/{name}",
            "tests/health_tls.rs: front_ends_with_an_internal_ca_are_green_and_bad_certificates_are_explained",
        ),
        (
            "DELETE /api/v1/ca-bundles/{name}",
            "tests/health_tls.rs: front_ends_with_an_internal_ca_are_green_and_bad_certificates_are_explained",
        ),
    ];
    // A CA bundle for `GET /api/v1/ca-bundles/{name}` to show.
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).expect("CA cert").pem();
    let uploaded = client
        .request(Method::PUT, "/api/v1/ca-bundles/contoso")
        .body(ca_pem)
        .send()
        .expect("PUT CA bundle");
    assert_eq!(
        uploaded.status().as_u16(),
        200,
        "PUT /api/v1/ca-bundles/contoso"
    );
    let routes: Vec<_> = poolgate::web::open_routes()
        .into_iter()
        .chain(poolgate::web::protected_routes())
        .collect();
    let mut untested = Vec::new();
    for route in &routes {
        let name = format!("{} {}", route.method, route.path);
        if route.method != Method::GET {
            if !changes.iter().any(|(changed, _)| *changed == name) {
                untested.push(name);
            }
            continue;
        }
        let path = match route.path {
            "/api/v1/registrar" => "/api/v1/registrar?uri=sip:alice@contoso.test".to_owned(),
            "/api/v1/registrar/what-if" => {
                "/api/v1/registrar/what-if?pool=pool01&member=fe01".to_owned()
            }
            "/assets/{file}" => "/assets/style.css".to_owned(),
            "/api/v1/users/{name}" => "/api/v1/users/admin".to_owned(),
            "/api/v1/status/stream" => continue, // status_stream_sends_status_events
            other => concrete(other),
        };
        let response = client.get(&path);
        assert_eq!(response.status().as_u16(), 200, "{name}");
    }
    assert!(untested.is_empty(), "routes without a test: {untested:?}");
    assert_eq!(
        changes.len(),
        routes.iter().filter(|r| r.method != Method::GET).count()
    );
}

#[test]
fn the_event_filter_names_only_kinds_that_exist() {
    let (_dir, _poolgate, admin) = start();
    let client = AdminClient::setup_and_login(admin, PASSWORD);
    let response = client.get("/api/v1/events?kind=Health");
    assert_eq!(response.status().as_u16(), 422);
    let body: Value = response.json().expect("JSON");
    assert_eq!(body["fields"][0]["field"], "kind", "{body}");
    assert!(
        body["fields"][0]["message"].to_string().contains("health"),
        "{body}"
    );
    let response = client.get("/api/v1/events?kind=health");
    assert_eq!(response.status().as_u16(), 200);
}

#[test]
fn the_event_log_pages_newest_first_filters_by_time_and_exports_csv() {
    // fe01's admin actions (setup is an admin event too, of no member).
    const FE01: &str = "kind=admin&pool=pool01&member=fe01";
    let (_dir, _poolgate, admin) = start();
    let client = AdminClient::setup_and_login(admin, PASSWORD);
    for _ in 0..3 {
        for action in ["disable", "enable"] {
            let path = format!("/api/v1/pools/pool01/members/fe01/{action}");
            assert_eq!(client.post(&path, &json!({})).status().as_u16(), 200);
        }
    }
    let ids = |body: &Value| -> Vec<i64> {
        body["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["id"].as_i64().expect("id"))
            .collect()
    };
    let all = client.json(&format!("/api/v1/events?{FE01}"));
    let all_ids = ids(&all);
    assert_eq!(all_ids.len(), 6, "{all}");
    assert!(all_ids.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(all["next_before"], Value::Null, "a part page is the last");

    // Paging: `next_before` leads to the older page, which ends the log.
    let first = client.json(&format!("/api/v1/events?{FE01}&limit=4"));
    assert_eq!(ids(&first), all_ids[..4]);
    let next = first["next_before"].as_i64().expect("a next page");
    assert_eq!(next, all_ids[3]);
    let second = client.json(&format!("/api/v1/events?{FE01}&limit=4&before={next}"));
    assert_eq!(ids(&second), all_ids[4..]);
    assert_eq!(second["next_before"], Value::Null);
    // Tailing with `after` is oldest first, as before.
    let tail = client.json(&format!("/api/v1/events?{FE01}&after=0&limit=2"));
    assert_eq!(ids(&tail), [all_ids[5], all_ids[4]]);
    assert_eq!(tail["next_before"], Value::Null);

    // Time bounds, inclusive, in any offset.
    let events = all["events"].as_array().expect("events");
    let (newest, oldest) = (&events[0], &events[5]);
    let oldest_at = oldest["at"].as_str().expect("at");
    let until = client.json(&format!("/api/v1/events?{FE01}&until={oldest_at}"));
    assert_eq!(ids(&until), [all_ids[5]], "{until}");
    let newest_at = newest["at"].as_str().expect("at");
    let since = client.json(&format!("/api/v1/events?{FE01}&since={newest_at}"));
    assert_eq!(ids(&since), [all_ids[0]], "{since}");
    for (query, expected) in [
        ("since=2999-01-01T00:00:00Z", 0),
        ("until=2000-01-01T00:00:00Z", 0),
        ("since=2000-01-01T01:00:00%2B01:00", 6),
        ("since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z", 6),
        ("since=&until=", 6),
        ("colour=blue", 6),
    ] {
        let body = client.json(&format!("/api/v1/events?{FE01}&{query}"));
        assert_eq!(ids(&body).len(), expected, "{query}: {body}");
    }

    // Bad values name their parameter; an id that is no number is a 400.
    for (query, field) in [
        ("since=yesterday", "since"),
        ("until=2027-13-01T00:00:00Z", "until"),
        ("format=xml", "format"),
        ("kind=everything", "kind"),
    ] {
        let response = client.get(&format!("/api/v1/events?{query}"));
        assert_eq!(response.status().as_u16(), 422, "{query}");
        let body: Value = response.json().expect("JSON");
        assert_eq!(body["fields"][0]["field"], field, "{body}");
    }
    for query in ["before=latest", "after=-", "limit=all"] {
        let response = client.get(&format!("/api/v1/events?{query}"));
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let body: Value = response.json().expect("a JSON error");
        assert!(body["error"].is_string(), "{body}");
    }

    // Export: CSV with a header, one line per event, the filter applied.
    let csv = client.get(&format!("/api/v1/events?format=csv&{FE01}"));
    assert_eq!(csv.status().as_u16(), 200);
    let headers = csv.headers();
    assert!(
        headers["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/csv")
    );
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"poolgate-events.csv\""
    );
    let text = csv.text().expect("CSV");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "id,at,kind,pool,member,message,detail");
    assert_eq!(lines.len(), 7, "{text}");
    assert!(lines[1].starts_with(&format!("{},{newest_at},admin,pool01,fe01,", all_ids[0])));
    // The newest is fe01 enabled again; its detail is JSON in one quoted cell.
    for part in [
        r#","{"""#,
        r#"""from"":""disabled"""#,
        r#"""to"":""enabled"""#,
    ] {
        assert!(lines[1].contains(part), "{part} in {}", lines[1]);
    }
    assert!(lines[1].ends_with(r#"}""#), "{}", lines[1]);
    let page = client.get(&format!(
        "/api/v1/events?format=csv&{FE01}&limit=2&before={next}"
    ));
    assert_eq!(page.text().expect("CSV").lines().count(), 3);
    let json_export = client.json(&format!("/api/v1/events?format=json&{FE01}&limit=1000"));
    assert_eq!(ids(&json_export), all_ids);
}
