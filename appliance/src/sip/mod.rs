//! SIP registrar hashing and the redirect service. `registrar` (pure) ranks
//! every user's members; `message` (pure) parses and frames SIP messages;
//! `redirect` (pure) decides the answer to one request from a `PoolView`;
//! `server` owns the UDP and TCP listeners and never lets one bad packet or
//! connection affect another. The addresses-of-record of redirected
//! REGISTERs leave through `SipStats::seen`, a bounded channel whose reader
//! remembers them; a full channel drops and counts, never waits.

pub mod message;
pub mod redirect;
pub mod registrar;
pub(crate) mod server;

pub(crate) use server::{SipError, SipStats, serve_tcp, serve_udp};

/// What-if over the users poolgate has seen: the share of `aors` whose
/// registrations would move if `member` of `pool` stopped taking them (those
/// it serves first now).
pub(crate) fn seen_drain_fraction(
    pool: &crate::state::PoolState,
    member: usize,
    aors: &[String],
) -> f64 {
    if aors.is_empty() {
        return 0.0;
    }
    let moving = aors
        .iter()
        .filter(|aor| registrar::rank_pool(pool, aor).serving() == Some(member))
        .count();
    moving as f64 / aors.len() as f64
}
