//! Users, roles and the audit log against the real binary: for every
//! protected route in the route tables an operator and a viewer get 403
//! exactly where their role ends; changing or removing a user ends their
//! sessions and tokens; the last and the built-in admin stay; config PUTs
//! and drains are audited with user, address and interface.

use poolgate::web::{Access, Role};
use poolgate_e2e::{AdminClient, Poolgate, loopback_example};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const OPS_PASSWORD: &str = "operator password 1";
const VIEWER_PASSWORD: &str = "viewer password 1";

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

fn add_user(admin: &AdminClient, username: &str, password: &str, role: &str) {
    let response = admin.post(
        "/api/v1/users",
        &json!({"username": username, "password": password, "role": role}),
    );
    assert_eq!(response.status().as_u16(), 201, "add {username}");
}

fn logged_in(address: std::net::SocketAddr, username: &str, password: &str) -> AdminClient {
    let mut client = AdminClient::new(address);
    client.login(username, password);
    client
}

/// What every user does for themselves, whatever their role.
const SELF_SERVICE: [&str; 4] = [
    "DELETE /api/v1/session",
    "PUT /api/v1/session/password",
    "POST /api/v1/tokens",
    "DELETE /api/v1/tokens/{id}",
];

/// The least role each route should need, as the product promises it:
/// reads and self-service for everyone, member actions for operators,
/// every other change (and user management) for admins.
fn promised(method: &Method, path: &str) -> Role {
    let name = format!("{method} {path}");
    if path.starts_with("/api/v1/users") || path == "/api/v1/system/support-bundle" {
        // Who may log in, and the config and settings in one download.
        Role::Admin
    } else if *method == Method::GET || SELF_SERVICE.contains(&name.as_str()) {
        Role::Viewer
    } else if path == "/api/v1/pools/{pool}/members/{member}/{action}" {
        Role::Operator
    } else {
        Role::Admin
    }
}

