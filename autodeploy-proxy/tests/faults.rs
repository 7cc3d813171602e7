//! Faults, with the simulated provider and with real local processes: an instance that dies
//! mid-request, a provider that cannot create, an instance that never becomes ready, and a
//! thousand concurrent requests over every route rule while instances crash at random.
//!
//! Each test prints what it measured (`cargo test --test faults -- --nocapture`).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autodeploy_core::{DeployConfig, DeploymentStatus, GpuProvider};
use autodeploy_provider::{Local, LocalConfig, Simulated, SimulatedConfig};
use autodeploy_proxy::GatewaySettings;
use futures_util::StreamExt;
use serde_json::Value;
use support::local::{MarkerGuard, marked_processes, marker, python_service};
use support::{TestGateway, client, deployment, eventually, sim};

/// The gateway's JSON error code of a response body, if it is one.
fn code_of(body: &str) -> Option<u64> {
    serde_json::from_str::<Value>(body).ok()?["code"].as_u64()
}

fn target(resp: &reqwest::Response) -> String {
    resp.headers()["deploy-route-target"]
        .to_str()
        .expect("ascii target")
        .to_owned()
}

fn held(sim: &Simulated) -> Vec<String> {
    sim.instances().iter().map(|i| i.to_string()).collect()
}

async fn in_flight(gw: &TestGateway, id: &str) {
    let controller = gw.controller(id);
    eventually("a request in flight", || {
        controller.instances().iter().any(|i| i.in_flight > 0)
    })
    .await;
}

#[tokio::test]
async fn a_simulated_instance_killed_mid_request_answers_1010_and_is_replaced() {
    let gw = TestGateway::start(
        sim(Duration::from_millis(20)),
        vec![deployment("d", 2, Duration::from_secs(60))],
    )
    .await;
    let first = client().get(gw.url("/d/d/")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let victim = target(&first);

    let slow = tokio::spawn(client().get(gw.url("/d/d/sleep?ms=2000")).send());
    in_flight(&gw, "d").await;
    let killed = Instant::now();
    let victim_id = victim.parse().unwrap();
    assert!(gw.sim.kill(victim_id).await);
    let resp = slow.await.unwrap().expect("the gateway answers");
    let answered_after = killed.elapsed();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!((status, code_of(&body)), (502, Some(1010)), "{body}");
    assert!(
        answered_after < Duration::from_millis(500),
        "{answered_after:?}"
    );

    // Marked failed, released at the provider, forgotten by the controller.
    let controller = gw.controller("d");
    eventually("the dead instance is released", || {
        !held(&gw.sim).contains(&victim) && gw.sim.released() == 1
    })
    .await;
    let released_after = killed.elapsed();
    assert!(controller.instances().iter().all(|i| i.id != victim_id));

    let next = client().get(gw.url("/d/d/")).send().await.unwrap();
    assert_eq!(next.status(), 200);
    assert_ne!(target(&next), victim, "served by a new instance");
    eprintln!(
        "simulated kill mid-request: 502/1010 after {answered_after:?}, released at the provider \
         after {released_after:?}, next request served by a new instance"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_simulated_instance_killed_mid_stream_cuts_the_body_and_frees_the_instance() {
    let gw = TestGateway::start(
        sim(Duration::from_millis(20)),
        vec![deployment("d", 2, Duration::from_secs(60))],
    )
    .await;
    let resp = client()
        .get(gw.url("/d/d/stream?chunks=50&interval_ms=100"))
        .send()
        .await
        .unwrap();
    // The headers (200) were sent before the fault: the gateway cannot turn it into a 502.
    assert_eq!(resp.status(), 200);
    let victim = target(&resp);
    let mut body = resp.bytes_stream();
    body.next()
        .await
        .expect("a first event")
        .expect("no error yet");

    let killed = Instant::now();
    assert!(gw.sim.kill(victim.parse().unwrap()).await);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match body.next().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) => return true,
                None => return false,
            }
        }
    })
    .await
    .expect("the cut body ends promptly");
    let cut_after = killed.elapsed();
    assert!(
        ended,
        "the client sees an error, not a clean end of the body"
    );
    assert!(cut_after < Duration::from_millis(500), "{cut_after:?}");
    eventually("the dead instance is released", || {
        !held(&gw.sim).contains(&victim)
    })
    .await;
    let next = client().get(gw.url("/d/d/")).send().await.unwrap();
    assert_eq!(next.status(), 200);
    assert_ne!(target(&next), victim);
    eprintln!("simulated kill mid-stream: body cut (client error) after {cut_after:?}");
    gw.stop().await;
}

