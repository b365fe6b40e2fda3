//! Response-rate limiting for the UDP listeners (DNS, and SIP over UDP):
//! a UDP answer goes to whatever source address a datagram claims, so
//! without a limit poolgate reflects (and amplifies) traffic at a spoofed
//! victim. Pure: no I/O, no clock of its own; callers pass `Instant`s.
//!
//! One token bucket per source prefix (/24 for IPv4, /56 for IPv6, as NSD
//! and BIND count: one customer network, not one address, so an attacker
//! cannot spread a flood over the addresses of one victim network). A
//! datagram within the rate is answered; beyond it, every `slip`-th is
//! `Verdict::Slip` (DNS sends an empty truncated answer, so a real client
//! behind the prefix retries over TCP, where spoofing is impossible) and
//! the rest `Verdict::Drop`. `slip = 0` drops them all (SIP).
//!
//! Invariants: the table never holds more than `max_prefixes` buckets.
//! When it is full, buckets that have refilled (as good as new) are swept,
//! at most once a second; if it is still full, new prefixes share one
//! overflow bucket, so a flood from spoofed random sources is held to one
//! prefix's rate in total rather than growing the table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Buckets kept per limiter (each about 50 bytes with its table slot).
pub(crate) const DEFAULT_MAX_PREFIXES: usize = 16_384;

/// How often a full table may be swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What a limiter allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limits {
    /// Answers per second per prefix; 0 turns the limiter off.
    pub rate: u32,
    /// Answers a quiet prefix may get at once.
    pub burst: u32,
    /// Every `slip`-th limited answer is slipped; 0: none.
    pub slip: u32,
    pub max_prefixes: usize,
    /// Prefix lengths that make one source.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl Limits {
    /// `rate` per second with a burst of one second's worth, /24 and /56.
    pub(crate) fn per_second(rate: u32, slip: u32) -> Self {
        Self {
            rate,
            burst: rate,
            slip,
            max_prefixes: DEFAULT_MAX_PREFIXES,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Over the rate: answer with an empty truncated answer only.
    Slip,
    /// Over the rate: send nothing.
    Drop,
}

/// A source network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Prefix {
    V4(u32),
    V6(u128),
}

impl Prefix {
    /// The prefix of `address`; an IPv4-mapped IPv6 address counts as IPv4.
    pub(crate) fn of(address: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let len = u32::from(ipv4_prefix.min(32));
                Self::V4(if len == 0 {
                    0
                } else {
                    bits & (u32::MAX << (32 - len))
                })
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let len = u32::from(ipv6_prefix.min(128));
                Self::V6(if len == 0 {
                    0
                } else {
                    bits & (u128::MAX << (128 - len))
                })
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// Limited answers so far, for the slip count.
    limited: u32,
}

impl Bucket {
    fn full(limits: &Limits, now: Instant) -> Self {
        Self {
            tokens: f64::from(limits.burst.max(1)),
            updated: now,
            limited: 0,
        }
    }

    fn refill(&mut self, limits: &Limits, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let capacity = f64::from(limits.burst.max(1));
        self.tokens = (self.tokens + elapsed * f64::from(limits.rate)).min(capacity);
        self.updated = now;
    }

