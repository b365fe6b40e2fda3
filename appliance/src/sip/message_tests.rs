use std::path::PathBuf;

use super::*;

/// The RFC 4475 torture messages, read in place (never copied): beside the
/// repository, or where `RFC4475_DIR` points.
pub(crate) fn torture_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RFC4475_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/rfc4475"),
        PathBuf::from,
    );
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("RFC 4475 messages not found at {}; skipping", dir.display());
        None
    }
}

pub(crate) fn torture(name: &str) -> Option<Vec<u8>> {
    let path = torture_dir()?.join(format!("{name}.dat"));
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// RFC 4475 §3.1.1 and the §3.2–3.4 messages whose syntax is valid.
const VALID: [&str; 25] = [
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "badbranch",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
    "inv2543",
    "esc01",
];

/// §3.1.2 requests, plus the §3.3 ones that break single-value rules.
const INVALID_REQUESTS: [&str; 19] = [
    "badinv01",
    "clerr",
    "ncl",
    "scalar02",
    "quotbal",
    "ltgtruri",
    "lwsruri",
    "lwsstart",
    "trws",
    "escruri",
    "baddate",
    "regbadct",
    "badaspec",
    "baddn",
    "mismatch01",
    "mismatch02",
    "insuf",
    "multi01",
    "mcl01",
];

const RESPONSES: [&str; 5] = ["unreason", "noreason", "scalarlg", "bigcode", "bcast"];

#[test]
fn every_valid_torture_message_parses() {
    for name in VALID {
        let Some(bytes) = torture(name) else { return };
        let parsed = parse(&bytes);
        assert!(parsed.result.is_ok(), "{name}: {:?}", parsed.result);
        assert!(parsed.echo.addressable(), "{name}");
    }
}

#[test]
fn every_invalid_torture_request_is_rejected_with_a_reason() {
    for name in INVALID_REQUESTS {
        let Some(bytes) = torture(name) else { return };
        match parse(&bytes).result {
            Err(MessageError::Invalid {
                reason,
                addressable,
            }) => {
                assert!(!reason.is_empty(), "{name}");
                println!("{name}: {reason}");
                assert!(addressable, "{name}: {reason}");
            }
            other => panic!("{name}: expected Invalid, got {other:?}"),
        }
    }
    // No Via, no CSeq: nothing a response could be matched by.
    let Some(bytes) = torture("test") else { return };
    assert!(matches!(
        parse(&bytes).result,
        Err(MessageError::Invalid {
            addressable: false,
            ..
        })
    ));
    let Some(bytes) = torture("badvers") else {
        return;
    };
    assert_eq!(
        parse(&bytes).result,
        Err(MessageError::Version("SIP/7.0".into()))
    );
}

#[test]
fn responses_are_recognised() {
    for name in RESPONSES {
        let Some(bytes) = torture(name) else { return };
        assert_eq!(parse(&bytes).result, Err(MessageError::Response), "{name}");
    }
}

#[test]
fn folded_compact_and_spaced_headers_are_read() {
    let Some(bytes) = torture("wsinv") else {
        return;
    };
    let parsed = parse(&bytes);
    let request = parsed.result.expect("wsinv is valid");
    assert_eq!(request.method, "INVITE");
    assert_eq!(request.first("max-forwards"), Some("0068"));
    assert_eq!(request.first("cseq"), Some("0009 INVITE"));
    assert_eq!(request.body_len, 150);
    // One `Via` plus one compact `v` holding two via-parms.
    assert_eq!(parsed.echo.vias.len(), 2);
    assert_eq!(
        param(parsed.echo.to.as_deref().unwrap_or_default(), "tag"),
        Some("1918181833n")
    );
}

#[test]
fn a_datagram_with_two_requests_keeps_the_first() {
    let Some(bytes) = torture("dblreq") else {
        return;
    };
    let request = parse(&bytes).result.expect("dblreq is valid");
    assert_eq!(request.method, "REGISTER");
    assert_eq!(request.body_len, 0);
}

#[test]
fn stream_framing_follows_content_length() {
    let Some(bytes) = torture("dblreq") else {
        return;
    };
    let Ok(Frame::Message(first)) = frame(&bytes) else {
        panic!("first request frames");
    };
    let second = parse(&bytes[first..])
        .result
        .expect("second request parses");
    assert_eq!(second.method, "INVITE");
    assert_eq!(frame(&bytes[..first - 1]), Ok(Frame::Incomplete));
    assert_eq!(frame(b"\r\n\r\nREG"), Ok(Frame::Keepalive(4)));
    let Some(mcl) = torture("mcl01") else { return };
    assert!(frame(&mcl).is_err());
    let Some(ncl) = torture("ncl") else { return };
    assert!(frame(&ncl).is_err());
    assert!(frame(&vec![b'a'; MAX_MESSAGE + 1]).is_err());
}

pub(crate) const LYNC_REGISTER: &str = "REGISTER sip:contoso.com SIP/2.0\r\n\
v: SIP/2.0/TLS 192.168.1.20:51420;branch=z9hG4bK1a2b3c\r\n\
Max-Forwards: 70\r\n\
f: <sip:Alice@Contoso.com>;tag=9c1a5f;epid=1f2e3d4c5b\r\n\
t: <sip:Alice@Contoso.com>\r\n\
i: 3d1b4e2fa9c84a3c8f5d6e7a8b9c0d1e\r\n\
CSeq: 1 REGISTER\r\n\
m: <sip:192.168.1.20:51420;transport=tls;ms-opaque=d3470f2e1d>;methods=\"INVITE, MESSAGE, INFO, SUBSCRIBE, OPTIONS, BYE, CANCEL, NOTIFY, ACK, REFER, BENOTIFY\";proxy=replace;+sip.instance=\"<urn:uuid:0cbb8d8c-9d5f-5a79-bc52-8a2c1f9e2a10>\"\r\n\
User-Agent: UCCAPI/15.0.4867.1000 OC/15.0.4867.1000 (Microsoft Lync)\r\n\
k: gruu-10, adhoclist, msrtc-event-categories\r\n\
Supported: ms-forking\r\n\
ms-keep-alive: UAC;hop-hop=yes\r\n\
o: registration\r\n\
Allow: INVITE, BYE, ACK, CANCEL, INFO, MESSAGE, UPDATE, REFER, NOTIFY, BENOTIFY, OPTIONS, SERVICE, NEGOTIATE\r\n\
ms-endpoint-location-data: NetworkScope;ms-media-location-type=Intranet\r\n\
l: 0\r\n\r\n";

#[test]
fn lync_register_parses() {
    let parsed = parse(LYNC_REGISTER.as_bytes());
    let request = parsed.result.expect("a Lync REGISTER is valid");
    assert_eq!(request.method, "REGISTER");
    assert_eq!(
        request.first("supported"),
        Some("gruu-10, adhoclist, msrtc-event-categories")
    );
    assert_eq!(parsed.echo.to.as_deref(), Some("<sip:Alice@Contoso.com>"));
    assert_eq!(
        parsed.echo.call_id.as_deref(),
        Some("3d1b4e2fa9c84a3c8f5d6e7a8b9c0d1e")
    );
}

/// Requests shaped like the valid cases of RFC 5118 (IPv6 in SIP).
#[test]
fn ipv6_requests_parse() {
    let cases = [
        // Request-URI and Via with IPv6 references, with and without port.
        (
            "REGISTER sip:[2001:db8::10] SIP/2.0",
            "SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111",
            "<sip:user@[2001:db8::10]>",
        ),
        (
            "REGISTER sip:[2001:db8::10]:5070 SIP/2.0",
            "SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111;received=[2001:db8::9:255]",
            "<sip:user@[2001:db8::10]:5070>",
        ),
        // IPv4-mapped IPv6 and a mixed-address Via list.
        (
            "OPTIONS sip:[::ffff:192.0.2.10]:19823 SIP/2.0",
            "SIP/2.0/UDP [::ffff:192.0.2.151]:6050;branch=z9hG4bKas3-111",
            "sip:user@[::ffff:192.0.2.10]",
        ),
        (
            "OPTIONS sip:user@[2001:db8::10] SIP/2.0",
            "SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111, SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKjhja8781hjuaij65144",
            "<sip:user@[2001:db8::10]>",
        ),
    ];
    for (line, via, to) in cases {
        let method = line.split(' ').next().unwrap_or_default();
        let text = format!(
            "{line}\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:user@[2001:db8::9:1]>;tag=81x2\r\nTo: {to}\r\nCall-ID: SSG9559905523997077@hlau_4100\r\nCSeq: 1 {method}\r\nContact: \"Caller\" <sip:caller@[2001:db8::9:1]:6050>;expires=3600\r\nContent-Length: 0\r\n\r\n"
        );
        let parsed = parse(text.as_bytes());
        assert!(parsed.result.is_ok(), "{line}: {:?}", parsed.result);
        assert!(parsed.echo.addressable(), "{line}");
    }
}

#[test]
fn garbage_never_panics() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..600), |bytes| {
            let _ = parse(&bytes);
            let _ = frame(&bytes);
            Ok(())
        })
        .expect("no panic");
    // Mutations of a valid request exercise the deeper checks.
    runner
        .run(
            &(0usize..LYNC_REGISTER.len(), any::<u8>(), 0usize..40),
            |(at, byte, cut)| {
                let mut bytes = LYNC_REGISTER.as_bytes().to_vec();
                bytes[at] = byte;
                bytes.truncate(bytes.len() - cut);
                let _ = parse(&bytes);
                let _ = frame(&bytes);
                Ok(())
            },
        )
        .expect("no panic");
}

