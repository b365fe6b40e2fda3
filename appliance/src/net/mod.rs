//! The accept layer every TCP listener goes through (admin, DNS over TCP,
//! SIP over TCP and TLS, virtual services): a cap on connections per
//! listener and per source, closing at once what is over it; handshake,
//! header and idle deadlines; a back-off when accepting fails for lack of
//! descriptors; and counters per listener label for `/metrics`.
//!
//! `limits` is the pure part (the table of open connections, which idle
//! one gives way under pressure, the back-off), `sni` reads the server
//! name a TLS client sent, and `accept` puts them behind a tokio listener.
//! `addresses` adds the addresses listeners and virtual services need to
//! the host's interfaces and removes them when unused. `datagrams` is the
//! UDP side DNS and SIP share: batched receives and sends, one worker that
//! waits on the socket and helpers it calls under load.
//! Each protocol keeps its own framing and applies the deadlines where it
//! knows what a header or an idle moment is; the layer gives it the slot,
//! the limits and the counters to do so.

pub(crate) mod accept;
pub(crate) mod addresses;
pub(crate) mod bind;
pub(crate) mod datagrams;
pub(crate) mod limits;
pub(crate) mod sni;

pub(crate) use accept::{
    Activity, Conn, Gate, IdleMarker, Listener, Registry, Slot, Timeout, Tracked,
};
pub(crate) use bind::{
    BindError, allow_nonlocal, bind_retry_due, bind_tcp, bind_udp, listening, tcp_listener,
    tcp_listeners, udp_socket, udp_workers,
};
pub(crate) use limits::Limits;

/// Why a connection the layer set up did not become usable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}
