//! The writer of seen SIP users: the reader of the channel the redirect
//! service sends the addresses-of-record of redirected REGISTERs on
//! (`SipStats::seen`). It remembers them in the `seen_aors` table for the
//! registrar what-if, in batches of at most `BATCH` users and at most one
//! write a second, so a REGISTER flood costs the store one transaction a
//! second and never waits on it: a full batch stops reading the channel
//! until its write is due (what the channel cannot take meanwhile is
//! `seen_dropped`).
//!
//! Invariants: writes are at least `LINGER` apart, and a user waits at most
//! `LINGER` for its batch's write; each batch applies the `[sip]` caps
//! (count and age) of the current view; `SipStats::seen_users` is the
//! table's size after the last write (from the table at start),
//! `seen_evicted` counts what the caps made the store forget; on shutdown
//! the channel is closed and drained, and everything pending and queued is
//! written (in batches of `BATCH`) before the task ends.

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

/// How long users wait for more to join their batch, and the least time
/// between two writes.
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
    // Ticks only matter while something is pending; the first user of a
    // batch resets it, and a write is never sooner than `LINGER` after the
    // previous one (which emptied `pending`).
    let mut due = tokio::time::interval(LINGER);
    due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            next = seen.recv(), if pending.len() < BATCH => match next {
                Some(entry) => {
                    if pending.is_empty() {
                        due.reset();
                    }
                    pending.insert(entry);
                }
                None => break,
            },
            _ = due.tick(), if !pending.is_empty() => {
                write_pending(&mut pending, &store, &publisher, &stats).await;
            }
        }
    }
    // What senders queued before the close is written too; the channel
    // holds a bounded number, and nothing more can join once it is closed.
    seen.close();
    while let Ok(entry) = seen.try_recv() {
        pending.insert(entry);
        if pending.len() >= BATCH {
            write_pending(&mut pending, &store, &publisher, &stats).await;
        }
    }
    write_pending(&mut pending, &store, &publisher, &stats).await;
}

/// Write what is pending, if anything, under the current view's caps.
async fn write_pending(
    pending: &mut BTreeSet<(String, String)>,
    store: &Store,
    publisher: &PublisherHandle,
    stats: &SipStats,
) {
    if pending.is_empty() {
        return;
    }
    let batch: Vec<(String, String)> = std::mem::take(pending).into_iter().collect();
    let limits = seen_limits(&publisher.current().config.sip);
    write(store, batch, limits, stats).await;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::config;
    use crate::state::{self, Inputs};

    #[tokio::test]
    async fn users_queued_before_shutdown_are_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/lync-pool.toml");
        let config = config::load(&path).expect("example validates");
        let shutdown = CancellationToken::new();
        let (publisher, publisher_task) = state::spawn(
            Inputs::new(Arc::new(config), 1, BTreeMap::new()),
            shutdown.child_token(),
        );
        let stats = Arc::new(SipStats::default());
        // More than two batches, all queued before the writer runs and
        // shutdown already asked for: every one must reach the table.
        let users = 2 * BATCH + 500;
        let (tx, rx) = mpsc::channel(10_000);
        for i in 0..users {
            tx.try_send(("pool01".to_owned(), format!("user{i:06}@contoso.test")))
                .expect("room in the channel");
        }
        let stop = CancellationToken::new();
        stop.cancel();
        tokio::time::timeout(
            Duration::from_secs(30),
            run(rx, store.clone(), publisher, Arc::clone(&stats), stop),
        )
        .await
        .expect("the writer ends once shutdown is asked for");
        assert_eq!(store.seen_aors("pool01").expect("seen").len(), users);
        assert_eq!(stats.seen_users.load(Relaxed), users as u64);
        // Nothing more is taken once the writer is gone.
        assert!(
            tx.try_send(("pool01".to_owned(), "late@contoso.test".to_owned()))
                .is_err()
        );
        shutdown.cancel();
        publisher_task.await.expect("publisher stops");
    }
}
