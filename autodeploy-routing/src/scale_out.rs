//! `scale-out`: start a new instance for this request.

use autodeploy_core::{ErrorCode, RouteView, Target};

/// [`Target::ScaleOut`] while one more instance fits under the cap, else 1007
/// ([`ErrorCode::ReplicaQuotaExceeded`]). O(1).
///
/// The cap counts every live instance, starting ones included, as the seed requires. The
/// controller checks the cap again under its lock when it starts the instance.
pub fn decide(view: &RouteView) -> Target {
    if view.has_room() {
        Target::ScaleOut
    } else {
        Target::Reject(ErrorCode::ReplicaQuotaExceeded)
    }
}
