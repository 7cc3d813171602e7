//! `random`: a uniformly chosen ready instance.

use autodeploy_core::{InstanceId, RouteView};
use rand::{Rng, RngExt};

/// A ready instance drawn uniformly from `view` with one call to `rng`, or `None` when no
/// instance is ready. O(1).
///
/// Only ready instances are candidates; the concurrency limit is not consulted, because the
/// client chose this rule over the default.
pub fn pick<R: Rng + ?Sized>(view: &RouteView, rng: &mut R) -> Option<InstanceId> {
    let ready = view.ready();
    if ready.is_empty() {
        return None;
    }
    ready.get(rng.random_range(0..ready.len())).map(|r| r.id)
}
