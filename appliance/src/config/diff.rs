//! What changed between two validated configs, so a commit is applied as a
//! diff: unchanged members keep their health and counters, unchanged monitors
//! keep probing, and a member's admin state is only overwritten when the
//! config's `state` for it actually changed.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Config, Member, MemberKey, Monitor, Pool, VirtualService};
use super::schema::AdminState;

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
    /// DNS settings, zones, or a pool's own settings (FQDN, aliases,
    /// monitor, registrar, drain) changed: nothing with identity, but a
    /// change all the same.
    pub settings_changed: bool,
}

impl ConfigDiff {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Bring `admin`, each member's admin state, in line with this diff:
    /// removed members go, the states it sets are taken. The one rule the
    /// control task and the publisher both follow.
    pub(crate) fn apply_admin(&self, admin: &mut BTreeMap<MemberKey, AdminState>) {
        admin.retain(|key, _| !self.members_removed.contains(key));
        admin.extend(
            self.admin_states
                .iter()
                .map(|(key, state)| (key.clone(), *state)),
        );
    }

    /// One sentence per structural change, in the order an operator checks
    /// them: what a preview shows and a committed change is summed up by.
    pub(crate) fn summary(&self) -> Vec<String> {
        let member = |(pool, name): &(String, String)| format!("{pool}/{name}");
        let mut out = Vec::new();
        for key in &self.members_added {
            out.push(format!("Member {} is added", member(key)));
        }
        for key in &self.members_removed {
            out.push(format!(
                "Member {} is removed (its connections end, its users move)",
                member(key)
            ));
        }
        for key in &self.members_changed {
            out.push(format!(
                "Member {} changes address, FQDN or weight",
                member(key)
            ));
        }
        for (key, state) in &self.admin_states {
            if !self.members_added.contains(key) {
                out.push(format!("Member {} becomes {}", member(key), state.as_str()));
            }
        }
        let mut named = |what: &str, set: &BTreeSet<String>, verb: &str| {
            for name in set {
                out.push(format!("{what} {name} is {verb}"));
            }
        };
        named("Monitor", &self.monitors_added, "added");
        named("Monitor", &self.monitors_removed, "removed");
        named("Monitor", &self.monitors_changed, "changed");
        named("Virtual service", &self.services_added, "added");
        named("Virtual service", &self.services_removed, "removed");
        named("Virtual service", &self.services_changed, "changed");
        if self.settings_changed {
            out.push("DNS, zone or pool settings change".to_owned());
        }
        if self.listeners_changed {
            out.push("Listen addresses change (moved listeners open at once; a moved admin listener must be confirmed from its new address)".to_owned());
        }
        out
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
    let identity = |m: &&Member| (m.fqdn.clone(), m.addresses.clone(), m.weight);
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
    // Pools by name without their members (those are compared above).
    let pool_settings = |config: &Config| -> BTreeMap<String, Pool> {
        config
            .pools
            .iter()
            .map(|pool| {
                let mut settings = pool.clone();
                settings.members.clear();
                (pool.name.clone(), settings)
            })
            .collect()
    };
    // Every field of `Config` is named here, so a new one fails to compile
    // until this diff says how it changes.
    let settings_changed = old.is_none_or(|old| {
        let Config {
            listen: _,
            dns,
            sip,
            zones,
            monitors: _,
            pools: _,
            virtual_services: _,
            source: _,
        } = old;
        *dns != new.dns
            || *sip != new.sip
            || *zones != new.zones
            || pool_settings(old) != pool_settings(new)
    });
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
        settings_changed,
    }
}

/// One line of a text diff between two exported configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiffLine<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
    /// This many unchanged lines left out between hunks.
    Skipped(usize),
}

/// Above this many lines on either side the text diff gives up on finding
/// common lines and shows the whole text replaced (the table is quadratic).
const TEXT_DIFF_MAX_LINES: usize = 4000;

