//! The per-deployment controller: the runtime state behind one link.
//!
//! It holds the deployment's instances, starts them (single-flight on cold start), queues
//! requests waiting for capacity, hands out [`Lease`]s, releases idle instances, keeps the
//! warm pool and adds up cost. It makes no HTTP calls: routing decides *where* through a
//! closure over a [`RouteView`], the proxy forwards, the provider creates and releases.

mod budget;
mod events;
mod failures;
mod instance;
mod lease;
mod scale;
mod state;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::config::{DeployConfig, ValidationErrors};
use crate::error::{ErrorCode, GatewayError};
use crate::instance_id::InstanceId;
use crate::lifecycle::{DeploymentStatus, InstanceState, LifecycleEvent};
use crate::provider::{
    Endpoint, GpuProvider, InstanceSpec, LABEL_OWNER, ProvidedInstance, ProviderError,
};
use crate::route::{OnDemandOnly, RouteView, ScalePolicy, Target};

pub use budget::SharedBudget;
pub use events::{ControllerEvent, EventSink, NoEvents};
pub use failures::{KEPT_START_FAILURES, StartFailure};
pub use lease::{Lease, Wait};
pub use state::cost;
use state::{Instance, Reply, State, Waiter};

/// The runtime state behind one deployment. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    provider: Arc<dyn GpuProvider>,
    config: RwLock<Arc<DeployConfig>>,
    state: Mutex<State>,
    events: Arc<dyn EventSink>,
    owner: String,
    live_tx: watch::Sender<usize>,
    policy: Arc<dyn ScalePolicy>,
    shared_budget: Option<Arc<SharedBudget>>,
}

