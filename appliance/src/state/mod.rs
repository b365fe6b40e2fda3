//! Runtime state: the immutable `PoolView` generations (`view`) and the one
//! task that publishes them (`publisher`). Per-member counters live beside the
//! snapshot, shared by every generation, so data-plane accounting never waits
//! for the publisher.

pub(crate) mod publisher;
pub(crate) mod view;

pub use publisher::{PublisherHandle, Update, spawn};
pub use view::{
    DnsAnswer, DrainProgress, DrainState, Health, HealthStatus, Inputs, MemberCounters, MemberView,
    PoolState, PoolView, ServiceCounters, ServiceState,
};

#[cfg(test)]
mod tests;
