//! Views, ids and strategies shared by the routing tests.

#![allow(dead_code, unreachable_pub)]

use autodeploy_core::{InstanceId, ReadyInstance, RouteView};
use autodeploy_routing::RouteRule;
use proptest::prelude::*;

/// The `n`th id in a fixed order: `aaaaaaaa`, `aaaaaaab`, ... (sorted like `n`).
pub fn id(n: usize) -> InstanceId {
    let mut bytes = [b'a'; 8];
    let mut rest = n;
    for b in bytes.iter_mut().rev() {
        *b = b'a' + (rest % 26) as u8;
        rest /= 26;
    }
    InstanceId::from_bytes(&bytes).expect("letters only")
}

/// `k` idle ready instances with ids `id(0)..id(k)`, nothing starting, cap `k + room`,
/// unlimited concurrency, nothing queued.
pub fn idle(k: usize, room: u32) -> RouteView {
    let ready = (0..k).map(|n| ReadyInstance {
        id: id(n),
        in_flight: 0,
    });
    RouteView::new(ready.collect(), 0, 0, k as u32 + room, 0, 0)
}

/// A view with the given `(id, in_flight)` pairs and counts.
pub fn view(
    ready: &[(InstanceId, u32)],
    starting: u32,
    max_instances: u32,
    concurrency_limit: u32,
    queued: u32,
) -> RouteView {
    let ready = ready
        .iter()
        .map(|&(id, in_flight)| ReadyInstance { id, in_flight })
        .collect();
    RouteView::new(ready, starting, 0, max_instances, concurrency_limit, queued)
}

/// Any well-formed instance id.
pub fn any_id() -> impl Strategy<Value = InstanceId> {
    "[a-z0-9]{8}".prop_map(|s| s.parse().expect("matches the id alphabet"))
}

/// Any snapshot: up to 40 ready instances with loads, and arbitrary counts and limits.
pub fn any_view() -> impl Strategy<Value = RouteView> {
    (
        proptest::collection::vec((any_id(), 0u32..8), 0..40),
        0u32..6,
        0u32..6,
        0u32..50,
        0u32..6,
        0u32..30,
    )
        .prop_map(|(ready, starting, extra, max, limit, queued)| {
            let ready = ready
                .into_iter()
                .map(|(id, in_flight)| ReadyInstance { id, in_flight })
                .collect::<Vec<_>>();
            let live = ready.len() as u32 + starting + extra;
            RouteView::new(ready, starting, live, max, limit, queued)
        })
}

/// A view together with a rule that may name one of its instances.
pub fn any_view_and_rule() -> impl Strategy<Value = (RouteView, RouteRule)> {
    (any_view(), any::<prop::sample::Index>(), any_id(), 0u8..7).prop_map(
        |(view, pick, other, kind)| {
            let rule = match kind {
                0 => RouteRule::Default,
                1 => RouteRule::ScaleOut,
                2 => RouteRule::Random,
                3 => RouteRule::RoundRobin,
                4 => RouteRule::Instance(other),
                5 => match view.ready() {
                    [] => RouteRule::Instance(other),
                    ready => RouteRule::Instance(ready[pick.index(ready.len())].id),
                },
                _ => RouteRule::UnknownInstance,
            };
            (view, rule)
        },
    )
}
