use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::answer::{self, Answer};
use super::wire::{self, Outcome, Silence, Transport};
use super::*;
use crate::config::{self, AdminState};
use crate::events::{EventKind, EventLog};
use crate::state::{self as st, Health, HealthStatus, Inputs, PoolView, Update};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A zone with every static record type, a pool of `members` members (each
/// with an FQDN, 127.0.0.11 upwards) and an alias.
fn config_text(members: usize, fail_open: bool) -> String {
    let mut text = format!(
        r#"
[listen]
admin = "127.0.0.1:0"
dns = ["127.0.0.1:0"]

[dns]
ttl = 30
fail_open = {fail_open}

[[zone]]
name = "contoso.test"
ttl = 3600

[[zone.record]]
name = "_sipinternaltls._tcp"
type = "SRV"
value = "0 0 5061 pool01.contoso.test."

[[zone.record]]
name = "meet"
type = "CNAME"
value = "webint.contoso.test."

[[zone.record]]
name = "webint"
type = "A"
value = "127.0.0.20"
ttl = 600

[[zone.record]]
name = "webint"
type = "AAAA"
value = "::20"

[[zone.record]]
name = "info"
type = "TXT"
value = "v=poolgate"

[[zone.record]]
name = "elsewhere"
type = "CNAME"
value = "www.example.org."

[[monitor]]
name = "fe-sip"
type = "tcp"
port = 5061

[[pool]]
name = "pool01"
fqdn = "pool01.contoso.test"
aliases = ["sip.contoso.test"]
monitor = "fe-sip"
registrar_port = 5061
registrar_transport = "tls"
"#
    );
    for m in 0..members {
        text.push_str(&format!(
            "\n[[pool.member]]\nname = \"fe{m:02}\"\nfqdn = \"fe{m:02}.contoso.test\"\naddress = \"127.0.0.{}\"\n",
            11 + m
        ));
    }
    text
}

fn config(members: usize, fail_open: bool) -> config::Config {
    config::from_toml(&config_text(members, fail_open), "test.toml")
        .unwrap_or_else(|error| panic!("{error}"))
}

fn member_key(m: usize) -> (String, String) {
    ("pool01".into(), format!("fe{m:02}"))
}

fn health(up: bool) -> HealthStatus {
    HealthStatus {
        state: if up { Health::Up } else { Health::Down },
        reason: None,
        since: None,
    }
}

/// A view with the given admin states and pool-monitor health per member.
fn view_with(states: &[(AdminState, bool)], fail_open: bool) -> PoolView {
    let mut inputs = Inputs::new(
        Arc::new(config(states.len(), fail_open)),
        5,
        BTreeMap::new(),
    );
    for (m, (state, up)) in states.iter().enumerate() {
        inputs.apply(Update::AdminState {
            member: member_key(m),
            state: *state,
        });
        inputs.apply(Update::Health {
            member: member_key(m),
            address: member_ip(m),
            monitor: "fe-sip".into(),
            status: health(*up),
        });
    }
    PoolView::build(&inputs, 1)
}

fn view(members: usize) -> PoolView {
    view_with(&vec![(AdminState::Enabled, true); members], true)
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("name")
}

fn ask(view: &PoolView, qname: &str, qtype: RecordType) -> Answer {
    answer::answer(view, &name(qname), qtype, &mut StdRng::seed_from_u64(1))
}

fn addresses(records: &[Record]) -> BTreeSet<IpAddr> {
    records
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

fn member_ip(m: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11 + m as u8))
}

fn assert_soa_authority(answer: &Answer) {
    assert!(answer.answers.is_empty(), "{answer:?}");
    assert_eq!(answer.authorities.len(), 1, "{answer:?}");
    let soa = &answer.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    // Negative TTL: min(zone ttl 3600, SOA minimum = dns.ttl 30).
    assert_eq!(soa.ttl, 30);
}

#[test]
fn pool_fqdn_and_alias_answer_every_eligible_member() {
    let view = view(3);
    for qname in ["pool01.contoso.test.", "SIP.Contoso.Test."] {
        let answer = ask(&view, qname, RecordType::A);
        assert_eq!(answer.rcode, ResponseCode::NoError);
        assert!(answer.authoritative);
        assert_eq!(
            addresses(&answer.answers),
            (0..3).map(member_ip).collect::<BTreeSet<_>>()
        );
        assert!(answer.answers.iter().all(|record| record.ttl == 30));
    }
}

#[test]
fn draining_and_disabled_members_leave_the_pool_answer_but_draining_keeps_its_name() {
    let view = view_with(
        &[
            (AdminState::Enabled, true),
            (AdminState::Draining, true),
            (AdminState::Disabled, true),
            (AdminState::Enabled, false),
        ],
        true,
    );
    let pool = ask(&view, "pool01.contoso.test.", RecordType::A);
    assert_eq!(addresses(&pool.answers), BTreeSet::from([member_ip(0)]));

    let draining = ask(&view, "fe01.contoso.test.", RecordType::A);
    assert_eq!(draining.rcode, ResponseCode::NoError);
    assert_eq!(addresses(&draining.answers), BTreeSet::from([member_ip(1)]));

    let disabled = ask(&view, "fe02.contoso.test.", RecordType::A);
    assert_eq!(disabled.rcode, ResponseCode::NXDomain);
    assert_soa_authority(&disabled);

    // A member that is down keeps its own name: health filters pool answers only.
    let down = ask(&view, "fe03.contoso.test.", RecordType::A);
    assert_eq!(addresses(&down.answers), BTreeSet::from([member_ip(3)]));
}

