//! The status document: `GET /api/v1/status` and every message of
//! `GET /api/v1/status/stream`. One typed body, built from one `PoolView`
//! generation, so the JSON, its OpenAPI schema and the UI that reads it
//! cannot drift apart. Field names and value forms are part of the API.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::response::Json;
use serde::Serialize;

use super::AppState;
use crate::state::{self, PoolView};

/// Live status of every pool, member and virtual service.
pub(crate) async fn status(State(state): State<AppState>) -> Json<StatusBody> {
    Json(StatusBody::of(&state.publisher.current()))
}

/// One generation of the published state, as users read it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StatusBody {
    /// The publisher's generation: every change to any input makes a new one.
    pub generation: u64,
    /// The committed config version this generation was built from.
    pub config_version: i64,
    pub pools: Vec<PoolStatus>,
    pub virtual_services: Vec<ServiceStatus>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PoolStatus {
    pub name: String,
    pub fqdn: String,
    pub aliases: Vec<String>,
    pub monitor: String,
    /// Nothing was eligible and DNS answers with every enabled member.
    pub failed_open: bool,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MemberStatus {
    pub name: String,
    pub fqdn: Option<String>,
    /// The member's first address (its only one unless dual-stack).
    pub address: String,
    /// Every address with its health per monitor (a dual-stack member has
    /// two; `health` is up while any of them is).
    pub addresses: Vec<AddressStatus>,
    pub weight: u32,
    /// `enabled`, `draining` or `disabled`.
    pub admin_state: &'static str,
    /// Enabled and up for the pool's monitor: handed out to new clients.
    pub eligible: bool,
    pub drain: Option<DrainStatus>,
    /// Per monitor that probes this member.
    pub health: BTreeMap<String, HealthStatus>,
    pub active_connections: u64,
    pub registrations: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AddressStatus {
    pub address: String,
    /// Per monitor that probes this member.
    pub health: BTreeMap<String, HealthStatus>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DrainStatus {
    /// `draining` while work remains, then `drained`.
    pub state: &'static str,
    pub active_connections: u64,
    /// RFC 3339 time the drain started.
    pub since: Option<String>,
    /// The pool's drain deadline has passed.
    pub overdue: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HealthStatus {
    /// `unknown` (no probe completed yet), `up` or `down`.
    pub state: &'static str,
    /// Why the last probe failed, in words.
    pub reason: Option<String>,
    /// RFC 3339 time of the last transition.
    pub since: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ServiceStatus {
    pub name: String,
    pub address: String,
    pub ports: Vec<u16>,
    pub pool: String,
    pub monitor: String,
    /// The service's own connections and bytes, over all its ports (a
    /// member's counters below are the member's over every service).
    pub active_connections: u64,
    pub total_connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub members: Vec<ServiceMemberStatus>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ServiceMemberStatus {
    pub name: String,
    /// The service monitor's view of the member: `unknown`, `up` or `down`.
    pub health: &'static str,
    pub admin_state: &'static str,
    pub active_connections: u64,
    pub total_connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl StatusBody {
    pub(crate) fn of(view: &PoolView) -> Self {
        let pools = view
            .pools
            .iter()
            .map(|pool| PoolStatus {
                name: pool.name.clone(),
                fqdn: pool.fqdn.clone(),
                aliases: pool.aliases.clone(),
                monitor: pool.monitor.clone(),
                failed_open: pool.failed_open,
                members: pool.members.iter().map(MemberStatus::of).collect(),
            })
            .collect();
        let virtual_services = view
            .services
            .iter()
            .map(|service| {
                let pool = &view.pools[service.pool];
                ServiceStatus {
                    name: service.name.clone(),
                    address: service.address.to_string(),
                    ports: service.ports.clone(),
                    pool: pool.name.clone(),
                    monitor: service.monitor.clone(),
                    active_connections: service.counters.active_connections.load(Relaxed),
                    total_connections: service.counters.total_connections.load(Relaxed),
                    bytes_in: service.counters.bytes_in.load(Relaxed),
                    bytes_out: service.counters.bytes_out.load(Relaxed),
                    members: pool
                        .members
                        .iter()
                        .map(|member| ServiceMemberStatus {
                            name: member.name.clone(),
                            health: health_text(
                                member
                                    .health
                                    .get(&service.monitor)
                                    .map_or(state::Health::Unknown, |h| h.state),
                            ),
                            admin_state: member.admin_state.as_str(),
                            active_connections: member.counters.active(),
                            total_connections: member.counters.total_connections.load(Relaxed),
                            bytes_in: member.counters.bytes_in.load(Relaxed),
                            bytes_out: member.counters.bytes_out.load(Relaxed),
                        })
                        .collect(),
                }
            })
            .collect();
        Self {
            generation: view.generation,
            config_version: view.config_version,
            pools,
            virtual_services,
        }
    }
}

impl MemberStatus {
    fn of(member: &state::MemberView) -> Self {
        let active = member.counters.active();
        Self {
            name: member.name.clone(),
            fqdn: member.fqdn.clone(),
            address: member.addresses[0].to_string(),
            addresses: member
                .addresses
                .iter()
                .zip(&member.address_health)
                .map(|(address, health)| AddressStatus {
                    address: address.to_string(),
                    health: health_bodies(health),
                })
                .collect(),
            weight: member.weight,
            admin_state: member.admin_state.as_str(),
            eligible: member.eligible,
            drain: member.drain.as_ref().map(|drain| DrainStatus {
                state: match drain.state {
                    state::DrainState::Draining => "draining",
                    state::DrainState::Drained => "drained",
                },
                active_connections: active,
                since: drain.since.clone(),
                overdue: drain.overdue,
            }),
            health: health_bodies(&member.health),
            active_connections: active,
            registrations: member.counters.registrations.load(Relaxed),
        }
    }
}

fn health_bodies(health: &BTreeMap<String, state::HealthStatus>) -> BTreeMap<String, HealthStatus> {
    health
        .iter()
        .map(|(monitor, health)| {
            let body = HealthStatus {
                state: health_text(health.state),
                reason: health.reason.clone(),
                since: health.since.clone(),
            };
            (monitor.clone(), body)
        })
        .collect()
}

fn health_text(health: state::Health) -> &'static str {
    match health {
        state::Health::Unknown => "unknown",
        state::Health::Up => "up",
        state::Health::Down => "down",
    }
}
