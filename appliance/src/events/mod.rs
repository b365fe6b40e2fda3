//! The event log service: what happened to pools, members and the appliance,
//! as users read and filter it (`GET /api/v1/events`, the UI's history).
//!
//! Subsystems get a cloneable [`EventLog`] and call [`EventLog::record`],
//! which never blocks and never touches the store: events go on a bounded
//! queue to one writer task that stores them in batches (one transaction
//! each), so a burst of health transitions costs one fsync, and a stalled
//! disk slows no DNS answer or proxied connection. When the queue is full an
//! event is dropped and counted (`poolgate_events_dropped_total`), never
//! waited for. Changes that are committed with their event (a config version,
//! an admin state) write it in the same transaction instead; see `control`.
//!
//! `EventKind` is the closed set of kinds users filter on; its text form is
//! part of the API and never changes for an existing kind.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::{MetricsWriter, Render};

/// Events waiting for the writer before new ones are dropped. A whole pool
/// of 64 members changing health on three monitors fits many times over.
pub(crate) const QUEUE: usize = 4096;

/// Events stored per transaction at most.
const BATCH: usize = 256;

/// What an event is about: the value of the `kind` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum EventKind {
    /// A config version was committed.
    Config,
    /// A member's admin state was set (enable, drain, disable).
    Admin,
    /// A member's health changed on a monitor.
    Health,
    /// Drain progress: a member drained out, or its deadline passed.
    Drain,
    /// The DNS responder failed open for a pool, or recovered.
    Dns,
    /// The VIP proxy cut connections or could not bind a service.
    Proxy,
    /// A licence was installed or removed.
    License,
    /// The appliance itself: reboots, certificates, settings.
    System,
    /// An upgrade image received, installed, settled or rolled back.
    Upgrade,
    /// The HA pair: pairing, role changes with their reason, changes not
    /// applied after a split, refused sync attempts.
    Ha,
}

impl EventKind {
    pub(crate) const ALL: [Self; 10] = [
        Self::Config,
        Self::Admin,
        Self::Health,
        Self::Drain,
        Self::Dns,
        Self::Proxy,
        Self::License,
        Self::System,
        Self::Upgrade,
        Self::Ha,
    ];

    /// The stored and filtered text form.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Admin => "admin",
            Self::Health => "health",
            Self::Drain => "drain",
            Self::Dns => "dns",
            Self::Proxy => "proxy",
            Self::License => "license",
            Self::System => "system",
            Self::Upgrade => "upgrade",
            Self::Ha => "ha",
        }
    }

    /// The kind a filter names, if it names one.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event about to be recorded.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub kind: EventKind,
    pub pool: Option<String>,
    pub member: Option<String>,
    pub message: String,
    pub detail: Option<serde_json::Value>,
}

impl NewEvent {
    /// An event of `kind` with only a message; set the other fields with
    /// struct update syntax or the builders below.
    pub(crate) fn new(kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            pool: None,
            member: None,
            message: message.into(),
            detail: None,
        }
    }

    /// About one member of one pool.
    pub(crate) fn member(mut self, pool: &str, member: &str) -> Self {
        self.pool = Some(pool.to_owned());
        self.member = Some(member.to_owned());
        self
    }

    /// About a whole pool.
    pub(crate) fn pool(mut self, pool: &str) -> Self {
        self.pool = Some(pool.to_owned());
        self
    }

    pub(crate) fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// The handle subsystems record events with. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventLog {
    queue: mpsc::Sender<NewEvent>,
    stats: Arc<EventStats>,
}

/// The event log's counters, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct EventStats {
    /// Events handed to the writer.
    pub recorded: AtomicU64,
    /// Events dropped because the queue was full or the writer had stopped.
    pub dropped: AtomicU64,
    /// Batches the store refused (each one's events are lost and logged).
    pub write_errors: AtomicU64,
}

impl Render for EventStats {
    fn render(&self, out: &mut MetricsWriter) {
        let Self {
            recorded,
            dropped,
            write_errors,
        } = self;
        out.counter(
            "poolgate_events_recorded_total",
            "Events handed to the event log's writer.",
            recorded,
        );
        out.counter(
            "poolgate_events_dropped_total",
            "Events dropped because the event log's queue was full.",
            dropped,
        );
        out.counter(
            "poolgate_events_write_errors_total",
            "Batches of events the store refused; their events are lost.",
            write_errors,
        );
    }
}

impl EventLog {
    /// Queue `event` for the writer; never waits.
    pub(crate) fn record(&self, event: NewEvent) {
        match self.queue.try_send(event) {
            Ok(()) => {
                self.stats.recorded.fetch_add(1, Relaxed);
            }
            Err(error) => {
                let dropped = self.stats.dropped.fetch_add(1, Relaxed) + 1;
                // One warning per power of two, so a flood cannot flood the log.
                if dropped.is_power_of_two() {
                    let event = error.into_inner();
                    tracing::warn!(
                        dropped,
                        kind = %event.kind,
                        "Event log queue full; event dropped"
                    );
                }
            }
        }
    }

