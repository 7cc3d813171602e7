//! Deployments created through the management API survive a restart of a gateway built from
//! a config file with a `state_dir`; the config file's own deployments stay the file's.

mod support;

use std::path::Path;

use autodeploy_proxy::{Gateway, GatewayConfig, Serving};
use serde_json::{Value, json};
use support::client;

/// A config with one file-defined deployment (`filed`) on the simulated provider.
fn config(state_dir: &Path, extra: &str) -> GatewayConfig {
    let text = format!(
        r#"
        [gateway]
        listen = "127.0.0.1:0"
        state_dir = "{}"

        [[deployment]]
        id = "filed"
        provider = "simulated"
        start_command = "simulated"
        idle_retention = "1m"
        max_instances = 1
        {extra}
        "#,
        state_dir.display()
    );
    GatewayConfig::parse(&text).unwrap()
}

async fn start(config: GatewayConfig) -> (Gateway, Serving, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let gateway = Gateway::from_config(config).await.unwrap();
    let serving = gateway.spawn(listener);
    (gateway, serving, base)
}

async fn call(base: &str, method: &str, path: &str, body: Option<Value>) -> u16 {
    let mut req = client().request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap().status().as_u16()
}

fn deployment(id: &str, max_instances: u32) -> Value {
    json!({
        "id": id,
        "provider": "simulated",
        "start_command": "simulated",
        "idle_retention": "2m",
        "max_instances": max_instances,
        "access_keys": ["k3y-0123456789abcdef"],
    })
}

fn max_instances(gateway: &Gateway, id: &str) -> Option<u32> {
    gateway.controller(id).map(|c| c.config().max_instances)
}

#[tokio::test]
async fn deployments_created_through_the_api_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, serving, base) = start(config(dir.path(), "")).await;
    assert_eq!(
        call(
            &base,
            "POST",
            "/api/v1/deployments",
            Some(deployment("made", 1))
        )
        .await,
        201
    );
    assert_eq!(
        call(
            &base,
            "PUT",
            "/api/v1/deployments/made",
            Some(deployment("made", 3))
        )
        .await,
        200
    );
    assert_eq!(
        call(
            &base,
            "POST",
            "/api/v1/deployments",
            Some(deployment("gone", 1))
        )
        .await,
        201
    );
    assert_eq!(
        call(&base, "DELETE", "/api/v1/deployments/gone", None).await,
        200
    );
    // A change to the config file's deployment lasts until the restart only.
    let mut filed = deployment("filed", 4);
    filed["access_keys"] = json!([]);
    assert_eq!(
        call(&base, "PUT", "/api/v1/deployments/filed", Some(filed)).await,
        200
    );
    assert_eq!(max_instances(&gateway, "filed"), Some(4));
    serving.stop().await;

    let stored = std::fs::read_to_string(dir.path().join("deployments.json")).unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    let ids: Vec<&str> = stored["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["made"], "{stored}");

    let (gateway, serving, base) = start(config(dir.path(), "")).await;
    assert_eq!(
        max_instances(&gateway, "made"),
        Some(3),
        "the update was kept"
    );
    assert_eq!(
        gateway.controller("made").unwrap().config().access_keys,
        ["k3y-0123456789abcdef"]
    );
    assert!(gateway.controller("gone").is_none(), "the delete was kept");
    assert_eq!(
        max_instances(&gateway, "filed"),
        Some(1),
        "the file's version"
    );
    // The restored deployment serves.
    let resp = client()
        .get(format!("{base}/d/made/"))
        .header("Deploy-Access-Key", "k3y-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    serving.stop().await;

    // The config file now defines "made" too: the file's version wins.
    let made_in_file = r#"
        [[deployment]]
        id = "made"
        provider = "simulated"
        start_command = "simulated"
        idle_retention = "1m"
        max_instances = 2
    "#;
    let (gateway, serving, _) = start(config(dir.path(), made_in_file)).await;
    assert_eq!(max_instances(&gateway, "made"), Some(2));
    assert!(
        gateway
            .controller("made")
            .unwrap()
            .config()
            .access_keys
            .is_empty()
    );
    serving.stop().await;
}

#[tokio::test]
async fn a_damaged_store_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deployments.json"), "{ half a file").unwrap();
    let err = Gateway::from_config(config(dir.path(), ""))
        .await
        .unwrap_err();
    let err = err.to_string();
    assert!(err.contains("deployments.json"), "{err}");
    assert!(err.contains("fix or remove the file"), "{err}");

    // A stored deployment that can no longer be added (its provider is gone) names itself.
    std::fs::write(
        dir.path().join("deployments.json"),
        r#"{"version": 1, "deployments": [{"id": "lost", "provider": "nowhere",
            "start_command": "x", "idle_retention": "1m", "max_instances": 1}]}"#,
    )
    .unwrap();
    let err = Gateway::from_config(config(dir.path(), ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("deployment lost"), "{err}");
}
