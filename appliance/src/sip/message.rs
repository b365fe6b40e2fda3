//! SIP message framing and parsing (RFC 3261 §7, §18.3, §20, §25). Pure: no
//! I/O. Owns what a stateless redirect server needs to read from a request
//! and nothing more: the request line, header fields (compact forms and line
//! folding included, names matched case-insensitively, values unfolded), and
//! the body length. Header fields a redirect server answers from (Via, From,
//! To, Call-ID, CSeq, Content-Length, Max-Forwards, Expires, Contact, Date)
//! are checked against the RFC 3261 grammar; others are kept verbatim.
//!
//! Invariants: parsing never panics and never reads past the input; a
//! header line holding a control character (CR, LF, NUL and the rest of C0
//! but HTAB) other than as a quoted-pair is malformed, and nothing in `Echo`
//! holds one at all, since responses copy it verbatim; a
//! message that fails a check is reported with the reason in words (it goes
//! into the `400` reason phrase) and, separately, with whether a response can
//! still be matched by the client (`Rejection::addressable`).

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

/// Header section plus body never exceed this on a stream; a datagram is
/// bounded by the receive buffer.
pub const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not a SIP message at all, or cut off before the end of its headers.
    #[error("{0}")]
    Unreadable(&'static str),
    /// A response: a redirect server never sent a request, so it drops them.
    #[error("a response")]
    Response,
    /// A request that breaks the grammar; `addressable` says whether a `400`
    /// can reach the client's transaction.
    #[error("{reason}")]
    Invalid { reason: String, addressable: bool },
    /// `SIP-Version` other than 2.0 (answered `505`).
    #[error("SIP version {0} not supported")]
    Version(String),
}

/// What a stream parser found at the front of its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Only CRLF keepalives (RFC 5626 §4.4.1): skip this many bytes.
    Keepalive(usize),
    /// A whole message of this many bytes (headers, blank line, body).
    Message(usize),
    /// Need more bytes.
    Incomplete,
}

/// Find the next message in a stream buffer, by the blank line that ends the
/// headers and the `Content-Length` it announces. A missing Content-Length
/// counts as zero (RFC 3261 §18.3 makes it mandatory on streams; zero is the
/// only reading that keeps the stream in step for the common bodiless
/// request). Several or non-numeric values leave the stream unframeable.
/// Each call reads `buf` from the start: a stream reader uses [`Framer`].
pub fn frame(buf: &[u8]) -> Result<Frame, MessageError> {
    let leading = keepalive_len(buf);
    if leading > 0 {
        return Ok(Frame::Keepalive(leading));
    }
    let Some(head_end) = header_end(buf, 0) else {
        return if buf.len() > MAX_MESSAGE {
            Err(MessageError::Unreadable("header section too long"))
        } else {
            Ok(Frame::Incomplete)
        };
    };
    let total = Head::read(buf, head_end).total()?;
    Ok(if buf.len() >= total {
        Frame::Message(total)
    } else {
        Frame::Incomplete
    })
}

/// CR and LF bytes at the front of `buf`: keepalives between messages.
fn keepalive_len(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count()
}

/// Cuts a byte stream into messages as it arrives, reading every byte a
/// bounded number of times however it is split into reads: the search for
/// the blank line ending a header section resumes where the previous read
/// left it, the header section is read once (for its Content-Length, and
/// then for the request), and while the body is arriving nothing is read
/// at all. The buffer holds the message being framed plus the newest read,
/// so it never exceeds [`MAX_MESSAGE`] plus one read.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where the message being framed starts; bytes before it belong to
    /// messages already handed out and go at the next [`Framer::push`].
    start: usize,
    /// How far into that message the header-end search has looked.
    searched: usize,
    /// Its header section and total length, once the header section is in.
    head: Option<(Head, usize)>,
}

impl Framer {
    /// Append bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            // One move per read, not one per pipelined message.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The bytes of the message being framed; empty between messages.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The next whole message, parsed, or `None` until more bytes arrive;
    /// keepalives are skipped. An error means the stream cannot be kept in
    /// step (see [`frame`]): the caller answers what it can and closes.
    pub fn next_message(&mut self) -> Result<Option<Parsed>, MessageError> {
        let total = match &self.head {
            Some((_, total)) => *total,
            None => {
                // Only at a message's first byte can there be keepalives:
                // once searched, the message starts with something else.
                self.start += keepalive_len(&self.buf[self.start..]);
                let pending = &self.buf[self.start..];
                let Some(head_end) = header_end(pending, self.searched) else {
                    if pending.len() > MAX_MESSAGE {
                        return Err(MessageError::Unreadable("header section too long"));
                    }
                    // The last two bytes may begin the blank line.
                    self.searched = pending.len().saturating_sub(2);
                    return Ok(None);
                };
                let head = Head::read(pending, head_end);
                let total = head.total()?;
                self.head = Some((head, total));
                total
            }
        };
        if self.pending().len() < total {
            return Ok(None);
        }
        let (head, _) = self.head.take().expect("the head was read above");
        self.start += total;
        self.searched = 0;
        let body = total - head.end;
        Ok(Some(parse_head(head, body)))
    }
}

