//! SIP registrar hashing and the redirect service. `registrar` (pure) ranks
//! every user's members; `message` (pure) parses and frames SIP messages;
//! `redirect` (pure) decides the answer to one request from a `PoolView`;
//! `server` owns the UDP and TCP listeners and never lets one bad packet or
//! connection affect another.

pub mod message;
pub mod redirect;
pub mod registrar;
pub mod server;

pub use server::{SipError, SipStats, serve_tcp, serve_udp};
