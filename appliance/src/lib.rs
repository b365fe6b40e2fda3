//! poolgate: a load-balancing appliance for SIP server pools.
//!
//! One library, one thin binary (`main.rs`). Each module owns one subsystem:
//! `config` (schema and the one validator), `control` (the one task every change goes through), `dns` (the DNS responder), `store` (SQLite: desired config,
//! admin state, users, events), `state` (the `PoolView` snapshot and its one
//! publisher), `drain` (drain progress and deadlines), `events` (the event log every subsystem records in), `metrics` (the Prometheus text `/metrics` serves), `net` (the accept layer of every TCP listener), `proxy` (the L4 VIP proxy), `web` (the admin listener), `system` (signals, systemd
//! notification, logging, upgrades by image swap), and `app` (wiring them into a running appliance).

#![forbid(unsafe_code)]

pub mod app;
pub mod certs;
pub mod config;
pub mod control;
pub mod demo;
pub mod dns;
pub mod drain;
pub mod events;
pub mod health;
pub mod license;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod sip;
pub mod state;
pub mod store;
pub mod system;
pub mod web;

/// Version and build information, as `poolgate version` prints it.
pub fn build_info() -> String {
    format!(
        "poolgate {} (commit {}, {} build for {})",
        env!("POOLGATE_VERSION"),
        env!("POOLGATE_GIT_COMMIT"),
        env!("POOLGATE_PROFILE"),
        env!("POOLGATE_TARGET"),
    )
}