    pub(crate) fn stats(&self) -> &Arc<EventStats> {
        &self.stats
    }

    /// A log with no writer, whose queue keeps the last events for a test
    /// to read: for tests of subsystems that need no store.
    #[cfg(test)]
    pub(crate) fn for_tests() -> (Self, mpsc::Receiver<NewEvent>) {
        let (queue, events) = mpsc::channel(QUEUE);
        let log = Self {
            queue,
            stats: Arc::default(),
        };
        (log, events)
    }
}

/// Where the writer stores events: the store, or a test's stand-in.
pub(crate) trait EventSink: Clone + Send + Sync + 'static {
    /// Store `events` in one transaction, in order.
    fn store_events(&self, events: &[NewEvent]) -> Result<(), String>;
}

/// Start the writer. It stores events until `stop` is cancelled, then stores
/// what is still queued and ends. Cancel `stop` after the subsystems that
/// record have stopped, so their last events are kept.
pub(crate) fn spawn(store: impl EventSink, stop: CancellationToken) -> (EventLog, JoinHandle<()>) {
    let (queue, events) = mpsc::channel(QUEUE);
    let stats = Arc::new(EventStats::default());
    let log = EventLog {
        queue,
        stats: Arc::clone(&stats),
    };
    let task = tokio::spawn(write(store, events, stats, stop));
    (log, task)
}

async fn write(
    store: impl EventSink,
    mut events: mpsc::Receiver<NewEvent>,
    stats: Arc<EventStats>,
    stop: CancellationToken,
) {
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            biased;
            received = events.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return;
                }
            }
            () = stop.cancelled() => {
                events.close();
                while events.recv_many(&mut batch, BATCH).await > 0 {
                    store_batch(&store, std::mem::take(&mut batch), &stats).await;
                }
                return;
            }
        }
        store_batch(&store, batch, &stats).await;
    }
}

async fn store_batch(store: &impl EventSink, batch: Vec<NewEvent>, stats: &EventStats) {
    let count = batch.len();
    let store = store.clone();
    let result = tokio::task::spawn_blocking(move || store.store_events(&batch)).await;
    let error = match result {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error,
        Err(error) => error.to_string(),
    };
    stats.write_errors.fetch_add(1, Relaxed);
    tracing::warn!(events = count, %error, "Cannot store events; they are lost");
    // A failing disk is not retried in a tight loop.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_text() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("Health"), None);
    }

    /// Stores batches in memory.
    #[derive(Debug, Clone, Default)]
    struct Memory(Arc<std::sync::Mutex<Vec<Vec<String>>>>);

    impl EventSink for Memory {
        fn store_events(&self, events: &[NewEvent]) -> Result<(), String> {
            let batch = events.iter().map(|event| event.message.clone()).collect();
            self.0.lock().expect("not poisoned").push(batch);
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_writer_keeps_every_queued_event_when_stopped() {
        let sink = Memory::default();
        let stop = CancellationToken::new();
        let (log, writer) = spawn(sink.clone(), stop.clone());
        for i in 0..BATCH + 10 {
            log.record(NewEvent::new(EventKind::Drain, format!("event {i}")));
        }
        stop.cancel();
        writer.await.expect("writer ends");
        let batches = sink.0.lock().expect("not poisoned").clone();
        assert!(batches.iter().all(|batch| batch.len() <= BATCH));
        let stored: Vec<String> = batches.into_iter().flatten().collect();
        let expected: Vec<String> = (0..BATCH + 10).map(|i| format!("event {i}")).collect();
        assert_eq!(stored, expected);
        assert_eq!(log.stats().recorded.load(Relaxed), (BATCH + 10) as u64);
        // After the writer has stopped, events are dropped and counted.
        log.record(NewEvent::new(EventKind::Drain, "late"));
        assert_eq!(log.stats().dropped.load(Relaxed), 1);
    }

    #[test]
    fn the_stats_render_as_counters() {
        let stats = EventStats::default();
        stats.dropped.fetch_add(2, Relaxed);
        let mut out = MetricsWriter::new();
        stats.render(&mut out);
        let text = out.finish();
        assert!(
            text.contains(
                "# TYPE poolgate_events_dropped_total counter\npoolgate_events_dropped_total 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("poolgate_events_recorded_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("poolgate_events_write_errors_total 0\n"),
            "{text}"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (log, _events) = EventLog::for_tests();
        for i in 0..QUEUE + 3 {
            log.record(NewEvent::new(EventKind::Health, format!("event {i}")));
        }
        assert_eq!(log.stats().recorded.load(Relaxed), QUEUE as u64);
        assert_eq!(log.stats().dropped.load(Relaxed), 3);
    }
}