/// A request whose headers are `headers` (CRLF-separated lines).
fn with_headers(line: &str, headers: &str) -> Vec<u8> {
    format!("{line}\r\n{headers}\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

const CLEAN_HEADERS: &str = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKctl\r\n\
     From: <sip:alice@contoso.com>;tag=1\r\nTo: <sip:alice@contoso.com>\r\n\
     Call-ID: ctl-1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70";

#[test]
fn a_version_with_invalid_utf8_is_rejected_not_a_panic() {
    // Lossily read, `\xff` becomes a three-byte replacement character that
    // straddles byte 4 of the version.
    for version in [
        &b"SI\xff/2.0"[..],
        b"S\xff/2.0",
        b"\xff",
        b"SIP\xff2.0",
        b"SIP/\xff.0",
    ] {
        let mut bytes = b"REGISTER sip:contoso.com ".to_vec();
        bytes.extend_from_slice(version);
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(CLEAN_HEADERS.as_bytes());
        bytes.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        let parsed = parse(&bytes);
        assert!(
            matches!(parsed.result, Err(MessageError::Invalid { .. })),
            "{version:?}: {:?}",
            parsed.result
        );
        assert!(parsed.echo.addressable());
    }
}

#[test]
fn control_characters_in_header_lines_are_malformed_and_never_echoed() {
    for (bad, via_survives) in [
        ("User-Agent: a\rInjected: b", true),
        ("User-Agent: a\0b", true),
        ("Subject: \x1b[31m", true),
        ("Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx\rX: y", false),
        ("Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK\0x", false),
    ] {
        let via_first = bad.starts_with("Via");
        let headers = if via_first {
            format!(
                "{bad}\r\n{}",
                CLEAN_HEADERS.split_once("\r\n").expect("lines").1
            )
        } else {
            format!("{CLEAN_HEADERS}\r\n{bad}")
        };
        let parsed = parse(&with_headers("REGISTER sip:contoso.com SIP/2.0", &headers));
        let Err(MessageError::Invalid { reason, .. }) = &parsed.result else {
            panic!("{bad:?}: {:?}", parsed.result);
        };
        assert!(!reason.bytes().any(is_control), "{reason:?}");
        assert_eq!(parsed.echo.addressable(), via_survives, "{bad:?}");
        let echo = &parsed.echo;
        for value in echo
            .vias
            .iter()
            .chain(&echo.from)
            .chain(&echo.to)
            .chain(&echo.call_id)
            .chain(&echo.cseq)
        {
            assert!(!value.bytes().any(is_control), "{bad:?} echoes {value:?}");
        }
    }
    // A tab is whitespace, not a control character to reject.
    let parsed = parse(&with_headers(
        "REGISTER sip:contoso.com SIP/2.0",
        &format!("{CLEAN_HEADERS}\r\nSubject:\tfine"),
    ));
    assert!(parsed.result.is_ok(), "{:?}", parsed.result);
}

/// What a stream reader gets from `frame` and `parse` run over the whole
/// buffer after every read: the messages, then the error or the leftover.
fn frame_each_read(reads: &[&[u8]]) -> (Vec<Parsed>, Result<Vec<u8>, MessageError>) {
    let mut buf = Vec::new();
    let mut messages = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match frame(&buf) {
                Ok(Frame::Keepalive(skip)) => {
                    buf.drain(..skip);
                }
                Ok(Frame::Message(len)) => {
                    messages.push(parse(&buf[..len]));
                    buf.drain(..len);
                }
                Ok(Frame::Incomplete) => break,
                Err(error) => return (messages, Err(error)),
            }
        }
    }
    (messages, Ok(buf))
}

