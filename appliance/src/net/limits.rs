//! The pure half of the accept layer: per-listener connection limits, the
//! table that counts open connections in total and per source, the choice
//! of which idle connection to close under pressure, and the back-off after
//! accept failures. No sockets and no tokio: everything takes an `Instant`,
//! so it is tested on plain values.
//!
//! Invariants of [`Table`]: `total()` equals the number of admitted and not
//! yet released (or evicted) entries, and every source's count equals the
//! number of those entries with that source; a source whose count drops to
//! zero is forgotten, so the map never holds more sources than connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections open at once on the listener.
    pub max_connections: usize,
    /// Connections open at once from one source (an IPv4 address, or an
    /// IPv6 /64: one host's share of a network).
    pub max_per_source: usize,
    /// A TLS handshake must complete within this.
    pub handshake_timeout: Duration,
    /// A request's headers (or, for protocols without headers, the first
    /// message) must arrive within this.
    pub header_timeout: Duration,
    /// A connection on which nothing moves for this long is closed.
    pub idle_timeout: Duration,
    /// At a cap, close the connection of that scope (the source, else the
    /// listener) that has been idle longest, if it has been idle at least
    /// this long, instead of refusing the new one. `None`: always refuse.
    pub evict_idle_after: Option<Duration>,
}

impl Limits {
    /// The admin listener (web UI, REST API): few, short-lived clients.
    pub(crate) fn admin() -> Self {
        Self {
            max_connections: 256,
            max_per_source: 32,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            // A kept-alive connection between requests gives way to a new
            // client at the cap, so idle holders cannot lock the admin out.
            evict_idle_after: Some(Duration::from_secs(1)),
        }
    }

    /// DNS over TCP (RFC 7766): short idle timeout, and under pressure
    /// the oldest idle connection gives way to a new one (§6.2.3).
    pub(crate) fn dns() -> Self {
        Self {
            max_connections: 256,
            max_per_source: 32,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            evict_idle_after: Some(Duration::from_secs(1)),
        }
    }

    /// SIP over TCP and TLS: long-lived client connections (a registered
    /// Lync client keeps one open), many behind one NAT address.
    pub(crate) fn sip() -> Self {
        Self {
            max_connections: 4096,
            max_per_source: 512,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            evict_idle_after: None,
        }
    }

    /// A virtual service: pass-through TCP, where the idle timeout is the
    /// service's own (the relay enforces it) and the caps are large, since
    /// whole sites may arrive through one NAT address.
    pub(crate) fn proxy(idle_timeout: Duration) -> Self {
        Self {
            max_connections: 50_000,
            max_per_source: 1_000,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: idle_timeout,
            idle_timeout,
            evict_idle_after: None,
        }
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The listener is at `max_connections`.
    Total,
    /// The source is at `max_per_source`.
    PerSource,
}

impl Refusal {
    pub(crate) const ALL: [Self; 2] = [Self::Total, Self::PerSource];

    /// The `reason` label in metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerSource => "source",
        }
    }
}

/// What the table decided about a new connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission<T> {
    /// Admitted under this id; `evicted` is the payload of an idle
    /// connection removed to make room (tell it to close).
    Admitted {
        id: u64,
        evicted: Option<T>,
    },
    Refused(Refusal),
}

/// The key connections are counted under per source: an IPv4 address
/// (IPv4-mapped IPv6 included), or the /64 of an IPv6 address, since one
/// IPv6 host can use any address of its /64.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[derive(Debug)]
struct Entry<T> {
    source: IpAddr,
    /// Since when the connection waits for its peer; `None` while busy.
    idle_since: Option<Instant>,
    payload: T,
}

/// Open connections of one listener, counted in total and per source.
#[derive(Debug)]
pub(crate) struct Table<T> {
    limits: Limits,
    entries: HashMap<u64, Entry<T>>,
    per_source: HashMap<IpAddr, usize>,
    next_id: u64,
}

