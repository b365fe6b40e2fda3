//! One event as an RFC 5424 message, and its framing on the wire.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME poolgate PROCID MSGID [SD] MSG`: facility
//! local0, the event's severity ([`severity`]), the time it was stored,
//! msgid = the event kind (`health`, `admin`, `drain` …), and structured
//! data `[poolgate@32473 event_id=… pool=… member=…]` plus, for a health
//! change, its monitor and `to` state. 32473 is the private enterprise
//! number RFC 5612 reserves for documentation: a product shipped to
//! customers replaces it with its own registered number (the SNMP MIB
//! uses the same one). Pure: no I/O, no clock.

use crate::store::Event;

use super::settings::Severity;

/// The facility of every message: local0.
const FACILITY: u8 = 16;
/// The SD-ID of poolgate's structured data (`name@PEN`).
pub(crate) const SD_ID: &str = "poolgate@32473";
/// A message is cut (at a character boundary) beyond this many bytes of
/// text: RFC 5426 asks collectors for 2048-byte datagrams at least, and
/// an event message is a sentence.
pub(crate) const MAX_MSG_BYTES: usize = 1536;

/// How severe an event is: member down, fail-open, cut connections and
/// role changes are warnings; everything else an operator did or should
/// see is a notice.
pub(crate) fn severity(event: &Event) -> Severity {
    let detail = |key: &str| {
        event
            .detail
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(serde_json::Value::as_str)
    };
    match event.kind.as_str() {
        "health" if detail("to") == Some("down") => Severity::Warning,
        "drain"
            if event
                .detail
                .as_ref()
                .and_then(|d| d.get("overdue"))
                .and_then(serde_json::Value::as_bool)
                == Some(true) =>
        {
            Severity::Warning
        }
        "dns" | "proxy" | "ha" => Severity::Warning,
        _ => Severity::Notice,
    }
}

/// `text` with `"`, `\` and `]` escaped, as an SD-PARAM value must be.
fn escape_param(text: &str, out: &mut String) {
    for c in text.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A header field: printable US-ASCII without spaces, at most `max`
/// characters, or the nil value.
fn header_field(text: &str, max: usize) -> String {
    let field: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() { "-".into() } else { field }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The RFC 5424 message of `event`, as sent from `hostname` by process `pid`.
pub(crate) fn message(event: &Event, hostname: &str, pid: u32) -> String {
    let pri = FACILITY * 8 + severity(event).code();
    let mut sd = format!("[{SD_ID} event_id=\"{}\"", event.id);
    let detail = |key: &str| {
        event
            .detail
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(serde_json::Value::as_str)
    };
    let params = [
        ("pool", event.pool.as_deref()),
        ("member", event.member.as_deref()),
        (
            "monitor",
            detail("monitor").filter(|_| event.kind == "health"),
        ),
        ("state", detail("to").filter(|_| event.kind == "health")),
    ];
    for (name, value) in params {
        if let Some(value) = value {
            sd.push(' ');
            sd.push_str(name);
            sd.push_str("=\"");
            escape_param(value, &mut sd);
            sd.push('"');
        }
    }
    sd.push(']');
    // A leading BOM says the text is UTF-8 (RFC 5424 §6.4).
    format!(
        "<{pri}>1 {at} {host} poolgate {pid} {msgid} {sd} \u{feff}{msg}",
        at = header_field(&event.at, 32),
        host = header_field(hostname, 255),
        msgid = header_field(&event.kind, 32),
        msg = cut(&event.message, MAX_MSG_BYTES),
    )
}

/// `message` framed for a stream (RFC 6587 octet counting, as RFC 5425
/// requires over TLS): its length in bytes, a space, the message.
pub(crate) fn octet_counted(message: &str) -> Vec<u8> {
    let mut frame = format!("{} ", message.len()).into_bytes();
    frame.extend_from_slice(message.as_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, message: &str, detail: Option<serde_json::Value>) -> Event {
        Event {
            id: 42,
            at: "2026-01-02T03:04:05.678Z".into(),
            kind: kind.into(),
            pool: Some("pool01".into()),
            member: Some("fe01".into()),
            message: message.into(),
            detail,
        }
    }

    #[test]
    fn a_member_down_is_a_warning_with_pool_member_and_monitor() {
        let down = event(
            "health",
            "fe-sip: up -> down (connection refused)",
            Some(serde_json::json!({"monitor": "fe-sip", "from": "up", "to": "down"})),
        );
        assert_eq!(
            message(&down, "pg1.contoso.test", 77),
            "<132>1 2026-01-02T03:04:05.678Z pg1.contoso.test poolgate 77 health \
             [poolgate@32473 event_id=\"42\" pool=\"pool01\" member=\"fe01\" monitor=\"fe-sip\" state=\"down\"] \
             \u{feff}fe-sip: up -> down (connection refused)"
        );
        let up = event(
            "health",
            "fe-sip: down -> up",
            Some(serde_json::json!({"monitor": "fe-sip", "to": "up"})),
        );
        assert_eq!(severity(&up), Severity::Notice);
        assert!(message(&up, "h", 1).starts_with("<133>1 "));
    }

    #[test]
    fn values_are_escaped_and_headers_stay_printable() {
        let mut odd = event("admin", "drained by \"bob\"", None);
        odd.pool = Some("a\"b]c\\d".into());
        odd.member = None;
        let text = message(&odd, "bad host name", 1);
        assert!(
            text.contains(r#"[poolgate@32473 event_id="42" pool="a\"b\]c\\d"]"#),
            "{text}"
        );
        assert!(text.contains(" badhostname poolgate "), "{text}");
        assert_eq!(header_field("", 5), "-");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = event("system", &"é".repeat(MAX_MSG_BYTES), None);
        let text = message(&long, "h", 1);
        let msg = text.split('\u{feff}').nth(1).expect("message text");
        assert!(msg.len() <= MAX_MSG_BYTES && msg.len() >= MAX_MSG_BYTES - 1);
    }

    #[test]
    fn frames_count_bytes_not_characters() {
        assert_eq!(octet_counted("é"), b"2 \xc3\xa9".to_vec());
    }
}