/// The same through a `Framer`.
fn framer_each_read(reads: &[&[u8]]) -> (Vec<Parsed>, Result<Vec<u8>, MessageError>) {
    let mut framer = Framer::default();
    let mut messages = Vec::new();
    for read in reads {
        framer.push(read);
        loop {
            match framer.next_message() {
                Ok(Some(parsed)) => messages.push(parsed),
                Ok(None) => break,
                Err(error) => return (messages, Err(error)),
            }
        }
    }
    (messages, Ok(framer.pending().to_vec()))
}

/// Split `bytes` into reads at the sorted, deduplicated `cuts`.
fn reads_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut reads = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        reads.push(&bytes[from..cut]);
        from = cut;
    }
    reads
}

#[test]
fn a_framer_frames_as_frame_does_however_the_stream_is_cut() {
    use proptest::prelude::*;
    let with_body = "OPTIONS sip:contoso.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKb\r\n\
        From: <sip:a@contoso.com>;tag=1\r\nTo: <sip:a@contoso.com>\r\nCall-ID: b\r\nCSeq: 2 OPTIONS\r\n\
        Content-Length: 5\r\n\r\nhello";
    let mut stream = b"\r\n\r\n".to_vec();
    for _ in 0..3 {
        stream.extend_from_slice(LYNC_REGISTER.as_bytes());
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(with_body.as_bytes());
    }
    stream.extend_from_slice(b"INVITE sip:b@contoso.com SIP/2.0\nl: 2\n\nab");
    stream.extend_from_slice(&LYNC_REGISTER.as_bytes()[..100]);
    // Every byte its own read, and the stream in one read.
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let (messages, rest) = framer_each_read(&bytes);
    assert_eq!(messages.len(), 7);
    assert_eq!(rest, Ok(LYNC_REGISTER.as_bytes()[..100].to_vec()));
    assert_eq!((messages, rest), frame_each_read(&bytes));
    assert_eq!(framer_each_read(&[&stream]), frame_each_read(&[&stream]));

    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&prop::collection::vec(any::<usize>(), 0..12), |cuts| {
            let reads = reads_at(&stream, &cuts);
            prop_assert_eq!(framer_each_read(&reads), frame_each_read(&reads));
            Ok(())
        })
        .expect("same messages");
    // Garbage, and requests with a byte changed (a Content-Length broken,
    // a blank line made or unmade), in any cut.
    runner
        .run(
            &(
                prop::collection::vec(any::<u8>(), 0..600),
                prop::collection::vec(any::<usize>(), 0..8),
            ),
            |(bytes, cuts)| {
                let reads = reads_at(&bytes, &cuts);
                prop_assert_eq!(framer_each_read(&reads), frame_each_read(&reads));
                Ok(())
            },
        )
        .expect("same outcome on garbage");
    runner
        .run(
            &(
                0usize..stream.len(),
                prop::sample::select(vec![b'\r', b'\n', b'0', b'9', b'x', b':']),
                prop::collection::vec(any::<usize>(), 0..8),
            ),
            |(at, byte, cuts)| {
                let mut bytes = stream.clone();
                bytes[at] = byte;
                let reads = reads_at(&bytes, &cuts);
                prop_assert_eq!(framer_each_read(&reads), frame_each_read(&reads));
                Ok(())
            },
        )
        .expect("same outcome on mutated streams");
}

#[test]
fn a_framer_refuses_a_header_section_that_never_ends() {
    let mut framer = Framer::default();
    let line = [b'a'; 1024];
    let mut outcome = Ok(None);
    for _ in 0..=MAX_MESSAGE / line.len() {
        framer.push(&line);
        outcome = framer.next_message();
        if outcome.is_err() {
            break;
        }
    }
    assert_eq!(
        outcome,
        Err(MessageError::Unreadable("header section too long"))
    );
    assert!(framer.pending().len() <= MAX_MESSAGE + line.len());
}
