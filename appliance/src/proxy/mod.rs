//! proxy
pub mod schedule;
