use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::sip::message::parse;
use crate::sip::message::tests::{LYNC_REGISTER, torture};
use crate::state::{self, Health, HealthStatus, Inputs, Update};

pub(crate) const POOL_CONFIG: &str = r#"
[listen]
admin = "127.0.0.1:0"

[[zone]]
name = "contoso.com"

[[zone]]
name = "fabrikam.com"

[[monitor]]
name = "fe-sip"
type = "tcp"
port = 5061

[[pool]]
name = "pool01"
fqdn = "pool01.contoso.com"
aliases = ["sip.contoso.com"]
monitor = "fe-sip"
registrar_port = 5061
registrar_transport = "tls"

[[pool.member]]
name = "fe01"
fqdn = "fe01.contoso.com"
address = "127.0.0.11"

[[pool.member]]
name = "fe02"
fqdn = "fe02.contoso.com"
address = "127.0.0.12"

[[pool.member]]
name = "fe03"
address = "127.0.0.13"

[[pool.member]]
name = "fe04"
address = "127.0.0.14"

[[pool]]
name = "pool02"
fqdn = "pool02.fabrikam.com"
monitor = "fe-sip"
registrar_port = 5060
registrar_transport = "tcp"

[[pool.member]]
name = "fe21"
address = "127.0.0.21"
"#;

fn inputs() -> Inputs {
    let config = crate::config::from_toml(POOL_CONFIG, "test.toml").expect("valid config");
    Inputs::new(Arc::new(config), 1, BTreeMap::new())
}

fn view() -> PoolView {
    PoolView::build(&inputs(), 1)
}

/// Status, response text and the member a REGISTER was counted for.
type Answer = (u16, String, Option<(usize, usize)>);

/// Where the test's requests come from.
const SOURCE: &str = "127.0.0.1:5070";

fn answer(view: &PoolView, bytes: &[u8]) -> Option<Answer> {
    answer_from(view, bytes, SOURCE.parse().expect("address"))
}

fn answer_from(view: &PoolView, bytes: &[u8], source: SocketAddr) -> Option<Answer> {
    match decide(view, &parse(bytes), source) {
        Decision::Respond(response) => Some((
            response.status,
            String::from_utf8(response.bytes).expect("responses are text"),
            response.registered_to,
        )),
        Decision::Drop(_) => None,
    }
}

