//! Each rule's decision on hand-built snapshots, as the seed and issue 3 specify it.

mod support;

use autodeploy_core::{ErrorCode, RouteView, Target};
use autodeploy_routing::{RoundRobin, RouteRule, decide};
use rand::SeedableRng;
use rand::rngs::StdRng;
use support::{id, idle, view};

const NOT_FOUND: Target = Target::Reject(ErrorCode::RouteTargetNotFound);
const QUOTA: Target = Target::Reject(ErrorCode::ReplicaQuotaExceeded);

fn route(rule: RouteRule, view: &RouteView) -> Target {
    decide(
        rule,
        view,
        &mut StdRng::seed_from_u64(1),
        &mut RoundRobin::new(),
    )
}

#[test]
fn scale_out_below_cap_starts_an_instance() {
    assert_eq!(route(RouteRule::ScaleOut, &idle(0, 1)), Target::ScaleOut);
    assert_eq!(route(RouteRule::ScaleOut, &idle(3, 1)), Target::ScaleOut);
}

#[test]
fn scale_out_at_cap_returns_1007() {
    assert_eq!(route(RouteRule::ScaleOut, &idle(3, 0)), QUOTA);
}

#[test]
fn scale_out_counts_starting_and_draining_instances_against_the_cap() {
    let starting = view(&[(id(0), 0)], 1, 2, 0, 0);
    assert_eq!(route(RouteRule::ScaleOut, &starting), QUOTA);
    // One ready, one draining: live is 2 of 2.
    let draining = RouteView::new(starting.ready().to_vec(), 0, 2, 2, 0, 0);
    assert_eq!(route(RouteRule::ScaleOut, &draining), QUOTA);
}

#[test]
fn random_round_robin_and_id_with_none_ready_return_1006() {
    let nothing = idle(0, 3);
    let only_starting = view(&[], 2, 3, 0, 0);
    for v in [&nothing, &only_starting] {
        assert_eq!(route(RouteRule::Random, v), NOT_FOUND);
        assert_eq!(route(RouteRule::RoundRobin, v), NOT_FOUND);
        assert_eq!(route(RouteRule::Instance(id(0)), v), NOT_FOUND);
    }
}

#[test]
fn id_routes_to_exactly_that_instance() {
    let v = idle(5, 0);
    for n in 0..5 {
        assert_eq!(
            route(RouteRule::Instance(id(n)), &v),
            Target::Instance(id(n))
        );
    }
}

#[test]
fn unknown_id_returns_1006() {
    let v = idle(5, 0);
    assert_eq!(route(RouteRule::Instance(id(5)), &v), NOT_FOUND);
    assert_eq!(route(RouteRule::UnknownInstance, &v), NOT_FOUND);
    assert_eq!(route(RouteRule::parse(b""), &v), NOT_FOUND);
    assert_eq!(route(RouteRule::parse(b"\xff\x00"), &v), NOT_FOUND);
}

#[test]
fn explicit_rules_ignore_the_concurrency_limit() {
    let v = view(&[(id(0), 4)], 0, 1, 4, 0);
    assert_eq!(
        route(RouteRule::Instance(id(0)), &v),
        Target::Instance(id(0))
    );
    assert_eq!(route(RouteRule::Random, &v), Target::Instance(id(0)));
    assert_eq!(route(RouteRule::RoundRobin, &v), Target::Instance(id(0)));
}

#[test]
fn round_robin_takes_ready_instances_in_id_order_and_wraps() {
    let v = idle(3, 0);
    let mut rng = StdRng::seed_from_u64(1);
    let mut cursor = RoundRobin::new();
    let picks: Vec<Target> = (0..7)
        .map(|_| decide(RouteRule::RoundRobin, &v, &mut rng, &mut cursor))
        .collect();
    let expected: Vec<Target> = [0, 1, 2, 0, 1, 2, 0]
        .map(|n| Target::Instance(id(n)))
        .to_vec();
    assert_eq!(picks, expected);
}

#[test]
fn round_robin_continues_after_the_last_id_when_it_leaves() {
    let mut cursor = RoundRobin::new();
    let all = idle(4, 0);
    assert_eq!(cursor.next(&all), Some(id(0)));
    assert_eq!(cursor.next(&all), Some(id(1)));
    // id(1), just chosen, and id(2), next in line, leave: id(3) is next, not id(0).
    let fewer = view(&[(id(0), 0), (id(3), 0)], 0, 4, 0, 0);
    assert_eq!(cursor.next(&fewer), Some(id(3)));
    assert_eq!(cursor.next(&fewer), Some(id(0)));
}

