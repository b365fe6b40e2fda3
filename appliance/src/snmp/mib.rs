//! POOLGATE-MIB (`mib/POOLGATE-MIB.txt`) as a sorted tree of values, built
//! from one status document (`web::status::StatusBody`, so SNMP, the API
//! and the UI read the same numbers), and the lookups AgentX asks for:
//! an exact name (get) and the first name after one (getnext). Pure: no
//! I/O, no clock.
//!
//! Tables are indexed by names (length-prefixed octets, as SMIv2 encodes a
//! non-IMPLIED string index). A name longer than [`MAX_INDEX_NAME`] is
//! left out of the tables: three such indexes must fit the 128
//! sub-identifiers of an OID.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::web::status::StatusBody;

/// `enterprises.32473`: the documentation PEN of RFC 5612, a placeholder
/// to be replaced by a registered one (see the MIB's DESCRIPTION).
pub(crate) const ROOT: [u32; 7] = [1, 3, 6, 1, 4, 1, 32473];
pub(crate) const MAX_INDEX_NAME: usize = 38;

/// `sysUpTime.0` and `snmpTrapOID.0`, the first two variables of a
/// notification.
pub(crate) const SYS_UPTIME: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 3, 0];
pub(crate) const SNMP_TRAP_OID: [u32; 11] = [1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];

/// A value of the MIB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Integer(i32),
    Text(String),
    Gauge(u32),
    Counter64(u64),
}

/// `ROOT` followed by `rest`.
pub(crate) fn oid(rest: &[u32]) -> Vec<u32> {
    let mut oid = ROOT.to_vec();
    oid.extend_from_slice(rest);
    oid
}

/// A notification's OID: `pgNotifications.n`.
pub(crate) fn notification(n: u32) -> Vec<u32> {
    oid(&[0, n])
}

/// Objects a notification carries (`pgNotifyObjects.n.0`).
pub(crate) fn notify_object(n: u32) -> Vec<u32> {
    oid(&[1, 4, n, 0])
}

fn push_name(index: &mut Vec<u32>, name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_INDEX_NAME {
        return false;
    }
    index.push(name.len() as u32);
    index.extend(name.bytes().map(u32::from));
    true
}

fn admin_state(word: &str, drained: bool) -> i32 {
    match (word, drained) {
        ("draining", true) => 4,
        ("draining", false) => 2,
        ("disabled", _) => 3,
        _ => 1,
    }
}

fn health(word: &str) -> i32 {
    match word {
        "up" => 2,
        "down" => 3,
        _ => 1,
    }
}