fn header_values<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// The Contact URIs' hosts of a 301, in order.
fn contact_hosts(text: &str) -> Vec<String> {
    header_values(text, "Contact")
        .iter()
        .map(|c| {
            let uri = &c[c.find('<').expect("<") + 1..c.find('>').expect(">")];
            uri.trim_start_matches("sip:")
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn host_of(view: &PoolView, member: usize) -> String {
    let m = &view.pools[0].members[member];
    m.fqdn.clone().unwrap_or_else(|| m.addresses[0].to_string())
}

#[test]
fn lync_register_is_redirected_to_the_physical_sequence() {
    let view = view();
    let (status, text, registered) = answer(&view, LYNC_REGISTER.as_bytes()).expect("answered");
    assert_eq!(status, 301);
    assert!(
        text.starts_with("SIP/2.0 301 Redirect request to Home Server\r\n"),
        "{text}"
    );
    let ranking = registrar::rank_pool(&view.pools[0], "alice@contoso.com");
    let expected: Vec<String> = ranking
        .physical
        .iter()
        .map(|&i| host_of(&view, i))
        .collect();
    assert_eq!(contact_hosts(&text), expected);
    let contacts = header_values(&text, "Contact");
    assert_eq!(contacts.len(), 4);
    assert!(
        contacts[0].ends_with(":5061;transport=tls>;q=0.7"),
        "{}",
        contacts[0]
    );
    assert!(contacts[1].ends_with(";q=0.3"));
    assert!(contacts[2].ends_with(";q=0.2") && contacts[3].ends_with(";q=0.195"));
    assert_eq!(registered, Some((0, ranking.physical[0])));
    assert_eq!(
        header_values(&text, "Via"),
        ["SIP/2.0/TLS 192.168.1.20:51420;branch=z9hG4bK1a2b3c;received=127.0.0.1"]
    );
    assert_eq!(
        header_values(&text, "From"),
        ["<sip:Alice@Contoso.com>;tag=9c1a5f;epid=1f2e3d4c5b"]
    );
    let to = header_values(&text, "To");
    assert!(to[0].starts_with("<sip:Alice@Contoso.com>;tag="), "{to:?}");
    assert_eq!(
        header_values(&text, "Call-ID"),
        ["3d1b4e2fa9c84a3c8f5d6e7a8b9c0d1e"]
    );
    assert_eq!(header_values(&text, "CSeq"), ["1 REGISTER"]);
    assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    // A retransmission gets the same To tag (stateless server).
    let (_, again, _) = answer(&view, LYNC_REGISTER.as_bytes()).expect("answered");
    assert_eq!(again, text);
}

fn request(method: &str, uri: &str, to: &str, cseq_method: &str) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
         From: <sip:bob@contoso.com>;tag=1\r\nTo: {to}\r\nCall-ID: c1\r\n\
         CSeq: 7 {cseq_method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn status_of(view: &PoolView, text: &str) -> Option<u16> {
    answer(view, text.as_bytes()).map(|(status, _, _)| status)
}

#[test]
fn methods_get_the_answers_of_a_redirect_server() {
    let view = view();
    let to = "<sip:carol@contoso.com>";
    let cases = [
        ("OPTIONS", to, Some(200)),
        ("INVITE", to, Some(301)),
        ("SUBSCRIBE", to, Some(301)),
        ("INVITE", "<sip:carol@contoso.com>;tag=x", Some(481)),
        ("CANCEL", to, Some(200)),
        ("ACK", to, None),
        ("BYE", to, Some(405)),
        ("SERVICE", to, Some(405)),
        ("NEGOTIATE", to, Some(405)),
        ("FROBNICATE", to, Some(501)),
    ];
    for (method, to, expected) in cases {
        let text = request(method, "sip:carol@contoso.com", to, method);
        assert_eq!(status_of(&view, &text), expected, "{method} {to}");
    }
    let (_, text, _) = answer(
        &view,
        request("BYE", "sip:x@contoso.com", to, "BYE").as_bytes(),
    )
    .expect("answered");
    assert_eq!(header_values(&text, "Allow"), [ALLOW]);
    // An INVITE goes to the callee's home.
    let (_, text, registered) = answer(
        &view,
        request("INVITE", "sip:carol@contoso.com", to, "INVITE").as_bytes(),
    )
    .expect("answered");
    let ranking = registrar::rank_pool(&view.pools[0], "carol@contoso.com");
    assert_eq!(contact_hosts(&text)[0], host_of(&view, ranking.logical[0]));
    assert_eq!(registered, None, "only REGISTERs count as registrations");
}

#[test]
fn the_pool_is_chosen_by_host_else_the_first() {
    let view = view();
    let register = |uri: &str, to: &str| {
        let (status, text, registered) =
            answer(&view, request("REGISTER", uri, to, "REGISTER").as_bytes()).expect("answered");
        assert_eq!(status, 301);
        (text, registered)
    };
    let (text, registered) = register("sip:pool02.fabrikam.com", "<sip:dave@fabrikam.com>");
    assert_eq!(registered, Some((1, 0)));
    assert_eq!(
        header_values(&text, "Contact"),
        ["<sip:127.0.0.21:5060;transport=tcp>;q=0.7"]
    );
    let (_, registered) = register("sip:contoso.com", "<sip:dave@pool02.fabrikam.com>");
    assert_eq!(registered.map(|r| r.0), Some(1), "To host names the pool");
    let (_, registered) = register("sip:sip.contoso.com", "<sip:dave@contoso.com>");
    assert_eq!(registered.map(|r| r.0), Some(0), "alias");
    let (_, registered) = register("sip:elsewhere.test", "<sip:dave@elsewhere.test>");
    assert_eq!(registered.map(|r| r.0), Some(0), "first pool by default");
}

fn down() -> HealthStatus {
    HealthStatus {
        state: Health::Down,
        reason: Some("connection refused".into()),
        since: None,
    }
}

/// After the home member's monitor fails, the next member of the logical
/// sequence is first; when every member is down, 503 with Retry-After.
#[tokio::test]
async fn a_failed_home_moves_the_user_to_the_next_member() {
    let shutdown = CancellationToken::new();
    let (handle, task) = state::spawn(inputs(), shutdown.clone());
    let register = request(
        "REGISTER",
        "sip:contoso.com",
        "<sip:erin@contoso.com>",
        "REGISTER",
    );
    let before = handle.current();
    let ranking = registrar::rank_pool(&before.pools[0], "erin@contoso.com");
    let (_, text, _) = answer(&before, register.as_bytes()).expect("answered");
    assert_eq!(
        contact_hosts(&text)[0],
        host_of(&before, ranking.logical[0])
    );

    let home = before.pools[0].members[ranking.logical[0]].name.clone();
    handle
        .apply(Update::health_of(
            &before.config,
            ("pool01".into(), home),
            "fe-sip",
            down(),
        ))
        .await
        .expect("publisher applies health");
    let after = handle.current();
    let (status, text, registered) = answer(&after, register.as_bytes()).expect("answered");
    assert_eq!(status, 301);
    let hosts = contact_hosts(&text);
    assert_eq!(hosts.len(), 3);
    assert_eq!(hosts[0], host_of(&after, ranking.logical[1]));
    assert_eq!(registered, Some((0, ranking.logical[1])));
    assert!(registrar::rank_pool(&after.pools[0], "erin@contoso.com").backup_mode());

    for member in ["fe01", "fe02", "fe03", "fe04"] {
        handle
            .apply(Update::health_of(
                &before.config,
                ("pool01".into(), member.into()),
                "fe-sip",
                down(),
            ))
            .await
            .expect("publisher applies health");
    }
    let (status, text, registered) =
        answer(&handle.current(), register.as_bytes()).expect("answered");
    assert_eq!(status, 503);
    assert_eq!(header_values(&text, "Retry-After"), ["30"]);
    assert_eq!(registered, None);
    shutdown.cancel();
    task.await.expect("publisher ends");
}

/// What RFC 4475 expects of a redirect server, message by message (`None`:
/// dropped, as the RFC allows for responses and unaddressable requests).
pub(crate) const TORTURE_ANSWERS: [(&str, Option<u16>); 50] = [
    // 3.1.1 valid
    ("wsinv", Some(481)), // INVITE whose To carries a tag: in-dialog, no dialog here
    ("intmeth", Some(501)),
    ("esc01", Some(301)),
    ("escnull", Some(301)),
    ("esc02", Some(501)), // RE%47IST%45R is not REGISTER
    ("lwsdisp", Some(200)),
    ("longreq", Some(301)),
    ("dblreq", Some(301)),
    ("semiuri", Some(200)),
    ("transports", Some(200)),
    ("mpart01", Some(301)),
    ("unreason", None),
    ("noreason", None),
    // 3.1.2 invalid
    ("badinv01", Some(400)),
    ("clerr", Some(400)),
    ("ncl", Some(400)),
    ("scalar02", Some(400)),
    ("scalarlg", None),
    ("quotbal", Some(400)),
    ("ltgtruri", Some(400)),
    ("lwsruri", Some(400)),
    ("lwsstart", Some(400)),
    ("trws", Some(400)),
    ("escruri", Some(400)),
    ("baddate", Some(400)),
    ("regbadct", Some(400)),
    ("badaspec", Some(400)),
    ("baddn", Some(400)),
    ("badvers", Some(505)),
    ("mismatch01", Some(400)),
    ("mismatch02", Some(400)),
    ("bigcode", None),
    // 3.2 transaction layer
    ("badbranch", Some(200)),
    // 3.3 application layer
    ("insuf", Some(400)),
    ("unkscm", Some(416)),
    ("novelsc", Some(416)),
    ("unksm2", Some(416)), // REGISTER whose To is not a SIP URI
    ("bext01", Some(420)),
    ("invut", Some(301)), // a redirect never reads the body
    ("regaut01", Some(301)),
    ("multi01", Some(400)),
    ("mcl01", Some(400)),
    ("bcast", None),
    ("zeromf", Some(200)), // Max-Forwards only limits forwarding
    ("cparam01", Some(301)),
    ("cparam02", Some(301)),
    ("regescrt", Some(301)),
    ("sdp01", Some(301)),
    // 3.4
    ("inv2543", Some(301)),
    ("test", None), // no Via, no CSeq
];

#[test]
fn torture_messages_get_the_answers_the_rfc_expects() {
    let view = view();
    for (name, expected) in TORTURE_ANSWERS {
        let Some(bytes) = torture(name) else { return };
        let got = answer(&view, &bytes);
        assert_eq!(got.as_ref().map(|a| a.0), expected, "{name}: {got:?}");
        if let Some((status, text, _)) = got {
            assert!(text.starts_with(&format!("SIP/2.0 {status} ")), "{name}");
            assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{name}");
        }
    }
    let Some(bext01) = torture("bext01") else {
        return;
    };
    let (_, text, _) = answer(&view, &bext01).expect("answered");
    assert_eq!(
        header_values(&text, "Unsupported"),
        ["nothingSupportsThis, nothingSupportsThisEither"]
    );
}

#[test]
fn responses_never_carry_control_characters() {
    let view = view();
    let base = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKctl\r\n\
         From: <sip:alice@contoso.com>;tag=1\r\nTo: <sip:alice@contoso.com>\r\n\
         Call-ID: ctl-1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n";
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for bad in [
        "User-Agent: a\rSet-Cookie: b\r\n",
        "User-Agent: a\0b\r\n",
        "Call-ID: x\ry\r\n",
        "From: <sip:eve@contoso.com>;tag=\0\r\n",
    ] {
        cases.push(format!("REGISTER sip:contoso.com SIP/2.0\r\n{base}{bad}\r\n").into_bytes());
    }
    cases.push(
        "REGISTER sip:contoso.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\rX: y\r\n\
         From: <sip:alice@contoso.com>;tag=1\r\nTo: <sip:alice@contoso.com>\r\n\
         Call-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n"
            .as_bytes()
            .to_vec(),
    );
    let mut bad_version = b"REGISTER sip:contoso.com SI\xff/2.0\r\n".to_vec();
    bad_version.extend_from_slice(base.as_bytes());
    bad_version.extend_from_slice(b"\r\n");
    cases.push(bad_version);
    for bytes in cases {
        let Some((status, text, _)) = answer(&view, &bytes) else {
            continue;
        };
        assert_eq!(status, 400, "{text}");
        for line in text.split("\r\n") {
            assert!(
                !line.bytes().any(message::is_control),
                "{line:?} in {text:?}"
            );
        }
        assert!(
            !text.split("\r\n").any(|l| l.starts_with("Set-Cookie")),
            "{text}"
        );
    }
}

#[test]
fn q_values_are_written_one_way() {
    let written: Vec<String> = (0..6).map(q_value).collect();
    assert_eq!(written, ["0.7", "0.3", "0.2", "0.195", "0.19", "0.185"]);
    assert_eq!(q_value(40), "0.01");
    assert_eq!(q_value(1000), "0.01", "the last ones share the lowest");
}

#[test]
fn a_request_already_addressed_to_a_member_is_not_redirected_again() {
    let view = view();
    // What a client sends after following the 301 through poolgate as its
    // outbound proxy: the Request-URI is the member's Contact.
    for (method, uri) in [
        ("REGISTER", "sip:fe01.contoso.com:5061;transport=tls"),
        ("REGISTER", "sip:FE02.contoso.com"),
        ("REGISTER", "sip:127.0.0.13:5061"),
        ("INVITE", "sip:carol@fe01.contoso.com:5061;transport=tls"),
    ] {
        let text = request(method, uri, "<sip:carol@contoso.com>", method);
        let (status, reply, registered) = answer(&view, text.as_bytes()).expect("answered");
        assert_eq!(status, 482, "{method} {uri}: {reply}");
        assert!(
            reply.starts_with("SIP/2.0 482 Loop Detected\r\n"),
            "{reply}"
        );
        let warning = header_values(&reply, "Warning");
        assert!(
            warning.len() == 1
                && warning[0].starts_with("399 poolgate \"the Request-URI names pool member"),
            "{warning:?}"
        );
        assert!(header_values(&reply, "Contact").is_empty());
        assert_eq!(registered, None);
    }
    // The pool's own name is redirected as before.
    let text = request(
        "REGISTER",
        "sip:contoso.com",
        "<sip:carol@contoso.com>",
        "REGISTER",
    );
    assert_eq!(status_of(&view, &text), Some(301));
}

#[test]
fn a_cancel_is_answered_200_with_the_to_tag_of_its_request() {
    let view = view();
    let to = "<sip:carol@contoso.com>";
    let invite = request("INVITE", "sip:carol@contoso.com", to, "INVITE");
    let cancel = request("CANCEL", "sip:carol@contoso.com", to, "CANCEL");
    let (status, invited, _) = answer(&view, invite.as_bytes()).expect("answered");
    assert_eq!(status, 301);
    let (status, cancelled, _) = answer(&view, cancel.as_bytes()).expect("answered");
    assert_eq!(status, 200);
    assert!(cancelled.starts_with("SIP/2.0 200 OK\r\n"), "{cancelled}");
    assert_eq!(header_values(&cancelled, "CSeq"), ["7 CANCEL"]);
    assert_eq!(
        header_values(&invited, "To"),
        header_values(&cancelled, "To")
    );
}

#[test]
fn the_top_via_gets_received_and_rport() {
    let view = view();
    let with_via = |via: &str| {
        format!(
            "OPTIONS sip:contoso.com SIP/2.0\r\nVia: {via}\r\nFrom: <sip:bob@contoso.com>;tag=1\r\n\
             To: <sip:contoso.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let nat: SocketAddr = "203.0.113.9:40123".parse().expect("address");
    let vias = |via: &str, source: SocketAddr| {
        let (_, text, _) = answer_from(&view, with_via(via).as_bytes(), source).expect("answered");
        header_values(&text, "Via")
            .iter()
            .map(|v| (*v).to_owned())
            .collect::<Vec<_>>()
    };
    // rport asked: both filled, even where sent-by is the source (RFC 3581 §4).
    assert_eq!(
        vias("SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bK-a", nat),
        ["SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-a;received=203.0.113.9;rport=40123"]
    );
    assert_eq!(
        vias("SIP/2.0/UDP 203.0.113.9:40123;branch=z9hG4bK-b;rport", nat),
        ["SIP/2.0/UDP 203.0.113.9:40123;branch=z9hG4bK-b;received=203.0.113.9;rport=40123"]
    );
    // No rport: received only when sent-by is not the source (RFC 3261 §18.2.1).
    assert_eq!(
        vias("SIP/2.0/UDP 203.0.113.9:40123;branch=z9hG4bK-c", nat),
        ["SIP/2.0/UDP 203.0.113.9:40123;branch=z9hG4bK-c"]
    );
    assert_eq!(
        vias(
            "SIP/2.0/TCP client.contoso.com;branch=z9hG4bK-d;received=192.0.2.1",
            nat
        ),
        ["SIP/2.0/TCP client.contoso.com;branch=z9hG4bK-d;received=203.0.113.9"]
    );
    // IPv6: received without brackets, as RFC 3261's grammar has it; only
    // the top Via is touched.
    let v6: SocketAddr = "[2001:db8::7]:5062".parse().expect("address");
    assert_eq!(
        vias(
            "SIP/2.0/UDP [2001:db8::7]:5062;rport;branch=z9hG4bK-e, SIP/2.0/UDP 10.1.1.1;branch=z9hG4bK-f",
            v6
        ),
        [
            "SIP/2.0/UDP [2001:db8::7]:5062;branch=z9hG4bK-e;received=2001:db8::7;rport=5062, SIP/2.0/UDP 10.1.1.1;branch=z9hG4bK-f"
        ]
    );
}
