use std::net::IpAddr;

use super::render::{Paths, Vips, render, render_nft};
use super::settings::{AdvertInterval, VrrpSettings, validate};

fn settings() -> VrrpSettings {
    VrrpSettings {
        interface: "eth0".to_owned(),
        source_v4: Some("198.51.100.11".parse().expect("ip")),
        peer_v4: Some("198.51.100.12".parse().expect("ip")),
        source_v6: None,
        peer_v6: None,
        virtual_router_id: 51,
        priority: 150,
        advert_interval_s: AdvertInterval(100),
        preempt: false,
        management_address: None,
    }
}

fn paths() -> Paths {
    Paths {
        health_file: "/var/lib/poolgate/vrrp-health".into(),
        notify_fifo: "/var/lib/poolgate/vrrp-notify.fifo".into(),
        poolgate: "/usr/bin/poolgate".into(),
        script_user: "poolgate".to_owned(),
    }
}

fn vips(list: &[(&str, &str)]) -> Vips {
    list.iter()
        .map(|(ip, interface)| {
            (
                ip.parse::<IpAddr>().expect("ip"),
                ((*interface).to_owned(), format!("virtual service {ip}")),
            )
        })
        .collect()
}

fn fields(settings: &VrrpSettings) -> Vec<String> {
    validate(settings).into_iter().map(|p| p.field).collect()
}

const GOLDEN_V4: &str = r#"# Written by poolgate from its VRRP settings and the VIPs of its config.
# Changes made here are overwritten.

global_defs {
    vrrp_version 3
    vrrp_notify_fifo /var/lib/poolgate/vrrp-notify.fifo
    script_user poolgate
    enable_script_security
    vrrp_rt_priority 20
    vrrp_rlimit_rttime 200000
}

vrrp_script poolgate_serving {
    script "/usr/bin/poolgate vrrp-check /var/lib/poolgate/vrrp-health"
    interval 1
    timeout 1
    fall 1
    rise 2
    init_fail
}

vrrp_sync_group poolgate {
    group {
        poolgate_v4
    }
    track_script {
        poolgate_serving
    }
}

vrrp_instance poolgate_v4 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    nopreempt
    unicast_src_ip 198.51.100.11
    unicast_peer {
        198.51.100.12
    }
    check_unicast_src
    garp_master_delay 1
    garp_master_repeat 3
    garp_master_refresh 60
    virtual_ipaddress {
        198.51.100.20/32 dev eth0
        198.51.100.21/32 dev eth1
    }
}
"#;

#[test]
fn ipv4_pair_renders_golden_text() {
    let text = render(
        &settings(),
        &vips(&[("198.51.100.21", "eth1"), ("198.51.100.20", "eth0")]),
        &paths(),
    )
    .expect("renders");
    assert_eq!(text, GOLDEN_V4);
}

#[test]
fn both_families_are_two_instances_in_one_sync_group() {
    let mut s = settings();
    s.source_v6 = Some("2001:db8:100::11".parse().expect("ip"));
    s.peer_v6 = Some("2001:db8:100::12".parse().expect("ip"));
    s.preempt = true;
    s.management_address = Some("198.51.100.5".parse().expect("ip"));
    let text = render(
        &s,
        &vips(&[("198.51.100.20", "eth0"), ("2001:db8:100::20", "eth0")]),
        &paths(),
    )
    .expect("renders");
    assert!(text.contains("    group {\n        poolgate_v4\n        poolgate_v6\n    }\n"));
    let v6 = &text[text.find("vrrp_instance poolgate_v6").expect("v6 instance")..];
    assert!(v6.contains("    unicast_src_ip 2001:db8:100::11\n"));
    assert!(v6.contains("        2001:db8:100::12\n"));
    assert!(v6.contains("        2001:db8:100::20/128 dev eth0\n"));
    assert!(!v6.contains("198.51.100"), "{v6}");
    let v4 = &text[text.find("vrrp_instance poolgate_v4").expect("v4")
        ..text.find("vrrp_instance poolgate_v6").expect("v6")];
    assert!(
        v4.contains("        198.51.100.5/32 dev eth0\n"),
        "management address: {v4}"
    );
    assert!(!text.contains("nopreempt"));
}

#[test]
fn a_vip_of_a_family_without_source_and_peer_is_a_problem_naming_the_field() {
    let problems = render(
        &settings(),
        &vips(&[("2001:db8:100::20", "eth0")]),
        &paths(),
    )
    .expect_err("no IPv6 pair");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "source_v6");
    assert!(
        problems[0].message.contains("2001:db8:100::20"),
        "{}",
        problems[0].message
    );
}

#[test]
fn valid_settings_have_no_problems() {
    assert!(validate(&settings()).is_empty());
}

