//! Backlog-driven scale-out, cancelled starts, budgets and idle waste (issue 12), specified
//! on tokio's paused clock against the simulated provider, with the default rule's decision
//! and scale policy from autodeploy-routing, as the gateway wires them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{
    BudgetLimit, Controller, DeployConfig, ErrorCode, GatewayError, GpuProvider, InstanceState,
    Lease, RouteView, Target, controller::SharedBudget,
};
use autodeploy_provider::simulated::Call;
use autodeploy_provider::{Simulated, SimulatedConfig};
use autodeploy_routing::{Backlog, RoundRobin, RouteRule};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

const BOOT: Duration = Duration::from_secs(1);
const SERVICE: Duration = Duration::from_millis(200);
const RETENTION: Duration = Duration::from_secs(60);

fn sim(boot: Duration) -> Arc<Simulated> {
    Arc::new(Simulated::new(SimulatedConfig::default().boot_time(boot).seed(7)).unwrap())
}

fn config(max: u32, limit: u32) -> DeployConfig {
    let mut config = DeployConfig::new("burst", "simulated", RETENTION, max);
    config.provider = "simulated".into();
    config.concurrency_limit = limit;
    config.queue.timeout = Duration::from_secs(600);
    config
}

fn controller(config: DeployConfig, sim: &Arc<Simulated>) -> Controller {
    let provider: Arc<dyn GpuProvider> = sim.clone();
    Controller::builder(config, provider)
        .scale_policy(Arc::new(Backlog))
        .build()
        .unwrap()
}

fn default_rule(view: &RouteView) -> Target {
    autodeploy_routing::decide(
        RouteRule::Default,
        view,
        &mut rand::rng(),
        &mut RoundRobin::new(),
    )
}

fn scale_out(view: &RouteView) -> Target {
    autodeploy_routing::decide(
        RouteRule::ScaleOut,
        view,
        &mut rand::rng(),
        &mut RoundRobin::new(),
    )
}

/// Lets every runnable task run without moving the paused clock.
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// The times of the create calls, relative to `t0`.
fn create_times(sim: &Simulated, t0: Instant) -> Vec<Duration> {
    sim.calls()
        .iter()
        .filter_map(|c| match c {
            Call::Create { at, .. } => Some(*at - t0),
            _ => None,
        })
        .collect()
}

/// `n` requests through the default rule, each holding its lease for `service`; resolves to
/// when the last one finished.
async fn burst(c: &Controller, n: usize, service: Duration) -> Duration {
    let t0 = Instant::now();
    let mut requests = JoinSet::new();
    for _ in 0..n {
        let c = c.clone();
        requests.spawn(async move {
            let lease = c.acquire(default_rule).await.expect("served");
            sleep(service).await;
            drop(lease);
        });
    }
    while let Some(done) = requests.join_next().await {
        done.unwrap();
    }
    t0.elapsed()
}

