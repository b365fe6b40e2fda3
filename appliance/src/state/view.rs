//! `PoolView`: one immutable generation of everything the data plane reads.
//! `build` is a pure function of its inputs (config, admin states, health,
//! drain progress, counter handles), so what a reader sees is always
//! consistent with one committed config and one set of admin states.
//!
//! Eligible for new work = admin state `enabled` AND the consumer's monitor
//! counts the member up. A draining member keeps its own FQDN in DNS; a
//! disabled one disappears from every answer. With `fail_open`, a pool with no
//! eligible member answers with every enabled member instead of nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::config::MemberKey;
use crate::config::{AdminState, Config, StartState};
use crate::health::ca::CaBundles;

/// What a monitor last concluded about one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No probe has completed yet.
    Unknown,
    Up,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthStatus {
    pub state: Health,
    /// Why the last probe failed, in words ("connection refused").
    pub reason: Option<String>,
    /// RFC 3339 time of the last transition.
    pub since: Option<String>,
}

impl HealthStatus {
    pub(crate) fn unknown() -> Self {
        Self {
            state: Health::Unknown,
            reason: None,
            since: None,
        }
    }

    /// Before the first probe completes a member counts as its monitor's
    /// `start` state, so a restart does not empty DNS answers.
    pub(crate) fn counts_up(&self, start: StartState) -> bool {
        match self.state {
            Health::Up => true,
            Health::Down => false,
            Health::Unknown => start == StartState::Up,
        }
    }
}

impl HealthStatus {
    /// A member's health for one monitor from its addresses' (in the
    /// member's order): up while any address is up; down when all are; else
    /// unknown. A member with one address has exactly that address's. When
    /// down, the reason names each address's; `since` is the latest change.
    pub(crate) fn of_addresses(each: &[(IpAddr, &Self)]) -> Self {
        if let [(_, only)] = each {
            return (*only).clone();
        }
        let state = if each.iter().any(|(_, h)| h.state == Health::Up) {
            Health::Up
        } else if each.iter().any(|(_, h)| h.state == Health::Unknown) || each.is_empty() {
            Health::Unknown
        } else {
            Health::Down
        };
        let reason = (state == Health::Down).then(|| {
            each.iter()
                .map(|(address, h)| match &h.reason {
                    Some(reason) => format!("{address}: {reason}"),
                    None => format!("{address}: down"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
        let since = each.iter().filter_map(|(_, h)| h.since.clone()).max();
        Self {
            state,
            reason,
            since,
        }
    }
}

impl MemberView {
    /// The member's address of `like`'s family, else its first.
    pub(crate) fn address_like(&self, like: IpAddr) -> IpAddr {
        self.addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == like.is_ipv4())
            .unwrap_or(self.addresses[0])
    }

    /// The health of one of the member's addresses for `monitor`.
    pub(crate) fn health_of(&self, monitor: &str, address: IpAddr) -> Option<&HealthStatus> {
        let i = self.addresses.iter().position(|a| *a == address)?;
        self.address_health.get(i)?.get(monitor)
    }

    /// The member's addresses `monitor` counts up, in the member's order.
    pub(crate) fn up_addresses<'a>(
        &'a self,
        monitor: &'a str,
        start: StartState,
    ) -> impl Iterator<Item = IpAddr> + 'a {
        self.addresses
            .iter()
            .zip(&self.address_health)
            .filter(move |(_, h)| h.get(monitor).is_some_and(|h| h.counts_up(start)))
            .map(|(a, _)| *a)
    }

    /// Where a new connection through a listener on `listener` goes: the
    /// member's address of the same family while `monitor` counts it up,
    /// else another address it counts up, else the same family's (or the
    /// first) address.
    pub(crate) fn connect_address(
        &self,
        monitor: &str,
        start: StartState,
        listener: IpAddr,
    ) -> IpAddr {
        let same = |a: &IpAddr| a.is_ipv4() == listener.is_ipv4();
        let mut up: Vec<IpAddr> = self.up_addresses(monitor, start).collect();
        up.sort_by_key(|a| !same(a));
        up.first()
            .copied()
            .unwrap_or_else(|| self.address_like(listener))
    }
}

/// Drain progress of a member whose admin state is `draining`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrainProgress {
    pub state: DrainState,
    pub since: Option<String>,
    pub overdue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainState {
    /// Work remains on the member.
    Draining,
    /// Nothing left: ready to take offline.
    Drained,
}

/// Per-member counters. They live outside the snapshot (one `Arc` shared by
/// every generation in which the member exists), so counting a connection
/// never needs a new `PoolView`.
#[derive(Debug, Default)]
pub struct MemberCounters {
    pub active_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub registrations: AtomicU64,
    /// Woken when the member's open connections must be reset (a disabled
    /// member after its grace, a drain past its deadline with
    /// `drop_at_deadline`). Connections wait on it for their whole life.
    pub reset: tokio::sync::Notify,
    /// Connects to this member that failed or timed out (VIP proxy).
    pub connect_failures: AtomicU64,
    /// Health transitions of any of the member's (monitor, address)
    /// targets to up, and to down.
    pub went_up: AtomicU64,
    pub went_down: AtomicU64,
}

impl MemberCounters {
    pub(crate) fn active(&self) -> u64 {
        self.active_connections.load(Ordering::Relaxed)
    }

    /// Ask every open connection to this member to reset.
    pub(crate) fn reset_connections(&self) {
        self.reset.notify_waiters();
    }
}

/// The counter handles of every configured member, kept by the publisher
/// across generations.
pub(crate) type CounterTable = BTreeMap<MemberKey, Arc<MemberCounters>>;

/// Per-virtual-service counters, over all its ports and members; like
/// `MemberCounters` they live outside the snapshot.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    pub active_connections: AtomicU64,
    pub total_connections: AtomicU64,
    /// Client → member.
    pub bytes_in: AtomicU64,
    /// Member → client.
    pub bytes_out: AtomicU64,
}

/// The counter handles of every configured virtual service, by name.
pub(crate) type ServiceCounterTable = BTreeMap<String, Arc<ServiceCounters>>;

/// Health per (member, monitor, member address).
pub(crate) type HealthTable = BTreeMap<(MemberKey, String, IpAddr), HealthStatus>;

#[derive(Debug)]
pub struct MemberView {
    pub name: String,
    pub fqdn: Option<String>,
    /// One address, or an IPv4 and an IPv6 one.
    pub addresses: Vec<IpAddr>,
    pub weight: u32,
    pub admin_state: AdminState,
    /// Per monitor that uses this member (the pool's and its services'):
    /// up while any of its addresses is (`HealthStatus::of_addresses`).
    pub health: BTreeMap<String, HealthStatus>,
    /// `address_health[i]`: the health of `addresses[i]` per monitor.
    pub address_health: Vec<BTreeMap<String, HealthStatus>>,
    pub drain: Option<DrainProgress>,
    pub counters: Arc<MemberCounters>,
    /// Precomputed: enabled and up for the pool's monitor.
    pub eligible: bool,
}

#[derive(Debug)]
pub struct PoolState {
    pub name: String,
    pub fqdn: String,
    pub aliases: Vec<String>,
    pub monitor: String,
    pub members: Vec<MemberView>,
    /// Indices into `members` eligible for new DNS answers and registrations.
    pub eligible: Vec<usize>,
    /// Nothing is eligible and the config says to answer with every enabled
    /// member instead.
    pub failed_open: bool,
}

#[derive(Debug)]
pub struct ServiceState {
    pub name: String,
    pub address: IpAddr,
    pub ports: Vec<u16>,
    /// Index into `PoolView::pools`.
    pub pool: usize,
    pub monitor: String,
    /// Indices into the pool's members eligible for new connections.
    pub candidates: Vec<usize>,
    /// `connect_to[i]`: the address of the pool's member `i` a new
    /// connection goes to: the one of the listener's family while it is up,
    /// else another that is up, else the listener's family's.
    pub connect_to: Vec<IpAddr>,
    pub counters: Arc<ServiceCounters>,
}

/// One DNS name's health-filtered answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub addresses: Vec<IpAddr>,
    /// The pool the name belongs to.
    pub pool: usize,
    /// `None` for the pool FQDN and aliases; the member's index for its own FQDN.
    pub member: Option<usize>,
}

