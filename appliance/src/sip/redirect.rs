//! The redirect server's answers: what a stateless redirect server (RFC 3261
//! §8.2, §8.3, §16.11 for the stateless parts) says to one message, given
//! one `PoolView` generation. Pure: no I/O, no clock.
//!
//! | request | answer |
//! |---|---|
//! | response, unreadable bytes | dropped (nothing to address) |
//! | malformed, Via + CSeq readable | `400` with what was wrong as the reason phrase |
//! | malformed, not addressable | dropped |
//! | SIP-Version ≠ 2.0 | `505` |
//! | `ACK` | never answered (it acknowledges a final response; no transaction) |
//! | Request-URI not `sip:`/`sips:` | `416` |
//! | `Require` present | `420` listing every option tag as `Unsupported` (none are) |
//! | `REGISTER` | `301` to the physical sequence of the To AoR; `416` for a non-SIP To; `503` + `Retry-After` when nothing is eligible |
//! | `OPTIONS` | `200` (keepalive and capability probe) |
//! | `REGISTER`, `INVITE`, `SUBSCRIBE`, `REFER`, `MESSAGE` whose Request-URI host is a pool member | `482` with a `Warning`: the request followed a `301` back here (poolgate as the client's outbound proxy); redirecting it again would never end |
//! | `INVITE`, `SUBSCRIBE`, `REFER`, `MESSAGE` outside a dialog | `301` to the Request-URI user's physical sequence |
//! | the same inside a dialog (To has a tag) | `481`: a redirect server holds no dialogs |
//! | `CANCEL` | `200`: the request it cancels was answered with a final response at once, so there is nothing left to cancel (RFC 3261 §9.2); its To tag is the one that response carried |
//! | other known methods (`BYE`, `NOTIFY`, Lync's `SERVICE`, `NEGOTIATE`, `BENOTIFY` …) | `405` with `Allow` |
//! | unknown methods | `501` |
//!
//! Every response echoes the top Via with `received` and `rport` filled in
//! for the request's source (RFC 3261 §18.2.1, RFC 3581), so a client
//! behind NAT can match it, and its To tag is a hash of what identifies the
//! request (Call-ID, From, the CSeq number, the top Via), the same for a
//! retransmission and for the CANCEL of a request.
//!
//! The pool is the one whose FQDN or an alias is the host of the
//! Request-URI, else of the To URI, else the first configured pool: a
//! REGISTER for `sip:contoso.com` reaches poolgate by the SRV record of the
//! user's domain, which names no pool.

use std::fmt::Write as _;
use std::hash::Hasher;
use std::net::SocketAddr;

use siphasher::sip::SipHasher13;

use super::message::{self, Echo, MessageError, Parsed, Request};
use super::registrar;
use crate::config::Transport;
use crate::state::PoolView;

/// Methods this server handles; sent in `Allow`.
pub(crate) const ALLOW: &str = "REGISTER, OPTIONS, INVITE, SUBSCRIBE, REFER, MESSAGE, ACK, CANCEL";

/// Methods redirected to the home server of the Request-URI's user.
const REDIRECTED: [&str; 4] = ["INVITE", "SUBSCRIBE", "REFER", "MESSAGE"];

/// Methods known (RFC 3261 and extensions, Lync's own) but not served here.
const KNOWN: [&str; 9] = [
    "BYE",
    "PRACK",
    "UPDATE",
    "INFO",
    "NOTIFY",
    "PUBLISH",
    "SERVICE",
    "NEGOTIATE",
    "BENOTIFY",
];

/// How long a client should wait before retrying when no member is eligible.
const RETRY_AFTER_S: u32 = 30;

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Respond(Response),
    /// Nothing is sent; the reason is logged and counted.
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Response,
    Ack,
    Unaddressable,
}

impl DropReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Response => "response",
            Self::Ack => "ack",
            Self::Unaddressable => "unaddressable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub bytes: Vec<u8>,
    /// For a redirected REGISTER: (pool index, member index) of the member
    /// the user is sent to first, for its registration counter.
    pub registered_to: Option<(usize, usize)>,
    /// For a redirected REGISTER: the canonical address-of-record.
    pub aor: Option<String>,
}

