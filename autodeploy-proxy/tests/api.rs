//! The management API, `/metrics` and `/healthz` over loopback.

mod support;

use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::GpuProvider;
use autodeploy_provider::{Local, LocalConfig};
use autodeploy_proxy::GatewaySettings;
use serde_json::{Value, json};
use support::{TestGateway, client, deployment, eventually, sim};

const TOKEN: &str = "s3cret-token";

async fn call(
    gw: &TestGateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), gw.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn new_deployment(id: &str) -> Value {
    json!({
        "id": id,
        "provider": "simulated",
        "start_command": "simulated",
        "idle_retention": "1m",
        "max_instances": 2,
        "price_per_hour": 3.6
    })
}

#[tokio::test]
async fn every_route_but_healthz_needs_the_admin_token() {
    let settings = GatewaySettings {
        admin_token: Some(TOKEN.into()),
        ..GatewaySettings::default()
    };
    let gw = TestGateway::with_settings(
        settings,
        sim(Duration::ZERO),
        vec![deployment("a", 2, Duration::from_secs(60))],
    )
    .await;
    let routes = [
        ("GET", "/api/v1/deployments"),
        ("POST", "/api/v1/deployments"),
        ("GET", "/api/v1/deployments/a"),
        ("PUT", "/api/v1/deployments/a"),
        ("DELETE", "/api/v1/deployments/a"),
        ("GET", "/api/v1/deployments/a/instances"),
        ("POST", "/api/v1/deployments/a/instances"),
        ("GET", "/api/v1/deployments/a/instances/xykemlvy"),
        ("DELETE", "/api/v1/deployments/a/instances/xykemlvy"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/nope"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong"), Some("s3cret-tokeN"), Some("")] {
            let (status, body) = call(&gw, method, path, token, None).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}");
            assert_eq!(body, json!({"code": 1001, "msg": "unauthorized"}));
        }
    }
    let (status, _) = call(&gw, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&gw, "GET", "/api/v1/deployments", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    // The scheme's case does not matter (RFC 9110 §11.1); the token's does.
    for (value, expected) in [
        (format!("bearer {TOKEN}"), 200),
        (format!("BEARER  {TOKEN}"), 200),
        (format!("bearer {}", TOKEN.to_uppercase()), 401),
        (format!("Basic {TOKEN}"), 401),
    ] {
        let resp = client()
            .get(gw.url("/api/v1/deployments"))
            .header("Authorization", &value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), expected, "{value}");
    }
    // Nothing was changed by the refused calls.
    assert!(gw.gateway.controller("a").is_some());
    assert_eq!(gw.sim.created(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn deployments_are_created_read_updated_and_deleted_at_runtime() {
    let gw = TestGateway::start(sim(Duration::ZERO), vec![]).await;

    let (status, body) = call(
        &gw,
        "POST",
        "/api/v1/deployments",
        None,
        Some(new_deployment("tts")),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "Standby");
    assert_eq!(body["link"], "/d/tts/");

    let (status, body) = call(
        &gw,
        "POST",
        "/api/v1/deployments",
        None,
        Some(new_deployment("tts")),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (409, json!(1014)));

    // Invalid configs name every problem; bad JSON is a bad request.
    let mut bad = new_deployment("Bad_Id");
    bad["max_instances"] = json!(0);
    let (status, body) = call(&gw, "POST", "/api/v1/deployments", None, Some(bad)).await;
    assert_eq!((status, body["code"].clone()), (422, json!(1003)));
    let msg = body["msg"].as_str().unwrap();
    assert!(
        msg.contains("id:") && msg.contains("max_instances:"),
        "{msg}"
    );
    let resp = client()
        .post(gw.url("/api/v1/deployments"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (status, body) = call(
        &gw,
        "POST",
        "/api/v1/deployments",
        None,
        Some(json!({"id": "x"})),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (422, json!(1003)), "{body}");

    // The link works, and the detail shows the instance and its cost.
    let resp = client().get(gw.url("/d/tts/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (status, body) = call(&gw, "GET", "/api/v1/deployments/tts", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "Running");
    assert_eq!(body["instances"].as_array().unwrap().len(), 1);
    assert_eq!(body["instances"][0]["state"], "ready");
    assert_eq!(body["instances"][0]["served"], 1);
    assert_eq!(body["config"]["max_instances"], 2);
    assert!(body["total_cost"].as_f64().unwrap() >= 0.0);

    // Update: validated, applied at once; the id cannot change.
    let mut update = new_deployment("tts");
    update["max_instances"] = json!(3);
    let (status, body) = call(&gw, "PUT", "/api/v1/deployments/tts", None, Some(update)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"]["max_instances"], 3);
    let (status, body) = call(
        &gw,
        "PUT",
        "/api/v1/deployments/tts",
        None,
        Some(new_deployment("other")),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (422, json!(1003)));
    let (status, body) = call(
        &gw,
        "PUT",
        "/api/v1/deployments/nope",
        None,
        Some(new_deployment("nope")),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (404, json!(1002)));

    // Delete drains and releases its instances; the link is gone.
    let (status, body) = call(&gw, "DELETE", "/api/v1/deployments/tts", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.sim.live(), 0);
    let resp = client().get(gw.url("/d/tts/")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let (status, _) = call(&gw, "DELETE", "/api/v1/deployments/tts", None, None).await;
    assert_eq!(status, 404);
    gw.stop().await;
}

#[tokio::test]
async fn instances_are_pre_warmed_and_released_by_id() {
    let gw = TestGateway::start(
        sim(Duration::from_millis(50)),
        vec![deployment("warm", 2, Duration::from_secs(60))],
    )
    .await;
    let path = "/api/v1/deployments/warm/instances";
    let (status, first) = call(&gw, "POST", path, None, None).await;
    assert_eq!(status, 201, "{first}");
    let (status, _) = call(&gw, "POST", path, None, None).await;
    assert_eq!(status, 201);
    let (status, body) = call(&gw, "POST", path, None, None).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"code": 1007, "msg": "deployment replica quota exceeded"})
    );

    let id = first["id"].as_str().unwrap().to_owned();
    let controller = gw.controller("warm");
    eventually("both ready", || controller.view().ready().len() == 2).await;
    let (status, body) = call(&gw, "GET", &format!("{path}/{id}"), None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    assert!(body["last_log"].is_array());

    let (status, _) = call(&gw, "DELETE", &format!("{path}/{id}"), None, None).await;
    assert_eq!(status, 202);
    eventually("released", || gw.sim.released() == 1).await;
    for bad in ["zzzzzzzz", "NOT-AN-ID", &id] {
        let (status, body) = call(&gw, "DELETE", &format!("{path}/{bad}"), None, None).await;
        assert_eq!((status, body["code"].clone()), (404, json!(1016)), "{bad}");
    }
    let (status, body) = call(&gw, "PATCH", path, None, None).await;
    assert_eq!((status, body["code"].clone()), (405, json!(1017)));
    gw.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_cold_starts_instances_and_cost() {
    let gw = TestGateway::start(
        sim(Duration::from_millis(20)),
        vec![deployment("m", 1, Duration::from_secs(60))],
    )
    .await;
    for _ in 0..3 {
        client().get(gw.url("/d/m/")).send().await.unwrap();
    }
    client()
        .get(gw.url("/d/m/"))
        .header("Deploy-Route-Rule", "scale-out")
        .send()
        .await
        .unwrap();
    // One instance serving one request at a time: the second waits in the queue.
    let mut config = (*gw.controller("m").config()).clone();
    config.concurrency_limit = 1;
    gw.gateway.update_deployment(config).unwrap();
    let slow = tokio::spawn(client().get(gw.url("/d/m/sleep?ms=300")).send());
    eventually("the slow request holds the instance", || {
        gw.controller("m").instances()[0].in_flight == 1
    })
    .await;
    let queued = client().get(gw.url("/d/m/")).send().await.unwrap();
    assert!(queued.headers().contains_key("deploy-wait-ms"));
    slow.await.unwrap().unwrap();
    let text = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"autodeploy_requests_total{deployment="m",rule="default",status="200"} 5"#,
        r#"autodeploy_requests_total{deployment="m",rule="scale-out",status="429"} 1"#,
        r#"autodeploy_cold_starts_total{deployment="m"} 1"#,
        r#"autodeploy_cold_start_seconds_count{deployment="m",phase="total"} 1"#,
        r#"autodeploy_instances{deployment="m",state="ready"} 1"#,
        r#"autodeploy_queue_depth{deployment="m"} 0"#,
        r#"autodeploy_cost{deployment="m"}"#,
        r#"autodeploy_request_duration_seconds_count{deployment="m",rule="default"} 5"#,
        r#"autodeploy_request_duration_seconds_count{deployment="m",rule="scale-out"} 1"#,
        r#"autodeploy_instance_wait_seconds_count{deployment="m",cause="cold_start"} 1"#,
        r#"autodeploy_instance_wait_seconds_count{deployment="m",cause="queue"} 1"#,
        "# TYPE autodeploy_request_duration_seconds histogram",
        "# TYPE autodeploy_instance_wait_seconds histogram",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_id_make_one_deployment_and_spare_its_instances() {
    let gw = TestGateway::start(sim(Duration::from_millis(20)), vec![]).await;
    let mut config = new_deployment("dup");
    config["min_instances"] = json!(1);
    let creates: Vec<_> = (0..10)
        .map(|_| {
            let url = gw.url("/api/v1/deployments");
            let config = config.clone();
            tokio::spawn(async move {
                client()
                    .post(url)
                    .json(&config)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for create in creates {
        statuses.push(create.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
    let controller = gw.controller("dup");
    eventually("the warm instance is ready", || {
        controller.view().ready().len() == 1
    })
    .await;
    // A losing create's reconciliation must not have released the winner's instance.
    assert_eq!(gw.sim.released(), 0);
    assert_eq!(gw.sim.live(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_id_being_deleted_cannot_be_created_until_its_requests_finish() {
    let gw = TestGateway::start(
        sim(Duration::ZERO),
        vec![deployment("busy", 1, Duration::from_secs(60))],
    )
    .await;
    let slow = tokio::spawn(client().get(gw.url("/d/busy/sleep?ms=1200")).send());
    let controller = gw.controller("busy");
    eventually("the slow request is in flight", || {
        controller.instances().iter().any(|i| i.in_flight == 1)
    })
    .await;
    let delete = tokio::spawn(client().delete(gw.url("/api/v1/deployments/busy")).send());
    eventually("the link is gone", || {
        gw.gateway.controller("busy").is_none()
    })
    .await;

    let (status, body) = call(
        &gw,
        "POST",
        "/api/v1/deployments",
        None,
        Some(new_deployment("busy")),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (409, json!(1014)), "{body}");
    assert!(body["msg"].as_str().unwrap().contains("being deleted"));

    // The draining request was not cut by anyone's reconciliation.
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(delete.await.unwrap().unwrap().status(), 200);
    let (status, _) = call(
        &gw,
        "POST",
        "/api/v1/deployments",
        None,
        Some(new_deployment("busy")),
    )
    .await;
    assert_eq!(status, 201);
    gw.stop().await;
}

#[tokio::test]
async fn a_providers_own_requirements_are_422_with_their_field_names() {
    let local = Arc::new(Local::new(LocalConfig::default()).unwrap()) as Arc<dyn GpuProvider>;
    let gw = TestGateway::with_providers(
        GatewaySettings::default(),
        sim(Duration::ZERO),
        vec![("local", local)],
        Vec::new(),
    )
    .await;
    // The local provider runs a command, so it requires one; the simulated one does not.
    let mut body = new_deployment("cmd");
    body["provider"] = json!("local");
    body["start_command"] = json!(" ");
    body["max_instances"] = json!(0);
    let (status, answer) = call(&gw, "POST", "/api/v1/deployments", None, Some(body)).await;
    assert_eq!((status, answer["code"].clone()), (422, json!(1003)));
    let msg = answer["msg"].as_str().unwrap();
    assert!(
        msg.contains("max_instances:") && msg.contains("start_command: must not be empty"),
        "{msg}"
    );
    let mut body = new_deployment("cmd");
    body["provider"] = json!("nowhere");
    let (status, answer) = call(&gw, "POST", "/api/v1/deployments", None, Some(body)).await;
    assert_eq!((status, answer["code"].clone()), (422, json!(1003)));
    assert!(
        answer["msg"].as_str().unwrap().contains("provider:"),
        "{answer}"
    );

    let mut body = new_deployment("sim");
    body.as_object_mut().unwrap().remove("start_command");
    let (status, answer) = call(&gw, "POST", "/api/v1/deployments", None, Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    let mut update = new_deployment("sim");
    update["provider"] = json!("local");
    update["start_command"] = json!("");
    let (status, answer) = call(&gw, "PUT", "/api/v1/deployments/sim", None, Some(update)).await;
    assert_eq!(
        (status, answer["code"].clone()),
        (422, json!(1003)),
        "{answer}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn failed_starts_are_shown_with_time_instance_code_reason_and_last_log_lines() {
    let local = Arc::new(Local::new(LocalConfig::default()).unwrap()) as Arc<dyn GpuProvider>;
    let mut crashing = deployment("crash", 1, Duration::from_secs(60));
    crashing.provider = "local".into();
    crashing.start_command =
        "echo loading model; echo 'no such file: model.bin' >&2; exit 3".into();
    let gw = TestGateway::with_providers(
        GatewaySettings::default(),
        sim(Duration::ZERO),
        vec![("local", local)],
        vec![crashing],
    )
    .await;
    let (_, detail) = call(&gw, "GET", "/api/v1/deployments/crash", None, None).await;
    assert_eq!(detail["start_failures"], json!([]));

    let mut failed = Vec::new();
    for _ in 0..2 {
        let resp = client().get(gw.url("/d/crash/")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 502);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 1004);
        failed.push(body);
    }
    let (status, detail) = call(&gw, "GET", "/api/v1/deployments/crash", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(detail["status"], "Standby");
    let failures = detail["start_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{detail:#}");
    for failure in failures {
        assert_eq!(failure["code"], 1004);
        assert!(
            failure["instance"].as_str().unwrap().len() == 8,
            "{failure}"
        );
        assert!(failure["at"].as_str().unwrap().ends_with('Z'), "{failure}");
        let reason = failure["reason"].as_str().unwrap();
        assert!(reason.contains("exit"), "{reason}");
        assert!(
            !reason.contains("loading model"),
            "the log lines are apart: {reason}"
        );
        let log = failure["last_log"].as_array().unwrap();
        assert!(log.contains(&json!("loading model")), "{log:?}");
        assert!(log.contains(&json!("no such file: model.bin")), "{log:?}");
    }
    assert_ne!(failures[0]["instance"], failures[1]["instance"]);
    gw.stop().await;
}
