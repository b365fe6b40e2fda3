use std::path::PathBuf;

use super::*;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

fn example_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/lync-pool.toml");
    std::fs::read_to_string(path).expect("example readable")
}

#[test]
fn every_example_validates() {
    let files = examples();
    assert!(files.len() >= 3, "examples found: {files:?}");
    for file in files {
        if let Err(error) = load(&file) {
            panic!("{error}");
        }
    }
}

/// The schema is a contract shared with the design documents; the reference
/// example beside them must keep validating.
#[test]
fn reference_example_validates_when_present() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/lync-pool.toml");
    if path.exists() {
        load(&path).unwrap_or_else(|error| panic!("{error}"));
    }
}

#[test]
fn typed_config_has_parsed_values() {
    let config = from_toml(&example_text(), "lync-pool.toml").expect("valid");
    let pool = config.pool("pool01").expect("pool");
    assert_eq!(pool.members.len(), 3);
    assert_eq!(pool.members[0].addresses[0].to_string(), "127.0.0.11");
    assert_eq!(pool.aliases, vec!["sip.contoso.test".to_owned()]);
    let vs = &config.virtual_services[0];
    assert_eq!(vs.ports, vec![14443, 18080]);
    assert_eq!(vs.idle_timeout.as_secs(), 1800);
    assert_eq!(
        config.zones[0].records[0].name,
        "_sipinternaltls._tcp.contoso.test"
    );
}

/// Each broken file: (what, replace this, with this, field named, line).
const BROKEN: &[(&str, &str, &str, &str, usize)] = &[
    (
        "unknown key",
        "ttl = 30 ",
        "ttl = 30\nttl_seconds = 5 ",
        "ttl_seconds",
        15,
    ),
    (
        "duplicate member",
        "name = \"fe02\"",
        "name = \"fe01\"",
        "pool[0].member[1].name",
        67,
    ),
    (
        "dangling monitor",
        "monitor = \"fe-sip\"",
        "monitor = \"fe-sipp\"",
        "pool[0].monitor",
        57,
    ),
    (
        "dangling pool",
        "pool = \"pool01\"",
        "pool = \"pool02\"",
        "virtual_service[0].pool",
        81,
    ),
    (
        "bad address",
        "address = \"127.0.0.12\"",
        "address = \"127.0.0.300\"",
        "pool[0].member[1].address",
        69,
    ),
    (
        "bad listen address",
        "admin = \"127.0.0.1:8443\"",
        "admin = \"127.0.0.1\"",
        "listen.admin",
        8,
    ),
    (
        "port clash",
        "admin = \"127.0.0.1:8443\"",
        "admin = \"127.0.0.1:14443\"",
        "virtual_service[0].port",
        79,
    ),
    (
        "wrong type",
        "rise = 2",
        "rise = \"two\"",
        "monitor[0].rise",
        41,
    ),
    (
        "unknown scheduler",
        "\"least-connections\"",
        "\"fastest\"",
        "virtual_service[0].scheduler",
        83,
    ),
    (
        "duplicate address",
        "address = \"127.0.0.13\"",
        "address = \"127.0.0.11\"",
        "pool[0].member[2].address",
        74,
    ),
    (
        "fqdn outside zones",
        "fqdn = \"pool01.contoso.test\"",
        "fqdn = \"pool01.fabrikam.test\"",
        "pool[0].fqdn",
        55,
    ),
    (
        "timeout above interval",
        "timeout_ms = 500",
        "timeout_ms = 5000",
        "monitor[0].timeout_ms",
        40,
    ),
    (
        "bad SRV",
        "\"0 0 5061 pool01.contoso.test.\"",
        "\"5061 pool01\"",
        "zone[0].record[0].value",
        28,
    ),
];

