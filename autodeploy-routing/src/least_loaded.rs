//! The default rule (no header): least-loaded, cold start, scale out under load.

use autodeploy_core::{InstanceId, RouteView, Target};

use crate::backlog;

/// The ready instance with the fewest requests in flight among those below the concurrency
/// limit (0 = unlimited), or `None` when every ready instance is at its limit or none is ready.
///
/// Ties go to the smallest id, so light traffic packs onto few instances and the others can go
/// idle and be released. O(n), stopping early at the first idle instance.
pub fn pick(view: &RouteView) -> Option<InstanceId> {
    let limit = view.concurrency_limit();
    let mut best: Option<(InstanceId, u32)> = None;
    for r in view.ready() {
        if limit != 0 && r.in_flight >= limit {
            continue;
        }
        if r.in_flight == 0 {
            return Some(r.id);
        }
        if best.is_none_or(|(_, load)| r.in_flight < load) {
            best = Some((r.id, r.in_flight));
        }
    }
    best.map(|(id, _)| id)
}

/// The default decision:
///
/// 1. the least-loaded ready instance below the limit ([`pick`]), as [`Target::Instance`];
/// 2. otherwise [`Target::Queue`], asking for one more instance when the backlog with this
///    request queued needs more than are ready and starting ([`backlog::instances_to_start`]).
///    With no instance at all that is the cold start, single-flight: later requests wait
///    for the same one.
///
/// The controller then acts on the whole backlog ([`Backlog`](crate::Backlog)): a burst
/// starts one instance per `limit` requests at once, up to the cap, and a queue still long
/// when an instance becomes ready starts more. It serves the queue in order as slots free up,
/// on any ready instance.
pub fn decide(view: &RouteView) -> Target {
    if let Some(id) = pick(view) {
        return Target::Instance(id);
    }
    let with_this_request = RouteView::new(
        view.ready().to_vec(),
        view.starting(),
        view.live(),
        view.max_instances(),
        view.concurrency_limit(),
        view.queued().saturating_add(1),
    )
    .with_scale_out_step(view.scale_out_step());
    Target::Queue {
        start_instance: backlog::instances_to_start(&with_this_request) > 0,
    }
}
