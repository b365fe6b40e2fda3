//! The DNS responder, asked by real `dig` over UDP and TCP: every answer
//! shape of the pool, member and static names, negative answers with the SOA,
//! REFUSED out of zone, BADVERS, the name server and its glue, the DO bit
//! echoed, zone transfers REFUSED, TSIG with an unknown key NOTAUTH/BADKEY,
//! and truncation of a large pool without EDNS with the complete answer over
//! TCP; and hickory's message codec as a second client.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use poolgate_e2e::dig::dig;
use poolgate_e2e::{Poolgate, loopback_example};

/// The loopback example plus a few more static records, a draining and a
/// disabled member, and a 40-member pool whose answer exceeds 512 bytes.
fn config() -> toml::Table {
    let mut config = loopback_example();
    let extra: toml::Table = r#"
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
name = "info"
type = "TXT"
value = "v=poolgate"
"#
    .parse()
    .expect("TOML");
    config.insert("zone".into(), extra["zone"].clone());
    let pools = config["pool"].as_array_mut().expect("pools");
    let members = pools[0]["member"].as_array_mut().expect("members");
    members[1]
        .as_table_mut()
        .expect("member")
        .insert("state".into(), "draining".into());
    members[2]
        .as_table_mut()
        .expect("member")
        .insert("state".into(), "disabled".into());
    let mut big: toml::Table = r#"
name = "big"
fqdn = "big.contoso.test"
monitor = "fe-sip"
registrar_port = 15061
registrar_transport = "tls"
"#
    .parse()
    .expect("TOML");
    let big_members: Vec<toml::Value> = (0..40)
        .map(|m| {
            let mut member = toml::Table::new();
            member.insert("name".into(), format!("big{m:02}").into());
            member.insert("address".into(), format!("127.0.1.{}", 11 + m).into());
            member.into()
        })
        .collect();
    big.insert("member".into(), big_members.into());
    pools.push(big.into());
    config
}

fn start() -> (tempfile::TempDir, Poolgate, SocketAddr) {
    let dir = tempfile::tempdir().expect("tempdir");
    let poolgate = Poolgate::start_with_config(&dir.path().join("var"), &config(), &[]);
    let listening = poolgate.listening(&["dns-udp", "dns-tcp"]);
    let udp = listening["dns-udp"][0];
    assert_eq!(listening["dns-tcp"][0], udp, "UDP and TCP share the port");
    (dir, poolgate, udp)
}

