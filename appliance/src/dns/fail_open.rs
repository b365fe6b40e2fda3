//! Fail-open episodes: while a pool has no eligible member and `fail_open` is
//! set, DNS answers with every enabled member (the view computes that). The
//! operator must hear about it once per episode, not once per query, so this
//! task follows the published views and records one `dns` event when a pool
//! enters fail-open and one when it leaves. `transitions` is the pure part.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::events::{EventKind, EventLog, NewEvent};
use crate::state::PoolView;

/// A pool entering (`true`) or leaving (`false`) fail-open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    pub pool: String,
    pub failed_open: bool,
}

/// Pools failed open in `view`, and how that differs from `before`.
pub(crate) fn transitions(
    before: &BTreeSet<String>,
    view: &PoolView,
) -> (BTreeSet<String>, Vec<Transition>) {
    let now: BTreeSet<String> = view
        .pools
        .iter()
        .filter(|pool| pool.failed_open)
        .map(|pool| pool.name.clone())
        .collect();
    let entered = now.difference(before).map(|pool| Transition {
        pool: pool.clone(),
        failed_open: true,
    });
    let left = before.difference(&now).map(|pool| Transition {
        pool: pool.clone(),
        failed_open: false,
    });
    let changes = entered.chain(left).collect();
    (now, changes)
}

/// Follow `views` until `shutdown`, recording each transition in `events`.
pub(crate) async fn watch(
    mut views: watch::Receiver<Arc<PoolView>>,
    events: EventLog,
    shutdown: CancellationToken,
) {
    let mut failed_open = BTreeSet::new();
    loop {
        let view = Arc::clone(&views.borrow_and_update());
        let (now, changes) = transitions(&failed_open, &view);
        failed_open = now;
        for change in changes {
            record(&events, change);
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = views.changed() => if changed.is_err() { break },
        }
    }
}

fn record(events: &EventLog, change: Transition) {
    let message = if change.failed_open {
        tracing::warn!(pool = %change.pool, "No eligible member; DNS answers with every enabled member (fail open)");
        "No eligible member; DNS answers with every enabled member (fail open)"
    } else {
        tracing::info!(pool = %change.pool, "Eligible members again; DNS fail open ended");
        "Eligible members again; DNS fail open ended"
    };
    events.record(NewEvent::new(EventKind::Dns, message).pool(&change.pool));
}
