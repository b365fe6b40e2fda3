//! Why a probe failed, in the words people read in the status page and the
//! event log: [`ProbeError`], and [`io_error`] naming a socket error. Every
//! kind of probe (`probe`, and the SIP exchange in `sip`) reports through
//! it, so it depends on neither of them.

use std::io;
use std::time::Duration;

/// Why a probe failed; `Display` is the reason shown to people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("connection refused")]
    Refused,
    #[error("timeout after {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("TLS: cannot use CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("HTTP {0}")]
    HttpStatus(u16),
    #[error("HTTP {status}: body does not contain {needle:?}")]
    BodyMismatch { status: u16, needle: String },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("SIP {code} {phrase}")]
    SipStatus { code: u16, phrase: String },
    #[error("SIP: {0}")]
    Sip(String),
}

/// Reason for a socket error, in words.
pub(crate) fn io_error(error: io::Error) -> ProbeError {
    use io::ErrorKind::*;
    match error.kind() {
        ConnectionRefused => ProbeError::Refused,
        ConnectionReset => ProbeError::Io("connection reset".into()),
        UnexpectedEof => ProbeError::Io("connection closed before a response".into()),
        HostUnreachable => ProbeError::Io("host unreachable".into()),
        NetworkUnreachable => ProbeError::Io("network unreachable".into()),
        AddrNotAvailable => ProbeError::Io("address not available".into()),
        _ => ProbeError::Io(error.to_string()),
    }
}
