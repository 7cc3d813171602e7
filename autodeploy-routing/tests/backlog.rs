//! The default rule's backlog: how many instances it needs and how many to start, as issue 12
//! specifies it, on hand-built snapshots and over arbitrary ones.

mod support;

use autodeploy_core::RouteView;
use autodeploy_routing::backlog::{instances_needed, instances_to_start};
use proptest::prelude::*;
use support::{any_view, id, view};

#[test]
fn burst_at_standby_with_limit_4_and_cap_3_needs_3_at_once() {
    let burst = view(&[], 0, 3, 4, 120);
    assert_eq!(instances_needed(&burst), 3);
    assert_eq!(instances_to_start(&burst), 3);
}

#[test]
fn without_a_limit_one_instance_serves_the_whole_backlog() {
    let burst = view(&[], 0, 3, 0, 120);
    assert_eq!(instances_needed(&burst), 1);
    assert_eq!(instances_to_start(&burst), 1);
    assert_eq!(instances_to_start(&view(&[], 1, 3, 0, 120)), 0);
}

#[test]
fn need_is_the_backlog_over_the_limit_rounded_up() {
    // 4 + 3 in flight and 2 queued: 9 requests at 4 each need 3 instances.
    let v = view(&[(id(0), 4), (id(1), 3)], 0, 9, 4, 2);
    assert_eq!(instances_needed(&v), 3);
    assert_eq!(instances_to_start(&v), 1);
    assert_eq!(instances_needed(&view(&[(id(0), 0)], 0, 9, 4, 0)), 0);
}

#[test]
fn starting_instances_count_toward_the_need() {
    assert_eq!(instances_to_start(&view(&[], 2, 3, 4, 120)), 1);
    assert_eq!(instances_to_start(&view(&[], 3, 3, 4, 120)), 0);
    assert_eq!(instances_to_start(&view(&[], 2, 9, 4, 8)), 0);
}

#[test]
fn a_queue_still_long_when_the_first_is_ready_starts_more() {
    let first_ready = view(&[(id(0), 4)], 0, 3, 4, 40);
    assert_eq!(instances_to_start(&first_ready), 2);
}

#[test]
fn the_cap_counts_draining_instances() {
    // 1 ready + 1 draining = 2 live under a cap of 3: room for one only.
    let v = RouteView::new(
        vec![autodeploy_core::ReadyInstance {
            id: id(0),
            in_flight: 4,
        }],
        0,
        2,
        3,
        4,
        40,
    );
    assert_eq!(instances_needed(&v), 3);
    assert_eq!(instances_to_start(&v), 1);
}

#[test]
fn scale_out_step_bounds_the_instances_starting_at_once() {
    let burst = view(&[], 0, 10, 1, 100).with_scale_out_step(2);
    assert_eq!(instances_to_start(&burst), 2);
    let one_starting = view(&[], 1, 10, 1, 100).with_scale_out_step(2);
    assert_eq!(instances_to_start(&one_starting), 1);
    let two_starting = view(&[], 2, 10, 1, 100).with_scale_out_step(2);
    assert_eq!(instances_to_start(&two_starting), 0);
}

proptest! {
    #[test]
    fn never_starts_past_the_cap_the_need_or_the_step(view in any_view(), step in 0u32..4) {
        let view = view.with_scale_out_step(step);
        let start = instances_to_start(&view);
        let have = view.ready().len() as u32 + view.starting();
        prop_assert!(instances_needed(&view) <= view.max_instances());
        prop_assert!(view.live() + start <= view.max_instances().max(view.live()));
        prop_assert!(have + start <= instances_needed(&view).max(have));
        if step > 0 {
            prop_assert!(view.starting() + start <= step.max(view.starting()));
        }
    }
}
