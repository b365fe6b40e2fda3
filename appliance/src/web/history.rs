//! The appliance's last hour, for the UI's charts: every `INTERVAL` one
//! snapshot of the counters (per virtual service and member, DNS, SIP,
//! health transitions), the last `KEEP` kept in memory (nothing is
//! written; a restart starts afresh). Beside them, the last `KEEP`
//! committed changes from the control task's stream, in commit order, so a
//! chart can mark the drain or config change behind a step.
//!
//! * `GET /api/v1/status/history` — active connections per member over the
//!   last ten minutes: `{"interval_s", "samples": [{"at", "members":
//!   {"pool/member": active connections}}], "changes": [...]}`, oldest first
//! * `GET /api/v1/statistics` — the last hour as rates: each sample is the
//!   interval since the one before it (`after`: only samples with a larger
//!   `seq`, for a page that polls; `minutes`: how far back, 1–60)
//!
//! Counters are cumulative in a snapshot and turned into rates when asked
//! for; a counter that went backwards (a member removed and added again)
//! counts from zero.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::Json;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use tokio::sync::broadcast;

use super::{ApiError, AppState};
use crate::control::Committed;
use crate::dns::DnsStats;
use crate::sip::SipStats;
use crate::state::{PoolView, PublisherHandle};

pub(crate) const INTERVAL: Duration = Duration::from_secs(10);
/// One hour of snapshots.
pub(crate) const KEEP: usize = 360;
/// What `GET /api/v1/status/history` covers: its last ten minutes.
const STATUS_KEEP: usize = 60;

/// A virtual service's or member's proxied traffic at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ServiceTotals {
    active: u64,
    connections: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// A member's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MemberTotals {
    traffic: ServiceTotals,
    went_up: u64,
    went_down: u64,
}

/// The DNS and SIP servers' counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ServerTotals {
    dns_queries: u64,
    dns_dropped: u64,
    /// In `AnswerCounts::by_kind`'s order.
    dns_answers: [(&'static str, u64); 6],
    sip_requests: u64,
    sip_redirects: u64,
    sip_bad_requests: u64,
}

/// Every counter at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    seq: u64,
    at: String,
    taken: Instant,
    members: BTreeMap<String, MemberTotals>,
    services: BTreeMap<String, ServiceTotals>,
    servers: ServerTotals,
}

/// Where the counters that are not in the view are read.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    pub dns: Arc<DnsStats>,
    pub sip: Arc<SipStats>,
}

impl Sources {
    fn totals(&self) -> ServerTotals {
        ServerTotals {
            dns_queries: self.dns.queries.load(Relaxed),
            dns_dropped: self.dns.dropped.load(Relaxed),
            dns_answers: self.dns.answers.by_kind(),
            sip_requests: self.sip.requests.load(Relaxed),
            sip_redirects: self.sip.redirects.load(Relaxed),
            sip_bad_requests: self.sip.bad_requests.load(Relaxed),
        }
    }
}

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

/// The last `KEEP` snapshots and committed changes.
#[derive(Debug, Default)]
pub struct History {
    snapshots: Mutex<VecDeque<Snapshot>>,
    changes: Mutex<VecDeque<ChangeMark>>,
}

impl History {
    /// Take a snapshot of `view`'s counters and `servers`' at `at`.
    fn record(&self, view: &PoolView, servers: ServerTotals, at: String, taken: Instant) {
        let members = view
            .pools
            .iter()
            .flat_map(|pool| {
                pool.members.iter().map(move |m| {
                    let c = &m.counters;
                    let totals = MemberTotals {
                        traffic: ServiceTotals {
                            active: c.active(),
                            connections: c.total_connections.load(Relaxed),
                            bytes_in: c.bytes_in.load(Relaxed),
                            bytes_out: c.bytes_out.load(Relaxed),
                        },
                        went_up: c.went_up.load(Relaxed),
                        went_down: c.went_down.load(Relaxed),
                    };
                    (format!("{}/{}", pool.name, m.name), totals)
                })
            })
            .collect();
        let services = view
            .services
            .iter()
            .map(|s| {
                let c = &s.counters;
                let totals = ServiceTotals {
                    active: c.active_connections.load(Relaxed),
                    connections: c.total_connections.load(Relaxed),
                    bytes_in: c.bytes_in.load(Relaxed),
                    bytes_out: c.bytes_out.load(Relaxed),
                };
                (s.name.clone(), totals)
            })
            .collect();
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let seq = snapshots.back().map_or(1, |last| last.seq + 1);
        if snapshots.len() >= KEEP {
            snapshots.pop_front();
        }
        snapshots.push_back(Snapshot {
            seq,
            at,
            taken,
            members,
            services,
            servers,
        });
    }

