use super::model::*;
use super::render::render;
use super::validate::{Problem, validate};

fn settings(json: serde_json::Value) -> NetworkSettings {
    serde_json::from_value(json).expect("settings parse")
}

fn problems(json: serde_json::Value) -> Vec<Problem> {
    validate(&settings(json), |zone| zone == "Europe/Berlin").expect_err("invalid")
}

fn fields(json: serde_json::Value) -> Vec<String> {
    problems(json).into_iter().map(|p| p.field).collect()
}

fn appliance() -> serde_json::Value {
    serde_json::json!({
        "hostname": "lb01.contoso.com",
        "interfaces": [
            {"name": "eth0", "dhcp4": true},
            {"name": "eth1", "addresses": ["198.51.100.10/24", "2001:db8:100::10/64"], "mtu": 9000,
             "vlans": [{"id": 100, "addresses": ["203.0.113.10/24"], "slaac": false}]}
        ],
        "gateway4": "198.51.100.1",
        "gateway6": "2001:db8:100::1",
        "routes": [{"destination": "10.0.0.0/8", "via": "203.0.113.1"}],
        "dns_servers": ["198.51.100.53"],
        "search_domains": ["contoso.com"],
        "ntp_servers": ["198.51.100.1", "ntp.contoso.com"],
        "timezone": "Europe/Berlin"
    })
}

#[test]
fn renders_networkd_files_and_chrony_sources() {
    let plan = validate(&settings(appliance()), |zone| zone == "Europe/Berlin").expect("valid");
    let rendered = render(&plan);
    let names: Vec<&str> = rendered.networkd.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "20-poolgate-eth0.network",
            "20-poolgate-eth1.100.netdev",
            "20-poolgate-eth1.100.network",
            "20-poolgate-eth1.network"
        ]
    );
    let file = |name: &str| {
        &rendered
            .networkd
            .iter()
            .find(|(n, _)| n == name)
            .expect(name)
            .1
    };
    let eth1 = file("20-poolgate-eth1.network");
    for line in [
        "Name=eth1",
        "MTUBytes=9000",
        "DHCP=no",
        "VLAN=eth1.100",
        "Address=198.51.100.10/24",
        "Address=2001:db8:100::10/64\nDuplicateAddressDetection=none",
        "Gateway=198.51.100.1",
        "Gateway=2001:db8:100::1",
        "DNS=198.51.100.53",
        "Domains=contoso.com",
    ] {
        assert!(eth1.contains(line), "{line} in\n{eth1}");
    }
    assert!(
        !eth1.contains("Destination=10.0.0.0/8"),
        "the route goes via the VLAN"
    );
    let vlan = file("20-poolgate-eth1.100.network");
    assert!(
        vlan.contains("Destination=10.0.0.0/8\nGateway=203.0.113.1"),
        "{vlan}"
    );
    assert!(vlan.contains("IPv6AcceptRA=no"), "{vlan}");
    assert!(file("20-poolgate-eth1.100.netdev").contains("Kind=vlan\n\n[VLAN]\nId=100"));
    assert!(file("20-poolgate-eth0.network").contains("DHCP=ipv4"));
    assert!(
        rendered
            .chrony_sources
            .contains("server 198.51.100.1 iburst\nserver ntp.contoso.com iburst\n")
    );
    assert_eq!(rendered.hostname.as_deref(), Some("lb01.contoso.com"));
    assert_eq!(rendered.timezone.as_deref(), Some("Europe/Berlin"));
}

#[test]
fn an_interface_matched_by_mac_gets_a_file_and_vlan_of_its_own() {
    let plan = validate(
        &settings(serde_json::json!({"interfaces": [
            {"mac": "52:54:00:AB:CD:EF", "addresses": ["192.0.2.10/24"], "vlans": [{"id": 7}]}
        ]})),
        |_| false,
    )
    .expect("valid");
    let rendered = render(&plan);
    let (name, text) = &rendered.networkd[0];
    assert_eq!(name, "20-poolgate-mac-525400abcdef.network");
    assert!(
        text.contains("PermanentMACAddress=52:54:00:ab:cd:ef\nType=ether"),
        "{text}"
    );
    assert!(text.contains("VLAN=vlan7"), "{text}");
}

