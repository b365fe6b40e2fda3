//! The hysteresis core: decides when a run of probe results changes what a
//! monitor believes about a member. Pure: no clock, no I/O, no tokio; the
//! caller feeds results in order and gets back transitions.
//!
//! Invariants:
//! * `Up → Down` only after `fall` consecutive failures, `Down → Up` only
//!   after `rise` consecutive successes, so an alternating (flapping) input
//!   never moves a settled state.
//! * Before the first transition the state is `Unknown` and the member counts
//!   as the monitor's `start` state. A result that agrees with `start`
//!   settles it at once (nothing visible changes); a result that disagrees
//!   needs the full `rise` or `fall` run, exactly as if the member had been in
//!   its `start` state all along. A restart therefore never empties a DNS
//!   answer faster than a live member failing would.

use crate::config::StartState;
use crate::state::Health;

/// One change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub from: Health,
    pub to: Health,
}

/// What one target has seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hysteresis {
    rise: u32,
    fall: u32,
    start: StartState,
    state: Health,
    successes: u32,
    failures: u32,
    last: Option<bool>,
}

impl Hysteresis {
    /// `rise` and `fall` below 1 are treated as 1 (the validator already
    /// rejects them; this keeps the core total).
    pub(crate) fn new(rise: u32, fall: u32, start: StartState) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            start,
            state: Health::Unknown,
            successes: 0,
            failures: 0,
            last: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> Health {
        self.state
    }

    /// Consecutive successes (0 after a failure).
    #[cfg(test)]
    pub(crate) fn successes(&self) -> u32 {
        self.successes
    }

    /// Consecutive failures (0 after a success).
    #[cfg(test)]
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// The last result fed in, `None` before the first.
    #[cfg(test)]
    pub(crate) fn last(&self) -> Option<bool> {
        self.last
    }

    /// Feed one probe result; returns the transition it causes, if any.
    pub(crate) fn observe(&mut self, success: bool) -> Option<Transition> {
        self.last = Some(success);
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        // Unknown behaves as its start state until something is decided.
        let effective = match self.state {
            Health::Unknown => match self.start {
                StartState::Up => Health::Up,
                StartState::Down => Health::Down,
            },
            settled => settled,
        };
        let next = match (effective, success) {
            (Health::Up, true) | (Health::Down, false) => effective,
            (Health::Up, false) if self.failures >= self.fall => Health::Down,
            (Health::Down, true) if self.successes >= self.rise => Health::Up,
            _ => self.state,
        };
        if next == self.state {
            return None;
        }
        let transition = Transition {
            from: self.state,
            to: next,
        };
        self.state = next;
        Some(transition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed(h: &mut Hysteresis, results: &[bool]) -> Vec<(usize, Transition)> {
        results
            .iter()
            .enumerate()
            .filter_map(|(i, &ok)| h.observe(ok).map(|t| (i, t)))
            .collect()
    }

    fn t(from: Health, to: Health) -> Transition {
        Transition { from, to }
    }

    #[test]
    fn first_success_settles_a_start_up_target() {
        let mut h = Hysteresis::new(2, 3, StartState::Up);
        assert_eq!(h.state(), Health::Unknown);
        assert_eq!(h.observe(true), Some(t(Health::Unknown, Health::Up)));
        assert_eq!(h.observe(true), None);
    }

    #[test]
    fn start_up_target_needs_fall_failures_to_go_down() {
        let mut h = Hysteresis::new(2, 3, StartState::Up);
        assert_eq!(
            feed(&mut h, &[false, false, false, false]),
            vec![(2, t(Health::Unknown, Health::Down))]
        );
        assert_eq!(h.failures(), 4);
    }

    #[test]
    fn start_down_target_needs_rise_successes_to_go_up() {
        let mut h = Hysteresis::new(2, 3, StartState::Down);
        assert_eq!(
            feed(&mut h, &[true, true]),
            vec![(1, t(Health::Unknown, Health::Up))]
        );
        let mut h = Hysteresis::new(2, 3, StartState::Down);
        assert_eq!(h.observe(false), Some(t(Health::Unknown, Health::Down)));
    }

    #[test]
    fn fall_edge_and_rise_edge() {
        let mut h = Hysteresis::new(2, 3, StartState::Up);
        h.observe(true);
        // Two failures are not enough, the third is.
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(t(Health::Up, Health::Down)));
        // One success is not enough, the second is.
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(t(Health::Down, Health::Up)));
        assert_eq!(h.successes(), 2);
        assert_eq!(h.last(), Some(true));
    }

    #[test]
    fn a_success_resets_the_failure_run() {
        let mut h = Hysteresis::new(2, 3, StartState::Up);
        h.observe(true);
        let transitions = feed(&mut h, &[false, false, true, false, false, true]);
        assert!(transitions.is_empty());
        assert_eq!(h.state(), Health::Up);
    }

    #[test]
    fn flapping_input_never_moves_a_settled_state() {
        for (rise, fall) in [(2, 2), (2, 3), (3, 2)] {
            for start in [Health::Up, Health::Down] {
                let mut h = Hysteresis::new(rise, fall, StartState::Up);
                let settle = vec![start == Health::Up; 5];
                feed(&mut h, &settle);
                assert_eq!(h.state(), start);
                let flapping: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
                assert!(feed(&mut h, &flapping).is_empty());
                assert_eq!(h.state(), start);
            }
        }
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_result() {
        let mut h = Hysteresis::new(1, 1, StartState::Up);
        assert_eq!(
            feed(&mut h, &[true, false, true]),
            vec![
                (0, t(Health::Unknown, Health::Up)),
                (1, t(Health::Up, Health::Down)),
                (2, t(Health::Down, Health::Up)),
            ]
        );
    }

    proptest! {
        /// Every transition out of a settled state is backed by exactly the
        /// configured run of agreeing results; Unknown is left only once.
        #[test]
        fn transitions_need_a_full_run(
            rise in 1u32..5,
            fall in 1u32..5,
            start_up in any::<bool>(),
            results in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let start = if start_up { StartState::Up } else { StartState::Down };
            let mut h = Hysteresis::new(rise, fall, start);
            let mut run_ok = 0u32;
            let mut run_fail = 0u32;
            for ok in results {
                if ok { run_ok += 1; run_fail = 0 } else { run_fail += 1; run_ok = 0 }
                let before = h.state();
                if let Some(tr) = h.observe(ok) {
                    prop_assert_eq!(tr.from, before);
                    prop_assert_ne!(tr.to, Health::Unknown);
                    match tr.to {
                        Health::Up => prop_assert!(
                            run_ok == rise || (before == Health::Unknown && start_up)),
                        Health::Down => prop_assert!(
                            run_fail == fall || (before == Health::Unknown && !start_up)),
                        Health::Unknown => unreachable!(),
                    }
                }
            }
        }
    }
}
