//! keepalived's state drives the role while VRRP settings are stored and
//! the appliance is paired: an instance that becomes MASTER makes this
//! appliance active, BACKUP or FAULT makes it standby, each through
//! `Ha::set_role_by_keepalived` with the reason (`keepalived: MASTER for
//! poolgate_v4`), so every change is an event.
//!
//! The other way round, a role given up for another reason (the admin's
//! failover, the split-brain rule) makes keepalived give the addresses up
//! (`Vrrp::give_up`, from `Ha::set_role`): the health file is withheld, the
//! instances go to FAULT, the peer takes over, and keepalived comes back as
//! BACKUP.
//!
//! At start the role is standby until keepalived says otherwise, and the
//! health file is withheld for [`START_HOLD`]: keepalived's state is only
//! known from its changes, and a poolgate restarted faster than the health
//! check notices would otherwise never hear that it still holds the
//! addresses; the hold makes keepalived report (FAULT, then BACKUP or
//! MASTER). A restarted poolgate does not keep the addresses anyway: its
//! health file goes stale while it is down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Ha, Role};
use crate::vrrp::{Vrrp, VrrpState};

/// How long the health file is withheld at start: longer than the check's
/// age bound and one check interval, so keepalived notices.
pub(super) const START_HOLD: Duration =
    Duration::from_millis(crate::vrrp::health::MAX_AGE.as_millis() as u64 + 1000);

/// Whether keepalived last said one of this appliance's instances is MASTER.
pub(super) fn holds_addresses(vrrp: &Vrrp) -> bool {
    vrrp.states()
        .borrow()
        .values()
        .any(|state| state.kind == "instance" && state.state == VrrpState::Master)
}

/// The role an instance's new state gives, if any.
pub(super) fn role_for(state: VrrpState) -> Option<Role> {
    match state {
        VrrpState::Master => Some(Role::Active),
        VrrpState::Backup | VrrpState::Fault => Some(Role::Standby),
        VrrpState::Stop | VrrpState::Deleted => None,
    }
}

/// Follow keepalived's state changes into the role until `shutdown`.
pub(super) async fn follow(ha: Arc<Ha>, vrrp: Arc<Vrrp>, shutdown: CancellationToken) {
    let mut states = vrrp.states();
    if vrrp.settings().is_some() && ha.pair().is_some() {
        vrrp.give_up(
            START_HOLD,
            "poolgate started: keepalived's state decides the role",
        );
        let set = ha
            .blocking(|ha| {
                ha.set_role_by_keepalived(
                    Role::Standby,
                    "poolgate started: standby until keepalived reports MASTER",
                )
            })
            .await;
        if let Err(error) = set {
            tracing::error!(%error, "Cannot store the HA role");
        }
    }
    let mut seen: BTreeMap<String, VrrpState> = BTreeMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = states.changed() => if changed.is_err() { return },
        }
        let changes: Vec<(String, VrrpState)> = states
            .borrow_and_update()
            .values()
            .filter(|state| state.kind == "instance")
            .filter(|state| seen.get(&state.name) != Some(&state.state))
            .map(|state| (state.name.clone(), state.state))
            .collect();
        for (name, state) in changes {
            seen.insert(name.clone(), state);
            let Some(role) = role_for(state) else {
                continue;
            };
            if vrrp.settings().is_none() || ha.pair().is_none() {
                continue;
            }
            let reason = format!("keepalived: {} for {name}", state.as_str());
            let set = ha
                .blocking(move |ha| ha.set_role_by_keepalived(role, &reason))
                .await;
            if let Err(error) = set {
                tracing::error!(%error, "Cannot store the HA role");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_is_active_backup_and_fault_are_standby() {
        assert_eq!(role_for(VrrpState::Master), Some(Role::Active));
        assert_eq!(role_for(VrrpState::Backup), Some(Role::Standby));
        assert_eq!(role_for(VrrpState::Fault), Some(Role::Standby));
        assert_eq!(role_for(VrrpState::Stop), None);
        assert_eq!(role_for(VrrpState::Deleted), None);
        assert!(START_HOLD > crate::vrrp::health::MAX_AGE);
    }
}