/// One generation of published state.
#[derive(Debug)]
pub struct PoolView {
    pub generation: u64,
    pub config_version: i64,
    pub config: Arc<Config>,
    pub pools: Vec<PoolState>,
    pub services: Vec<ServiceState>,
    /// Lower-case FQDN (no trailing dot) → answer.
    pub dns: BTreeMap<String, DnsAnswer>,
    /// The uploaded CA bundles that monitors' `ca_bundle` names refer to.
    pub(crate) ca_bundles: Arc<CaBundles>,
}

/// Everything a view is built from.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub config: Arc<Config>,
    pub config_version: i64,
    pub admin: BTreeMap<MemberKey, AdminState>,
    pub health: HealthTable,
    pub drain: BTreeMap<MemberKey, DrainProgress>,
    pub counters: CounterTable,
    pub service_counters: ServiceCounterTable,
    pub(crate) ca_bundles: Arc<CaBundles>,
}

impl PoolView {
    pub(crate) fn pool(&self, name: &str) -> Option<&PoolState> {
        self.pools.iter().find(|pool| pool.name == name)
    }

    /// Build a generation. Pure: no clock, no I/O.
    pub fn build(inputs: &Inputs, generation: u64) -> Self {
        let config = &inputs.config;
        let start_of = |monitor: &str| {
            config
                .monitor(monitor)
                .map_or(StartState::Up, |monitor| monitor.start)
        };
        let mut pools = Vec::with_capacity(config.pools.len());
        for pool in &config.pools {
            let mut monitors: Vec<&str> = vec![pool.monitor.as_str()];
            for service in config
                .virtual_services
                .iter()
                .filter(|s| s.pool == pool.name)
            {
                if !monitors.contains(&service.monitor.as_str()) {
                    monitors.push(&service.monitor);
                }
            }
            let members: Vec<MemberView> = pool
                .members
                .iter()
                .map(|member| {
                    let key = (pool.name.clone(), member.name.clone());
                    let admin_state = inputs.admin.get(&key).copied().unwrap_or(member.state);
                    let address_health: Vec<BTreeMap<String, HealthStatus>> = member
                        .addresses
                        .iter()
                        .map(|&address| {
                            monitors
                                .iter()
                                .map(|monitor| {
                                    let status = inputs
                                        .health
                                        .get(&(key.clone(), (*monitor).to_owned(), address))
                                        .cloned()
                                        .unwrap_or_else(HealthStatus::unknown);
                                    ((*monitor).to_owned(), status)
                                })
                                .collect()
                        })
                        .collect();
                    let health: BTreeMap<String, HealthStatus> = monitors
                        .iter()
                        .map(|monitor| {
                            let each: Vec<(IpAddr, &HealthStatus)> = member
                                .addresses
                                .iter()
                                .zip(&address_health)
                                .filter_map(|(a, h)| Some((*a, h.get(*monitor)?)))
                                .collect();
                            ((*monitor).to_owned(), HealthStatus::of_addresses(&each))
                        })
                        .collect();
                    let eligible = admin_state == AdminState::Enabled
                        && health
                            .get(&pool.monitor)
                            .is_some_and(|status| status.counts_up(start_of(&pool.monitor)));
                    let drain = (admin_state == AdminState::Draining).then(|| {
                        inputs.drain.get(&key).cloned().unwrap_or(DrainProgress {
                            state: DrainState::Draining,
                            since: None,
                            overdue: false,
                        })
                    });
                    MemberView {
                        name: member.name.clone(),
                        fqdn: member.fqdn.clone(),
                        addresses: member.addresses.clone(),
                        weight: member.weight,
                        admin_state,
                        health,
                        address_health,
                        drain,
                        counters: inputs.counters.get(&key).cloned().unwrap_or_default(),
                        eligible,
                    }
                })
                .collect();
            let eligible: Vec<usize> = (0..members.len())
                .filter(|&i| members[i].eligible)
                .collect();
            let failed_open = eligible.is_empty()
                && config.dns.fail_open
                && members.iter().any(|m| m.admin_state == AdminState::Enabled);
            pools.push(PoolState {
                name: pool.name.clone(),
                fqdn: pool.fqdn.clone(),
                aliases: pool.aliases.clone(),
                monitor: pool.monitor.clone(),
                members,
                eligible,
                failed_open,
            });
        }

        let services = config
            .virtual_services
            .iter()
            .filter_map(|service| {
                let pool_index = pools.iter().position(|pool| pool.name == service.pool)?;
                let start = start_of(&service.monitor);
                let members = &pools[pool_index].members;
                let candidates = members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| {
                        m.admin_state == AdminState::Enabled
                            && m.health
                                .get(&service.monitor)
                                .is_some_and(|h| h.counts_up(start))
                    })
                    .map(|(i, _)| i)
                    .collect();
                let connect_to = members
                    .iter()
                    .map(|m| m.connect_address(&service.monitor, start, service.address))
                    .collect();
                Some(ServiceState {
                    name: service.name.clone(),
                    address: service.address,
                    ports: service.ports.clone(),
                    pool: pool_index,
                    monitor: service.monitor.clone(),
                    candidates,
                    connect_to,
                    counters: inputs
                        .service_counters
                        .get(&service.name)
                        .cloned()
                        .unwrap_or_default(),
                })
            })
            .collect();

