//! Budgets: a limit on the running hourly rate (the sum of `price_per_hour` of live
//! instances), per deployment and across several deployments.
//!
//! A deployment's own budget is checked under its controller's lock, where every start of
//! that deployment happens, from the instances it holds. A [`SharedBudget`] spans
//! controllers, so its check and its reservation are one step under the budget's own lock:
//! two deployments starting at the same moment cannot both pass a check only one fits.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::BudgetLimit;

use super::Inner;
use super::state::State;

/// Prices are added up in millionths, so that reserving and returning the same prices in any
/// order leaves exactly zero behind (floating-point sums would drift).
const MICROS_PER_UNIT: f64 = 1_000_000.0;

pub(super) fn micros(price_per_hour: f64) -> u64 {
    // Validated prices are finite and ≥ 0; the cast saturates on anything else.
    (price_per_hour * MICROS_PER_UNIT).round() as u64
}

/// Whether running instances at `rate` plus one at `price` (in micros) stays within `limit`.
pub(super) fn fits(rate: u64, price: u64, limit: BudgetLimit) -> bool {
    rate.saturating_add(price) <= micros(limit.max_per_hour)
}

/// A budget several controllers share (the gateway's `[gateway] budget`): the running hourly
/// rate of every live instance they hold may not exceed `max_per_hour`.
///
/// Give the same `Arc` to each controller's builder
/// ([`ControllerBuilder::shared_budget`](super::ControllerBuilder::shared_budget)). An
/// instance holds its share from the moment its start is admitted until the provider has
/// confirmed its release.
pub struct SharedBudget {
    limit: BudgetLimit,
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    /// The running hourly rate of admitted, not yet released instances, in micros.
    rate: u64,
    /// The controllers that draw on this budget, asked when a refusal needs a `Retry-After`.
    controllers: Vec<Weak<Inner>>,
}

impl SharedBudget {
    /// A budget of `limit`, with nothing running yet.
    pub fn new(limit: BudgetLimit) -> Arc<Self> {
        Arc::new(Self {
            limit,
            ledger: Mutex::new(Ledger::default()),
        })
    }

    /// The limit.
    pub fn limit(&self) -> BudgetLimit {
        self.limit
    }

    /// The running hourly rate of every live instance drawing on this budget.
    pub fn hourly_rate(&self) -> f64 {
        self.ledger.lock().rate as f64 / MICROS_PER_UNIT
    }

    /// Reserves `price` (micros) if it fits, in one step under the ledger's lock.
    pub(super) fn try_reserve(self: &Arc<Self>, price: u64) -> Option<BudgetHold> {
        let mut ledger = self.ledger.lock();
        if !fits(ledger.rate, price, self.limit) {
            return None;
        }
        ledger.rate += price;
        Some(BudgetHold {
            budget: self.clone(),
            price,
        })
    }

    pub(super) fn register(&self, inner: &Arc<Inner>) {
        let mut ledger = self.ledger.lock();
        ledger.controllers.retain(|c| c.strong_count() > 0);
        ledger.controllers.push(Arc::downgrade(inner));
    }

    /// The soonest release among the instances of every controller on this budget: `own`
    /// (whose state the caller holds locked) and the others. Another controller whose lock is
    /// taken right now is skipped rather than waited for: the caller holds its own lock, and
    /// waiting could deadlock with a controller doing the same the other way round.
    pub(super) fn next_release(
        &self,
        own: &Inner,
        own_state: &State,
        now: Instant,
    ) -> Option<Duration> {
        let others: Vec<Arc<Inner>> = self
            .ledger
            .lock()
            .controllers
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut soonest = own.next_release(own_state, now);
        for other in others {
            if std::ptr::eq(Arc::as_ptr(&other), own) {
                continue;
            }
            let Some(state) = other.state.try_lock() else {
                continue;
            };
            if let Some(due) = other.next_release(&state, now) {
                soonest = Some(soonest.map_or(due, |s| s.min(due)));
            }
        }
        soonest
    }
}

impl fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBudget")
            .field("limit", &self.limit)
            .field("hourly_rate", &self.hourly_rate())
            .finish()
    }
}

/// One instance's share of a [`SharedBudget`], returned when dropped (after its release).
pub(super) struct BudgetHold {
    budget: Arc<SharedBudget>,
    price: u64,
}

impl Drop for BudgetHold {
    fn drop(&mut self) {
        let mut ledger = self.budget.ledger.lock();
        ledger.rate = ledger.rate.saturating_sub(self.price);
    }
}

impl fmt::Debug for BudgetHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetHold")
            .field("price_micros", &self.price)
            .finish()
    }
}

/// Which budget refused a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The deployment's own `budget`.
    Deployment,
    /// The shared (gateway) budget.
    Shared,
}
