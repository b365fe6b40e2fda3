//! poolgate: a load-balancing appliance for SIP server pools.
//!
//! One library, one thin binary (`main.rs`). Each module owns one subsystem:
//!
//! * `config`: the typed model, its schema and the one validator;
//! * `control`: the one task every change goes through (validate, licence,
//!   version check, diff, commit, publish, announce);
//! * `store`: SQLite: config versions, admin state, users, events, settings;
//! * `state`: the `PoolView` snapshot, built by a pure function and published
//!   by one writer to every reader;
//! * `events`: the event log every subsystem records in, written by one task;
//! * `dns`, `proxy`, `sip`: the data plane (DNS responder, L4 VIP proxy, SIP
//!   registrar hashing with redirects), reading only `PoolView`s;
//! * `health`: the monitors that probe members; `drain`: drain progress and
//!   deadlines;
//! * `net`: the accept layer of every TCP listener (caps, idle eviction);
//! * `listeners`: the DNS, SIP and admin listeners, following `[listen]`
//!   live (bind new, close old, confirm an admin move);
//! * `vrrp`: the HA pair's VRRP with keepalived (settings, keepalived.conf,
//!   the health file it tracks, its state);
//! * `web`: the admin listener (UI, REST API, authentication);
//! * `certs`: the certificate store shared by HTTPS and SIP over TLS;
//! * `license`: licence documents and the licensing clock;
//! * `backup`: the encrypted full backup, its restore (checked, previewed,
//!   applied through `control`) and the support bundle;
//! * `ha`: the HA pair: pairing, pinned mutual TLS, config and admin-state
//!   sync to the standby, one writer, the split-brain rule;
//! * `metrics`: the Prometheus text `/metrics` serves; `csv`: the CSV the
//!   logs export;
//! * `system`: signals, systemd notification, logging, reboots and upgrades
//!   by image swap (nothing there knows about pools);
//! * `demo`: a self-contained demo pool; `app`: wiring it all into a running
//!   appliance.
//!
//! `docs/architecture.md` shows how a change and a probe result flow through
//! them.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod app;
pub mod audit;
pub mod backup;
pub mod certs;
pub(crate) mod clock;
pub mod config;
pub(crate) mod control;
pub(crate) mod csv;
pub mod demo;
pub mod dns;
pub(crate) mod drain;
pub(crate) mod events;
pub(crate) mod ha;
pub mod health;
pub mod ldap;
pub mod license;
pub(crate) mod listeners;
pub(crate) mod metrics;
pub(crate) mod net;
pub mod proxy;
pub mod sip;
pub mod snmp;
pub mod state;
pub mod store;
pub mod syslog;
pub mod system;
pub mod vrrp;
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