#[test]
fn dig_sees_every_answer_shape() {
    let (_dir, mut poolgate, server) = start();

    // Pool FQDN and alias: enabled members only (fe02 drains, fe03 is disabled).
    for name in ["pool01.contoso.test", "sip.contoso.test"] {
        let reply = dig(server, &[name, "A"]);
        assert_eq!(reply.status, "NOERROR", "{}", reply.raw);
        assert!(reply.flags.contains("aa"), "{}", reply.raw);
        assert_eq!(
            reply.data("A"),
            BTreeSet::from(["127.0.0.11".to_owned()]),
            "{}",
            reply.raw
        );
        assert!(
            reply.answer.iter().all(|(_, ttl, _, _)| *ttl == 30),
            "{}",
            reply.raw
        );
    }

    // Member FQDNs: kept while draining, gone once disabled.
    let fe01 = dig(server, &["fe01.contoso.test", "A"]);
    assert_eq!(
        fe01.data("A"),
        BTreeSet::from(["127.0.0.11".to_owned()]),
        "{}",
        fe01.raw
    );
    let fe02 = dig(server, &["fe02.contoso.test", "A"]);
    assert_eq!(fe02.status, "NOERROR", "{}", fe02.raw);
    assert_eq!(
        fe02.data("A"),
        BTreeSet::from(["127.0.0.12".to_owned()]),
        "{}",
        fe02.raw
    );
    let fe03 = dig(server, &["fe03.contoso.test", "A"]);
    assert_eq!(fe03.status, "NXDOMAIN", "{}", fe03.raw);
    assert_eq!(fe03.authority.len(), 1, "{}", fe03.raw);
    assert_eq!(fe03.authority[0].2, "SOA", "{}", fe03.raw);

    // Static records.
    let srv = dig(server, &["_sipinternaltls._tcp.contoso.test", "SRV"]);
    assert_eq!(
        srv.data("SRV"),
        BTreeSet::from(["0 0 5061 pool01.contoso.test.".to_owned()]),
        "{}",
        srv.raw
    );
    assert_eq!(srv.answer[0].1, 3600, "zone default TTL");
    let meet = dig(server, &["meet.contoso.test", "A"]);
    assert_eq!(
        meet.data("CNAME"),
        BTreeSet::from(["webint.contoso.test.".to_owned()]),
        "{}",
        meet.raw
    );
    assert_eq!(
        meet.data("A"),
        BTreeSet::from(["127.0.0.20".to_owned()]),
        "{}",
        meet.raw
    );
    assert!(
        meet.answer
            .iter()
            .any(|(_, ttl, t, _)| t == "A" && *ttl == 600),
        "{}",
        meet.raw
    );
    let txt = dig(server, &["info.contoso.test", "TXT"]);
    assert_eq!(
        txt.data("TXT"),
        BTreeSet::from(["\"v=poolgate\"".to_owned()]),
        "{}",
        txt.raw
    );

    // Apex SOA and NS; serial is the config version.
    let soa = dig(server, &["contoso.test", "SOA"]);
    assert_eq!(soa.status, "NOERROR", "{}", soa.raw);
    let soa_data = soa.data("SOA");
    let soa_line = soa_data.iter().next().expect("one SOA");
    let fields: Vec<&str> = soa_line.split_whitespace().collect();
    // The zone names no name servers: ns.<zone> at the DNS listener's address.
    assert_eq!(
        fields[..3],
        ["ns.contoso.test.", "hostmaster.contoso.test.", "1"],
        "{}",
        soa.raw
    );
    assert_eq!(fields[6], "30", "negative TTL is dns.ttl");
    let ns = dig(server, &["contoso.test", "NS"]);
    assert_eq!(
        ns.data("NS"),
        BTreeSet::from(["ns.contoso.test.".to_owned()]),
        "{}",
        ns.raw
    );
    assert_eq!(
        ns.additional,
        vec![(
            "ns.contoso.test.".to_owned(),
            3600,
            "A".to_owned(),
            server.ip().to_string()
        )],
        "glue: {}",
        ns.raw
    );
    let ns_address = dig(server, &["ns.contoso.test", "A"]);
    assert_eq!(
        ns_address.data("A"),
        BTreeSet::from([server.ip().to_string()]),
        "{}",
        ns_address.raw
    );

    // NXDOMAIN and NODATA, both with the SOA in authority.
    let nx = dig(server, &["nope.contoso.test", "A"]);
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
    assert!(nx.flags.contains("aa"), "{}", nx.raw);
    assert_eq!(nx.authority.len(), 1);
    assert_eq!(nx.authority[0].2, "SOA");
    assert_eq!(nx.authority[0].1, 30, "negative TTL");
    let nodata = dig(server, &["pool01.contoso.test", "TXT"]);
    assert_eq!(nodata.status, "NOERROR", "{}", nodata.raw);
    assert!(nodata.answer.is_empty(), "{}", nodata.raw);
    assert_eq!(nodata.authority.len(), 1, "{}", nodata.raw);
    assert_eq!(nodata.authority[0].2, "SOA");

    // Out of zone.
    let refused = dig(server, &["www.example.org", "A"]);
    assert_eq!(refused.status, "REFUSED", "{}", refused.raw);

    // EDNS version 1.
    let badvers = dig(
        server,
        &["+edns=1", "+noednsnegotiation", "pool01.contoso.test", "A"],
    );
    assert_eq!(badvers.status, "BADVERS", "{}", badvers.raw);

    // Over TCP the same answers.
    let tcp = dig(server, &["+tcp", "sip.contoso.test", "A"]);
    assert_eq!(
        tcp.data("A"),
        BTreeSet::from(["127.0.0.11".to_owned()]),
        "{}",
        tcp.raw
    );

    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

#[test]
fn dnssec_ok_is_copied_transfers_are_refused_and_unknown_tsig_keys_are_badkey() {
    let (_dir, mut poolgate, server) = start();

    // DO in the query's OPT comes back in the reply's (RFC 3225 §3), on the
    // hot path (a pool name) and the full one (the apex), with and without
    // a cookie option.
    for args in [
        &["+dnssec", "pool01.contoso.test", "A"][..],
        &["+dnssec", "contoso.test", "SOA"],
        &["+cookie", "+dnssec", "pool01.contoso.test", "A"],
    ] {
        let reply = dig(server, args);
        assert_eq!(reply.status, "NOERROR", "{}", reply.raw);
        let flags = reply.edns_flags.as_ref().expect("an OPT in the reply");
        assert!(flags.contains("do"), "{args:?}: {}", reply.raw);
    }
    let plain = dig(server, &["pool01.contoso.test", "A"]);
    assert!(
        plain.edns_flags.as_ref().is_some_and(|f| !f.contains("do")),
        "{}",
        plain.raw
    );

    // Zone transfers: REFUSED over TCP (AXFR, IXFR) and UDP (IXFR).
    for args in [
        // dig prints the reply header of a transfer only with +comments.
        &["+comments", "contoso.test", "AXFR"][..],
        &["+comments", "+tcp", "contoso.test", "IXFR=1"],
        &["+comments", "+notcp", "contoso.test", "IXFR=1"],
    ] {
        let reply = dig(server, args);
        assert_eq!(reply.status, "REFUSED", "{args:?}: {}", reply.raw);
        assert!(reply.answer.is_empty(), "{}", reply.raw);
    }

    // A TSIG-signed query with a key poolgate does not know (it knows none):
    // NOTAUTH, and an unsigned TSIG record with error BADKEY.
    for transport in ["+notcp", "+tcp"] {
        let reply = dig(
            server,
            &[
                transport,
                "-y",
                "hmac-sha256:unknown-key:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
                "pool01.contoso.test",
                "A",
            ],
        );
        assert_eq!(reply.status, "NOTAUTH", "{}", reply.raw);
        assert!(reply.answer.is_empty(), "{}", reply.raw);
        let tsig = reply
            .raw
            .lines()
            .find(|line| line.starts_with("unknown-key.") && line.contains("TSIG"))
            .unwrap_or_else(|| panic!("a TSIG record: {}", reply.raw));
        assert!(tsig.contains(" BADKEY "), "{tsig}");
    }

    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

#[test]
fn large_pool_truncates_over_udp_and_is_complete_over_tcp() {
    let (_dir, mut poolgate, server) = start();
    let all: BTreeSet<String> = (0..40).map(|m| format!("127.0.1.{}", 11 + m)).collect();

    // Without EDNS the 40 records do not fit in 512 bytes: TC, no answers.
    let cut = dig(server, &["+noedns", "+ignore", "big.contoso.test", "A"]);
    assert_eq!(cut.status, "NOERROR", "{}", cut.raw);
    assert!(cut.flags.contains("tc"), "{}", cut.raw);
    assert!(cut.answer.is_empty(), "{}", cut.raw);

    // dig retries a truncated answer over TCP by itself and gets all of it.
    let retried = dig(server, &["+noedns", "big.contoso.test", "A"]);
    assert!(!retried.flags.contains("tc"), "{}", retried.raw);
    assert_eq!(retried.data("A"), all, "{}", retried.raw);

    let tcp = dig(server, &["+tcp", "+noedns", "big.contoso.test", "A"]);
    assert_eq!(tcp.data("A"), all, "{}", tcp.raw);

    // With EDNS (1232 bytes) the answer fits over UDP.
    let edns = dig(server, &["+bufsize=4096", "big.contoso.test", "A"]);
    assert!(!edns.flags.contains("tc"), "{}", edns.raw);
    assert_eq!(edns.data("A"), all, "{}", edns.raw);

    // Shuffled per response: the first address is not always the same.
    let firsts: BTreeSet<String> = (0..10)
        .map(|_| {
            dig(server, &["+bufsize=1232", "big.contoso.test", "A"])
                .answer
                .first()
                .map(|(_, _, _, data)| data.clone())
                .unwrap_or_default()
        })
        .collect();
    assert!(firsts.len() > 1, "{firsts:?}");

    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

#[test]
fn garbage_does_not_stop_the_responder() {
    let (_dir, mut poolgate, server) = start();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    // A header claiming one question that is not there: FORMERR with our id.
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    packet.extend_from_slice(&[0xff; 7]);
    socket.send_to(&packet, server).expect("send");
    let mut buffer = [0u8; 512];
    let (length, _) = socket.recv_from(&mut buffer).expect("FORMERR reply");
    assert!(length >= 12);
    assert_eq!(buffer[..2], [0x12, 0x34]);
    assert_eq!(buffer[3] & 0x0f, 1, "FORMERR");
    // Too short to answer: dropped; the server keeps serving.
    socket.send_to(&[1, 2, 3], server).expect("send");
    let reply = dig(server, &["pool01.contoso.test", "A"]);
    assert_eq!(reply.status, "NOERROR", "{}", reply.raw);
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

/// One query with hickory's message codec over UDP, then over TCP.
fn hickory_exchange(server: SocketAddr, request: &Message, tcp: bool) -> Message {
    use std::io::{Read, Write};
    let bytes = request.to_vec().expect("encode");
    let reply = if tcp {
        let mut stream = std::net::TcpStream::connect(server).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut framed = u16::try_from(bytes.len())
            .expect("small")
            .to_be_bytes()
            .to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).expect("write");
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).expect("length");
        let mut body = vec![0; usize::from(u16::from_be_bytes(length))];
        stream.read_exact(&mut body).expect("body");
        body
    } else {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        socket.send_to(&bytes, server).expect("send");
        let mut buffer = [0u8; 1500];
        let (length, _) = socket.recv_from(&mut buffer).expect("reply");
        buffer[..length].to_vec()
    };
    Message::from_vec(&reply).expect("reply parses")
}

#[test]
fn hickory_messages_get_the_same_answers_over_udp_and_tcp() {
    let (_dir, mut poolgate, server) = start();
    for tcp in [false, true] {
        for (name, expected) in [("SIP.contoso.TEST.", 1), ("big.contoso.test.", 40)] {
            let mut request = Message::new(77, MessageType::Query, OpCode::Query);
            request.add_query(Query::query(
                Name::from_ascii(name).expect("name"),
                RecordType::A,
            ));
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            request.set_edns(edns);
            let reply = hickory_exchange(server, &request, tcp);
            assert_eq!(reply.metadata.id, 77);
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
            assert!(reply.metadata.authoritative);
            assert_eq!(
                reply.queries[0].name().to_string(),
                name,
                "question echoed as asked"
            );
            assert_eq!(reply.answers.len(), expected, "tcp={tcp} {name}");
        }
        let mut notify = Message::new(78, MessageType::Query, OpCode::Notify);
        notify.add_query(Query::query(
            Name::from_ascii("contoso.test.").expect("name"),
            RecordType::SOA,
        ));
        let reply = hickory_exchange(server, &notify, tcp);
        assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
    }
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}