#[test]
fn every_bad_input_names_its_field() {
    let with = |patch: serde_json::Value| {
        let mut base = appliance();
        for (key, value) in patch.as_object().expect("object") {
            base[key] = value.clone();
        }
        fields(base)
    };
    // Overlapping subnets on two links.
    assert_eq!(
        with(serde_json::json!({"interfaces": [
            {"name": "eth0", "addresses": ["198.51.100.10/24"]},
            {"name": "eth1", "addresses": ["198.51.100.11/25"]}
        ], "routes": [], "gateway6": null})),
        ["interfaces[1].addresses[0]"]
    );
    // A gateway outside every subnet.
    assert_eq!(
        with(serde_json::json!({"gateway4": "192.0.2.1"})),
        ["gateway4"]
    );
    // A route through a gateway nowhere.
    assert_eq!(
        with(serde_json::json!({"routes": [{"destination": "10.0.0.0/8", "via": "192.0.2.1"}]})),
        ["routes[0].via"]
    );
    // A duplicate address.
    let duplicate = problems(serde_json::json!({"interfaces": [
        {"name": "eth1", "addresses": ["198.51.100.10/24", "198.51.100.10/24"]}
    ]}));
    assert_eq!(duplicate[0].field, "interfaces[0].addresses[1]");
    assert!(
        duplicate[0]
            .message
            .contains("already at interfaces[0].addresses[0]"),
        "{duplicate:?}"
    );
    // VLAN ids and MTUs out of range.
    assert_eq!(
        fields(
            serde_json::json!({"interfaces": [{"name": "eth1", "mtu": 70000,
            "vlans": [{"id": 0}, {"id": 4095}, {"id": 5, "mtu": 1000}]}]})
        ),
        [
            "interfaces[0].vlans[0].id",
            "interfaces[0].vlans[1].id",
            "interfaces[0].mtu",
            "interfaces[0].vlans[2].mtu"
        ]
    );
    // Names, MACs, host names, zones, the network's own address.
    assert_eq!(
        fields(serde_json::json!({
            "hostname": "-lb",
            "interfaces": [{"name": "a/b"}, {"mac": "52:54:00"}, {}, {"name": "eth9", "addresses": ["198.51.100.0/24"]}],
            "search_domains": ["bad domain"],
            "ntp_servers": ["ntp..contoso.com"],
            "timezone": "../../etc/passwd"
        })),
        [
            "hostname",
            "interfaces[0].name",
            "interfaces[1].mac",
            "interfaces[2]",
            "interfaces[3].addresses[0]",
            "search_domains[0]",
            "ntp_servers[0]",
            "timezone"
        ]
    );
    assert_eq!(
        fields(serde_json::json!({"timezone": "Mars/Olympus"})),
        ["timezone"]
    );
}

#[test]
fn unknown_fields_are_refused() {
    let error = serde_json::from_value::<NetworkSettings>(serde_json::json!({
        "interfaces": [{"name": "eth0", "dhcp": true}]
    }))
    .expect_err("unknown field");
    assert!(
        error.to_string().contains("unknown field `dhcp`"),
        "{error}"
    );
}

#[test]
fn changes_name_what_differs() {
    let old = NetworkSettings::default();
    let new = settings(serde_json::json!({"hostname": "lb01", "ntp_servers": ["192.0.2.1"]}));
    assert_eq!(
        super::changes(&old, &new),
        [
            "hostname: \"lb01\" (was none)",
            "ntp_servers: [\"192.0.2.1\"] (was [])"
        ]
    );
}
