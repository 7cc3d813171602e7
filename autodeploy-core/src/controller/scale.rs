//! Acting on the backlog: start what the scale policy asks for, within the cap and the
//! budgets; cancel starts nobody waits for any more; refuse with 1021 what no budget allows.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{ErrorCode, GatewayError};
use crate::instance_id::InstanceId;
use crate::lifecycle::InstanceState;

use super::budget::{BudgetHold, Refusal, fits, micros};
use super::state::State;
use super::{ControllerEvent, Inner};

impl Inner {
    /// Admits one more start of an instance costing `price_per_hour` under the deployment's
    /// budget and the shared one, reserving its share of the latter. Called under the
    /// controller's lock, where every start of this deployment happens, so the deployment's
    /// check cannot race; the shared check and reservation are one step in the ledger.
    pub(super) fn admit_start(
        &self,
        st: &State,
        price_per_hour: f64,
    ) -> Result<Option<BudgetHold>, Refusal> {
        let price = micros(price_per_hour);
        if let Some(limit) = self.config.read().budget
            && !fits(st.hourly_rate_micros(), price, limit)
        {
            return Err(Refusal::Deployment);
        }
        match &self.shared_budget {
            Some(budget) => budget.try_reserve(price).map(Some).ok_or(Refusal::Shared),
            None => Ok(None),
        }
    }

    /// The 1021 answer to one request refused by `refusal`, counted and reported: with a
    /// `Retry-After` when an instance under that budget is due for release, since its
    /// release makes room.
    pub(super) fn budget_error(&self, st: &mut State, refusal: Refusal) -> GatewayError {
        st.budget_refusals += 1;
        let now = Instant::now();
        let due = match (refusal, &self.shared_budget) {
            (Refusal::Shared, Some(budget)) => budget.next_release(self, st, now),
            _ => self.next_release(st, now),
        };
        self.events.on_event(
            &self.config.read().id,
            &ControllerEvent::BudgetRefused {
                shared: refusal == Refusal::Shared,
            },
        );
        let error = GatewayError::new(ErrorCode::BudgetExceeded);
        match due {
            Some(after) => error.retry_after(after),
            None => error,
        }
    }

    /// How long until one of this deployment's instances is released, if one is due: one
    /// already on its way out (draining, failed, releasing, a cancelled start) is due now;
    /// an idle ready one beyond the warm pool when its retention period ends. A busy one is
    /// not due: nobody knows when its requests end.
    pub(super) fn next_release(&self, st: &State, now: Instant) -> Option<Duration> {
        let config = self.config.read().clone();
        let beyond_warm_pool = st.view.ready().len() as u32 > config.min_instances;
        st.instances
            .values()
            .filter_map(|i| match i.state {
                InstanceState::Draining | InstanceState::Failed | InstanceState::Releasing => {
                    Some(Duration::ZERO)
                }
                InstanceState::Creating | InstanceState::Starting if i.cancel => {
                    Some(Duration::ZERO)
                }
                InstanceState::Ready if i.in_flight == 0 && beyond_warm_pool => {
                    Some((i.last_activity + config.idle_retention).saturating_duration_since(now))
                }
                _ => None,
            })
            .min()
    }

    /// Answers every waiting request 1021 when a budget refused the start they need and
    /// nothing ready or starting will serve them: otherwise they would wait out the queue
    /// timeout for an instance that cannot come.
    pub(super) fn refuse_stranded_waiters(&self, st: &mut State, refusal: Refusal) {
        st.purge_waiters();
        if !st.view.ready().is_empty() || st.view.starting() > 0 {
            return;
        }
        while let Some(waiter) = st.waiters.pop_front() {
            let error = self.budget_error(st, refusal);
            let _ = waiter.reply.send(Err(error));
        }
        st.recount();
    }

    /// Starts the instances the backlog needs beyond those ready and starting, as the scale
    /// policy decides from the current view; with `cancel_unwanted_starts`, cancels starts the
    /// backlog no longer needs. Called after every change of the backlog.
    pub(super) fn scale_to_backlog(self: &Arc<Self>, st: &mut State) {
        if st.closed {
            return;
        }
        st.purge_waiters();
        st.recount();
        let wanted = self.policy.instances_to_start(&st.view);
        for _ in 0..wanted {
            if !st.view.has_room() {
                break;
            }
            if let Err(refusal) = self.start_instance(st, None) {
                // The queue waits for the instances there are; if there are none, it hears why.
                self.refuse_stranded_waiters(st, refusal);
                break;
            }
        }
        if self.config.read().cancel_unwanted_starts {
            self.cancel_unwanted_starts(st);
        }
    }

    /// Cancels starting instances, newest first, while more are ready and starting than the
    /// backlog needs (and the warm pool keeps). A start made for one `scale-out` request is
    /// kept while that request still waits.
    fn cancel_unwanted_starts(&self, st: &mut State) {
        let min = self.config.read().min_instances;
        let needed = self.policy.instances_needed(&st.view).max(min);
        let have = st.view.ready().len() as u32 + st.view.starting();
        let mut excess = have.saturating_sub(needed);
        if excess == 0 {
            return;
        }
        let mut unwanted: Vec<(Instant, InstanceId)> = st
            .instances
            .iter()
            .filter(|(_, i)| {
                i.state.is_starting()
                    && !i.cancel
                    && i.reserved.as_ref().is_none_or(|r| r.is_closed())
            })
            .map(|(id, i)| (i.created_at, *id))
            .collect();
        unwanted.sort_unstable_by(|a, b| b.cmp(a));
        for (_, id) in unwanted {
            if excess == 0 {
                break;
            }
            if let Some(inst) = st.instances.get_mut(&id) {
                tracing::info!(instance = %id, "cancelling a start nobody waits for");
                inst.cancel = true;
                inst.wake.notify_one();
                excess -= 1;
            }
        }
        st.recount();
    }
}