impl<T> Table<T> {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            per_source: HashMap::new(),
            next_id: 0,
        }
    }

    /// Limits for the admissions from now on; admitted entries stay.
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn held_by(&self, ip: IpAddr) -> usize {
        self.per_source.get(&source_key(ip)).copied().unwrap_or(0)
    }

    /// Admit a connection from `ip` (it starts busy: a new connection is
    /// about to send), evicting an idle one if the limits allow it.
    pub(crate) fn admit(&mut self, ip: IpAddr, payload: T, now: Instant) -> Admission<T> {
        let source = source_key(ip);
        let mut evicted = None;
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.limits.max_per_source {
            match self.oldest_idle(Some(source), now) {
                Some(id) => evicted = self.remove(id),
                None => return Admission::Refused(Refusal::PerSource),
            }
        } else if self.entries.len() >= self.limits.max_connections {
            match self.oldest_idle(None, now) {
                Some(id) => evicted = self.remove(id),
                None => return Admission::Refused(Refusal::Total),
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                source,
                idle_since: None,
                payload,
            },
        );
        *self.per_source.entry(source).or_insert(0) += 1;
        Admission::Admitted { id, evicted }
    }

    /// The connection now waits for its peer (`Some(since)`) or works.
    pub(crate) fn set_idle(&mut self, id: u64, since: Option<Instant>) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.idle_since = since;
        }
    }

    /// The connection closed; a no-op if it was evicted already.
    pub(crate) fn release(&mut self, id: u64) -> Option<T> {
        self.remove(id)
    }

    fn remove(&mut self, id: u64) -> Option<T> {
        let entry = self.entries.remove(&id)?;
        if let Some(count) = self.per_source.get_mut(&entry.source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry.payload)
    }

    /// The connection (of `source`, or of any) idle longest, if eviction is
    /// on and it has been idle long enough. A linear scan: only listeners
    /// with eviction (DNS, a few hundred slots) pay for it, and only at a cap.
    fn oldest_idle(&self, source: Option<IpAddr>, now: Instant) -> Option<u64> {
        let after = self.limits.evict_idle_after?;
        self.entries
            .iter()
            .filter(|(_, e)| source.is_none_or(|s| e.source == s))
            .filter_map(|(id, e)| Some((e.idle_since?, *id)))
            .filter(|(since, _)| now.saturating_duration_since(*since) >= after)
            .min()
            .map(|(_, id)| id)
    }
}

/// How long to pause accepting after a failure that more accepting cannot
/// fix (out of descriptors or memory): doubling from `MIN` to `MAX`, reset
/// by the next successful accept.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    current: Option<Duration>,
}

impl Backoff {
    pub(crate) const MIN: Duration = Duration::from_millis(5);
    pub(crate) const MAX: Duration = Duration::from_secs(1);

    /// A failure: how long to wait before accepting again.
    pub(crate) fn failed(&mut self) -> Duration {
        let next = self.current.map_or(Self::MIN, |d| (d * 2).min(Self::MAX));
        self.current = Some(next);
        next
    }

    pub(crate) fn succeeded(&mut self) {
        self.current = None;
    }
}

/// At most one log line per `every`: for conditions that can last (out of
/// descriptors) and would otherwise log at every retry.
#[derive(Debug)]
pub(crate) struct LogLimit {
    every: Duration,
    last: Option<Instant>,
}

impl LogLimit {
    pub(crate) fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// Whether to log now; if so, the next line waits `every`.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let allowed = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if allowed {
            self.last = Some(now);
        }
        allowed
    }
}

