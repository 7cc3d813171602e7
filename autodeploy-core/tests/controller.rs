//! The per-deployment controller, specified on tokio's paused clock against a fake provider:
//! cold start, quota, queue, idle release, draining, failed starts, warm pool, cost, deaths
//! and shutdown.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{
    Controller, DeploymentStatus, ErrorCode, GatewayError, InstanceState, Lease, ProviderError,
    Target,
};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use support::{
    CREATE, FakeProvider, READY, RETENTION, Recorder, advance, config, controller, default_route,
    scale_out, settle,
};

const MS: Duration = Duration::from_millis(1);

fn spawn_acquire(c: &Controller) -> JoinHandle<Result<Lease, GatewayError>> {
    let c = c.clone();
    tokio::spawn(async move { c.acquire(default_route).await })
}

fn spawn_scale_out(c: &Controller) -> JoinHandle<Result<Lease, GatewayError>> {
    let c = c.clone();
    tokio::spawn(async move { c.acquire(scale_out).await })
}

fn code(result: Result<Lease, GatewayError>) -> u16 {
    result.expect_err("an error").code.code()
}

fn state_of(c: &Controller, lease: &Lease) -> Option<InstanceState> {
    c.instances()
        .into_iter()
        .find(|i| i.id == lease.instance())
        .map(|i| i.state)
}

// --- single-flight cold start ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn hundred_concurrent_requests_at_standby_start_one_instance() {
    let p = FakeProvider::new();
    let c = controller(config(5), &p);
    assert_eq!(c.status(), DeploymentStatus::Standby);

    let mut requests = JoinSet::new();
    for _ in 0..100 {
        let c = c.clone();
        requests.spawn(async move { c.acquire(default_route).await });
    }
    settle().await;
    assert_eq!(
        c.status(),
        DeploymentStatus::Idle,
        "one instance is starting"
    );
    assert_eq!(c.queue_depth(), 100);

    let mut leases = Vec::new();
    while let Some(joined) = requests.join_next().await {
        leases.push(joined.unwrap().unwrap());
    }
    let served_by: BTreeSet<_> = leases.iter().map(Lease::instance).collect();
    assert_eq!(p.creates(), 1);
    assert_eq!(served_by.len(), 1);
    assert!(leases.iter().all(|l| l.waited() == Some(CREATE + READY)));
    assert_eq!(c.status(), DeploymentStatus::Running);
    assert_eq!(c.instances()[0].in_flight, 100);
    assert_eq!(c.queue_depth(), 0);
}

// --- quota ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn scale_out_at_cap_answers_1007_with_the_exact_body() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    let first = spawn_scale_out(&c).await.unwrap().unwrap();
    let second = spawn_scale_out(&c).await.unwrap().unwrap();
    assert_ne!(
        first.instance(),
        second.instance(),
        "each scale-out gets its own instance"
    );
    assert_eq!(p.creates(), 2);

    let began = Instant::now();
    let err = c.acquire(scale_out).await.unwrap_err();
    assert_eq!(began.elapsed(), Duration::ZERO, "answered at once");
    assert_eq!(err.code, ErrorCode::ReplicaQuotaExceeded);
    assert_eq!(err.http_status(), 429);
    assert_eq!(
        err.to_json(),
        r#"{"code": 1007, "msg": "deployment replica quota exceeded"}"#
    );
    assert_eq!(p.creates(), 2);
}

#[tokio::test(start_paused = true)]
async fn starting_instances_count_against_the_cap() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    let ready = spawn_scale_out(&c).await.unwrap().unwrap();
    let starting = spawn_scale_out(&c);
    settle().await;
    assert_eq!(c.view().starting(), 1);
    assert_eq!(c.view().live(), 2);

    assert_eq!(code(c.acquire(scale_out).await), 1007);
    assert_eq!(c.start_instance().unwrap_err().code.code(), 1007);
    assert_eq!(p.creates(), 2);

    let second = starting.await.unwrap().unwrap();
    assert_ne!(second.instance(), ready.instance());
}