/// Index just past the blank line ending the header section (CRLFCRLF; a
/// bare LFLF is accepted from lenient senders), searching from `from`: a
/// caller that searched a shorter buffer before resumes at its length less
/// two, the most the blank line can have begun before the end.
fn header_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// A header section, read once: where it ends in the message (just past
/// the blank line) and its unfolded lines, the start line first.
#[derive(Debug)]
struct Head {
    end: usize,
    lines: Vec<String>,
}

impl Head {
    fn read(message: &[u8], end: usize) -> Self {
        Self {
            end,
            lines: unfold(&String::from_utf8_lossy(&message[..end])),
        }
    }

    /// The length of the whole message: the header section and the body
    /// its Content-Length announces.
    fn total(&self) -> Result<usize, MessageError> {
        let mut length: Option<usize> = None;
        for line in self.lines.iter().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if canonical_name(name.trim_end()) == "content-length" {
                if length.is_some() {
                    return Err(MessageError::Unreadable("several Content-Length values"));
                }
                length = Some(parse_decimal(value.trim(), MAX_MESSAGE as u64).ok_or(
                    MessageError::Unreadable("Content-Length is not a valid length"),
                )? as usize);
            }
        }
        let total = self.end + length.unwrap_or(0);
        if total > MAX_MESSAGE {
            return Err(MessageError::Unreadable("message too long"));
        }
        Ok(total)
    }
}

/// Lines of a header section with folded continuation lines joined by one
/// space (RFC 3261 §7.3.1). The blank line and line ends are dropped.
fn unfold(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let continues = line.starts_with([' ', '\t']) && lines.len() > 1;
        match lines.last_mut() {
            Some(last) if continues => {
                last.truncate(last.trim_end().len());
                last.push(' ');
                last.push_str(line.trim_start());
            }
            _ => lines.push(line.to_owned()),
        }
    }
    lines
}

/// Full lower-case header name for a name or its compact form (RFC 3261
/// §7.3.3 and the registry's other compact forms).
pub(crate) fn canonical_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let full = match lower.as_str() {
        "i" => "call-id",
        "m" => "contact",
        "e" => "content-encoding",
        "l" => "content-length",
        "c" => "content-type",
        "f" => "from",
        "s" => "subject",
        "k" => "supported",
        "t" => "to",
        "v" => "via",
        "o" => "event",
        "r" => "refer-to",
        "u" => "allow-events",
        "b" => "referred-by",
        "x" => "session-expires",
        "a" => "accept-contact",
        "j" => "reject-contact",
        "d" => "request-disposition",
        "y" => "identity",
        "n" => "identity-info",
        _ => return lower,
    };
    full.to_owned()
}

/// One header field: canonical lower-case name, unfolded trimmed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// A parsed request. `headers` keeps every field in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub headers: Vec<Header>,
    pub body_len: usize,
}

impl Request {
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| h.value.as_str())
    }

    pub(crate) fn first<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).next()
    }
}

/// The fields a response echoes (RFC 3261 §8.2.6.2), present when a request
/// could be parsed far enough, even if it is otherwise invalid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echo {
    pub vias: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call_id: Option<String>,
    pub cseq: Option<String>,
}

