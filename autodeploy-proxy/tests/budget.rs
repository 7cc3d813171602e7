//! Budgets and backlog-driven scale-out through the gateway, over loopback sockets with the
//! simulated provider: 1021 bodies, 429 + `Retry-After` or 503, metrics and the API.

mod support;

use std::time::Duration;

use autodeploy_core::BudgetLimit;
use serde_json::Value;
use support::{TestGateway, client, deployment, sim};

const BUDGET: &str = r#"{"code": 1021, "msg": "budget exceeded"}"#;

fn priced(id: &str, price: f64, budget: Option<f64>) -> autodeploy_core::DeployConfig {
    let mut config = deployment(id, 5, Duration::from_secs(60));
    config.price_per_hour = price;
    config.concurrency_limit = 1;
    config.budget = budget.map(|max_per_hour| BudgetLimit { max_per_hour });
    config
}

async fn scale_out(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("Deploy-Route-Rule", "scale-out")
        .send()
        .await
        .expect("response")
}

#[tokio::test]
async fn over_the_deployment_budget_is_429_with_retry_after_while_an_instance_idles() {
    let gw = TestGateway::start(sim(Duration::ZERO), vec![priced("paid", 1.5, Some(4.0))]).await;
    let url = gw.url("/d/paid/");
    for _ in 0..2 {
        assert_eq!(scale_out(&url).await.status(), 200);
    }
    let resp = scale_out(&url).await;
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Both instances idle since just now, for a retention of 60 s.
    assert!((55..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(resp.text().await.unwrap(), BUDGET);
    assert_eq!(gw.sim.created(), 2);

    let api: Value = client()
        .get(gw.url("/api/v1/deployments/paid"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["budget_refusals"], 1);
    assert_eq!(api["hourly_rate"], 3.0);
    assert!(api["idle_waste"].as_f64().unwrap() > 0.0, "{api}");
    assert!(api["config"]["budget"]["max_per_hour"] == 4.0, "{api}");
    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"autodeploy_budget_refusals_total{deployment="paid",budget="deployment"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"autodeploy_hourly_rate{deployment="paid"} 3.0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"autodeploy_idle_waste{deployment="paid"}"#),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn over_the_gateway_budget_is_503_without_retry_after_while_every_instance_is_busy() {
    let settings = autodeploy_proxy::GatewaySettings {
        budget: Some(BudgetLimit { max_per_hour: 2.0 }),
        ..Default::default()
    };
    let gw = TestGateway::with_settings(
        settings,
        sim(Duration::ZERO),
        vec![priced("a", 2.0, None), priced("b", 2.0, None)],
    )
    .await;
    // A slow request keeps a's only instance busy: nothing is due for release.
    let slow = tokio::spawn(
        client()
            .get(gw.url("/d/a/slow"))
            .header("x-sim-delay-ms", "3000")
            .send(),
    );
    support::eventually("a's instance is busy", || {
        gw.controller("a")
            .instances()
            .iter()
            .any(|i| i.in_flight == 1)
    })
    .await;
    // b's cold start would put the gateway at 4.0 an hour: refused at once, not queued.
    let resp = client().get(gw.url("/d/b/")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(resp.text().await.unwrap(), BUDGET);
    assert_eq!(gw.controller("b").queue_depth(), 0);

    let list: Value = client()
        .get(gw.url("/api/v1/deployments"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["budget"]["max_per_hour"], 2.0);
    assert_eq!(list["budget"]["hourly_rate"], 2.0);
    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"autodeploy_budget_refusals_total{deployment="b",budget="gateway"} 1"#),
        "{metrics}"
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    // Now a's instance idles: b hears when it is due.
    let resp = client().get(gw.url("/d/b/")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    gw.stop().await;
}

#[tokio::test]
async fn a_burst_at_standby_starts_every_instance_it_needs_at_once() {
    let mut config = deployment("burst", 3, Duration::from_secs(60));
    config.concurrency_limit = 4;
    let gw = TestGateway::start(sim(Duration::from_millis(500)), vec![config]).await;
    let url = gw.url("/d/burst/");
    let http = client();
    let requests: Vec<_> = (0..24)
        .map(|_| tokio::spawn(http.get(&url).header("x-sim-delay-ms", "100").send()))
        .collect();
    support::eventually("three instances start", || gw.sim.created() == 3).await;
    for r in requests {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(gw.sim.created(), 3);
    gw.stop().await;
}