#[tokio::test(start_paused = true)]
async fn pre_warm_at_cap_answers_1007() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    let a = c.start_instance().unwrap();
    let b = c.start_instance().unwrap();
    assert_ne!(a, b);
    let err = c.start_instance().unwrap_err();
    assert_eq!(
        err.to_json(),
        r#"{"code": 1007, "msg": "deployment replica quota exceeded"}"#
    );
    settle().await;
    assert_eq!(p.creates(), 2);

    // Pre-warmed instances serve requests once ready, without another start.
    tokio::time::sleep(CREATE + READY).await;
    let lease = c.acquire(default_route).await.unwrap();
    assert!([a, b].contains(&lease.instance()));
    assert_eq!(p.creates(), 2);
}

// --- queue bound and wait timeout ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn one_request_over_max_waiting_gets_1008_at_once() {
    let p = FakeProvider::new();
    let mut cfg = config(1);
    cfg.queue.max_waiting = 3;
    let c = controller(cfg, &p);
    let waiting: Vec<_> = (0..3).map(|_| spawn_acquire(&c)).collect();
    settle().await;
    assert_eq!(c.queue_depth(), 3);

    let began = Instant::now();
    let err = c.acquire(default_route).await.unwrap_err();
    assert_eq!(began.elapsed(), Duration::ZERO);
    assert_eq!(err.code, ErrorCode::QueueFull);
    assert_eq!(err.http_status(), 503);

    for w in waiting {
        w.await.unwrap().unwrap();
    }
    assert_eq!(p.creates(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_request_gets_1009_at_exactly_the_queue_timeout() {
    let p = FakeProvider::with_delays(CREATE, Duration::from_secs(60));
    let mut cfg = config(1);
    cfg.queue.timeout = Duration::from_secs(10);
    let c = controller(cfg, &p);
    let waiting = spawn_acquire(&c);
    settle().await;

    advance(Duration::from_secs(10) - MS).await;
    assert!(
        !waiting.is_finished(),
        "still waiting 1 ms before the timeout"
    );
    advance(MS).await;
    assert!(waiting.is_finished(), "answered at the timeout");
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.code, ErrorCode::QueueTimedOut);
    assert_eq!(c.queue_depth(), 0);
}

// --- idle release ------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn idle_instance_is_released_at_exactly_the_retention_period() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    let lease = c.acquire(default_route).await.unwrap();
    let id = lease.instance();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Serving for 10 s is not being idle for 10 s.
    assert_eq!(c.instances()[0].idle_for, Duration::ZERO);
    assert_eq!(c.instances()[0].in_flight, 1);
    drop(lease);
    settle().await;
    assert_eq!(c.status(), DeploymentStatus::Running);

    advance(RETENTION - MS).await;
    assert_eq!(c.status(), DeploymentStatus::Running);
    assert_eq!(
        p.releases(),
        0,
        "not released 1 ms before the retention period"
    );
    assert_eq!(c.instances()[0].idle_for, RETENTION - MS);

    advance(MS).await;
    assert_eq!(p.releases_of(id), 1, "released at the retention period");
    assert!(c.instances().is_empty());
    assert_eq!(c.status(), DeploymentStatus::Standby);
    assert_eq!(c.released_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_release_the_provider_refuses_is_retried_until_it_succeeds() {
    let p = FakeProvider::new();
    let c = controller(config(1), &p);
    drop(c.acquire(default_route).await.unwrap());
    p.fail_releases(8);
    advance(RETENTION).await;
    // Eight refusals, 200 ms doubling (the eighth at 25.4 s): the instance stays on the
    // books, counted against the cap and shown with its error, until the provider confirms.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(p.releases(), 8);
    assert_eq!(p.live_now(), 1);
    let info = c.instances();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].state, autodeploy_core::InstanceState::Releasing);
    assert!(
        info[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("release failed")
    );
    assert_eq!(c.status(), DeploymentStatus::Idle);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(p.releases(), 9);
    assert_eq!(p.live_now(), 0);
    assert!(c.instances().is_empty());
    assert_eq!(c.status(), DeploymentStatus::Standby);
}

#[tokio::test(start_paused = true)]
async fn ready_instance_nobody_used_is_released_one_retention_period_after_ready() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    c.start_instance().unwrap();
    tokio::time::sleep(CREATE + READY).await;
    settle().await;
    assert_eq!(c.status(), DeploymentStatus::Running);

    advance(RETENTION - MS).await;
    assert_eq!(p.releases(), 0);
    advance(MS).await;
    assert_eq!(p.releases(), 1);
    assert_eq!(c.status(), DeploymentStatus::Standby);
}

