//! An instance id: exactly that instance (the seed's "sticky calls").

use autodeploy_core::{InstanceId, RouteView};

/// `id` when it is ready in `view`, else `None`. O(log n).
///
/// An instance that is still starting is not a target (the client learns ids only from
/// instances that served it), and the concurrency limit is not consulted: the client asked for
/// this instance and no other.
pub fn pick(view: &RouteView, id: InstanceId) -> Option<InstanceId> {
    view.get(id).map(|r| r.id)
}
