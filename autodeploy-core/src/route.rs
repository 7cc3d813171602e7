//! The routing vocabulary shared by the controller and the routing crate: what a routing
//! decision sees ([`RouteView`]) and what it may decide ([`Target`]).

use crate::error::ErrorCode;
use crate::instance_id::InstanceId;

/// One ready instance as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyInstance {
    /// Its id.
    pub id: InstanceId,
    /// Requests it is serving now.
    pub in_flight: u32,
}

/// A consistent view of one deployment's instances, taken under the controller's lock.
///
/// Ready instances are kept sorted by id, so lookups by id and "the next id after" are binary
/// searches and a uniform pick is one index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteView {
    ready: Vec<ReadyInstance>,
    starting: u32,
    live: u32,
    max_instances: u32,
    concurrency_limit: u32,
    queued: u32,
    scale_out_step: u32,
}

impl RouteView {
    /// A view over `ready` instances (any order) plus `starting` ones being created or booting;
    /// `live` counts every instance that exists (ready, starting, draining, releasing) and is
    /// raised to at least `ready + starting`.
    pub fn new(
        mut ready: Vec<ReadyInstance>,
        starting: u32,
        live: u32,
        max_instances: u32,
        concurrency_limit: u32,
        queued: u32,
    ) -> Self {
        ready.sort_unstable_by_key(|r| r.id);
        ready.dedup_by_key(|r| r.id);
        let floor = ready.len() as u32 + starting;
        Self {
            ready,
            starting,
            live: live.max(floor),
            max_instances,
            concurrency_limit,
            queued,
            scale_out_step: 0,
        }
    }

    /// The same view with `scale_out_step` set: at most that many instances starting at
    /// once (0 = no limit).
    pub fn with_scale_out_step(mut self, step: u32) -> Self {
        self.scale_out_step = step;
        self
    }

    /// Ready instances, sorted by id.
    pub fn ready(&self) -> &[ReadyInstance] {
        &self.ready
    }

    /// The ready instance with this id.
    pub fn get(&self, id: InstanceId) -> Option<&ReadyInstance> {
        self.position(id).ok().map(|i| &self.ready[i])
    }

    /// `Ok(index)` of `id` among the ready instances, or `Err(insertion index)`.
    pub fn position(&self, id: InstanceId) -> Result<usize, usize> {
        self.ready.binary_search_by_key(&id, |r| r.id)
    }

    /// Instances being created or booting.
    pub fn starting(&self) -> u32 {
        self.starting
    }

    /// Every instance that exists, counted against the cap.
    pub fn live(&self) -> u32 {
        self.live
    }

    /// The deployment's cap.
    pub fn max_instances(&self) -> u32 {
        self.max_instances
    }

    /// Whether one more instance fits under the cap.
    pub fn has_room(&self) -> bool {
        self.live < self.max_instances
    }

    /// Requests one instance serves at once under the default rule; 0 = unlimited.
    pub fn concurrency_limit(&self) -> u32 {
        self.concurrency_limit
    }

    /// Requests waiting for capacity now.
    pub fn queued(&self) -> u32 {
        self.queued
    }

    /// Requests the ready instances are serving now, all together.
    pub fn in_flight(&self) -> u64 {
        self.ready.iter().map(|r| u64::from(r.in_flight)).sum()
    }

    /// The most instances that may be starting at once; 0 = no limit.
    pub fn scale_out_step(&self) -> u32 {
        self.scale_out_step
    }

    // Mutators for the controller, which keeps one view up to date incrementally.

    pub(crate) fn insert_ready(&mut self, id: InstanceId, in_flight: u32) {
        if let Err(at) = self.position(id) {
            self.ready.insert(at, ReadyInstance { id, in_flight });
        }
    }

    pub(crate) fn remove_ready(&mut self, id: InstanceId) {
        if let Ok(at) = self.position(id) {
            self.ready.remove(at);
        }
    }

    pub(crate) fn set_in_flight(&mut self, id: InstanceId, in_flight: u32) {
        if let Ok(at) = self.position(id) {
            self.ready[at].in_flight = in_flight;
        }
    }

    pub(crate) fn set_counts(&mut self, starting: u32, live: u32, queued: u32) {
        self.starting = starting;
        self.live = live;
        self.queued = queued;
    }

    pub(crate) fn set_limits(&mut self, max_instances: u32, concurrency_limit: u32, step: u32) {
        self.max_instances = max_instances;
        self.concurrency_limit = concurrency_limit;
        self.scale_out_step = step;
    }
}

/// How many instances a deployment's backlog needs: the controller asks after every change
/// of the backlog (a request queued, an instance ready, failed or released, a lease ended)
/// and starts, or cancels, the difference. Implementations are pure functions of the view;
/// autodeploy-routing's `Backlog` is the default rule's.
pub trait ScalePolicy: Send + Sync + std::fmt::Debug {
    /// The instances (ready and starting together) the backlog needs now, at most the cap.
    /// The controller never cancels a start while this is at least the instances it has.
    fn instances_needed(&self, view: &RouteView) -> u32;

    /// How many instances to start now: what [`instances_needed`](Self::instances_needed)
    /// asks beyond the ready and starting ones, within the cap and the scale-out step.
    fn instances_to_start(&self, view: &RouteView) -> u32;
}

/// Starts nothing on its own: instances start only when a routing decision asks
/// ([`Target::Queue`] with `start_instance`, [`Target::ScaleOut`]) and the warm pool.
/// The controller's policy when none is given.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnDemandOnly;

impl ScalePolicy for OnDemandOnly {
    fn instances_needed(&self, view: &RouteView) -> u32 {
        view.max_instances()
    }

    fn instances_to_start(&self, _view: &RouteView) -> u32 {
        0
    }
}

/// What a routing decision asks the controller to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Forward to this ready instance now.
    Instance(InstanceId),
    /// Start a new instance for this request and forward to it once ready (`scale-out`).
    /// The controller re-checks the cap and answers 1007 when it is reached.
    ScaleOut,
    /// Wait in the deployment's FIFO queue for the first free ready instance; when
    /// `start_instance` is set, also start one more instance (cold start, or scaling out
    /// under load) if the cap allows.
    Queue {
        /// Start one more instance for the queue.
        start_instance: bool,
    },
    /// Answer with this error (1006, 1007).
    Reject(ErrorCode),
}
