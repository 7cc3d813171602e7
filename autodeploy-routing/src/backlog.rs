//! How many instances the default rule's backlog needs: the scale-out half of the default
//! rule, asked by the controller after every change of the backlog.

use autodeploy_core::{RouteView, ScalePolicy};

/// The instances (ready and starting together) the backlog needs: with a concurrency limit
/// `L > 0`, `ceil((in_flight + queued) / L)`; with no limit (0), one instance serves every
/// request, so one while there is any backlog; at most the cap. O(ready instances).
///
/// `in_flight` counts requests on ready instances, `queued` those waiting. An instance that
/// is draining or releasing serves no new request and is not counted among what there is.
pub fn instances_needed(view: &RouteView) -> u32 {
    let backlog = view.in_flight() + u64::from(view.queued());
    let needed = match view.concurrency_limit() {
        _ if backlog == 0 => 0,
        0 => 1,
        limit => backlog.div_ceil(u64::from(limit)),
    };
    needed.min(u64::from(view.max_instances())) as u32
}

/// How many instances to start now: what [`instances_needed`] asks beyond the instances
/// ready and starting (so instances still booting count: no over-start while they boot),
/// within the room under the cap and, when `scale_out_step > 0`, so that at most that many
/// are starting at once. A burst at Standby thus starts every instance it needs at once.
pub fn instances_to_start(view: &RouteView) -> u32 {
    let have = view.ready().len() as u32 + view.starting();
    let mut start = instances_needed(view).saturating_sub(have);
    start = start.min(view.max_instances().saturating_sub(view.live()));
    if view.scale_out_step() > 0 {
        start = start.min(view.scale_out_step().saturating_sub(view.starting()));
    }
    start
}

/// The default rule's [`ScalePolicy`]: [`instances_needed`] and [`instances_to_start`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog;

impl ScalePolicy for Backlog {
    fn instances_needed(&self, view: &RouteView) -> u32 {
        instances_needed(view)
    }

    fn instances_to_start(&self, view: &RouteView) -> u32 {
        instances_to_start(view)
    }
}
