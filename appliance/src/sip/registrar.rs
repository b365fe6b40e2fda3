//! Registrar ranking: every user's home server and failover order, by
//! rendezvous (highest-random-weight) hashing. Pure: no I/O, no clock.
//!
//! Each configured member gets a score from a fixed keyed 64-bit hash of
//! (member name, canonical address-of-record). The **logical sequence** is all
//! configured members by score, descending; the **physical sequence** is the
//! logical one with ineligible members removed; the **home** is the head of
//! the logical sequence, and a user is in **backup mode** when the head of the
//! physical sequence is not the home.
//!
//! Invariants users depend on: the ranking is a function of the member names,
//! weights and the canonical AoR only (never of addresses, member order in the
//! config, or process state), so every node computes the same answer; and it
//! never changes for a given `HASH_VERSION`. The golden vectors in the tests
//! pin it, so a dependency bump or refactor cannot move users silently.

use std::cmp::Ordering;
use std::hash::Hasher;

use siphasher::sip::SipHasher13;

use serde::Serialize;

use crate::state::{PoolState, PoolView};

/// Version of the hash function, its key, the score formula and the AoR
/// canonicalisation. Changing any of them moves users: bump this and
/// regenerate the golden vectors deliberately.
pub(crate) const HASH_VERSION: u32 = 1;

/// The fixed SipHash key: the bytes of "poolgate-rendez1" as two
/// little-endian words. Fixed rather than random so every node and every
/// restart ranks alike; it is not a secret (users are not adversaries of the
/// ranking, and a keyed hash here only guards against accidental skew).
const KEY: (u64, u64) = (0x6574_6167_6c6f_6f70, 0x317a_6564_6e65_722d);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrarError {
    #[error("the URI is empty")]
    Empty,
    #[error("the URI has no host part")]
    NoHost,
    #[error("the URI has an unterminated '<'")]
    Unterminated,
}

/// One member as the ranking sees it: its stable name and weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate<'a> {
    pub name: &'a str,
    pub weight: u32,
}

/// A user's sequences, as indices into the member list they were ranked from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ranking {
    /// Every configured member, best first.
    pub logical: Vec<usize>,
    /// `logical` with ineligible members removed, order kept.
    pub physical: Vec<usize>,
}

impl Ranking {
    /// The user's home member: head of the logical sequence.
    pub(crate) fn home(&self) -> Option<usize> {
        self.logical.first().copied()
    }

    /// The member that serves the user now, if any is eligible.
    pub(crate) fn serving(&self) -> Option<usize> {
        self.physical.first().copied()
    }

    /// The user is served by a backup because the home is not eligible.
    pub(crate) fn backup_mode(&self) -> bool {
        self.serving() != self.home()
    }
}

/// The canonical address-of-record of a SIP URI or name-addr: `user@host`,
/// lower-cased; display name, angle brackets, scheme, password, port,
/// parameters and headers removed. A URI without a user part canonicalises
/// to its host.
///
/// Accepts `sip:Alice@Contoso.com;transport=tls`, `<sips:alice@contoso.com>`,
/// `"Alice" <sip:alice@contoso.com>;tag=1` and bare `alice@contoso.com`.
pub(crate) fn canonical_aor(uri: &str) -> Result<String, RegistrarError> {
    let mut text = uri.trim();
    if text.is_empty() {
        return Err(RegistrarError::Empty);
    }
    // A name-addr: keep what is inside the angle brackets.
    if let Some(open) = find_unquoted(text, b'<') {
        let rest = &text[open + 1..];
        let close = rest.find('>').ok_or(RegistrarError::Unterminated)?;
        text = rest[..close].trim();
    }
    // Scheme: letters, digits, '+', '-', '.' before the first ':' (a user
    // part never precedes a scheme, so the first ':' before any '@' is it).
    if let Some(colon) = text.find(':') {
        let scheme = &text[..colon];
        let is_scheme = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        // "host:5060" without a user is a port, not a scheme; in
        // "sip:192.0.2.1:5060" what follows the colon is more than digits.
        let port = text[colon + 1..]
            .split([';', '?'])
            .next()
            .unwrap_or_default();
        let is_port =
            !text.contains('@') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        if is_scheme && !is_port {
            text = &text[colon + 1..];
        }
    }
    // Headers and URI parameters end the user@host part. A ';' inside the
    // user part (RFC 3261 allows it, RFC 4475 semiuri uses it) belongs to the
    // user, so split user and host first.
    let text = text.split('?').next().unwrap_or_default();
    let (user, hostport) = match text.rfind('@') {
        Some(at) => (Some(&text[..at]), &text[at + 1..]),
        None => (None, text),
    };
    let hostport = hostport.split(';').next().unwrap_or_default();
    let host = strip_port(hostport);
    if host.is_empty() {
        return Err(RegistrarError::NoHost);
    }
    let host = host.to_ascii_lowercase();
    match user {
        Some(user) => {
            // Drop a password ("user:secret@host").
            let user = user.split(':').next().unwrap_or_default();
            Ok(format!("{}@{host}", user.to_ascii_lowercase()))
        }
        None => Ok(host),
    }
}

