//! Properties every decision keeps, over arbitrary snapshots (proptest).

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};

use autodeploy_core::{ErrorCode, InstanceId, ReadyInstance, RouteView, Target};
use autodeploy_routing::{RoundRobin, RouteRule, decide, least_loaded};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use support::{any_id, any_view, any_view_and_rule, id, idle};

/// Whether `target` is a snapshot instance allowed for `rule`, or the outcome documented for it.
fn is_documented(rule: RouteRule, view: &RouteView, target: Target) -> bool {
    let none_ready = view.ready().is_empty();
    match (rule, target) {
        (_, Target::Instance(chosen)) if view.get(chosen).is_none() => false,
        (RouteRule::Instance(wanted), Target::Instance(chosen)) => chosen == wanted,
        (RouteRule::Instance(wanted), Target::Reject(ErrorCode::RouteTargetNotFound)) => {
            view.get(wanted).is_none()
        }
        (RouteRule::Random | RouteRule::RoundRobin, Target::Instance(_)) => true,
        (RouteRule::Random | RouteRule::RoundRobin, Target::Reject(code)) => {
            code == ErrorCode::RouteTargetNotFound && none_ready
        }
        (RouteRule::UnknownInstance, t) => t == Target::Reject(ErrorCode::RouteTargetNotFound),
        (RouteRule::ScaleOut, Target::ScaleOut) => view.has_room(),
        (RouteRule::ScaleOut, Target::Reject(ErrorCode::ReplicaQuotaExceeded)) => !view.has_room(),
        (RouteRule::Default, Target::Instance(chosen)) => {
            let limit = view.concurrency_limit();
            let within = |r: &&ReadyInstance| limit == 0 || r.in_flight < limit;
            let load = view.get(chosen).map_or(u32::MAX, |r| r.in_flight);
            (limit == 0 || load < limit)
                && view
                    .ready()
                    .iter()
                    .filter(within)
                    .all(|r| r.in_flight >= load)
        }
        (RouteRule::Default, Target::Queue { start_instance }) => {
            // The backlog with this request queued asks for one instance per `limit`
            // requests (one in all with no limit), up to the cap; instances ready and
            // starting count, so a cold start is single-flight only while one suffices.
            let limit = u64::from(view.concurrency_limit());
            let backlog = view.in_flight() + u64::from(view.queued()) + 1;
            let needed = if limit == 0 {
                1
            } else {
                backlog.div_ceil(limit)
            }
            .min(u64::from(view.max_instances()));
            let have = view.ready().len() as u64 + u64::from(view.starting());
            let step_allows = view.scale_out_step() == 0 || view.starting() < view.scale_out_step();
            least_loaded::pick(view).is_none()
                && start_instance == (needed > have && view.has_room() && step_allows)
        }
        _ => false,
    }
}

/// A deployment as the controller would keep it, for simulations over many decisions.
#[derive(Debug, Default)]
struct Model {
    ready: HashMap<InstanceId, u32>,
    starting: u32,
    queued: u32,
    next_id: usize,
}

impl Model {
    fn view(&self, max: u32, limit: u32) -> RouteView {
        let ready = self
            .ready
            .iter()
            .map(|(&id, &in_flight)| ReadyInstance { id, in_flight })
            .collect();
        RouteView::new(ready, self.starting, 0, max, limit, self.queued)
    }

    fn live(&self) -> u32 {
        self.ready.len() as u32 + self.starting
    }
}

#[derive(Debug, Clone)]
enum Event {
    Request(u8),
    BecomeReady,
    Finish(prop::sample::Index),
    Release(prop::sample::Index),
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0u8..5).prop_map(Event::Request),
        1 => Just(Event::BecomeReady),
        2 => any::<prop::sample::Index>().prop_map(Event::Finish),
        1 => any::<prop::sample::Index>().prop_map(Event::Release),
    ]
}

#[derive(Debug, Clone)]
enum Churn {
    Pick,
    Join(InstanceId),
    Leave(prop::sample::Index),
}

