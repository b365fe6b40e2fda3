//! Login attempt limits: pure logic on plain `Instant`s, no tokio, so every
//! rule is unit-tested without sockets or clocks.
//!
//! An attempt is *reserved* before its password is verified and stays
//! counted as a failure unless the caller refunds it (a correct password, or
//! a verification that never ran). So parallel requests cannot all pass the
//! check before the first failure is counted: the sixth of sixty concurrent
//! wrong logins is refused before any of them has been verified.
//!
//! Three sliding windows, each a deque of the instants of counted attempts:
//! * per source (an IPv4 address, an IPv6 /64): [`SOURCE_LIMIT`] in
//!   [`WINDOW`] — a hard lock-out of that source;
//! * per user name: [`USER_LIMIT`] in [`WINDOW`], against guessing one
//!   account from many addresses;
//! * global: [`GLOBAL_LIMIT`] in [`WINDOW`], the ceiling over everything.
//!
//! The per-user and global windows do not apply to a source that has logged
//! in as that user before (remembered since start, a few sources per user):
//! a distributed attack on `admin` then cannot lock the real admin out of
//! the workstation they use. The per-source lock-out always applies.
//!
//! Memory is bounded: at most [`MAX_SOURCES`] sources and [`MAX_USERS`] user
//! names are tracked, each holding at most its limit of instants. When a
//! table is full, expired entries are dropped first; a key that still finds
//! no room is not tracked on its own, but every attempt still counts in the
//! global window.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

// One source key for every limit of the appliance: an IPv4 address, or
// the /64 an IPv6 address lies in (one host usually owns a whole /64).
use crate::net::limits::source_key;

/// How long a counted attempt weighs.
pub(crate) const WINDOW: Duration = Duration::from_secs(300);
/// Failed attempts per source in [`WINDOW`] before it is locked out.
pub(crate) const SOURCE_LIMIT: usize = 5;
/// Failed attempts per user name in [`WINDOW`] (from sources it has never
/// logged in from).
pub(crate) const USER_LIMIT: usize = 30;
/// Failed attempts in [`WINDOW`] over all sources and users.
pub(crate) const GLOBAL_LIMIT: usize = 300;
pub(crate) const MAX_SOURCES: usize = 10_000;
pub(crate) const MAX_USERS: usize = 1_000;
/// Sources remembered per user as ones it logged in from.
pub(crate) const KNOWN_SOURCES_PER_USER: usize = 8;
/// User names longer than any valid one are counted under their prefix.
const MAX_USER_KEY: usize = 64;

fn user_key(username: &str) -> String {
    let mut end = username.len().min(MAX_USER_KEY);
    while !username.is_char_boundary(end) {
        end -= 1;
    }
    username[..end].to_owned()
}

/// Instants of counted attempts within the window, oldest first.
#[derive(Debug, Default)]
struct Window(VecDeque<Instant>);

impl Window {
    fn expire(&mut self, now: Instant) {
        while self
            .0
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= WINDOW)
        {
            self.0.pop_front();
        }
    }

    /// Seconds until there is room again, if full.
    fn full(&mut self, limit: usize, now: Instant) -> Option<u64> {
        self.expire(now);
        if self.0.len() < limit {
            return None;
        }
        let oldest = *self.0.front().expect("a full window is not empty");
        let wait = WINDOW.saturating_sub(now.saturating_duration_since(oldest));
        Some(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    fn push(&mut self, at: Instant) {
        self.0.push_back(at);
    }

    /// Take back one attempt counted at `at`.
    fn refund(&mut self, at: Instant) {
        if let Some(index) = self.0.iter().rposition(|x| *x == at) {
            self.0.remove(index);
        }
    }
}

/// A counted attempt, to refund if it turns out not to be a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reservation {
    source: IpAddr,
    user: String,
    at: Instant,
    /// Whether the attempt also counts against the user and global windows.
    counted_wide: bool,
}