// --- backlog-driven scale-out ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn burst_of_120_at_standby_with_limit_4_and_max_3_starts_3_instances_at_once() {
    let sim = sim(BOOT);
    let c = controller(config(3, 4), &sim);
    let t0 = Instant::now();
    let took = burst(&c, 120, SERVICE).await;
    assert_eq!(create_times(&sim, t0), [Duration::ZERO; 3]);
    // Boot 1 s, then 120 requests 12 at a time, 0.2 s each: 1 + 10 × 0.2 s.
    assert_eq!(took, BOOT + SERVICE * 10);
    c.shutdown(Duration::ZERO).await;
    assert_eq!(sim.released(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_same_burst_with_max_1_takes_twice_as_long_and_more() {
    let sim = sim(BOOT);
    let c = controller(config(1, 4), &sim);
    let took = burst(&c, 120, SERVICE).await;
    assert_eq!(sim.created(), 1);
    assert_eq!(took, BOOT + SERVICE * 30);
}

#[tokio::test(start_paused = true)]
async fn burst_without_a_concurrency_limit_starts_one_instance() {
    let sim = sim(BOOT);
    let c = controller(config(3, 0), &sim);
    let took = burst(&c, 120, SERVICE).await;
    assert_eq!(sim.created(), 1);
    assert_eq!(took, BOOT + SERVICE);
}

#[tokio::test(start_paused = true)]
async fn a_queue_still_long_when_the_first_instance_is_ready_starts_more() {
    // One start at a time (a cloud that rate-limits creates): the burst starts one; when it
    // is ready the queue is still long, and the next starts then, and the next after it.
    let sim = sim(BOOT);
    let mut cfg = config(3, 4);
    cfg.scale_out_step = 1;
    let c = controller(cfg, &sim);
    let t0 = Instant::now();
    burst(&c, 120, SERVICE).await;
    assert_eq!(create_times(&sim, t0), [Duration::ZERO, BOOT, BOOT * 2]);
}

#[tokio::test(start_paused = true)]
async fn starting_instances_count_toward_the_need() {
    let sim = sim(Duration::from_secs(10));
    let c = controller(config(5, 4), &sim);
    let mut waiting = Vec::new();
    for n in 1..=8u64 {
        let c2 = c.clone();
        waiting.push(tokio::spawn(async move { c2.acquire(default_rule).await }));
        settle().await;
        assert_eq!(sim.created(), n.div_ceil(4), "after {n} requests");
    }
    // Nothing changes while they boot: no over-start.
    tokio::time::advance(Duration::from_secs(5)).await;
    settle().await;
    assert_eq!(sim.created(), 2);
    assert_eq!(c.view().starting(), 2);
    for w in waiting {
        w.await.unwrap().expect("served");
    }
    assert_eq!(sim.created(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_released_instance_is_replaced_while_the_backlog_needs_it() {
    let sim = sim(BOOT);
    let c = controller(config(2, 1), &sim);
    let first = c.acquire(default_rule).await.unwrap();
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move { c.acquire(default_rule).await })
    };
    settle().await;
    assert_eq!(sim.created(), 2);
    let second = waiting.await.unwrap().unwrap();
    // The second instance is released by hand while a third request waits for it.
    let third = {
        let c = c.clone();
        tokio::spawn(async move { c.acquire(default_rule).await })
    };
    settle().await;
    c.release_instance(second.instance()).unwrap();
    drop(second);
    let third = third.await.unwrap().unwrap();
    assert_eq!(sim.created(), 3);
    assert_ne!(third.instance(), first.instance());
}

// --- cancel a start nobody waits for -------------------------------------------------------

async fn waiting_requests(c: &Controller, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let _ = c.acquire(default_rule).await;
        }));
    }
    settle().await;
    tasks
}

fn starting(c: &Controller) -> usize {
    c.instances()
        .iter()
        .filter(|i| matches!(i.state, InstanceState::Creating | InstanceState::Starting))
        .count()
}

