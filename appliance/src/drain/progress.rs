//! The drain decision, pure: from what is still running on a draining member
//! and how long it has been draining, decide whether it is drained ("ready to
//! take offline"), overdue, and whether its connections must be reset.

use std::time::Duration;

use crate::state::DrainState;

/// What the controller observed about one draining member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observation {
    /// Proxied connections still open to the member.
    pub active_connections: u64,
    /// Sessions its drain agent reports: `None` when no agent is configured,
    /// `Some(None)` when the agent is configured but gave no answer.
    pub agent_sessions: Option<Option<u64>>,
    /// Time since the drain started.
    pub elapsed: Duration,
    pub timeout: Option<Duration>,
    pub drop_at_deadline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub state: DrainState,
    pub overdue: bool,
    pub reset_connections: bool,
}

pub(crate) fn decide(observation: &Observation) -> Decision {
    // An agent that does not answer cannot confirm the member is idle.
    let agent_busy = matches!(observation.agent_sessions, Some(None) | Some(Some(1..)));
    let work_remains = observation.active_connections > 0 || agent_busy;
    let past_deadline = observation
        .timeout
        .is_some_and(|timeout| observation.elapsed >= timeout);
    let overdue = work_remains && past_deadline;
    Decision {
        state: if work_remains {
            DrainState::Draining
        } else {
            DrainState::Drained
        },
        overdue,
        reset_connections: overdue
            && observation.drop_at_deadline
            && observation.active_connections > 0,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn observation(active: u64) -> Observation {
        Observation {
            active_connections: active,
            agent_sessions: None,
            elapsed: Duration::from_secs(10),
            timeout: None,
            drop_at_deadline: false,
        }
    }

    #[test]
    fn drained_when_nothing_remains() {
        assert_eq!(decide(&observation(0)).state, DrainState::Drained);
        assert_eq!(decide(&observation(3)).state, DrainState::Draining);
    }

    #[test]
    fn the_agent_must_confirm() {
        let mut o = observation(0);
        o.agent_sessions = Some(Some(2));
        assert_eq!(decide(&o).state, DrainState::Draining);
        o.agent_sessions = Some(None);
        assert_eq!(
            decide(&o).state,
            DrainState::Draining,
            "no answer is not zero"
        );
        o.agent_sessions = Some(Some(0));
        assert_eq!(decide(&o).state, DrainState::Drained);
    }

    #[test]
    fn deadline_marks_overdue_and_resets_only_when_asked() {
        let mut o = observation(2);
        o.timeout = Some(Duration::from_secs(10));
        let d = decide(&o);
        assert!(d.overdue && !d.reset_connections);
        o.drop_at_deadline = true;
        assert!(decide(&o).reset_connections);
        o.elapsed = Duration::from_secs(9);
        assert!(!decide(&o).overdue);
    }

    proptest! {
        #[test]
        fn never_drained_while_connections_remain(
            active in 0u64..5,
            agent in prop::option::of(prop::option::of(0u64..3)),
            elapsed in 0u64..100,
            timeout in prop::option::of(1u64..100),
            drop in any::<bool>(),
        ) {
            let o = Observation {
                active_connections: active,
                agent_sessions: agent,
                elapsed: Duration::from_secs(elapsed),
                timeout: timeout.map(Duration::from_secs),
                drop_at_deadline: drop,
            };
            let d = decide(&o);
            if active > 0 {
                prop_assert_eq!(d.state, DrainState::Draining);
            }
            if d.state == DrainState::Drained {
                prop_assert!(!d.overdue && !d.reset_connections);
            }
            if d.reset_connections {
                prop_assert!(drop && d.overdue && active > 0);
            }
        }
    }
}