/// Decide the answer to one parsed message that came from `source`.
pub fn decide(view: &PoolView, parsed: &Parsed, source: SocketAddr) -> Decision {
    let request = match &parsed.result {
        Ok(request) => request,
        Err(MessageError::Response) => return Decision::Drop(DropReason::Response),
        Err(MessageError::Unreadable(_)) => return Decision::Drop(DropReason::Unaddressable),
        Err(_) if !parsed.echo.addressable() => return Decision::Drop(DropReason::Unaddressable),
        Err(MessageError::Invalid { reason, .. }) => {
            return respond(&Answer::new(parsed, source), 400, reason, &[]);
        }
        Err(MessageError::Version(_)) => {
            return respond(
                &Answer::new(parsed, source),
                505,
                "Version Not Supported",
                &[],
            );
        }
    };
    let echo = &Answer::new(parsed, source);
    if request.method == "ACK" {
        return Decision::Drop(DropReason::Ack);
    }
    if !is_sip_uri(&request.uri) {
        return respond(echo, 416, "Unsupported URI Scheme", &[]);
    }
    let required: Vec<&str> = request
        .all("require")
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .collect();
    if !required.is_empty() && request.method != "CANCEL" {
        let unsupported = required.join(", ");
        return respond(echo, 420, "Bad Extension", &[("Unsupported", &unsupported)]);
    }
    let in_dialog = echo
        .to
        .as_deref()
        .is_some_and(|to| message::param(to, "tag").is_some());
    let redirected = request.method == "REGISTER" || REDIRECTED.contains(&request.method.as_str());
    if redirected && let Some(member) = addressed_member(view, request) {
        return looped(echo, &member);
    }
    match request.method.as_str() {
        "REGISTER" => {
            let to = echo.to.as_deref().unwrap_or_default();
            if !is_sip_uri(address_uri(to)) {
                return respond(echo, 416, "Unsupported URI Scheme", &[]);
            }
            redirect(view, request, echo, to)
        }
        "OPTIONS" => respond(echo, 200, "OK", &[("Allow", ALLOW)]),
        "CANCEL" => respond(echo, 200, "OK", &[]),
        method if REDIRECTED.contains(&method) && !in_dialog => {
            redirect(view, request, echo, &request.uri)
        }
        method if REDIRECTED.contains(&method) => {
            respond(echo, 481, "Call/Transaction Does Not Exist", &[])
        }
        method if KNOWN.contains(&method) => {
            respond(echo, 405, "Method Not Allowed", &[("Allow", ALLOW)])
        }
        _ => respond(echo, 501, "Not Implemented", &[("Allow", ALLOW)]),
    }
}

/// The name of the pool member the Request-URI is addressed to, if any.
fn addressed_member(view: &PoolView, request: &Request) -> Option<String> {
    let aor = registrar::canonical_aor(&request.uri).ok()?;
    let host = aor.rsplit('@').next().unwrap_or_default();
    let (pool, member) = registrar::member_for_host(view, host)?;
    Some(view.pools[pool].members[member].name.clone())
}

/// `482` for a request that came back after following a `301` to
/// `member`: poolgate only redirects, so sending it on is the client's (or
/// its proxy's) job; answering `301` again would loop for ever.
fn looped(echo: &Answer<'_>, member: &str) -> Decision {
    let warning = format!(
        "399 poolgate \"the Request-URI names pool member {member}; poolgate redirects, it does not proxy: send the request to the member\""
    );
    respond(echo, 482, "Loop Detected", &[("Warning", &warning)])
}

/// `301` to the physical sequence of the user named by `target`.
fn redirect(view: &PoolView, request: &Request, echo: &Answer<'_>, target: &str) -> Decision {
    let Ok(aor) = registrar::canonical_aor(target) else {
        return respond(echo, 400, "Cannot read the address-of-record", &[]);
    };
    let Some(pool_index) = select_pool(view, request, echo) else {
        return unavailable(echo);
    };
    let pool = &view.pools[pool_index];
    let Some(settings) = view.config.pools.iter().find(|p| p.name == pool.name) else {
        return unavailable(echo);
    };
    let ranking = registrar::rank_pool(pool, &aor);
    let Some(first) = ranking.serving() else {
        return unavailable(echo);
    };
    let transport = match settings.registrar_transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
    };
    let contacts: Vec<String> = ranking
        .physical
        .iter()
        .enumerate()
        .map(|(position, &index)| {
            let member = &pool.members[index];
            let host = match (&member.fqdn, member.address_like(echo.source.ip())) {
                (Some(fqdn), _) => fqdn.clone(),
                (None, std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
                (None, address) => address.to_string(),
            };
            format!(
                "<sip:{host}:{};transport={transport}>;q={}",
                settings.registrar_port,
                q_value(position)
            )
        })
        .collect();
    let extra: Vec<(&str, &str)> = contacts.iter().map(|c| ("Contact", c.as_str())).collect();
    match respond(echo, 301, "Redirect request to Home Server", &extra) {
        Decision::Respond(response) => Decision::Respond(Response {
            registered_to: (request.method == "REGISTER").then_some((pool_index, first)),
            aor: (request.method == "REGISTER").then_some(aor),
            ..response
        }),
        drop => drop,
    }
}

/// q for the n-th Contact: 0.7, 0.3, then 0.2 falling by 0.005 (32 members
/// stay above zero and in order), in thousandths, written with no trailing
/// zeros (`0.7`, `0.3`, `0.2`, `0.195`, `0.19` …), as RFC 3261's qvalue
/// allows up to three decimals.
fn q_value(position: usize) -> String {
    let thousandths: usize = match position {
        0 => 700,
        1 => 300,
        n => 200 - 5 * (n.min(40) - 2),
    };
    let digits = format!("{thousandths:03}");
    format!("0.{}", digits.trim_end_matches('0'))
}