    /// Active connections per member, over the last ten minutes.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        let snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let skip = snapshots.len().saturating_sub(STATUS_KEEP);
        snapshots
            .iter()
            .skip(skip)
            .map(|s| Sample {
                at: s.at.clone(),
                members: s
                    .members
                    .iter()
                    .map(|(k, t)| (k.clone(), t.traffic.active))
                    .collect(),
            })
            .collect()
    }

    /// The rates of each interval between snapshots whose later end has a
    /// `seq` above `after`, over the last `keep` snapshots.
    fn rates(&self, after: u64, keep: usize) -> Vec<RateSample> {
        let snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let skip = snapshots.len().saturating_sub(keep);
        let window: Vec<&Snapshot> = snapshots.iter().skip(skip).collect();
        window
            .windows(2)
            .filter(|pair| pair[1].seq > after)
            .map(|pair| RateSample::between(pair[0], pair[1]))
            .collect()
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

/// How much a counter grew from `before` to `now`: from zero if it went
/// backwards (it started again).
fn grew(before: u64, now: u64) -> u64 {
    now.checked_sub(before).unwrap_or(now)
}

/// Per second over `seconds`, to two decimals.
fn per_s(count: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    (count as f64 / seconds * 100.0).round() / 100.0
}

/// A member over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct MemberRates {
    #[serde(flatten)]
    pub traffic: ServiceRates,
    /// Health transitions in the interval (any monitor or address).
    pub went_up: u64,
    pub went_down: u64,
}

/// A virtual service's or member's traffic over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct ServiceRates {
    /// Connections open at the interval's end.
    pub active: u64,
    pub connections_per_s: f64,
    pub bytes_in_per_s: f64,
    pub bytes_out_per_s: f64,
}

/// The DNS server over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct DnsRates {
    pub queries_per_s: f64,
    pub dropped_per_s: f64,
    /// By kind: data, nodata, nxdomain, refused, servfail, other.
    pub answers_per_s: BTreeMap<String, f64>,
}

/// The SIP redirect server over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct SipRates {
    pub requests_per_s: f64,
    pub redirects_per_s: f64,
    pub bad_requests_per_s: f64,
}

/// One interval: from the snapshot before to `at`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct RateSample {
    pub seq: u64,
    /// The interval's end.
    pub at: String,
    /// Its length.
    pub seconds: f64,
    /// By name.
    pub services: BTreeMap<String, ServiceRates>,
    /// By `pool/member`.
    pub members: BTreeMap<String, MemberRates>,
    pub dns: DnsRates,
    pub sip: SipRates,
}

impl RateSample {
    fn between(before: &Snapshot, now: &Snapshot) -> Self {
        let seconds = now
            .taken
            .saturating_duration_since(before.taken)
            .as_secs_f64();
        let rate = |b: u64, n: u64| per_s(grew(b, n), seconds);
        let traffic = |b: &ServiceTotals, n: &ServiceTotals| ServiceRates {
            active: n.active,
            connections_per_s: rate(b.connections, n.connections),
            bytes_in_per_s: rate(b.bytes_in, n.bytes_in),
            bytes_out_per_s: rate(b.bytes_out, n.bytes_out),
        };
        let members = now
            .members
            .iter()
            .map(|(key, n)| {
                let b = before.members.get(key).copied().unwrap_or_default();
                let rates = MemberRates {
                    traffic: traffic(&b.traffic, &n.traffic),
                    went_up: grew(b.went_up, n.went_up),
                    went_down: grew(b.went_down, n.went_down),
                };
                (key.clone(), rates)
            })
            .collect();
        let services = now
            .services
            .iter()
            .map(|(name, n)| {
                let b = before.services.get(name).copied().unwrap_or_default();
                (name.clone(), traffic(&b, n))
            })
            .collect();
        let (b, n) = (&before.servers, &now.servers);
        let answers_per_s = n
            .dns_answers
            .iter()
            .zip(&b.dns_answers)
            .map(|((kind, now), (_, before))| ((*kind).to_owned(), rate(*before, *now)))
            .collect();
        Self {
            seq: now.seq,
            at: now.at.clone(),
            seconds: (seconds * 1000.0).round() / 1000.0,
            services,
            members,
            dns: DnsRates {
                queries_per_s: rate(b.dns_queries, n.dns_queries),
                dropped_per_s: rate(b.dns_dropped, n.dns_dropped),
                answers_per_s,
            },
            sip: SipRates {
                requests_per_s: rate(b.sip_requests, n.sip_requests),
                redirects_per_s: rate(b.sip_redirects, n.sip_redirects),
                bad_requests_per_s: rate(b.sip_bad_requests, n.sip_bad_requests),
            },
        }
    }
}

