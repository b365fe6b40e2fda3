//! A change that is applied at once but must be confirmed before a
//! deadline, else reverted: what moving the admin listener needs (the
//! operator proves the new address works by reaching it), and what a
//! change of the network settings needs (`system::network`).
//!
//! Pure: no clock and no tokio. The instant type is the caller's (`I`), so
//! the control task uses `tokio::time::Instant` (and its tests a paused
//! clock) while these tests use plain numbers. `T` is what a revert needs
//! (the previous config, for the admin listener).
//!
//! Invariants:
//! * At most one change awaits confirmation; a second is refused until the
//!   first is confirmed, reverted or cancelled.
//! * A confirmation at or after the deadline does not count: the change
//!   expires and is reverted, whatever arrives later.
//! * Leaving the awaiting state (confirm, expire, cancel) hands back `T`
//!   exactly once.

/// Where the confirmation of one change stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Pending<T, I> {
    /// Nothing awaits confirmation.
    #[default]
    Idle,
    /// A change was applied; `revert` undoes it unless it is confirmed
    /// before `deadline`.
    Awaiting { revert: T, deadline: I },
}

/// Why a change cannot start awaiting confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("another change awaits confirmation")]
pub(crate) struct AlreadyPending;

/// Why a confirmation was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConfirmError {
    #[error("no change awaits confirmation")]
    NothingPending,
    /// The deadline passed: the change is (being) reverted.
    #[error("the confirmation deadline has passed")]
    Expired,
}

impl<T, I: Copy + Ord> Pending<T, I> {
    /// A change was applied: it must be confirmed before `deadline`.
    pub(crate) fn start(&mut self, revert: T, deadline: I) -> Result<(), AlreadyPending> {
        if matches!(self, Self::Awaiting { .. }) {
            return Err(AlreadyPending);
        }
        *self = Self::Awaiting { revert, deadline };
        Ok(())
    }

    /// The deadline of the change awaiting confirmation, if any.
    pub(crate) fn deadline(&self) -> Option<I> {
        match self {
            Self::Idle => None,
            Self::Awaiting { deadline, .. } => Some(*deadline),
        }
    }

    /// What a revert would restore, while a change awaits confirmation.
    pub(crate) fn revert(&self) -> Option<&T> {
        match self {
            Self::Idle => None,
            Self::Awaiting { revert, .. } => Some(revert),
        }
    }

    /// Confirm the change at `now`: kept for good, and the revert is
    /// handed back to be dropped. At or after the deadline it is not
    /// confirmed (`Expired`) and stays for [`Pending::expire`] to take.
    pub(crate) fn confirm(&mut self, now: I) -> Result<T, ConfirmError> {
        match self {
            Self::Idle => Err(ConfirmError::NothingPending),
            Self::Awaiting { deadline, .. } if now >= *deadline => Err(ConfirmError::Expired),
            Self::Awaiting { .. } => match std::mem::take(self) {
                Self::Awaiting { revert, .. } => Ok(revert),
                Self::Idle => unreachable!("matched as awaiting above"),
            },
        }
    }

    /// At `now`, the revert to apply if the deadline has passed; the state
    /// is idle again. `None` while nothing awaits or time remains.
    pub(crate) fn expire(&mut self, now: I) -> Option<T> {
        match self {
            Self::Awaiting { deadline, .. } if now >= *deadline => match std::mem::take(self) {
                Self::Awaiting { revert, .. } => Some(revert),
                Self::Idle => unreachable!("matched as awaiting above"),
            },
            Self::Idle | Self::Awaiting { .. } => None,
        }
    }

    /// Drop the change awaiting confirmation without reverting it (it was
    /// undone or superseded another way); its revert is handed back.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the admin move is only confirmed or reverted")
    )]
    pub(crate) fn cancel(&mut self) -> Option<T> {
        match std::mem::take(self) {
            Self::Idle => None,
            Self::Awaiting { revert, .. } => Some(revert),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type P = Pending<&'static str, u64>;

    #[test]
    fn idle_has_nothing_to_confirm_or_expire() {
        let mut pending = P::default();
        assert_eq!(pending.deadline(), None);
        assert_eq!(pending.revert(), None);
        assert_eq!(pending.confirm(0), Err(ConfirmError::NothingPending));
        assert_eq!(pending.expire(u64::MAX), None);
        assert_eq!(pending.cancel(), None);
    }

    #[test]
    fn confirmed_before_the_deadline_is_kept() {
        let mut pending = P::default();
        pending.start("v1", 120).expect("idle");
        assert_eq!(pending.deadline(), Some(120));
        assert_eq!(pending.revert(), Some(&"v1"));
        assert_eq!(pending.expire(119), None, "time remains");
        assert_eq!(pending.confirm(119), Ok("v1"));
        assert_eq!(pending, Pending::Idle);
        assert_eq!(pending.expire(1_000), None, "nothing is reverted later");
        assert_eq!(pending.confirm(1_000), Err(ConfirmError::NothingPending));
    }

    #[test]
    fn unconfirmed_expires_at_the_deadline_once() {
        let mut pending = P::default();
        pending.start("v1", 120).expect("idle");
        assert_eq!(pending.confirm(120), Err(ConfirmError::Expired));
        assert_eq!(pending.deadline(), Some(120), "still there to expire");
        assert_eq!(pending.expire(120), Some("v1"));
        assert_eq!(pending.expire(121), None, "handed back once");
        assert_eq!(pending.confirm(121), Err(ConfirmError::NothingPending));
    }

    #[test]
    fn one_change_at_a_time() {
        let mut pending = P::default();
        pending.start("v1", 120).expect("idle");
        assert_eq!(pending.start("v2", 500), Err(AlreadyPending));
        assert_eq!(pending.revert(), Some(&"v1"), "the first one stays");
        assert_eq!(pending.cancel(), Some("v1"));
        pending.start("v2", 500).expect("idle again");
        assert_eq!(pending.deadline(), Some(500));
    }

    #[test]
    fn cancel_hands_back_without_a_revert_later() {
        let mut pending = P::default();
        pending.start("v1", 10).expect("idle");
        assert_eq!(pending.cancel(), Some("v1"));
        assert_eq!(pending.expire(10), None);
    }
}