    fn take(&mut self, limits: &Limits, now: Instant) -> Verdict {
        self.refill(limits, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        self.limited = self.limited.wrapping_add(1);
        if limits.slip > 0 && self.limited.is_multiple_of(limits.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// Whether the bucket has refilled: forgetting it changes nothing.
    fn idle(&self, limits: &Limits, now: Instant) -> bool {
        let needed = f64::from(limits.burst.max(1)) - self.tokens;
        now.saturating_duration_since(self.updated).as_secs_f64() * f64::from(limits.rate) >= needed
    }
}

/// Buckets per source prefix.
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: Limits,
    buckets: HashMap<Prefix, Bucket>,
    overflow: Option<Bucket>,
    last_sweep: Option<Instant>,
}

impl Limiter {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            buckets: HashMap::new(),
            overflow: None,
            last_sweep: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Buckets held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Take new limits; the buckets start afresh when they change.
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        if limits != self.limits {
            *self = Self::new(limits);
        }
    }

    /// May `source` be answered at `now`?
    pub(crate) fn check(&mut self, source: IpAddr, now: Instant) -> Verdict {
        let limits = self.limits;
        if limits.rate == 0 {
            return Verdict::Allow;
        }
        let prefix = Prefix::of(source, limits.ipv4_prefix, limits.ipv6_prefix);
        if let Some(bucket) = self.buckets.get_mut(&prefix) {
            return bucket.take(&limits, now);
        }
        if self.buckets.len() >= limits.max_prefixes {
            self.sweep(now);
        }
        if self.buckets.len() < limits.max_prefixes {
            return self
                .buckets
                .entry(prefix)
                .or_insert_with(|| Bucket::full(&limits, now))
                .take(&limits, now);
        }
        self.overflow
            .get_or_insert_with(|| Bucket::full(&limits, now))
            .take(&limits, now)
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        let limits = self.limits;
        self.buckets.retain(|_, bucket| !bucket.idle(&limits, now));
    }
}

/// DNS header length.
const HEADER_LEN: usize = 12;

/// A slipped DNS answer made from a full one: its header with TC set and
/// no answer, authority or additional records, and its question section.
/// `None` if `response` is not a DNS message this server could have built.
pub fn slipped(response: &[u8]) -> Option<Vec<u8>> {
    if response.len() < HEADER_LEN {
        return None;
    }
    let questions = u16::from_be_bytes([response[4], response[5]]);
    let mut at = HEADER_LEN;
    for _ in 0..questions {
        at = skip_name(response, at)?.checked_add(4)?;
        if at > response.len() {
            return None;
        }
    }
    let mut out = response[..at].to_vec();
    out[2] |= 0x02; // TC
    out[6..12].fill(0);
    Some(out)
}

/// Index just past the (possibly compressed) name at `at`.
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    // A name has at most 127 labels; more means a malformed message.
    for _ in 0..128 {
        let len = *message.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return (at + 2 <= message.len()).then_some(at + 2),
            l if l & 0xc0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let mut limiter = Limiter::new(Limits::per_second(10, 0));
        let start = Instant::now();
        let source = v4(192, 0, 2, 1);
        for _ in 0..10 {
            assert_eq!(limiter.check(source, start), Verdict::Allow);
        }
        assert_eq!(limiter.check(source, start), Verdict::Drop);
        // 10 per second: one more every 100 ms.
        let later = start + Duration::from_millis(100);
        assert_eq!(limiter.check(source, later), Verdict::Allow);
        assert_eq!(limiter.check(source, later), Verdict::Drop);
        // A long pause refills to the burst, no more.
        let much_later = start + Duration::from_secs(60);
        let allowed = (0..100)
            .filter(|_| limiter.check(source, much_later) == Verdict::Allow)
            .count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn over_the_rate_every_slip_th_answer_slips() {
        let mut limiter = Limiter::new(Limits::per_second(5, 2));
        let now = Instant::now();
        let source = v4(198, 51, 100, 7);
        let verdicts: Vec<Verdict> = (0..15).map(|_| limiter.check(source, now)).collect();
        assert!(verdicts[..5].iter().all(|v| *v == Verdict::Allow));
        let limited = &verdicts[5..];
        assert_eq!(limited.iter().filter(|v| **v == Verdict::Slip).count(), 5);
        assert_eq!(limited.iter().filter(|v| **v == Verdict::Drop).count(), 5);
        assert_eq!(limited[0], Verdict::Drop);
        assert_eq!(limited[1], Verdict::Slip);
        // slip 1: every limited answer slips.
        let mut limiter = Limiter::new(Limits::per_second(1, 1));
        limiter.check(source, now);
        assert_eq!(limiter.check(source, now), Verdict::Slip);
    }

    #[test]
    fn sources_share_a_bucket_per_prefix() {
        let mut limiter = Limiter::new(Limits::per_second(3, 0));
        let now = Instant::now();
        for d in 1..=3 {
            assert_eq!(limiter.check(v4(127, 0, 0, d), now), Verdict::Allow);
        }
        // Same /24: limited.
        assert_eq!(limiter.check(v4(127, 0, 0, 200), now), Verdict::Drop);
        // Another /24: its own bucket.
        assert_eq!(limiter.check(v4(127, 0, 1, 1), now), Verdict::Allow);
        // IPv6 by /56; a mapped IPv4 address is its IPv4 prefix.
        let a: IpAddr = "2001:db8:0:1200::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:0:12ff::2".parse().expect("v6");
        let c: IpAddr = "2001:db8:0:1300::1".parse().expect("v6");
        assert_eq!(Prefix::of(a, 24, 56), Prefix::of(b, 24, 56));
        assert_ne!(Prefix::of(a, 24, 56), Prefix::of(c, 24, 56));
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 9).to_ipv6_mapped());
        assert_eq!(limiter.check(mapped, now), Verdict::Drop);
        assert_eq!(
            Prefix::of(IpAddr::V6(Ipv6Addr::LOCALHOST), 24, 56),
            Prefix::V6(0)
        );
    }