fn unavailable(echo: &Answer<'_>) -> Decision {
    respond(
        echo,
        503,
        "Service Unavailable",
        &[("Retry-After", &RETRY_AFTER_S.to_string())],
    )
}

fn select_pool(view: &PoolView, request: &Request, echo: &Echo) -> Option<usize> {
    let hosts = [Some(request.uri.as_str()), echo.to.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|uri| registrar::canonical_aor(uri).ok())
        .map(|aor| aor.rsplit('@').next().unwrap_or_default().to_owned());
    for host in hosts {
        if let Some(index) = registrar::pool_for_host(view, &host) {
            return Some(index);
        }
    }
    (!view.pools.is_empty()).then_some(0)
}

fn is_sip_uri(uri: &str) -> bool {
    matches!(message::uri_scheme(uri).as_deref(), Some("sip" | "sips"))
}

/// The URI of a name-addr or addr-spec header value.
fn address_uri(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value.split(';').next().unwrap_or_default().trim(),
    }
}

/// Build a response echoing Via, From, To (with a tag), Call-ID and CSeq
/// (RFC 3261 §8.2.6.2). The parser never lets a control character into
/// what it echoes; a value that holds one anyway is left out rather than
/// sent (it could end the header early or start a new one).
/// What an answer echoes (the request's `Echo`) and where the request came
/// from, which the top Via of the answer names (`message::stamp_via`).
struct Answer<'a> {
    echo: &'a Echo,
    source: SocketAddr,
}

impl<'a> Answer<'a> {
    fn new(parsed: &'a Parsed, source: SocketAddr) -> Self {
        Self {
            echo: &parsed.echo,
            source,
        }
    }
}

impl std::ops::Deref for Answer<'_> {
    type Target = Echo;

    fn deref(&self) -> &Echo {
        self.echo
    }
}

fn respond(echo: &Answer<'_>, status: u16, reason: &str, extra: &[(&str, &str)]) -> Decision {
    let mut out = String::with_capacity(512);
    // A reason phrase may hold any text but control characters.
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect();
    let _ = write!(out, "SIP/2.0 {status} {reason}\r\n");
    for (index, via) in echo.vias.iter().enumerate().filter(|(_, v)| safe(v)) {
        if index == 0 {
            let _ = write!(out, "Via: {}\r\n", message::stamp_via(via, echo.source));
        } else {
            let _ = write!(out, "Via: {via}\r\n");
        }
    }
    if let Some(from) = echo.from.as_deref().filter(|v| safe(v)) {
        let _ = write!(out, "From: {from}\r\n");
    }
    if let Some(to) = echo.to.as_deref().filter(|v| safe(v)) {
        if message::param(to, "tag").is_some() {
            let _ = write!(out, "To: {to}\r\n");
        } else {
            let _ = write!(out, "To: {to};tag={}\r\n", to_tag(echo));
        }
    }
    if let Some(call_id) = echo.call_id.as_deref().filter(|v| safe(v)) {
        let _ = write!(out, "Call-ID: {call_id}\r\n");
    }
    if let Some(cseq) = echo.cseq.as_deref().filter(|v| safe(v)) {
        let _ = write!(out, "CSeq: {cseq}\r\n");
    }
    for (name, value) in extra.iter().filter(|(_, v)| safe(v)) {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("Server: poolgate\r\nContent-Length: 0\r\n\r\n");
    Decision::Respond(Response {
        status,
        bytes: out.into_bytes(),
        registered_to: None,
        aor: None,
    })
}

/// Whether a header value can be sent as is: no CR, LF, NUL or other
/// control character but HTAB.
fn safe(value: &str) -> bool {
    !value.bytes().any(message::is_control)
}

/// A stateless server must give a retransmitted request the same To tag
/// (RFC 3261 §16.11), so the tag is a hash of what identifies the request.
fn to_tag(echo: &Echo) -> String {
    let mut hasher = SipHasher13::new_with_keys(0x0074_6167, 0x706f_6f6c_6761_7465);
    // The CSeq number only: a CANCEL (`1 CANCEL`) gets the tag the
    // response to its request (`1 INVITE`) had (RFC 3261 §9.2).
    let cseq_number = echo
        .cseq
        .as_deref()
        .and_then(|cseq| cseq.split_whitespace().next());
    for part in [
        echo.call_id.as_deref(),
        echo.from.as_deref(),
        cseq_number,
        echo.vias.first().map(String::as_str),
    ] {
        let part = part.unwrap_or_default();
        hasher.write(&(part.len() as u64).to_le_bytes());
        hasher.write(part.as_bytes());
    }
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
#[path = "redirect_tests.rs"]
pub(crate) mod tests;
