//! The link end to end over loopback sockets, with the simulated provider: route rules, exact
//! error bodies, headers, cold starts, idle release, streaming and upgrades.

mod support;

use std::time::{Duration, Instant};

use autodeploy_core::DeploymentStatus;
use futures_util::StreamExt;
use serde_json::Value;
use support::{TestGateway, client, deployment, eventually, sim};

const QUOTA: &str = r#"{"code": 1007, "msg": "deployment replica quota exceeded"}"#;
const NOT_FOUND: &str = r#"{"code": 1006, "msg": "route target not found"}"#;

async fn get(url: &str, rule: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = client().get(url);
    if let Some(rule) = rule {
        req = req.header("Deploy-Route-Rule", rule);
    }
    let resp = req.send().await.expect("response");
    let status = resp.status().as_u16();
    let target = resp
        .headers()
        .get("deploy-route-target")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, target, resp.text().await.unwrap())
}

#[tokio::test]
async fn route_rules_follow_the_seed() {
    let gw = TestGateway::start(
        sim(Duration::from_millis(50)),
        vec![deployment("files", 2, Duration::from_secs(60))],
    )
    .await;
    let url = gw.url("/d/files/");

    // Nothing runs yet: random, round-robin and ids have no target.
    for rule in ["random", "round-robin", "xykemlvy", "", "NOT AN ID"] {
        let (status, target, body) = get(&url, Some(rule)).await;
        assert_eq!((status, body.as_str()), (404, NOT_FOUND), "rule {rule:?}");
        assert_eq!(target, None);
    }

    // scale-out twice starts two instances; the third is over the quota.
    let (s1, a, _) = get(&url, Some("scale-out")).await;
    let (s2, b, _) = get(&url, Some("scale-out")).await;
    assert_eq!((s1, s2), (200, 200));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a, b);
    let (status, _, body) = get(&url, Some("scale-out")).await;
    assert_eq!((status, body.as_str()), (429, QUOTA));
    assert_eq!(gw.sim.created(), 2);

    // An instance id targets exactly that instance, and the instance agrees.
    for id in [&a, &b] {
        for _ in 0..3 {
            let (status, target, body) = get(&url, Some(id)).await;
            assert_eq!(status, 200);
            assert_eq!(target.as_deref(), Some(id.as_str()));
            let json: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["instance"], id.as_str());
        }
    }
    let (status, _, body) = get(&url, Some("zzzzzzzz")).await;
    assert_eq!((status, body.as_str()), (404, NOT_FOUND));

    // round-robin alternates; random reaches both.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(&url, Some("round-robin")).await.1.unwrap());
    }
    assert_ne!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    assert_eq!(seen[1], seen[3]);
    let mut random = std::collections::HashSet::new();
    for _ in 0..40 {
        random.insert(get(&url, Some("random")).await.1.unwrap());
    }
    assert_eq!(random.len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn unknown_deployment_is_a_json_404() {
    let gw = TestGateway::start(sim(Duration::ZERO), vec![]).await;
    let resp = client().get(gw.url("/d/nope/x")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"code": 1002, "msg": "deployment not found"}"#
    );
    // Path tricks cannot name another deployment (raw bytes: a client library would
    // normalise the dots away before sending).
    for path in [
        "/d/../api/v1/deployments",
        "/d/files%2F..%2Fx/",
        "/d//files/",
    ] {
        let answer = support::raw_request(
            &gw.base,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        assert!(answer.contains(r#"{"code": 1002"#), "{path}: {answer}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn requests_reach_the_instance_as_sent() {
    let gw = TestGateway::start(
        sim(Duration::ZERO),
        vec![deployment("echo", 1, Duration::from_secs(60))],
    )
    .await;
    let post = |rule: Option<&str>, body: &'static str| {
        let mut req = client()
            .post(gw.url("/d/echo/v1/audio/speech?lang=zh&x=1"))
            .header("Authorization", "Bearer sk-template")
            .header("Connection", "x-hop")
            .header("x-hop", "must not pass")
            .header("x-end-to-end", "kept");
        if let Some(rule) = rule {
            req = req.header("Deploy-Route-Rule", rule);
        }
        req.body(body).send()
    };
    // random with nothing running is 1006; the default rule cold-starts.
    let resp = post(Some("random"), "{}").await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = post(None, "{\"input\": \"hi\"}").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("deploy-route-target"));
    assert!(
        resp.headers().contains_key("deploy-wait-ms"),
        "cold start is marked"
    );
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/v1/audio/speech");
    assert_eq!(json["query"], "lang=zh&x=1");
    assert_eq!(json["body_len"], 15);
    let headers = &json["headers"];
    assert_eq!(headers["authorization"], "Bearer sk-template");
    assert_eq!(headers["x-end-to-end"], "kept");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(headers.get("x-hop").is_none(), "{headers}");
    assert!(headers.get("deploy-route-rule").is_none());
    // A warm request does not wait.
    let resp = client().get(gw.url("/d/echo/")).send().await.unwrap();
    assert!(!resp.headers().contains_key("deploy-wait-ms"));
    gw.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_requests_at_standby_start_at_most_two_instances() {
    let gw = TestGateway::start(
        sim(Duration::from_millis(300)),
        vec![deployment("burst", 2, Duration::from_secs(60))],
    )
    .await;
    let client = client();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let client = client.clone();
        let url = gw.url("/d/burst/sleep?ms=20");
        tasks.push(tokio::spawn(async move {
            client.get(url).send().await.unwrap().status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert!(gw.sim.created() <= 2, "created {}", gw.sim.created());
    assert!(gw.sim.max_live() <= 2);
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_instance_is_released_and_the_status_returns_to_standby() {
    let gw = TestGateway::start(
        sim(Duration::ZERO),
        vec![deployment("tts", 5, Duration::from_millis(400))],
    )
    .await;
    let controller = gw.controller("tts");
    // Built before the clock that matters starts: building a client (TLS roots included)
    // can take longer than the 400 ms retention on a loaded machine.
    let http = client();
    assert_eq!(controller.status(), DeploymentStatus::Standby);
    let (status, _, _) = get(&gw.url("/d/tts/"), None).await;
    assert_eq!(status, 200);
    assert_eq!(controller.status(), DeploymentStatus::Running);
    let api: Value = http
        .get(gw.url("/api/v1/deployments"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["deployments"][0]["status"], "Running");
    eventually("idle release", || {
        controller.status() == DeploymentStatus::Standby
    })
    .await;
    assert_eq!(gw.sim.released(), 1);
    assert_eq!(controller.released_count(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_streamed_response_arrives_chunk_by_chunk_and_holds_the_instance() {
    let gw = TestGateway::start(
        sim(Duration::ZERO),
        vec![deployment("sse", 1, Duration::from_millis(300))],
    )
    .await;
    let started = Instant::now();
    let resp = client()
        .get(gw.url("/d/sse/stream?chunks=6&interval_ms=200"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(!first.is_empty());
    let mut rest = 0;
    while let Some(chunk) = stream.next().await {
        rest += chunk.unwrap().len();
    }
    let total = started.elapsed();
    assert!(rest > 0);
    assert!(
        first_at < Duration::from_millis(500) && total >= Duration::from_millis(1000),
        "first chunk at {first_at:?}, last at {total:?}"
    );
    // The stream lasted longer than the retention period, and the instance served it whole:
    // an open stream is activity. It is released only after the stream ended.
    assert_eq!(gw.sim.released(), 0);
    eventually("idle release after the stream", || gw.sim.released() == 1).await;
    gw.stop().await;
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test]
async fn a_hundred_mib_body_streams_both_ways_without_being_buffered() {
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 400; // 100 MiB
    let gw = TestGateway::start(
        sim(Duration::ZERO),
        vec![deployment("big", 1, Duration::from_secs(60))],
    )
    .await;
    // Warm up so the baseline includes the instance and the connection pools.
    assert_eq!(get(&gw.url("/d/big/"), None).await.0, 200);
    let before = rss_bytes();
    let body = futures_util::stream::iter(
        (0..CHUNKS).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; CHUNK]))),
    );
    let resp = client()
        .post(gw.url("/d/big/echo"))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut received = 0usize;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.iter().all(|b| *b == 7));
        received += chunk.len();
    }
    assert_eq!(received, CHUNK * CHUNKS);
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 40 << 20,
        "memory grew by {} MiB for a 100 MiB body",
        grown >> 20
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_websocket_echoes_through_the_link() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let gw = TestGateway::start(
        sim(Duration::ZERO),
        vec![deployment("ws", 1, Duration::from_millis(300))],
    )
    .await;
    let url = gw.url("/d/ws/ws").replace("http://", "ws://");
    let (mut socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(response.headers().contains_key("deploy-route-target"));
    for text in ["hello", "world"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    // An open WebSocket is activity: no idle release while it lasts.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(gw.sim.released(), 0);
    socket.send(Message::text("still here")).await.unwrap();
    assert!(socket.next().await.unwrap().is_ok());
    socket.close(None).await.unwrap();
    drop(socket);
    eventually("release after the socket closed", || gw.sim.released() == 1).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_dedicated_listener_forwards_every_path_unchanged() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = deployment("own", 1, Duration::from_secs(60));
    config.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let gw = TestGateway::start(sim(Duration::ZERO), vec![config]).await;
    let resp = client()
        .get(format!("http://127.0.0.1:{port}/v1/audio/speech?q=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["path"], "/v1/audio/speech");
    assert_eq!(json["query"], "q=1");
    gw.stop().await;
}

#[tokio::test]
async fn errors_from_the_service_pass_through_untouched() {
    let gw = TestGateway::start(
        sim(Duration::ZERO),
        vec![deployment("svc", 1, Duration::from_secs(60))],
    )
    .await;
    let (status, target, body) = get(&gw.url("/d/svc/status?code=503"), None).await;
    assert_eq!(status, 503);
    assert!(target.is_some());
    let json: Value = serde_json::from_str(&body).unwrap();
    assert!(json.get("code").is_none(), "not a gateway error: {body}");
    gw.stop().await;
}

#[tokio::test]
async fn scale_out_is_rate_limited_per_client_address() {
    let settings = autodeploy_proxy::GatewaySettings {
        scale_out_limit: autodeploy_proxy::RateLimit {
            burst: 2,
            per: Duration::from_secs(60),
        },
        ..Default::default()
    };
    let gw = TestGateway::with_settings(
        settings,
        sim(Duration::ZERO),
        vec![deployment("paid", 10, Duration::from_secs(60))],
    )
    .await;
    let url = gw.url("/d/paid/");
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let first = from([127, 0, 0, 1]);
    for _ in 0..2 {
        let resp = first
            .get(&url)
            .header("Deploy-Route-Rule", "scale-out")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = first
        .get(&url)
        .header("Deploy-Route-Rule", "scale-out")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 1020);
    // Other rules are not limited, and another client has its own allowance.
    let resp = first.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = from([127, 0, 0, 2])
        .get(&url)
        .header("Deploy-Route-Rule", "scale-out")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(gw.sim.created(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn access_keys_guard_the_link_and_never_reach_the_instance() {
    const KEY_A: &str = "k3y-aaaaaaaaaaaaaaaa";
    const KEY_B: &str = "k3y-bbbbbbbbbbbbbbbb";
    let mut guarded = deployment("guarded", 2, Duration::from_secs(60));
    guarded.access_keys = vec![KEY_A.into(), KEY_B.into()];
    let gw = TestGateway::start(sim(Duration::ZERO), vec![guarded.clone()]).await;
    let post = |key: Option<&str>, rule: Option<&str>| {
        let mut req = client()
            .post(gw.url("/d/guarded/v1/audio/speech"))
            .header("Authorization", "Bearer sk-template");
        if let Some(key) = key {
            req = req.header("Deploy-Access-Key", key);
        }
        if let Some(rule) = rule {
            req = req.header("Deploy-Route-Rule", rule);
        }
        req.body("{}").send()
    };
    let refused = [
        None,
        Some(""),
        Some("k3y-aaaaaaaaaaaaaaa"),   // one short
        Some("k3y-aaaaaaaaaaaaaaaaa"), // one long
        Some("K3Y-AAAAAAAAAAAAAAAA"),  // keys are case-sensitive
        Some("Bearer k3y-aaaaaaaaaaaaaaaa"),
    ];
    for key in refused {
        for rule in [None, Some("scale-out"), Some("random")] {
            let resp = post(key, rule).await.unwrap();
            assert_eq!(resp.status(), 401, "{key:?} {rule:?}");
            assert_eq!(
                resp.text().await.unwrap(),
                r#"{"code": 1001, "msg": "unauthorized"}"#
            );
        }
    }
    // A refused request starts nothing: no instance, no cost.
    assert_eq!(gw.sim.created(), 0);
    assert_eq!(gw.controller("guarded").status(), DeploymentStatus::Standby);

    for key in [KEY_A, KEY_B] {
        let resp = post(Some(key), None).await.unwrap();
        assert_eq!(resp.status(), 200);
        let json: Value = resp.json().await.unwrap();
        let headers = &json["headers"];
        assert!(headers.get("deploy-access-key").is_none(), "{headers}");
        assert_eq!(headers["authorization"], "Bearer sk-template");
    }
    assert_eq!(gw.sim.created(), 1);

    // Keys changed at runtime apply to the next request: removed, the link is open.
    guarded.access_keys.clear();
    gw.gateway.update_deployment(guarded).unwrap();
    assert_eq!(post(None, None).await.unwrap().status(), 200);
    gw.stop().await;
}