#[tokio::test(start_paused = true)]
async fn idle_clock_restarts_when_the_lease_is_dropped_not_when_acquired() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    let lease = c.acquire(default_route).await.unwrap();
    let held = RETENTION / 2;
    tokio::time::sleep(held).await;
    drop(lease);
    settle().await;

    // A clock started at acquire would release here.
    advance(RETENTION - held).await;
    assert_eq!(p.releases(), 0);
    advance(held - MS).await;
    assert_eq!(p.releases(), 0);
    advance(MS).await;
    assert_eq!(p.releases(), 1);
}

// --- no release while in flight ------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn instance_serving_a_request_outlives_the_retention_period() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    let lease = c.acquire(default_route).await.unwrap();
    advance(RETENTION * 3).await;
    assert_eq!(p.releases(), 0);
    assert_eq!(state_of(&c, &lease), Some(InstanceState::Ready));

    drop(lease);
    settle().await;
    advance(RETENTION - MS).await;
    assert_eq!(p.releases(), 0);
    advance(MS).await;
    assert_eq!(p.releases(), 1);
    assert_eq!(c.status(), DeploymentStatus::Standby);
}

#[tokio::test(start_paused = true)]
async fn release_instance_while_in_flight_drains_and_releases_when_the_lease_drops() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    let lease = c.acquire(default_route).await.unwrap();
    let id = lease.instance();

    c.release_instance(id).unwrap();
    settle().await;
    assert_eq!(state_of(&c, &lease), Some(InstanceState::Draining));
    assert!(
        c.view().ready().is_empty(),
        "a draining instance takes no new requests"
    );
    assert_eq!(c.status(), DeploymentStatus::Idle);
    advance(RETENTION * 2).await;
    assert_eq!(
        p.releases(),
        0,
        "not released while its request is in flight"
    );

    drop(lease);
    settle().await;
    assert_eq!(p.releases_of(id), 1);
    assert!(c.instances().is_empty());
    assert_eq!(c.status(), DeploymentStatus::Standby);
}

#[tokio::test(start_paused = true)]
async fn release_instance_of_an_unknown_id_is_1006() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    let id = "xykemlvy".parse().unwrap();
    assert_eq!(c.release_instance(id).unwrap_err().code.code(), 1006);
}

// --- failed starts ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn failed_start_fails_every_waiter_promptly_and_releases_the_instance() {
    let p = FakeProvider::with_delays(Duration::ZERO, Duration::from_secs(1));
    p.fail_ready(Some(ProviderError::StartFailed {
        reason: "exited with status 1".to_owned(),
        last_log: vec!["ModuleNotFoundError: No module named 'torch'".to_owned()],
    }));
    let mut cfg = config(3);
    cfg.start_timeout = Duration::from_secs(300);
    cfg.queue.timeout = Duration::from_secs(300);
    let c = controller(cfg, &p);

    let began = Instant::now();
    let waiters: Vec<_> = (0..5).map(|_| spawn_acquire(&c)).collect();
    for w in waiters {
        let err = w.await.unwrap().unwrap_err();
        assert_eq!(err.code, ErrorCode::InstanceStartFailed);
        assert!(err.msg.contains("No module named 'torch'"), "{}", err.msg);
    }
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(1),
        "at the failure, not the timeout"
    );
    settle().await;
    assert_eq!(p.creates(), 1);
    let id = p.created()[0];
    assert_eq!(p.releases_of(id), 1);
    assert!(p.live().is_empty());
    assert!(c.instances().is_empty());
    assert_eq!(c.status(), DeploymentStatus::Standby);
}

#[tokio::test(start_paused = true)]
async fn create_without_capacity_answers_1011_and_releases() {
    let p = FakeProvider::new();
    p.fail_create(Some(ProviderError::NoCapacity("no free H100".to_owned())));
    let c = controller(config(2), &p);
    let began = Instant::now();
    let err = c.acquire(default_route).await.unwrap_err();
    assert_eq!(began.elapsed(), CREATE);
    assert_eq!(err.code, ErrorCode::NoCapacity);
    assert_eq!(err.http_status(), 503);
    settle().await;
    assert_eq!(p.releases_of(p.created()[0]), 1);
    assert!(c.instances().is_empty());
}

