//! The redirect service's answer to arbitrary bytes: parse, then decide
//! against a fixed view (the loopback example pool, plus a second pool with
//! IPv6 members and no FQDNs). It must never panic, and every response must
//! be a well-formed header section: a `SIP/2.0 <code> ` status line, lines
//! ended by CRLF with no other control character, a blank line at the end,
//! and no body.

#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use poolgate::config;
use poolgate::sip::message::{self, is_control};
use poolgate::sip::redirect::{self, Decision};
use poolgate::state::{Inputs, PoolView};

const SECOND_POOL: &str = r#"
[[pool]]
name = "pool02"
fqdn = "pool02.contoso.test"
monitor = "fe-sip"
registrar_port = 5060
registrar_transport = "udp"

[[pool.member]]
name = "v6a"
address = "::1"

[[pool.member]]
name = "v6b"
address = "127.0.0.21"
"#;

/// Where the requests come from (an IPv6 source, so `received` is written
/// in that form too).
const SOURCE: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 5070);

static VIEW: LazyLock<PoolView> = LazyLock::new(|| {
    let text = format!(
        "{}{SECOND_POOL}",
        include_str!("../../../examples/lync-pool.toml")
    );
    let config = config::from_toml(&text, "fuzz.toml").expect("the fuzz config is valid");
    PoolView::build(&Inputs::new(Arc::new(config), 1, BTreeMap::new()), 1)
});

fuzz_target!(|data: &[u8]| {
    let parsed = message::parse(data);
    let Decision::Respond(response) = redirect::decide(&VIEW, &parsed, SOURCE) else {
        return;
    };
    assert!((100..700).contains(&response.status));
    let text = std::str::from_utf8(&response.bytes).expect("a response is UTF-8");
    let head = text
        .strip_suffix("\r\n\r\n")
        .expect("a response ends with a blank line and has no body");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("a status line");
    assert!(
        status.starts_with(&format!("SIP/2.0 {} ", response.status)),
        "{status:?}"
    );
    for line in std::iter::once(status).chain(lines) {
        assert!(!line.is_empty(), "an empty line inside {text:?}");
        assert!(!line.bytes().any(is_control), "{line:?}");
    }
    if let Some((pool, member)) = response.registered_to {
        assert!(VIEW.pools[pool].members.get(member).is_some());
    }
});