/// What the management API shows of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InstanceInfo {
    /// Its id.
    #[schema(value_type = String, example = "xykemlvy")]
    pub id: InstanceId,
    /// Its lifecycle state.
    pub state: InstanceState,
    /// Where it serves, once created.
    pub endpoint: Option<Endpoint>,
    /// Time since creation.
    #[serde(serialize_with = "as_secs")]
    #[schema(value_type = f64)]
    pub age: Duration,
    /// Time from creation to ready, once ready.
    #[serde(serialize_with = "opt_as_secs")]
    #[schema(value_type = Option<f64>)]
    pub ready_after: Option<Duration>,
    /// Time since its last request ended (or since it became ready); zero while it serves a
    /// request, as a busy instance is not idle.
    #[serde(serialize_with = "as_secs")]
    #[schema(value_type = f64)]
    pub idle_for: Duration,
    /// Requests it is serving now.
    pub in_flight: u32,
    /// Requests it has finished.
    pub served: u64,
    /// What it has cost so far.
    pub cost: f64,
    /// What it has cost so far while ready and serving nothing.
    pub idle_waste: f64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_as_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl Controller {
    /// A controller for `config` creating instances at `provider`. Validates the config and,
    /// when `min_instances > 0`, starts the warm pool (so it must run inside a tokio runtime).
    pub fn new(
        config: DeployConfig,
        provider: Arc<dyn GpuProvider>,
    ) -> Result<Self, ValidationErrors> {
        Self::builder(config, provider).build()
    }

    /// A builder for the less common settings (event sink, owner label).
    pub fn builder(config: DeployConfig, provider: Arc<dyn GpuProvider>) -> ControllerBuilder {
        ControllerBuilder {
            config,
            provider,
            events: Arc::new(NoEvents),
            owner: "autodeploy".to_owned(),
            policy: Arc::new(OnDemandOnly),
            shared_budget: None,
        }
    }

    /// The deployment's id.
    pub fn id(&self) -> String {
        self.inner.config.read().id.clone()
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<DeployConfig> {
        self.inner.config()
    }

    /// The provider instances are created at.
    pub fn provider(&self) -> &Arc<dyn GpuProvider> {
        &self.inner.provider
    }

    /// Replaces the configuration. Instances already running keep their command and price;
    /// the cap, retention, limits and queue settings apply at once, and the warm pool is
    /// topped up. The id cannot change.
    pub fn update_config(&self, config: DeployConfig) -> Result<(), ValidationErrors> {
        config.validate()?;
        let current_id = self.id();
        if config.id != current_id {
            return Err(ValidationErrors(vec![crate::config::FieldError {
                field: "id".into(),
                message: format!("cannot change the id of deployment {current_id:?}"),
            }]));
        }
        let (max, limit, step) = (
            config.max_instances,
            config.concurrency_limit,
            config.scale_out_step,
        );
        *self.inner.config.write() = Arc::new(config);
        let mut st = self.inner.state.lock();
        st.view.set_limits(max, limit, step);
        for inst in st.instances.values() {
            inst.wake.notify_one();
        }
        self.inner.rebalance(&mut st);
        Ok(())
    }

    /// Routes one request: `decide` sees a consistent [`RouteView`] under the controller's
    /// lock and returns a [`Target`]. Resolves to a lease on a ready instance, at once or
    /// after waiting (bounded by the queue's wait timeout), or to the error to answer with.
    pub async fn acquire<F>(&self, decide: F) -> Result<Lease, GatewayError>
    where
        F: FnOnce(&RouteView) -> Target,
    {
        let arrived = Instant::now();
        let wait_timeout = self.inner.config.read().queue.timeout;
        let (reply, wait) = {
            let mut st = self.inner.state.lock();
            if st.closed {
                return Err(ErrorCode::ShuttingDown.into());
            }
            match decide(&st.view) {
                Target::Instance(id) => {
                    return self
                        .inner
                        .lease_now(&mut st, id)
                        .ok_or_else(|| ErrorCode::RouteTargetNotFound.into());
                }
                Target::Reject(code) => return Err(code.into()),
                Target::ScaleOut => {
                    if !st.view.has_room() {
                        return Err(ErrorCode::ReplicaQuotaExceeded.into());
                    }
                    let (tx, rx) = oneshot::channel();
                    if let Err(refusal) = self.inner.start_instance(&mut st, Some(tx)) {
                        return Err(self.inner.budget_error(&mut st, refusal));
                    }
                    (rx, Wait::ScaleOut)
                }
                Target::Queue { start_instance } => {
                    let max_waiting = self.inner.config.read().queue.max_waiting;
                    if st.waiters.len() >= max_waiting {
                        st.purge_waiters();
                    }
                    if st.waiters.len() >= max_waiting {
                        return Err(GatewayError::with_detail(
                            ErrorCode::QueueFull,
                            format!("{max_waiting} requests are already waiting"),
                        ));
                    }
                    let wait = if st.view.ready().is_empty() {
                        Wait::ColdStart
                    } else {
                        Wait::Queue
                    };
                    let (tx, rx) = oneshot::channel();
                    st.waiters.push_back(Waiter { reply: tx });
                    if start_instance
                        && st.view.has_room()
                        && let Err(refusal) = self.inner.start_instance(&mut st, None)
                    {
                        self.inner.refuse_stranded_waiters(&mut st, refusal);
                    }
                    // A freed slot may already be there (the view was decided on just now).
                    self.inner.dispatch(&mut st);
                    self.inner.scale_to_backlog(&mut st);
                    st.recount();
                    (rx, wait)
                }
            }
        };
        // A request that stops waiting (timed out, or its client left and dropped this
        // future) changes the backlog: the guard tells the controller, which may cancel a
        // start nobody waits for any more.
        let mut left = WaiterLeft(Some(self.inner.clone()));
        let outcome = tokio::time::timeout(wait_timeout, reply).await;
        if matches!(outcome, Ok(Ok(_))) {
            left.0 = None;
        }
        match outcome {
            Ok(Ok(Ok(mut lease))) => {
                lease.waited = Some(arrived.elapsed());
                lease.wait = wait;
                Ok(lease)
            }
            Ok(Ok(Err(err))) => Err(err),
            Ok(Err(_)) => Err(GatewayError::with_detail(
                ErrorCode::InstanceStartFailed,
                "the instance went away before it could serve",
            )),
            Err(_) => Err(GatewayError::with_detail(
                ErrorCode::QueueTimedOut,
                format!("no instance was free within {wait_timeout:?}"),
            )),
        }
    }

    /// A copy of the routing view (for tests and diagnostics; routing runs inside `acquire`).
    pub fn view(&self) -> RouteView {
        self.inner.state.lock().view.clone()
    }

    /// The deployment's status, derived from its instances.
    pub fn status(&self) -> DeploymentStatus {
        let st = self.inner.state.lock();
        DeploymentStatus::derive(st.instances.values().map(|i| i.state))
    }

    /// Every instance that still exists, in id order.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        let now = Instant::now();
        let st = self.inner.state.lock();
        st.instances
            .iter()
            .map(|(id, i)| InstanceInfo {
                id: *id,
                state: i.state,
                endpoint: i.endpoint.as_deref().cloned(),
                age: now.saturating_duration_since(i.created_at),
                ready_after: i
                    .ready_at
                    .map(|r| r.saturating_duration_since(i.created_at)),
                idle_for: if i.in_flight > 0 {
                    Duration::ZERO
                } else {
                    now.saturating_duration_since(i.last_activity)
                },
                in_flight: i.in_flight,
                served: i.served,
                cost: i.cost_until(now),
                idle_waste: i.idle_waste_until(now),
                error: i.error.clone(),
            })
            .collect()
    }

    /// The last [`KEPT_START_FAILURES`] starts that failed, oldest first: when, which
    /// instance, the code and reason its waiters got, and its last log lines.
    pub fn start_failures(&self) -> Vec<StartFailure> {
        self.inner.state.lock().start_failures.to_vec()
    }

    /// The instance's last `lines` log lines, as its provider keeps them.
    pub fn logs(&self, id: InstanceId, lines: usize) -> Vec<String> {
        self.inner.provider.logs(id, lines)
    }

    /// Total spend: released instances plus the running ones up to now.
    pub fn total_cost(&self) -> f64 {
        let now = Instant::now();
        let st = self.inner.state.lock();
        st.released_cost
            + st.instances
                .values()
                .map(|i| i.cost_until(now))
                .sum::<f64>()
    }

    /// Idle waste: what instances cost while ready and serving nothing (from their last
    /// response's last byte, or from readiness, until the next request or their release),
    /// released ones and the running ones up to now. Tune `idle_retention` with it.
    pub fn idle_waste(&self) -> f64 {
        let now = Instant::now();
        let st = self.inner.state.lock();
        st.released_idle_waste
            + st.instances
                .values()
                .map(|i| i.idle_waste_until(now))
                .sum::<f64>()
    }

    /// The running hourly rate: the sum of `price_per_hour` of the live instances.
    pub fn hourly_rate(&self) -> f64 {
        self.inner.state.lock().hourly_rate_micros() as f64 / 1_000_000.0
    }

    /// How many requests (and pre-warm calls) were answered 1021 because a budget refused
    /// the start they needed.
    pub fn budget_refusals(&self) -> u64 {
        self.inner.state.lock().budget_refusals
    }

    /// The shared budget this deployment draws on, if any.
    pub fn shared_budget(&self) -> Option<&Arc<SharedBudget>> {
        self.inner.shared_budget.as_ref()
    }

    /// How many instances have been released over the controller's life.
    pub fn released_count(&self) -> u64 {
        self.inner.state.lock().released_count
    }

    /// Requests waiting for capacity now.
    pub fn queue_depth(&self) -> usize {
        let mut st = self.inner.state.lock();
        st.purge_waiters();
        st.waiters.len()
    }

    /// Starts one more instance now (pre-warm), or 1007 at the cap. It idles out like any
    /// other once its retention period passes without requests.
    pub fn start_instance(&self) -> Result<InstanceId, GatewayError> {
        let mut st = self.inner.state.lock();
        if st.closed {
            return Err(ErrorCode::ShuttingDown.into());
        }
        if !st.view.has_room() {
            return Err(ErrorCode::ReplicaQuotaExceeded.into());
        }
        let id = self
            .inner
            .start_instance(&mut st, None)
            .map_err(|refusal| self.inner.budget_error(&mut st, refusal))?;
        st.recount();
        Ok(id)
    }

    /// Releases one instance: it takes no new requests, finishes those in flight, then is
    /// released at the provider. A starting instance is released as soon as its create call
    /// returns. Unknown ids give 1006.
    pub fn release_instance(&self, id: InstanceId) -> Result<(), GatewayError> {
        let mut st = self.inner.state.lock();
        let Some(inst) = st.instances.get_mut(&id) else {
            return Err(ErrorCode::RouteTargetNotFound.into());
        };
        match inst.state {
            InstanceState::Ready => {
                if let Err(err) = st.transition(id, LifecycleEvent::Drain) {
                    tracing::error!(%err, "drain refused");
                }
            }
            InstanceState::Creating | InstanceState::Starting => inst.cancel = true,
            _ => {}
        }
        if let Some(inst) = st.instances.get(&id) {
            inst.wake.notify_one();
        }
        st.recount();
        Ok(())
    }

    /// Stops the deployment: new requests get 1015, waiting ones at once; instances drain for
    /// up to `drain` and are then released. Resolves when every instance is released at the
    /// provider.
    pub async fn shutdown(&self, drain: Duration) {
        {
            let mut st = self.inner.state.lock();
            st.closed = true;
            for w in st.waiters.drain(..) {
                let _ = w.reply.send(Err(ErrorCode::ShuttingDown.into()));
            }
            let ids: Vec<InstanceId> = st.instances.keys().copied().collect();
            for id in ids {
                let Some(inst) = st.instances.get_mut(&id) else {
                    continue;
                };
                if let Some(reply) = inst.reserved.take() {
                    let _ = reply.send(Err(ErrorCode::ShuttingDown.into()));
                }
                match inst.state {
                    InstanceState::Creating | InstanceState::Starting => inst.cancel = true,
                    InstanceState::Ready => {
                        let _ = st.transition(id, LifecycleEvent::Drain);
                    }
                    _ => {}
                }
                if let Some(inst) = st.instances.get(&id) {
                    inst.wake.notify_one();
                }
            }
            st.recount();
        }
        let mut live = self.inner.live_tx.subscribe();
        if tokio::time::timeout(drain, live.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            let mut st = self.inner.state.lock();
            st.force_release = true;
            for inst in st.instances.values() {
                inst.wake.notify_one();
            }
        }
        let _ = live.wait_for(|n| *n == 0).await;
    }

    /// Takes over or releases the instances the provider holds for this deployment that this
    /// controller does not know (left by an earlier run of the gateway). Where the provider
    /// adopts ([`GpuProvider::adopts`]) and the cap and budgets allow, each becomes one of
    /// this controller's instances again, serving once it passes readiness (an instance the
    /// provider refuses to adopt is failed and released); the rest are released, all at
    /// once. Returns the ids released; each failed release is logged, and the call fails only
    /// when listing failed or every release did.
    pub async fn reconcile(&self) -> Result<Vec<InstanceId>, ProviderError> {
        let deployment = self.id();
        let held = self.inner.provider.list(&deployment).await?;
        // Released side by side: one orphan that is slow to stop (a process ignoring SIGTERM
        // for its whole grace period) must not hold up the others, and one that fails to
        // release must not leave the rest running.
        let mut releases = tokio::task::JoinSet::new();
        for found in held {
            if !self.inner.try_adopt(&found) {
                tracing::warn!(deployment, instance = %found.id, "releasing orphaned instance");
                let provider = self.inner.provider.clone();
                releases.spawn(async move { (found.id, provider.release(found.id).await) });
            }
        }
        let mut released = Vec::new();
        let mut first_error = None;
        while let Some(joined) = releases.join_next().await {
            match joined {
                Ok((id, Ok(()))) => released.push(id),
                Ok((id, Err(err))) => {
                    tracing::error!(deployment, instance = %id, %err, "releasing an orphaned instance failed");
                    first_error.get_or_insert(err);
                }
                Err(err) => tracing::error!(deployment, %err, "a release task failed"),
            }
        }
        released.sort_unstable();
        match first_error {
            Some(err) if released.is_empty() => Err(err),
            _ => Ok(released),
        }
    }
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("id", &self.id())
            .field("provider", &self.inner.provider.name())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Controller`] with less common settings.
#[derive(Debug)]
pub struct ControllerBuilder {
    config: DeployConfig,
    provider: Arc<dyn GpuProvider>,
    events: Arc<dyn EventSink>,
    owner: String,
    policy: Arc<dyn ScalePolicy>,
    shared_budget: Option<Arc<SharedBudget>>,
}

impl ControllerBuilder {
    /// Decides how many instances the backlog needs, asked after every change of the
    /// backlog. Default: [`OnDemandOnly`] (instances start only when a routing decision
    /// asks); the gateway gives autodeploy-routing's `Backlog`.
    pub fn scale_policy(mut self, policy: Arc<dyn ScalePolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// Draws on `budget` too (besides the deployment's own `budget`): a start that would put
    /// the running hourly rate of every controller sharing it over its limit is refused.
    pub fn shared_budget(mut self, budget: Arc<SharedBudget>) -> Self {
        self.shared_budget = Some(budget);
        self
    }

    /// Receives lifecycle events (for metrics and logs).
    pub fn events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    /// The owner label stored with every instance (e.g. the gateway's name).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Validates the config and builds the controller; starts the warm pool if configured.
    pub fn build(self) -> Result<Controller, ValidationErrors> {
        self.config.validate()?;
        let mut state = State::default();
        state.view.set_limits(
            self.config.max_instances,
            self.config.concurrency_limit,
            self.config.scale_out_step,
        );
        let inner = Arc::new(Inner {
            provider: self.provider,
            config: RwLock::new(Arc::new(self.config)),
            state: Mutex::new(state),
            events: self.events,
            owner: self.owner,
            live_tx: watch::Sender::new(0),
            policy: self.policy,
            shared_budget: self.shared_budget,
        });
        if let Some(budget) = &inner.shared_budget {
            budget.register(&inner);
        }
        {
            let mut st = inner.state.lock();
            inner.rebalance(&mut st);
        }
        Ok(Controller { inner })
    }
}

impl Inner {
    fn config(&self) -> Arc<DeployConfig> {
        self.config.read().clone()
    }

    fn deployment(&self) -> String {
        self.config.read().id.clone()
    }

    /// A lease on `id` if it is ready.
    fn lease_now(self: &Arc<Self>, st: &mut State, id: InstanceId) -> Option<Lease> {
        st.view.get(id)?;
        let inst = st.add_in_flight(id, 1)?;
        let endpoint = inst.endpoint.clone()?;
        Some(Lease {
            inner: Some(self.clone()),
            id,
            endpoint,
            waited: None,
            wait: Wait::None,
        })
    }

    /// Hands `lease` to `reply`, undoing its in-flight count if the request has gone.
    fn hand_over(&self, st: &mut State, reply: Reply, lease: Lease) {
        if let Err(Ok(lease)) = reply.send(Ok(lease)) {
            let id = lease.disarm();
            if let Some(inst) = st.add_in_flight(id, -1)
                && inst.in_flight == 0
            {
                inst.wake.notify_one();
            }
        }
    }

    /// A forwarded request ended: the instance is idle from now if it was the last one.
    fn end_request(self: &Arc<Self>, id: InstanceId) {
        let mut st = self.state.lock();
        let now = Instant::now();
        let Some(inst) = st.add_in_flight(id, -1) else {
            return;
        };
        inst.served += 1;
        inst.last_activity = now;
        if inst.in_flight == 0 {
            inst.wake.notify_one();
        }
        self.dispatch(&mut st);
        self.scale_to_backlog(&mut st);
        st.recount();
    }

    /// Whether `found`, left by an earlier run, is this controller's now: already known, or
    /// adopted (the provider adopts, the controller runs, and the cap and budgets have room).
    fn try_adopt(self: &Arc<Self>, found: &ProvidedInstance) -> bool {
        let mut st = self.state.lock();
        if st.instances.contains_key(&found.id) {
            return true;
        }
        if !self.provider.adopts() || st.closed || !st.view.has_room() {
            return false;
        }
        let origin = instance::Origin::Adopt(found.clone());
        if self
            .spawn_instance(&mut st, found.id, None, origin)
            .is_err()
        {
            return false;
        }
        tracing::info!(deployment = %self.deployment(), instance = %found.id, "adopting an instance left by an earlier run");
        st.recount();
        true
    }

    /// Creates the record of a new instance and spawns its task, unless a budget refuses
    /// it. Callers check the cap.
    fn start_instance(
        self: &Arc<Self>,
        st: &mut State,
        reserved: Option<Reply>,
    ) -> Result<InstanceId, budget::Refusal> {
        let mut id = InstanceId::generate();
        while st.instances.contains_key(&id) {
            id = InstanceId::generate();
        }
        self.spawn_instance(st, id, reserved, instance::Origin::Create)?;
        Ok(id)
    }

    /// Records instance `id` (unless a budget refuses it) and spawns its task, which creates
    /// or adopts it as `origin` says.
    fn spawn_instance(
        self: &Arc<Self>,
        st: &mut State,
        id: InstanceId,
        reserved: Option<Reply>,
        origin: instance::Origin,
    ) -> Result<(), budget::Refusal> {
        let config = self.config();
        let hold = self.admit_start(st, config.price_per_hour)?;
        let mut instance = Instance::new(Instant::now(), config.price_per_hour, reserved);
        instance.hold = hold;
        st.instances.insert(id, instance);
        st.recount();
        self.publish_live(st);
        let mut spec = InstanceSpec::from_config(&config, id);
        spec.labels
            .insert(LABEL_OWNER.to_owned(), self.owner.clone());
        self.events
            .on_event(&config.id, &ControllerEvent::Creating { instance: id });
        tokio::spawn(instance::run(self.clone(), id, spec, origin));
        Ok(())
    }

    /// Gives waiting requests, oldest first, to ready instances with free capacity.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        while let Some(front) = st.waiters.front() {
            if front.reply.is_closed() {
                st.waiters.pop_front();
                continue;
            }
            let Some(id) = st.least_loaded() else { break };
            let Some(waiter) = st.waiters.pop_front() else {
                break;
            };
            if let Some(lease) = self.lease_now(st, id) {
                self.hand_over(st, waiter.reply, lease);
            }
        }
    }

    /// Restores the invariants after any change: waiting requests served where possible, a
    /// start for waiters nothing else will serve, the warm pool topped up, counters current.
    fn rebalance(self: &Arc<Self>, st: &mut State) {
        // Callers arrive straight from a change (an instance removed after release, a new
        // config): the view's counts must be current before `has_room` is asked, or a freed
        // slot at the cap is not seen and waiters get no replacement instance.
        st.recount();
        self.dispatch(st);
        st.purge_waiters();
        if !st.closed
            && !st.waiters.is_empty()
            && st.view.ready().is_empty()
            && st.view.starting() == 0
            && st.view.has_room()
            && let Err(refusal) = self.start_instance(st, None)
        {
            self.refuse_stranded_waiters(st, refusal);
        }
        self.scale_to_backlog(st);
        self.top_up(st);
        st.recount();
        self.publish_live(st);
    }

    /// Starts instances until the warm pool holds `min_instances` (at most `scale_out_step`
    /// starting at once, when set); after failed starts the next attempt waits (1 s doubling to 60 s) so a broken command does not loop.
    fn top_up(self: &Arc<Self>, st: &mut State) {
        let min = self.config.read().min_instances;
        if st.closed || st.top_up_scheduled {
            return;
        }
        if st.consecutive_failures > 0 && st.serving_or_starting() < min {
            st.top_up_scheduled = true;
            let delay = Duration::from_secs(1 << st.consecutive_failures.min(6))
                .min(Duration::from_secs(60));
            let inner = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut st = inner.state.lock();
                st.top_up_scheduled = false;
                let failures = std::mem::take(&mut st.consecutive_failures);
                inner.top_up(&mut st);
                st.consecutive_failures = failures;
                st.recount();
            });
            return;
        }
        let step = self.config.read().scale_out_step;
        while st.serving_or_starting() < min
            && st.view.has_room()
            && (step == 0 || st.view.starting() < step)
        {
            if let Err(refusal) = self.start_instance(st, None) {
                tracing::warn!(?refusal, "the budget cannot pay for the warm pool");
                break;
            }
        }
    }

    fn publish_live(&self, st: &State) {
        let live = st.instances.len();
        self.live_tx
            .send_if_modified(|n| std::mem::replace(n, live) != live);
    }
}

/// Tells the controller when a waiting request stops waiting without its answer.
struct WaiterLeft(Option<Arc<Inner>>);

impl Drop for WaiterLeft {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            let mut st = inner.state.lock();
            inner.scale_to_backlog(&mut st);
            st.recount();
        }
    }
}