#[tokio::test(start_paused = true)]
async fn scale_out_whose_start_fails_gets_the_start_error() {
    let p = FakeProvider::new();
    p.fail_create(Some(ProviderError::NoCapacity("no free H100".to_owned())));
    let c = controller(config(2), &p);
    assert_eq!(code(c.acquire(scale_out).await), 1011);
}

#[tokio::test(start_paused = true)]
async fn readiness_that_never_completes_answers_1005_after_the_start_timeout_and_releases() {
    let p = FakeProvider::new();
    p.never_ready(true);
    let mut cfg = config(2);
    cfg.start_timeout = Duration::from_secs(30);
    cfg.queue.timeout = Duration::from_secs(120);
    let c = controller(cfg, &p);
    let began = Instant::now();
    let err = c.acquire(default_route).await.unwrap_err();
    let after = began.elapsed();
    assert_eq!(err.code, ErrorCode::InstanceStartTimedOut);
    assert!(
        after >= Duration::from_secs(30) && after <= Duration::from_secs(40),
        "gave up after {after:?}"
    );
    settle().await;
    assert_eq!(p.releases_of(p.created()[0]), 1);
    assert!(p.live().is_empty());
    assert_eq!(c.status(), DeploymentStatus::Standby);
}

#[tokio::test(start_paused = true)]
async fn failed_start_beside_a_busy_instance_leaves_its_waiters_to_that_instance() {
    let p = FakeProvider::new();
    let mut cfg = config(2);
    cfg.concurrency_limit = 1;
    let c = controller(cfg, &p);
    let busy = c.acquire(default_route).await.unwrap();

    p.fail_create(Some(ProviderError::NoCapacity("no free H100".to_owned())));
    let waiter = spawn_acquire(&c);
    advance(CREATE).await;
    assert_eq!(p.creates(), 2);
    assert_eq!(p.releases(), 1, "the failed instance is released");
    assert!(
        !waiter.is_finished(),
        "the busy instance can still serve it"
    );

    let busy_id = busy.instance();
    drop(busy);
    let lease = waiter.await.unwrap().unwrap();
    assert_eq!(lease.instance(), busy_id);
}

#[tokio::test(start_paused = true)]
async fn failed_start_leaves_its_waiters_to_another_starting_instance() {
    let p = FakeProvider::with_delays(Duration::ZERO, Duration::from_secs(1));
    p.fail_ready(Some(ProviderError::StartFailed {
        reason: "exited with status 1".to_owned(),
        last_log: Vec::new(),
    }));
    let c = controller(config(2), &p);
    let waiters: Vec<_> = (0..3).map(|_| spawn_acquire(&c)).collect();
    advance(Duration::from_millis(500)).await;
    let failing = p.created()[0];
    p.set_delays(Duration::ZERO, Duration::from_secs(3));
    let healthy = c.start_instance().unwrap();

    advance(Duration::from_millis(500)).await;
    assert_eq!(p.releases_of(failing), 1);
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "kept for {healthy}"
    );

    p.fail_ready(None);
    for w in waiters {
        assert_eq!(w.await.unwrap().unwrap().instance(), healthy);
    }
    assert_eq!(p.creates(), 2);
}