/// A line diff of `old` to `new` (longest common subsequence), keeping
/// `context` unchanged lines around each change. Empty when they are equal.
pub(crate) fn text_diff<'a>(old: &'a str, new: &'a str, context: usize) -> Vec<DiffLine<'a>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut full = Vec::with_capacity(a.len() + b.len());
    if a.len() > TEXT_DIFF_MAX_LINES || b.len() > TEXT_DIFF_MAX_LINES {
        full.extend(a.iter().map(|l| DiffLine::Removed(l)));
        full.extend(b.iter().map(|l| DiffLine::Added(l)));
    } else {
        // lcs[i][j]: length of the common subsequence of a[i..] and b[j..].
        let width = b.len() + 1;
        let mut lcs = vec![0u16; (a.len() + 1) * width];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                lcs[i * width + j] = if a[i] == b[j] {
                    lcs[(i + 1) * width + j + 1] + 1
                } else {
                    lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i] == b[j] {
                full.push(DiffLine::Same(a[i]));
                (i, j) = (i + 1, j + 1);
            } else if i < a.len()
                && (j == b.len() || lcs[(i + 1) * width + j] >= lcs[i * width + j + 1])
            {
                // Removed lines first, as a unified diff shows them.
                full.push(DiffLine::Removed(a[i]));
                i += 1;
            } else {
                full.push(DiffLine::Added(b[j]));
                j += 1;
            }
        }
    }
    let changed: Vec<usize> = full
        .iter()
        .enumerate()
        .filter(|(_, line)| !matches!(line, DiffLine::Same(_)))
        .map(|(at, _)| at)
        .collect();
    if changed.is_empty() {
        return Vec::new();
    }
    let near = |at: usize| {
        changed
            .iter()
            .any(|&c| at + context >= c && at <= c + context)
    };
    let mut out = Vec::new();
    let mut skipped = 0;
    for (at, line) in full.into_iter().enumerate() {
        if near(at) {
            if skipped > 0 {
                out.push(DiffLine::Skipped(skipped));
                skipped = 0;
            }
            out.push(line);
        } else {
            skipped += 1;
        }
    }
    if skipped > 0 {
        out.push(DiffLine::Skipped(skipped));
    }
    out
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    #[test]
    fn summary_names_each_change() {
        let mut diff = ConfigDiff::default();
        let key = ("pool01".to_owned(), "fe04".to_owned());
        diff.members_added.insert(key.clone());
        diff.admin_states.insert(key, AdminState::Enabled);
        diff.admin_states.insert(
            ("pool01".to_owned(), "fe01".to_owned()),
            AdminState::Disabled,
        );
        diff.services_changed.insert("web-internal".to_owned());
        assert_eq!(
            diff.summary(),
            [
                "Member pool01/fe04 is added",
                "Member pool01/fe01 becomes disabled",
                "Virtual service web-internal is changed",
            ]
        );
    }
}

#[cfg(test)]
mod text_tests {
    use super::{DiffLine, text_diff};

    #[test]
    fn equal_texts_have_no_diff() {
        assert!(text_diff("a\nb\n", "a\nb\n", 2).is_empty());
    }

    #[test]
    fn shows_changes_with_context_and_skips_the_rest() {
        let old = "1\n2\n3\n4\n5\n6\nttl = 30\n7\n";
        let new = "1\n2\n3\n4\n5\n6\nttl = 15\n7\nextra\n";
        assert_eq!(
            text_diff(old, new, 1),
            vec![
                DiffLine::Skipped(5),
                DiffLine::Same("6"),
                DiffLine::Removed("ttl = 30"),
                DiffLine::Added("ttl = 15"),
                DiffLine::Same("7"),
                DiffLine::Added("extra"),
            ]
        );
    }

    #[test]
    fn applying_the_diff_gives_the_new_text() {
        let old = "a\nb\nc\nd\ne\n";
        let new = "b\nx\nc\ne\nf\n";
        let rebuilt: Vec<&str> = text_diff(old, new, usize::MAX / 2)
            .into_iter()
            .filter_map(|line| match line {
                DiffLine::Same(l) | DiffLine::Added(l) => Some(l),
                DiffLine::Removed(_) | DiffLine::Skipped(_) => None,
            })
            .collect();
        assert_eq!(rebuilt.join("\n") + "\n", new);
    }
}
