//! Which listeners to open and which to close when the config changes: a
//! pure diff between the endpoints running and the endpoints wanted.
//!
//! An endpoint is a listener kind and the address the config names for it
//! (not the address it got: `127.0.0.1:0` stays the same endpoint, so a
//! config that still says port 0 leaves the listener alone). While a move
//! of the admin listener awaits confirmation, the address it moves from is
//! wanted too.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::config::Listen;

/// What a listener serves. The order is the order of opening at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Admin,
    /// A UDP socket and a TCP listener on the same port.
    Dns,
    SipUdp,
    SipTcp,
    SipTls,
}

impl Kind {
    /// The name logs and events use.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Dns => "dns",
            Self::SipUdp => "sip-udp",
            Self::SipTcp => "sip-tcp",
            Self::SipTls => "sip-tls",
        }
    }
}

/// One listener: what it serves and the address the config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Endpoint {
    pub kind: Kind,
    pub address: SocketAddr,
}

impl Endpoint {
    pub(crate) fn new(kind: Kind, address: SocketAddr) -> Self {
        Self { kind, address }
    }
}

/// Whether two addresses cannot both listen: one port, one of them a
/// wildcard (the kernel refuses the second bind).
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a != b
        && a.port() == b.port()
        && a.port() != 0
        && (a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The endpoints `listen` names, plus `keep_admin` (the admin address a
/// move awaiting confirmation comes from). When the two clash (a wildcard
/// and a specific address on one port), only the kept one listens until
/// the move settles: it serves the new address too, and a confirmation
/// that reaches the new address there counts (`control::Arrival`).
pub(crate) fn wanted(listen: &Listen, keep_admin: Option<SocketAddr>) -> BTreeSet<Endpoint> {
    let admin = match keep_admin {
        Some(kept) if clash(kept, listen.admin) => kept,
        _ => listen.admin,
    };
    let optional = [
        (Kind::SipUdp, listen.sip_udp),
        (Kind::SipTcp, listen.sip_tcp),
        (Kind::SipTls, listen.sip_tls),
        (Kind::Admin, keep_admin),
    ];
    std::iter::once(Endpoint::new(Kind::Admin, admin))
        .chain(listen.dns.iter().map(|&a| Endpoint::new(Kind::Dns, a)))
        .chain(
            optional
                .into_iter()
                .filter_map(|(kind, address)| Some(Endpoint::new(kind, address?))),
        )
        .collect()
}

/// What reconciling does: open first, then close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan<K> {
    /// Wanted and not running.
    pub open: Vec<K>,
    /// Running and no longer wanted.
    pub close: Vec<K>,
}

impl<K> Plan<K> {
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty() && self.close.is_empty()
    }
}

/// The listeners to open and close to go from `running` to `wanted`; what
/// is in both is left alone.
pub(crate) fn plan<K: Ord + Clone>(running: &BTreeSet<K>, wanted: &BTreeSet<K>) -> Plan<K> {
    Plan {
        open: wanted.difference(running).cloned().collect(),
        close: running.difference(wanted).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    fn listen() -> Listen {
        Listen {
            admin: addr("127.0.0.1:8443"),
            dns: vec![addr("127.0.0.1:5300"), addr("[::1]:5300")],
            sip_udp: Some(addr("127.0.0.1:5060")),
            sip_tcp: None,
            sip_tls: None,
        }
    }

    #[test]
    fn wanted_names_every_configured_listener_once() {
        let wanted = wanted(&listen(), None);
        let kinds: Vec<Kind> = wanted.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [Kind::Admin, Kind::Dns, Kind::Dns, Kind::SipUdp]);
        let kept = super::wanted(&listen(), Some(addr("127.0.0.1:8443")));
        assert_eq!(
            kept, wanted,
            "keeping the current admin address adds nothing"
        );
    }

    #[test]
    fn a_move_between_a_wildcard_and_an_address_on_one_port_keeps_only_the_old() {
        let admins = |wanted: &BTreeSet<Endpoint>| -> Vec<SocketAddr> {
            wanted
                .iter()
                .filter(|e| e.kind == Kind::Admin)
                .map(|e| e.address)
                .collect()
        };
        let mut moved = listen();
        moved.admin = addr("198.51.100.10:8443");
        let wildcard = addr("0.0.0.0:8443");
        assert_eq!(admins(&wanted(&moved, Some(wildcard))), [wildcard]);
        // The other way round too; to another port, both listen.
        let mut back = listen();
        back.admin = wildcard;
        let specific = addr("198.51.100.10:8443");
        assert_eq!(admins(&wanted(&back, Some(specific))), [specific]);
        moved.admin = addr("198.51.100.10:9443");
        assert_eq!(admins(&wanted(&moved, Some(wildcard))).len(), 2);
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let running = wanted(&listen(), None);
        assert!(plan(&running, &running).is_empty());
    }

    #[test]
    fn a_moved_address_opens_the_new_and_closes_the_old_only() {
        let running = wanted(&listen(), None);
        let mut moved = listen();
        moved.dns[0] = addr("127.0.0.2:5300");
        let plan = plan(&running, &wanted(&moved, None));
        assert_eq!(
            plan.open,
            [Endpoint::new(Kind::Dns, addr("127.0.0.2:5300"))]
        );
        assert_eq!(
            plan.close,
            [Endpoint::new(Kind::Dns, addr("127.0.0.1:5300"))]
        );
    }

    #[test]
    fn added_and_removed_services() {
        let running = wanted(&listen(), None);
        let mut changed = listen();
        changed.sip_udp = None;
        changed.sip_tcp = Some(addr("127.0.0.1:5060"));
        let plan = plan(&running, &wanted(&changed, None));
        assert_eq!(
            plan.open,
            [Endpoint::new(Kind::SipTcp, addr("127.0.0.1:5060"))]
        );
        assert_eq!(
            plan.close,
            [Endpoint::new(Kind::SipUdp, addr("127.0.0.1:5060"))]
        );
    }

    #[test]
    fn port_zero_is_the_same_endpoint_whatever_port_it_got() {
        let mut zero = listen();
        zero.dns = vec![addr("127.0.0.1:0")];
        let running = wanted(&zero, None);
        assert!(plan(&running, &wanted(&zero, None)).is_empty());
    }

    #[test]
    fn an_admin_move_awaiting_confirmation_keeps_both_then_one() {
        let before = wanted(&listen(), None);
        let mut moved = listen();
        moved.admin = addr("127.0.0.2:8443");
        let old = addr("127.0.0.1:8443");
        // Moved, not confirmed yet: the new one opens, the old one stays.
        let pending = wanted(&moved, Some(old));
        let step = plan(&before, &pending);
        assert_eq!(step.open, [Endpoint::new(Kind::Admin, moved.admin)]);
        assert!(step.close.is_empty());
        // Confirmed: the old one closes.
        let step = plan(&pending, &wanted(&moved, None));
        assert!(step.open.is_empty());
        assert_eq!(step.close, [Endpoint::new(Kind::Admin, old)]);
        // Reverted instead: the previous config is back, the new one closes.
        let step = plan(&pending, &wanted(&listen(), Some(old)));
        assert!(step.open.is_empty());
        assert_eq!(step.close, [Endpoint::new(Kind::Admin, moved.admin)]);
    }
}