    #[test]
    fn rate_zero_is_off() {
        let mut limiter = Limiter::new(Limits::per_second(0, 2));
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(limiter.check(v4(10, 0, 0, 1), now), Verdict::Allow);
        }
        assert!(limiter.is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_a_full_one_shares_an_overflow_bucket() {
        let limits = Limits {
            max_prefixes: 100,
            ..Limits::per_second(10, 0)
        };
        let mut limiter = Limiter::new(limits);
        let start = Instant::now();
        // A flood from 10,000 spoofed /24s in one instant.
        let mut allowed = 0;
        for i in 0..10_000u32 {
            let [_, b, c, _] = (i << 8).to_be_bytes();
            if limiter.check(v4(10, b, c, 1), start) == Verdict::Allow {
                allowed += 1;
            }
            assert!(limiter.len() <= 100);
        }
        // 100 prefixes of their own (one answer each here) and the overflow
        // bucket's burst for all the others.
        assert_eq!(allowed, 100 + 10);
        // Once the buckets have refilled they are swept for new prefixes.
        let later = start + Duration::from_secs(2);
        assert_eq!(limiter.check(v4(11, 0, 0, 1), later), Verdict::Allow);
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn a_busy_full_table_is_not_swept_more_than_once_a_second() {
        let limits = Limits {
            max_prefixes: 2,
            ..Limits::per_second(1, 0)
        };
        let mut limiter = Limiter::new(limits);
        let now = Instant::now();
        limiter.check(v4(10, 0, 1, 1), now);
        limiter.check(v4(10, 0, 2, 1), now);
        // Both busy: the third prefix goes to the overflow bucket.
        assert_eq!(limiter.check(v4(10, 0, 3, 1), now), Verdict::Allow);
        assert_eq!(limiter.check(v4(10, 0, 4, 1), now), Verdict::Drop);
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn new_limits_start_afresh() {
        let mut limiter = Limiter::new(Limits::per_second(1, 0));
        let now = Instant::now();
        let source = v4(10, 0, 0, 1);
        limiter.check(source, now);
        assert_eq!(limiter.check(source, now), Verdict::Drop);
        limiter.set_limits(Limits::per_second(2, 0));
        assert_eq!(limiter.check(source, now), Verdict::Allow);
        assert_eq!(limiter.limits().rate, 2);
    }

    #[test]
    fn a_slipped_answer_keeps_header_and_question_only() {
        let mut message = hickory_proto::op::Message::query();
        message.metadata.id = 0x1234;
        message.metadata.message_type = hickory_proto::op::MessageType::Response;
        let name = hickory_proto::rr::Name::from_ascii("pool01.contoso.test.").expect("name");
        message.add_query(hickory_proto::op::Query::query(
            name.clone(),
            hickory_proto::rr::RecordType::A,
        ));
        for i in 0..4 {
            message.add_answer(hickory_proto::rr::Record::from_rdata(
                name.clone(),
                30,
                hickory_proto::rr::RData::A(Ipv4Addr::new(127, 0, 0, 10 + i).into()),
            ));
        }
        let full = message.to_vec().expect("encode");
        let cut = slipped(&full).expect("slipped");
        assert!(cut.len() < full.len());
        let parsed = hickory_proto::op::Message::from_vec(&cut).expect("parses");
        assert!(parsed.metadata.truncation);
        assert_eq!(parsed.metadata.id, 0x1234);
        assert!(parsed.answers.is_empty());
        assert_eq!(parsed.queries.len(), 1);
        assert_eq!(parsed.queries[0].name(), &name);
        assert_eq!(slipped(&full[..5]), None);
        assert_eq!(slipped(&full[..20]), None);
    }
}