fn any_churn() -> impl Strategy<Value = Churn> {
    prop_oneof![
        5 => Just(Churn::Pick),
        1 => any_id().prop_map(Churn::Join),
        1 => any::<prop::sample::Index>().prop_map(Churn::Leave),
    ]
}

proptest! {
    #[test]
    fn decision_is_a_snapshot_instance_or_a_documented_outcome(
        (view, rule) in any_view_and_rule(),
        seed in any::<u64>(),
        start in proptest::option::of(any_id()),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut cursor = RoundRobin::new();
        if let Some(last) = start {
            // Put the cursor anywhere, on an id that may or may not be ready.
            let one = RouteView::new(vec![ReadyInstance { id: last, in_flight: 0 }], 0, 0, 1, 0, 0);
            cursor.next(&one);
        }
        let target = decide(rule, &view, &mut rng, &mut cursor);
        prop_assert!(is_documented(rule, &view, target), "{rule:?} gave {target:?} over {view:?}");
    }

    #[test]
    fn round_robin_over_k_stable_instances_visits_each_once_per_k_calls(
        ids in proptest::collection::btree_set(any_id(), 1..50),
        warm_up in 0usize..100,
        rounds in 1usize..4,
    ) {
        let ready = ids.iter().map(|&id| ReadyInstance { id, in_flight: 0 }).collect();
        let view = RouteView::new(ready, 0, 0, 100, 0, 0);
        let mut cursor = RoundRobin::new();
        for _ in 0..warm_up {
            cursor.next(&view);
        }
        for _ in 0..rounds {
            let seen: BTreeSet<InstanceId> =
                (0..ids.len()).filter_map(|_| cursor.next(&view)).collect();
            prop_assert_eq!(&seen, &ids);
        }
    }

    #[test]
    fn round_robin_under_churn_never_picks_another_twice_before_a_ready_one(
        initial in proptest::collection::btree_set(any_id(), 0..10),
        churn in proptest::collection::vec(any_churn(), 1..200),
    ) {
        let mut ready: BTreeSet<InstanceId> = initial;
        let mut cursor = RoundRobin::new();
        // For each ready instance chosen at least once: the others chosen since.
        let mut since: HashMap<InstanceId, HashSet<InstanceId>> = HashMap::new();
        for step in churn {
            match step {
                Churn::Join(id) => {
                    ready.insert(id);
                }
                Churn::Leave(at) if !ready.is_empty() => {
                    let gone = *ready.iter().nth(at.index(ready.len())).unwrap();
                    ready.remove(&gone);
                    since.remove(&gone);
                }
                Churn::Leave(_) => {}
                Churn::Pick => {
                    let list = ready.iter().map(|&id| ReadyInstance { id, in_flight: 0 });
                    let view = RouteView::new(list.collect(), 0, 0, 100, 0, 0);
                    let Some(chosen) = cursor.next(&view) else {
                        prop_assert!(ready.is_empty());
                        continue;
                    };
                    prop_assert!(ready.contains(&chosen));
                    for (waiting, others) in since.iter_mut() {
                        if *waiting != chosen {
                            prop_assert!(
                                others.insert(chosen),
                                "{chosen} chosen twice while {waiting} waited"
                            );
                        }
                    }
                    since.insert(chosen, HashSet::new());
                }
            }
        }
    }

    #[test]
    fn id_routing_is_exact(view in any_view(), wanted in any_id(), seed in any::<u64>()) {
        let target = decide(
            RouteRule::Instance(wanted),
            &view,
            &mut StdRng::seed_from_u64(seed),
            &mut RoundRobin::new(),
        );
        if view.get(wanted).is_some() {
            prop_assert_eq!(target, Target::Instance(wanted));
        } else {
            prop_assert_eq!(target, Target::Reject(ErrorCode::RouteTargetNotFound));
        }
        for r in view.ready() {
            let target = decide(
                RouteRule::Instance(r.id),
                &view,
                &mut StdRng::seed_from_u64(seed),
                &mut RoundRobin::new(),
            );
            prop_assert_eq!(target, Target::Instance(r.id));
        }
    }

    /// The controller re-checks the cap; this model does not, so any start the rules ask for
    /// beyond the cap would show here.
    #[test]
    fn scale_out_and_default_never_exceed_the_cap(
        max in 1u32..8,
        limit in 0u32..4,
        seed in any::<u64>(),
        events in proptest::collection::vec(any_event(), 1..300),
    ) {
        let mut model = Model::default();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut cursor = RoundRobin::new();
        for event in events {
            match event {
                Event::Request(kind) => {
                    let rule = [
                        RouteRule::Default,
                        RouteRule::ScaleOut,
                        RouteRule::Random,
                        RouteRule::RoundRobin,
                        RouteRule::Default,
                    ][usize::from(kind)];
                    let view = model.view(max, limit);
                    match decide(rule, &view, &mut rng, &mut cursor) {
                        Target::Instance(id) => *model.ready.get_mut(&id).unwrap() += 1,
                        Target::ScaleOut => model.starting += 1,
                        Target::Queue { start_instance } => {
                            model.queued += 1;
                            model.starting += u32::from(start_instance);
                        }
                        Target::Reject(_) => {}
                    }
                }
                Event::BecomeReady if model.starting > 0 => {
                    model.starting -= 1;
                    model.ready.insert(id(model.next_id), 0);
                    model.next_id += 1;
                    // The new instance takes waiting requests, as the controller dispatches.
                    let slots = if limit == 0 { model.queued } else { limit.min(model.queued) };
                    model.queued -= slots;
                    *model.ready.get_mut(&id(model.next_id - 1)).unwrap() += slots;
                }
                Event::BecomeReady => {}
                Event::Finish(at) => {
                    let busy: Vec<InstanceId> =
                        model.ready.iter().filter(|e| *e.1 > 0).map(|e| *e.0).collect();
                    if !busy.is_empty() {
                        *model.ready.get_mut(&busy[at.index(busy.len())]).unwrap() -= 1;
                    }
                }
                Event::Release(at) => {
                    let idle: Vec<InstanceId> =
                        model.ready.iter().filter(|e| *e.1 == 0).map(|e| *e.0).collect();
                    if !idle.is_empty() {
                        model.ready.remove(&idle[at.index(idle.len())]);
                    }
                }
            }
            prop_assert!(model.live() <= max, "{} live over a cap of {max}", model.live());
        }
    }
}

