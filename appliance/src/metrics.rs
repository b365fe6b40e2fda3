//! The Prometheus text exposition that `GET /metrics` serves: a
//! [`MetricsWriter`] and the [`Render`] trait every component with counters
//! implements next to its counters' definition (`DnsStats`, `SipStats`,
//! `EventStats`, the accept layer's `Registry`, the web's `AuthStats`), so a
//! counter added to one of them is rendered in the same file or not at all.
//! Each `render` destructures its struct: a new field fails to compile until
//! it is rendered or deliberately left out.
//!
//! Invariants: metric names, label names and types never change once
//! published (dashboards and alerts scrape them); every family writes its
//! `# HELP` and `# TYPE` lines even when it has no sample yet; label values
//! are escaped, so no name in the config can break the exposition.
//!
//! The per-member families come from the published `PoolView` and its
//! `MemberCounters`, rendered here because the view is built by the
//! publisher and read by every component.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::config::AdminState;
use crate::state::{MemberCounters, PoolView, ServiceCounters};

/// The `Content-Type` of the text exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A component that renders its own metrics.
pub(crate) trait Render {
    fn render(&self, out: &mut MetricsWriter);
}

/// The Prometheus metric type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// Prometheus text being written, family by family.
#[derive(Debug, Default)]
pub(crate) struct MetricsWriter {
    text: String,
}

impl MetricsWriter {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Start a family: its `# HELP` and `# TYPE` lines. Add its samples on
    /// the returned handle.
    pub(crate) fn family<'a>(&'a mut self, name: &'a str, kind: Kind, help: &str) -> Family<'a> {
        for line in [
            ["# HELP ", name, " ", help, "\n"],
            ["# TYPE ", name, " ", kind.as_str(), "\n"],
        ] {
            line.iter().for_each(|part| self.text.push_str(part));
        }
        Family {
            text: &mut self.text,
            name,
        }
    }

    /// A counter family with one unlabelled sample.
    pub(crate) fn counter(&mut self, name: &str, help: &str, value: &AtomicU64) {
        self.family(name, Kind::Counter, help)
            .sample(&[], value.load(Relaxed));
    }

    /// A gauge family with one unlabelled sample.
    pub(crate) fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Gauge, help).sample(&[], value);
    }

    /// The exposition written so far.
    pub(crate) fn finish(self) -> String {
        self.text
    }
}

/// One family's samples, written as they are added.
#[derive(Debug)]
pub(crate) struct Family<'a> {
    text: &'a mut String,
    name: &'a str,
}

impl Family<'_> {
    /// One sample with `labels` (name, unescaped value), in order.
    pub(crate) fn sample(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Self {
        self.text.push_str(self.name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(name);
                self.text.push_str("=\"");
                escape_into(self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(&value.to_string());
        self.text.push('\n');
        self
    }
}

/// A label value as the format wants it: backslash, quote and newline escaped.
fn escape_into(text: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            c => text.push(c),
        }
    }
}

/// The members of every pool with their view and counters, and the view's
/// generation.
impl Render for PoolView {
    fn render(&self, out: &mut MetricsWriter) {
        let members: Vec<_> = self
            .pools
            .iter()
            .flat_map(|pool| {
                pool.members.iter().map(move |m| {
                    (
                        [("pool", pool.name.as_str()), ("member", m.name.as_str())],
                        m,
                    )
                })
            })
            .collect();
        let mut eligible = out.family(
            "poolgate_member_eligible",
            Kind::Gauge,
            "1 if the member takes new work (enabled and up for its pool's monitor).",
        );
        for (labels, member) in &members {
            eligible.sample(labels, u64::from(member.eligible));
        }
        let mut admin = out.family(
            "poolgate_member_admin_state",
            Kind::Gauge,
            "1 for the member's current admin state.",
        );
        for ([pool, member], view) in &members {
            for state in AdminState::ALL {
                let labels = [*pool, *member, ("state", state.as_str())];
                admin.sample(&labels, u64::from(view.admin_state == state));
            }
        }
        let counters: Vec<_> = members
            .iter()
            .map(|(labels, member)| (labels, member_counters(&member.counters)))
            .collect();
        for (i, (name, kind, help)) in MEMBER_COUNTERS.into_iter().enumerate() {
            let mut family = out.family(name, kind, help);
            for (labels, values) in &counters {
                family.sample(*labels, values[i]);
            }
        }
        let services: Vec<_> = self
            .services
            .iter()
            .map(|service| {
                (
                    [("service", service.name.as_str())],
                    service_counters(&service.counters),
                )
            })
            .collect();
        for (i, (name, kind, help)) in SERVICE_COUNTERS.into_iter().enumerate() {
            let mut family = out.family(name, kind, help);
            for (labels, values) in &services {
                family.sample(labels, values[i]);
            }
        }
        out.gauge(
            "poolgate_view_generation",
            "Generation of the published pool view.",
            self.generation,
        );
    }
}

