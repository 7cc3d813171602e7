//! `Call`: the record of one call made to the simulated provider, for assertions.

use autodeploy_core::InstanceId;
use tokio::time::Instant;

/// One call made to the [`Simulated`](super::Simulated) provider, recorded in order with the
/// (tokio) time it was made, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `create` of `instance` for `deployment`.
    Create {
        /// The deployment of the spec.
        deployment: String,
        /// The id of the spec.
        instance: InstanceId,
        /// When the call was made.
        at: Instant,
    },
    /// `wait_ready` of `instance`.
    WaitReady {
        /// The instance waited for.
        instance: InstanceId,
        /// When the call was made.
        at: Instant,
    },
    /// `release` of `instance`, known or not.
    Release {
        /// The instance released.
        instance: InstanceId,
        /// When the call was made.
        at: Instant,
    },
    /// `list` of `deployment`.
    List {
        /// The deployment listed.
        deployment: String,
        /// When the call was made.
        at: Instant,
    },
}

impl Call {
    /// When the call was made.
    pub fn at(&self) -> Instant {
        match self {
            Self::Create { at, .. }
            | Self::WaitReady { at, .. }
            | Self::Release { at, .. }
            | Self::List { at, .. } => *at,
        }
    }

    /// The instance the call was about; `None` for `list`.
    pub fn instance(&self) -> Option<InstanceId> {
        match self {
            Self::Create { instance, .. }
            | Self::WaitReady { instance, .. }
            | Self::Release { instance, .. } => Some(*instance),
            Self::List { .. } => None,
        }
    }
}