/// Pearson's chi-square over `k` equally likely outcomes stays under a bound that a fair pick
/// exceeds with negligible probability (mean `k - 1`, plus eight standard deviations).
#[test]
fn random_hits_every_instance_uniformly() {
    for (k, seed) in [
        (1, 11),
        (2, 12),
        (3, 13),
        (10, 14),
        (37, 15),
        (100, 16),
        (1000, 17),
    ] {
        let view = idle(k, 0);
        let draws = 200 * k;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut cursor = RoundRobin::new();
        let mut hits = vec![0u64; k];
        for _ in 0..draws {
            let Target::Instance(chosen) = decide(RouteRule::Random, &view, &mut rng, &mut cursor)
            else {
                panic!("random over {k} ready instances must pick one");
            };
            hits[view.position(chosen).expect("a snapshot instance")] += 1;
        }
        assert!(
            hits.iter().all(|&h| h > 0),
            "k = {k}: some instance never hit"
        );
        let expected = draws as f64 / k as f64;
        let chi2: f64 = hits
            .iter()
            .map(|&h| (h as f64 - expected).powi(2) / expected)
            .sum();
        let dof = (k - 1) as f64;
        let bound = dof + 8.0 * (2.0 * dof).sqrt() + 1.0;
        assert!(
            chi2 <= bound,
            "k = {k}: chi-square {chi2:.1} over {bound:.1}"
        );
    }
}

/// Random picks use the rng they are given, so a seed replays the same choices.
#[test]
fn random_is_reproducible_from_a_seed() {
    let view = idle(50, 0);
    let run = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..20)
            .map(|_| decide(RouteRule::Random, &view, &mut rng, &mut RoundRobin::new()))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}