impl Echo {
    /// What to echo of `headers`, with no control character in it. The
    /// grammar lets a quoted string carry one as a quoted-pair (RFC 4475
    /// `intmeth` has `\NUL` in a To display name); echoed, it could cut a
    /// response header short. A From or To then loses its display name (the
    /// URI and tag, which identify the dialog, stay); any other such value
    /// is not echoed, and a Via that is not echoed whole is not echoed at
    /// all, which leaves the request unaddressable.
    fn of(headers: &[Header]) -> Self {
        let clean = |value: &str| !value.bytes().any(is_control);
        let first = |name: &str| {
            headers
                .iter()
                .find(|h| h.name == name)
                .map(|h| h.value.as_str())
        };
        let address = |name: &str| {
            let value = first(name)?;
            if clean(value) {
                return Some(value.to_owned());
            }
            let bare = &value[find_unquoted(value, b'<')?..];
            clean(bare).then(|| bare.to_owned())
        };
        let vias: Vec<String> = headers
            .iter()
            .filter(|h| h.name == "via")
            .map(|h| h.value.clone())
            .collect();
        Self {
            vias: if vias.iter().all(|v| clean(v)) {
                vias
            } else {
                Vec::new()
            },
            from: address("from"),
            to: address("to"),
            call_id: first("call-id").filter(|v| clean(v)).map(str::to_owned),
            cseq: first("cseq").filter(|v| clean(v)).map(str::to_owned),
        }
    }

    /// A client matches a response to its transaction by the branch of the
    /// top Via and the CSeq method (RFC 3261 §17.1.3); without a readable
    /// top Via and a CSeq method a response cannot reach anyone.
    pub(crate) fn addressable(&self) -> bool {
        let via_ok = self
            .vias
            .first()
            .is_some_and(|via| sent_protocol_and_by(first_via_element(via)).is_some());
        let cseq_ok = self
            .cseq
            .as_deref()
            .and_then(|c| c.split_whitespace().last())
            .is_some_and(is_token);
        via_ok && cseq_ok
    }
}

/// A request together with what to echo, or why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub echo: Echo,
    pub result: Result<Request, MessageError>,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.uri)
    }
}

/// Parse one whole message (a datagram, or a frame cut by `frame`). On a
/// datagram the body may be longer than Content-Length (the rest is
/// ignored, RFC 3261 §18.3) but not shorter.
pub fn parse(message: &[u8]) -> Parsed {
    let message = &message[keepalive_len(message)..];
    let Some(head_end) = header_end(message, 0) else {
        return Parsed {
            echo: Echo::default(),
            result: Err(MessageError::Unreadable("no end of header section")),
        };
    };
    parse_head(Head::read(message, head_end), message.len() - head_end)
}

/// Parse a message from its header section, `body_available` bytes of body
/// following it.
fn parse_head(head: Head, body_available: usize) -> Parsed {
    let unreadable = |why| Parsed {
        echo: Echo::default(),
        result: Err(MessageError::Unreadable(why)),
    };
    let lines = head.lines;
    let Some(start_line) = lines.first() else {
        return unreadable("empty message");
    };
    if start_line.starts_with("SIP/") || start_line.starts_with("sip/") {
        return Parsed {
            echo: Echo::default(),
            result: Err(MessageError::Response),
        };
    }

    let mut headers = Vec::with_capacity(lines.len());
    let mut bad_line = None;
    let mut via_tainted = false;
    for line in &lines[1..] {
        // A control character left in a line (a bare CR, a NUL; line ends
        // are gone by now) breaks the grammar and, echoed, could split or
        // cut a response header: the line is malformed and never echoed.
        if !controls_escaped(line) {
            bad_line = bad_line.or(Some(line.clone()));
            // Without that Via the rest would misstate the path back:
            // echo none, so the request is not addressable.
            via_tainted |= line
                .split_once(':')
                .is_some_and(|(name, _)| canonical_name(name.trim_end()) == "via");
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if is_token(name.trim_end()) => headers.push(Header {
                name: canonical_name(name.trim_end()),
                value: value.trim().to_owned(),
            }),
            _ => bad_line = bad_line.or(Some(line.clone())),
        }
    }
    let mut echo = Echo::of(&headers);
    if via_tainted {
        echo.vias.clear();
    }
    let fail = |reason: String| Parsed {
        result: Err(MessageError::Invalid {
            addressable: echo.addressable(),
            reason,
        }),
        echo: echo.clone(),
    };

    let (method, uri) = match request_line(start_line) {
        Ok(parts) => parts,
        Err(RequestLineError::Version(version)) => {
            return Parsed {
                result: Err(MessageError::Version(version)),
                echo,
            };
        }
        Err(RequestLineError::Invalid(reason)) => return fail(reason.to_owned()),
    };
    if let Some(line) = bad_line {
        // The reason phrase is sent back: show the line's text, not its
        // control characters.
        let shown: String = line
            .chars()
            .take(40)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        return fail(format!("Malformed header line \"{shown}\""));
    }
    let request = Request {
        method,
        uri,
        headers,
        body_len: 0,
    };
    match check(&request, body_available) {
        Ok(body_len) => Parsed {
            result: Ok(Request {
                body_len,
                ..request
            }),
            echo,
        },
        Err(reason) => fail(reason),
    }
}

