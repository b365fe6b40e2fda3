//! poolgate: a load-balancing appliance for SIP server pools.
//!
//! One library, one thin binary (`main.rs`). Each module owns one subsystem:
//! `config` (schema and the one validator), `store` (SQLite: desired config,
//! admin state, users, events), `state` (the `PoolView` snapshot and its one
//! publisher), `web` (the admin listener), `system` (process concerns:
//! signals, systemd notification, logging), and `app` (wiring them into a
//! running appliance).

#![forbid(unsafe_code)]

pub mod config;
pub mod store;
