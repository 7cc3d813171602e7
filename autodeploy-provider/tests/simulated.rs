//! Specifications of the simulated provider: its instances answer over real sockets, and its
//! boot time, failures, crashes, capacity and call records behave as configured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{
    DeployConfig, Endpoint, GpuProvider, InstanceId, InstanceSpec, ProviderError,
};
use autodeploy_provider::simulated::{Call, INSTANCE_HEADER};
use autodeploy_provider::{Simulated, SimulatedConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::time::{self, Instant, timeout};

const PATIENCE: Duration = Duration::from_secs(10);

fn spec(deployment: &str, id: InstanceId) -> InstanceSpec {
    let config = DeployConfig::new(deployment, "serve", Duration::from_secs(60), 5);
    InstanceSpec::from_config(&config, id)
}

fn id(n: u32) -> InstanceId {
    format!("inst{n:04}").parse().expect("a valid id")
}

fn url(endpoint: &Endpoint, path: &str) -> String {
    format!("http://{endpoint}{path}")
}

/// Creates and readies one instance of `demo`.
async fn started(sim: &Simulated, n: u32) -> Endpoint {
    let endpoint = sim.create(spec("demo", id(n))).await.expect("created");
    sim.wait_ready(id(n)).await.expect("ready");
    endpoint
}

/// Creates and readies one instance; `Err` says which step failed.
async fn start(sim: &Simulated, instance: InstanceId) -> Result<(), &'static str> {
    match sim.create(spec("demo", instance)).await {
        Err(ProviderError::StartFailed { .. }) => Err("create"),
        Err(other) => panic!("unexpected create error {other}"),
        Ok(_) => match sim.wait_ready(instance).await {
            Ok(()) => Ok(()),
            Err(ProviderError::StartFailed { .. }) => Err("ready"),
            Err(other) => panic!("unexpected readiness error {other}"),
        },
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get_json(url: String) -> (reqwest::StatusCode, String, Value) {
    let response = client().get(url).send().await.expect("an answer");
    let status = response.status();
    let instance = response
        .headers()
        .get(INSTANCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.bytes().await.expect("a body");
    (
        status,
        instance,
        serde_json::from_slice(&body).expect("JSON"),
    )
}

async fn connect_refused(endpoint: &Endpoint) -> bool {
    let addr: SocketAddr = endpoint.to_string().parse().expect("an address");
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[test]
fn config_reads_from_toml_with_human_durations() {
    let config: SimulatedConfig = toml::from_str(
        r#"
        boot_time = "200ms"
        boot_time_max = "2s"
        failure_probability = 0.25
        crash_after_requests = 100
        response_delay = "5ms"
        seed = 7
        capacity = 4
        price_per_hour = 1.5
        "#,
    )
    .expect("valid config");
    assert_eq!(config.boot_time, Duration::from_millis(200));
    assert_eq!(config.boot_time_max, Some(Duration::from_secs(2)));
    assert_eq!(config.failure_probability, 0.25);
    assert_eq!(config.crash_after_requests, Some(100));
    assert_eq!(config.response_delay, Duration::from_millis(5));
    assert_eq!(config.seed, 7);
    assert_eq!(config.capacity, Some(4));
    assert_eq!(config.price_per_hour, 1.5);
    assert_eq!(
        toml::from_str::<SimulatedConfig>("").ok(),
        Some(SimulatedConfig::default())
    );
    assert!(toml::from_str::<SimulatedConfig>("boot_tme = \"1s\"").is_err());
    assert!(Simulated::new(SimulatedConfig::default().failure_probability(2.0)).is_err());
}

#[tokio::test]
async fn server_reports_its_instance_id_and_what_it_received() {
    let sim = Simulated::default();
    let endpoint = started(&sim, 1).await;

    let (status, instance, body) = get_json(url(&endpoint, "/v1/models?x=1")).await;
    assert_eq!(status, 200);
    assert_eq!(instance, "inst0001");
    assert_eq!(body["instance"], "inst0001");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/v1/models");
    assert_eq!(body["query"], "x=1");

    let response = client()
        .post(url(&endpoint, "/v1/audio/speech"))
        .header("authorization", "Bearer sk-template")
        .body(vec![b'a'; 12_345])
        .send()
        .await
        .expect("an answer");
    let body: Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["body_len"], 12_345);
    assert_eq!(body["headers"]["authorization"], "Bearer sk-template");
    assert_eq!(sim.requests_served(id(1)), Some(2));
}

#[tokio::test]
async fn echo_streams_the_request_body_back() {
    let sim = Simulated::default();
    let endpoint = started(&sim, 1).await;
    let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let response = client()
        .post(url(&endpoint, "/echo"))
        .header("content-type", "audio/wav")
        .body(sent.clone())
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.headers()["content-type"], "audio/wav");
    assert_eq!(response.headers()[INSTANCE_HEADER], "inst0001");
    assert!(response.bytes().await.expect("body") == sent);
}

#[tokio::test]
async fn stream_sends_its_first_chunk_before_the_last_is_produced() {
    let sim = Simulated::default();
    let endpoint = started(&sim, 1).await;
    let began = Instant::now();
    let mut response = client()
        .get(url(&endpoint, "/stream?chunks=3&interval_ms=1000"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let first = response
        .chunk()
        .await
        .expect("a chunk")
        .expect("not the end");
    assert!(
        began.elapsed() < Duration::from_millis(1000),
        "first chunk came late"
    );
    assert!(first.starts_with(b"data: "));
    let mut events = first.windows(2).filter(|w| w == b"\n\n").count();
    while let Some(chunk) = response.chunk().await.expect("a chunk") {
        events += chunk.windows(2).filter(|w| w == b"\n\n").count();
    }
    assert_eq!(events, 3);
    assert!(began.elapsed() >= Duration::from_millis(2000));
}

#[tokio::test]
async fn bytes_sends_n_zeros_with_a_length() {
    let sim = Simulated::default();
    let endpoint = started(&sim, 1).await;
    let response = client()
        .get(url(&endpoint, "/bytes?n=200000"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.content_length(), Some(200_000));
    let body = response.bytes().await.expect("body");
    assert_eq!(body.len(), 200_000);
    assert!(body.iter().all(|b| *b == 0));
}

#[tokio::test]
async fn status_answers_the_asked_code_and_bad_values_400() {
    let sim = Simulated::default();
    let endpoint = started(&sim, 1).await;
    let (status, instance, body) = get_json(url(&endpoint, "/status?code=503")).await;
    assert_eq!((status.as_u16(), instance.as_str()), (503, "inst0001"));
    assert_eq!(body["path"], "/status");
    let (status, _, body) = get_json(url(&endpoint, "/status?code=soon")).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("code")));
}

#[tokio::test]
async fn sleep_and_response_delay_hold_the_answer() {
    let sim =
        Simulated::new(SimulatedConfig::default().response_delay(Duration::from_millis(1000)))
            .expect("valid");
    let endpoint = started(&sim, 1).await;
    let began = Instant::now();
    let _ = get_json(url(&endpoint, "/sleep?ms=100")).await;
    assert!(began.elapsed() >= Duration::from_millis(1100));

    let began = Instant::now();
    let response = client()
        .get(url(&endpoint, "/"))
        .header("x-sim-delay-ms", "0")
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    assert!(began.elapsed() < Duration::from_millis(1000));
}

#[tokio::test]
async fn websocket_on_ws_echoes_messages() {
    use tokio_tungstenite::tungstenite::Message;
    let sim = Simulated::default();
    let endpoint = started(&sim, 1).await;
    let (mut socket, response) = tokio_tungstenite::connect_async(format!("ws://{endpoint}/ws"))
        .await
        .expect("a websocket");
    assert_eq!(response.headers()[INSTANCE_HEADER], "inst0001");
    socket.send(Message::text("hello")).await.expect("sent");
    socket
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("sent");
    assert_eq!(
        socket.next().await.expect("open").expect("ok"),
        Message::text("hello")
    );
    assert_eq!(
        socket.next().await.expect("open").expect("ok"),
        Message::binary(vec![1u8, 2, 3])
    );
    socket.close(None).await.expect("closed");
}

#[tokio::test]
async fn a_booting_instance_answers_503() {
    let sim = Simulated::new(SimulatedConfig::default().boot_time(Duration::from_secs(60)))
        .expect("valid");
    let endpoint = sim.create(spec("demo", id(1))).await.expect("created");
    let (status, instance, body) = get_json(url(&endpoint, "/")).await;
    assert_eq!((status.as_u16(), instance.as_str()), (503, "inst0001"));
    assert_eq!(body["error"], "booting");
    assert_eq!(sim.requests_served(id(1)), Some(0));
}

#[tokio::test(start_paused = true)]
async fn boot_time_is_honoured_on_the_paused_clock() {
    let boot = Duration::from_secs(2);
    let sim = Arc::new(Simulated::new(SimulatedConfig::default().boot_time(boot)).expect("valid"));
    let began = Instant::now();
    sim.create(spec("demo", id(1))).await.expect("created");
    let waiting = tokio::spawn({
        let sim = Arc::clone(&sim);
        async move { sim.wait_ready(id(1)).await }
    });
    time::advance(boot - Duration::from_millis(1)).await;
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "ready before the boot time");
    time::advance(Duration::from_millis(1)).await;
    waiting.await.expect("joined").expect("ready");
    assert_eq!(began.elapsed(), boot);

    // A second instance, waited for without advancing by hand: the clock jumps to its boot.
    let began = Instant::now();
    sim.create(spec("demo", id(2))).await.expect("created");
    sim.wait_ready(id(2)).await.expect("ready");
    assert_eq!(began.elapsed(), boot);
}

#[tokio::test(start_paused = true)]
async fn boot_times_are_drawn_within_the_range_and_repeat_with_the_seed() {
    let (min, max) = (Duration::from_millis(100), Duration::from_millis(5_000));
    let run = || async {
        let sim = Simulated::new(SimulatedConfig::default().boot_time_range(min, max).seed(3))
            .expect("valid");
        let mut boots = Vec::new();
        for n in 0..8 {
            let began = Instant::now();
            started(&sim, n).await;
            boots.push(began.elapsed());
        }
        boots
    };
    let first = run().await;
    assert!(first.iter().all(|b| (min..=max).contains(b)), "{first:?}");
    assert!(
        first.iter().any(|b| *b != first[0]),
        "all boots equal: {first:?}"
    );
    assert_eq!(run().await, first);
}

#[tokio::test(start_paused = true)]
async fn a_boot_longer_than_the_start_timeout_times_out() {
    let sim = Simulated::new(SimulatedConfig::default().boot_time(Duration::from_secs(600)))
        .expect("valid");
    let mut spec = spec("demo", id(1));
    spec.start_timeout = Duration::from_secs(30);
    let began = Instant::now();
    sim.create(spec).await.expect("created");
    match sim.wait_ready(id(1)).await {
        Err(ProviderError::StartTimedOut {
            after, last_log, ..
        }) => {
            assert_eq!(after, Duration::from_secs(30));
            assert!(!last_log.is_empty());
        }
        other => panic!("expected a start timeout, got {other:?}"),
    }
    assert_eq!(began.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn failure_probability_one_fails_every_start_and_leaves_nothing_after_release() {
    let sim = Simulated::new(SimulatedConfig::default().failure_probability(1.0)).expect("valid");
    let mut phases = Vec::new();
    for n in 0..20 {
        let failed = start(&sim, id(n)).await.expect_err("every start fails");
        phases.push(failed);
        sim.release(id(n)).await.expect("released");
    }
    assert!(
        phases.contains(&"create") && phases.contains(&"ready"),
        "{phases:?}"
    );
    assert_eq!(sim.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn failure_probability_zero_never_fails() {
    let sim = Simulated::default();
    for n in 0..20 {
        start(&sim, id(n)).await.expect("every start succeeds");
    }
    assert_eq!((sim.created(), sim.live()), (20, 20));
}

#[tokio::test(start_paused = true)]
async fn seeded_failures_repeat_across_runs() {
    let run = |seed| async move {
        let sim = Simulated::new(
            SimulatedConfig::default()
                .failure_probability(0.5)
                .seed(seed),
        )
        .expect("valid");
        let mut outcomes = Vec::new();
        for n in 0..32 {
            outcomes.push(start(&sim, id(n)).await);
        }
        outcomes
    };
    let first = run(42).await;
    assert!(
        first.iter().any(Result::is_ok) && first.iter().any(Result::is_err),
        "{first:?}"
    );
    assert_eq!(run(42).await, first);
    assert_ne!(run(43).await, first);
}

#[tokio::test]
async fn a_failed_boot_reports_start_failed_with_the_log_and_exits() {
    // Seed 0 with probability 1: find an instance that fails at readiness, not at create.
    let sim = Simulated::new(SimulatedConfig::default().failure_probability(1.0)).expect("valid");
    for n in 0..20 {
        let Ok(endpoint) = sim.create(spec("demo", id(n))).await else {
            continue;
        };
        match sim.wait_ready(id(n)).await {
            Err(ProviderError::StartFailed { reason, last_log }) => {
                assert!(reason.contains("boot"), "{reason}");
                assert!(!last_log.is_empty());
            }
            other => panic!("expected a start failure, got {other:?}"),
        }
        assert!(connect_refused(&endpoint).await);
        let report = timeout(PATIENCE, sim.wait_exit(id(n)))
            .await
            .expect("exited");
        assert!(report.reason.contains("boot"));
        return;
    }
    panic!("no start failed at readiness");
}

#[tokio::test]
async fn crash_after_n_requests_serves_n_then_exits_and_refuses() {
    let sim = Arc::new(
        Simulated::new(SimulatedConfig::default().crash_after_requests(3)).expect("valid"),
    );
    let endpoint = started(&sim, 1).await;
    let exit = tokio::spawn({
        let sim = Arc::clone(&sim);
        async move { sim.wait_exit(id(1)).await }
    });
    for _ in 0..3 {
        let (status, instance, _) = get_json(url(&endpoint, "/")).await;
        assert_eq!((status.as_u16(), instance.as_str()), (200, "inst0001"));
    }
    let report = timeout(PATIENCE, exit)
        .await
        .expect("exited")
        .expect("joined");
    assert!(report.reason.contains("3 requests"), "{}", report.reason);
    assert!(client().get(url(&endpoint, "/")).send().await.is_err());
    assert!(connect_refused(&endpoint).await);
    // It stays held until the gateway releases it.
    assert_eq!(sim.live(), 1);
    sim.release(id(1)).await.expect("released");
    assert_eq!(sim.live(), 0);
}

#[tokio::test]
async fn kill_drops_open_connections_and_resolves_wait_exit() {
    let sim = Arc::new(Simulated::default());
    let endpoint = started(&sim, 1).await;
    let in_flight = tokio::spawn(client().get(url(&endpoint, "/sleep?ms=30000")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sim.kill(id(1)).await);
    let answer = timeout(PATIENCE, in_flight)
        .await
        .expect("ended")
        .expect("joined");
    assert!(answer.is_err(), "the open request should fail");
    let report = timeout(PATIENCE, sim.wait_exit(id(1)))
        .await
        .expect("exited");
    assert_eq!(report.reason, "killed");
    assert!(connect_refused(&endpoint).await);
    assert!(!sim.kill(id(9)).await);
}

#[tokio::test]
async fn capacity_is_enforced_with_no_capacity() {
    let sim = Simulated::new(SimulatedConfig::default().capacity(2)).expect("valid");
    started(&sim, 1).await;
    started(&sim, 2).await;
    assert!(matches!(
        sim.create(spec("demo", id(3))).await,
        Err(ProviderError::NoCapacity(_))
    ));
    sim.release(id(1)).await.expect("released");
    started(&sim, 3).await;
    assert_eq!((sim.created(), sim.max_live(), sim.live()), (3, 2, 2));
}

#[tokio::test]
async fn release_closes_the_port_and_is_idempotent() {
    let sim = Simulated::default();
    let endpoint = started(&sim, 1).await;
    assert!(!connect_refused(&endpoint).await);
    sim.release(id(1)).await.expect("released");
    assert!(connect_refused(&endpoint).await);
    sim.release(id(1)).await.expect("released again");
    sim.release(id(7))
        .await
        .expect("an unknown id releases fine");
    assert_eq!((sim.created(), sim.released(), sim.live()), (1, 1, 0));
    let report = timeout(PATIENCE, sim.wait_exit(id(1)))
        .await
        .expect("resolves at once");
    assert_eq!(report.reason, "released");
}

#[tokio::test]
async fn a_retried_create_returns_the_same_instance() {
    let sim = Simulated::default();
    let first = sim.create(spec("demo", id(1))).await.expect("created");
    let again = sim.create(spec("demo", id(1))).await.expect("created");
    assert_eq!(first, again);
    assert_eq!((sim.created(), sim.live()), (1, 1));
}

#[tokio::test]
async fn list_reports_the_live_instances_of_one_deployment() {
    let sim = Simulated::default();
    let a = started(&sim, 1).await;
    sim.create(spec("other", id(2))).await.expect("created");
    let listed = sim.list("demo").await.expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id(1));
    assert_eq!(listed[0].endpoint, Some(a));
    assert_eq!(
        listed[0].labels[autodeploy_core::provider::LABEL_DEPLOYMENT],
        "demo"
    );
    sim.release(id(1)).await.expect("released");
    assert!(sim.list("demo").await.expect("listed").is_empty());
    assert!(!sim.logs(id(2), 10).is_empty());
}

#[tokio::test(start_paused = true)]
async fn calls_are_recorded_in_order_with_their_times() {
    let sim = Simulated::new(SimulatedConfig::default().boot_time(Duration::from_secs(5)))
        .expect("valid");
    let t0 = Instant::now();
    sim.create(spec("demo", id(1))).await.expect("created");
    sim.wait_ready(id(1)).await.expect("ready");
    time::advance(Duration::from_secs(1)).await;
    sim.list("demo").await.expect("listed");
    sim.release(id(1)).await.expect("released");
    let calls = sim.calls();
    assert_eq!(
        calls,
        vec![
            Call::Create {
                deployment: "demo".into(),
                instance: id(1),
                at: t0
            },
            Call::WaitReady {
                instance: id(1),
                at: t0
            },
            Call::List {
                deployment: "demo".into(),
                at: t0 + Duration::from_secs(6)
            },
            Call::Release {
                instance: id(1),
                at: t0 + Duration::from_secs(6)
            },
        ]
    );
    assert_eq!(calls[0].instance(), Some(id(1)));
    assert_eq!(calls[3].at(), t0 + Duration::from_secs(6));
}