#[test]
fn fail_open_answers_every_enabled_member_and_is_one_episode() {
    let states = [
        (AdminState::Enabled, false),
        (AdminState::Enabled, false),
        (AdminState::Draining, false),
    ];
    let view = view_with(&states, true);
    let answer = ask(&view, "pool01.contoso.test.", RecordType::A);
    assert_eq!(
        addresses(&answer.answers),
        BTreeSet::from([member_ip(0), member_ip(1)])
    );
    let (now, changes) = fail_open::transitions(&BTreeSet::new(), &view);
    assert_eq!(
        changes,
        vec![fail_open::Transition {
            pool: "pool01".into(),
            failed_open: true
        }]
    );
    // The same state again is the same episode: nothing new to record.
    let (now, changes) = fail_open::transitions(&now, &view);
    assert!(changes.is_empty());
    let healthy = view_with(&[(AdminState::Enabled, true)], true);
    let (_, changes) = fail_open::transitions(&now, &healthy);
    assert_eq!(
        changes,
        vec![fail_open::Transition {
            pool: "pool01".into(),
            failed_open: false
        }]
    );

    // Without fail_open the pool name exists with no data: NODATA.
    let closed = view_with(&states, false);
    let answer = ask(&closed, "pool01.contoso.test.", RecordType::A);
    assert_eq!(answer.rcode, ResponseCode::NoError);
    assert_soa_authority(&answer);
}

#[test]
fn answers_are_shuffled_per_response() {
    let view = view(6);
    let mut rng = StdRng::seed_from_u64(7);
    let orders: BTreeSet<Vec<IpAddr>> = (0..40)
        .map(|_| {
            answer::answer(
                &view,
                &name("pool01.contoso.test."),
                RecordType::A,
                &mut rng,
            )
            .answers
            .iter()
            .filter_map(|record| record.data.ip_addr())
            .collect()
        })
        .collect();
    assert!(orders.len() > 10, "only {} orders", orders.len());
}

#[test]
fn static_records_carry_their_own_ttl() {
    let view = view(1);
    let srv = ask(&view, "_sipinternaltls._tcp.contoso.test.", RecordType::SRV);
    assert_eq!(srv.answers.len(), 1);
    assert_eq!(srv.answers[0].ttl, 3600);
    match &srv.answers[0].data {
        RData::SRV(srv) => {
            assert_eq!(srv.port, 5061);
            assert_eq!(srv.target, name("pool01.contoso.test."));
        }
        other => panic!("{other:?}"),
    }
    let txt = ask(&view, "info.contoso.test.", RecordType::TXT);
    assert_eq!(txt.answers.len(), 1);
    assert_eq!(txt.answers[0].data.to_string(), "v=poolgate");

    let webint = ask(&view, "webint.contoso.test.", RecordType::A);
    assert_eq!(webint.answers[0].ttl, 600);
    let webint6 = ask(&view, "webint.contoso.test.", RecordType::AAAA);
    assert_eq!(webint6.answers.len(), 1);
    assert_eq!(webint6.answers[0].ttl, 3600);
}

#[test]
fn cname_is_followed_inside_our_zones_only() {
    let view = view(1);
    let meet = ask(&view, "meet.contoso.test.", RecordType::A);
    assert_eq!(meet.rcode, ResponseCode::NoError);
    let types: Vec<RecordType> = meet.answers.iter().map(Record::record_type).collect();
    assert_eq!(types, vec![RecordType::CNAME, RecordType::A]);

    let cname = ask(&view, "meet.contoso.test.", RecordType::CNAME);
    assert_eq!(cname.answers.len(), 1);

    let elsewhere = ask(&view, "elsewhere.contoso.test.", RecordType::A);
    assert_eq!(elsewhere.answers.len(), 1);
    assert_eq!(elsewhere.answers[0].record_type(), RecordType::CNAME);
}

#[test]
fn nxdomain_nodata_and_refused() {
    let view = view(2);
    let nx = ask(&view, "nope.contoso.test.", RecordType::A);
    assert_eq!(nx.rcode, ResponseCode::NXDomain);
    assert!(nx.authoritative);
    assert_soa_authority(&nx);

    let nodata = ask(&view, "pool01.contoso.test.", RecordType::TXT);
    assert_eq!(nodata.rcode, ResponseCode::NoError);
    assert_soa_authority(&nodata);

    // An empty non-terminal exists.
    let ent = ask(&view, "_tcp.contoso.test.", RecordType::SRV);
    assert_eq!(ent.rcode, ResponseCode::NoError);
    assert_soa_authority(&ent);

    for outside in ["www.example.org.", "test.", ".", "xcontoso.test."] {
        let refused = ask(&view, outside, RecordType::A);
        assert_eq!(refused.rcode, ResponseCode::Refused, "{outside}");
        assert!(!refused.authoritative);
        assert!(refused.answers.is_empty() && refused.authorities.is_empty());
    }
}