/// Snapshot the published view and `sources` every `INTERVAL`, and note
/// every committed change, until `shutdown`.
pub(crate) async fn run(
    publisher: PublisherHandle,
    sources: Sources,
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
                history.record(
                    &publisher.current(),
                    sources.totals(),
                    crate::clock::now_rfc3339(),
                    Instant::now(),
                );
            }
            change = committed.recv(), if following => match change {
                Ok(change) => history.record_change(&change, crate::clock::now_rfc3339()),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatisticsQuery {
    after: Option<u64>,
    minutes: Option<u64>,
}

/// `GET /api/v1/statistics`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StatisticsBody {
    pub interval_s: u64,
    /// Oldest first.
    pub samples: Vec<RateSample>,
    /// Committed changes, in commit order.
    pub changes: Vec<ChangeMark>,
}

pub(crate) async fn statistics(
    State(state): State<AppState>,
    query: Result<Query<StatisticsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<StatisticsBody>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let minutes = query.minutes.unwrap_or(60);
    if !(1..=60).contains(&minutes) {
        return Err(ApiError::invalid("minutes", "use 1 to 60"));
    }
    // The snapshots of `minutes`, and the one before the first, which its
    // interval starts from.
    let keep = usize::try_from(minutes * 60 / INTERVAL.as_secs()).unwrap_or(KEEP) + 1;
    Ok(Json(StatisticsBody {
        interval_s: INTERVAL.as_secs(),
        samples: state.history.rates(query.after.unwrap_or(0), keep),
        changes: state.history.changes(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> PoolView {
        let config = crate::config::from_toml(
            include_str!("../../../examples/lync-pool.toml"),
            "lync-pool.toml",
        )
        .expect("the example is valid");
        let inputs = crate::state::Inputs::new(Arc::new(config), 1, BTreeMap::new());
        PoolView::build(&inputs, 1)
    }

    #[test]
    fn keeps_the_last_hour_and_shows_ten_minutes_oldest_first() {
        let view = view();
        let history = History::default();
        let start = Instant::now();
        for i in 0..KEEP + 3 {
            history.record(&view, ServerTotals::default(), i.to_string(), start);
        }
        let samples = history.samples();
        assert_eq!(samples.len(), STATUS_KEEP);
        assert_eq!(samples[0].at, (KEEP + 3 - STATUS_KEEP).to_string());
        assert_eq!(samples[STATUS_KEEP - 1].at, (KEEP + 2).to_string());
        assert_eq!(samples[0].members.get("pool01/fe01"), Some(&0));
        assert_eq!(samples[0].members.len(), 3);
        assert_eq!(history.rates(0, KEEP).len(), KEEP - 1);
    }

    #[test]
    fn rates_are_per_second_of_each_interval_and_restart_from_zero() {
        let view = view();
        let history = History::default();
        let start = Instant::now();
        let fe01 = &view.pools[0].members[0].counters;
        let service = &view.services[0].counters;
        let servers = |queries, redirects| ServerTotals {
            dns_queries: queries,
            sip_redirects: redirects,
            ..ServerTotals::default()
        };
        history.record(&view, servers(100, 0), "a".into(), start);
        fe01.total_connections.store(20, Relaxed);
        fe01.bytes_in.store(10_000, Relaxed);
        fe01.went_down.store(1, Relaxed);
        service.total_connections.store(20, Relaxed);
        service.active_connections.store(4, Relaxed);
        history.record(
            &view,
            servers(300, 50),
            "b".into(),
            start + Duration::from_secs(10),
        );
        // The counters went backwards: counted from zero.
        history.record(
            &view,
            servers(30, 5),
            "c".into(),
            start + Duration::from_secs(20),
        );
        let rates = history.rates(0, KEEP);
        assert_eq!(rates.len(), 2);
        let first = &rates[0];
        assert_eq!(
            (first.seq, first.at.as_str(), first.seconds),
            (2, "b", 10.0)
        );
        let member = &first.members["pool01/fe01"];
        assert_eq!(member.traffic.connections_per_s, 2.0);
        assert_eq!(member.traffic.bytes_in_per_s, 1000.0);
        assert_eq!((member.went_up, member.went_down), (0, 1));
        let web = &first.services[&view.services[0].name];
        assert_eq!((web.active, web.connections_per_s), (4, 2.0));
        assert_eq!(first.dns.queries_per_s, 20.0);
        assert_eq!(first.sip.redirects_per_s, 5.0);
        assert_eq!(rates[1].dns.queries_per_s, 3.0);
        assert_eq!(
            rates[1].members["pool01/fe01"].traffic.connections_per_s,
            0.0
        );
        // `after` leaves out what a poller has.
        assert_eq!(history.rates(2, KEEP).len(), 1);
        assert!(history.rates(3, KEEP).is_empty());
        // `keep` counts snapshots: two give one interval.
        assert_eq!(history.rates(0, 2).len(), 1);
    }
}