/// A gateway whose deployment `d` runs real processes through the local provider.
async fn local_gateway(command: String, marker: &str, start_timeout: Duration) -> TestGateway {
    let local = Local::new(LocalConfig {
        release_grace: Duration::from_secs(1),
        ..LocalConfig::default()
    })
    .unwrap();
    let mut config = DeployConfig::new("d", command, Duration::from_secs(60), 2);
    config.provider = "local".into();
    config.start_timeout = start_timeout;
    config.queue.timeout = Duration::from_secs(20);
    config
        .env
        .insert("AUTODEPLOY_TEST_MARKER".into(), marker.to_owned());
    TestGateway::with_providers(
        GatewaySettings::default(),
        sim(Duration::ZERO),
        vec![("local", Arc::new(local) as Arc<dyn GpuProvider>)],
        vec![config],
    )
    .await
}

#[tokio::test]
async fn a_local_process_killed_with_sigkill_mid_request_answers_1010_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let marker = marker("sigkill");
    let _guard = MarkerGuard(marker.clone());
    let gw = local_gateway(python_service(dir.path()), &marker, Duration::from_secs(20)).await;

    let first = client().get(gw.url("/d/d/")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let victim = target(&first);
    let pid: i32 = first.text().await.unwrap().parse().unwrap();
    assert_eq!(marked_processes(&marker), vec![pid]);

    let slow = tokio::spawn(client().get(gw.url("/d/d/sleep?ms=5000")).send());
    in_flight(&gw, "d").await;
    // Give the request time to reach the process before it dies.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let resp = slow.await.unwrap().expect("the gateway answers");
    let answered_after = killed.elapsed();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!((status, code_of(&body)), (502, Some(1010)), "{body}");
    assert!(
        answered_after < Duration::from_secs(1),
        "{answered_after:?}"
    );

    let controller = gw.controller("d");
    eventually("the dead instance is released", || {
        controller.released_count() == 1 && controller.instances().is_empty()
    })
    .await;
    let released_after = killed.elapsed();
    let next = client().get(gw.url("/d/d/")).send().await.unwrap();
    assert_eq!(next.status(), 200);
    assert_ne!(target(&next), victim);
    let new_pid: i32 = next.text().await.unwrap().parse().unwrap();
    assert_ne!(new_pid, pid);
    assert_eq!(marked_processes(&marker), vec![new_pid]);
    eprintln!(
        "local SIGKILL mid-request: 502/1010 after {answered_after:?}, released after \
         {released_after:?}, next request served by a new process"
    );
    gw.stop().await;
    assert!(marked_processes(&marker).is_empty());
}

#[tokio::test]
async fn a_failing_create_answers_every_waiter_at_once_and_returns_to_standby() {
    let sim = Arc::new(
        Simulated::new(
            SimulatedConfig::default()
                .failure_probability(1.0)
                .boot_time(Duration::from_millis(50))
                .seed(3),
        )
        .unwrap(),
    );
    let gw = TestGateway::start(sim, vec![deployment("d", 2, Duration::from_secs(60))]).await;
    // One client for all: building one (TLS roots included) costs more than the start.
    let http = client();
    let began = Instant::now();
    let waiters: Vec<_> = (0..20)
        .map(|_| tokio::spawn(http.get(gw.url("/d/d/")).send()))
        .collect();
    for waiter in waiters {
        let resp = waiter.await.unwrap().unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!((status, code_of(&body)), (502, Some(1004)), "{body}");
    }
    let answered_after = began.elapsed();
    // The queue would hold them for 20 s; a failed start answers at once.
    assert!(
        answered_after < Duration::from_secs(2),
        "{answered_after:?}"
    );
    let controller = gw.controller("d");
    eventually("back to Standby", || {
        controller.status() == DeploymentStatus::Standby && gw.sim.live() == 0
    })
    .await;
    // No retry loop behind the clients' backs: nothing is created while nobody asks.
    let creates = gw.sim.created();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gw.sim.created(), creates);
    assert_eq!(controller.status(), DeploymentStatus::Standby);
    eprintln!(
        "provider create failing: 20 waiters got 502/1004 within {answered_after:?}, {} create \
         call(s), status Standby",
        gw.sim
            .calls()
            .iter()
            .filter(|c| matches!(c, autodeploy_provider::simulated::Call::Create { .. }))
            .count()
    );
    gw.stop().await;
}

