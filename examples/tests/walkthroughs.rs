//! The seed's two walkthroughs, end to end through a real gateway on loopback with the
//! local-process provider: real child processes, real sockets.
//!
//! 1. A text-to-speech API (the `speech` example, standing in for BreezyVoice) behind
//!    `/d/speech/`: a JSON POST with `Authorization: Bearer sk-template` comes back as a WAV
//!    file; after the idle retention period the instance is released and the deployment goes
//!    from `Running` back to `Standby`.
//! 2. `python3 -m http.server {port}` with at most two instances: scale-out twice, the third
//!    is refused with 1007; random and round-robin spread over both; an instance id targets
//!    exactly that instance; unknown ids and an empty deployment answer 1006.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{DeployConfig, DeploymentStatus, GpuProvider};
use autodeploy_examples::speech::WavInfo;
use autodeploy_provider::{Local, LocalConfig};
use autodeploy_proxy::{Gateway, GatewaySettings, Serving};
use tokio::net::TcpListener;

const QUOTA: &str = r#"{"code": 1007, "msg": "deployment replica quota exceeded"}"#;
const NOT_FOUND: &str = r#"{"code": 1006, "msg": "route target not found"}"#;

/// A gateway serving on loopback; dropping it stops the gateway, and the local provider
/// (without a state directory) kills whatever it still runs.
struct Running {
    base: String,
    gateway: Gateway,
    serving: Serving,
}

impl Running {
    async fn start(deployments: Vec<DeployConfig>) -> Self {
        let local = Local::new(LocalConfig::default()).expect("local provider");
        let mut builder = Gateway::builder()
            .settings(GatewaySettings {
                drain_timeout: Duration::from_secs(5),
                ..GatewaySettings::default()
            })
            .provider("local", Arc::new(local) as Arc<dyn GpuProvider>);
        for d in deployments {
            builder = builder.deployment(d);
        }
        let gateway = builder.build().await.expect("gateway");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let serving = gateway.spawn(listener);
        Self {
            base,
            gateway,
            serving,
        }
    }

    /// Stops the gateway; every instance is released before this returns.
    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(20), self.serving.stop())
            .await
            .expect("gateway stops in time");
        for controller in self.gateway.controllers() {
            assert!(controller.instances().is_empty(), "all released");
        }
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A GET of `url` with an optional `Deploy-Route-Rule`: status, `Deploy-Route-Target`, body.
async fn get(url: &str, rule: Option<String>) -> (u16, Option<String>, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(rule) = rule {
        req = req.header("Deploy-Route-Rule", rule);
    }
    let resp = req.send().await.expect("response");
    let status = resp.status().as_u16();
    let target = resp
        .headers()
        .get("deploy-route-target")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    (status, target, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn walkthrough_1_speech_behind_the_link_then_released_when_idle() {
    let mut config = DeployConfig::new(
        "speech",
        format!("exec {} --port {{port}}", env!("CARGO_BIN_EXE_speech")),
        Duration::from_millis(800),
        5,
    );
    config.env = BTreeMap::from([("SPEECH_API_KEY".into(), "sk-template".into())]);
    config.readiness.path = Some("/health".into());
    config.start_timeout = Duration::from_secs(20);
    let gw = Running::start(vec![config]).await;
    let controller = gw.gateway.controller("speech").expect("deployment");
    assert_eq!(controller.status(), DeploymentStatus::Standby);

    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/d/speech/v1/audio/speech", gw.base))
        .header("Authorization", "Bearer sk-template")
        .json(&serde_json::json!({
            "model": "breezyvoice",
            "input": "今天天氣很好",
            "voice": "default"
        }))
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    let target = resp.headers()["deploy-route-target"]
        .to_str()
        .unwrap()
        .to_owned();
    let wav = resp.bytes().await.unwrap();
    let info = WavInfo::parse(&wav).expect("a valid WAV file");
    assert!(info.samples > 0 && info.duration() > Duration::from_millis(100));
    assert_eq!(controller.status(), DeploymentStatus::Running);

    // The key belongs to the service: a wrong one is its own 401, passed through untouched,
    // from the same instance.
    let resp = client
        .post(format!("{}/d/speech/v1/audio/speech", gw.base))
        .header("Authorization", "Bearer wrong")
        .json(&serde_json::json!({"input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["deploy-route-target"], target.as_str());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body.get("error").is_some(), "the service's own error shape");

    // Idle retention passes: the instance is released, the deployment is on standby.
    eventually("idle release", || {
        controller.status() == DeploymentStatus::Standby
    })
    .await;
    assert_eq!(controller.released_count(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn walkthrough_2_http_server_with_two_instances_and_every_route_rule() {
    let config = DeployConfig::new(
        "files",
        "exec python3 -m http.server {port} --bind 127.0.0.1",
        Duration::from_secs(180),
        2,
    );
    let gw = Running::start(vec![config]).await;
    let url = format!("{}/d/files/", gw.base);
    let send = |rule: Option<&str>| get(&url, rule.map(str::to_owned));

    // An empty deployment has no target for random, round-robin or an id.
    for rule in ["random", "round-robin", "xykemlvy"] {
        let (status, _, body) = send(Some(rule)).await;
        assert_eq!((status, body.as_str()), (404, NOT_FOUND), "{rule}");
    }

    let (s1, a, listing) = send(Some("scale-out")).await;
    assert_eq!(s1, 200);
    assert!(listing.contains("Directory listing"), "python answered");
    let (s2, b, _) = send(Some("scale-out")).await;
    assert_eq!(s2, 200);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a, b);
    let (s3, _, body) = send(Some("scale-out")).await;
    assert_eq!((s3, body.as_str()), (429, QUOTA));

    let mut random = HashSet::new();
    for _ in 0..30 {
        random.insert(send(Some("random")).await.1.unwrap());
    }
    assert_eq!(random, HashSet::from([a.clone(), b.clone()]));
    let mut turns = Vec::new();
    for _ in 0..4 {
        turns.push(send(Some("round-robin")).await.1.unwrap());
    }
    assert_ne!(turns[0], turns[1]);
    assert_eq!((&turns[0], &turns[1]), (&turns[2], &turns[3]));

    for id in [&a, &b] {
        let (status, target, _) = send(Some(id)).await;
        assert_eq!((status, target.as_deref()), (200, Some(id.as_str())));
    }
    let (status, _, body) = send(Some("zzzzzzzz")).await;
    assert_eq!((status, body.as_str()), (404, NOT_FOUND));
    gw.stop().await;
}
