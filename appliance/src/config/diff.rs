//! What changed between two validated configs, so a commit is applied as a
//! diff: unchanged members keep their health and counters, unchanged monitors
//! keep probing, and a member's admin state is only overwritten when the
//! config's `state` for it actually changed.

use std::collections::{BTreeMap, BTreeSet};

use super::schema::AdminState;
use super::validate::{Config, Member, Monitor, VirtualService};

/// A member is identified by its pool and its stable name.
pub type MemberKey = (String, String);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub members_added: BTreeSet<MemberKey>,
    pub members_removed: BTreeSet<MemberKey>,
    /// Address, weight or FQDN changed; identity kept.
    pub members_changed: BTreeSet<MemberKey>,
    /// Members whose admin state the new config sets: new members, and those
    /// whose `state` differs from the old config's.
    pub admin_states: BTreeMap<MemberKey, AdminState>,
    pub monitors_added: BTreeSet<String>,
    pub monitors_removed: BTreeSet<String>,
    pub monitors_changed: BTreeSet<String>,
    pub services_added: BTreeSet<String>,
    pub services_removed: BTreeSet<String>,
    pub services_changed: BTreeSet<String>,
    pub listeners_changed: bool,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn members(config: Option<&Config>) -> BTreeMap<MemberKey, &Member> {
    config
        .into_iter()
        .flat_map(|config| &config.pools)
        .flat_map(|pool| {
            pool.members
                .iter()
                .map(move |member| ((pool.name.clone(), member.name.clone()), member))
        })
        .collect()
}

fn by_name<'a, T>(
    items: impl IntoIterator<Item = &'a T>,
    name: fn(&T) -> &str,
) -> BTreeMap<String, &'a T>
where
    T: 'a,
{
    items
        .into_iter()
        .map(|item| (name(item).to_owned(), item))
        .collect()
}

fn compare<K: Ord + Clone, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> (BTreeSet<K>, BTreeSet<K>, BTreeSet<K>) {
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|old| old != *v))
        .map(|(k, _)| k.clone())
        .collect();
    (added, removed, changed)
}

/// The diff that turns `old` (nothing, on a fresh appliance) into `new`.
pub fn diff(old: Option<&Config>, new: &Config) -> ConfigDiff {
    let old_members = members(old);
    let new_members = members(Some(new));
    let identity = |m: &&Member| (m.fqdn.clone(), m.address, m.weight);
    let (members_added, members_removed, members_changed) = compare(
        &old_members
            .iter()
            .map(|(k, m)| (k.clone(), identity(m)))
            .collect(),
        &new_members
            .iter()
            .map(|(k, m)| (k.clone(), identity(m)))
            .collect(),
    );
    let admin_states = new_members
        .iter()
        .filter(|(key, member)| {
            old_members
                .get(*key)
                .is_none_or(|old| old.state != member.state)
        })
        .map(|(key, member)| (key.clone(), member.state))
        .collect();

    let monitor_name: fn(&Monitor) -> &str = |m| &m.name;
    let (monitors_added, monitors_removed, monitors_changed) = compare(
        &by_name(old.into_iter().flat_map(|c| &c.monitors), monitor_name),
        &by_name(&new.monitors, monitor_name),
    );
    let service_name: fn(&VirtualService) -> &str = |s| &s.name;
    let (services_added, services_removed, services_changed) = compare(
        &by_name(
            old.into_iter().flat_map(|c| &c.virtual_services),
            service_name,
        ),
        &by_name(&new.virtual_services, service_name),
    );
    ConfigDiff {
        members_added,
        members_removed,
        members_changed,
        admin_states,
        monitors_added,
        monitors_removed,
        monitors_changed,
        services_added,
        services_removed,
        services_changed,
        listeners_changed: old.is_none_or(|old| old.listen != new.listen),
    }
}