fn find_unquoted(text: &str, wanted: u8) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == wanted && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn strip_port(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        // IPv6 reference: keep the brackets, drop what follows ']'.
        return match rest.find(']') {
            Some(end) => &hostport[..end + 2],
            None => hostport,
        };
    }
    hostport.split(':').next().unwrap_or_default()
}

/// The keyed hash of one (member, AoR) pair. The member name is length
/// prefixed so ("ab", "c@d") and ("a", "bc@d") never collide by construction.
pub(crate) fn member_hash(member: &str, aor: &str) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(KEY.0, KEY.1);
    hasher.write(&(member.len() as u64).to_le_bytes());
    hasher.write(member.as_bytes());
    hasher.write(aor.as_bytes());
    hasher.finish()
}

/// Weighted rendezvous score: `weight / -ln(u)` with `u` the hash mapped into
/// the open interval (0, 1). Each member wins with probability proportional
/// to its weight, and removing a member only moves the users it won.
fn weighted_score(weight: u32, hash: u64) -> f64 {
    // 53 significant bits, offset by half a step so u is never 0 or 1.
    let u = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// The logical sequence: indices into `members`, best first.
///
/// When every member has the same weight the order is by hash alone, in
/// integers, so the common case does not depend on the platform's `ln`.
/// Ties (equal scores) are broken by member name, then index.
pub(crate) fn logical_sequence(members: &[Candidate<'_>], aor: &str) -> Vec<usize> {
    let uniform = members
        .windows(2)
        .all(|pair| pair[0].weight == pair[1].weight);
    let hashes: Vec<u64> = members.iter().map(|m| member_hash(m.name, aor)).collect();
    let mut order: Vec<usize> = (0..members.len()).collect();
    let tie = |a: usize, b: usize| members[a].name.cmp(members[b].name).then_with(|| a.cmp(&b));
    if uniform {
        order.sort_by(|&a, &b| hashes[b].cmp(&hashes[a]).then_with(|| tie(a, b)));
    } else {
        let scores: Vec<f64> = members
            .iter()
            .zip(&hashes)
            .map(|(m, &h)| weighted_score(m.weight, h))
            .collect();
        order.sort_by(|&a, &b| {
            scores[b]
                .partial_cmp(&scores[a])
                .unwrap_or(Ordering::Equal)
                .then_with(|| tie(a, b))
        });
    }
    order
}

/// Rank `members` for `aor`; `eligible(i)` says whether member `i` may take
/// new registrations.
pub(crate) fn rank(
    members: &[Candidate<'_>],
    aor: &str,
    eligible: impl Fn(usize) -> bool,
) -> Ranking {
    let logical = logical_sequence(members, aor);
    let physical = logical.iter().copied().filter(|&i| eligible(i)).collect();
    Ranking { logical, physical }
}

/// Rank a published pool for `aor` (already canonical): indices into
/// `pool.members`, eligibility from the snapshot.
pub(crate) fn rank_pool(pool: &PoolState, aor: &str) -> Ranking {
    let candidates: Vec<Candidate<'_>> = pool
        .members
        .iter()
        .map(|m| Candidate {
            name: &m.name,
            weight: m.weight,
        })
        .collect();
    rank(&candidates, aor, |i| pool.members[i].eligible)
}

/// What-if: the fraction of all users (over the hash space) whose physical
/// sequence changes head if member `member` stopped taking registrations.
/// Under weighted rendezvous a member heads a user's sequence with
/// probability weight / (sum of eligible weights), so this is exact in
/// expectation; an ineligible member serves nobody and moves nobody.
pub(crate) fn drain_fraction(pool: &PoolState, member: usize) -> f64 {
    let Some(view) = pool.members.get(member) else {
        return 0.0;
    };
    if !view.eligible {
        return 0.0;
    }
    let total: u64 = pool
        .eligible
        .iter()
        .map(|&i| u64::from(pool.members[i].weight))
        .sum();
    if total == 0 {
        return 0.0;
    }
    f64::from(view.weight) / total as f64
}

/// The index of the pool serving `host`: the pool whose FQDN or an alias it
/// is, else `None`.
pub(crate) fn pool_for_host(view: &PoolView, host: &str) -> Option<usize> {
    view.pools
        .iter()
        .position(|p| p.fqdn == host || p.aliases.iter().any(|a| a == host))
}

/// The (pool, member) whose FQDN or address is `host` (lower case, as in a
/// canonical AoR; an IPv6 address in brackets or not).
pub(crate) fn member_for_host(view: &PoolView, host: &str) -> Option<(usize, usize)> {
    let host = host.trim_end_matches('.');
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: Option<std::net::IpAddr> = bare.parse().ok();
    view.pools.iter().enumerate().find_map(|(p, pool)| {
        pool.members
            .iter()
            .position(|m| {
                m.fqdn
                    .as_deref()
                    .is_some_and(|f| f.eq_ignore_ascii_case(host))
                    || ip.is_some_and(|ip| m.addresses.contains(&ip))
            })
            .map(|m| (p, m))
    })
}

/// Whether `host` (lower case, as in a canonical AoR) is a SIP domain of
/// `pool`: its FQDN, an alias, or a domain either lies in that has at least
/// two labels (`contoso.com` for `pool01.contoso.com` and `sip.contoso.com`:
/// Lync users are `user@<domain>`, and the pool lives in that domain).
pub(crate) fn serves_domain(pool: &PoolState, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.is_empty() || !host.contains('.') {
        return false;
    }
    std::iter::once(&pool.fqdn)
        .chain(&pool.aliases)
        .map(|name| name.trim_end_matches('.'))
        .any(|name| {
            name.eq_ignore_ascii_case(host)
                || name.len().checked_sub(host.len() + 1).is_some_and(|dot| {
                    name.as_bytes()[dot] == b'.' && name[dot + 1..].eq_ignore_ascii_case(host)
                })
        })
}

/// A user's sequences by member name, as `GET /api/v1/registrar` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Lookup {
    pub uri: String,
    pub aor: String,
    pub pool: String,
    pub logical: Vec<String>,
    pub physical: Vec<String>,
    pub home: Option<String>,
    pub backup_mode: bool,
    pub hash_version: u32,
}

/// Look `uri` up in the pool the redirect service would use for it: the
/// pool named by the AoR's host, else the first. `None` without pools.
pub fn lookup(view: &PoolView, uri: &str) -> Result<Option<Lookup>, RegistrarError> {
    let aor = canonical_aor(uri)?;
    let host = aor.rsplit('@').next().unwrap_or_default();
    let Some(index) = pool_for_host(view, host).or((!view.pools.is_empty()).then_some(0)) else {
        return Ok(None);
    };
    let pool = &view.pools[index];
    let ranking = rank_pool(pool, &aor);
    let names = |seq: &[usize]| -> Vec<String> {
        seq.iter().map(|&i| pool.members[i].name.clone()).collect()
    };
    Ok(Some(Lookup {
        uri: uri.to_owned(),
        pool: pool.name.clone(),
        logical: names(&ranking.logical),
        physical: names(&ranking.physical),
        home: ranking.home().map(|i| pool.members[i].name.clone()),
        backup_mode: ranking.backup_mode(),
        hash_version: HASH_VERSION,
        aor,
    }))
}

#[cfg(test)]
#[path = "registrar_tests.rs"]
mod tests;
