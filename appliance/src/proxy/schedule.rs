//! Member selection for the VIP proxy: the four schedulers and the source-IP
//! persistence table. Pure: no tokio, no clock (callers pass "now" in
//! milliseconds), no I/O, so every promise is checked by unit and property
//! tests.
//!
//! Invariants: a pick is always the index of a member marked eligible in the
//! slice given; `source-hash` ranks the *configured* members (rendezvous
//! hashing on member name and client address), so a member that becomes
//! ineligible moves only its own clients; the persistence table never holds
//! more than its capacity and never answers with an expired entry.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::config::Scheduler;

/// One configured member as a scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate<'a> {
    pub name: &'a str,
    pub weight: u32,
    /// Connections open through the proxy right now.
    pub active: u64,
    /// May receive a new connection (eligible for the service, not excluded
    /// by a failed connect attempt).
    pub eligible: bool,
}

/// Per-service scheduler state, kept across config generations so a reload
/// does not reset the rotation.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    cursor: usize,
    /// Smooth weighted round-robin: current weight per member name.
    current: HashMap<String, i64>,
}

impl Balancer {
    /// Choose a member for a new connection from `client`. `None` when no
    /// member is eligible.
    pub(crate) fn pick(
        &mut self,
        scheduler: Scheduler,
        members: &[Candidate<'_>],
        client: IpAddr,
    ) -> Option<usize> {
        match scheduler {
            Scheduler::RoundRobin => self.round_robin(members),
            Scheduler::WeightedRoundRobin => self.smooth_weighted(members),
            Scheduler::LeastConnections => self.least_connections(members),
            Scheduler::SourceHash => source_hash(members, client),
        }
    }

    fn round_robin(&mut self, members: &[Candidate<'_>]) -> Option<usize> {
        let eligible = members.iter().filter(|m| m.eligible).count();
        if eligible == 0 {
            return None;
        }
        let nth = self.cursor % eligible;
        self.cursor = self.cursor.wrapping_add(1);
        members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.eligible)
            .nth(nth)
            .map(|(i, _)| i)
    }

    /// nginx's smooth weighted round-robin: every pick adds each member's
    /// weight to its current value, takes the largest and subtracts the
    /// total from it. Picks interleave (a:5 b:1 c:1 → a a b a c a a).
    fn smooth_weighted(&mut self, members: &[Candidate<'_>]) -> Option<usize> {
        // Members gone from the config (or renamed) must not keep a stale
        // head start; ineligible ones keep theirs until they are back.
        if self.current.len() > members.len() {
            self.current
                .retain(|name, _| members.iter().any(|m| m.name == name));
        }
        let mut total = 0_i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, member) in members.iter().enumerate().filter(|(_, m)| m.eligible) {
            let weight = i64::from(member.weight.max(1));
            total += weight;
            let current = match self.current.get_mut(member.name) {
                Some(current) => current,
                None => self.current.entry(member.name.to_owned()).or_insert(0),
            };
            *current += weight;
            if best.is_none_or(|(_, value)| *current > value) {
                best = Some((i, *current));
            }
        }
        let (index, _) = best?;
        if let Some(current) = self.current.get_mut(members[index].name) {
            *current -= total;
        }
        Some(index)
    }

    /// Fewest active connections per unit of weight; ties rotate so an idle
    /// pool still spreads new connections.
    fn least_connections(&mut self, members: &[Candidate<'_>]) -> Option<usize> {
        let n = members.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor % n;
        self.cursor = self.cursor.wrapping_add(1);
        let mut best: Option<usize> = None;
        for offset in 0..n {
            let i = (start + offset) % n;
            let member = &members[i];
            if !member.eligible {
                continue;
            }
            let better = match best {
                None => true,
                // a/wa < b/wb  ⇔  a·wb < b·wa (no division, no rounding).
                Some(b) => {
                    let other = &members[b];
                    u128::from(member.active) * u128::from(other.weight.max(1))
                        < u128::from(other.active) * u128::from(member.weight.max(1))
                }
            };
            if better {
                best = Some(i);
            }
        }
        best
    }
}

/// Rendezvous (highest random weight) hashing: every configured member gets
/// a score for this client; the best-scoring eligible member wins. Removing
/// a member from eligibility only reassigns the clients it was winning.
fn source_hash(members: &[Candidate<'_>], client: IpAddr) -> Option<usize> {
    members
        .iter()
        .enumerate()
        .filter(|(_, m)| m.eligible)
        .max_by_key(|(_, m)| (rendezvous_score(m.name, client), m.name))
        .map(|(i, _)| i)
}

/// A stable score: FNV-1a over the member name and the client address bytes,
/// finished with the SplitMix64 mixer. Stable across builds and releases
/// (unlike `std`'s `DefaultHasher`), so clients keep their member across an
/// upgrade.
pub(crate) fn rendezvous_score(member: &str, client: IpAddr) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    feed(member.as_bytes());
    feed(&[0xff]);
    match client {
        IpAddr::V4(v4) => feed(&v4.octets()),
        IpAddr::V6(v6) => feed(&v6.octets()),
    }
    let mut z = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Source-IP persistence: client address → member name, expiring
/// `timeout_ms` after the client's last new connection. Bounded: when full,
/// the entry closest to expiry makes room.
#[derive(Debug)]
pub(crate) struct PersistTable {
    capacity: usize,
    entries: HashMap<IpAddr, (String, u64)>,
    /// (expiry, client), ordered so expiry and eviction are O(log n).
    by_expiry: BTreeSet<(u64, IpAddr)>,
}

impl PersistTable {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The member `client` sticks to, if its entry has not expired.
    pub(crate) fn lookup(&mut self, client: IpAddr, now_ms: u64) -> Option<&str> {
        self.expire(now_ms);
        self.entries.get(&client).map(|(member, _)| member.as_str())
    }

    /// Stick `client` to `member` (again) until `now + timeout`.
    pub(crate) fn record(&mut self, client: IpAddr, member: &str, now_ms: u64, timeout_ms: u64) {
        self.expire(now_ms);
        let expires = now_ms.saturating_add(timeout_ms);
        if let Some((_, old)) = self.entries.get(&client) {
            self.by_expiry.remove(&(*old, client));
        } else if self.entries.len() >= self.capacity
            && let Some((_, evicted)) = self.by_expiry.pop_first()
        {
            self.entries.remove(&evicted);
        }
        self.entries.insert(client, (member.to_owned(), expires));
        self.by_expiry.insert((expires, client));
    }

    /// Forget `client` (its member is no longer eligible).
    pub(crate) fn forget(&mut self, client: IpAddr) {
        if let Some((_, expires)) = self.entries.remove(&client) {
            self.by_expiry.remove(&(expires, client));
        }
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(expires, client)) = self.by_expiry.first()
            && expires <= now_ms
        {
            self.by_expiry.pop_first();
            self.entries.remove(&client);
        }
    }
}

#[cfg(test)]
mod tests;
