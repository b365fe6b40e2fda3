//! The writer of seen SIP users: the reader of the channel the redirect
//! service sends the addresses-of-record of redirected REGISTERs on
//! (`SipStats::seen`). It remembers them in the `seen_aors` table for the
//! registrar what-if, in batches of at most `BATCH` users and at most one
//! write a second, so a REGISTER flood costs the store one transaction a
//! second and never waits on it.
//!
//! Invariants: each batch applies the `[sip]` caps (count and age) of the
//! current view; `SipStats::seen_users` is the table's size after the last
//! write (from the table at start), `seen_evicted` counts what the caps made
//! the store forget; on shutdown what is pending is written before the task
//! ends.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{SeenLimits, Store};
use crate::config::SipSettings;
use crate::sip::SipStats;
use crate::state::PublisherHandle;

/// Most users written in one transaction.
const BATCH: usize = 1000;

/// How long users wait for more to join their batch.
const LINGER: Duration = Duration::from_secs(1);

/// Remember what arrives on `seen` (pool name, AoR) in `store` until
/// `shutdown`, or until every sender is gone; then write what is pending.
pub(crate) async fn run(
    mut seen: mpsc::Receiver<(String, String)>,
    store: Store,
    publisher: PublisherHandle,
    stats: Arc<SipStats>,
    shutdown: CancellationToken,
) {
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
            let deadline = tokio::time::sleep(LINGER);
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
            let limits = seen_limits(&publisher.current().config.sip);
            write(&store, batch, limits, &stats).await;
        }
        if closing {
            return;
        }
    }
}

/// Store one batch and leave the table's size and evictions in `stats`.
async fn write(store: &Store, batch: Vec<(String, String)>, limits: SeenLimits, stats: &SipStats) {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.record_seen_aors(&batch, limits)).await {
        Ok(Ok(recorded)) => {
            stats.seen_users.store(recorded.users, Relaxed);
            stats.seen_evicted.fetch_add(recorded.evicted, Relaxed);
        }
        Ok(Err(error)) => tracing::warn!(%error, "Cannot remember seen SIP users"),
        Err(error) => tracing::warn!(%error, "Seen-user writer failed"),
    }
}

fn seen_limits(settings: &SipSettings) -> SeenLimits {
    SeenLimits {
        max: settings.seen_users_max.into(),
        max_age: settings.seen_users_max_age,
    }
}