#[test]
fn operators_and_viewers_are_refused_every_route_beyond_their_role() {
    let (_dir, _poolgate, address) = start();
    let admin = AdminClient::setup_and_login(address, PASSWORD);
    add_user(&admin, "ops", OPS_PASSWORD, "operator");
    add_user(&admin, "watcher", VIEWER_PASSWORD, "viewer");
    let operator = logged_in(address, "ops", OPS_PASSWORD);
    let viewer = logged_in(address, "watcher", VIEWER_PASSWORD);
    // A viewer's API token too: tokens carry their user's role.
    let created = viewer.post("/api/v1/tokens", &json!({"name": "dashboard"}));
    assert_eq!(created.status().as_u16(), 201);
    let created: Value = created.json().expect("JSON");
    assert_eq!(created["role"], "viewer");
    let mut viewer_token = AdminClient::new(address);
    viewer_token.bearer = created["token"].as_str().map(str::to_owned);

    let routes = poolgate::web::protected_routes();
    assert!(routes.len() > 40);
    for route in poolgate::web::open_routes() {
        assert_eq!(
            route.access,
            Access::Open,
            "{} {}",
            route.method,
            route.path
        );
    }
    let mut checked = 0;
    for route in &routes {
        let (method, path) = (&route.method, route.path);
        let name = format!("{method} {path}");
        let least = promised(method, path);
        assert_eq!(route.access, Access::Role(least), "{name}: declared role");
        for (client, role, who) in [
            (&operator, Role::Operator, "operator"),
            (&viewer, Role::Viewer, "viewer"),
            (&viewer_token, Role::Viewer, "viewer token"),
        ] {
            if role >= least {
                // Allowed: reads are read here; allowed changes (drain,
                // self-service) are exercised by the tests below.
                if *method == Method::GET && path != "/api/v1/status/stream" {
                    let status = client.get(&concrete(path)).status().as_u16();
                    assert_ne!(status, 403, "{who}: {name}");
                    assert_ne!(status, 401, "{who}: {name}");
                }
                continue;
            }
            let response = client
                .request(method.clone(), &concrete(path))
                .json(&json!({}))
                .send()
                .expect("request");
            assert_eq!(response.status().as_u16(), 403, "{who}: {name}");
            let body: Value = response.json().expect("JSON");
            assert!(
                body["error"].as_str().is_some_and(|e| e.contains("role")),
                "{who}: {name}: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked > 60, "{checked} refusals checked");
    // The refusals changed nothing: the config is still version 1, nobody
    // was added, and the member is still enabled.
    assert_eq!(admin.json("/api/v1/health")["config_version"], 1);
    assert_eq!(
        admin.json("/api/v1/users")["users"]
            .as_array()
            .expect("users")
            .len(),
        3
    );
    let fe01 = admin
        .members()
        .into_iter()
        .find(|m| m["name"] == "fe01")
        .expect("fe01");
    assert_eq!(fe01["admin_state"], "enabled", "{fe01}");

    // What the operator may change: drain and enable (and disable).
    for action in ["drain", "enable", "disable", "enable"] {
        let response = operator.post(
            &format!("/api/v1/pools/pool01/members/fe01/{action}"),
            &json!({}),
        );
        assert_eq!(response.status().as_u16(), 200, "operator {action}");
    }
    // The UI learns the role from the session.
    assert_eq!(operator.json("/api/v1/session")["role"], "operator");
    assert_eq!(viewer_token.json("/api/v1/session")["role"], "viewer");
    // The OpenAPI document names each route's role.
    let document = AdminClient::new(address).json("/api/v1/openapi.json");
    assert_eq!(
        document["paths"]["/api/v1/users"]["post"]["x-required-role"],
        "admin"
    );
    assert_eq!(
        document["paths"]["/api/v1/pools/{pool}/members/{member}/{action}"]["post"]["x-required-role"],
        "operator"
    );
}

#[test]
fn changing_or_removing_a_user_ends_their_sessions_and_tokens() {
    let (_dir, _poolgate, address) = start();
    let admin = AdminClient::setup_and_login(address, PASSWORD);

    // Validation names the field and writes nothing.
    for (body, field) in [
        (
            json!({"username": "bad name", "password": OPS_PASSWORD, "role": "operator"}),
            "username",
        ),
        (
            json!({"username": "ops", "password": "short", "role": "operator"}),
            "password",
        ),
        (
            json!({"username": "ops", "password": OPS_PASSWORD, "role": "root"}),
            "role",
        ),
    ] {
        let response = admin.post("/api/v1/users", &body);
        assert_eq!(response.status().as_u16(), 422, "{body}");
        let answer: Value = response.json().expect("JSON");
        assert_eq!(answer["fields"][0]["field"], field, "{answer}");
    }
    assert_eq!(admin.get("/api/v1/users/ops").status().as_u16(), 404);
    add_user(&admin, "ops", OPS_PASSWORD, "operator");
    let again = admin.post(
        "/api/v1/users",
        &json!({"username": "ops", "password": OPS_PASSWORD, "role": "viewer"}),
    );
    assert_eq!(again.status().as_u16(), 409);

    let session_and_token = |password: &str| {
        let client = logged_in(address, "ops", password);
        let created = client.post("/api/v1/tokens", &json!({"name": "script"}));
        assert_eq!(created.status().as_u16(), 201);
        let created: Value = created.json().expect("JSON");
        let mut token = AdminClient::new(address);
        token.bearer = created["token"].as_str().map(str::to_owned);
        assert_eq!(token.get("/api/v1/status").status().as_u16(), 200);
        (client, token)
    };
    let ends = |client: &AdminClient, token: &AdminClient, what: &str| {
        assert_eq!(
            client.get("/api/v1/status").status().as_u16(),
            401,
            "session after {what}"
        );
        assert_eq!(
            token.get("/api/v1/status").status().as_u16(),
            401,
            "token after {what}"
        );
    };

    // An operator cannot mint a token above itself.
    let (client, token) = session_and_token(OPS_PASSWORD);
    let above = client.post("/api/v1/tokens", &json!({"name": "x", "role": "admin"}));
    assert_eq!(above.status().as_u16(), 422);
    let above: Value = above.json().expect("JSON");
    assert_eq!(above["fields"][0]["field"], "role");

    // A new password.
    let new_password = "operator password 2";
    let changed = admin.put("/api/v1/users/ops", &json!({"password": new_password}));
    assert_eq!(changed.status().as_u16(), 200);
    let changed: Value = changed.json().expect("JSON");
    assert_eq!(changed["sessions_ended"], 1, "{changed}");
    assert_eq!(changed["tokens_revoked"], 1, "{changed}");
    ends(&client, &token, "a password change");
    let old = AdminClient::new(address).post(
        "/api/v1/session",
        &json!({"username": "ops", "password": OPS_PASSWORD}),
    );
    assert_eq!(old.status().as_u16(), 401);

    // A new role.
    let (client, token) = session_and_token(new_password);
    let changed = admin.put("/api/v1/users/ops", &json!({"role": "viewer"}));
    assert_eq!(changed.status().as_u16(), 200);
    ends(&client, &token, "a role change");
    let client = logged_in(address, "ops", new_password);
    assert_eq!(client.json("/api/v1/session")["role"], "viewer");
    let drain = client.post("/api/v1/pools/pool01/members/fe01/drain", &json!({}));
    assert_eq!(drain.status().as_u16(), 403);
    assert_eq!(admin.json("/api/v1/users/ops")["role"], "viewer");

    // Removal.
    let (client, token) = session_and_token(new_password);
    assert_eq!(admin.delete("/api/v1/users/ops").status().as_u16(), 204);
    ends(&client, &token, "removal");
    let gone = AdminClient::new(address).post(
        "/api/v1/session",
        &json!({"username": "ops", "password": new_password}),
    );
    assert_eq!(gone.status().as_u16(), 401);
    assert_eq!(admin.delete("/api/v1/users/ops").status().as_u16(), 404);

    // The built-in admin stays an admin; the last admin stays.
    for response in [
        admin.put("/api/v1/users/admin", &json!({"role": "operator"})),
        admin.delete("/api/v1/users/admin"),
    ] {
        assert_eq!(response.status().as_u16(), 409);
    }
    add_user(&admin, "root", PASSWORD, "admin");
    let root = logged_in(address, "root", PASSWORD);
    assert_eq!(
        root.put("/api/v1/users/root", &json!({"role": "viewer"}))
            .status()
            .as_u16(),
        200,
        "another admin remains"
    );
    let users = admin.json("/api/v1/users");
    let names: Vec<_> = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| format!("{}:{}", u["username"], u["role"]))
        .collect();
    assert_eq!(names, ["\"admin\":\"admin\"", "\"root\":\"viewer\""]);
    // Nothing was left in the UI session that changed roles.
    assert_eq!(root.get("/api/v1/status").status().as_u16(), 401);
    // The admin's own password change through the users route keeps its session.
    let own = admin.put(
        "/api/v1/users/admin",
        &json!({"password": "another admin password"}),
    );
    assert_eq!(own.status().as_u16(), 200);
    assert_eq!(admin.get("/api/v1/users").status().as_u16(), 200);
}

#[test]
fn config_puts_and_drains_are_audited_with_who_where_and_how() {
    let (dir, _poolgate, address) = start();
    let admin = AdminClient::setup_and_login(address, PASSWORD);
    add_user(&admin, "ops", OPS_PASSWORD, "operator");
    add_user(&admin, "watcher", VIEWER_PASSWORD, "viewer");

    // A config change through the UI session.
    let mut config = admin.json("/api/v1/config");
    config["pool"][0]["member"][0]["weight"] = json!(7);
    let put = admin.put("/api/v1/config", &config);
    assert_eq!(put.status().as_u16(), 200);
    let put: Value = put.json().expect("JSON");
    let after = put["version"].as_i64().expect("version");

    // A drain through an operator's API token.
    let operator = logged_in(address, "ops", OPS_PASSWORD);
    let created: Value = operator
        .post("/api/v1/tokens", &json!({"name": "runbook"}))
        .json()
        .expect("JSON");
    let token_id = created["id"].as_i64().expect("id");
    let mut script = AdminClient::new(address);
    script.bearer = created["token"].as_str().map(str::to_owned);
    let drain = script.post("/api/v1/pools/pool01/members/fe01/drain", &json!({}));
    assert_eq!(drain.status().as_u16(), 200);

    // And a refused attempt.
    let viewer = logged_in(address, "watcher", VIEWER_PASSWORD);
    let refused = viewer.put("/api/v1/config", &config);
    assert_eq!(refused.status().as_u16(), 403);

    let audit = viewer.json("/api/v1/audit");
    let entries = audit["entries"].as_array().expect("entries");
    let find = |action: &str, user: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action && e["username"] == user)
            .unwrap_or_else(|| panic!("no {action} by {user} in {audit}"))
            .clone()
    };
    let config_entry = find("PUT /api/v1/config", "admin");
    assert_eq!(config_entry["kind"], "config");
    assert_eq!(config_entry["interface"], "ui");
    assert_eq!(config_entry["role"], "admin");
    assert_eq!(config_entry["address"], "127.0.0.1");
    assert_eq!(config_entry["status"], 200);
    assert_eq!(config_entry["detail"]["after_version"], after);
    let before = config_entry["detail"]["before_version"]
        .as_i64()
        .expect("before");
    assert!(before < after, "{config_entry}");
    // Both versions are there to compare.
    let old = viewer.json(&format!("/api/v1/config/versions/{before}"));
    let new = viewer.json(&format!("/api/v1/config/versions/{after}"));
    assert!(!old["toml"].as_str().expect("toml").contains("weight = 7"));
    assert!(
        new["toml"].as_str().expect("toml").contains("weight = 7"),
        "{new}"
    );

    let drain_entry = find("POST /api/v1/pools/pool01/members/fe01/drain", "ops");
    assert_eq!(drain_entry["kind"], "member");
    assert_eq!(drain_entry["interface"], "token");
    assert_eq!(drain_entry["token_id"], token_id);
    assert_eq!(drain_entry["role"], "operator");
    assert_eq!(drain_entry["address"], "127.0.0.1");
    assert_eq!(drain_entry["detail"]["previous"], "enabled");
    assert_eq!(drain_entry["detail"]["admin_state"], "draining");

    let refused_entry = find("PUT /api/v1/config", "watcher");
    assert_eq!(refused_entry["status"], 403);
    let added: Vec<_> = entries
        .iter()
        .filter(|e| e["action"] == "POST /api/v1/users")
        .map(|e| {
            (
                e["kind"].clone(),
                e["detail"]["username"].clone(),
                e["detail"]["role"].clone(),
            )
        })
        .collect();
    assert_eq!(
        added,
        [
            (json!("user"), json!("watcher"), json!("viewer")),
            (json!("user"), json!("ops"), json!("operator"))
        ]
    );
    find("POST /api/v1/session", "ops");

    // Filters and paging.
    let ops = viewer.json("/api/v1/audit?user=ops");
    assert!(
        ops["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["username"] == "ops")
    );
    let members = viewer.json("/api/v1/audit?kind=member");
    assert_eq!(members["entries"].as_array().expect("entries").len(), 1);
    let page = viewer.json("/api/v1/audit?limit=2");
    assert_eq!(page["entries"].as_array().expect("entries").len(), 2);
    let next = page["next_before"].as_i64().expect("next page");
    let older = viewer.json(&format!("/api/v1/audit?limit=2&before={next}"));
    assert!(
        older["entries"][0]["id"].as_i64().expect("id") < next,
        "{older}"
    );
    let later = viewer.json("/api/v1/audit?since=2999-01-01T00:00:00Z");
    assert!(later["entries"].as_array().expect("entries").is_empty());
    for (query, field) in [
        ("kind=everything", "kind"),
        ("since=yesterday", "since"),
        ("format=xml", "format"),
        ("limit=0", "limit"),
    ] {
        let response = viewer.get(&format!("/api/v1/audit?{query}"));
        assert_eq!(response.status().as_u16(), 422, "{query}");
        let body: Value = response.json().expect("JSON");
        assert_eq!(body["fields"][0]["field"], field, "{body}");
    }

    for query in ["usr=ops", "before=latest"] {
        let response = viewer.get(&format!("/api/v1/audit?{query}"));
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let body: Value = response.json().expect("a JSON error");
        assert!(body["error"].is_string(), "{body}");
    }

    // Export.
    let csv = viewer.get("/api/v1/audit?format=csv&kind=member");
    assert_eq!(csv.status().as_u16(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/csv")
    );
    let text = csv.text().expect("CSV");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("id,at,username,role,address,interface"));
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[1].contains(",ops,operator,127.0.0.1,token,"),
        "{text}"
    );
    let json_export = viewer.json("/api/v1/audit?format=json&kind=config");
    assert_eq!(json_export["entries"].as_array().expect("entries").len(), 2);

    // The console's password change is on record too, as the console.
    let data_dir = dir.path().join("var");
    let output = poolgate_e2e::poolgate_cli(
        &[
            "admin",
            "set-password",
            "--data-dir",
            data_dir.to_str().expect("path"),
        ],
        "a console password 1\n",
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(admin.get("/api/v1/status").status().as_u16(), 401);
    let console = viewer.json("/api/v1/audit?kind=user&limit=1");
    let entry = &console["entries"][0];
    assert_eq!(entry["interface"], "console", "{console}");
    assert_eq!(entry["action"], "admin set-password");
    assert_eq!(entry["target"], "admin");
    assert_eq!(entry["address"], Value::Null);
}

#[test]
fn a_restored_backup_gives_each_user_the_role_they_had() {
    use base64::Engine;
    let (_dir, _poolgate, address) = start();
    let admin = AdminClient::setup_and_login(address, PASSWORD);
    add_user(&admin, "ops", OPS_PASSWORD, "operator");
    let passphrase = "a backup passphrase";
    let response = admin.post("/api/v1/system/backup", &json!({"passphrase": passphrase}));
    assert_eq!(response.status().as_u16(), 200);
    let archive = response.bytes().expect("archive");
    // Promoted after the backup: the restore puts the operator back.
    assert_eq!(
        admin
            .put("/api/v1/users/ops", &json!({"role": "admin"}))
            .status()
            .as_u16(),
        200
    );
    let body = json!({
        "passphrase": passphrase,
        "archive": base64::engine::general_purpose::STANDARD.encode(&archive),
    });
    let restored = admin.post("/api/v1/system/restore", &body);
    assert_eq!(restored.status().as_u16(), 200);
    let mut admin = AdminClient::new(address);
    admin.login("admin", PASSWORD);
    assert_eq!(admin.json("/api/v1/users/ops")["role"], "operator");
    let ops = logged_in(address, "ops", OPS_PASSWORD);
    assert_eq!(ops.put("/api/v1/config", &json!({})).status().as_u16(), 403);
}