/// The families of [`member_counters`], in its order.
const MEMBER_COUNTERS: [(&str, Kind, &str); 8] = [
    (
        "poolgate_member_active_connections",
        Kind::Gauge,
        "Proxied connections open to the member.",
    ),
    (
        "poolgate_member_connections_total",
        Kind::Counter,
        "Proxied connections to the member since start.",
    ),
    (
        "poolgate_member_registrations_total",
        Kind::Counter,
        "REGISTERs redirected to the member as home or backup.",
    ),
    (
        "poolgate_member_connect_failures_total",
        Kind::Counter,
        "Connects from the VIP proxy to the member that failed or timed out.",
    ),
    (
        "poolgate_member_bytes_in_total",
        Kind::Counter,
        "Bytes proxied from clients to the member.",
    ),
    (
        "poolgate_member_bytes_out_total",
        Kind::Counter,
        "Bytes proxied from the member to clients.",
    ),
    (
        "poolgate_member_went_up_total",
        Kind::Counter,
        "Health transitions to up of any of the member's (monitor, address) probes.",
    ),
    (
        "poolgate_member_went_down_total",
        Kind::Counter,
        "Health transitions to down of any of the member's (monitor, address) probes.",
    ),
];

/// The families of [`service_counters`], in its order.
const SERVICE_COUNTERS: [(&str, Kind, &str); 4] = [
    (
        "poolgate_service_active_connections",
        Kind::Gauge,
        "Connections open through the virtual service.",
    ),
    (
        "poolgate_service_connections_total",
        Kind::Counter,
        "Connections proxied by the virtual service since start.",
    ),
    (
        "poolgate_service_bytes_in_total",
        Kind::Counter,
        "Bytes the virtual service proxied from clients to members.",
    ),
    (
        "poolgate_service_bytes_out_total",
        Kind::Counter,
        "Bytes the virtual service proxied from members to clients.",
    ),
];

/// A virtual service's counters as [`SERVICE_COUNTERS`] renders them.
fn service_counters(counters: &ServiceCounters) -> [u64; 4] {
    let ServiceCounters {
        active_connections,
        total_connections,
        bytes_in,
        bytes_out,
    } = counters;
    [active_connections, total_connections, bytes_in, bytes_out].map(|c| c.load(Relaxed))
}

/// A member's counters as [`MEMBER_COUNTERS`] renders them. Every field is
/// named, so a new counter is rendered here or left out on purpose.
fn member_counters(counters: &MemberCounters) -> [u64; 8] {
    let MemberCounters {
        active_connections,
        total_connections,
        bytes_in,
        bytes_out,
        registrations,
        // The reset signal is no counter.
        reset: _,
        connect_failures,
        went_up,
        went_down,
    } = counters;
    [
        active_connections,
        total_connections,
        registrations,
        connect_failures,
        bytes_in,
        bytes_out,
        went_up,
        went_down,
    ]
    .map(|counter| counter.load(Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_type_and_escaped_labels() {
        let mut out = MetricsWriter::new();
        out.family("poolgate_x_total", Kind::Counter, "Things.")
            .sample(&[("pool", "a\"b\\c\nd")], 3)
            .sample(&[("pool", "p"), ("member", "m")], 0);
        out.gauge("poolgate_y", "A level.", 7);
        out.family("poolgate_empty", Kind::Gauge, "Nothing yet.");
        assert_eq!(
            out.finish(),
            "# HELP poolgate_x_total Things.\n\
             # TYPE poolgate_x_total counter\n\
             poolgate_x_total{pool=\"a\\\"b\\\\c\\nd\"} 3\n\
             poolgate_x_total{pool=\"p\",member=\"m\"} 0\n\
             # HELP poolgate_y A level.\n\
             # TYPE poolgate_y gauge\n\
             poolgate_y 7\n\
             # HELP poolgate_empty Nothing yet.\n\
             # TYPE poolgate_empty gauge\n"
        );
    }
}
