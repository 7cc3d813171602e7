//! The controller's state under its lock: instances, the routing view, the waiting queue.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::error::GatewayError;
use crate::instance_id::InstanceId;
use crate::lifecycle::{InstanceState, LifecycleEvent};
use crate::provider::Endpoint;
use crate::route::RouteView;

use super::budget::{BudgetHold, micros};
use super::lease::Lease;

/// Where a lease (or the reason there is none) is delivered to a waiting request.
pub(super) type Reply = oneshot::Sender<Result<Lease, GatewayError>>;

/// One instance as the controller tracks it.
#[derive(Debug)]
pub(super) struct Instance {
    pub(super) state: InstanceState,
    pub(super) endpoint: Option<Arc<Endpoint>>,
    pub(super) created_at: Instant,
    pub(super) ready_at: Option<Instant>,
    pub(super) last_activity: Instant,
    pub(super) in_flight: u32,
    pub(super) served: u64,
    pub(super) price_per_hour: f64,
    /// Wakes the instance's task: its last request ended, a drain or cancel was asked for,
    /// or the config changed.
    pub(super) wake: Arc<Notify>,
    /// The `scale-out` request this instance was started for.
    pub(super) reserved: Option<Reply>,
    /// Release was asked for before the instance became ready.
    pub(super) cancel: bool,
    /// Why it failed, if it did.
    pub(super) error: Option<String>,
    /// Since when it has been ready with nothing in flight, while it is.
    pub(super) idle_since: Option<Instant>,
    /// Time spent ready with nothing in flight, in periods already closed.
    pub(super) idle_time: Duration,
    /// Its share of the shared budget, returned when the record is dropped (after release).
    pub(super) hold: Option<BudgetHold>,
}

impl Instance {
    pub(super) fn new(now: Instant, price_per_hour: f64, reserved: Option<Reply>) -> Self {
        Self {
            state: InstanceState::Creating,
            endpoint: None,
            created_at: now,
            ready_at: None,
            last_activity: now,
            in_flight: 0,
            served: 0,
            price_per_hour,
            wake: Arc::new(Notify::new()),
            reserved,
            cancel: false,
            error: None,
            idle_since: None,
            idle_time: Duration::ZERO,
            hold: None,
        }
    }

    /// Time it has spent ready with nothing in flight, up to `now`.
    pub(super) fn idle_until(&self, now: Instant) -> Duration {
        self.idle_time
            + self
                .idle_since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// Its idle waste up to `now`: what it cost while ready and serving nothing.
    pub(super) fn idle_waste_until(&self, now: Instant) -> f64 {
        cost(self.price_per_hour, self.idle_until(now))
    }

    /// Starts or ends an idle period as its in-flight count moves between 0 and more.
    fn track_idle(&mut self, now: Instant) {
        match (self.in_flight, self.idle_since) {
            (0, None) if self.ready_at.is_some() => self.idle_since = Some(now),
            (n, Some(since)) if n > 0 => {
                self.idle_time += now.saturating_duration_since(since);
                self.idle_since = None;
            }
            _ => {}
        }
    }

    /// Marks it ready at `now`: idle from then until its first request.
    pub(super) fn mark_ready(&mut self, now: Instant) {
        self.ready_at = Some(now);
        self.last_activity = now;
        self.track_idle(now);
    }

    /// What it has cost from creation until `now`.
    pub(super) fn cost_until(&self, now: Instant) -> f64 {
        cost(
            self.price_per_hour,
            now.saturating_duration_since(self.created_at),
        )
    }
}

/// The cost of running for `lifetime` at `price_per_hour`.
pub fn cost(price_per_hour: f64, lifetime: Duration) -> f64 {
    price_per_hour * lifetime.as_secs_f64() / 3600.0
}

/// A request waiting for capacity.
#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) reply: Reply,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) instances: BTreeMap<InstanceId, Instance>,
    pub(super) view: RouteView,
    pub(super) waiters: VecDeque<Waiter>,
    pub(super) released_cost: f64,
    pub(super) released_count: u64,
    pub(super) closed: bool,
    /// Shutdown's drain period is over: release even with requests in flight.
    pub(super) force_release: bool,
    /// Starts that failed in a row; spaces out warm-pool restarts.
    pub(super) consecutive_failures: u32,
    /// A delayed warm-pool top-up is scheduled.
    pub(super) top_up_scheduled: bool,
    /// Idle waste of released instances.
    pub(super) released_idle_waste: f64,
    /// Requests (and pre-warm calls) answered 1021 because a budget refused a start.
    pub(super) budget_refusals: u64,
    /// The last starts that failed.
    pub(super) start_failures: super::failures::StartFailures,
}

impl State {
    /// Applies `event` to instance `id`, refusing illegal moves. Keeps the view's ready set
    /// in step: an instance is routable exactly while it is `Ready`.
    pub(super) fn transition(
        &mut self,
        id: InstanceId,
        event: LifecycleEvent,
    ) -> Result<InstanceState, crate::lifecycle::IllegalTransition> {
        let Some(inst) = self.instances.get_mut(&id) else {
            return Ok(InstanceState::Released);
        };
        let next = inst.state.transition(event)?;
        inst.state = next;
        if next == InstanceState::Ready {
            self.view.insert_ready(id, inst.in_flight);
        } else {
            self.view.remove_ready(id);
        }
        Ok(next)
    }

    /// Recomputes the view's counters after any change.
    /// A start being cancelled no longer counts as starting: it will serve no one.
    pub(super) fn recount(&mut self) {
        let starting = self
            .instances
            .values()
            .filter(|i| i.state.is_starting() && !i.cancel)
            .count() as u32;
        let live = self.instances.len() as u32;
        self.view
            .set_counts(starting, live, self.waiters.len() as u32);
    }

    /// Instances not on their way out (creating, starting, ready): what the warm pool counts.
    pub(super) fn serving_or_starting(&self) -> u32 {
        self.instances
            .values()
            .filter(|i| {
                matches!(
                    i.state,
                    InstanceState::Creating | InstanceState::Starting | InstanceState::Ready
                ) && !i.cancel
            })
            .count() as u32
    }

    /// Drops waiters whose request has gone (timed out, client left).
    pub(super) fn purge_waiters(&mut self) {
        self.waiters.retain(|w| !w.reply.is_closed());
    }

    /// The least-loaded ready instance with room under the concurrency limit.
    pub(super) fn least_loaded(&self) -> Option<InstanceId> {
        let limit = self.view.concurrency_limit();
        self.view
            .ready()
            .iter()
            .filter(|r| limit == 0 || r.in_flight < limit)
            .min_by_key(|r| r.in_flight)
            .map(|r| r.id)
    }

    pub(super) fn add_in_flight(&mut self, id: InstanceId, delta: i32) -> Option<&mut Instance> {
        let inst = self.instances.get_mut(&id)?;
        inst.in_flight = inst.in_flight.saturating_add_signed(delta);
        inst.track_idle(Instant::now());
        self.view.set_in_flight(id, inst.in_flight);
        Some(inst)
    }

    /// The running hourly rate of every live instance, in millionths.
    pub(super) fn hourly_rate_micros(&self) -> u64 {
        self.instances
            .values()
            .map(|i| micros(i.price_per_hour))
            .fold(0, u64::saturating_add)
    }
}
