//! Drain orchestration. Draining itself is an admin state applied by the
//! publisher: the moment a member is `draining` the view stops offering it
//! for new DNS answers, VIP connections and SIP registrations, while its own
//! FQDN keeps answering and its connections continue. This controller
//! watches what is left on each draining member (its proxied connections
//! and, if configured, the sessions its drain agent reports), publishes the
//! progress (`draining` → `drained`, overdue past `drain_timeout_s`), resets
//! connections at the deadline when `drop_at_deadline` is set, and resets a
//! disabled member's connections after a short grace.
//!
//! The drain start time comes from the store, so a restart resumes the same
//! drain with the same deadline. Milestones (drained, overdue, deadline
//! passed) go to the event log, once each per drain.

pub(crate) mod progress;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::AdminState;
use crate::config::MemberKey;
use crate::events::{EventKind, EventLog, NewEvent};
use crate::state::{DrainProgress, DrainState, PublisherHandle, Update};
use crate::store::Store;
use progress::{Decision, Observation};

/// How often drain progress is re-evaluated: "drained" follows the last
/// connection within this.
const TICK: Duration = Duration::from_millis(200);
const AGENT_INTERVAL: Duration = Duration::from_secs(1);
const AGENT_TIMEOUT: Duration = Duration::from_millis(800);
/// A disabled member's connections are reset after this grace.
pub(crate) const DISABLE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Tracked {
    started: time::OffsetDateTime,
    since: String,
    last: Option<Decision>,
    agent_polled: Option<Instant>,
}

/// Latest drain-agent answers: `None` = no answer.
type AgentAnswers = Arc<Mutex<HashMap<MemberKey, Option<u64>>>>;

/// Follow draining and disabled members until `shutdown`: publish their
/// drain progress, reset connections when due, and record milestones in
/// `events`. `store` is read for when each drain began.
pub(crate) async fn run(
    publisher: PublisherHandle,
    store: Store,
    events: EventLog,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracked: HashMap<MemberKey, Tracked> = HashMap::new();
    let mut disabled: HashMap<MemberKey, Instant> = HashMap::new();
    let agents: AgentAnswers = Arc::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let view = publisher.current();
        let mut draining_now = Vec::new();
        for pool in &view.pools {
            let pool_config = view.config.pool(&pool.name);
            for member in &pool.members {
                let key: MemberKey = (pool.name.clone(), member.name.clone());
                match member.admin_state {
                    AdminState::Disabled => {
                        let since = *disabled.entry(key).or_insert_with(Instant::now);
                        if since.elapsed() >= DISABLE_GRACE && member.counters.active() > 0 {
                            tracing::info!(pool = %pool.name, member = %member.name, connections = member.counters.active(), "Resetting connections of disabled member");
                            member.counters.reset_connections();
                            disabled
                                .insert((pool.name.clone(), member.name.clone()), Instant::now());
                        }
                        continue;
                    }
                    AdminState::Enabled => {
                        disabled.remove(&key);
                        continue;
                    }
                    AdminState::Draining => disabled.remove(&key),
                };
                draining_now.push(key.clone());
                if !tracked.contains_key(&key) {
                    let started = drain_started(&store, &key).await;
                    tracked.insert(
                        key.clone(),
                        Tracked {
                            started,
                            since: crate::clock::rfc3339(started),
                            last: None,
                            agent_polled: None,
                        },
                    );
                }
                let entry = tracked.get_mut(&key).expect("inserted above");
                let agent = pool_config.and_then(|p| p.drain_agent.clone());
                if let Some(agent) = &agent
                    && entry
                        .agent_polled
                        .is_none_or(|at| at.elapsed() >= AGENT_INTERVAL)
                {
                    entry.agent_polled = Some(Instant::now());
                    let (answers, key, address) =
                        (Arc::clone(&agents), key.clone(), member.addresses[0]);
                    let (port, path) = (agent.port, agent.path.clone());
                    tokio::spawn(async move {
                        let sessions =
                            poll_agent(std::net::SocketAddr::new(address, port), &path).await;
                        answers
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(key, sessions);
                    });
                }
                let agent_sessions = agent.map(|_| {
                    agents
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&key)
                        .copied()
                        .flatten()
                });
                let elapsed = (time::OffsetDateTime::now_utc() - entry.started)
                    .try_into()
                    .unwrap_or(Duration::ZERO);
                let decision = progress::decide(&Observation {
                    active_connections: member.counters.active(),
                    agent_sessions,
                    elapsed,
                    timeout: pool_config.and_then(|p| p.drain_timeout),
                    drop_at_deadline: pool_config.is_some_and(|p| p.drop_at_deadline),
                });
                let progress = DrainProgress {
                    state: decision.state,
                    since: Some(entry.since.clone()),
                    overdue: decision.overdue,
                };
                if member.drain.as_ref() != Some(&progress) {
                    publisher
                        .send(Update::Drain {
                            member: key.clone(),
                            progress: Some(progress),
                        })
                        .await;
                }
                if entry.last != Some(decision) {
                    milestone(
                        &events,
                        &key,
                        entry.last,
                        decision,
                        member.counters.active(),
                    );
                    entry.last = Some(decision);
                }
                if decision.reset_connections {
                    member.counters.reset_connections();
                }
            }
        }
        tracked.retain(|key, _| draining_now.contains(key));
        agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, _| draining_now.contains(key));
    }
}

/// When the drain began, from the store; now if unknown.
async fn drain_started(store: &Store, (pool, member): &MemberKey) -> time::OffsetDateTime {
    let (store, pool, member) = (store.clone(), pool.clone(), member.clone());
    tokio::task::spawn_blocking(move || store.admin_state_changed_at(&pool, &member))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .and_then(|at| {
            time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_else(time::OffsetDateTime::now_utc)
}

fn milestone(
    events: &EventLog,
    (pool, member): &MemberKey,
    before: Option<Decision>,
    now: Decision,
    active: u64,
) {
    let message = match (before.map(|d| (d.state, d.overdue)), now.state, now.overdue) {
        (Some((DrainState::Drained, _)), DrainState::Drained, _) => return,
        (_, DrainState::Drained, _) => format!("{pool}/{member} drained: ready to take offline"),
        (Some((_, false)) | None, DrainState::Draining, true) if now.reset_connections => {
            format!("{pool}/{member} drain deadline passed: resetting {active} connections")
        }
        (Some((_, false)) | None, DrainState::Draining, true) => {
            format!("{pool}/{member} drain overdue: {active} connections remain")
        }
        _ => return,
    };
    tracing::info!(%pool, %member, active, "{message}");
    events.record(
        NewEvent::new(EventKind::Drain, message)
            .member(pool, member)
            .detail(serde_json::json!({"active_connections": active, "overdue": now.overdue})),
    );
}

/// Ask a drain agent how many sessions remain: an HTTP GET whose body is a
/// decimal number. Anything else is no answer.
async fn poll_agent(address: std::net::SocketAddr, path: &str) -> Option<u64> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: poolgate-drain\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::with_capacity(512);
        stream.take(4096).read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.split_whitespace()
            .nth(1)
            .filter(|code| *code == "200")?;
        body.trim().parse().ok()
    };
    tokio::time::timeout(AGENT_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}
