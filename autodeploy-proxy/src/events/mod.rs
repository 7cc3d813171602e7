//! The gateway's live events: what the controllers report (instances created, ready, failed,
//! released), deployment status changes and request rates, fanned out to every subscriber of
//! `GET /api/v1/events` (server-sent events) and kept, per deployment, as a short history for
//! the dashboard.
//!
//! - [`EventHub`]: the controllers' [`EventSink`] (it forwards each event to the metrics
//!   too) and a bounded broadcast buffer; a slow subscriber never blocks a controller or the
//!   gateway: it misses the oldest events and is told how many (a `lagged` event);
//! - [`Subscription`]: one subscriber's view, in publication order;
//! - [`history`]: the last 15 minutes of requests and instances, recent cold starts and
//!   start failures, per deployment;
//! - the sampler (started by the gateway) turns request counters and instance lists into
//!   `requests` and `status` events once a second, and at once after a lifecycle event.

pub mod history;
pub(crate) mod sampler;
mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use autodeploy_core::{ControllerEvent, DeploymentStatus, EventSink, InstanceId};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{Notify, broadcast, watch};

use crate::metrics::Metrics;
use history::Histories;

pub use stream::{Received, Subscription};

/// How many events the broadcast buffer holds by default: a subscriber further behind than
/// this misses the oldest ones.
pub const DEFAULT_BUFFER: usize = 1024;

/// One event as subscribers receive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayEvent {
    /// Its place in the gateway's sequence: strictly increasing, without gaps, in the order
    /// events were published (a subscriber sees gaps only where it lagged).
    pub seq: u64,
    /// The deployment it is about.
    pub deployment: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened, tagged by `type` in JSON (the SSE event name is the same string).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The provider is being asked to create an instance.
    InstanceCreating {
        /// The instance.
        instance: InstanceId,
    },
    /// An instance became ready, with the phases of its cold start in seconds.
    InstanceReady {
        /// The instance.
        instance: InstanceId,
        /// Time in the provider's create call.
        create_s: f64,
        /// Time from create returning to a passed readiness probe (boot and probe).
        boot_s: f64,
    },
    /// An instance failed to start.
    InstanceFailed {
        /// The instance.
        instance: InstanceId,
        /// Why, as its waiters were told.
        reason: String,
    },
    /// An instance stopped on its own while serving.
    InstanceDied {
        /// The instance.
        instance: InstanceId,
        /// Why.
        reason: String,
    },
    /// An instance was released at the provider.
    InstanceReleased {
        /// The instance.
        instance: InstanceId,
        /// Its life, creation to release, in seconds.
        lifetime_s: f64,
        /// What it cost.
        cost: f64,
    },
    /// The deployment's status changed.
    Status {
        /// The new status.
        status: DeploymentStatus,
        /// Its instances now (any state but released).
        instances: usize,
    },
    /// Request rate and instance count, sent once a second while either changes or requests
    /// arrive.
    Requests {
        /// Requests answered per second over the last second.
        requests_per_second: f64,
        /// Its instances now.
        instances: usize,
    },
}

impl EventKind {
    /// The event's name: the SSE `event:` field and the JSON `type`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::InstanceCreating { .. } => "instance_creating",
            EventKind::InstanceReady { .. } => "instance_ready",
            EventKind::InstanceFailed { .. } => "instance_failed",
            EventKind::InstanceDied { .. } => "instance_died",
            EventKind::InstanceReleased { .. } => "instance_released",
            EventKind::Status { .. } => "status",
            EventKind::Requests { .. } => "requests",
        }
    }
}

/// The fan-out point of the gateway's events. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct EventHub {
    /// Held while a sequence number is taken and the event sent, so the channel's order is
    /// the sequence's order even when controllers publish from several threads.
    sender: Mutex<(u64, broadcast::Sender<Arc<GatewayEvent>>)>,
    dropped: AtomicU64,
    metrics: Option<Arc<Metrics>>,
    histories: Histories,
    /// Woken after each lifecycle event, so the sampler reports a status change at once.
    pub(crate) changed: Notify,
    /// Set when the gateway stops serving: subscriptions end.
    closing: watch::Sender<bool>,
}

impl EventHub {
    /// A hub whose subscribers may fall `buffer` events behind before they miss any; each
    /// controller event is also given to `metrics`, when set.
    pub fn new(buffer: usize, metrics: Option<Arc<Metrics>>) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        Self {
            sender: Mutex::new((0, tx)),
            dropped: AtomicU64::new(0),
            metrics,
            histories: Histories::default(),
            changed: Notify::new(),
            closing: watch::Sender::new(false),
        }
    }

    /// Ends every subscription (now and later): called when the gateway stops serving, so
    /// that open event streams do not hold up its graceful stop.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Publishes one event to every subscriber. Never waits: a full buffer overwrites the
    /// oldest event, which subscribers that had not read it are told about as a lag.
    pub fn publish(&self, deployment: &str, kind: EventKind) {
        let mut sender = self.sender.lock();
        sender.0 += 1;
        let event = Arc::new(GatewayEvent {
            seq: sender.0,
            deployment: deployment.to_owned(),
            kind,
        });
        // An error only means nobody is subscribed.
        let _ = sender.1.send(event);
    }

    /// A new subscriber: it receives every event published from now on, in order.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        Subscription::new(self.clone(), self.sender.lock().1.subscribe())
    }

    /// Events subscribers missed because they read too slowly, over the hub's life.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.sender.lock().1.receiver_count()
    }

    pub(crate) fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.events_dropped(n);
        }
    }

    /// The recent activity of each deployment.
    pub fn histories(&self) -> &Histories {
        &self.histories
    }
}

impl EventSink for EventHub {
    fn on_event(&self, deployment: &str, event: &ControllerEvent) {
        if let Some(metrics) = &self.metrics {
            metrics.on_event(deployment, event);
        }
        let kind = match event {
            ControllerEvent::Creating { instance } => EventKind::InstanceCreating {
                instance: *instance,
            },
            ControllerEvent::Ready {
                instance,
                create,
                boot,
            } => {
                self.histories
                    .cold_start(deployment, *instance, *create, *boot);
                EventKind::InstanceReady {
                    instance: *instance,
                    create_s: secs(*create),
                    boot_s: secs(*boot),
                }
            }
            ControllerEvent::StartFailed { instance, error } => {
                let reason = error.to_string();
                self.histories
                    .start_failure(deployment, *instance, reason.clone());
                EventKind::InstanceFailed {
                    instance: *instance,
                    reason,
                }
            }
            ControllerEvent::Died { instance, report } => EventKind::InstanceDied {
                instance: *instance,
                reason: report.reason.clone(),
            },
            ControllerEvent::Released {
                instance,
                lifetime,
                cost,
                ..
            } => EventKind::InstanceReleased {
                instance: *instance,
                lifetime_s: secs(*lifetime),
                cost: *cost,
            },
            _ => return,
        };
        self.publish(deployment, kind);
        self.changed.notify_one();
    }
}

/// Seconds, rounded to the millisecond (what a person or a chart needs).
pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