enum RequestLineError {
    Invalid(&'static str),
    Version(String),
}

/// `Method SP Request-URI SP SIP-Version`, single spaces, nothing trailing
/// (RFC 3261 §7.1; RFC 4475 lwsstart, trws, ltgtruri, lwsruri).
fn request_line(line: &str) -> Result<(String, String), RequestLineError> {
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, uri, version] = parts.as_slice() else {
        return Err(RequestLineError::Invalid(
            "Request-Line must be Method SP Request-URI SP SIP-Version",
        ));
    };
    if !is_token(method) {
        return Err(RequestLineError::Invalid("Method is not a token"));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        // Byte-wise: a version may hold a replacement character (invalid
        // UTF-8 read lossily) that a slice at byte 4 would cut through.
        let well_formed = version
            .as_bytes()
            .get(..4)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"SIP/"))
            && version
                .get(4..)
                .and_then(|numbers| numbers.split_once('.'))
                .is_some_and(|(a, b)| is_digits(a) && is_digits(b));
        return Err(if well_formed {
            RequestLineError::Version(version.to_string())
        } else {
            RequestLineError::Invalid("SIP-Version is malformed")
        });
    }
    if uri.is_empty()
        || uri
            .bytes()
            .any(|b| matches!(b, b'<' | b'>' | b'"' | b'\t') || b < 0x21)
    {
        return Err(RequestLineError::Invalid(
            "Request-URI contains characters that must be escaped",
        ));
    }
    if uri_scheme(uri).is_none() {
        return Err(RequestLineError::Invalid("Request-URI has no scheme"));
    }
    Ok(((*method).to_owned(), (*uri).to_owned()))
}

/// The scheme of an absolute URI, lower-cased.
pub(crate) fn uri_scheme(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    (first_ok
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !rest.is_empty())
    .then(|| scheme.to_ascii_lowercase())
}

/// The checks of the header fields a redirect server relies on. Returns the
/// body length, or the reason the request is malformed.
fn check(request: &Request, body_available: usize) -> Result<usize, String> {
    let is_sip = matches!(uri_scheme(&request.uri).as_deref(), Some("sip" | "sips"));
    let hostport = request.uri.rsplit('@').next().unwrap_or_default();
    if is_sip && hostport.contains('?') {
        return Err("Request-URI must not contain headers".into());
    }
    let mut missing = Vec::new();
    for (name, shown) in [
        ("via", "Via"),
        ("from", "From"),
        ("to", "To"),
        ("call-id", "Call-ID"),
        ("cseq", "CSeq"),
    ] {
        match request.all(name).count() {
            0 => missing.push(shown),
            1 => {}
            _ if name == "via" => {}
            _ => return Err(format!("Several {shown} header fields")),
        }
    }
    if !missing.is_empty() {
        return Err(format!("Missing {}", missing.join(", ")));
    }
    for via in request.all("via") {
        check_via(via).map_err(|why| format!("Malformed Via: {why}"))?;
    }
    for (name, shown) in [("from", "From"), ("to", "To")] {
        let value = request.first(name).unwrap_or_default();
        check_address(value, false).map_err(|why| format!("Malformed {shown}: {why}"))?;
    }
    let call_id = request.first("call-id").unwrap_or_default();
    if call_id.is_empty() || call_id.bytes().any(|b| b <= b' ') {
        return Err("Malformed Call-ID".into());
    }
    let cseq = request.first("cseq").unwrap_or_default();
    let (number, method) = cseq
        .split_once([' ', '\t'])
        .map(|(n, m)| (n, m.trim()))
        .ok_or("Malformed CSeq")?;
    // RFC 3261 §8.1.1.5: the sequence number is below 2**31.
    if parse_decimal(number, (1 << 31) - 1).is_none() || !is_token(method) {
        return Err("Malformed CSeq".into());
    }
    if method != request.method {
        return Err("CSeq method does not match the Request-Line".into());
    }
    let mut lengths = request.all("content-length");
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => body_available,
        (Some(_), Some(_)) => return Err("Several Content-Length header fields".into()),
        (Some(value), None) => {
            parse_decimal(value, u32::MAX.into()).ok_or("Malformed Content-Length")? as usize
        }
    };
    if length > body_available {
        return Err("Content-Length is larger than the body".into());
    }
    let mut forwards = request.all("max-forwards");
    if let Some(value) = forwards.next() {
        if forwards.next().is_some() {
            return Err("Several Max-Forwards header fields".into());
        }
        parse_decimal(value, 255).ok_or("Max-Forwards must be 0 to 255")?;
    }
    for value in request.all("expires") {
        parse_decimal(value, u32::MAX.into()).ok_or("Malformed Expires")?;
    }
    for value in request.all("contact") {
        if value == "*" {
            continue;
        }
        for element in split_unquoted(value, b',') {
            check_address(element, true).map_err(|why| format!("Malformed Contact: {why}"))?;
        }
    }
    for value in request.all("date") {
        // RFC 3261 §20.17: rfc1123-date, always GMT.
        if !value.ends_with(" GMT") {
            return Err("Date must be in GMT".into());
        }
    }
    Ok(length)
}

