//! The default rule (no header): least-loaded, cold start, scale out under load.

use autodeploy_core::{InstanceId, RouteView, Target};

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
/// 2. none ready: [`Target::Queue`], starting an instance only when none is starting yet and
///    the cap allows (the cold start is single-flight: later requests wait for the same one);
/// 3. every ready instance at its limit: [`Target::Queue`], starting one more instance when the
///    cap allows and the queue, this request included, outgrows what the instances already
///    starting will absorb (`queued + 1 > starting × limit`). A burst thus starts one instance
///    per `limit` waiting requests, never one per request.
///
/// The controller serves the queue in order as slots free up, on any ready instance.
pub fn decide(view: &RouteView) -> Target {
    if let Some(id) = pick(view) {
        return Target::Instance(id);
    }
    let start_instance = view.has_room()
        && if view.ready().is_empty() {
            view.starting() == 0
        } else {
            let absorbed = u64::from(view.starting()) * u64::from(view.concurrency_limit());
            u64::from(view.queued()) + 1 > absorbed
        };
    Target::Queue { start_instance }
}
