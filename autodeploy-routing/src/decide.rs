//! One decision for one request: a [`RouteRule`] over a [`RouteView`].

use autodeploy_core::{ErrorCode, RouteView, Target};
use rand::Rng;

use crate::round_robin::RoundRobin;
use crate::rule::RouteRule;
use crate::{least_loaded, random, scale_out, sticky};

/// Decides where one request goes under `rule`, given a consistent `view` of its deployment.
///
/// `rng` is drawn from only by [`RouteRule::Random`]; `cursor` is read and advanced only by
/// [`RouteRule::RoundRobin`]. The result is always one of:
///
/// | rule | outcome |
/// |---|---|
/// | [`ScaleOut`](RouteRule::ScaleOut) | [`Target::ScaleOut`], or 1007 when `!view.has_room()` |
/// | [`Random`](RouteRule::Random), [`RoundRobin`](RouteRule::RoundRobin) | [`Target::Instance`] of a ready instance, or 1006 when none is ready |
/// | [`Instance(id)`](RouteRule::Instance) | [`Target::Instance(id)`](Target::Instance) when `id` is ready, else 1006 |
/// | [`UnknownInstance`](RouteRule::UnknownInstance) | 1006 |
/// | [`Default`](RouteRule::Default) | see [`least_loaded::decide`]: an instance below the limit, or [`Target::Queue`] |
///
/// "Started" in the seed's wording means ready: an instance that is still starting is never
/// the target of `random`, `round-robin` or an id, since it cannot serve yet. Those three
/// rules ignore the concurrency limit, which governs the default rule only.
pub fn decide<R: Rng + ?Sized>(
    rule: RouteRule,
    view: &RouteView,
    rng: &mut R,
    cursor: &mut RoundRobin,
) -> Target {
    let picked = match rule {
        RouteRule::Default => return least_loaded::decide(view),
        RouteRule::ScaleOut => return scale_out::decide(view),
        RouteRule::Random => random::pick(view, rng),
        RouteRule::RoundRobin => cursor.next(view),
        RouteRule::Instance(id) => sticky::pick(view, id),
        RouteRule::UnknownInstance => None,
    };
    picked.map_or(
        Target::Reject(ErrorCode::RouteTargetNotFound),
        Target::Instance,
    )
}