/// The top Via header value of a request from `source` as its response
/// carries it: a valueless `rport` gets the source port and `received` the
/// source address (RFC 3581 §4, both whenever `rport` is asked for), and
/// otherwise `received` is added when the sent-by host is not the source
/// address (RFC 3261 §18.2.1). Any `received` the request carried is
/// replaced. A Via that cannot be read is left as it is.
pub(crate) fn stamp_via(via: &str, source: SocketAddr) -> String {
    let top = first_via_element(via);
    let rest = &via[top.len()..];
    let Some((_, _, by)) = sent_protocol_and_by(top) else {
        return via.to_owned();
    };
    let ip = source.ip().to_canonical();
    let host = match by.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => by.split(':').next().unwrap_or_default(),
    };
    let mut pieces = split_unquoted(top, b';');
    let head = pieces.next().unwrap_or_default().trim_end();
    let mut rport_asked = false;
    let mut params: Vec<String> = Vec::new();
    for param in pieces {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = key.trim();
        if key.eq_ignore_ascii_case("received") {
            continue;
        }
        if key.eq_ignore_ascii_case("rport") && value.trim().is_empty() {
            rport_asked = true;
            continue;
        }
        params.push(param.trim().to_owned());
    }
    let mut out = head.to_owned();
    for param in &params {
        out.push(';');
        out.push_str(param);
    }
    if rport_asked || host.parse::<std::net::IpAddr>().ok() != Some(ip) {
        // RFC 3261's grammar: an IPv6 address without brackets.
        let _ = write!(out, ";received={ip}");
    }
    if rport_asked {
        let _ = write!(out, ";rport={}", source.port());
    }
    out.push_str(rest);
    out
}

fn first_via_element(via: &str) -> &str {
    split_unquoted(via, b',').next().unwrap_or_default()
}

/// `SIP / version / transport LWS sent-by`, returning (version, transport,
/// sent-by). Any version is read, so a `505` can still be addressed.
fn sent_protocol_and_by(element: &str) -> Option<(&str, &str, &str)> {
    let head = element.split(';').next()?;
    let mut parts = head.splitn(3, '/');
    let name = parts.next()?.trim();
    let version = parts.next()?.trim();
    let rest = parts.next()?.trim_start();
    if !name.eq_ignore_ascii_case("SIP")
        || !version
            .split_once('.')
            .is_some_and(|(a, b)| is_digits(a) && is_digits(b))
    {
        return None;
    }
    let (transport, by) = rest.split_once([' ', '\t'])?;
    let by = by.trim();
    (is_token(transport) && !by.is_empty() && by.bytes().all(|b| b > b' ' && b != b','))
        .then_some((version, transport, by))
}

fn check_via(via: &str) -> Result<(), &'static str> {
    for element in split_unquoted(via, b',') {
        let element = element.trim();
        if element.is_empty() {
            return Err("empty via-parm");
        }
        let (version, _, _) =
            sent_protocol_and_by(element).ok_or("bad sent-protocol or sent-by")?;
        if version != "2.0" {
            return Err("protocol version is not 2.0");
        }
        let mut params = split_unquoted(element, b';');
        params.next();
        for param in params {
            check_param(param)?;
        }
    }
    Ok(())
}