#[test]
fn apex_has_synthesised_soa_and_ns() {
    let view = view(1);
    let soa = ask(&view, "contoso.test.", RecordType::SOA);
    assert_eq!(soa.answers.len(), 1);
    match &soa.answers[0].data {
        RData::SOA(soa) => {
            // No name servers named: `ns.<zone>` at the DNS listener's address.
            assert_eq!(soa.mname, name("ns.contoso.test."));
            assert_eq!(soa.rname, name("hostmaster.contoso.test."));
            assert_eq!(soa.serial, 5, "serial is the config version");
            assert_eq!(soa.minimum, 30);
        }
        other => panic!("{other:?}"),
    }
    let ns = ask(&view, "contoso.test.", RecordType::NS);
    assert_eq!(ns.answers.len(), 1);
    assert_eq!(
        ns.answers[0].data,
        RData::NS(hickory_proto::rr::rdata::NS(name("ns.contoso.test.")))
    );
    assert_eq!(
        addresses(&ns.additionals),
        BTreeSet::from([ip("127.0.0.1")])
    );
    let address = ask(&view, "ns.contoso.test.", RecordType::A);
    assert_eq!(
        addresses(&address.answers),
        BTreeSet::from([ip("127.0.0.1")])
    );
    let nodata = ask(&view, "contoso.test.", RecordType::A);
    assert_eq!(nodata.rcode, ResponseCode::NoError);
    assert_soa_authority(&nodata);
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

/// A delegated zone that names its name servers (one in the zone, with
/// both address families, one outside it) and its negative TTL.
fn delegated_view() -> PoolView {
    let text = config_text(2, true).replacen(
        "[[zone]]\nname = \"contoso.test\"\nttl = 3600\n",
        r#"[[zone]]
name = "contoso.test"
ttl = 3600
negative_ttl = 120
name_servers = [
    { name = "ns1.contoso.test.", addresses = ["127.0.0.2", "::2"] },
    { name = "ns.example.org" },
]
"#,
        1,
    );
    let config = config::from_toml(&text, "test.toml").unwrap_or_else(|error| panic!("{error}"));
    PoolView::build(&Inputs::new(Arc::new(config), 5, BTreeMap::new()), 1)
}

#[test]
fn named_name_servers_give_ns_soa_glue_and_their_addresses() {
    let view = delegated_view();
    let ns = ask(&view, "contoso.test.", RecordType::NS);
    let targets: BTreeSet<String> = ns
        .answers
        .iter()
        .map(|record| record.data.to_string())
        .collect();
    assert_eq!(
        targets,
        BTreeSet::from(["ns.example.org.".to_owned(), "ns1.contoso.test.".to_owned()])
    );
    // Glue only for the in-zone one, both families.
    assert_eq!(
        addresses(&ns.additionals),
        BTreeSet::from([ip("127.0.0.2"), ip("::2")])
    );
    assert!(
        ns.additionals
            .iter()
            .all(|record| record.name == name("ns1.contoso.test."))
    );
    let a = ask(&view, "NS1.contoso.test.", RecordType::A);
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert_eq!(addresses(&a.answers), BTreeSet::from([ip("127.0.0.2")]));
    let aaaa = ask(&view, "ns1.contoso.test.", RecordType::AAAA);
    assert_eq!(addresses(&aaaa.answers), BTreeSet::from([ip("::2")]));
    let txt = ask(&view, "ns1.contoso.test.", RecordType::TXT);
    assert_eq!(txt.rcode, ResponseCode::NoError, "the name exists: NODATA");
    assert!(txt.answers.is_empty());

    let soa = ask(&view, "contoso.test.", RecordType::SOA);
    match &soa.answers[0].data {
        RData::SOA(soa) => {
            assert_eq!(soa.mname, name("ns1.contoso.test."), "the first named");
            assert_eq!(soa.minimum, 120, "the zone's negative TTL");
        }
        other => panic!("{other:?}"),
    }
    let nx = ask(&view, "nope.contoso.test.", RecordType::A);
    assert_eq!(nx.rcode, ResponseCode::NXDomain);
    assert_eq!(
        nx.authorities[0].ttl, 120,
        "negative answers last negative_ttl"
    );
    // Other answers carry no glue.
    assert!(
        ask(&view, "pool01.contoso.test.", RecordType::A)
            .additionals
            .is_empty()
    );
}

#[test]
fn ns_glue_reaches_the_wire() {
    let view = delegated_view();
    let (reply, truncated) = exchange(
        &view,
        &query("contoso.test.", RecordType::NS, None),
        Transport::Udp,
    );
    assert!(!truncated);
    assert_eq!(reply.answers.len(), 2);
    assert_eq!(
        addresses(&reply.additionals),
        BTreeSet::from([ip("127.0.0.2"), ip("::2")])
    );
}

fn arb_state() -> impl Strategy<Value = (AdminState, bool)> {
    (
        prop::sample::select(AdminState::ALL.to_vec()),
        any::<bool>(),
    )
}

proptest! {
    #[test]
    fn pool_answers_hold_only_eligible_or_fail_open_members(
        states in prop::collection::vec(arb_state(), 1..20),
        fail_open in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let view = view_with(&states, fail_open);
        let mut rng = StdRng::seed_from_u64(seed);
        let answer = answer::answer(&view, &name("pool01.contoso.test."), RecordType::A, &mut rng);
        let got = addresses(&answer.answers);
        let eligible: BTreeSet<IpAddr> = states.iter().enumerate()
            .filter(|(_, (state, up))| *state == AdminState::Enabled && *up)
            .map(|(m, _)| member_ip(m)).collect();
        let enabled: BTreeSet<IpAddr> = states.iter().enumerate()
            .filter(|(_, (state, _))| *state == AdminState::Enabled)
            .map(|(m, _)| member_ip(m)).collect();
        let expected = if eligible.is_empty() && fail_open { enabled } else { eligible };
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(answer.answers.len(), expected.len(), "no duplicates");
        for (m, (state, _)) in states.iter().enumerate() {
            if *state != AdminState::Enabled {
                prop_assert!(!got.contains(&member_ip(m)), "draining or disabled member in the answer");
            }
            let own = answer::answer(&view, &name(&format!("fe{m:02}.contoso.test.")), RecordType::A, &mut rng);
            if *state == AdminState::Disabled {
                prop_assert_eq!(own.rcode, ResponseCode::NXDomain);
            } else {
                prop_assert_eq!(addresses(&own.answers), BTreeSet::from([member_ip(m)]));
            }
        }
    }

    #[test]
    fn respond_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        tcp in any::<bool>(),
    ) {
        let view = view(3);
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        if let Outcome::Reply { bytes: reply, .. } = wire::respond(&bytes, &view, transport, &mut StdRng::seed_from_u64(1)) {
            prop_assert!(tcp || reply.len() <= 512 || bytes.len() >= 12);
            let parsed = Message::from_vec(&reply);
            prop_assert!(parsed.is_ok(), "our reply must parse: {:?}", parsed);
        }
    }

    #[test]
    fn respond_survives_mutated_queries(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let view = view(3);
        let mut packet = query("pool01.contoso.test.", RecordType::A, Some(4096)).to_vec().expect("encode");
        for (index, value) in flips {
            let i = index.index(packet.len());
            packet[i] = value;
        }
        let _ = wire::respond(&packet, &view, Transport::Udp, &mut StdRng::seed_from_u64(1));
    }
}

