//! The in-flight lease: one forwarded request's hold on an instance.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::instance_id::InstanceId;
use crate::provider::Endpoint;

use super::Inner;

/// A request's hold on one ready instance. While it lives the instance counts the request as
/// in flight and is never released; dropping it records activity (the idle clock restarts at
/// that moment), so hold it until the response's last byte has been sent.
pub struct Lease {
    pub(super) inner: Option<Arc<Inner>>,
    pub(super) id: InstanceId,
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) waited: Option<Duration>,
    pub(super) wait: Wait,
}

/// Why a request waited for its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// It was routed to a ready instance at once.
    None,
    /// No instance was ready: it waited for one to start.
    ColdStart,
    /// `scale-out`: it waited for the instance started for it.
    ScaleOut,
    /// Instances were ready but busy: it waited in the queue for a free one.
    Queue,
}

impl Wait {
    /// The metrics label: `none`, `cold_start`, `scale_out` or `queue`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ColdStart => "cold_start",
            Self::ScaleOut => "scale_out",
            Self::Queue => "queue",
        }
    }
}

impl Lease {
    /// The instance serving the request (the `Deploy-Route-Target` value).
    pub fn instance(&self) -> InstanceId {
        self.id
    }

    /// Where the instance serves.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// How long the request waited for an instance (cold start, scale-out or queue);
    /// `None` when it was routed at once.
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// Why the request waited ([`Wait::None`] when it did not).
    pub fn wait(&self) -> Wait {
        self.wait
    }

    /// Detaches the lease from the controller without running its release path; used when
    /// a lease could not be handed over and the caller undoes its bookkeeping itself.
    pub(super) fn disarm(mut self) -> InstanceId {
        self.inner = None;
        self.id
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.end_request(self.id);
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("instance", &self.id)
            .field("endpoint", &self.endpoint)
            .field("waited", &self.waited)
            .finish()
    }
}
