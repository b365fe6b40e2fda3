//! Connections per member over the last minutes, for the UI's charts: one
//! sample of the published view every `INTERVAL`, the last `KEEP` kept in
//! memory (nothing is written; a restart starts afresh). Beside them, the
//! last `KEEP` committed changes from the control task's stream, in commit
//! order, so a chart can mark the drain or config change behind a step.
//!
//! * `GET /api/v1/status/history` — `{"interval_s", "samples": [{"at",
//!   "members": {"pool/member": active connections}}], "changes": [{"at",
//!   "seq", "version", "source", "summary"}]}`, oldest first

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::Json;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use tokio::sync::broadcast;

use super::AppState;
use crate::control::Committed;
use crate::state::{PoolView, PublisherHandle};

pub(crate) const INTERVAL: Duration = Duration::from_secs(5);
/// Ten minutes of samples.
pub(crate) const KEEP: usize = 120;

/// Active connections of every member at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct Sample {
    pub at: String,
    /// By `pool/member`.
    pub members: BTreeMap<String, u64>,
}

/// One committed change, as the history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct ChangeMark {
    pub at: String,
    /// The change's place in commit order.
    pub seq: u64,
    /// The config version in force after it.
    pub version: i64,
    pub source: String,
    pub summary: Vec<String>,
}

impl ChangeMark {
    pub(crate) fn of(committed: &Committed, at: String) -> Self {
        Self {
            at,
            seq: committed.seq,
            version: committed.version,
            source: committed.source.to_string(),
            summary: committed.summary.clone(),
        }
    }
}

/// The last `KEEP` samples and committed changes.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    changes: Mutex<VecDeque<ChangeMark>>,
}

impl History {
    pub(crate) fn record(&self, view: &PoolView, at: String) {
        let members = view
            .pools
            .iter()
            .flat_map(|pool| {
                pool.members
                    .iter()
                    .map(move |m| (format!("{}/{}", pool.name, m.name), m.counters.active()))
            })
            .collect();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() >= KEEP {
            samples.pop_front();
        }
        samples.push_back(Sample { at, members });
    }

    pub(crate) fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.iter().cloned().collect()
    }

    pub(crate) fn record_change(&self, committed: &Committed, at: String) {
        let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if changes.len() >= KEEP {
            changes.pop_front();
        }
        changes.push_back(ChangeMark::of(committed, at));
    }

    pub(crate) fn changes(&self) -> Vec<ChangeMark> {
        let changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        changes.iter().cloned().collect()
    }
}

/// Sample the published view every `INTERVAL`, and note every committed
/// change, until `shutdown`.
pub(crate) async fn run(
    publisher: PublisherHandle,
    mut committed: broadcast::Receiver<Committed>,
    history: Arc<History>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut following = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                history.record(&publisher.current(), crate::store::now_rfc3339());
            }
            change = committed.recv(), if following => match change {
                Ok(change) => history.record_change(&change, crate::store::now_rfc3339()),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "History missed committed changes");
                }
                Err(broadcast::error::RecvError::Closed) => following = false,
            },
        }
    }
}

/// `GET /api/v1/status/history`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HistoryBody {
    pub interval_s: u64,
    pub samples: Vec<Sample>,
    /// Committed changes, in commit order.
    pub changes: Vec<ChangeMark>,
}

pub(crate) async fn history(State(state): State<AppState>) -> Json<HistoryBody> {
    Json(HistoryBody {
        interval_s: INTERVAL.as_secs(),
        samples: state.history.samples(),
        changes: state.history.changes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_samples_oldest_first() {
        let config = crate::config::from_toml(
            include_str!("../../../examples/lync-pool.toml"),
            "lync-pool.toml",
        )
        .expect("the example is valid");
        let inputs = crate::state::Inputs::new(Arc::new(config), 1, BTreeMap::new());
        let view = PoolView::build(&inputs, 1);
        let history = History::default();
        for i in 0..KEEP + 3 {
            history.record(&view, i.to_string());
        }
        let samples = history.samples();
        assert_eq!(samples.len(), KEEP);
        assert_eq!(samples[0].at, "3");
        assert_eq!(samples[KEEP - 1].at, (KEEP + 2).to_string());
        assert_eq!(samples[0].members.get("pool01/fe01"), Some(&0));
        assert_eq!(samples[0].members.len(), 3);
    }
}