#[tokio::test(start_paused = true)]
async fn cancel_unwanted_releases_a_starting_instance_when_its_waiters_leave() {
    let sim = sim(Duration::from_secs(120));
    let mut cfg = config(3, 0);
    cfg.cancel_unwanted_starts = true;
    let c = controller(cfg, &sim);
    let tasks = waiting_requests(&c, 2).await;
    assert_eq!(sim.created(), 1);

    tasks[0].abort();
    settle().await;
    assert_eq!(starting(&c), 1, "one request still waits for it");
    assert_eq!(sim.released(), 0);

    tasks[1].abort();
    settle().await;
    assert_eq!(sim.released(), 1, "released long before its boot ends");
    assert!(c.instances().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancel_unwanted_keeps_what_the_remaining_backlog_needs() {
    let sim = sim(Duration::from_secs(120));
    let mut cfg = config(3, 4);
    cfg.cancel_unwanted_starts = true;
    let c = controller(cfg, &sim);
    let tasks = waiting_requests(&c, 8).await;
    assert_eq!(sim.created(), 2);
    for t in &tasks[..5] {
        t.abort();
    }
    settle().await;
    assert_eq!(sim.released(), 1, "3 waiting requests need one instance");
    assert_eq!(starting(&c), 1);
}

#[tokio::test(start_paused = true)]
async fn without_cancel_unwanted_a_start_is_kept_until_idle() {
    let sim = sim(Duration::from_secs(120));
    let c = controller(config(3, 0), &sim);
    let tasks = waiting_requests(&c, 2).await;
    for t in &tasks {
        t.abort();
    }
    settle().await;
    assert_eq!(starting(&c), 1);
    assert_eq!(sim.released(), 0);
    sleep(Duration::from_secs(120) + RETENTION + Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(
        sim.released(),
        1,
        "released once idle for the retention period"
    );
}

// --- budgets ------------------------------------------------------------------------------

fn priced(max: u32, price: f64, budget: Option<f64>) -> DeployConfig {
    let mut cfg = config(max, 1);
    cfg.price_per_hour = price;
    cfg.budget = budget.map(|max_per_hour| BudgetLimit { max_per_hour });
    cfg
}

fn refusal(result: Result<Lease, GatewayError>) -> GatewayError {
    let err = result.expect_err("refused");
    assert_eq!(err.code, ErrorCode::BudgetExceeded);
    assert_eq!(err.to_json(), r#"{"code": 1021, "msg": "budget exceeded"}"#);
    err
}

#[tokio::test(start_paused = true)]
async fn a_start_over_the_deployment_budget_is_1021_with_503_when_nothing_is_due() {
    let sim = sim(BOOT);
    let c = controller(priced(5, 1.5, Some(4.0)), &sim);
    let a = c.acquire(scale_out).await.unwrap();
    let b = c.acquire(scale_out).await.unwrap();
    assert_eq!(c.hourly_rate(), 3.0);
    let err = refusal(c.acquire(scale_out).await);
    assert_eq!(err.http_status(), 503);
    assert_eq!(err.retry_after, None);
    assert_eq!(c.budget_refusals(), 1);
    assert_eq!(sim.created(), 2);
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn a_start_over_the_budget_is_429_with_retry_after_when_an_instance_is_due() {
    let sim = sim(BOOT);
    let c = controller(priced(5, 1.5, Some(4.0)), &sim);
    let busy = c.acquire(scale_out).await.unwrap();
    drop(c.acquire(scale_out).await.unwrap());
    sleep(Duration::from_secs(20)).await;
    // One idle for 20 s of its 60 s retention: due in 40 s.
    let err = refusal(c.acquire(scale_out).await);
    assert_eq!(err.http_status(), 429);
    assert_eq!(err.retry_after_secs(), Some(40));
    // The default rule queues behind the busy instance instead of refusing.
    drop(busy);
    assert!(c.acquire(default_rule).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_cold_start_the_budget_refuses_answers_1021_at_once() {
    let sim = sim(BOOT);
    let shared = SharedBudget::new(BudgetLimit { max_per_hour: 1.0 });
    let provider: Arc<dyn GpuProvider> = sim.clone();
    let c = Controller::builder(priced(2, 2.0, None), provider)
        .scale_policy(Arc::new(Backlog))
        .shared_budget(shared)
        .build()
        .unwrap();
    let err = refusal(c.acquire(default_rule).await);
    assert_eq!(err.http_status(), 503);
    assert_eq!(c.queue_depth(), 0);
    assert_eq!(sim.created(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_shared_budget_spans_deployments() {
    let sim = sim(BOOT);
    let shared = SharedBudget::new(BudgetLimit { max_per_hour: 5.0 });
    let build = |id: &str| {
        let mut cfg = priced(5, 2.0, None);
        cfg.id = id.into();
        let provider: Arc<dyn GpuProvider> = sim.clone();
        Controller::builder(cfg, provider)
            .scale_policy(Arc::new(Backlog))
            .shared_budget(shared.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (build("a"), build("b"));
    let held_a = a.acquire(scale_out).await.unwrap();
    let held_b = b.acquire(scale_out).await.unwrap();
    assert_eq!(shared.hourly_rate(), 4.0);
    // A's instance idles: B's refusal is told when A's is due.
    drop(held_a);
    sleep(Duration::from_secs(10)).await;
    let err = refusal(b.acquire(scale_out).await);
    assert_eq!(err.retry_after_secs(), Some(50));
    // Once A's instance is released, B may start.
    sleep(Duration::from_secs(51)).await;
    assert_eq!(shared.hourly_rate(), 2.0);
    assert!(b.acquire(scale_out).await.is_ok());
    drop(held_b);
}

// --- idle waste ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn idle_waste_is_the_cost_from_last_byte_to_release() {
    let sim = sim(BOOT);
    let mut cfg = config(1, 0);
    cfg.price_per_hour = 3600.0; // 1 per second
    let c = controller(cfg, &sim);
    let lease = c.acquire(default_rule).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    drop(lease);
    sleep(Duration::from_secs(30)).await;
    assert!((c.idle_waste() - 30.0).abs() < 1e-6, "{}", c.idle_waste());
    let lease = c.acquire(default_rule).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    drop(lease);
    sleep(RETENTION + Duration::from_secs(1)).await;
    assert_eq!(sim.released(), 1);
    // 30 s between the requests, 60 s of retention before the release.
    assert!((c.idle_waste() - 90.0).abs() < 1e-6, "{}", c.idle_waste());
    assert!((c.total_cost() - 101.0).abs() < 1e-6, "{}", c.total_cost());
}

// --- invariants under arbitrary traffic ----------------------------------------------------

mod invariants {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// Requests arrive at deployment `0` or `1`, each holding its instance for `hold` ms.
        Arrive {
            deployment: usize,
            n: usize,
            hold: u64,
            scale_out: bool,
        },
        /// Time passes.
        Wait(u64),
    }

    fn any_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (
                0..2usize,
                1..20usize,
                0..3_000u64,
                prop::bool::weighted(0.2)
            )
                .prop_map(|(deployment, n, hold, scale_out)| Step::Arrive {
                    deployment,
                    n,
                    hold,
                    scale_out
                }),
            (0..90_000u64).prop_map(Step::Wait),
        ]
    }

    struct Case {
        max: u32,
        limit: u32,
        price: f64,
        budget: f64,
        shared: f64,
        cancel: bool,
        step: u32,
        failures: f64,
    }

    fn run(case: Case, steps: Vec<Step>) -> Result<(), TestCaseError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let sim = Arc::new(
                Simulated::new(
                    SimulatedConfig::default()
                        .boot_time_range(Duration::from_millis(200), Duration::from_secs(5))
                        .failure_probability(case.failures)
                        .seed(11),
                )
                .unwrap(),
            );
            let shared = SharedBudget::new(BudgetLimit {
                max_per_hour: case.shared,
            });
            let controllers: Vec<Controller> = ["a", "b"]
                .iter()
                .map(|id| {
                    let mut cfg = priced(case.max, case.price, Some(case.budget));
                    cfg.id = (*id).into();
                    cfg.concurrency_limit = case.limit;
                    cfg.cancel_unwanted_starts = case.cancel;
                    cfg.scale_out_step = case.step;
                    cfg.queue.timeout = Duration::from_secs(8);
                    let provider: Arc<dyn GpuProvider> = sim.clone();
                    Controller::builder(cfg, provider)
                        .scale_policy(Arc::new(Backlog))
                        .shared_budget(shared.clone())
                        .build()
                        .unwrap()
                })
                .collect();
            let per_deployment = (case.budget / case.price + 1e-9).floor() as usize;
            let overall = (case.shared / case.price + 1e-9).floor() as usize;
            let mut requests = JoinSet::new();
            let check = |controllers: &[Controller]| -> Result<(), TestCaseError> {
                let mut total = 0;
                for c in controllers {
                    let live = c.instances().len();
                    prop_assert!(live <= case.max as usize, "{live} live over the cap");
                    prop_assert!(live <= per_deployment, "{live} live over the budget");
                    total += live;
                }
                prop_assert!(total <= overall, "{total} live over the shared budget");
                prop_assert!(sim.live() <= overall);
                Ok(())
            };
            for step in steps {
                match step {
                    Step::Arrive {
                        deployment,
                        n,
                        hold,
                        scale_out: so,
                    } => {
                        for _ in 0..n {
                            let c = controllers[deployment].clone();
                            requests.spawn(async move {
                                let rule = if so { scale_out } else { default_rule };
                                if let Ok(lease) = c.acquire(rule).await {
                                    sleep(Duration::from_millis(hold)).await;
                                    drop(lease);
                                }
                            });
                        }
                        settle().await;
                    }
                    Step::Wait(ms) => {
                        let end = Instant::now() + Duration::from_millis(ms);
                        while Instant::now() < end {
                            sleep(Duration::from_millis(250)).await;
                            check(&controllers)?;
                        }
                    }
                }
                check(&controllers)?;
            }
            while requests.join_next().await.is_some() {}
            for c in &controllers {
                c.shutdown(Duration::from_secs(1)).await;
            }
            prop_assert!(sim.max_live() <= overall);
            let mut creates = BTreeMap::new();
            let mut releases = BTreeMap::new();
            for call in sim.calls() {
                match call {
                    Call::Create { instance, .. } => *creates.entry(instance).or_insert(0) += 1,
                    Call::Release { instance, .. } => *releases.entry(instance).or_insert(0) += 1,
                    _ => {}
                }
            }
            prop_assert_eq!(sim.live(), 0);
            prop_assert!(creates.values().all(|n| *n == 1));
            prop_assert_eq!(
                creates.keys().collect::<Vec<_>>(),
                releases.keys().collect::<Vec<_>>()
            );
            prop_assert!(releases.values().all(|n| *n == 1), "{releases:?}");
            prop_assert_eq!(shared.hourly_rate(), 0.0);
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn live_stays_within_cap_and_budgets_and_every_instance_is_released_once(
            max in 1u32..5,
            limit in 0u32..4,
            price in prop::sample::select(vec![0.5, 1.0, 1.5]),
            budget_units in 1u32..6,
            shared_units in 1u32..8,
            cancel in any::<bool>(),
            step in 0u32..3,
            failures in prop::sample::select(vec![0.0, 0.0, 0.3]),
            steps in prop::collection::vec(any_step(), 1..12),
        ) {
            run(
                Case {
                    max,
                    limit,
                    price,
                    budget: price * f64::from(budget_units),
                    shared: price * f64::from(shared_units),
                    cancel,
                    step,
                    failures,
                },
                steps,
            )?;
        }
    }
}
