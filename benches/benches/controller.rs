//! The controller's request path on warm instances: one `acquire` (routing decision under
//! the lock, in-flight count, lease) and the lease's drop (release path: activity recorded,
//! waiters dispatched), with 1 and 100 ready instances.
//!
//! The provider is [`Fixed`]: instances are ready at once and never contacted, so only the
//! controller is measured.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use autodeploy_benches::fixed::Fixed;
use autodeploy_core::{Controller, DeployConfig, GpuProvider, Target};
use autodeploy_routing::{RoundRobin, RouteRule, decide};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A controller with `n` ready instances.
async fn warm_controller(n: u32) -> Controller {
    let provider: Arc<dyn GpuProvider> = Arc::new(Fixed::new(([127, 0, 0, 1], 9).into()));
    let config = DeployConfig::new("bench", "true", Duration::from_secs(3600), n);
    let controller = Controller::new(config, provider).expect("valid config");
    for _ in 0..n {
        controller.start_instance().expect("below the cap");
    }
    while controller.view().ready().len() < n as usize {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    controller
}

fn acquire_release(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("controller");
    for n in [1u32, 100] {
        let controller = rt.block_on(warm_controller(n));
        let routing = RefCell::new((StdRng::seed_from_u64(7), RoundRobin::new()));
        let routing = &routing;
        let controller = &controller;
        group.bench_function(BenchmarkId::new("acquire-release/default", n), |b| {
            b.to_async(&rt).iter(|| async move {
                let lease = controller
                    .acquire(|view| {
                        let (rng, cursor) = &mut *routing.borrow_mut();
                        decide(RouteRule::Default, view, rng, cursor)
                    })
                    .await
                    .expect("a ready instance");
                drop(lease);
            })
        });
        let first = controller.view().ready()[0].id;
        group.bench_function(BenchmarkId::new("acquire-release/instance-id", n), |b| {
            b.to_async(&rt).iter(|| async move {
                let lease = controller
                    .acquire(|_| Target::Instance(first))
                    .await
                    .expect("a ready instance");
                drop(lease);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, acquire_release);
criterion_main!(benches);