#[tokio::test]
async fn no_capacity_at_the_provider_answers_1011_and_returns_to_standby() {
    let sim = Arc::new(Simulated::new(SimulatedConfig::default().capacity(1).seed(3)).unwrap());
    let gw = TestGateway::start(
        sim,
        vec![
            deployment("a", 1, Duration::from_secs(60)),
            deployment("b", 1, Duration::from_secs(60)),
        ],
    )
    .await;
    assert_eq!(
        client().get(gw.url("/d/a/")).send().await.unwrap().status(),
        200
    );
    let began = Instant::now();
    let resp = client().get(gw.url("/d/b/")).send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!((status, code_of(&body)), (503, Some(1011)), "{body}");
    assert!(began.elapsed() < Duration::from_secs(1));
    let controller = gw.controller("b");
    eventually("b back to Standby", || {
        controller.status() == DeploymentStatus::Standby
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn a_simulated_instance_that_never_becomes_ready_times_out_with_1005_and_is_released() {
    let gw = TestGateway::start(sim(Duration::from_secs(3600)), {
        let mut d = deployment("d", 1, Duration::from_secs(60));
        d.start_timeout = Duration::from_millis(300);
        vec![d]
    })
    .await;
    let http = client();
    let began = Instant::now();
    let waiters: Vec<_> = (0..5)
        .map(|_| tokio::spawn(http.get(gw.url("/d/d/")).send()))
        .collect();
    for waiter in waiters {
        let resp = waiter.await.unwrap().unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!((status, code_of(&body)), (504, Some(1005)), "{body}");
    }
    let answered_after = began.elapsed();
    assert!(
        answered_after < Duration::from_secs(2),
        "{answered_after:?}"
    );
    let controller = gw.controller("d");
    eventually("released and Standby", || {
        gw.sim.live() == 0 && controller.status() == DeploymentStatus::Standby
    })
    .await;
    eprintln!("simulated never ready: 504/1005 after {answered_after:?}, released");
    gw.stop().await;
}

#[tokio::test]
async fn a_local_process_that_never_listens_times_out_with_1005_and_is_killed() {
    let marker = marker("never-ready");
    let _guard = MarkerGuard(marker.clone());
    let gw = local_gateway("exec sleep 30".into(), &marker, Duration::from_millis(500)).await;
    let began = Instant::now();
    let resp = client().get(gw.url("/d/d/")).send().await.unwrap();
    let answered_after = began.elapsed();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!((status, code_of(&body)), (504, Some(1005)), "{body}");
    assert!(
        answered_after < Duration::from_secs(3),
        "{answered_after:?}"
    );
    let controller = gw.controller("d");
    eventually("the process is killed", || {
        marked_processes(&marker).is_empty() && controller.instances().is_empty()
    })
    .await;
    let killed_after = began.elapsed();
    assert_eq!(controller.status(), DeploymentStatus::Standby);
    eprintln!(
        "local never ready: 504/1005 after {answered_after:?}, process gone after {killed_after:?}"
    );
    gw.stop().await;
}

/// Counts panics anywhere in this test binary from the moment it is installed.
fn count_panics() -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_over_every_rule_with_crashing_instances_all_end() {
    const MAX: u32 = 4;
    let panics = count_panics();
    let sim = Arc::new(
        Simulated::new(
            SimulatedConfig::default()
                .boot_time_range(Duration::from_millis(10), Duration::from_millis(60))
                .crash_after_requests(60)
                .seed(11),
        )
        .unwrap(),
    );
    let mut config = deployment("s", MAX, Duration::from_secs(60));
    config.concurrency_limit = 40;
    config.queue.max_waiting = 2000;
    config.queue.timeout = Duration::from_secs(10);
    config.start_timeout = Duration::from_secs(5);
    // Every client here shares one address: lift the per-client scale-out limit so that
    // scale-out keeps pressing on the cap.
    let settings = autodeploy_proxy::GatewaySettings {
        scale_out_limit: autodeploy_proxy::RateLimit {
            burst: 0,
            per: Duration::from_secs(60),
        },
        ..Default::default()
    };
    let gw = TestGateway::with_settings(settings, sim, vec![config]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    // Kill a random held instance every 40 ms while the requests run.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let sim = gw.sim.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut kills = 0;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let held = sim.instances();
                if !held.is_empty() {
                    n = n.wrapping_mul(31).wrapping_add(7);
                    if sim.kill(held[n % held.len()]).await {
                        kills += 1;
                    }
                }
            }
            kills
        })
    };

    let began = Instant::now();
    let requests: Vec<_> = (0..1000usize)
        .map(|i| {
            let http = http.clone();
            let url = gw.url("/d/s/work");
            let sim = gw.sim.clone();
            tokio::spawn(async move {
                let rule = match i % 6 {
                    0 | 1 => None,
                    2 => Some("scale-out".to_owned()),
                    3 => Some("random".to_owned()),
                    4 => Some("round-robin".to_owned()),
                    _ => Some(
                        sim.instances()
                            .first()
                            .map_or_else(|| "zzzzzzzz".to_owned(), |id| id.to_string()),
                    ),
                };
                let mut req = http.get(url).header("x-sim-delay-ms", (i % 50).to_string());
                if let Some(rule) = &rule {
                    req = req.header("deploy-route-rule", rule);
                }
                let sent = Instant::now();
                let outcome = match req.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        match resp.text().await {
                            Ok(_) if status == 200 => Ok(200),
                            Ok(body) => code_of(&body)
                                .map(|c| c as u16)
                                .ok_or(format!("{status} without a JSON error: {body}")),
                            // Headers sent, then the instance died: the body is cut.
                            Err(_) if status == 200 => Ok(0),
                            Err(err) => Err(format!("{status}, body failed: {err}")),
                        }
                    }
                    Err(err) => Err(format!("no answer: {err}")),
                };
                (outcome, sent.elapsed())
            })
        })
        .collect();

    let mut by_outcome = std::collections::BTreeMap::<u16, usize>::new();
    let mut slowest = Duration::ZERO;
    for request in requests {
        let (outcome, took) = request.await.expect("no request task panics");
        let code = outcome.unwrap_or_else(|e| panic!("a request did not end well: {e}"));
        *by_outcome.entry(code).or_default() += 1;
        slowest = slowest.max(took);
    }
    stop.store(true, Ordering::Relaxed);
    let kills = killer.await.unwrap();
    let total = began.elapsed();

    for code in by_outcome.keys() {
        assert!(
            [0, 200, 1004, 1006, 1007, 1009, 1010].contains(code),
            "unexpected outcome {code}: {by_outcome:?}"
        );
    }
    assert!(slowest < Duration::from_secs(12), "{slowest:?}");
    assert!(
        by_outcome.get(&200).copied().unwrap_or(0) > 100,
        "{by_outcome:?}"
    );
    assert!(
        gw.sim.max_live() <= MAX as usize,
        "max_live {}",
        gw.sim.max_live()
    );
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a panic was logged");
    eprintln!(
        "stress: 1000 requests in {total:?}, slowest {slowest:?}, outcomes {by_outcome:?} \
         (0 = body cut after headers), {kills} kills, instances created {}, max live {} <= {MAX}",
        gw.sim.created(),
        gw.sim.max_live()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_gone_during_a_cold_start_cost_one_instance_released_when_idle() {
    let gw = TestGateway::start(
        sim(Duration::from_millis(300)),
        vec![deployment("d", 4, Duration::from_millis(300))],
    )
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let clients: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(impatient.get(gw.url("/d/d/")).send()))
        .collect();
    for client in clients {
        assert!(
            client.await.unwrap().is_err(),
            "gave up before the instance was ready"
        );
    }
    let controller = gw.controller("d");
    eventually(
        "the unused instance is released after the idle period",
        || gw.sim.live() == 0 && controller.status() == DeploymentStatus::Standby,
    )
    .await;
    assert_eq!(
        gw.sim.created(),
        1,
        "at most one create for the whole burst"
    );
    gw.stop().await;
}