        let mut dns = BTreeMap::new();
        for (pool_index, pool) in pools.iter().enumerate() {
            let pool_start = start_of(&pool.monitor);
            let addresses: Vec<IpAddr> = if pool.failed_open {
                pool.members
                    .iter()
                    .filter(|m| m.admin_state == AdminState::Enabled)
                    .flat_map(|m| m.addresses.iter().copied())
                    .collect()
            } else {
                pool.eligible
                    .iter()
                    .flat_map(|&i| pool.members[i].up_addresses(&pool.monitor, pool_start))
                    .collect()
            };
            for name in std::iter::once(&pool.fqdn).chain(&pool.aliases) {
                dns.insert(
                    name.clone(),
                    DnsAnswer {
                        addresses: addresses.clone(),
                        pool: pool_index,
                        member: None,
                    },
                );
            }
            for (member_index, member) in pool.members.iter().enumerate() {
                if let Some(fqdn) = &member.fqdn
                    && member.admin_state != AdminState::Disabled
                {
                    dns.insert(
                        fqdn.clone(),
                        DnsAnswer {
                            addresses: member.addresses.clone(),
                            pool: pool_index,
                            member: Some(member_index),
                        },
                    );
                }
            }
        }

        Self {
            generation,
            config_version: inputs.config_version,
            config: Arc::clone(&inputs.config),
            pools,
            services,
            dns,
            ca_bundles: Arc::clone(&inputs.ca_bundles),
        }
    }
}
