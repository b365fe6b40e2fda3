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

/// Remember the addresses-of-record of redirected REGISTERs in the store, in
/// batches (at most one write a second), until `shutdown`; then write what
/// is pending. Each batch applies the current `[sip]` caps (count and age)
/// and leaves the table's size and evictions in `stats`.
pub async fn record_seen(
    mut seen: tokio::sync::mpsc::Receiver<(String, String)>,
    store: crate::store::Store,
    publisher: crate::state::PublisherHandle,
    stats: std::sync::Arc<SipStats>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use std::collections::BTreeSet;
    use std::sync::atomic::Ordering::Relaxed;
    const BATCH: usize = 1000;
    // The gauge starts from what an earlier run left.
    let counting = store.clone();
    if let Ok(Ok(users)) = tokio::task::spawn_blocking(move || counting.seen_aors_count()).await {
        stats.seen_users.store(users, Relaxed);
    }
    let mut pending: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        let closing = tokio::select! {
            () = shutdown.cancelled() => true,
            next = seen.recv() => match next {
                Some(entry) => { pending.insert(entry); false }
                None => true,
            },
        };
        if !closing {
            let deadline = tokio::time::sleep(std::time::Duration::from_secs(1));
            tokio::pin!(deadline);
            while pending.len() < BATCH {
                tokio::select! {
                    () = &mut deadline => break,
                    next = seen.recv() => match next {
                        Some(entry) => { pending.insert(entry); }
                        None => break,
                    },
                }
            }
        }
        if !pending.is_empty() {
            let batch: Vec<(String, String)> = std::mem::take(&mut pending).into_iter().collect();
            let store = store.clone();
            let limits = seen_limits(&publisher.current().config.sip);
            match tokio::task::spawn_blocking(move || store.record_seen_aors(&batch, limits)).await
            {
                Ok(Ok(recorded)) => {
                    stats.seen_users.store(recorded.users, Relaxed);
                    stats.seen_evicted.fetch_add(recorded.evicted, Relaxed);
                }
                Ok(Err(error)) => tracing::warn!(%error, "Cannot remember seen SIP users"),
                Err(error) => tracing::warn!(%error, "Seen-user writer failed"),
            }
        }
        if closing {
            return;
        }
    }
}

fn seen_limits(settings: &crate::config::SipSettings) -> crate::store::SeenLimits {
    crate::store::SeenLimits {
        max: settings.seen_users_max.into(),
        max_age: settings.seen_users_max_age,
    }
}

/// What-if over the users poolgate has seen: the share of `aors` whose
/// registrations would move if `member` of `pool` stopped taking them (those
/// it serves first now).
pub fn seen_drain_fraction(pool: &crate::state::PoolState, member: usize, aors: &[String]) -> f64 {
    if aors.is_empty() {
        return 0.0;
    }
    let moving = aors
        .iter()
        .filter(|aor| registrar::rank_pool(pool, aor).serving() == Some(member))
        .count();
    moving as f64 / aors.len() as f64
}
