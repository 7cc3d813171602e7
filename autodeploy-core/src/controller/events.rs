//! Lifecycle events a controller reports, for metrics and logs.

use std::fmt;
use std::time::Duration;

use crate::error::GatewayError;
use crate::instance_id::InstanceId;
use crate::provider::ExitReport;

/// Something that happened to one of a deployment's instances.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ControllerEvent {
    /// The provider is being asked to create it.
    Creating {
        /// The instance.
        instance: InstanceId,
    },
    /// It is ready; the phases of its cold start.
    Ready {
        /// The instance.
        instance: InstanceId,
        /// Time in the provider's create call.
        create: Duration,
        /// Time from create returning to readiness (boot and probe).
        boot: Duration,
    },
    /// It failed to start.
    StartFailed {
        /// The instance.
        instance: InstanceId,
        /// The error its waiters got.
        error: GatewayError,
    },
    /// It stopped on its own while serving.
    Died {
        /// The instance.
        instance: InstanceId,
        /// Why.
        report: ExitReport,
    },
    /// It was released at the provider.
    Released {
        /// The instance.
        instance: InstanceId,
        /// Time from creation to release.
        lifetime: Duration,
        /// What it cost.
        cost: f64,
        /// What it cost while ready and serving nothing (its idle waste).
        idle_waste: f64,
    },
    /// A request (or a pre-warm call) was answered 1021: starting an instance for it would
    /// have put the running hourly rate over a budget.
    BudgetRefused {
        /// Whether the shared (gateway-wide) budget refused, rather than the deployment's.
        shared: bool,
    },
}

/// Receives [`ControllerEvent`]s. Called from the controller's tasks, sometimes under its
/// lock: keep it quick and never call back into the controller.
pub trait EventSink: Send + Sync + fmt::Debug {
    /// One event of deployment `deployment`.
    fn on_event(&self, deployment: &str, event: &ControllerEvent);
}

/// Ignores every event (apart from logging them at debug level).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn on_event(&self, deployment: &str, event: &ControllerEvent) {
        tracing::debug!(deployment, ?event, "controller event");
    }
}