// ---- wire ----

fn query(qname: &str, qtype: RecordType, edns_payload: Option<u16>) -> Message {
    let mut message = Message::new(4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(qname), qtype));
    if let Some(payload) = edns_payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message
}

fn exchange(view: &PoolView, request: &Message, transport: Transport) -> (Message, bool) {
    let bytes = request.to_vec().expect("encode");
    match wire::respond(&bytes, view, transport, &mut StdRng::seed_from_u64(3)) {
        Outcome::Reply {
            bytes, truncated, ..
        } => {
            if transport == Transport::Udp {
                let limit = request
                    .edns
                    .as_ref()
                    .map_or(512, |edns| edns.max_payload().clamp(512, 1232));
                assert!(
                    bytes.len() <= usize::from(limit),
                    "{} > {limit}",
                    bytes.len()
                );
            }
            (Message::from_vec(&bytes).expect("reply parses"), truncated)
        }
        Outcome::Silent(reason) => panic!("no reply: {reason:?}"),
    }
}

#[test]
fn wire_answers_echo_id_question_and_rd() {
    let view = view(3);
    let (reply, truncated) = exchange(
        &view,
        &query("Pool01.contoso.test.", RecordType::A, None),
        Transport::Udp,
    );
    assert!(!truncated);
    assert_eq!(reply.metadata.id, 4242);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert!(reply.metadata.recursion_desired);
    assert!(!reply.metadata.recursion_available);
    assert!(reply.metadata.authoritative);
    assert_eq!(
        reply.queries,
        vec![Query::query(name("Pool01.contoso.test."), RecordType::A)]
    );
    assert_eq!(reply.answers.len(), 3);
    assert!(reply.edns.is_none(), "no OPT to a client that sent none");
}

#[test]
fn large_pool_is_truncated_over_udp_and_complete_over_tcp() {
    let view = view(40);
    let request = query("pool01.contoso.test.", RecordType::A, None);
    let (reply, truncated) = exchange(&view, &request, Transport::Udp);
    assert!(truncated && reply.metadata.truncation);
    assert!(reply.answers.is_empty());
    assert_eq!(reply.queries.len(), 1);

    // 40 A records fit in an EDNS answer of 1232 bytes.
    let (reply, truncated) = exchange(
        &view,
        &query("pool01.contoso.test.", RecordType::A, Some(4096)),
        Transport::Udp,
    );
    assert!(!truncated);
    assert_eq!(reply.answers.len(), 40);
    assert_eq!(reply.edns.as_ref().map(Edns::max_payload), Some(1232));

    // A tiny EDNS size is raised to 512, not obeyed.
    let (reply, truncated) = exchange(
        &view,
        &query("pool01.contoso.test.", RecordType::A, Some(100)),
        Transport::Udp,
    );
    assert!(truncated && reply.metadata.truncation);

    let (reply, truncated) = exchange(&view, &request, Transport::Tcp);
    assert!(!truncated && !reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 40);
}