/// Whether an accept error means the process or system is out of a
/// resource (back off), rather than one connection failing (go on).
pub(crate) fn is_resource_exhaustion(error: &std::io::Error) -> bool {
    use nix::errno::Errno;
    error.raw_os_error().is_some_and(|code| {
        [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM]
            .iter()
            .any(|e| *e as i32 == code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn limits(total: usize, per_source: usize, evict: Option<u64>) -> Limits {
        Limits {
            max_connections: total,
            max_per_source: per_source,
            evict_idle_after: evict.map(Duration::from_millis),
            ..Limits::admin()
        }
    }

    fn admitted<T>(admission: Admission<T>) -> (u64, Option<T>) {
        match admission {
            Admission::Admitted { id, evicted } => (id, evicted),
            Admission::Refused(why) => panic!("refused: {why:?}"),
        }
    }

    #[test]
    fn caps_per_source_and_in_total_and_release_frees() {
        let now = Instant::now();
        let mut table = Table::new(limits(3, 2, None));
        let (a, _) = admitted(table.admit(ip("192.0.2.1"), 'a', now));
        admitted(table.admit(ip("192.0.2.1"), 'b', now));
        assert_eq!(
            table.admit(ip("192.0.2.1"), 'c', now),
            Admission::Refused(Refusal::PerSource)
        );
        admitted(table.admit(ip("192.0.2.2"), 'd', now));
        assert_eq!(
            table.admit(ip("192.0.2.3"), 'e', now),
            Admission::Refused(Refusal::Total)
        );
        assert_eq!(table.release(a), Some('a'));
        assert_eq!(table.release(a), None, "released once");
        assert_eq!(table.held_by(ip("192.0.2.1")), 1);
        admitted(table.admit(ip("192.0.2.1"), 'f', now));
        assert_eq!(table.total(), 3);
    }

    #[test]
    fn sources_that_leave_are_forgotten() {
        let now = Instant::now();
        let mut table = Table::new(limits(10, 10, None));
        let ids: Vec<u64> = (0..5)
            .map(|i| admitted(table.admit(ip(&format!("198.51.100.{i}")), (), now)).0)
            .collect();
        for id in ids {
            table.release(id);
        }
        assert!(table.per_source.is_empty());
        assert_eq!(table.total(), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let now = Instant::now();
        let mut table = Table::new(limits(10, 2, None));
        admitted(table.admit(ip("2001:db8:1:2::1"), (), now));
        admitted(table.admit(ip("2001:db8:1:2:ffff::9"), (), now));
        assert_eq!(
            table.admit(ip("2001:db8:1:2::77"), (), now),
            Admission::Refused(Refusal::PerSource)
        );
        admitted(table.admit(ip("2001:db8:1:3::1"), (), now));
        admitted(table.admit(ip("192.0.2.9"), (), now));
        assert_eq!(table.held_by(ip("::ffff:192.0.2.9")), 1);
    }

    #[test]
    fn under_pressure_the_longest_idle_of_the_scope_gives_way() {
        let start = Instant::now();
        let later = start + Duration::from_secs(5);
        let mut table = Table::new(limits(3, 2, Some(1000)));
        let (a, _) = admitted(table.admit(ip("192.0.2.1"), 'a', start));
        let (b, _) = admitted(table.admit(ip("192.0.2.1"), 'b', start));
        let (c, _) = admitted(table.admit(ip("192.0.2.2"), 'c', start));
        // Busy connections are never evicted.
        assert_eq!(
            table.admit(ip("192.0.2.1"), 'x', later),
            Admission::Refused(Refusal::PerSource)
        );
        table.set_idle(b, Some(start));
        table.set_idle(a, Some(start + Duration::from_secs(1)));
        table.set_idle(c, Some(start));
        // At the source cap: the source's own longest idle (b), not c.
        let (_, evicted) = admitted(table.admit(ip("192.0.2.1"), 'd', later));
        assert_eq!(evicted, Some('b'));
        assert_eq!(table.release(b), None, "an evicted entry is gone");
        // At the total cap: the longest idle of all (c).
        let (_, evicted) = admitted(table.admit(ip("192.0.2.3"), 'e', later));
        assert_eq!(evicted, Some('c'));
        assert_eq!(table.total(), 3);
        assert_eq!(table.held_by(ip("192.0.2.2")), 0);
    }

    #[test]
    fn connections_idle_only_briefly_are_not_evicted() {
        let start = Instant::now();
        let mut table = Table::new(limits(1, 1, Some(1000)));
        let (a, _) = admitted(table.admit(ip("192.0.2.1"), (), start));
        table.set_idle(a, Some(start));
        let soon = start + Duration::from_millis(999);
        assert_eq!(
            table.admit(ip("192.0.2.1"), (), soon),
            Admission::Refused(Refusal::PerSource)
        );
        let (_, evicted) =
            admitted(table.admit(ip("192.0.2.1"), (), start + Duration::from_secs(1)));
        assert_eq!(evicted, Some(()));
    }

    #[test]
    fn back_off_doubles_to_a_ceiling_and_resets() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.failed(), Backoff::MIN);
        assert_eq!(backoff.failed(), Backoff::MIN * 2);
        for _ in 0..20 {
            backoff.failed();
        }
        assert_eq!(backoff.failed(), Backoff::MAX);
        backoff.succeeded();
        assert_eq!(backoff.failed(), Backoff::MIN);
    }

    #[test]
    fn log_lines_are_limited_per_interval() {
        let start = Instant::now();
        let mut limit = LogLimit::new(Duration::from_secs(60));
        assert!(limit.allow(start));
        assert!(!limit.allow(start + Duration::from_secs(1)));
        assert!(!limit.allow(start + Duration::from_secs(59)));
        assert!(limit.allow(start + Duration::from_secs(60)));
        assert!(!limit.allow(start + Duration::from_secs(61)));
    }

    #[test]
    fn only_resource_errors_back_off() {
        let error = |code| std::io::Error::from_raw_os_error(code);
        assert!(is_resource_exhaustion(&error(24)));
        assert!(is_resource_exhaustion(&error(23)));
        assert!(!is_resource_exhaustion(&error(103)), "ECONNABORTED");
        assert!(!is_resource_exhaustion(&std::io::Error::other("x")));
    }
}