fn gauge(n: u64) -> Value {
    Value::Gauge(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The MIB's values at one moment.
#[derive(Debug, Default)]
pub(crate) struct Tree(BTreeMap<Vec<u32>, Value>);

impl Tree {
    pub(crate) fn of(status: &StatusBody) -> Self {
        let mut tree = BTreeMap::new();
        for pool in &status.pools {
            for member in &pool.members {
                let mut index = Vec::new();
                if !push_name(&mut index, &pool.name) || !push_name(&mut index, &member.name) {
                    continue;
                }
                // Counters live with the member; the status document
                // shows them per service member.
                let counters = status
                    .virtual_services
                    .iter()
                    .filter(|s| s.pool == pool.name)
                    .flat_map(|s| &s.members)
                    .find(|m| m.name == member.name);
                let drained = member.drain.as_ref().is_some_and(|d| d.state == "drained");
                let pool_health = member
                    .health
                    .get(&pool.monitor)
                    .map_or("unknown", |h| h.state);
                let columns = [
                    (3, Value::Text(member.address.clone())),
                    (4, Value::Integer(admin_state(member.admin_state, drained))),
                    (5, Value::Integer(health(pool_health))),
                    (6, gauge(member.active_connections)),
                    (
                        7,
                        Value::Counter64(counters.map_or(0, |c| c.total_connections)),
                    ),
                    (8, Value::Counter64(counters.map_or(0, |c| c.bytes_in))),
                    (9, Value::Counter64(counters.map_or(0, |c| c.bytes_out))),
                ];
                for (column, value) in columns {
                    let mut name = oid(&[1, 1, 1, column]);
                    name.extend(&index);
                    tree.insert(name, value);
                }
                for (monitor, state) in &member.health {
                    let mut index = index.clone();
                    if !push_name(&mut index, monitor) {
                        continue;
                    }
                    let reason = state.reason.clone().unwrap_or_default();
                    for (column, value) in [
                        (2, Value::Integer(health(state.state))),
                        (3, Value::Text(reason)),
                    ] {
                        let mut name = oid(&[1, 2, 1, column]);
                        name.extend(&index);
                        tree.insert(name, value);
                    }
                }
            }
        }
        for service in &status.virtual_services {
            let mut index = Vec::new();
            if !push_name(&mut index, &service.name) {
                continue;
            }
            let columns = [
                (2, Value::Text(service.address.clone())),
                (3, Value::Text(service.pool.clone())),
                (4, gauge(service.active_connections)),
                (5, Value::Counter64(service.total_connections)),
                (6, Value::Counter64(service.bytes_in)),
                (7, Value::Counter64(service.bytes_out)),
            ];
            for (column, value) in columns {
                let mut name = oid(&[1, 3, 1, column]);
                name.extend(&index);
                tree.insert(name, value);
            }
        }
        Self(tree)
    }

    pub(crate) fn get(&self, name: &[u32]) -> Option<&Value> {
        self.0.get(name)
    }

    /// The first name after `start` (or at it, when `include`), and
    /// before `end` unless `end` is empty (no bound).
    pub(crate) fn next(
        &self,
        start: &[u32],
        include: bool,
        end: &[u32],
    ) -> Option<(&Vec<u32>, &Value)> {
        let from = match include {
            true => Bound::Included(start.to_vec()),
            false => Bound::Excluded(start.to_vec()),
        };
        self.0
            .range((from, Bound::Unbounded))
            .next()
            .filter(|(name, _)| end.is_empty() || name.as_slice() < end)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::status::{
        HealthStatus, MemberStatus, PoolStatus, ServiceMemberStatus, ServiceStatus,
    };

    fn member(name: &str, admin: &'static str, health: &'static str) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            fqdn: None,
            address: "192.0.2.1".into(),
            addresses: Vec::new(),
            weight: 1,
            admin_state: admin,
            eligible: true,
            drain: None,
            health: [(
                "fe-sip".to_owned(),
                HealthStatus {
                    state: health,
                    reason: None,
                    since: None,
                },
            )]
            .into(),
            active_connections: 3,
            registrations: 0,
        }
    }

    fn status() -> StatusBody {
        StatusBody {
            generation: 1,
            config_version: 1,
            pools: vec![PoolStatus {
                name: "p".into(),
                fqdn: "p.test".into(),
                aliases: vec![],
                monitor: "fe-sip".into(),
                failed_open: false,
                members: vec![
                    member("fe01", "enabled", "up"),
                    member("fe02", "disabled", "down"),
                    member(&"x".repeat(MAX_INDEX_NAME + 1), "enabled", "up"),
                ],
            }],
            virtual_services: vec![ServiceStatus {
                name: "web".into(),
                address: "192.0.2.10".into(),
                ports: vec![443],
                pool: "p".into(),
                monitor: "fe-sip".into(),
                active_connections: 5,
                total_connections: 30,
                bytes_in: 300,
                bytes_out: 3000,
                members: ["fe01", "fe02"]
                    .into_iter()
                    .map(|name| ServiceMemberStatus {
                        name: name.into(),
                        health: "up",
                        admin_state: "enabled",
                        active_connections: 2,
                        total_connections: 10,
                        bytes_in: 100,
                        bytes_out: 1000,
                    })
                    .collect(),
            }],
        }
    }

    /// `pgMemberEntry.column."p"."fe0n"`.
    fn member_oid(column: u32, n: u8) -> Vec<u32> {
        let mut name = oid(&[1, 1, 1, column, 1, u32::from(b'p'), 4]);
        name.extend(b"fe0".iter().map(|b| u32::from(*b)));
        name.push(u32::from(b'0' + n));
        name
    }

    #[test]
    fn members_are_indexed_by_pool_and_name_with_their_states() {
        let tree = Tree::of(&status());
        assert_eq!(tree.get(&member_oid(4, 1)), Some(&Value::Integer(1)));
        assert_eq!(tree.get(&member_oid(4, 2)), Some(&Value::Integer(3)));
        assert_eq!(tree.get(&member_oid(5, 2)), Some(&Value::Integer(3)));
        assert_eq!(tree.get(&member_oid(7, 1)), Some(&Value::Counter64(10)));
        assert_eq!(
            tree.get(&member_oid(3, 1)),
            Some(&Value::Text("192.0.2.1".into()))
        );
        // The service's own counters, not its members' (which count
        // every service's connections).
        let mut service = oid(&[1, 3, 1, 5, 3]);
        service.extend(b"web".iter().map(|b| u32::from(*b)));
        assert_eq!(tree.get(&service), Some(&Value::Counter64(30)));
        // 2 members x 7 columns, 2 x 2 health, 6 service columns; the
        // member with a too long name is left out.
        assert_eq!(tree.len(), 14 + 4 + 6);
    }

    #[test]
    fn getnext_walks_in_order_within_the_range() {
        let tree = Tree::of(&status());
        let first = tree.next(&ROOT, false, &[]).expect("a first object");
        assert_eq!(first.0, &member_oid(3, 1));
        let (second, _) = tree.next(first.0, false, &[]).expect("a second");
        assert_eq!(second, &member_oid(3, 2));
        assert_eq!(tree.next(first.0, true, &[]).map(|f| f.0), Some(first.0));
        // Column 3 ends before column 4.
        assert!(
            tree.next(&member_oid(3, 2), false, &oid(&[1, 1, 1, 4]))
                .is_none()
        );
        let mut walked = 0;
        let mut at = ROOT.to_vec();
        while let Some((name, _)) = tree.next(&at, false, &[]) {
            assert!(name > &at);
            at = name.clone();
            walked += 1;
        }
        assert_eq!(walked, tree.len());
        let mut active = oid(&[1, 3, 1, 4, 3]);
        active.extend(b"web".iter().map(|b| u32::from(*b)));
        assert_eq!(tree.get(&active), Some(&Value::Gauge(5)));
    }
}