/// `name [= value]` with LWS allowed around '='; the value a token, host or
/// quoted string.
fn check_param(param: &str) -> Result<(), &'static str> {
    let (name, value) = match param.split_once('=') {
        Some((name, value)) => (name.trim(), Some(value.trim())),
        None => (param.trim(), None),
    };
    if !is_token(name) {
        return Err("empty or malformed parameter");
    }
    match value {
        None => Ok(()),
        Some(value) if value.starts_with('"') => quoted_end(value)
            .filter(|&end| end == value.len())
            .map(|_| ())
            .ok_or("unterminated quoted string"),
        Some(value)
            if !value.is_empty()
                && value
                    .bytes()
                    .all(|b| is_token_byte(b) || matches!(b, b'[' | b']' | b':')) =>
        {
            Ok(())
        }
        Some(_) => Err("malformed parameter value"),
    }
}

/// `name-addr / addr-spec` followed by `;params` (From, To, Contact).
fn check_address(value: &str, contact: bool) -> Result<(), &'static str> {
    let value = value.trim();
    let (rest, uri) = if let Some(open) = find_unquoted(value, b'<') {
        let display = value[..open].trim();
        if !display.is_empty() {
            if display.starts_with('"') {
                if quoted_end(display) != Some(display.len()) {
                    return Err("unterminated quoted display name");
                }
            } else if !display
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .all(is_token)
            {
                return Err("display name must be tokens or a quoted string");
            }
        }
        let inner = &value[open + 1..];
        let close = inner.find('>').ok_or("missing '>'")?;
        let uri = &inner[..close];
        if uri.bytes().any(|b| b <= b' ') {
            return Err("whitespace inside <>");
        }
        (&inner[close + 1..], uri)
    } else {
        if value.starts_with('"') {
            return Err("quoted display name without <URI>");
        }
        // addr-spec: the URI ends at the first ';' (what follows are
        // header parameters) and may not carry '?' or ',' (RFC 3261 §20.10).
        let end = value.find(';').unwrap_or(value.len());
        let uri = value[..end].trim_end();
        if uri.contains(['?', ',', ' ', '\t']) {
            return Err("a URI with headers or spaces must be enclosed in <>");
        }
        (&value[end..], uri)
    };
    if uri_scheme(uri).is_none() {
        return Err("URI has no scheme");
    }
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(());
    }
    let Some(params) = rest.strip_prefix(';') else {
        return Err("unexpected text after the URI");
    };
    for param in split_unquoted(params, b';') {
        check_param(param)?;
        if contact
            && let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("expires")
            && parse_decimal(value.trim(), u32::MAX.into()).is_none()
        {
            return Err("expires parameter out of range");
        }
    }
    Ok(())
}

/// Index just past the closing quote of a quoted string at the start of
/// `text` (backslash escapes honoured).
fn quoted_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn find_unquoted(text: &str, wanted: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i += quoted_end(&text[i..])?,
            b if b == wanted => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Split at `separator` outside quoted strings and angle brackets.
pub(crate) fn split_unquoted(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut pieces = Vec::new();
    let (mut start, mut i, mut quoted, mut angle) = (0, 0, false, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' if !angle => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b if b == separator && !quoted && !angle => {
                pieces.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    pieces.push(&text[start.min(text.len())..]);
    pieces.into_iter()
}

/// A parameter of a header value (`;name=value`), case-insensitive name.
pub(crate) fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    // Skip past the URI of a name-addr so URI parameters do not count.
    let after = match find_unquoted(value, b'<') {
        Some(open) => &value[open..][value[open..].find('>')?..],
        None => value,
    };
    split_unquoted(after, b';').skip(1).find_map(|p| {
        let (key, val) = p.split_once('=').unwrap_or((p, ""));
        key.trim().eq_ignore_ascii_case(name).then(|| val.trim())
    })
}

/// Whether every control character of a header line is the second byte of
/// a quoted-pair inside a quoted string, and none is CR or LF (RFC 3261
/// §25.1: `quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)`).
fn controls_escaped(line: &str) -> bool {
    let bytes = line.as_bytes();
    let (mut i, mut quoted) = (0, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => {
                if matches!(bytes.get(i + 1), Some(b'\r' | b'\n')) {
                    return false;
                }
                i += 1;
            }
            b'"' => quoted = !quoted,
            b if is_control(b) => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

/// Bytes no header line may hold once line ends are removed: C0 controls
/// but HTAB, and DEL (RFC 3261 §25.1: TEXT-UTF8char, LWS).
pub fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// A decimal of at most `max`, digits only.
fn parse_decimal(text: &str, max: u64) -> Option<u64> {
    if !is_digits(text) {
        return None;
    }
    text.parse::<u64>().ok().filter(|&n| n <= max)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

pub fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_token_byte)
}

#[cfg(test)]
#[path = "message_tests.rs"]
pub(crate) mod tests;