#[test]
fn broken_files_name_field_and_line() {
    let original = example_text();
    for (what, from, to, field, line) in BROKEN {
        assert!(original.contains(from), "{what}: example lacks {from:?}");
        let text = original.replacen(from, to, 1);
        let error = from_toml(&text, "pool.toml").expect_err(what);
        let rendered = error.to_string();
        let problem = error
            .problems()
            .iter()
            .find(|p| {
                p.field.as_deref().is_some_and(|f| f.contains(field)) || p.message.contains(field)
            })
            .unwrap_or_else(|| panic!("{what}: no problem names {field}: {rendered}"));
        assert_eq!(problem.line, *line, "{what}: {rendered}");
        assert!(problem.column >= 1, "{what}: {rendered}");
        assert!(
            rendered.starts_with(&format!("pool.toml:{line}:")),
            "{what}: {rendered}"
        );
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = example_text()
        .replacen("name = \"fe02\"", "name = \"fe01\"", 1)
        .replacen("pool = \"pool01\"", "pool = \"nope\"", 1);
    let error = from_toml(&text, "f").expect_err("two problems");
    assert_eq!(error.problems().len(), 2, "{error}");
}

#[test]
fn export_round_trips() {
    for file in examples() {
        let config = load(&file).expect("valid example");
        let exported = to_toml(&config);
        let again = from_toml(&exported, "exported").unwrap_or_else(|e| panic!("{e}\n{exported}"));
        assert_eq!(again, config, "{}", file.display());
        assert_eq!(to_toml(&again), exported);
    }
}

#[test]
fn wildcard_listener_clashes_with_specific_address() {
    let text = example_text().replacen("dns = [\"127.0.0.1:5353\"]", "dns = [\"0.0.0.0:5060\"]", 1);
    let error = from_toml(&text, "f").expect_err("UDP 5060 clash");
    assert!(error.to_string().contains("listen.sip_udp"), "{error}");
}

#[test]
fn port_zero_never_clashes() {
    let text = example_text()
        .replacen("127.0.0.1:8443", "127.0.0.1:0", 1)
        .replacen("127.0.0.1:5353", "127.0.0.1:0", 1);
    from_toml(&text, "f").unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn diff_sets_admin_state_only_when_config_changes_it() {
    let old = from_toml(&example_text(), "f").expect("valid");
    let same = diff(Some(&old), &old);
    assert!(same.is_empty(), "{same:?}");

    let fresh = diff(None, &old);
    assert_eq!(fresh.admin_states.len(), 3);
    assert!(fresh.listeners_changed);

    let drained = from_toml(
        &example_text().replacen(
            "address = \"127.0.0.12\"",
            "address = \"127.0.0.12\"\nstate = \"draining\"",
            1,
        ),
        "f",
    )
    .expect("valid");
    let changes = diff(Some(&old), &drained);
    assert_eq!(changes.admin_states.len(), 1);
    assert_eq!(
        changes
            .admin_states
            .get(&("pool01".to_owned(), "fe02".to_owned())),
        Some(&AdminState::Draining)
    );
    assert!(changes.members_changed.is_empty());
    assert!(!changes.settings_changed);
}

#[test]
fn diff_sees_dns_and_pool_settings() {
    let old = from_toml(&example_text(), "f").expect("valid");
    assert!(diff(None, &old).settings_changed);
    for (from, to) in [
        ("ttl = 30", "ttl = 15"),
        ("aliases = [\"sip.contoso.test\"]", "aliases = []"),
        ("registrar_port = 15061", "registrar_port = 5061"),
        ("type = \"A\"", "type = \"TXT\""),
    ] {
        let new = from_toml(&example_text().replacen(from, to, 1), "f")
            .unwrap_or_else(|e| panic!("{to}: {e}"));
        let changes = diff(Some(&old), &new);
        assert!(changes.settings_changed, "{to}");
        assert!(!changes.is_empty(), "{to}");
        assert!(changes.members_changed.is_empty(), "{to}");
    }
}

#[test]
fn drain_settings_are_checked() {
    let with = |extra: &str| {
        example_text().replacen(
            "registrar_transport = \"tls\"",
            &format!("registrar_transport = \"tls\"\n{extra}"),
            1,
        )
    };
    from_toml(&with("drain_timeout_s = 600\ndrop_at_deadline = true\ndrain_agent_port = 8089\ndrain_agent_path = \"/sessions\""), "f")
        .unwrap_or_else(|e| panic!("{e}"));
    let error = from_toml(&with("drop_at_deadline = true"), "f").expect_err("no deadline");
    assert!(
        error.to_string().contains("pool[0].drop_at_deadline"),
        "{error}"
    );
    let error = from_toml(&with("drain_agent_path = \"/x\""), "f").expect_err("no port");
    assert!(
        error.to_string().contains("pool[0].drain_agent_path"),
        "{error}"
    );
    let error = from_toml(&with("drain_timeout_s = 0"), "f").expect_err("zero");
    assert!(
        error.to_string().contains("pool[0].drain_timeout_s"),
        "{error}"
    );
}

#[test]
fn proxy_connect_timeout_and_drop_on_down() {
    let config = from_toml(&example_text(), "f").expect("valid");
    let vs = &config.virtual_services[0];
    assert_eq!(vs.connect_timeout.as_millis(), 3000);
    assert!(!vs.drop_on_down);

    let text = example_text().replacen(
        "idle_timeout_s = 1800",
        "idle_timeout_s = 1800\nconnect_timeout_ms = 250\ndrop_on_down = true",
        1,
    );
    let config = from_toml(&text, "f").unwrap_or_else(|e| panic!("{e}"));
    let vs = &config.virtual_services[0];
    assert_eq!(vs.connect_timeout.as_millis(), 250);
    assert!(vs.drop_on_down);

    let text = example_text().replacen(
        "idle_timeout_s = 1800",
        "idle_timeout_s = 1800\nconnect_timeout_ms = 0",
        1,
    );
    let error = from_toml(&text, "f").expect_err("zero connect timeout");
    assert!(
        error.problems().iter().any(|p| p
            .field
            .as_deref()
            .is_some_and(|f| f.contains("connect_timeout_ms"))),
        "{error}"
    );
}

#[test]
fn udp_limits_and_seen_users_are_read_checked_and_round_trip() {
    let defaults = from_toml(&example_text(), "f").expect("valid");
    assert_eq!((defaults.dns.rrl_rate, defaults.dns.rrl_slip), (200, 2));
    assert_eq!(defaults.sip.udp_rate, 200);
    assert_eq!(defaults.sip.seen_users_max, 100_000);
    assert_eq!(defaults.sip.seen_users_max_age.as_secs(), 30 * 86_400);
    // Defaults are not written out, so existing exports stay as they were.
    let exported = to_toml(&defaults);
    assert!(
        !exported.contains("rrl_") && !exported.contains("[sip]"),
        "{exported}"
    );

    let with = |dns: &str, sip: &str| {
        example_text().replacen(
            "fail_open = true",
            &format!("fail_open = true\n{dns}\n[sip]\n{sip}\n"),
            1,
        )
    };
    let set = from_toml(
        &with(
            "rrl_rate = 0\nrrl_slip = 1",
            "udp_rate = 50\nseen_users_max = 10\nseen_users_max_age_days = 1",
        ),
        "f",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((set.dns.rrl_rate, set.dns.rrl_slip), (0, 1));
    assert_eq!(set.sip.udp_rate, 50);
    assert_eq!(set.sip.seen_users_max, 10);
    let again = from_toml(&to_toml(&set), "exported").expect("round trip");
    assert_eq!(again, set);
    // A change of `[sip]` alone is a change.
    let sip_only = from_toml(&with("rrl_rate = 0\nrrl_slip = 1", ""), "f").expect("valid");
    assert!(diff(Some(&sip_only), &set).settings_changed);

    let error = from_toml(&with("rrl_slip = 11", ""), "f").expect_err("slip");
    assert!(error.to_string().contains("dns.rrl_slip"), "{error}");
    let error = from_toml(&with("", "seen_users_max_age_days = 0"), "f").expect_err("age");
    assert!(
        error.to_string().contains("sip.seen_users_max_age_days"),
        "{error}"
    );
    let error = from_toml(&with("", "seen_users = 1"), "f").expect_err("unknown key");
    assert!(error.to_string().contains("seen_users"), "{error}");
}

/// The example without its zone's `name_servers`.
fn example_without_name_servers() -> String {
    let text = example_text();
    let line = text
        .lines()
        .find(|line| line.starts_with("name_servers = "))
        .expect("the example names its name servers");
    text.replacen(&format!("{line}\n"), "", 1)
}

/// The example's zone with `name_servers` (and whatever else) instead of its own.
fn with_zone_keys(keys: &str) -> String {
    let text = example_without_name_servers();
    let start = text
        .find("[[zone]]\nname = \"contoso.test\"")
        .expect("example zone");
    let end = start
        + text[start..]
            .find("\n[")
            .expect("a key after the zone name");
    format!("{}\n{keys}{}", &text[..end], &text[end..])
}

#[test]
fn name_server_errors_name_their_field() {
    for (keys, field) in [
        (
            r#"name_servers = [{ name = "ns1.contoso.test", addresses = ["127.0.0.1"] }, { name = "ns2.contoso.test" }]"#,
            "zone[0].name_servers[1].addresses",
        ),
        (
            r#"name_servers = [{ name = "ns1.contoso.test", addresses = ["127.0.0.1:53"] }]"#,
            "zone[0].name_servers[0].addresses[0]",
        ),
        (
            r#"name_servers = [{ name = "ns1.contoso.test", addresses = ["127.0.0.1", "0.0.0.0"] }]"#,
            "zone[0].name_servers[0].addresses[1]",
        ),
        (
            r#"name_servers = [{ name = "ns1.contoso.test", addresses = ["::1", "::1"] }]"#,
            "zone[0].name_servers[0].addresses[1]",
        ),
        (
            r#"name_servers = [{ name = "ns1..contoso.test", addresses = ["::1"] }]"#,
            "zone[0].name_servers[0].name",
        ),
        (
            r#"name_servers = [{ name = "ns.example.org" }, { name = "NS.example.org." }]"#,
            "zone[0].name_servers[1].name",
        ),
        ("negative_ttl = 86401", "zone[0].negative_ttl"),
        (
            r#"name_servers = [{ name = "pool01.contoso.test", addresses = ["127.0.0.1"] }]"#,
            "zone[0].name_servers[0].name",
        ),
        (
            r#"name_servers = [{ name = "ns1.contoso.test", addresses = ["::1"] }, { name = "fe01.contoso.test", addresses = ["::1"] }]"#,
            "zone[0].name_servers[1].name",
        ),
    ] {
        let error = from_toml(&with_zone_keys(keys), "pool.toml").expect_err(keys);
        assert!(
            error
                .problems()
                .iter()
                .any(|problem| problem.field.as_deref() == Some(field)),
            "{keys}: no problem names {field}: {error}"
        );
        assert_eq!(error.problems().len(), 1, "{keys}: {error}");
    }
}

#[test]
fn name_servers_and_negative_ttl_are_kept() {
    let config = from_toml(
        &with_zone_keys(
            r#"negative_ttl = 120
name_servers = [
    { name = "NS1.contoso.test.", addresses = ["127.0.0.1", "::1"] },
    { name = "ns.example.org" },
]"#,
        ),
        "pool.toml",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let zone = &config.zones[0];
    assert_eq!(zone.negative_ttl, 120);
    assert_eq!(
        zone.name_servers,
        vec![
            NameServer {
                name: "ns1.contoso.test".into(),
                addresses: vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")],
            },
            NameServer {
                name: "ns.example.org".into(),
                addresses: vec![],
            },
        ]
    );
    let again = from_toml(&to_toml(&config), "exported").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, config);
}

#[test]
fn a_zone_without_name_servers_gets_one_at_the_dns_listener() {
    let config = from_toml(&example_without_name_servers(), "pool.toml").expect("valid");
    let zone = &config.zones[0];
    assert_eq!(zone.negative_ttl, config.dns.ttl, "default: dns.ttl");
    assert_eq!(
        zone.name_servers,
        vec![NameServer {
            name: "ns.contoso.test".into(),
            addresses: vec!["127.0.0.1".parse().expect("ip")],
        }]
    );
    for wildcard in ["0.0.0.0:5353", "[::]:5353"] {
        let text = example_without_name_servers().replacen("127.0.0.1:5353", wildcard, 1);
        let error = from_toml(&text, "pool.toml").expect_err(wildcard);
        assert!(
            error
                .problems()
                .iter()
                .any(|p| p.field.as_deref() == Some("zone[0].name_servers")
                    && p.message.contains("wildcard")),
            "{error}"
        );
        // Naming them is the way out.
        let named = with_zone_keys(
            r#"name_servers = [{ name = "ns1.contoso.test", addresses = ["127.0.0.1"] }]"#,
        )
        .replacen("127.0.0.1:5353", wildcard, 1);
        from_toml(&named, "pool.toml").unwrap_or_else(|error| panic!("{wildcard}: {error}"));
    }
}

/// The example's web-internal service with its ports written as `ports`
/// (replacing `port = 14443` and `extra_ports = [18080]`).
fn with_service_ports(ports: &str) -> String {
    let text = example_text();
    assert!(text.contains("port = 14443\nextra_ports = [18080]"));
    let start = text.find("port = 14443\nextra_ports").expect("port line");
    let end = start + text[start..].find("pool = \"pool01\"").expect("pool line");
    format!("{}{ports}\n{}", &text[..start], &text[end..])
}

fn problem_fields(error: &ConfigError) -> Vec<String> {
    error
        .problems()
        .iter()
        .filter_map(|p| p.field.clone())
        .collect()
}

#[test]
fn ports_map_to_member_ports_in_either_form() {
    let defaults = from_toml(&example_text(), "f").expect("valid");
    let vs = &defaults.virtual_services[0];
    assert_eq!(vs.member_ports, vs.ports, "same port by default");
    assert_eq!(vs.send_proxy, SendProxy::None);

    let text = with_service_ports(
        "port = 14443\nmember_port = 4443\n\
         extra_ports = [18080, { port = 18081, member_port = 8080 }, { port = 18082 }]\n\
         send_proxy = \"v2\"",
    );
    let config = from_toml(&text, "f").unwrap_or_else(|e| panic!("{e}"));
    let vs = &config.virtual_services[0];
    assert_eq!(vs.ports, [14443, 18080, 18081, 18082]);
    assert_eq!(vs.member_ports, [4443, 18080, 8080, 18082]);
    assert_eq!(vs.member_port(18081), Some(8080));
    assert_eq!(vs.member_port(1), None);
    assert_eq!(vs.send_proxy, SendProxy::V2);

    // Export prints what was given: each extra port in its own form.
    let exported = to_toml(&config);
    assert!(exported.contains("member_port = 4443"), "{exported}");
    assert!(exported.contains("send_proxy = \"v2\""), "{exported}");
    let again = from_toml(&exported, "exported").unwrap_or_else(|e| panic!("{e}\n{exported}"));
    assert_eq!(again, config);
    assert_eq!(again.source(), config.source());
    assert_eq!(
        config.source().virtual_services[0].extra_ports,
        [
            ExtraPortFile::Same(18080),
            ExtraPortFile::Mapped(PortMapFile {
                port: 18081,
                member_port: Some(8080)
            }),
            ExtraPortFile::Mapped(PortMapFile {
                port: 18082,
                member_port: None
            }),
        ]
    );
    // Nothing new is written for a service that sets none of it.
    let plain = to_toml(&defaults);
    assert!(
        !plain.contains("member_port") && !plain.contains("send_proxy"),
        "{plain}"
    );
}

#[test]
fn json_form_mirrors_toml_and_round_trips() {
    let text = with_service_ports(
        "port = 14443\nmember_port = 4443\n\
         extra_ports = [18080, { port = 18081, member_port = 8080 }]\nsend_proxy = \"v2\"",
    );
    let config = from_toml(&text, "f").unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_value(config.source()).expect("JSON");
    let service = &json["virtual_service"][0];
    assert_eq!(service["member_port"], 4443);
    assert_eq!(
        service["extra_ports"],
        serde_json::json!([18080, {"port": 18081, "member_port": 8080}])
    );
    assert_eq!(service["send_proxy"], "v2");
    let body = serde_json::to_vec(&json).expect("bytes");
    let again = from_json(&body, "upload").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, config);

    // A bad value inside a mapped port names the inner field.
    let mut bad = json.clone();
    bad["virtual_service"][0]["extra_ports"][1]["member_port"] = serde_json::json!(70000);
    let error = from_json(&serde_json::to_vec(&bad).expect("bytes"), "upload")
        .expect_err("member port out of range");
    assert_eq!(
        problem_fields(&error),
        ["virtual_service[0].extra_ports[1].member_port"],
        "{error}"
    );
    let mut bad = json.clone();
    bad["virtual_service"][0]["extra_ports"][1]["target"] = serde_json::json!(1);
    let error =
        from_json(&serde_json::to_vec(&bad).expect("bytes"), "upload").expect_err("unknown key");
    assert!(error.to_string().contains("target"), "{error}");
    let mut bad = json;
    bad["virtual_service"][0]["send_proxy"] = serde_json::json!("v1");
    let error =
        from_json(&serde_json::to_vec(&bad).expect("bytes"), "upload").expect_err("send_proxy");
    assert_eq!(
        problem_fields(&error),
        ["virtual_service[0].send_proxy"],
        "{error}"
    );
}

#[test]
fn port_mapping_errors_name_their_field() {
    let cases: &[(&str, &str)] = &[
        (
            "port = 14443\nmember_port = 0",
            "virtual_service[0].member_port",
        ),
        (
            "port = 14443\nextra_ports = [{ port = 18080, member_port = 0 }]",
            "virtual_service[0].extra_ports[0].member_port",
        ),
        (
            "port = 14443\nextra_ports = [{ port = 0, member_port = 8080 }]",
            "virtual_service[0].extra_ports[0].port",
        ),
        (
            "port = 14443\nextra_ports = [18080, { port = 14443, member_port = 8080 }]",
            "virtual_service[0].extra_ports[1].port",
        ),
        (
            "port = 14443\nextra_ports = [{ port = 18080, member_port = 8080 }, 18080]",
            "virtual_service[0].extra_ports[1]",
        ),
        (
            "port = 14443\nextra_ports = [{ port = 18080, member_port = 65536 }]",
            "virtual_service[0].extra_ports[0].member_port",
        ),
        (
            "port = 14443\nextra_ports = [70000]",
            "virtual_service[0].extra_ports[0]",
        ),
        (
            "port = 14443\nextra_ports = [{ member_port = 8080 }]",
            "virtual_service[0].extra_ports[0]",
        ),
        (
            "port = 14443\nsend_proxy = \"v1\"",
            "virtual_service[0].send_proxy",
        ),
    ];
    for (ports, field) in cases {
        let error = from_toml(&with_service_ports(ports), "f").expect_err(ports);
        let fields = problem_fields(&error);
        assert_eq!(fields, [*field], "{ports}: {error}");
        assert!(error.problems()[0].line > 0, "{ports}: {error}");
    }
    // Two services may listen on different addresses with the same member
    // port; one address cannot take a port twice across services.
    let error = from_toml(
        &with_service_ports("port = 14443\nextra_ports = [{ port = 8443, member_port = 4443 }]"),
        "f",
    )
    .expect_err("clash with the admin listener");
    assert!(
        problem_fields(&error).contains(&"virtual_service[0].extra_ports[0].port".to_owned()),
        "{error}"
    );
}

#[test]
fn diff_sees_member_port_and_send_proxy_as_a_service_change() {
    let old = from_toml(&example_text(), "f").expect("valid");
    for ports in [
        "port = 14443\nmember_port = 4443\nextra_ports = [18080]",
        "port = 14443\nextra_ports = [{ port = 18080, member_port = 8080 }]",
        "port = 14443\nextra_ports = [18080]\nsend_proxy = \"v2\"",
    ] {
        let new = from_toml(&with_service_ports(ports), "f").unwrap_or_else(|e| panic!("{e}"));
        let change = diff(Some(&old), &new);
        assert_eq!(
            change.services_changed.iter().collect::<Vec<_>>(),
            ["web-internal"],
            "{ports}"
        );
        assert!(
            !change.listeners_changed && !change.settings_changed,
            "{ports}"
        );
    }
    // The same mapping written the other way is the same service.
    let same = from_toml(
        &with_service_ports(
            "port = 14443\nextra_ports = [{ port = 18080 }]\nsend_proxy = \"none\"",
        ),
        "f",
    )
    .expect("valid");
    assert!(diff(Some(&old), &same).services_changed.is_empty());
}

#[test]
fn a_dual_stack_member_names_one_address_per_family() {
    let dual = example_text().replacen(
        "address = \"127.0.0.12\"",
        "addresses = [\"127.0.0.12\", \"::1\"]",
        1,
    );
    let config = from_toml(&dual, "dual.toml").expect("valid");
    let member = &config.pool("pool01").expect("pool").members[1];
    assert_eq!(
        member.addresses,
        vec![
            "127.0.0.12".parse::<std::net::IpAddr>().expect("ip"),
            "::1".parse().expect("ip")
        ]
    );
    assert_eq!(
        from_toml(&to_toml(&config), "again").expect("round trip"),
        config
    );

    for (what, addresses, field, says) in [
        (
            "both keys",
            "address = \"127.0.0.12\"\naddresses = [\"::1\"]",
            "pool[0].member[1].addresses",
            "not both",
        ),
        (
            "two IPv4",
            "addresses = [\"127.0.0.12\", \"127.0.0.22\"]",
            "pool[0].member[1].addresses[1]",
            "second IPv4",
        ),
        (
            "three",
            "addresses = [\"127.0.0.12\", \"::1\", \"::2\"]",
            "pool[0].member[1].addresses",
            "at most",
        ),
        (
            "not an address",
            "addresses = [\"127.0.0.12\", \"fe02\"]",
            "pool[0].member[1].addresses[1]",
            "not an IP address",
        ),
        (
            "another member's",
            "addresses = [\"::1\", \"127.0.0.11\"]",
            "pool[0].member[1].addresses[1]",
            "already member \"fe01\"'s",
        ),
        ("none", "", "pool[0].member[1].address", "missing"),
    ] {
        let text = example_text().replacen("address = \"127.0.0.12\"", addresses, 1);
        let error = from_toml(&text, "f").expect_err(what);
        assert!(
            error
                .problems()
                .iter()
                .any(|p| p.field.as_deref() == Some(field) && p.message.contains(says)),
            "{what}: {error}"
        );
    }
}
