//! The instance lifecycle state machine and the deployment status derived from it.

use serde::Serialize;

/// Where one instance is in its life.
///
/// ```text
/// Creating ──created──▶ Starting ──ready──▶ Ready ──drain──▶ Draining
///    │                     │                  │                 │
///    └───────fail / release┴──────────────────┴─────────────────┘
///                             ▼                       ▼
///                          Failed ──release──▶ Releasing ──released──▶ Released
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// The provider has been asked to create it.
    Creating,
    /// It exists and is booting; readiness is being probed.
    Starting,
    /// It serves requests.
    Ready,
    /// It takes no new requests and is finishing the ones in flight before release.
    Draining,
    /// It broke (failed to start, died); it must still be released at the provider.
    Failed,
    /// The provider has been asked to release it.
    Releasing,
    /// It is gone and no longer costs anything. Terminal.
    Released,
}

/// Something that happened to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleEvent {
    /// The provider created it and it is booting.
    Created,
    /// It passed its readiness check.
    BecameReady,
    /// Stop sending it new requests; finish those in flight.
    Drain,
    /// It failed to start, or died.
    Fail,
    /// Ask the provider to release it.
    Release,
    /// The provider confirmed the release.
    Released,
}

/// A transition that the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal instance transition: {event:?} in state {from:?}")]
pub struct IllegalTransition {
    /// The state the instance was in.
    pub from: InstanceState,
    /// The event that was refused.
    pub event: LifecycleEvent,
}

impl InstanceState {
    /// The state after `event`, or an error when the move is not allowed. Never overwrites
    /// silently: callers propagate or log the error.
    pub fn transition(self, event: LifecycleEvent) -> Result<Self, IllegalTransition> {
        use InstanceState as S;
        use LifecycleEvent as E;
        let next = match (self, event) {
            (S::Creating, E::Created) => S::Starting,
            (S::Starting, E::BecameReady) => S::Ready,
            (S::Ready, E::Drain) => S::Draining,
            (S::Creating | S::Starting | S::Ready | S::Draining, E::Fail) => S::Failed,
            (S::Creating | S::Starting | S::Ready | S::Draining | S::Failed, E::Release) => {
                S::Releasing
            }
            (S::Releasing, E::Released) => S::Released,
            (from, event) => return Err(IllegalTransition { from, event }),
        };
        Ok(next)
    }

    /// Whether the instance still exists at the provider (and so costs money and counts
    /// against the deployment's cap).
    pub fn is_live(self) -> bool {
        self != InstanceState::Released
    }

    /// Whether it is being created or booting.
    pub fn is_starting(self) -> bool {
        matches!(self, InstanceState::Creating | InstanceState::Starting)
    }
}

/// A deployment's status as the product shows it, derived from its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub enum DeploymentStatus {
    /// Configured correctly; no instance exists.
    Standby,
    /// An instance is being created for a request, or being released after requests ended,
    /// and none is ready.
    Idle,
    /// At least one instance is ready.
    Running,
}

impl DeploymentStatus {
    /// Derives the status from the states of a deployment's instances:
    /// `Running` when any is `Ready`; otherwise `Idle` when any still exists (creating,
    /// starting, draining, failed awaiting release, releasing); otherwise `Standby`.
    pub fn derive(states: impl IntoIterator<Item = InstanceState>) -> Self {
        let mut status = DeploymentStatus::Standby;
        for state in states {
            match state {
                InstanceState::Ready => return DeploymentStatus::Running,
                InstanceState::Released => {}
                _ => status = DeploymentStatus::Idle,
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState::{Creating, Draining, Failed, Ready, Releasing, Starting};
    use LifecycleEvent::{BecameReady, Created, Drain, Fail, Release};
    use proptest::prelude::*;
    const RELEASED: InstanceState = InstanceState::Released;
    const CONFIRMED: LifecycleEvent = LifecycleEvent::Released;

    const EVENTS: [LifecycleEvent; 6] = [Created, BecameReady, Drain, Fail, Release, CONFIRMED];
    const STATES: [InstanceState; 7] = [
        Creating, Starting, Ready, Draining, Failed, Releasing, RELEASED,
    ];

    #[test]
    fn happy_path() {
        let mut s = Creating;
        for e in [Created, BecameReady, Drain, Release, CONFIRMED] {
            s = s.transition(e).unwrap();
        }
        assert_eq!(s, RELEASED);
    }

    #[test]
    fn released_is_terminal() {
        for e in EVENTS {
            assert!(RELEASED.transition(e).is_err());
        }
    }

    #[test]
    fn status_table() {
        assert_eq!(DeploymentStatus::derive([]), DeploymentStatus::Standby);
        assert_eq!(
            DeploymentStatus::derive([RELEASED]),
            DeploymentStatus::Standby
        );
        for s in [Creating, Starting, Draining, Failed, Releasing] {
            assert_eq!(
                DeploymentStatus::derive([s, RELEASED]),
                DeploymentStatus::Idle
            );
            assert_eq!(
                DeploymentStatus::derive([s, Ready]),
                DeploymentStatus::Running
            );
        }
    }

    fn allowed(from: InstanceState, e: LifecycleEvent) -> bool {
        matches!(
            (from, e),
            (Creating, Created)
                | (Starting, BecameReady)
                | (Ready, Drain)
                | (Creating | Starting | Ready | Draining, Fail)
                | (Creating | Starting | Ready | Draining | Failed, Release)
                | (Releasing, CONFIRMED)
        )
    }

    proptest! {
        #[test]
        fn random_event_sequences_never_reach_an_illegal_state(
            events in proptest::collection::vec(proptest::sample::select(EVENTS.to_vec()), 0..64)
        ) {
            let mut s = Creating;
            let mut was_ready = false;
            for e in events {
                match s.transition(e) {
                    Ok(next) => {
                        prop_assert!(allowed(s, e));
                        // Nothing comes back to life, and nothing serves after draining.
                        prop_assert!(s != RELEASED);
                        if matches!(s, Draining | Failed | Releasing) {
                            prop_assert!(!matches!(next, Creating | Starting | Ready));
                        }
                        was_ready |= next == Ready;
                        s = next;
                    }
                    Err(err) => {
                        prop_assert!(!allowed(s, e));
                        prop_assert_eq!(err.from, s);
                    }
                }
            }
            prop_assert!(STATES.contains(&s));
            let _ = was_ready;
        }

        #[test]
        fn status_derivation_matches_the_table(
            states in proptest::collection::vec(proptest::sample::select(STATES.to_vec()), 0..16)
        ) {
            let expected = if states.contains(&Ready) {
                DeploymentStatus::Running
            } else if states.iter().any(|s| *s != RELEASED) {
                DeploymentStatus::Idle
            } else {
                DeploymentStatus::Standby
            };
            prop_assert_eq!(DeploymentStatus::derive(states), expected);
        }
    }
}