#[test]
fn edns_version_above_zero_is_badvers() {
    let view = view(1);
    let mut request = query("pool01.contoso.test.", RecordType::A, Some(1232));
    request.edns.as_mut().expect("edns").set_version(1);
    let (reply, _) = exchange(&view, &request, Transport::Udp);
    // BADVERS and BADSIG share code 16; the parser names it BADSIG.
    assert_eq!(u16::from(reply.metadata.response_code), 16);
    assert!(reply.answers.is_empty());
    assert_eq!(reply.edns.as_ref().map(Edns::version), Some(0));
}

#[test]
fn dnssec_ok_is_copied_into_the_reply_on_both_paths() {
    let view = view(3);
    let answers = fast::FastAnswers::build(&view);
    for qname in ["pool01.contoso.test.", "nope.contoso.test."] {
        for dnssec_ok in [false, true] {
            let mut request = query(qname, RecordType::A, Some(1232));
            request
                .edns
                .as_mut()
                .expect("edns")
                .set_dnssec_ok(dnssec_ok);
            let (reply, _) = exchange(&view, &request, Transport::Udp);
            let edns = reply.edns.as_ref().expect("OPT in the reply");
            assert_eq!(edns.flags().dnssec_ok, dnssec_ok, "{qname}");
            let bytes = request.to_vec().expect("encode");
            if let Some(fast) = fast::try_respond(
                &bytes,
                &answers,
                Transport::Udp,
                &mut StdRng::seed_from_u64(1),
            ) {
                let fast = Message::from_vec(&fast).expect("fast reply parses");
                assert_eq!(
                    fast.edns.as_ref().map(|edns| edns.flags().dnssec_ok),
                    Some(dnssec_ok)
                );
            }
        }
    }
}

#[test]
fn zone_transfers_are_refused() {
    let view = view(3);
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let (reply, _) = exchange(&view, &query("contoso.test.", qtype, None), transport);
            assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
            assert!(reply.answers.is_empty() && reply.authorities.is_empty());
        }
    }
}

#[test]
fn a_query_signed_with_an_unknown_tsig_key_is_notauth_badkey_unsigned() {
    use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, TsigError, make_tsig_record};
    let view = view(3);
    for edns in [None, Some(1232)] {
        let mut request = query("pool01.contoso.test.", RecordType::A, edns);
        let signed = make_tsig_record(
            name("unknown."),
            TSIG::new(
                TsigAlgorithm::HmacSha256,
                1_700_000_000,
                300,
                vec![7; 32],
                4242,
                None,
                Vec::new(),
            ),
        );
        request.add_additional(signed.into_record_of_rdata());
        let (reply, _) = exchange(&view, &request, Transport::Udp);
        assert_eq!(reply.metadata.response_code, ResponseCode::NotAuth);
        assert!(reply.answers.is_empty());
        let tsig = reply
            .additionals
            .iter()
            .find_map(|record| match &record.data {
                RData::TSIG(tsig) => Some((record, tsig)),
                _ => None,
            })
            .expect("a TSIG record in the reply");
        assert_eq!(tsig.0.name, name("unknown."));
        assert_eq!(tsig.0.dns_class, DNSClass::ANY);
        assert_eq!(tsig.1.error, Some(TsigError::BadKey));
        assert!(tsig.1.mac.is_empty(), "unsigned");
        assert_eq!(tsig.1.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(tsig.1.oid, 4242);
    }
}

