//! The attack suite: each test reproduces something an attacker on the
//! network can try against the real binary, and asserts the bound poolgate
//! keeps. Short variants run in `make test`; `POOLGATE_ATTACK_LONG=1` runs
//! the long ones (more connections, more packets, longer holds).
//!
//! One file per surface: `auth` (setup, login, credentials), `listeners`
//! (the accept layer of every TCP listener, HTTP/2), `udp` (SIP and DNS over
//! UDP, the SIP parser, seen users), `files` (data directory modes, the
//! generated certificate).

mod auth;
mod files;
mod listeners;
mod udp;

/// Whether the long variants run (`POOLGATE_ATTACK_LONG=1`).
#[allow(dead_code)]
pub fn long() -> bool {
    std::env::var_os("POOLGATE_ATTACK_LONG").is_some_and(|v| v == "1")
}

/// A two-thread runtime for tests that drive many connections at once.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