// --- warm pool -------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn warm_pool_of_two_starts_at_build_and_outlives_the_retention_period() {
    let p = FakeProvider::new();
    let mut cfg = config(4);
    cfg.min_instances = 2;
    let c = controller(cfg, &p);
    settle().await;
    assert_eq!(p.creates(), 2);

    tokio::time::sleep(CREATE + READY).await;
    settle().await;
    assert_eq!(c.view().ready().len(), 2);
    advance(RETENTION * 5).await;
    assert_eq!(p.releases(), 0);
    assert_eq!(c.view().ready().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn warm_instance_that_dies_is_replaced() {
    let p = FakeProvider::new();
    let mut cfg = config(4);
    cfg.min_instances = 2;
    let c = controller(cfg, &p);
    tokio::time::sleep(CREATE + READY).await;
    settle().await;
    let dead = p.created()[0];

    p.kill(dead);
    settle().await;
    assert_eq!(p.releases_of(dead), 1);
    assert_eq!(p.creates(), 3, "a replacement starts at once");
    tokio::time::sleep(CREATE + READY).await;
    settle().await;
    let ready: Vec<_> = c.view().ready().iter().map(|r| r.id).collect();
    assert_eq!(ready.len(), 2);
    assert!(!ready.contains(&dead));
}

#[tokio::test(start_paused = true)]
async fn warm_pool_at_the_cap_replaces_a_dead_instance() {
    let p = FakeProvider::new();
    let mut cfg = config(2);
    cfg.min_instances = 2;
    let c = controller(cfg, &p);
    tokio::time::sleep(CREATE + READY).await;
    settle().await;
    let dead = p.created()[0];

    p.kill(dead);
    settle().await;
    assert_eq!(p.releases_of(dead), 1);
    assert_eq!(p.creates(), 3, "the slot freed at the cap is refilled");
    tokio::time::sleep(CREATE + READY).await;
    settle().await;
    assert_eq!(c.view().ready().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn warm_pool_beyond_min_idles_down_to_min() {
    let p = FakeProvider::new();
    let mut cfg = config(4);
    cfg.min_instances = 1;
    let c = controller(cfg, &p);
    c.start_instance().unwrap();
    tokio::time::sleep(CREATE + READY).await;
    settle().await;
    assert_eq!(c.view().ready().len(), 2);
    advance(RETENTION).await;
    assert_eq!(p.releases(), 1);
    assert_eq!(c.view().ready().len(), 1);
    advance(RETENTION * 3).await;
    assert_eq!(p.releases(), 1);
}

// --- cost ------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn cost_is_price_per_hour_over_creation_to_release() {
    let p = FakeProvider::with_delays(Duration::ZERO, Duration::ZERO);
    let mut cfg = config(2);
    cfg.price_per_hour = 3.6;
    let c = controller(cfg, &p);

    let first = c.start_instance().unwrap();
    advance(Duration::from_secs(10)).await;
    c.release_instance(first).unwrap();
    settle().await;
    assert_eq!(p.releases_of(first), 1);
    assert!((c.total_cost() - 0.01).abs() < 1e-9, "{}", c.total_cost());

    c.start_instance().unwrap();
    advance(Duration::from_secs(20)).await;
    let running = &c.instances()[0];
    assert!((running.cost - 0.02).abs() < 1e-9, "{}", running.cost);
    assert!(
        (c.total_cost() - 0.03).abs() < 1e-9,
        "released plus running"
    );
    assert!((autodeploy_core::controller::cost(3.6, Duration::from_secs(10)) - 0.01).abs() < 1e-12);
}

// --- deaths ----------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn instance_dying_while_serving_is_failed_released_and_replaced_by_the_next_request() {
    let p = FakeProvider::new();
    let events = Arc::new(Recorder::default());
    let c = Controller::builder(config(2), p.clone())
        .events(events.clone())
        .build()
        .unwrap();
    let lease = c.acquire(default_route).await.unwrap();
    let dead = lease.instance();

    p.kill(dead);
    settle().await;
    assert_eq!(p.releases_of(dead), 1);
    let lines = events.lines();
    let died = lines.iter().position(|l| *l == format!("died {dead}"));
    let released = lines.iter().position(|l| *l == format!("released {dead}"));
    assert!(died.is_some() && died < released, "{lines:?}");
    assert!(c.instances().is_empty());
    drop(lease);
    settle().await;

    let next = c.acquire(default_route).await.unwrap();
    assert_ne!(next.instance(), dead);
    assert_eq!(p.creates(), 2);
}

#[tokio::test(start_paused = true)]
async fn waiters_of_a_dead_instance_are_served_by_a_replacement() {
    let p = FakeProvider::new();
    let mut cfg = config(1);
    cfg.concurrency_limit = 1;
    let c = controller(cfg, &p);
    let lease = c.acquire(default_route).await.unwrap();
    let dead = lease.instance();
    let waiter = spawn_acquire(&c);
    settle().await;
    assert_eq!(c.queue_depth(), 1);

    p.kill(dead);
    settle().await;
    assert_eq!(
        p.creates(),
        2,
        "a replacement starts for the waiting request"
    );
    let served = waiter.await.unwrap().unwrap();
    assert_ne!(served.instance(), dead);
    drop(lease);
}

// --- cancelled starts ------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn scale_out_request_is_answered_when_its_instance_is_released_before_ready() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    let request = spawn_scale_out(&c);
    settle().await;
    let id = p.created()[0];
    c.release_instance(id).unwrap();

    let began = Instant::now();
    let err = request.await.unwrap().unwrap_err();
    assert!(
        began.elapsed() <= CREATE,
        "answered once the create call returns"
    );
    assert_eq!(err.code, ErrorCode::InstanceStartFailed, "{err}");
    settle().await;
    assert_eq!(p.releases_of(id), 1);
    assert!(c.instances().is_empty());
}