#[test]
fn other_opcodes_are_notimp_and_bad_questions_formerr_or_refused() {
    let view = view(1);
    let mut notify = query("pool01.contoso.test.", RecordType::SOA, None);
    notify.metadata.op_code = OpCode::Notify;
    let (reply, _) = exchange(&view, &notify, Transport::Udp);
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);

    let mut none = query("pool01.contoso.test.", RecordType::A, None);
    none.queries.clear();
    let (reply, _) = exchange(&view, &none, Transport::Udp);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    let mut two = query("pool01.contoso.test.", RecordType::A, None);
    two.add_query(Query::query(name("sip.contoso.test."), RecordType::A));
    let (reply, _) = exchange(&view, &two, Transport::Udp);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    let mut chaos = query("version.bind.", RecordType::TXT, None);
    chaos.queries[0].set_query_class(DNSClass::CH);
    let (reply, _) = exchange(&view, &chaos, Transport::Udp);
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn garbage_gets_formerr_short_packets_and_responses_are_dropped() {
    let view = view(1);
    let mut rng = StdRng::seed_from_u64(1);
    let mut packet = query("pool01.contoso.test.", RecordType::A, None)
        .to_vec()
        .expect("encode");
    packet.truncate(packet.len() - 3);
    match wire::respond(&packet, &view, Transport::Udp, &mut rng) {
        Outcome::Reply { bytes, rcode, .. } => {
            assert_eq!(rcode, ResponseCode::FormErr);
            let reply = Message::from_vec(&bytes).expect("parses");
            assert_eq!(reply.metadata.id, 4242);
            assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        wire::respond(&[0; 5], &view, Transport::Udp, &mut rng),
        Outcome::Silent(Silence::TooShort)
    );
    let mut response = query("pool01.contoso.test.", RecordType::A, None);
    response.metadata.message_type = MessageType::Response;
    let bytes = response.to_vec().expect("encode");
    assert_eq!(
        wire::respond(&bytes, &view, Transport::Udp, &mut rng),
        Outcome::Silent(Silence::NotAQuery)
    );
}

// ---- listeners ----

async fn start_server(
    view: PoolView,
    limits: TcpLimits,
) -> (
    SocketAddr,
    Arc<DnsStats>,
    CancellationToken,
    tokio::task::JoinSet<()>,
) {
    let listeners = bind(&["127.0.0.1:0".parse().expect("addr")])
        .await
        .expect("bind");
    let address = listeners.udp[0].local_addr().expect("addr");
    assert_eq!(
        listeners.tcp[0].local_addr().expect("addr"),
        address,
        "same port for UDP and TCP"
    );
    let (_tx, views) = watch::channel(Arc::new(view));
    let stats = Arc::new(DnsStats::default());
    let shutdown = CancellationToken::new();
    let (events, _received) = EventLog::for_tests();
    let mut tasks = spawn(
        listeners,
        views,
        events,
        Arc::clone(&stats),
        limits,
        shutdown.clone(),
    );
    // Keep the sender and the event queue alive as long as the tasks.
    tasks.spawn(async move {
        let _keep = (_tx, _received);
        std::future::pending::<()>().await;
    });
    (address, stats, shutdown, tasks)
}

#[tokio::test]
async fn udp_and_tcp_listeners_answer_and_stop_on_shutdown() {
    let (address, stats, shutdown, mut tasks) = start_server(view(40), TcpLimits::default()).await;

    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let request = query("pool01.contoso.test.", RecordType::A, None)
        .to_vec()
        .expect("encode");
    client.send_to(&request, address).await.expect("send");
    let mut buffer = [0u8; 2048];
    let (length, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buffer))
        .await
        .expect("UDP reply in time")
        .expect("recv");
    let reply = Message::from_vec(&buffer[..length]).expect("parses");
    assert!(reply.metadata.truncation);

    let mut stream = TcpStream::connect(address).await.expect("connect");
    for _ in 0..2 {
        let mut framed = (request.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&request);
        stream.write_all(&framed).await.expect("write");
        let length = stream.read_u16().await.expect("length");
        let mut body = vec![0; usize::from(length)];
        stream.read_exact(&mut body).await.expect("body");
        let reply = Message::from_vec(&body).expect("parses");
        assert_eq!(reply.answers.len(), 40);
    }
    assert_eq!(stats.queries.load(Ordering::Relaxed), 3);

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), async {
        // The keep-alive task never ends by itself.
        while let Some(result) = tasks.join_next().await {
            result.expect("task ran cleanly");
            if tasks.len() == 1 {
                break;
            }
        }
    })
    .await;
    assert!(stopped.is_ok(), "listeners stop on shutdown");
    tasks.abort_all();
}

/// RFC 7766 §6.2.1.1: a client may send several queries without waiting.
/// Queries written together, and one split across writes at any byte, are
/// each answered, in order; answers to what arrived together may share a
/// write, and a message cut short still closes the connection.
#[tokio::test]
async fn pipelined_tcp_queries_are_all_answered_in_order() {
    let (address, stats, shutdown, mut tasks) = start_server(view(3), TcpLimits::default()).await;
    let framed = |id: u16| {
        let mut message = query("pool01.contoso.test.", RecordType::A, None);
        message.metadata.id = id;
        let bytes = message.to_vec().expect("encode");
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        framed
    };
    let mut stream = TcpStream::connect(address).await.expect("connect");
    // 200 queries in one write, then one more a byte at a time.
    let burst: Vec<u8> = (0..200).flat_map(framed).collect();
    stream.write_all(&burst).await.expect("write");
    for byte in framed(200) {
        stream.write_all(&[byte]).await.expect("write");
        stream.flush().await.expect("flush");
    }
    for id in 0..=200u16 {
        let length = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
            .await
            .expect("answer in time")
            .expect("length");
        let mut body = vec![0; usize::from(length)];
        stream.read_exact(&mut body).await.expect("body");
        let reply = Message::from_vec(&body).expect("parses");
        assert_eq!(reply.metadata.id, id, "answers in the order asked");
        assert_eq!(reply.answers.len(), 3);
    }
    assert_eq!(stats.queries.load(Ordering::Relaxed), 201);
    // Half a message, then the client's FIN: closed without an answer.
    let half = framed(201);
    stream
        .write_all(&half[..half.len() / 2])
        .await
        .expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    shutdown.cancel();
    tasks.abort_all();
}

