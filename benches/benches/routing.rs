//! One routing decision per iteration, for each rule over 1, 10, 100 and 1,000 ready
//! instances; and header parsing.
//!
//! Views are built once, outside the timed loop, as the controller keeps one view up to date
//! incrementally. Target: at most 100 ns per decision at 1,000 instances for `random`,
//! `round-robin` and an id.

use std::hint::black_box;

use autodeploy_core::{InstanceId, ReadyInstance, RouteView};
use autodeploy_routing::{RoundRobin, RouteRule, decide};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const SIZES: [usize; 4] = [1, 10, 100, 1000];
const LIMIT: u32 = 8;

/// `n` ready instances with random ids, each serving 1 to `LIMIT - 1` requests: the default
/// rule finds no idle instance to stop at and scans them all (its worst case).
fn busy_view(n: usize, rng: &mut StdRng) -> (RouteView, Vec<InstanceId>) {
    let ready: Vec<ReadyInstance> = (0..n)
        .map(|_| ReadyInstance {
            id: InstanceId::random(rng),
            in_flight: rng.random_range(1..LIMIT),
        })
        .collect();
    let ids = ready.iter().map(|r| r.id).collect();
    let max = n as u32 + 1;
    (RouteView::new(ready, 0, 0, max, LIMIT, 0), ids)
}

fn rules(c: &mut Criterion) {
    let mut setup = StdRng::seed_from_u64(42);
    let views: Vec<(usize, RouteView, Vec<InstanceId>)> = SIZES
        .iter()
        .map(|&n| {
            let (view, ids) = busy_view(n, &mut setup);
            (n, view, ids)
        })
        .collect();

    for (name, rule) in [
        ("default", RouteRule::Default),
        ("scale-out", RouteRule::ScaleOut),
        ("random", RouteRule::Random),
        ("round-robin", RouteRule::RoundRobin),
    ] {
        let mut group = c.benchmark_group(name);
        for (n, view, _) in &views {
            let mut rng = StdRng::seed_from_u64(7);
            let mut cursor = RoundRobin::new();
            group.bench_with_input(BenchmarkId::from_parameter(n), view, |b, view| {
                b.iter(|| decide(black_box(rule), black_box(view), &mut rng, &mut cursor))
            });
        }
        group.finish();
    }

    // Ids are taken in the view's random insertion order, so each lookup searches afresh.
    let mut group = c.benchmark_group("id");
    for (n, view, ids) in &views {
        let mut rng = StdRng::seed_from_u64(7);
        let mut cursor = RoundRobin::new();
        let mut next = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), view, |b, view| {
            b.iter(|| {
                next = (next + 1) % ids.len();
                let rule = RouteRule::Instance(ids[next]);
                decide(black_box(rule), black_box(view), &mut rng, &mut cursor)
            })
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let huge = vec![b'x'; 8192];
    let mut group = c.benchmark_group("parse");
    for (name, raw) in [
        ("round-robin", &b"round-robin"[..]),
        ("id", b" XYKEMLVY "),
        ("garbage-8KiB", &huge),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(name), raw, |b, raw| {
            b.iter(|| RouteRule::from_header(Some(black_box(raw))))
        });
    }
    group.finish();
}

criterion_group!(benches, rules, parse);
criterion_main!(benches);