/// The limits of the module doc; one per appliance, behind a mutex.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    sources: HashMap<IpAddr, Window>,
    users: HashMap<String, Window>,
    global: Window,
    known: HashMap<String, VecDeque<IpAddr>>,
}

impl Limits {
    /// Count an attempt by `source` as `username` before verifying it, or
    /// `Err(seconds to wait)` when a limit is reached.
    pub(crate) fn reserve(
        &mut self,
        source: IpAddr,
        username: &str,
        now: Instant,
    ) -> Result<Reservation, u64> {
        let source = source_key(source);
        let user = user_key(username);
        let known = self
            .known
            .get(&user)
            .is_some_and(|sources| sources.contains(&source));
        if let Some(wait) = self
            .sources
            .get_mut(&source)
            .and_then(|w| w.full(SOURCE_LIMIT, now))
        {
            return Err(wait);
        }
        if !known {
            if let Some(wait) = self
                .users
                .get_mut(&user)
                .and_then(|w| w.full(USER_LIMIT, now))
            {
                return Err(wait);
            }
            if let Some(wait) = self.global.full(GLOBAL_LIMIT, now) {
                return Err(wait);
            }
        }
        if let Some(window) = entry(&mut self.sources, source, MAX_SOURCES, now) {
            window.push(now);
        }
        if !known {
            if let Some(window) = entry(&mut self.users, user.clone(), MAX_USERS, now) {
                window.push(now);
            }
            self.global.push(now);
        }
        Ok(Reservation {
            source,
            user,
            at: now,
            counted_wide: !known,
        })
    }

    /// The attempt was not a failure after all (the verification did not
    /// run): take it back.
    pub(crate) fn refund(&mut self, reservation: &Reservation) {
        if let Some(window) = self.sources.get_mut(&reservation.source) {
            window.refund(reservation.at);
        }
        if reservation.counted_wide {
            if let Some(window) = self.users.get_mut(&reservation.user) {
                window.refund(reservation.at);
            }
            self.global.refund(reservation.at);
        }
    }

    /// The password was right: take the attempt back, forget the source's
    /// failures, and remember it as one this user logs in from.
    pub(crate) fn succeeded(&mut self, reservation: &Reservation) {
        self.refund(reservation);
        self.sources.remove(&reservation.source);
        if self.known.len() >= MAX_USERS && !self.known.contains_key(&reservation.user) {
            return;
        }
        let sources = self.known.entry(reservation.user.clone()).or_default();
        sources.retain(|s| *s != reservation.source);
        sources.push_back(reservation.source);
        while sources.len() > KNOWN_SOURCES_PER_USER {
            sources.pop_front();
        }
    }

    /// Entries tracked, for tests of the bounds.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> (usize, usize) {
        (self.sources.len(), self.users.len())
    }
}