#[tokio::test]
async fn tcp_connections_over_the_cap_are_closed_and_idle_ones_time_out() {
    let limits = TcpLimits {
        max_connections: 2,
        idle_timeout: Duration::from_millis(300),
        io_timeout: Duration::from_millis(300),
        ..TcpLimits::default()
    };
    let (address, stats, shutdown, mut tasks) = start_server(view(1), limits).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(address).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = TcpStream::connect(address).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut byte))
        .await
        .expect("closed at once, well before the idle timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(stats.tcp_rejected(), 1);

    // Silent connections are closed after the idle timeout, freeing their slots.
    for stream in &mut held {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("idle connection closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    shutdown.cancel();
    tasks.abort_all();
}

#[tokio::test]
async fn fail_open_episode_is_recorded_once() {
    let (log, mut recorded) = EventLog::for_tests();
    let inputs = Inputs::new(Arc::new(config(2, true)), 1, BTreeMap::new());
    let shutdown = CancellationToken::new();
    let (publisher, publisher_task) = st::spawn(inputs, shutdown.clone());
    let watcher = tokio::spawn(fail_open::watch(
        publisher.subscribe(),
        log,
        shutdown.clone(),
    ));
    for m in 0..2 {
        publisher
            .apply(Update::Health {
                member: member_key(m),
                address: member_ip(m),
                monitor: "fe-sip".into(),
                status: health(false),
            })
            .await
            .expect("published");
    }
    // Another change inside the same episode.
    publisher
        .apply(Update::AdminState {
            member: member_key(1),
            state: AdminState::Draining,
        })
        .await
        .expect("published");
    let answer = ask(&publisher.current(), "pool01.contoso.test.", RecordType::A);
    assert_eq!(addresses(&answer.answers), BTreeSet::from([member_ip(0)]));
    publisher
        .apply(Update::Health {
            member: member_key(0),
            address: member_ip(0),
            monitor: "fe-sip".into(),
            status: health(true),
        })
        .await
        .expect("published");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    let events = loop {
        while let Ok(event) = recorded.try_recv() {
            if event.kind == EventKind::Dns {
                events.push(event);
            }
        }
        if events.len() >= 2 || tokio::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].message.contains("fail open"), "{events:?}");
    assert_eq!(events[0].pool.as_deref(), Some("pool01"));
    assert!(events[1].message.contains("ended"), "{events:?}");
    shutdown.cancel();
    watcher.await.expect("watcher ends");
    publisher_task.await.expect("publisher ends");
}

// ---- fast path ----

/// Decoded reply with names lower-cased and answers sorted, for comparing
/// the fast and the full path.
fn canonical(bytes: &[u8]) -> (Message, Vec<String>) {
    let message = Message::from_vec(bytes).expect("reply parses");
    let mut answers: Vec<String> = message
        .answers
        .iter()
        .map(|record| {
            format!(
                "{} {} {}",
                record.name.to_lowercase(),
                record.ttl,
                record.data
            )
        })
        .collect();
    answers.sort();
    (message, answers)
}

fn qname_strategy() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "pool01.contoso.test.",
            "sip.contoso.test.",
            "fe00.contoso.test.",
            "fe02.contoso.test.",
            "fe05.contoso.test.",
            "webint.contoso.test.",
            "nope.contoso.test.",
            "contoso.test.",
            "www.example.org.",
        ]),
        any::<u64>(),
    )
        .prop_map(|(name, mask)| {
            // Random letter case: 0x20 bit tricks of resolvers.
            name.chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
}

proptest! {
    #[test]
    fn fast_path_says_what_the_full_path_says(
        states in prop::collection::vec(arb_state(), 1..40),
        fail_open in any::<bool>(),
        qname in qname_strategy(),
        qtype in prop::sample::select(vec![RecordType::A, RecordType::AAAA, RecordType::TXT]),
        edns in prop::option::of(0u16..5000),
        rd in any::<bool>(),
        tcp in any::<bool>(),
        dnssec_ok in any::<bool>(),
    ) {
        let view = view_with(&states, fail_open);
        let answers = fast::FastAnswers::build(&view);
        let mut request = query(&qname, qtype, edns);
        request.metadata.recursion_desired = rd;
        if let Some(edns) = request.edns.as_mut() {
            edns.set_dnssec_ok(dnssec_ok);
        }
        let bytes = request.to_vec().expect("encode");
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let mut rng = StdRng::seed_from_u64(9);
        if let Some(fast) = fast::try_respond(&bytes, &answers, transport, &mut rng) {
            let Outcome::Reply { bytes: full, .. } = wire::respond(&bytes, &view, transport, &mut rng) else {
                panic!("the full path answers what the fast path answers");
            };
            let (fast_message, fast_answers) = canonical(&fast);
            let (full_message, full_answers) = canonical(&full);
            prop_assert_eq!(fast_message.metadata, full_message.metadata);
            prop_assert_eq!(&fast_message.queries, &full_message.queries);
            prop_assert_eq!(fast_answers, full_answers);
            prop_assert_eq!(&fast_message.authorities, &full_message.authorities);
            prop_assert_eq!(&fast_message.edns, &full_message.edns);
        }
    }

    #[test]
    fn fast_path_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let answers = fast::FastAnswers::build(&view(3));
        let _ = fast::try_respond(&bytes, &answers, Transport::Udp, &mut StdRng::seed_from_u64(1));
    }
}

