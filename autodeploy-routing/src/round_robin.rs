//! `round-robin`: the ready instances in id order, one after another.

use autodeploy_core::{InstanceId, RouteView};

/// The caller-held position of a round-robin rotation over one deployment's ready instances.
///
/// The cursor remembers the last id it chose, not an index, so the rotation stays fair while
/// instances join and leave: the next pick is the first ready id greater than the last one,
/// wrapping to the smallest. An instance that joins is visited when the rotation reaches its
/// id; one that leaves is simply not found. Hence:
///
/// - with `k` ready instances and none joining or leaving, every `k` consecutive calls visit
///   each instance exactly once;
/// - while an instance stays ready, no other instance is chosen twice before it is chosen
///   again, whatever joins and leaves meanwhile (none is starved or skipped twice in a row).
///
/// Each pick is a binary search: O(log n), no allocation. Keep one cursor per deployment, e.g.
/// next to its controller, and pass it to every decision for that deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundRobin {
    last: Option<InstanceId>,
}

impl RoundRobin {
    /// A cursor that starts at the smallest ready id.
    pub const fn new() -> Self {
        Self { last: None }
    }

    /// The id chosen last, if any.
    pub const fn last(&self) -> Option<InstanceId> {
        self.last
    }

    /// The next ready instance in the rotation, or `None` (leaving the cursor as it was) when
    /// no instance is ready. Only ready instances are candidates; the concurrency limit is not
    /// consulted.
    pub fn next(&mut self, view: &RouteView) -> Option<InstanceId> {
        let ready = view.ready();
        let after = match self.last {
            None => 0,
            Some(last) => match view.position(last) {
                Ok(at) => at + 1,
                Err(at) => at,
            },
        };
        let chosen = ready.get(after).or_else(|| ready.first())?.id;
        self.last = Some(chosen);
        Some(chosen)
    }
}