// --- shutdown --------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn shutdown_releases_every_instance_and_answers_waiters_with_1015() {
    let p = FakeProvider::new();
    let mut cfg = config(3);
    cfg.concurrency_limit = 1;
    let c = controller(cfg, &p);
    let in_flight = c.acquire(default_route).await.unwrap();
    let starting = c.start_instance().unwrap();
    let waiter = spawn_acquire(&c);
    let scaling = spawn_scale_out(&c);
    settle().await;
    assert_eq!(c.queue_depth(), 1);
    assert_eq!(p.live().len(), 3);

    let shutdown = {
        let c = c.clone();
        tokio::spawn(async move { c.shutdown(Duration::from_secs(30)).await })
    };
    settle().await;
    assert_eq!(code(waiter.await.unwrap()), 1015);
    assert_eq!(code(scaling.await.unwrap()), 1015);
    assert_eq!(code(c.acquire(default_route).await), 1015);
    assert_eq!(c.start_instance().unwrap_err().code.code(), 1015);

    // The in-flight request may finish within the drain period.
    advance(Duration::from_secs(5)).await;
    assert_eq!(p.releases_of(in_flight.instance()), 0);
    drop(in_flight);
    shutdown.await.unwrap();
    assert!(
        p.live().is_empty(),
        "every instance released: {:?}",
        p.live()
    );
    assert_eq!(p.releases_of(starting), 1);
    assert!(c.instances().is_empty());
    assert_eq!(c.status(), DeploymentStatus::Standby);
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_in_flight_instances_after_the_drain_period() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    let in_flight = c.acquire(default_route).await.unwrap();
    let began = Instant::now();
    c.shutdown(Duration::from_secs(30)).await;
    assert_eq!(began.elapsed(), Duration::from_secs(30));
    assert!(p.live().is_empty());
    drop(in_flight);
}

// --- reconciliation ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn reconcile_releases_instances_left_by_an_earlier_run() {
    let p = FakeProvider::new();
    let earlier = controller(config(2), &p);
    let orphan = earlier.start_instance().unwrap();
    tokio::time::sleep(CREATE + READY).await;
    drop(earlier);

    let c = controller(config(2), &p);
    let mine = c.start_instance().unwrap();
    settle().await;
    assert_eq!(c.reconcile().await.unwrap(), vec![orphan]);
    assert_eq!(p.releases_of(orphan), 1);
    assert_eq!(p.releases_of(mine), 0);
}

#[tokio::test(start_paused = true)]
async fn reconcile_releases_every_orphan_even_when_one_release_fails() {
    let p = FakeProvider::new();
    let earlier = controller(config(3), &p);
    let orphans: Vec<_> = (0..3).map(|_| earlier.start_instance().unwrap()).collect();
    tokio::time::sleep(CREATE + READY).await;
    drop(earlier);

    let c = controller(config(3), &p);
    p.fail_releases(1);
    let released = c.reconcile().await.unwrap();
    assert_eq!(
        released.len(),
        2,
        "the two others are released: {released:?}"
    );
    assert!(released.iter().all(|id| orphans.contains(id)));
    assert_eq!(
        p.live_now(),
        1,
        "the refused one is left for the next reconcile"
    );
    assert_eq!(c.reconcile().await.unwrap().len(), 1);
    assert_eq!(p.live_now(), 0);
}

// --- routing targets ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn reject_and_unknown_targets_are_answered_at_once() {
    let p = FakeProvider::new();
    let c = controller(config(2), &p);
    let err = c
        .acquire(|_| Target::Reject(ErrorCode::RouteTargetNotFound))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_json(),
        r#"{"code": 1006, "msg": "route target not found"}"#
    );
    let unknown = "xykemlvy".parse().unwrap();
    assert_eq!(code(c.acquire(|_| Target::Instance(unknown)).await), 1006);
    assert_eq!(p.creates(), 0);
}