#[test]
fn fast_path_takes_the_hot_names_and_leaves_the_rest() {
    let answers = fast::FastAnswers::build(&view(3));
    let mut rng = StdRng::seed_from_u64(1);
    let hot = query("Pool01.Contoso.Test.", RecordType::A, Some(1232))
        .to_vec()
        .expect("encode");
    let reply = fast::try_respond(&hot, &answers, Transport::Udp, &mut rng).expect("fast");
    let (message, records) = canonical(&reply);
    assert_eq!(records.len(), 3);
    assert_eq!(
        message.queries[0].name().to_string(),
        "Pool01.Contoso.Test."
    );
    for cold in [
        query("nope.contoso.test.", RecordType::A, None),
        query("pool01.contoso.test.", RecordType::TXT, None),
        query("webint.contoso.test.", RecordType::A, None),
    ] {
        let bytes = cold.to_vec().expect("encode");
        assert!(fast::try_respond(&bytes, &answers, Transport::Udp, &mut rng).is_none());
    }
    let mut badvers = query("pool01.contoso.test.", RecordType::A, Some(1232));
    badvers.edns.as_mut().expect("edns").set_version(1);
    let bytes = badvers.to_vec().expect("encode");
    assert!(fast::try_respond(&bytes, &answers, Transport::Udp, &mut rng).is_none());
    // Too big for 512 bytes without EDNS: the full path truncates.
    let big = fast::FastAnswers::build(&view(40));
    let bytes = query("pool01.contoso.test.", RecordType::A, None)
        .to_vec()
        .expect("encode");
    assert!(fast::try_respond(&bytes, &big, Transport::Udp, &mut rng).is_none());
    assert!(fast::try_respond(&bytes, &big, Transport::Tcp, &mut rng).is_some());
}

#[tokio::test]
async fn a_burst_of_udp_queries_is_answered_in_full() {
    let (address, stats, shutdown, mut tasks) = start_server(view(3), TcpLimits::default()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    // More than one receive batch, sent before reading any reply.
    let burst: u16 = 100;
    for id in 0..burst {
        let mut request = query("pool01.contoso.test.", RecordType::A, None);
        request.metadata.id = id;
        client
            .send_to(&request.to_vec().expect("encode"), address)
            .await
            .expect("send");
    }
    let mut seen = BTreeSet::new();
    let mut buffer = [0u8; 1500];
    while seen.len() < usize::from(burst) {
        let (length, _) =
            tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buffer))
                .await
                .expect("every query answered")
                .expect("recv");
        let reply = Message::from_vec(&buffer[..length]).expect("parses");
        assert_eq!(reply.answers.len(), 3);
        seen.insert(reply.metadata.id);
    }
    assert_eq!(stats.queries.load(Ordering::Relaxed), u64::from(burst));
    shutdown.cancel();
    tasks.abort_all();
}

/// A query over the response-rate limit is dropped before it is answered:
/// each query is either answered (here a FORMERR, counted as malformed) or
/// rate-dropped, never both.
#[tokio::test]
async fn udp_queries_over_the_rate_are_dropped_before_they_are_answered() {
    let text = config_text(1, true).replace("[dns]\n", "[dns]\nrrl_rate = 1\nrrl_slip = 0\n");
    let config = config::from_toml(&text, "test.toml").unwrap_or_else(|error| panic!("{error}"));
    let view = PoolView::build(&Inputs::new(Arc::new(config), 5, BTreeMap::new()), 1);
    let (address, stats, shutdown, mut tasks) = start_server(view, TcpLimits::default()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut packet = query("pool01.contoso.test.", RecordType::A, None)
        .to_vec()
        .expect("encode");
    packet.truncate(packet.len() - 3);
    let sent: u64 = 30;
    for _ in 0..sent {
        client.send_to(&packet, address).await.expect("send");
    }
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    for _ in 0..500 {
        if load(&stats.queries) == sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(load(&stats.queries), sent, "every query read");
    assert!(
        load(&stats.rrl_dropped) > 0,
        "over the rate of one a second"
    );
    assert_eq!(load(&stats.malformed) + load(&stats.rrl_dropped), sent);
    shutdown.cancel();
    tasks.abort_all();
}

/// Every UDP socket shares one rate limiter: a source sending to two DNS
/// addresses gets the rate once, not once per address.
#[tokio::test]
async fn udp_sockets_share_one_rate_limit() {
    let text = config_text(1, true).replace("[dns]\n", "[dns]\nrrl_rate = 5\nrrl_slip = 0\n");
    let config = config::from_toml(&text, "test.toml").unwrap_or_else(|error| panic!("{error}"));
    let view = PoolView::build(&Inputs::new(Arc::new(config), 5, BTreeMap::new()), 1);
    let (_tx, views) = watch::channel(Arc::new(view));
    let stats = Arc::new(DnsStats::default());
    let responder = Responder::new(views, Arc::clone(&stats), TcpLimits::default());
    let shutdown = CancellationToken::new();
    let mut addresses = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        addresses.push(socket.local_addr().expect("addr"));
        tasks.spawn(responder.serve_udp(socket, shutdown.clone()));
    }
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut packet = query("pool01.contoso.test.", RecordType::A, None)
        .to_vec()
        .expect("encode");
    packet.truncate(packet.len() - 3);
    let per_address: u64 = 20;
    for _ in 0..per_address {
        for address in &addresses {
            client.send_to(&packet, address).await.expect("send");
        }
    }
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    for _ in 0..500 {
        if load(&stats.queries) == 2 * per_address {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(load(&stats.queries), 2 * per_address, "every query read");
    // Five a second for the source in all: two limiters would answer ten.
    assert!(
        load(&stats.malformed) < 10,
        "answered {}",
        load(&stats.malformed)
    );
    shutdown.cancel();
    tasks.abort_all();
}