#[test]
fn every_bad_field_is_named() {
    let mut s = settings();
    s.interface = "eth 0".to_owned();
    s.virtual_router_id = 0;
    s.priority = 255;
    s.advert_interval_s = AdvertInterval(5);
    assert_eq!(
        fields(&s),
        [
            "interface",
            "virtual_router_id",
            "priority",
            "advert_interval_s"
        ]
    );

    let mut s = settings();
    s.peer_v4 = None;
    assert_eq!(fields(&s), ["peer_v4"]);

    let mut s = settings();
    s.source_v4 = None;
    s.peer_v4 = None;
    assert_eq!(fields(&s), ["source_v4"], "no pair at all");

    let mut s = settings();
    s.peer_v4 = s.source_v4;
    assert_eq!(fields(&s), ["peer_v4"], "peer is this appliance");

    let mut s = settings();
    s.peer_v4 = Some("224.0.0.18".parse().expect("ip"));
    assert_eq!(fields(&s), ["peer_v4"], "multicast peer");

    let mut s = settings();
    s.management_address = Some("2001:db8::5".parse().expect("ip"));
    assert_eq!(fields(&s), ["management_address"], "no IPv6 pair for it");

    let mut s = settings();
    s.management_address = s.source_v4.map(IpAddr::V4);
    assert_eq!(fields(&s), ["management_address"], "an appliance's own");

    let mut s = settings();
    s.advert_interval_s = AdvertInterval(1001);
    assert_eq!(fields(&s), ["advert_interval_s"]);
}

#[test]
fn unknown_fields_and_wrong_types_are_refused_when_parsed() {
    let parsed: Result<VrrpSettings, _> = serde_json::from_str(
        r#"{"interface":"eth0","source_v4":"198.51.100.11","peer_v4":"198.51.100.12","virtual_router_id":51,"priority":100,"auth_pass":"x"}"#,
    );
    assert!(parsed.is_err());
    let parsed: VrrpSettings = serde_json::from_str(
        r#"{"interface":"eth0","source_v4":"198.51.100.11","peer_v4":"198.51.100.12","virtual_router_id":51,"priority":100}"#,
    )
    .expect("defaults");
    assert_eq!(parsed.advert_interval_s, AdvertInterval(50));
    assert!(!parsed.preempt);
}

#[test]
fn the_advert_interval_is_seconds_in_centisecond_steps() {
    let with = |value: &str| {
        serde_json::from_str::<VrrpSettings>(&format!(
            r#"{{"interface":"eth0","source_v4":"198.51.100.11","peer_v4":"198.51.100.12","virtual_router_id":51,"priority":100,"advert_interval_s":{value}}}"#
        ))
    };
    for (json, cs, text) in [
        ("1", 100, "1"),
        ("0.5", 50, "0.5"),
        ("0.25", 25, "0.25"),
        ("2.1", 210, "2.1"),
    ] {
        let parsed = with(json).expect(json);
        assert_eq!(parsed.advert_interval_s, AdvertInterval(cs), "{json}");
        assert_eq!(parsed.advert_interval_s.keepalived(), text);
        let back = serde_json::to_value(&parsed).expect("serialise");
        assert_eq!(back["advert_interval_s"].to_string(), json, "round trip");
    }
    for json in ["0.005", "-1", "\"1\"", "1e9"] {
        assert!(with(json).is_err(), "{json}");
    }
    let mut s = settings();
    s.advert_interval_s = AdvertInterval(10);
    assert!(validate(&s).is_empty(), "0.1 s is allowed");
}

#[test]
fn paths_keepalived_cannot_quote_are_refused() {
    assert!(paths().check().is_ok());
    let mut p = paths();
    p.health_file = "/var/lib/pool gate/vrrp-health".into();
    assert!(p.check().is_err());
    let mut p = paths();
    p.poolgate = "poolgate".into();
    assert!(p.check().is_err(), "relative");
}

#[test]
fn nft_admits_vrrp_from_the_peer_only() {
    let mut s = settings();
    s.peer_v6 = Some("2001:db8:100::12".parse().expect("ip"));
    s.source_v6 = Some("2001:db8:100::11".parse().expect("ip"));
    let text = render_nft(&s);
    assert!(text.contains("meta l4proto 112 ip saddr 198.51.100.12 accept\n"));
    assert!(text.contains("meta l4proto 112 ip6 saddr 2001:db8:100::12 accept\n"));
    assert!(
        text.trim_end()
            .ends_with("meta l4proto 112 counter drop\n    }\n}")
    );
    assert!(
        text.contains("table inet poolgate_vrrp {}\ndelete table inet poolgate_vrrp\n"),
        "idempotent"
    );
}