#[test]
fn round_robin_visits_a_joining_instance_in_this_turn() {
    let mut cursor = RoundRobin::new();
    let before = view(&[(id(0), 0), (id(4), 0)], 0, 9, 0, 0);
    assert_eq!(cursor.next(&before), Some(id(0)));
    let after = view(&[(id(0), 0), (id(2), 0), (id(4), 0)], 0, 9, 0, 0);
    assert_eq!(cursor.next(&after), Some(id(2)));
    assert_eq!(cursor.next(&after), Some(id(4)));
    assert_eq!(cursor.next(&after), Some(id(0)));
}

#[test]
fn round_robin_with_none_ready_keeps_its_place() {
    let mut cursor = RoundRobin::new();
    assert_eq!(cursor.next(&idle(3, 0)), Some(id(0)));
    assert_eq!(cursor.next(&idle(0, 3)), None);
    assert_eq!(cursor.last(), Some(id(0)));
    assert_eq!(cursor.next(&idle(3, 0)), Some(id(1)));
}

#[test]
fn default_picks_the_least_loaded_ready_instance() {
    let v = view(&[(id(0), 3), (id(1), 1), (id(2), 2)], 0, 3, 0, 0);
    assert_eq!(route(RouteRule::Default, &v), Target::Instance(id(1)));
}

#[test]
fn default_breaks_ties_towards_the_smallest_id() {
    let v = view(&[(id(2), 1), (id(1), 1), (id(0), 2)], 0, 3, 0, 0);
    assert_eq!(route(RouteRule::Default, &v), Target::Instance(id(1)));
    assert_eq!(
        route(RouteRule::Default, &idle(5, 0)),
        Target::Instance(id(0))
    );
}

#[test]
fn default_skips_instances_at_their_concurrency_limit() {
    let v = view(&[(id(0), 2), (id(1), 1), (id(2), 2)], 0, 3, 2, 0);
    assert_eq!(route(RouteRule::Default, &v), Target::Instance(id(1)));
}

#[test]
fn default_with_zero_limit_is_unlimited() {
    let v = view(&[(id(0), 1000)], 0, 1, 0, 0);
    assert_eq!(route(RouteRule::Default, &v), Target::Instance(id(0)));
}

#[test]
fn default_cold_starts_one_instance_when_none_runs() {
    assert_eq!(
        route(RouteRule::Default, &idle(0, 2)),
        Target::Queue {
            start_instance: true
        }
    );
}

#[test]
fn default_cold_start_is_single_flight() {
    let v = view(&[], 1, 5, 0, 7);
    assert_eq!(
        route(RouteRule::Default, &v),
        Target::Queue {
            start_instance: false
        }
    );
}

#[test]
fn default_with_none_ready_at_cap_waits_without_starting() {
    let at_cap = RouteView::new(Vec::new(), 0, 2, 2, 0, 0);
    assert_eq!(
        route(RouteRule::Default, &at_cap),
        Target::Queue {
            start_instance: false
        }
    );
}

#[test]
fn default_scales_out_when_every_ready_instance_is_at_its_limit() {
    let v = view(&[(id(0), 2), (id(1), 2)], 0, 3, 2, 0);
    assert_eq!(
        route(RouteRule::Default, &v),
        Target::Queue {
            start_instance: true
        }
    );
}

#[test]
fn default_at_limit_and_cap_waits_without_starting() {
    let v = view(&[(id(0), 2), (id(1), 2)], 0, 2, 2, 5);
    assert_eq!(
        route(RouteRule::Default, &v),
        Target::Queue {
            start_instance: false
        }
    );
}

#[test]
fn default_at_limit_starts_one_instance_per_limit_waiting_requests() {
    // One instance is starting and will take 2 requests: the 1st and 2nd waiting requests
    // wait for it, the 3rd asks for another instance.
    let ready = [(id(0), 2)];
    let start = |queued| match route(RouteRule::Default, &view(&ready, 1, 9, 2, queued)) {
        Target::Queue { start_instance } => start_instance,
        other => panic!("expected a queue, got {other:?}"),
    };
    assert!(!start(0));
    assert!(!start(1));
    assert!(start(2));
}
