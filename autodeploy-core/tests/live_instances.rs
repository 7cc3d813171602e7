//! Property: whatever requests, scale-outs, pre-warms, releases, deaths and failed starts
//! happen, a deployment never has more live instances than its cap, no request waits past
//! the queue's wait timeout, and a shutdown leaves no instance behind at the provider.

mod support;

use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{Controller, Lease, ProviderError};
use parking_lot::Mutex;
use proptest::prelude::*;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use support::{FakeProvider, config, controller, default_route, scale_out, settle};

#[derive(Debug, Clone)]
enum Op {
    /// A request under the default rule; its lease is kept until `DropLease`.
    Acquire,
    /// A request with `Deploy-Route-Rule: scale-out`.
    ScaleOut,
    /// `start_instance()`.
    PreWarm,
    /// `release_instance` of the n-th known instance.
    ReleaseInstance(usize),
    /// The n-th held lease's request ends.
    DropLease(usize),
    /// Time passes.
    Advance(u64),
    /// The n-th instance live at the provider dies.
    Kill(usize),
    /// Later creates fail (no capacity), later readiness waits fail, or neither.
    Failures { create: bool, ready: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        2 => Just(Op::ScaleOut),
        2 => Just(Op::PreWarm),
        1 => (0usize..8).prop_map(Op::ReleaseInstance),
        3 => (0usize..8).prop_map(Op::DropLease),
        4 => (1u64..8_000).prop_map(Op::Advance),
        1 => (0usize..8).prop_map(Op::Kill),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(create, ready)| Op::Failures { create, ready }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    max: u32,
    min: u32,
    concurrency_limit: u32,
    retention_ms: u64,
    create_ms: u64,
    ready_ms: u64,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1u32..=4,
        0u32..=2,
        0u32..=2,
        500u64..5_000,
        0u64..2_000,
        0u64..3_000,
    )
        .prop_flat_map(|(max, min, limit, retention, create, ready)| {
            prop::collection::vec(op(), 1..40).prop_map(move |ops| Case {
                max,
                min: min.min(max),
                concurrency_limit: limit,
                retention_ms: retention,
                create_ms: create,
                ready_ms: ready,
                ops,
            })
        })
}

fn spawn_request(c: &Controller, leases: &Arc<Mutex<Vec<Lease>>>, scale: bool) -> JoinHandle<()> {
    let (c, leases) = (c.clone(), leases.clone());
    tokio::spawn(async move {
        let result = if scale {
            c.acquire(scale_out).await
        } else {
            c.acquire(default_route).await
        };
        if let Ok(lease) = result {
            leases.lock().push(lease);
        }
    })
}

async fn run(case: Case) {
    let p = FakeProvider::with_delays(
        Duration::from_millis(case.create_ms),
        Duration::from_millis(case.ready_ms),
    );
    let mut cfg = config(case.max);
    cfg.min_instances = case.min;
    cfg.concurrency_limit = case.concurrency_limit;
    cfg.idle_retention = Duration::from_millis(case.retention_ms);
    cfg.start_timeout = Duration::from_secs(10);
    let wait_timeout = Duration::from_secs(5);
    cfg.queue.timeout = wait_timeout;
    cfg.queue.max_waiting = 8;
    let c = controller(cfg, &p);
    let max = case.max as usize;
    let leases: Arc<Mutex<Vec<Lease>>> = Arc::default();
    let mut requests: Vec<(Instant, JoinHandle<()>)> = Vec::new();

    for op in case.ops {
        match op {
            Op::Acquire => requests.push((Instant::now(), spawn_request(&c, &leases, false))),
            Op::ScaleOut => requests.push((Instant::now(), spawn_request(&c, &leases, true))),
            Op::PreWarm => {
                let _ = c.start_instance();
            }
            Op::ReleaseInstance(n) => {
                let known = c.instances();
                if !known.is_empty() {
                    let _ = c.release_instance(known[n % known.len()].id);
                }
            }
            Op::DropLease(n) => {
                let lease = {
                    let mut held = leases.lock();
                    let len = held.len();
                    (len > 0).then(|| held.remove(n % len))
                };
                drop(lease);
            }
            Op::Advance(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::Kill(n) => {
                let live = p.live();
                if !live.is_empty() {
                    p.kill(live[n % live.len()]);
                }
            }
            Op::Failures { create, ready } => {
                p.fail_create(create.then(|| ProviderError::NoCapacity("full".to_owned())));
                p.fail_ready(ready.then(|| ProviderError::StartFailed {
                    reason: "exited with status 1".to_owned(),
                    last_log: Vec::new(),
                }));
            }
        }
        settle().await;
        assert!(c.instances().len() <= max, "controller over the cap");
        assert!(
            p.live().len() <= max,
            "provider over the cap: {:?}",
            p.live()
        );
        for (began, request) in &requests {
            assert!(
                began.elapsed() <= wait_timeout || request.is_finished(),
                "a request waited {:?}, past the wait timeout",
                began.elapsed()
            );
        }
    }

    // Requests end, then the deployment shuts down: nothing may stay live at the provider.
    let held = std::mem::take(&mut *leases.lock());
    drop(held);
    let shutdown = tokio::time::timeout(
        Duration::from_secs(3_600),
        c.shutdown(Duration::from_secs(30)),
    )
    .await;
    assert!(shutdown.is_ok(), "shutdown hung: {:?}", c.instances());
    for (_, request) in requests {
        let finished = tokio::time::timeout(Duration::from_secs(3_600), request).await;
        assert!(finished.is_ok(), "a request hung after shutdown");
    }
    drop(std::mem::take(&mut *leases.lock()));
    settle().await;

    assert!(
        p.high_water() <= max,
        "high water {} > {max}",
        p.high_water()
    );
    assert!(p.live().is_empty(), "leaked: {:?}", p.live());
    assert!(c.instances().is_empty());
    for id in p.created() {
        assert_eq!(p.releases_of(id), 1, "{id} released once");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn live_instances_never_exceed_max_and_shutdown_leaks_none(case in case()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(case));
    }
}
