//! Connections per member over the last minutes, for the UI's charts: one
//! sample of the published view every `INTERVAL`, the last `KEEP` kept in
//! memory (nothing is written; a restart starts afresh).
//!
//! * `GET /api/v1/status/history` — `{"interval_s", "samples": [{"at",
//!   "members": {"pool/member": active connections}}]}`, oldest first

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::Json;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::state::{PoolView, PublisherHandle};

pub const INTERVAL: Duration = Duration::from_secs(5);
/// Ten minutes of samples.
pub const KEEP: usize = 120;

/// Active connections of every member at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Sample {
    pub at: String,
    /// By `pool/member`.
    pub members: BTreeMap<String, u64>,
}

/// The last `KEEP` samples.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn record(&self, view: &PoolView, at: String) {
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

    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.iter().cloned().collect()
    }
}

/// Sample the published view every `INTERVAL` until `shutdown`.
pub async fn run(publisher: PublisherHandle, history: Arc<History>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        history.record(&publisher.current(), crate::store::now_rfc3339());
    }
}

/// `GET /api/v1/status/history`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryBody {
    pub interval_s: u64,
    pub samples: Vec<Sample>,
}

pub async fn history(State(state): State<AppState>) -> Json<HistoryBody> {
    Json(HistoryBody {
        interval_s: INTERVAL.as_secs(),
        samples: state.history.samples(),
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