/// The window for `key`, making room by dropping expired entries; `None`
/// when the table is full of live ones.
fn entry<K: std::hash::Hash + Eq>(
    table: &mut HashMap<K, Window>,
    key: K,
    max: usize,
    now: Instant,
) -> Option<&mut Window> {
    if table.len() >= max && !table.contains_key(&key) {
        table.retain(|_, window| {
            window.expire(now);
            !window.0.is_empty()
        });
        if table.len() >= max {
            return None;
        }
    }
    Some(table.entry(key).or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn the_sixth_concurrent_attempt_is_refused_before_any_is_verified() {
        let mut limits = Limits::default();
        let now = Instant::now();
        let held: Vec<_> = (0..SOURCE_LIMIT)
            .map(|_| limits.reserve(ip("192.0.2.1"), "admin", now).expect("room"))
            .collect();
        assert_eq!(held.len(), SOURCE_LIMIT);
        let wait = limits
            .reserve(ip("192.0.2.1"), "admin", now)
            .expect_err("locked");
        assert_eq!(wait, WINDOW.as_secs());
        // Another address may still try the same user.
        assert!(limits.reserve(ip("192.0.2.2"), "admin", now).is_ok());
    }

    #[test]
    fn a_refund_gives_the_attempt_back_and_the_window_slides() {
        let mut limits = Limits::default();
        let start = Instant::now();
        let source = ip("192.0.2.1");
        let mut last = None;
        for i in 0..SOURCE_LIMIT {
            let at = start + Duration::from_secs(10 * i as u64);
            last = Some(limits.reserve(source, "admin", at).expect("room"));
        }
        let later = start + Duration::from_secs(60);
        assert!(limits.reserve(source, "admin", later).is_err());
        limits.refund(&last.expect("one"));
        let again = limits.reserve(source, "admin", later).expect("refunded");
        limits.refund(&again);
        limits.reserve(source, "admin", later).expect("room");
        // The oldest attempt ages out first: one more after WINDOW from it.
        let wait = limits.reserve(source, "admin", later).expect_err("full");
        assert_eq!(wait, WINDOW.as_secs() - 60);
        assert!(limits.reserve(source, "admin", start + WINDOW).is_ok());
        assert!(limits.reserve(source, "admin", start + WINDOW).is_err());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let mut limits = Limits::default();
        let now = Instant::now();
        for host in 1..=SOURCE_LIMIT {
            limits
                .reserve(ip(&format!("2001:db8:1:2::{host:x}")), "admin", now)
                .expect("room");
        }
        assert!(
            limits
                .reserve(ip("2001:db8:1:2:ffff::1"), "x", now)
                .is_err()
        );
        assert!(limits.reserve(ip("2001:db8:1:3::1"), "x", now).is_ok());
        assert_eq!(
            source_key(ip("::ffff:192.0.2.7")),
            ip("192.0.2.7"),
            "mapped IPv4 counts as IPv4"
        );
    }

    #[test]
    fn many_sources_against_one_user_meet_the_user_limit_but_not_its_known_source() {
        let mut limits = Limits::default();
        let now = Instant::now();
        let home = ip("198.51.100.7");
        let first = limits.reserve(home, "admin", now).expect("room");
        limits.succeeded(&first);
        for i in 0..USER_LIMIT {
            let source = ip(&format!("203.0.113.{i}"));
            limits.reserve(source, "admin", now).expect("room");
        }
        assert!(limits.reserve(ip("192.0.2.99"), "admin", now).is_err());
        assert!(
            limits.reserve(ip("192.0.2.99"), "operator", now).is_ok(),
            "other users are not affected"
        );
        let ok = limits.reserve(home, "admin", now).expect("known source");
        limits.succeeded(&ok);
    }

    #[test]
    fn the_global_ceiling_holds_over_users_and_sources() {
        let mut limits = Limits::default();
        let now = Instant::now();
        for i in 0..GLOBAL_LIMIT {
            let source = IpAddr::V4((0x0A00_0000u32 + i as u32).into());
            limits
                .reserve(source, &format!("user{}", i % 50), now)
                .expect("room");
        }
        let wait = limits
            .reserve(ip("192.0.2.1"), "someone", now)
            .expect_err("ceiling");
        assert!(wait >= 1);
    }

    #[test]
    fn tables_stay_bounded() {
        let mut limits = Limits::default();
        let start = Instant::now();
        for i in 0..(MAX_SOURCES + 500) {
            // Spread over time so the global ceiling is not what stops them.
            let at = start + Duration::from_secs(i as u64);
            let source = IpAddr::V4((0x0A00_0000u32 + i as u32).into());
            let name = format!("u{i}-{}", "x".repeat(200));
            let _ = limits.reserve(source, &name, at);
        }
        let (sources, users) = limits.tracked();
        assert!(sources <= MAX_SOURCES, "{sources}");
        assert!(users <= MAX_USERS, "{users}");
    }
}
