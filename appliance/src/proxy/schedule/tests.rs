use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;

const NAMES: [&str; 8] = [
    "fe01", "fe02", "fe03", "fe04", "fe05", "fe06", "fe07", "fe08",
];

fn members(weights: &[u32]) -> Vec<Candidate<'static>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Candidate {
            name: NAMES[i],
            weight,
            active: 0,
            eligible: true,
        })
        .collect()
}

fn client(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000_u32.wrapping_add(n)))
}

fn counts(picks: impl IntoIterator<Item = usize>) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for pick in picks {
        *counts.entry(pick).or_default() += 1;
    }
    counts
}

#[test]
fn round_robin_rotates_over_eligible_members() {
    let mut balancer = Balancer::default();
    let mut set = members(&[1, 1, 1]);
    set[1].eligible = false;
    let picks: Vec<usize> = (0..4)
        .map(|_| {
            balancer
                .pick(Scheduler::RoundRobin, &set, client(1))
                .expect("pick")
        })
        .collect();
    assert_eq!(picks, vec![0, 2, 0, 2]);
}

#[test]
fn smooth_weighted_interleaves() {
    let mut balancer = Balancer::default();
    let set = members(&[5, 1, 1]);
    let picks: Vec<usize> = (0..7)
        .map(|_| {
            balancer
                .pick(Scheduler::WeightedRoundRobin, &set, client(1))
                .expect("pick")
        })
        .collect();
    assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn least_connections_prefers_fewest_per_weight() {
    let mut balancer = Balancer::default();
    let mut set = members(&[1, 2, 1]);
    set[0].active = 3;
    set[1].active = 4; // 2 per unit of weight
    set[2].active = 1;
    assert_eq!(
        balancer.pick(Scheduler::LeastConnections, &set, client(1)),
        Some(2)
    );
    set[2].active = 3;
    assert_eq!(
        balancer.pick(Scheduler::LeastConnections, &set, client(1)),
        Some(1)
    );
}

#[test]
fn least_connections_ties_rotate() {
    let mut balancer = Balancer::default();
    let set = members(&[1, 1, 1]);
    let picks = counts((0..300).map(|_| {
        balancer
            .pick(Scheduler::LeastConnections, &set, client(1))
            .expect("pick")
    }));
    assert_eq!(
        picks.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100]
    );
}

#[test]
fn nothing_eligible_picks_nothing() {
    let mut balancer = Balancer::default();
    let mut set = members(&[1, 1]);
    for member in &mut set {
        member.eligible = false;
    }
    for scheduler in [
        Scheduler::RoundRobin,
        Scheduler::WeightedRoundRobin,
        Scheduler::LeastConnections,
        Scheduler::SourceHash,
    ] {
        assert_eq!(balancer.pick(scheduler, &set, client(1)), None);
        assert_eq!(balancer.pick(scheduler, &[], client(1)), None);
    }
}

/// Golden values: the hash decides which member a client lands on, and must
/// not change between releases.
#[test]
fn rendezvous_score_is_stable() {
    let a = rendezvous_score("fe01", "10.0.0.1".parse().expect("ip"));
    let b = rendezvous_score("fe01", "10.0.0.1".parse().expect("ip"));
    assert_eq!(a, b);
    assert_ne!(a, rendezvous_score("fe02", "10.0.0.1".parse().expect("ip")));
    assert_eq!(
        rendezvous_score("fe01", "10.0.0.1".parse().expect("ip")),
        GOLDEN_FE01_10_0_0_1
    );
}

const GOLDEN_FE01_10_0_0_1: u64 = 17_685_339_955_462_584_986;

#[test]
fn persistence_holds_and_expires() {
    let mut table = PersistTable::new(10);
    table.record(client(1), "fe01", 0, 1000);
    assert_eq!(table.lookup(client(1), 999), Some("fe01"));
    table.record(client(1), "fe01", 999, 1000);
    assert_eq!(table.lookup(client(1), 1998), Some("fe01"));
    assert_eq!(table.lookup(client(1), 1999), None);
    assert!(table.is_empty());
}

#[test]
fn persistence_forget() {
    let mut table = PersistTable::new(10);
    table.record(client(1), "fe01", 0, 1000);
    table.forget(client(1));
    assert_eq!(table.lookup(client(1), 1), None);
}

proptest! {
    #[test]
    fn picks_are_eligible(
        spec in prop::collection::vec((1_u32..10, 0_u64..50, any::<bool>()), 0..8),
        scheduler in prop::sample::select(vec![
            Scheduler::RoundRobin,
            Scheduler::WeightedRoundRobin,
            Scheduler::LeastConnections,
            Scheduler::SourceHash,
        ]),
        clients in prop::collection::vec(any::<u32>(), 1..20),
    ) {
        let set: Vec<Candidate<'_>> = spec
            .iter()
            .enumerate()
            .map(|(i, &(weight, active, eligible))| Candidate { name: NAMES[i], weight, active, eligible })
            .collect();
        let mut balancer = Balancer::default();
        for c in clients {
            match balancer.pick(scheduler, &set, client(c)) {
                Some(i) => prop_assert!(set[i].eligible),
                None => prop_assert!(set.iter().all(|m| !m.eligible)),
            }
        }
    }

    /// Over one full cycle (sum of weights) smooth WRR gives each member
    /// exactly its weight.
    #[test]
    fn smooth_weighted_is_exact_per_cycle(weights in prop::collection::vec(1_u32..10, 1..8)) {
        let set = members(&weights);
        let mut balancer = Balancer::default();
        let total: u32 = weights.iter().sum();
        let picks = counts((0..total).map(|_| {
            balancer.pick(Scheduler::WeightedRoundRobin, &set, client(1)).expect("pick")
        }));
        for (i, weight) in weights.iter().enumerate() {
            prop_assert_eq!(picks.get(&i).copied().unwrap_or(0), *weight as usize);
        }
    }

    /// Making one member ineligible moves only the clients it was serving.
    #[test]
    fn source_hash_moves_only_the_failed_members_clients(
        n in 2_usize..8,
        failed in 0_usize..8,
    ) {
        let failed = failed % n;
        let all = members(&vec![1; n]);
        let mut without = all.clone();
        without[failed].eligible = false;
        let mut balancer = Balancer::default();
        let mut moved = 0;
        for c in 0..2000 {
            let before = balancer.pick(Scheduler::SourceHash, &all, client(c)).expect("pick");
            let after = balancer.pick(Scheduler::SourceHash, &without, client(c)).expect("pick");
            if before != failed {
                prop_assert_eq!(before, after);
            } else {
                moved += 1;
                prop_assert_ne!(after, failed);
            }
        }
        // Roughly 1/n of the clients lived on the failed member.
        let expected = 2000 / n;
        prop_assert!(moved > expected / 2 && moved < expected * 3 / 2, "moved {moved} of 2000, n={n}");
    }

    #[test]
    fn persistence_table_stays_bounded(
        capacity in 1_usize..50,
        ops in prop::collection::vec((0_u32..100, 0_u64..10), 0..300),
    ) {
        let mut table = PersistTable::new(capacity);
        let mut now = 0;
        for (c, step) in ops {
            now += step;
            table.record(client(c), "fe01", now, 20);
            prop_assert!(table.len() <= capacity);
            prop_assert_eq!(table.entries.len(), table.by_expiry.len());
            prop_assert_eq!(table.lookup(client(c), now), Some("fe01"));
        }
        prop_assert_eq!(table.lookup(client(0), now + 20), None);
        prop_assert!(table.is_empty());
    }
}
